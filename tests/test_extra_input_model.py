"""A pose model with a second real input (`bias` [1, 17, 1, 1], also 4-D) and the shipped crop recipe aimed at its
image input: apply, verify and bench work, and the bias really reaches the keypoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.recipe import Recipe, load_recipe
from graphsurgery.runners import open_runner
from graphsurgery.verification import verify

from conftest import RECIPES
from modelkit import bgr_crops, pose_model_with_bias


@pytest.fixture(scope="module")
def biased(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("biased")
    shipped = load_recipe(RECIPES / "hrnet_coco_pose.yaml")
    recipe = Recipe(version=1, name="crop-with-target", input=shipped.input.model_copy(update={"target": "input"}),
                    output=shipped.output)
    path = folder / "recipe.yaml"
    text = (RECIPES / "hrnet_coco_pose.yaml").read_text().replace("input:\n", "input:\n  target: input\n", 1)
    path.write_text(text)
    return pose_model_with_bias(folder / "biased.onnx"), recipe, path


def test_apply_scales_to_the_crop_of_the_named_image_input(biased, tmp_path):
    model, recipe, _ = biased
    result = apply(recipe, model, tmp_path / "patched.onnx")
    assert [s.name for s in result.plan.inputs] == ["input", "bias"]
    crops = bgr_crops(1)
    bias = np.zeros((1, 17, 1, 1), np.float32)
    with open_runner("onnxruntime", result.output) as run:
        plain = run({"input": crops, "bias": bias})
        shifted = run({"input": crops, "bias": bias - 1e4})  # every heatmap ≤ 0: every keypoint (0, 0)
    assert plain["keypoints"].max() > 48  # crop pixels (heatmap x 4), not heatmap cells
    assert np.all(shifted["keypoints"] == 0) and np.all(shifted["scores"] < 0)


def test_verify_passes_and_feeds_the_bias(biased):
    model, recipe, _ = biased
    report = verify(recipe, model, random=2)
    assert report, report.failures()
    assert any("'bias'" in note for note in report.notes)


def test_bench_feeds_the_bias_to_both_pipelines(biased, tmp_path):
    model, _, recipe_path = biased
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", str(recipe_path), str(model), "--iterations", "1", "--warmup", "0",
                                      "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["pipelines"]) == 5
