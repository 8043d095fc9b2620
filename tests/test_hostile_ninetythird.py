"""A ninety-third round of hostile inputs, a held-back-style set in the spirit of issue 17 across every command.

Found: names from a model, a recipe or a file name were printed with Unicode's invisible characters raw (a
zero-width space made 'in\\u200bput' read as 'input', U+2028 broke the line for Python's `splitlines`, and an error
line showed it as a blank), where control characters and bidirectional overrides were escaped; `apply --json` and
`convert --json` printed a model's U+202E itself (JSON written with `ensure_ascii=False`), reordering the terminal's
line. Each is escaped now (`errors.printable`, `errors.printable_json`), and the JSON reads back as the same names.
An input declared with a batch of 2^48 (past int64 values) was "the patched model fails the ONNX checker … (a
graphsurgery bug)": refused as the model's (`splice.check_image_input`). Ctrl-C 30 to 60 ms after the command started
was a KeyboardInterrupt's traceback: the entry point loaded the supervisor before arming its handlers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import onnx
import pytest

from clikit import invoke, one_line_exit_2

from conftest import RECIPES, ROOT
from examples.synthetic_coco import joint_detector, write_coco_set
from modelkit import declared_batch, pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"
INVISIBLE = ("\u200b", "\u2028", "\ufeff", "\u00ad", "\u2060", "\U000e0041")


def _named(tmp_path, input_name: str, producer: str = "modelkit"):
    path = pose_model(tmp_path / "m.onnx", dynamic_batch=True, input_name=input_name)
    model = onnx.load(str(path))
    model.producer_name = producer
    onnx.save(model, str(path))
    return path


def test_invisible_characters_in_a_models_names_are_shown_escaped(tmp_path):
    """inspect's table showed a zero-width space, a line separator, a BOM, a soft hyphen, a word joiner and a tag
    character of an input name and a producer raw: now `\\u200b`, `\\u2028`, ... as `\\u202e` was."""
    path = _named(tmp_path, "in" + "".join(INVISIBLE) + "put", producer="x\u200by\u2028z")
    result = invoke("inspect", path)
    assert result.exit_code == 0, result.output
    assert not any(character in result.output for character in INVISIBLE), ascii(result.output)
    assert "\\u200b\\u2028\\ufeff\\u00ad\\u2060\\U000e0041" in result.output and "x\\u200by\\u2028z" in result.output


def test_invisible_characters_in_an_error_line_are_escaped(tmp_path):
    """A model path holding a zero-width space was named raw in the refusal, and one holding U+2028 as "m .onnx"
    (the line was joined over Unicode's blanks): both escaped."""
    result = invoke("apply", CROP, tmp_path / "m\u200b\u2028.onnx")
    assert result.exit_code == 2 and "\u200b" not in result.output and "\u2028" not in result.output, result.output
    assert "m\\u200b\\u2028.onnx" in result.output, result.output


def test_apply_json_escapes_a_bidirectional_override_and_reads_back(tmp_path):
    """`apply --json` printed the model's U+202E raw (the human table escaped it); the JSON escape reads back as the
    same name, and other letters stay as they are."""
    path = _named(tmp_path, "in\u202e\u200bput")
    result = invoke("apply", CROP, path, "-o", tmp_path / "é.onnx", "--json")
    assert result.exit_code == 0, result.output
    assert "\u202e" not in result.output and "\u200b" not in result.output, ascii(result.output)
    data = json.loads(result.output)
    assert data["input_target"] == "in\u202e\u200bput" and data["written"] == [str(tmp_path / "é.onnx")]
    assert "é.onnx" in result.output


def test_convert_json_escapes_a_bidirectional_override(tmp_path):
    """`convert --json` the same, of an output file name."""
    path = pose_model(tmp_path / "m.onnx", dynamic_batch=True)
    result = invoke("convert", path, "-o", tmp_path / "m\u202e\u200b.xml", "--json")
    assert result.exit_code == 0, result.output
    assert "\u202e" not in result.output and "\u200b" not in result.output, ascii(result.output)
    assert str(tmp_path / "m\u202e\u200b.xml") in json.loads(result.output)["written"]


def test_an_input_declared_past_int64_counts_is_the_models_fault(tmp_path):
    """An input batch of 2^48 (2^48 × 3 × 256 × 192 values, past int64) was "the patched model fails the ONNX
    checker … (a graphsurgery bug)" in apply and verify: the steps' shapes overflowed in shape inference. It is the
    model's declaration, refused in one line naming the input; nothing written. A batch of 2^40 is still patched
    (`run` refuses to feed it, test_hostile_third)."""
    model = declared_batch(tmp_path / "b48.onnx", 2**48)
    out = tmp_path / "p.onnx"
    one_line_exit_2(invoke("apply", CROP, model, "-o", out), "input 'input' is declared", "dynamic batch")
    assert not out.exists()
    one_line_exit_2(invoke("verify", CROP, model, "--random", 2, "--backends", "onnxruntime"), "input 'input'")
    result = invoke("apply", CROP, declared_batch(tmp_path / "b40.onnx", 2**40), "-o", out)
    assert result.exit_code == 0, result.output


def test_the_entry_point_loads_nothing_of_graphsurgery_before_its_handlers():
    """Ctrl-C 30 to 60 ms after `graphsurgery …` started was a KeyboardInterrupt's traceback (exit -2): `launch`, the
    entry point, imported the supervisor (and longrun and errors with it, 20-35 ms) before `main` armed its
    handlers. It imports only the standard library's light modules now: the supervisor is loaded by `main`."""
    code = ("import sys, graphsurgery.launch; "
            "print(sorted(m for m in sys.modules if m.startswith('graphsurgery.') and m != 'graphsurgery.launch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("where", ["annotations", "detections"])
def test_a_category_id_that_is_not_a_whole_number_is_refused(tmp_path, where):
    """Round 93's leftover: `category_id: "1"` is not the person category 1 to pycocotools, so that annotation (or
    detected box) was skipped in silence as another category's, and the evaluation ran on fewer people. A category
    id that is not a whole number is refused at the file that holds it."""
    annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
    plain = joint_detector(tmp_path / "plain.onnx")
    data = json.loads(annotations.read_text())
    if where == "annotations":
        data["annotations"][0]["category_id"] = "1"
        annotations.write_text(json.dumps(data))
        extra, named = [], annotations.name
    else:
        detections = [{"image_id": ann["image_id"], "category_id": 1, "bbox": ann["bbox"], "score": 0.9}
                      for ann in data["annotations"]]
        detections[0]["category_id"] = "1"
        (tmp_path / "det.json").write_text(json.dumps(detections))
        extra, named = ["--boxes", tmp_path / "det.json"], "det.json"
    result = invoke("eval-coco", CROP, plain, "--ann", annotations, "--images", tmp_path / "images",
                    "--backends", "onnxruntime", *extra)
    one_line_exit_2(result, named, "category_id")


def test_a_folder_named_like_an_image_among_the_images_is_not_one(tmp_path):
    """Round 93's leftover: a folder `x.jpg` beside the images was listed as an image, and the whole command was
    refused, "x.jpg: the folder holds no images". It is no image of the folder; a folder with only such folders
    holds no images, said of that folder."""
    images = tmp_path / "imgs"
    (images / "x.jpg").mkdir(parents=True)
    patched = tmp_path / "p.onnx"
    assert invoke("apply", CROP, pose_model(tmp_path / "m.onnx", dynamic_batch=True), "-o", patched).exit_code == 0
    alone = invoke("run", patched, images, "-o", tmp_path / "none", "--backend", "onnxruntime")
    one_line_exit_2(alone, f"{images}:", "holds no")
    shutil.copy(ROOT / "examples" / "images" / "astronaut.jpg", images)
    result = invoke("run", patched, images, "-o", tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert [entry["file_name"] for entry in json.loads((tmp_path / "out" / "keypoints.json").read_text())
            ] == ["astronaut.jpg"]


def test_default_ignorable_letters_are_escaped_and_an_emoji_s_presentation_kept(tmp_path):
    """Round 93's leftover: Hangul fillers (U+3164 made 'scores\\u3164' read as 'scores'), the combining grapheme
    joiner, a Mongolian free variation selector and a variation selector after a letter were printed raw: they are
    drawn as nothing. U+FE0F after a symbol stays (an emoji's look, '❤️')."""
    hidden = ["\u3164", "\u115f", "\u1160", "\uffa0", "\u034f", "\u180b", "\ufe01", "\ufe0f"]
    path = _named(tmp_path, "scores" + "".join(hidden), producer="heart \u2764\ufe0f")
    result = invoke("inspect", path)
    assert result.exit_code == 0, result.output
    assert "scores\\u3164\\u115f\\u1160\\uffa0\\u034f\\u180b\\ufe01\\ufe0f" in result.output, ascii(result.output)
    assert "\u2764\ufe0f" in result.output, ascii(result.output)


def test_external_data_that_is_a_fifo_is_named_so(tmp_path):
    """Round 93's leftover: a FIFO where the external data file should be was "missing — put it beside the model",
    with it right there; it is named as not a regular file (and never opened: the read would block)."""
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx")))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.data", size_threshold=0)
    (tmp_path / "w.data").unlink()
    os.mkfifo(tmp_path / "w.data")
    one_line_exit_2(invoke("inspect", tmp_path / "m.onnx"), "external data file 'w.data'",
                    "is not a regular file (a FIFO, a device or a socket)")
