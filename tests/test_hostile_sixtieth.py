"""Hostile round 60: about 520 runs of resource limits, the environment, streams, path spellings, the Python API,
recipes, boxes and COCO files, images, models, signals and concurrent writers. Found and fixed: a COCO file whose
person category 'categories' does not list ended "NO PARITY" (exit 1, the model blamed); a JPEG with a corrupt EXIF
block printed Pillow's warning on a run that succeeded; the README's `resize_vs_opencv` / `resize_vs_pil` given a
wrong step or image ended deep inside (AttributeError, OpenCV's assertions); an output spelled as a folder
(`o.onnx/.`, and `o.onnx/` in the Python API) was written as the file `o.onnx`; a signal between a scratch folder
and its owner marker left an empty folder no command removes; a box of five values was shown as its first four; a
huge finite tolerance made numpy warn of an overflow on a verify that passed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.boxes import load_boxes
from graphsurgery.errors import ArgumentError, GraphsurgeryError, StepParameterError
from graphsurgery.images import read_image
from graphsurgery.safeio import write_atomically
from graphsurgery.steps.libraries import resize_vs_opencv, resize_vs_pil
from graphsurgery.steps.resize import Resize
from graphsurgery.verification import verify

from examples.synthetic_coco import joint_detector, write_coco_set
from modelkit import pose_model
from paritykit import CROP_RECIPE


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(images folder, plain model, annotations) of a two-image synthetic COCO set."""
    folder = tmp_path_factory.mktemp("coco")
    annotations = write_coco_set(folder / "images", images=2, seed=0)
    return folder / "images", joint_detector(folder / "plain.onnx"), json.loads(annotations.read_text())


@pytest.mark.parametrize("categories", [[], [{"id": 7, "name": "person"}], None], ids=["empty", "other-id", "missing"])
def test_a_person_category_that_categories_does_not_list_is_refused(coco, tmp_path, categories):
    """`categories: []` or the person listed as 7: COCOeval evaluates the listed categories only, so every pipeline
    scored AP -1 and eval-coco said NO PARITY (exit 1), "evaluate a model that finds the annotated keypoints"; with
    no 'categories' at all the line said "no person with keypoints"."""
    images, plain, data = coco
    data = {key: value for key, value in data.items() if key != "categories"}
    if categories is not None:
        data["categories"] = categories
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps(data))
    result = invoke("eval-coco", CROP_RECIPE, plain, "--ann", annotations, "--images", images,
                    "--backends", "onnxruntime")
    one_line_exit_2(result, "a.json", "'categories' does not list", "add the person category")


def _corrupt_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF block's first IFD offset points past its end (Pillow: "Corrupt EXIF data")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(path, exif=exif)
    data = path.read_bytes()
    at = data.find(b"Exif\x00\x00") + 6
    path.write_bytes(data[:at] + b"MM\x00\x2a\xff\xff\xff\xff" + data[at + 8:])
    return path


@pytest.mark.parametrize("action", ["always", "error"])
def test_pillow_s_word_on_an_image_s_metadata_is_not_the_command_s(tmp_path, action):
    """Pillow warns while it reads the header ("Corrupt EXIF data. Expecting to read 2 bytes but only got 0."): two
    lines on stderr naming its own source file on a run that succeeded, and under PYTHONWARNINGS=error a refusal of
    an image OpenCV decodes (its EXIF orientation is ignored anyway)."""
    path = _corrupt_exif_jpeg(tmp_path / "a.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter(action)
        image = read_image(path)
    assert image.shape == (40, 30, 3) and not caught


IMAGE = np.zeros((50, 40, 3), np.uint8)


@pytest.mark.parametrize("compare, step, image, error", [
    (resize_vs_opencv, Resize(size=(20, 20)), None, ArgumentError),
    (resize_vs_opencv, Resize(size=(20, 20)), [[1, 2]], ArgumentError),
    (resize_vs_opencv, None, IMAGE, ArgumentError),
    (resize_vs_opencv, {"size": [20, 20]}, IMAGE, ArgumentError),
    (resize_vs_opencv, Resize(size=(20, 20)), np.zeros((0, 40, 3), np.uint8), GraphsurgeryError),
    (resize_vs_opencv, Resize(size=(20, 20)), IMAGE.astype(bool), GraphsurgeryError),
    (resize_vs_opencv, Resize(size=(20, 20)), IMAGE.astype(np.int64), GraphsurgeryError),
    (resize_vs_opencv, Resize(size=(20, 20)), IMAGE.astype(complex), GraphsurgeryError),
    (resize_vs_opencv, Resize(size=(20, 20)), IMAGE[None], GraphsurgeryError),
    (resize_vs_opencv, Resize(), IMAGE, GraphsurgeryError),
    (resize_vs_pil, Resize(size=(20, 20), antialias=True), None, ArgumentError),
    (resize_vs_pil, Resize(size=(20, 20), antialias=True), IMAGE.astype(np.float32), GraphsurgeryError),
    (resize_vs_pil, Resize(size=(20, 20), interpolation="nearest"), IMAGE, GraphsurgeryError),
], ids=["none", "list", "no-step", "dict-step", "empty", "bool", "int64", "complex", "batch", "no-size", "pil-none",
        "pil-float", "pil-no-filter"])
def test_the_readme_s_library_comparisons_refuse_a_wrong_step_or_image(compare, step, image, error):
    """README's `resize_vs_opencv(Resize(...), image)`: None or a list was AttributeError ('NoneType' object has no
    attribute 'ndim'), a dict for the step the same ('resized_hw'), an empty, bool, int64 or complex image OpenCV's
    assertion or "Overload resolution failed", a batch or a step without a size a plain ValueError or StepError."""
    with pytest.raises(error) as raised:
        compare(step, image)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("args", [
    ["apply", CROP_RECIPE, "{plain}", "-o", "o.onnx/."],
    ["apply", CROP_RECIPE, "{plain}", "-o", "o.onnx/.."],
    ["apply", CROP_RECIPE, "{plain}", "-o", "o.onnx//."],
    ["verify", CROP_RECIPE, "{plain}", "--random", "1", "--backends", "onnxruntime", "--json", "o.onnx/."],
], ids=["apply-dot", "apply-dotdot", "apply-slashes-dot", "verify-json-dot"])
def test_an_output_spelled_as_a_folder_is_not_written_as_a_file(tmp_path, monkeypatch, args):
    """`-o o.onnx/` was refused, `-o o.onnx/.` wrote the file o.onnx (pathlib drops the '.')."""
    plain = pose_model(tmp_path / "plain.onnx")
    monkeypatch.chdir(tmp_path)
    one_line_exit_2(invoke(*(str(a).format(plain=plain) for a in args)), "names a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


@pytest.mark.parametrize("out", ["o.onnx/", "o.onnx/.", "sub/.."])
def test_the_api_refuses_an_output_spelled_as_a_folder(tmp_path, out):
    """`apply(recipe, model, "o.onnx/")` wrote the file o.onnx, which the CLI refused."""
    plain = pose_model(tmp_path / "plain.onnx")
    with pytest.raises(GraphsurgeryError, match="names a folder"):
        apply(CROP_RECIPE, plain, f"{tmp_path}/{out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


#: writes a report while a signal comes just after mkdtemp made its scratch folder, before the owner marker
SIGNAL_AFTER_MKDTEMP = """
import os, sys, tempfile
from pathlib import Path
from graphsurgery import safeio

made = tempfile.mkdtemp
def mkdtemp(*args, **kwargs):
    folder = made(*args, **kwargs)
    os.kill(os.getpid(), int(sys.argv[2]))
    return folder
tempfile.mkdtemp = mkdtemp
safeio.write_atomically(Path(sys.argv[1]) / "report.json", lambda stream: stream.write(b"{}"))
"""


@pytest.mark.parametrize("number", [signal.SIGHUP, signal.SIGUSR1, signal.SIGINT], ids=["HUP", "USR1", "INT"])
def test_a_signal_before_the_owner_marker_leaves_no_scratch_folder_for_good(tmp_path, number):
    """A closed terminal's SIGHUP just after mkdtemp (1 of 40 `convert` runs hung up at random): an empty `.x.xml.…`
    folder with no owner marker, which no later command removes. The folder and its marker are now made with the
    signals held: the signal ends the command once the marker is there, and the next command removes the folder."""
    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_MKDTEMP, str(tmp_path), str(int(number))],
                            env=environment, capture_output=True, timeout=60)
    assert killed.returncode != 0 and not (tmp_path / "report.json").exists()
    write_atomically(tmp_path / "other.json", lambda stream: stream.write(b"{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


@pytest.mark.parametrize("box", [[10, 10, 100, 150, 0.9], [10, 10, 100, 150, 0.9, 1]])
def test_a_box_of_more_than_four_values_is_not_shown_as_its_first_four(tmp_path, box):
    """[10, 10, 100, 150, 0.9] was "box [10, 10, 100, 150] … is not [x, y, w, h]": a box that looked right."""
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a.jpg": [box]}))
    with pytest.raises(GraphsurgeryError, match=rf"\({len(box)} values\)"):
        load_boxes(path)


@pytest.mark.parametrize("tolerances", [{"scores": (0, 1e308)}, {"*": (1e308, 1e308)}], ids=["scores", "every"])
def test_a_huge_finite_tolerance_does_not_make_numpy_warn(tmp_path, tolerances):
    """`--tolerance scores=0,1e308`: rtol × |value| overflowed float32, and a verify that passed printed numpy's
    "RuntimeWarning: overflow encountered in multiply" twice, naming compare.py (graphsurgery's own arithmetic is
    to be quiet; under PYTHONWARNINGS=error it was a refusal)."""
    plain = pose_model(tmp_path / "plain.onnx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = verify(CROP_RECIPE, plain, random=1, backends=["onnxruntime"], tolerances=tolerances)
    assert report and not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w) for w in caught]


@pytest.mark.parametrize("command", ["verify", "run"])
def test_boxes_that_match_no_image_and_images_without_boxes_are_said(coco, tmp_path, command):
    """Round 60's leftover: boxes are matched to images by file name, and a name matching no image (`IMG0.JPG` for
    `img0.png`) was dropped without a word, its image given no person (run) or left out of the comparison (verify);
    only a file naming none of the images was refused. It is a note now; a file matching every image says nothing."""
    images, plain, data = coco
    first, second = sorted(image["file_name"] for image in data["images"])
    for name, boxes in (("stray.json", {first: [[20, 20, 120, 200]], first.upper(): [[1, 1, 50, 50]]}),
                        ("all.json", {first: [[20, 20, 120, 200]], second: [[30, 30, 100, 180]]})):
        (tmp_path / name).write_text(json.dumps(boxes))
    model = plain if command == "verify" else apply(CROP_RECIPE, plain, tmp_path / "patched.onnx").output
    args = ([CROP_RECIPE, plain, "--images", images, "--backends", "onnxruntime"] if command == "verify"
            else [model, images, "-o", tmp_path / "out"])
    said = invoke(command, *args, "--boxes", tmp_path / "stray.json")
    assert said.exit_code == 0, said.output
    said_line = (f"the boxes file {tmp_path / 'stray.json'}: 1 of its 2 names match no image here ('{first.upper()}'): "
                 "their boxes are not used; 1 of the 2 images have no boxes in it")
    assert "".join(said_line.split()) in "".join(said.output.split()), said.output  # wrapped anywhere, long paths too
    if command == "run":
        args[-1] = tmp_path / "out2"
    quiet = invoke(command, *args, "--boxes", tmp_path / "all.json")
    assert quiet.exit_code == 0 and "the boxes file" not in quiet.output, quiet.output


#: a `sitecustomize` for the command's processes: SIGHUP to itself just after mkdtemp made an output's scratch folder
HANG_UP_AFTER_MKDTEMP = """
import os, signal, tempfile

made = tempfile.mkdtemp
def mkdtemp(*args, **kwargs):
    folder = made(*args, **kwargs)
    if os.path.basename(folder).startswith(".out.onnx."):
        os.kill(os.getpid(), signal.SIGHUP)
    return folder
tempfile.mkdtemp = mkdtemp
"""


def test_a_hang_up_while_the_scratch_folder_is_made_leaves_nothing_under_the_supervisor(tmp_path):
    """The signals held while the folder and its marker are made were acted on before the supervisor knew the
    folder: SIGHUP, which ends the process by default, killed it there, and the folder stayed (CI: the demo's SIGHUP
    test). The folder is now named to the supervisor within the hold, and the supervisor removes it."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HANG_UP_AFTER_MKDTEMP)
    plain, out = pose_model(tmp_path / "plain.onnx"), tmp_path / "out"
    out.mkdir()
    root = Path(__file__).resolve().parents[1]
    paths = [str(hooks), str(root), os.environ.get("PYTHONPATH", "")]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "apply", str(CROP_RECIPE), str(plain), "-o",
                           str(out / "out.onnx")], env=environment, capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == 128 + signal.SIGHUP and len(lines) == 1, (done.returncode, done.stderr)
    assert lines[0].startswith("error: the command was ended by SIGHUP"), lines
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["apply", "{recipe}/", "{plain}", "-o", "o.onnx"],
    ["apply", CROP_RECIPE, "{plain}/.", "-o", "o.onnx"],
    ["inspect", "{plain}/"],
    ["verify", CROP_RECIPE, "{plain}", "--patched", "{plain}//", "--backends", "onnxruntime"],
    ["run", "{plain}", "{image}/", "-o", "out"],
], ids=["recipe-slash", "model-slash-dot", "inspect-slash", "patched-slashes", "image-slash"])
def test_an_input_file_spelled_as_a_folder_is_not_read_as_the_file(tmp_path, monkeypatch, args):
    """`recipe.yaml/` was read as recipe.yaml (pathlib drops the slash), where the system says "Not a directory"
    (round 60's leftover)."""
    plain = pose_model(tmp_path / "plain.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(Path(CROP_RECIPE).read_bytes())
    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)
    one_line_exit_2(invoke(*(str(a).format(plain=plain, recipe=recipe, image="a.jpg") for a in args)),
                    "Not a directory", "drop what follows the file's name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "plain.onnx", "r.yaml"]


def test_the_api_refuses_an_input_file_spelled_as_a_folder(tmp_path):
    """The Python API read `recipe.yaml/.` as the recipe, as the CLI did."""
    plain = pose_model(tmp_path / "plain.onnx")
    with pytest.raises(GraphsurgeryError, match="Not a directory"):
        apply(f"{CROP_RECIPE}/.", plain, tmp_path / "o.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


@pytest.mark.parametrize("parameters, needles", [
    ({"size": (0, 0)}, ["Resize(size=…)", "between 1 and 65536"]),
    ({"size": (224, 224), "bogus": 1}, ["Resize(bogus=…)", "unknown key 'bogus'", "allowed keys: antialias"]),
    ({"size": (224, 224), "fit": "nope", "crop_fraction": 2}, ["Resize(fit=…)", "(and 1 more problem)"]),
], ids=["size", "unknown", "two"])
def test_a_step_built_in_python_refuses_a_parameter_in_one_line(parameters, needles):
    """`Resize(size=(0, 0))` raised pydantic's ValidationError over several lines (round 60's leftover); the README
    builds a Resize in Python. It is one line now, a GraphsurgeryError and still a ValueError."""
    with pytest.raises(StepParameterError) as caught:
        Resize(**parameters)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
    for needle in needles:
        assert needle in str(caught.value)
