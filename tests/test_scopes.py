"""The node names splice gives each recipe step are the ones the patched graph's readers look for
(`scopes.step_nodes`: what nms reads, the flip test's halves, int8's to_image)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from graphsurgery.api import apply
from graphsurgery.recipe import load_recipe
from graphsurgery.scopes import SPLICED, step_nodes

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.mark.parametrize("recipe", ["hrnet_coco_pose.yaml", "hrnet_coco_topdown.yaml"])
def test_every_step_s_nodes_are_under_its_scope(plain, tmp_path, recipe):
    steps = load_recipe(RECIPES / recipe)
    patched = onnx.load(str(apply(RECIPES / recipe, plain, tmp_path / "p.onnx").output))
    names = [node.name for node in patched.graph.node]
    for section in (steps.input, steps.output):
        for step in section.steps:
            assert any(name.startswith(step_nodes(step.side, step.step_name)) for name in names), step.step_name
    spliced = [name for name in names if name.startswith(f"{SPLICED}/")]
    assert spliced and len(spliced) < len(names)  # the model's own nodes are not under it
