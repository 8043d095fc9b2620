"""Hostile round 76: a top-down crop's pixel arithmetic wrong where it seldom rounds otherwise. Round 71 left 13 wrong
patches of crop_boxes' lerp and blend (an error term's Add made Sub, a Sub's inputs swapped in a two-sum, the lerp
weight's split factor 1024 made a divisor) PASSing verify: each moves the unrounded crop by an ulp in a value in a few
hundred, which rounds to another integer in 1–29 boxes of 720, and verify's 20 sample boxes held none. Verify now also
cuts the patched graph from the image crop_boxes cuts from and its two position tensors to the crops before their
rounding (the step's `blended` tensor), feeds it a random 40 × 30 image and the positions of 4 boxes drawn for it, and
compares exactly with the twin's (`CropBoxes.blended`): all 13 FAIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from graphsurgery.api import apply
from graphsurgery.verification import verify

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_topdown.yaml"
CROP = "graphsurgery/pre/crop_boxes/"
ROW = "crops of 4 boxes before rounding"


@pytest.fixture(scope="module")
def right(plain, tmp_path_factory) -> Path:
    """`plain` (the tiny HRNet-shaped model, dynamic batch) patched with the top-down recipe."""
    return apply(RECIPE, plain, tmp_path_factory.mktemp("topdown76") / "right.onnx").output


def _made(name: str, op_type: str):
    def edit(node: onnx.NodeProto) -> None:
        node.op_type = op_type
    return name, edit


def _swapped(name: str):
    def edit(node: onnx.NodeProto) -> None:
        node.input[0], node.input[1] = node.input[1], node.input[0]
    return name, edit


def _wrong(right: Path, mutant, path: Path) -> Path:
    name, edit = mutant
    model = onnx.load(str(right))
    edit(next(node for node in model.graph.node if node.name == CROP + name))
    onnx.save(model, str(path))
    return path


# each PASSed verify (seed 0) before this round, and cut other crops than the right patch for some of 720 random
# boxes on random images (round 76's sweep: 4, 24, 4 and 6 boxes)
WRONG = {
    "the lerp weight's split factor made a divisor": _made("Mul_117", "Div"),
    "the blend's last error term's Add made Sub": _made("Add_83", "Sub"),
    "a Sub's inputs swapped in the lower row's lerp error term": _swapped("Sub_112"),
    "a Sub's inputs swapped in the blend's error term": _swapped("Sub_119"),
}


@pytest.mark.parametrize("mutant", WRONG.values(), ids=WRONG.keys())
def test_a_crop_pixel_arithmetic_wrong_on_few_boxes_fails(right, plain, tmp_path, mutant):
    report = verify(RECIPE, plain, patched=_wrong(right, mutant, tmp_path / "wrong.onnx"), backends=["onnxruntime"])
    assert not report
    failed = report.failures()
    assert any(line.startswith(f"onnxruntime: {ROW}: crops before rounding") for line in failed), failed


def test_the_right_patch_passes_its_crops_before_rounding_exactly_alike_on_both_backends(right, plain):
    """Every value of the 4 crops before their rounding identical to the twin's on ONNX Runtime and OpenVINO (the
    crop's float32 arithmetic is written so that no runtime fuses or reorders a rounding); rows of the verdict."""
    report = verify(RECIPE, plain, patched=right, backends=["onnxruntime", "openvino"])
    assert report, report.failures()
    rows = report.crop_values
    assert [pair.name for pair in rows] == [f"{backend}: {ROW}" for backend in ("onnxruntime", "openvino")]
    results = [result for pair in rows for result in pair.results]
    assert all(result.max_abs == 0 and result.elements == 4 * 3 * 256 * 192 for result in results)
    assert [pair["passed"] for pair in report.to_dict()["crop_values"]] == [True, True]


def test_a_crop_without_its_unrounded_tensor_is_noted(right, plain, tmp_path):
    """A patched graph whose crops before rounding are named otherwise (a user's edit, or a graph patched before this
    round) gets no such row, and says so; its rounded crops are compared on the samples as before."""
    model = onnx.load(str(right))
    for node in model.graph.node:
        node.input[:] = ["edited" if name == CROP + "blended" else name for name in node.input]
        node.output[:] = ["edited" if name == CROP + "blended" else name for name in node.output]
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    report = verify(RECIPE, plain, patched=tmp_path / "renamed.onnx", backends=["onnxruntime"])
    assert report, report.failures()
    assert report.crop_values == [] and report.crop_positions
    assert any("crops before their rounding were not compared" in note and "blended" in note
               for note in report.notes), report.notes


def test_the_twins_crops_before_rounding_round_to_its_crops():
    """`CropBoxes.blended` is the crop twin without its last rounding, in the crops' layout."""
    from graphsurgery.samples import random_person_boxes
    from graphsurgery.steps.base import TensorSpec
    from graphsurgery.steps.topdown import CropBoxes

    rng = np.random.default_rng(76)
    image = rng.integers(0, 256, (1, 3, 30, 40)).astype(np.float32)
    boxes = random_person_boxes(rng, (40, 30), 3)
    spec = TensorSpec("float32", "NCHW", "RGB", image.shape)
    step = CropBoxes(size=(16, 12))
    blended = step.blended(image, spec, boxes)
    assert blended.shape == (3, 3, 16, 12) and not np.array_equal(blended, np.round(blended))
    assert np.array_equal(np.round(blended), step.reference(image, spec, boxes))
    assert np.array_equal(blended, CropBoxes(size=(16, 12), round=False).reference(image, spec, boxes))
