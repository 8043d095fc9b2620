"""verify's random images include sizes whose aspect-kept side is exactly a half, where `side_rounding: round`
(half to even, Python's round: ultralytics' letterbox) parts from rounding halves up (C's round, int(x + 0.5)).

Round 52 left it open: no size verify fed made a half, so a letterbox whose resize rounded halves up (its Greater
made GreaterOrEqual) and a geometry record whose half rule compared 3·remainder for 2·remainder PASSed.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from graphsurgery.api import apply
from graphsurgery.steps.resize import Resize
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model


@pytest.mark.parametrize(("fit", "size"), [("letterbox", (128, 160)), ("letterbox", (640, 640)), ("height", (48, 192))])
def test_the_rounding_sizes_make_an_even_and_an_odd_half(fit, size):
    th, tw = size
    widths = [Fraction(w * th, h) for w, h in Resize(size=size, fit=fit, side_rounding="round").rounding_sizes()]
    assert [(width - width.numerator // width.denominator, width.numerator // width.denominator % 2)
            for width in widths] == [(Fraction(1, 2), 0), (Fraction(1, 2), 1)]


def test_other_roundings_keep_their_sizes():
    """Guard: floor and ceil have no half to tell apart; their sizes stay those of round 41."""
    for rounding in ("floor", "ceil"):
        sizes = Resize(size=(128, 160), fit="letterbox", side_rounding=rounding).rounding_sizes()
        assert all(h == 2 * 128 + 1 for _, h in sizes) and len(sizes) == 2


@pytest.fixture(scope="module")
def letterbox(tmp_path_factory) -> tuple[Path, Path, onnx.ModelProto]:
    folder = tmp_path_factory.mktemp("letterbox")
    plain, recipe = pose_model(folder / "plain.onnx", input_hw=(128, 160)), folder / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX)
    return recipe, plain, onnx.load(str(apply(recipe, plain, folder / "right.onnx").output))


def _half_rule(model: onnx.ModelProto, section: str) -> onnx.NodeProto:
    """The Greater of `_divide`'s half to even (2·remainder > divisor) in the resize or the geometry record."""
    doubled = {node.output[0] for node in model.graph.node if node.op_type == "Mul" and node.name.startswith(
        f"graphsurgery/pre/{section}/") and any(name.endswith("/two") for name in node.input)}
    [greater] = [node for node in model.graph.node if node.op_type == "Greater" and node.input[0] in doubled]
    return greater


def test_a_resize_rounding_halves_up_fails_at_random_2(letterbox, tmp_path):
    recipe, plain, right = letterbox
    model = onnx.ModelProto()
    model.CopyFrom(right)
    _half_rule(model, "resize").op_type = "GreaterOrEqual"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", random=2, backends=["onnxruntime"])
    assert not report
    assert any(line.startswith("onnxruntime: input steps") for line in report.failures()), report.failures()


def test_a_geometry_record_with_another_half_rule_fails_at_random_2(letterbox, tmp_path):
    recipe, plain, right = letterbox
    model = onnx.ModelProto()
    model.CopyFrom(right)
    doubling = _half_rule(model, "geometry").input[0]
    [mul] = [node for node in model.graph.node if node.output[0] == doubling]
    [two] = [name for name in mul.input if name.endswith("/two")]
    model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(
        next(tensor for tensor in model.graph.initializer if tensor.name == two)) + 1, "three"))
    mul.input[list(mul.input).index(two)] = "three"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", random=2, backends=["onnxruntime"])
    assert not report, report.sizes


def test_the_right_patch_passes_at_the_halves(letterbox, tmp_path):
    recipe, plain, right = letterbox
    onnx.save(right, str(tmp_path / "right.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "right.onnx", random=2)
    assert report, report.failures()
