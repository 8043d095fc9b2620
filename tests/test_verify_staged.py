"""Verify a recipe whose resize rounds its passes (`round: true`, PIL's uint8 passes) in two stages (`staged`).

The graph sums each pass in float32 and the twin in float64: where a sum falls within rounding of a half they round
to neighbouring integers, and HRNet-tiny spreads those pixels over all its outputs (3e-3 on its maps), so comparing
outputs failed this right patch on every random set. Now the network input each graph computes is checked against
the twins' bounds, and the outputs against the plain model fed that input; wrong patches still fail, at the stage
where they are wrong.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from graphsurgery import verify
from graphsurgery.api import apply
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import parse_recipe
from graphsurgery.twins import preprocess, preprocess_bounds

from conftest import RECIPES

BOTH = ("onnxruntime", "openvino")
ROUNDED = "    - resize: {interpolation: lanczos, clamp: [0, 255], round: true}\n"


def pose_recipe(resize: str = ROUNDED, std: str = "[0.229, 0.224, 0.225]"):
    text = (RECIPES / "hrnet_coco_pose.yaml").read_text().replace("    - cast: {}\n", "    - cast: {}\n" + resize)
    return parse_recipe(text.replace("[0.229, 0.224, 0.225]", std))


@pytest.fixture(scope="module")
def hrnet_tiny(tmp_path_factory):
    from modelkit import hrnet_model

    return hrnet_model(tmp_path_factory.mktemp("hrnet") / "tiny.onnx", opset=17)


def test_a_right_rounded_resize_patch_passes_on_both_backends(hrnet_tiny):
    report = verify(pose_recipe(), hrnet_tiny, backends=BOTH)
    assert report, report.failures()
    assert [pair.name for pair in report.input_steps] == ["onnxruntime: input steps", "openvino: input steps"]
    assert "onnxruntime → patched on openvino, one network input" in [pair.name for pair in report.pairs]
    assert all(result.elements == 8 * 3 * 256 * 192 for pair in report.input_steps for result in pair.results)
    assert any("network input values lie where either is right" in note for note in report.notes)
    assert not any("not necessarily a wrong patch" in note for note in report.notes)  # the old failure's note
    assert json.loads(json.dumps(report.to_dict()))["passed"]


@pytest.mark.parametrize("wrong", ["{interpolation: cubic, antialias: true, clamp: [0, 255], round: true}",
                                   "{interpolation: lanczos, clamp: [0, 255]}"], ids=["filter", "not_rounded"])
def test_a_wrong_resize_fails_at_the_input_stage(hrnet_tiny, tmp_path, wrong):
    patched = apply(pose_recipe(f"    - resize: {wrong}\n"), hrnet_tiny, tmp_path / "wrong.onnx").output
    report = verify(pose_recipe(), hrnet_tiny, patched=patched, backends=BOTH)
    assert not report
    assert len(report.input_steps) == 2
    for pair in report.input_steps:
        assert not pair, pair.name
        assert pair.results[0].failed > 100


def test_a_wrong_normalisation_fails_at_the_input_stage(hrnet_tiny, tmp_path):
    patched = apply(pose_recipe(std="[0.229, 0.224, 0.3]"), hrnet_tiny, tmp_path / "wrong.onnx").output
    report = verify(pose_recipe(), hrnet_tiny, patched=patched, backends=("onnxruntime",))
    assert not report and not report.input_steps[0]
    assert report.input_steps[0].results[0].failed > 256 * 192 // 2  # the blue channel, nearly everywhere


def test_bounds_hold_the_twin_and_open_only_near_a_half(hrnet_tiny):
    recipe = pose_recipe()
    facts = ModelFacts.of(onnx.load(str(hrnet_tiny)), recipe)
    rng = np.random.default_rng(5)
    for hw in ((300, 400), (481, 353), (100, 90)):  # shrink both ways, grow
        x = rng.integers(0, 256, (1, *hw, 3), dtype=np.uint8)
        exact = preprocess(recipe, x, facts)
        lo, hi = preprocess_bounds(recipe, x, facts)
        assert (lo <= exact).all() and (exact <= hi).all()
        level = 1 / 255 / 0.224  # one integer of the resize, through /255 and the smallest std
        assert (hi - lo).max() < 2.5 * level  # a level either side at most
        assert 0 < np.count_nonzero(lo != hi) < 0.2 * lo.size


def test_no_bounds_without_a_rounding_step(hrnet_tiny):
    recipe = pose_recipe("    - resize: {interpolation: lanczos}\n")
    facts = ModelFacts.of(onnx.load(str(hrnet_tiny)), recipe)
    x = np.zeros((1, 300, 400, 3), np.uint8)
    assert preprocess_bounds(recipe, x, facts) is None
    assert preprocess_bounds(pose_recipe(""), x[:, :256, :192], facts) is None


def test_a_step_that_cannot_carry_bounds_falls_back_to_comparing_outputs(hrnet_tiny):
    """A second, unfiltered resize after the rounded one has no bounds: verify compares the outputs directly (no
    input stage), as before, instead of failing inside the twins."""
    recipe = pose_recipe(ROUNDED.replace("lanczos", "lanczos, size: [300, 240], fit: stretch")
                         + "    - resize: {interpolation: linear}\n")
    facts = ModelFacts.of(onnx.load(str(hrnet_tiny)), recipe)
    assert preprocess_bounds(recipe, np.zeros((1, 320, 400, 3), np.uint8), facts) is None
    report = verify(recipe, hrnet_tiny, random=2, backends=("onnxruntime",))
    assert not report.input_steps
    assert report.pairs and all(pair.results for pair in report.pairs)
    assert any(note.startswith("the network input was not compared") for note in report.notes)


def test_the_flip_test_carries_the_bounds(hrnet_tiny):
    """Found by the generated recipes (tests/test_properties_verify.py): a rounded resize then flip_test fell back to
    comparing outputs, and failed; the mirrored crops are copies of the bounded values."""
    text = (RECIPES / "hrnet_coco_pose.yaml").read_text().replace("    - cast: {}\n", "    - cast: {}\n" + ROUNDED)
    text = text.replace("    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n",
                        "    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n"
                        "    - flip_test: {}\n")
    text = text.replace("  steps:\n    - heatmap_argmax", "  steps:\n    - flip_average: {}\n    - heatmap_argmax")
    recipe = parse_recipe(text)
    facts = ModelFacts.of(onnx.load(str(hrnet_tiny)), recipe)
    lo, hi = preprocess_bounds(recipe, np.random.default_rng(0).integers(0, 256, (1, 300, 400, 3), np.uint8), facts)
    assert lo.shape[0] == 2 and np.array_equal(lo[1], lo[0][..., ::-1]) and (lo <= hi).all()
    report = verify(recipe, hrnet_tiny, random=3, backends=BOTH)
    assert report, report.failures()
    assert report.input_steps[0].name == "onnxruntime: input steps"
