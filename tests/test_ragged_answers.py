"""Answers of several shapes past the first axis, one per call of verify: numpy could not join them.

A model output of a data-dependent size (a NonZero beside the heatmaps, kept with `keep_original`) was an internal
error of verify on a right patch; so was a wrong top-down patch folding a whole image's boxes into one row
([1, 17·M, 2], round 95's harness on `hrnet_coco_topdown`). They are joined flat (`samples.joined`), and a patched
output of several shapes where the reference's is of one fails, naming the shapes (`samples.ragged`). Found in stop
53, when round 95's batch-dependent endings were run on the top-down recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from graphsurgery.api import apply
from graphsurgery.samples import joined, ragged
from graphsurgery.verification import verify

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
POSE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
TOPDOWN = ROOT / "recipes" / "hrnet_coco_topdown.yaml"


def _targeted(recipe: Path, path: Path) -> Path:
    """`recipe` with its output target named (the model has two outputs)."""
    path.write_text(recipe.read_text().replace("\noutput:\n", "\noutput:\n  target: heatmaps\n"))
    return path


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_a_kept_output_of_a_data_dependent_size_is_compared_not_an_internal_error(tmp_path, dynamic_batch):
    """Was an internal error ("all the input array dimensions except for the concatenation axis must match"): the
    plain model's NonZero [4, K], K another on each sample. Each sample's is compared with the twin's (fed among
    companions, the answer to the sample alone: the call's NonZero covers the companions too, and failed)."""
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx", dynamic_batch=dynamic_batch)))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.3, np.float32), "threshold"))
    model.graph.node.extend([helper.make_node("Greater", ["heatmaps", "threshold"], ["above"]),
                             helper.make_node("NonZero", ["above"], ["where"])])
    model.graph.output.append(helper.make_tensor_value_info("where", TensorProto.INT64, [4, "K"]))
    onnx.save(model, str(tmp_path / "plain.onnx"))
    recipe = _targeted(POSE, tmp_path / "recipe.yaml")
    report = verify(recipe, tmp_path / "plain.onnx", backends=["onnxruntime", "openvino"], random=3)
    assert report, report.failures()
    compared = {result.output for pair in report.pairs for result in pair.results}
    assert "where" in compared


def test_a_patch_folding_an_image_s_boxes_into_one_row_fails_naming_the_shapes(tmp_path):
    """Was an internal error: keypoints reshaped to [1, 17·M, 2] answer [1, 51, 2] to an image of 3 boxes and
    [1, 34, 2] to one of 2; the patch FAILs on them, naming the shapes."""
    plain = pose_model(tmp_path / "plain.onnx", dynamic_batch=True)
    right = apply(TOPDOWN, plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    for node in model.graph.node:
        node.output[:] = ["pre" if name == "keypoints" else name for name in node.output]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, -1, 2], np.int64), "folded"))
    model.graph.node.append(helper.make_node("Reshape", ["pre", "folded"], ["keypoints"]))
    onnx.save(model, str(tmp_path / "mutant.onnx"))
    report = verify(TOPDOWN, plain, patched=tmp_path / "mutant.onnx", backends=["onnxruntime"], random=3)
    assert not report
    assert any("keypoints: answers of several shapes past the first dim to the calls ([1, " in line
               for line in report.failures()), report.failures()


def test_joined_keeps_one_shape_and_flattens_several():
    """Answers of one shape past the first axis are joined along it; of several, flat, values in order."""
    same = joined([np.zeros((1, 2, 3)), np.ones((2, 2, 3))])
    assert same.shape == (3, 2, 3)
    flat = joined([np.arange(6).reshape(1, 3, 2), np.arange(6, 10).reshape(1, 2, 2)])
    assert flat.tolist() == list(range(10))
    assert ragged([{"a": np.zeros((1, 3)), "b": np.zeros((1, 2))}, {"a": np.zeros((1, 4)), "b": np.zeros((2, 2))}]) \
        == {"a": "[1, 3], [1, 4]"}
