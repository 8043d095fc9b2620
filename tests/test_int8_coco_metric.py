"""`convert --int8 --max-drop X --annotations FILE`: COCO keypoint AP is the accuracy control's metric.

The synthetic COCO set's joint detector quantizes without loss, so these tests use a fragile variant: its heatmaps
pass through a second (1×1, selecting) convolution whose input also carries a constant channel of 50, which sets
the int8 range of that input and coarsens the heatmaps. NNCF's default int8 model loses about half the AP (0.98 →
0.54 measured); reverting that one layer gives it all back. The AP convert reports must be pycocotools' own on
eval-coco's detections of the f32 and int8 IRs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.coco import evaluate_coco
from graphsurgery.cocoformat import PERSON
from graphsurgery.int8_coco import CocoAP
from graphsurgery.irconvert import convert

from examples.synthetic_coco import joint_directions, write_coco_set

ROOT = Path(__file__).resolve().parent.parent
CROP_RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
TOPDOWN_RECIPE = ROOT / "recipes" / "hrnet_coco_topdown.yaml"


def fragile_detector(path: Path) -> Path:
    """The synthetic set's joint detector, its heatmaps selected by a 1×1 convolution from 18 channels, the 18th a
    constant 50 (int8 then leaves a few levels for the heatmaps' ±2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directions = joint_directions().astype(np.float32)
    weight = np.repeat(np.repeat(directions[:, :, None, None], 4, axis=2), 4, axis=3) / 16
    weight = np.concatenate([weight, np.zeros((1, 3, 4, 4), np.float32)])
    bias = np.zeros(18, np.float32)
    bias[17] = 50.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight", "bias"], ["features"], name="detect", kernel_shape=[4, 4],
                          strides=[4, 4]),
         helper.make_node("Conv", ["features", "select"], ["heatmaps"], name="select", kernel_shape=[1, 1])],
        "fragile_joint_detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 192])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 17, 64, 48])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias"),
         numpy_helper.from_array(np.eye(18, dtype=np.float32)[:17, :, None, None], "select")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("int8_coco")
    annotations = write_coco_set(folder / "images", images=4, seed=0)
    plain = fragile_detector(folder / "fragile.onnx")
    patched = apply(CROP_RECIPE, plain, folder / "fragile.patched.onnx").output
    return SimpleNamespace(folder=folder, annotations=annotations, images=folder / "images", plain=plain,
                           patched=patched)


def pycocotools_ap(annotations: Path, results: Path) -> float:
    """COCO keypoint AP of a results file, straight from pycocotools, on every image with people."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        evaluation = COCOeval(gt, gt.loadRes(str(results)), "keypoints")
        evaluation.params.imgIds = sorted(gt.getImgIds(catIds=[PERSON]))
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def test_the_drop_is_pycocotools_ap_of_f32_minus_int8(coco, tmp_path):
    """A loose drop keeps every layer int8: the AP falls, and convert's numbers are pycocotools' AP of eval-coco's
    detections of the f32 IR and of the int8 IR it wrote."""
    int8 = tmp_path / "loose.xml"
    result = invoke("convert", coco.patched, "--int8", "--calibration", coco.images, "--annotations",
                    coco.annotations, "--max-drop", "0.6", "-o", int8, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metric"] == "coco_keypoint_ap" and report["max_drop"] == 0.6
    assert report["drop_met"] is True and report["reverted_to_float"] == []
    assert re.fullmatch(r"\d+ person crops from .+, 4 images of person_keypoints.json \(ground-truth boxes\)",
                        report["calibration"]), report["calibration"]
    f32 = convert(coco.patched, tmp_path / "f32.xml").xml
    measured = {}
    for name, ir in (("f32", f32), ("int8", int8)):
        evaluate_coco(CROP_RECIPE, coco.plain, coco.annotations, coco.images, patched=ir, backends=("openvino",),
                      results_dir=tmp_path / name)
        measured[name] = pycocotools_ap(coco.annotations, tmp_path / name / "patched-openvino.json")
    ap = report["coco_ap"]
    assert measured["f32"] > 0.9 and measured["int8"] < measured["f32"] - 0.1, measured  # int8 costs AP here
    assert ap["f32"] == pytest.approx(measured["f32"], abs=1e-12)
    assert ap["int8"] == pytest.approx(measured["int8"], abs=1e-12)
    assert ap["drop"] == pytest.approx(measured["f32"] - measured["int8"], abs=1e-12)


def test_a_tight_drop_reverts_what_costs_ap_validated_by_ap(coco, tmp_path, monkeypatch):
    """NNCF validates with the AP (its first validation, of the f32 model, is the f32 AP convert reports), reverts
    the layer that costs it, and the table says which metric, the two APs, the drop and what went back to float."""
    validated = []
    validate = CocoAP.validate

    def spy(self, model, indices):
        indices = list(indices)
        value = validate(self, model, indices)
        validated.append((len(indices), value[0]))
        return value

    monkeypatch.setattr(CocoAP, "validate", spy)
    result = invoke("convert", coco.patched, "--int8", "--calibration", coco.images, "--annotations",
                    coco.annotations, "--max-drop", "0.02", "-o", tmp_path / "tight.xml")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the table's lines, unwrapped
    found = re.search(r"accuracy control: met, AP (\S+) f32, (\S+) int8, drop (\S+) \(COCO keypoint AP on (\d+) "
                      r"people in 4 images of person_keypoints.json \(ground-truth boxes\), a drop of at most 0.02 "
                      r"asked\); 1 layer went back to float \(\w+\)$", output)
    assert found, output
    f32, int8, drop = (float(found.group(i)) for i in (1, 2, 3))
    people = int(found.group(4))
    assert f32 > 0.9 and drop <= 0.02 and drop == pytest.approx(f32 - int8, abs=1e-4)
    full = [value for count, value in validated if count == people]
    assert full and full[0] == pytest.approx(f32, abs=5e-5)  # NNCF's metric of the f32 model: the AP


@pytest.fixture(scope="module")
def recipes(coco) -> dict[str, Path]:
    """Patched models whose keypoints COCO AP cannot score."""
    crop = CROP_RECIPE.read_text()
    texts = {"no keypoints": crop.split("output:")[0],
             "no to_image": crop.replace("    - to_image: {mode: crop}\n", ""),
             "top-down in crop pixels": TOPDOWN_RECIPE.read_text().replace("{mode: boxes}", "{mode: crop}")}
    models = {}
    for index, (label, text) in enumerate(texts.items()):
        recipe = coco.folder / f"refused{index}.yaml"
        recipe.write_text(text)
        models[label] = apply(recipe, coco.plain, coco.folder / f"refused{index}.onnx").output
    return models


@pytest.mark.parametrize("options, needles", [
    (["--annotations", "{ann}"], ["annotations (--annotations)", "--int8 --calibration DIR --max-drop X"]),
    (["--int8", "--calibration", "{images}", "--annotations", "{ann}"], ["needs int8 (--int8)", "--max-drop X"]),
    (["--int8", "--max-drop", "0.1", "--annotations", "{ann}"], ["calibration (--calibration DIR)"]),
    (["--int8", "--calibration-random", "4", "--max-drop", "0.1", "--annotations", "{ann}"],
     ["random samples (--calibration-random) have no ground truth", "give calibration=DIR"]),
])
def test_annotations_need_int8_calibration_images_and_max_drop(coco, tmp_path, options, needles):
    paths = {"{ann}": str(coco.annotations), "{images}": str(coco.images)}
    out = tmp_path / "x.xml"
    one_line_exit_2(invoke("convert", coco.patched, "-o", out, *(paths.get(o, o) for o in options)), *needles)
    assert not out.exists()


def _damaged(coco, tmp_path, damage) -> Path:
    """The synthetic set's annotations, `damage` done to them (what it returns is written)."""
    data = json.loads(coco.annotations.read_text())
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(damage(data) or data))
    return path


def _without_keypoints(data: dict) -> None:
    for annotation in data["annotations"]:
        del annotation["keypoints"], annotation["num_keypoints"]


@pytest.mark.parametrize("damage, needles", [
    (lambda data: [data], ["--annotations:", "not a COCO annotation file", "fix:"]),
    (_without_keypoints, ["--annotations:", "no person with keypoints", "fix: give a COCO keypoints file"]),
    (lambda data: data["annotations"][0].update(keypoints=[1, 2, 2]), ["--annotations:", "3 keypoint values",
                                                                       "fix:"]),
    (lambda data: data["images"][0].update(file_name="elsewhere.png"), ["'elsewhere.png' is not in",
                                                                        "(--calibration)",
                                                                        "fix: give --calibration the folder"]),
    (lambda data: data["images"][0].update(file_name="../outside.png"), ["'../outside.png' is outside", "fix:"]),
])
def test_annotations_that_are_not_coco_keypoints_of_the_calibration_images(coco, tmp_path, damage, needles):
    (tmp_path / "outside.png").write_bytes(b"never read")
    annotations = _damaged(coco, tmp_path, damage)
    out = tmp_path / "x.xml"
    one_line_exit_2(invoke("convert", coco.patched, "--int8", "--calibration", coco.images, "--annotations",
                           annotations, "--max-drop", "0.1", "-o", out), *needles)
    assert not out.exists()


def test_boxes_are_eval_coco_detections_with_annotations(coco, tmp_path):
    """With --annotations, --boxes is what eval-coco --boxes takes (COCO detection results), not a boxes file."""
    out = tmp_path / "x.xml"
    one_line_exit_2(invoke("convert", coco.patched, "--int8", "--calibration", coco.images, "--annotations",
                           coco.annotations, "--boxes", coco.annotations, "--max-drop", "0.1", "-o", out),
                    "--boxes:", "not COCO detection results", "fix:")
    assert not out.exists()


@pytest.mark.parametrize("label, needles", [
    ("no keypoints", ["needs outputs `keypoints` [N, 17, 2] and `scores`", "fix: patch the model with a COCO pose"]),
    ("no to_image", ["not in crop or image pixels (no spliced to_image step)", "fix: end the recipe's output"]),
    ("top-down in crop pixels", ["not in image pixels (no spliced to_image step reads the boxes)", "mode boxes"]),
])
def test_models_whose_keypoints_coco_cannot_score_are_refused(coco, recipes, tmp_path, label, needles):
    out = tmp_path / "x.xml"
    one_line_exit_2(invoke("convert", recipes[label], "--int8", "--calibration", coco.images, "--annotations",
                           coco.annotations, "--max-drop", "0.1", "-o", out), "--annotations", *needles)
    assert not out.exists()


def _socket(path: Path) -> None:
    """A UNIX socket bound at `path`, by a name relative to its folder (a socket's path is at most 107 bytes)."""
    here = os.getcwd()
    os.chdir(path.parent)
    try:
        socket.socket(socket.AF_UNIX).bind(path.name)
    finally:
        os.chdir(here)


def _device(path: Path) -> None:
    """A character device like /dev/null at `path` (root only)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")


@pytest.mark.parametrize("kind", ["FIFO", "folder", "socket", "device"])
def test_an_annotated_image_that_is_no_file_is_named_for_what_it_is(coco, tmp_path, kind):
    """A FIFO or a folder under the annotated name was "'odd.png' is not in IMAGES — fix: give --calibration the
    folder of the annotated images": it is there, and no image."""
    images = tmp_path / "images"
    shutil.copytree(coco.images, images)
    odd = images / "odd.png"
    {"FIFO": os.mkfifo, "folder": os.mkdir, "socket": _socket, "device": _device}[kind](odd)
    annotations = _damaged(coco, tmp_path, lambda data: data["images"][0].update(file_name="odd.png"))
    out = tmp_path / "x.xml"
    one_line_exit_2(invoke("convert", coco.patched, "--int8", "--calibration", images, "--annotations", annotations,
                           "--max-drop", "0.1", "-o", out),
                    f"{odd}: the annotation's file_name 'odd.png' names no image file but a {kind}",
                    "fix: put the JPEG or PNG image there")
    assert not out.exists()


def test_eval_coco_of_an_int8_ir_says_why_it_has_no_parity(coco, tmp_path):
    """Round 55: eval-coco of the int8 IR ended in NO PARITY of f32 tolerances without a word on int8, which is not
    held to f32's answers (`verify --precision int8` judges its decode)."""
    int8 = tmp_path / "int8.xml"
    assert invoke("convert", coco.patched, "--int8", "--calibration", coco.images, "-o", int8).exit_code == 0
    result = invoke("eval-coco", CROP_RECIPE, coco.plain, "--ann", coco.annotations, "--images", coco.images,
                    "--patched", int8, "--backends", "openvino")
    assert result.exit_code == 1, result.output
    assert "NO PARITY" in result.output and "The patched model is int8 (convert --int8)" in result.output
