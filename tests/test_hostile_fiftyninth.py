"""Hostile round 59: verify's upscaled image (`samples._upscaled_size`) came last of a letterbox pose recipe's 12
sizes, so an explicit `--random` below 12 (8, the old default, or 11) never fed it, and a patch taking keypoints in
the image's first half pixel for padding (`to_image`'s first_centre 0 for −0.5) PASSed. It now follows the two
leading sizes: `--random 3` feeds it. And its one image ended neither half a model pixel before nor after a cell
on a 160 × 128 model, so a patch whose last_centre moved 0.05 caller px either way PASSed: two more images, each
ending the image on one side of a cell (`samples._upscaled_size`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.samples import UPSCALED
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model

FIRST_CENTRE = "graphsurgery/post/to_image/first_centre"


@pytest.fixture(scope="module")
def letterbox_pose(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(recipe, plain model, right patch, patch whose first_centre is 0) of a letterbox pose recipe."""
    folder = tmp_path_factory.mktemp("upscaled")
    plain, recipe = pose_model(folder / "plain.onnx", input_hw=(128, 160)), folder / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX)
    right = apply(recipe, plain, folder / "right.onnx").output
    model = onnx.load(str(right))
    [first] = [tensor for tensor in model.graph.initializer if tensor.name == FIRST_CENTRE]
    first.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(first)), FIRST_CENTRE))
    onnx.save(model, str(folder / "wrong.onnx"))
    return recipe, plain, right, folder / "wrong.onnx"


@pytest.mark.parametrize("count", [3, 8, 11])
def test_a_few_random_samples_feed_the_upscaled_image(letterbox_pose, count):
    recipe, plain, right, wrong = letterbox_pose
    report = verify(recipe, plain, patched=wrong, random=count, backends=["onnxruntime"])
    assert not report
    assert any(w * UPSCALED <= 160 and h * UPSCALED <= 128 for w, h in report.sizes), report.sizes


def test_the_right_patch_passes_with_three(letterbox_pose):
    recipe, plain, right, _ = letterbox_pose
    assert verify(recipe, plain, patched=right, random=3)


@pytest.mark.parametrize("moved", [0.05, -0.05])
def test_the_right_edge_moved_by_a_twentieth_of_a_pixel_fails(letterbox_pose, tmp_path, moved):
    recipe, plain, right, _ = letterbox_pose
    model = onnx.load(str(right))
    nodes = model.graph.node
    [at] = [i for i, node in enumerate(nodes) if node.name == "graphsurgery/post/to_image/Greater"]
    model.graph.initializer.append(numpy_helper.from_array(np.float32(moved), "moved"))
    nodes.insert(at, helper.make_node("Add", [nodes[at].input[1], "moved"], ["moved_last_centre"]))
    nodes[at + 1].input[1] = "moved_last_centre"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    assert not verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
