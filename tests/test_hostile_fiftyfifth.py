"""Hostile round 55: the newest code paths, fed what a stranger's files and folders can hold.

eval-coco's proof per keypoint (odd file names, aliases, TMPDIR states), the IR's recorded provenance read back by
`verify --precision int8` and `run` (rt_info of any shape), IRs that `convert --input-shape` writes, the tolerances of
a detector's boxes and scores, callbacks of the Python API, and output folders a command may add to but never clean
up (`chattr +a`). Each test failed on the code before its fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.compare_detections import compare_detections, group_comparison
from graphsurgery.irconvert import convert_ir
from graphsurgery.quantize import ir_info, is_int8
from graphsurgery.steps.detect import DetectionComparison
from graphsurgery.tolerances import with_tolerances

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
IMAGE = ROOT / "examples" / "images" / "astronaut.jpg"


@pytest.fixture(scope="module")
def leaf_ir(tmp_path_factory) -> tuple[Path, Path]:
    """The plain model and an IR of it patched, whose rt_info holds `graphsurgery` as a value, not a map."""
    folder = tmp_path_factory.mktemp("leaf")
    plain = pose_model(folder / "plain.onnx")
    patched = apply(RECIPE, plain, folder / "patched.onnx").output
    xml = convert_ir(patched, folder / "patched.xml").xml
    text, count = re.subn(r"<graphsurgery>.*?</graphsurgery>", '<graphsurgery value="forged" />', xml.read_text(),
                          flags=re.S)
    assert count == 1
    xml.write_text(text)
    return plain, xml


def test_an_ir_whose_rt_info_holds_graphsurgery_as_a_value_is_read_as_recording_nothing(leaf_ir):
    """Was (round 55): OpenVINO raises where a path of rt_info keys passes through a value ("Path to runtime
    attribute is incorrect"), so `run` of such an IR, `verify --patched` of it and `verify --precision int8` ended
    in "internal error (RuntimeError …)", exit 3. It records nothing of graphsurgery's, as an IR made elsewhere."""
    plain, xml = leaf_ir
    assert not is_int8(xml) and ir_info(xml, ("graphsurgery", "converted_sha256")) == [None]
    result = invoke("verify", RECIPE, plain, "--patched", xml, "--random", 2, "--precision", "int8")
    one_line_exit_2(result, "patched.xml", "not one")


def test_run_of_an_ir_whose_rt_info_holds_graphsurgery_as_a_value(leaf_ir, tmp_path):
    _, xml = leaf_ir
    result = invoke("run", xml, IMAGE, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "keypoints.json").is_file()


def _detections(scores: list[float]) -> dict[str, np.ndarray]:
    boxes = np.array([[[10, 10, 60, 90], [100, 40, 180, 200], [0, 0, 0, 0]]], np.float32)
    return {"boxes": boxes, "scores": np.array([scores], np.float32), "classes": np.array([[0, 2, -1]], np.int64)}


def test_a_score_tolerance_that_lets_any_score_match_is_called_so():
    """Was (round 55): `--tolerance scores=1e9` (or `scores=0,1`) PASSed a detector patch that halved every score,
    and the stats line said only "score within atol 1e+09"; float and coordinate outputs under such a tolerance
    carry the note that it cannot catch a wrong patch (round 34), detections did not."""
    declared = {part: DetectionComparison("detections", part=part) for part in ("boxes", "scores", "classes")}
    names = {part: part for part in declared}
    expected, halved = _detections([0.9, 0.6, 0.0]), _detections([0.45, 0.3, 0.0])
    for tolerance in ((1e9, 0.0), (0.0, 1.0)):
        comparison = group_comparison(with_tolerances(declared, {"scores": tolerance}))
        result = compare_detections(names, halved, expected, comparison)
        assert result and "cannot catch a wrong patch" in result.summary(), result.summary()
    strict = compare_detections(names, halved, expected, group_comparison(with_tolerances(declared, {})))
    assert not strict and "cannot catch" not in strict.summary()
    right = compare_detections(names, expected, expected, group_comparison(
        with_tolerances(declared, {"scores": (0.1, 0.0)})))
    assert right and "cannot catch" not in right.summary()


@contextmanager
def append_only(folder: Path) -> Iterator[Path]:
    """`folder`, made and then made append-only (`chattr +a`) while the block runs; skips where it cannot be."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr")
    folder.mkdir()
    if subprocess.run(["chattr", "+a", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("the file system keeps no append-only flag")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-a", str(folder)], capture_output=True)


def test_an_append_only_output_folder_is_refused_before_the_work(tmp_path):
    """Was (round 55): in a folder made append-only (`chattr +a`: files can be made, none removed or renamed away,
    root included) apply, convert, verify --json and the rest wrote their output and left their scratch folder
    (`.p.onnx.XXXXXXXX/`) behind, one more each run, which no later command could remove; with --force the rename
    over the earlier output was refused after the work, and `verify --json` into it printed its verdict first."""
    plain = pose_model(tmp_path / "pose.onnx")
    with append_only(tmp_path / "kept") as folder:
        result = invoke("apply", RECIPE, plain, "-o", folder / "p.onnx")
        one_line_exit_2(result, "p.onnx", "append-only (chattr +a)")
        result = invoke("verify", RECIPE, plain, "--random", 2, "--json", folder / "v.json")
        one_line_exit_2(result, "v.json", "append-only (chattr +a)")
        assert "PASS" not in result.output  # before the work, as for a read-only folder (round 53)
        assert not list(folder.iterdir())


def test_an_append_only_temporary_folder_is_refused_and_left_as_it_was(tmp_path):
    """Was (round 55's leftover): with $TMPDIR append-only, Python's tempfile left its 4-byte probe file there on
    every command (it can make the file, not remove it) and the command went on in /tmp without a word."""
    plain = pose_model(tmp_path / "pose.onnx")
    with append_only(tmp_path / "tmp") as folder:
        result = subprocess.run([sys.executable, "-m", "graphsurgery", "verify", str(RECIPE), str(plain), "--random",
                                 "1", "--backends", "onnxruntime"], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "TMPDIR": str(folder)})
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result
        assert str(folder) in result.stderr and "append-only (chattr +a)" in result.stderr
        assert "set TMPDIR to a writable folder" in result.stderr and "PASS" not in result.stdout
        assert not list(folder.iterdir())



def test_a_callback_of_other_arguments_is_refused_before_the_work(tmp_path):
    """Was (round 55): only a callback that is not callable was refused up front; `progress=lambda done: …` (one
    argument of eval-coco's three) was a TypeError from inside the evaluation once its first crops had run, and
    `on_image=lambda: …` one from inside `run` after its first image."""
    from graphsurgery.coco import evaluate_coco
    from graphsurgery.errors import ArgumentError
    from graphsurgery.pose import run_pose

    from examples.synthetic_coco import joint_detector, write_coco_set

    annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
    plain = joint_detector(tmp_path / "detector.onnx")
    with pytest.raises(ArgumentError, match=r"progress is a function \(pipeline, done, total\), not one of the "
                                            r"arguments \(done\)"):
        evaluate_coco(RECIPE, plain, annotations, tmp_path / "images", progress=lambda done: None)
    patched = apply(RECIPE, pose_model(tmp_path / "pose.onnx"), tmp_path / "patched.onnx").output
    with pytest.raises(ArgumentError, match=r"on_image is a function \(ImageSummary\)"):
        run_pose(patched, [IMAGE], tmp_path / "out", on_image=lambda: None)
    assert not (tmp_path / "out").exists()
    shown = []
    run_pose(patched, [IMAGE], tmp_path / "out", on_image=lambda *summary: shown.append(summary))
    assert len(shown) == 1


def test_an_ir_of_the_detector_recipe_at_a_fixed_size_is_read_back(tmp_path):
    """Was (round 55): `convert --input-shape image=1,H,W,3` (what `convert --int8` asks of a detector of any image
    size) made the letterbox's integer division by the image's width and height, and its float scales, divisions
    of static shapes; graphsurgery's own IR check then refused the IR it had written, in `run`, `verify --patched`
    and `verify --precision int8 --patched`: "has a divisor computed from constants (or static shapes) alone: it
    may be −1 … fix: re-export the model". Dims are never −1, and a float division traps on nothing."""
    import cv2

    from graphsurgery.irchecks import check_ir
    from graphsurgery.verification import verify

    from modelkit import zoo_model

    plain = zoo_model(tmp_path / "yolo.onnx", "yolov8-tiny", opset=17)
    detector = ROOT / "recipes" / "yolov8_detector.yaml"
    patched = apply(detector, plain, tmp_path / "patched.onnx").output
    xml = convert_ir(patched, tmp_path / "fixed.xml", input_shapes={"image": (1, 128, 160, 3)}).xml
    check_ir(xml)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), cv2.resize(cv2.imread(str(IMAGE)), (160, 128)))
    report = verify(detector, plain, patched=xml, images=images, backends=("openvino",))
    assert report, report.failures()
