"""A seventh round of hostile or careless inputs (a red-team run): the Python API given empty output paths, recipe
text or a dict as the recipe, one backend name as a str; paths that are not UTF-8 (OpenCV's imread crashed with
SIGSEGV on such an image path, onnx's checker raised a TypeError on such a model or output path); an image that is
a link to a device; a folder of images too large for verify's memory; a signal between the renames that put one
output in place. Each was a crash, an internal error, a write into the current folder or a misleading line before
it was fixed; now each works or is one line and exit 2, and no input changes."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError, RecipeError

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
NOT_UTF8 = os.fsdecode(b"\xff\xfe")  # a name Linux allows; Python holds the bytes as lone surrogates


# --- the Python API ------------------------------------------------------------------------------------------------

def test_the_api_never_writes_results_into_the_current_folder_for_an_empty_path(patched, plain, tmp_path,
                                                                                   monkeypatch):
    """run(model, image, "") and eval_coco(..., results_dir="") wrote keypoints.json, run.json and the debug images
    (or the results files) into the current folder: Path("") is "."."""
    import graphsurgery

    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphsurgeryError, match=r"(an empty path|a path of only blanks \(' '\)) names no folder"):
        graphsurgery.run(patched, PHOTO, "", backend="onnxruntime")
    with pytest.raises(GraphsurgeryError, match=r"(an empty path|a path of only blanks \(' '\)) names no folder"):
        graphsurgery.eval_coco(CROP, plain, "a.json", ".", backends=["onnxruntime"], results_dir=" ")
    for call in (lambda: graphsurgery.apply(CROP, plain, ""), lambda: graphsurgery.convert(patched, ""),
                 lambda: graphsurgery.chain(patched, patched, "")):
        with pytest.raises(GraphsurgeryError, match="an empty path names no file"):  # was "PosixPath('.') has an
            call()                                                                     # empty name"
    with pytest.raises(TypeError, match="must be a path"):
        graphsurgery.apply(CROP, plain, 7)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("recipe", [{"version": 1, "name": "x"}, None, b"recipes/hrnet_coco_pose.yaml"])
def test_the_api_says_what_a_recipe_is_when_given_something_else(plain, tmp_path, recipe):
    import graphsurgery

    with pytest.raises(TypeError, match="a recipe is a Recipe or the path of a recipe file.*parse_recipe"):
        graphsurgery.apply(recipe, plain, tmp_path / "p.onnx")
    assert list(tmp_path.iterdir()) == []


def test_recipe_text_given_as_the_recipe_is_refused_in_a_short_line(plain, tmp_path):
    """It was taken as a file name: 'no such recipe file' with the whole recipe in the line (or an OSError once a
    line of it passed 255 bytes)."""
    import graphsurgery

    with pytest.raises(RecipeError, match="recipe text was given") as caught:
        graphsurgery.apply(CROP.read_text(), plain, tmp_path / "p.onnx")
    assert len(str(caught.value)) < 200 and list(tmp_path.iterdir()) == []


def test_one_backend_name_as_a_str_is_one_backend(plain):
    """verify(..., backends="onnxruntime") iterated the str: "unknown backend 'o'"."""
    import graphsurgery

    report = graphsurgery.verify(CROP, plain, random=2, backends="onnxruntime")
    assert bool(report) and "openvino" not in str(report.to_dict() if hasattr(report, "to_dict") else report)
    with pytest.raises(GraphsurgeryError, match="unknown backend 'cuda'"):
        graphsurgery.verify(CROP, plain, random=2, backends="onnxruntime,cuda")


# --- names that are not UTF-8 ------------------------------------------------------------------------------------

def test_an_image_whose_path_is_not_utf8_is_read_not_a_crash(tmp_path):
    """cv2.imread took the surrogates and crashed the process with SIGSEGV (run and verify, exit 139)."""
    folder = tmp_path / f"images{NOT_UTF8}"
    folder.mkdir()
    image = folder / f"a{NOT_UTF8}.jpg"
    image.write_bytes(PHOTO.read_bytes())
    code = "import sys; from graphsurgery.images import read_image; print(read_image(sys.argv[1]).shape)"
    done = subprocess.run([sys.executable, "-c", code, image], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "(512, 512, 3)", (done.returncode, done.stderr)


@pytest.mark.parametrize("where", ["model", "output"])
def test_a_model_or_output_path_that_is_not_utf8_is_one_line(plain, tmp_path, where):
    """onnx's checker raised TypeError ('incompatible function arguments'): an internal error, exit 3."""
    model = tmp_path / f"m{NOT_UTF8}.onnx" if where == "model" else tmp_path / "m.onnx"
    model.write_bytes(plain.read_bytes())
    out = tmp_path / (f"o{NOT_UTF8}.onnx" if where == "output" else "o.onnx")
    one_line_exit_2(invoke("apply", CROP, model, "-o", out), "not UTF-8", "rename")
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]


# --- images ------------------------------------------------------------------------------------------------------

def test_an_image_linking_to_a_device_says_what_it_is(tmp_path):
    """A link to /dev/zero was 'no such image file — check the path'."""
    from graphsurgery.images import read_image

    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    with pytest.raises(GraphsurgeryError, match="is not a regular file"):
        read_image(link)


def test_verify_refuses_more_crops_than_it_can_hold_before_decoding_them(plain, tmp_path):
    """Every crop is held at once with its twins and outputs (~5 MB each here): 10,000 tiny images ran the memory
    out (400 took 2 GB)."""
    tiny = cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes()
    for index in range(460):
        (tmp_path / f"{index:04d}.png").write_bytes(tiny)
    result = invoke("verify", CROP, plain, "--images", tmp_path, "--backends", "onnxruntime")
    one_line_exit_2(result, "460 crops", "at most 455", "a few dozen images")


# --- signals between the renames of one output ---------------------------------------------------------------------

#: `apply` in a real process whose first placing call (the data file's: os.link, as no --force is given, or
#: os.replace) sends SIGINT first.
SCRIPT = """
import os, signal, sys
real = {"replace": os.replace, "link": os.link}
def placing(name):
    def place(*args, **kwargs):
        os.replace, os.link = real["replace"], real["link"]
        os.kill(os.getpid(), signal.SIGINT)
        return real[name](*args, **kwargs)
    return place
os.replace, os.link = placing("replace"), placing("link")
from graphsurgery.cli import main
sys.argv = ["graphsurgery", "apply", *sys.argv[1:]]
main()
"""


def test_a_signal_between_the_data_file_and_the_model_leaves_both_or_neither(tmp_path):
    """The data file was placed and the model was not: an orphan `p.onnx.data`."""
    import onnx

    from modelkit import pose_model

    (tmp_path / "m").mkdir()
    model = pose_model(tmp_path / "m" / "m.onnx")
    onnx.save(onnx.load(str(model)), str(model), save_as_external_data=True, location="m.data", size_threshold=0)
    out = tmp_path / "p.onnx"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(CROP), str(model), "-o", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "p.onnx", "p.onnx.data"]
    onnx.checker.check_model(str(out), full_check=True)  # the whole output, with its data


def test_signals_held_acts_on_a_signal_after_the_renames():
    # In a process of its own: a pytest-xdist worker's SIGINT handler is not Python's, and the signal would end it
    code = """
import os, signal
from graphsurgery.safeio import signals_held
reached = []
try:
    with signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("after the signal")
except KeyboardInterrupt:
    print("interrupted", reached, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "interrupted ['after the signal'] True", done.stderr
