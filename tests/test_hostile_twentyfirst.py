"""Hostile round 21: models from the wild, done unkindly.

Element types the recipes cannot feed or read (bfloat16 inputs and heatmaps, float16 and float64 inputs) were an
internal error or a line with a wrong fix; heatmap models at opset 12 failed on OpenVINO on graphsurgery's own
nodes; float16 heatmaps failed `verify` for a right patch; channel-last heatmaps (tf2onnx) passed it decoded
wrongly; a batch declared 0 lost onnxruntime's reason; a hand-written provenance claim showed "None".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
POSE = RECIPES / "hrnet_coco_pose.yaml"
CLASSIFIER = RECIPES / "imagenet_classifier.yaml"


def _pose(path: Path, *, dtype: int = TensorProto.FLOAT, input_dtype: int | None = None,
          output_dtype: int | None = None) -> Path:
    """A 64×48 heatmap model computing in `dtype`; `input_dtype`/`output_dtype`: a Cast at either end."""
    np_dtype = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}[dtype]
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.05, (17, 3, 4, 4)).astype(np_dtype), "w"),
               numpy_helper.from_array(rng.normal(0, 0.1, (17,)).astype(np_dtype), "b")]
    nodes, x = [], "input"
    if input_dtype is not None:
        nodes.append(helper.make_node("Cast", ["input"], ["x"], to=dtype))
        x = "x"
    nodes.append(helper.make_node("Conv", [x, "w", "b"], ["heatmaps"], kernel_shape=[4, 4], strides=[4, 4]))
    out = "heatmaps"
    if output_dtype is not None:
        nodes.append(helper.make_node("Cast", ["heatmaps"], ["out"], to=output_dtype))
        out = "out"
    graph = helper.make_graph(
        nodes, "pose", [helper.make_tensor_value_info("input", input_dtype or dtype, [1, 3, 64, 48])],
        [helper.make_tensor_value_info(out, output_dtype or dtype, [1, 17, 16, 12])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_heatmap_models_at_opset_12_run_on_openvino(tmp_path):
    """heatmap_argmax reduced uint8 flags from opset 12, which OpenVINO's ReduceMax-12 refuses: `verify` said
    "OpenVINO cannot compile the model: Unsupported input type u8" and `convert` blamed the spliced nodes."""
    model = tmp_path / "model.onnx"
    onnx.save(onnx.version_converter.convert_version(onnx.load(str(_pose(model))), 12), str(model))
    patched = tmp_path / "patched.onnx"
    assert invoke("apply", POSE, model, "-o", patched).exit_code == 0
    result = invoke("verify", POSE, model, "--patched", patched, "--random", "1", "--backends", "openvino")
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    result = invoke("convert", patched, "-o", tmp_path / "patched.xml")
    assert result.exit_code == 0, result.output


def test_float16_heatmaps_of_a_right_patch_pass(tmp_path):
    """A float32 network with float16 heatmaps (a Cast at its end): OpenVINO computes the patch's Cast back to
    float32 without the float16 rounding, so the scores differed from onnxruntime's and the twin's by up to
    4.4e-4 (rtol 1e-5 declared): FAIL, exit 1, for a right patch. Keypoints are still compared exactly."""
    model = _pose(tmp_path / "model.onnx", output_dtype=TensorProto.FLOAT16)
    result = invoke("verify", POSE, model, "--random", "2")
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    assert "keypoints" in result.output and "34/34 exact" in result.output


def test_a_provenance_claim_missing_fields_is_shown_without_none(tmp_path):
    """metadata_props claiming a patch by hand (recipe only) was shown "patched by None … (sha256 None…)"."""
    model = _pose(tmp_path / "model.onnx")
    proto = onnx.load(str(model))
    proto.metadata_props.add(key="graphsurgery.provenance", value='[{"recipe": "hrnet-coco-pose"}]')
    onnx.save(proto, str(model))
    result = invoke("inspect", model)
    assert result.exit_code == 0 and "None" not in result.output, result.output
    assert "patched by an unnamed tool with recipe hrnet-coco-pose (no sha256 recorded)" in result.output


def test_channel_last_heatmaps_are_refused_not_decoded_as_channel_first(tmp_path):
    """tf2onnx's [N, 16, 12, 17] heatmaps of a 64×48 input were decoded as 16 joints of 12×17 maps, and `verify`
    said PASS (its twin read them the same way)."""
    model = _pose(tmp_path / "model.onnx")
    proto = onnx.load(str(model))
    proto.graph.node.append(helper.make_node("Transpose", ["heatmaps"], ["nhwc"], perm=[0, 2, 3, 1]))
    proto.graph.output[0].CopyFrom(helper.make_tensor_value_info("nhwc", TensorProto.FLOAT, [1, 16, 12, 17]))
    onnx.save(proto, str(model))
    one_line_exit_2(invoke("apply", POSE, model, "-o", tmp_path / "patched.onnx"), "has its joints last",
                    "Transpose perm [0, 3, 1, 2]")
    assert not (tmp_path / "patched.onnx").exists()


def test_a_batch_declared_zero_says_which_dim_onnxruntime_refused(tmp_path):
    """A batch dim written as 0 (some exporters' "unknown") is patched as free, but onnxruntime runs the plain
    model only on a batch of 0: the line ended "…for the following indices", the dim and sizes dropped."""
    model = _pose(tmp_path / "model.onnx")
    proto = onnx.load(str(model))
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 0
    onnx.save(proto, str(model))
    one_line_exit_2(invoke("verify", POSE, model, "--random", "1", "--backends", "onnxruntime"),
                    "onnxruntime cannot run the model", "index: 0 Got: 1 Expected: 0")


@pytest.mark.parametrize("case, contains", [
    ("bf16-output", "output 'out' is bfloat16"),   # was: internal error (TypeError: Cannot interpret '16'...)
    ("bf16-input", "input 'input' is bfloat16"),   # was: the same internal error
    ("fp64-input", "fix: export the model with a float32 input 'input'"),  # was: "fix: patch another input"
    ("fp16-model", "export the model with a float32 input"),  # was: "fix: add a `cast: {}` step" (it had one)
])
def test_element_types_the_steps_cannot_take_are_one_line(tmp_path, case, contains):
    builders = {
        "bf16-output": dict(output_dtype=TensorProto.BFLOAT16),
        "bf16-input": dict(input_dtype=TensorProto.BFLOAT16),
        "fp64-input": dict(input_dtype=TensorProto.DOUBLE),
        "fp16-model": dict(dtype=TensorProto.FLOAT16),
    }
    model = _pose(tmp_path / "model.onnx", **builders[case])
    before = model.read_bytes()
    one_line_exit_2(invoke("apply", POSE, model, "-o", tmp_path / "patched.onnx"), contains, "model.onnx")
    assert not (tmp_path / "patched.onnx").exists() and model.read_bytes() == before
