"""Round 90: the first round on an Intel Xeon with AVX-512 (bf16, fp16, VNNI) and AMX, where OpenVINO's bf16 hint
runs AMX kernels and its f16 hint really runs float16 (`brgconv_avx512_f16`). Wrong and right patches of models whose
heatmaps hold NaN, ±inf, ties, flat maps, subnormals, huge values, float16/float64/bf16-rounded values, and SimCC
heads, on each backend and precision. A float16 or float64 heatmap model had no cell probes (float32 maps only), so
a patch calling a joint valid above 1e-3 for above 0 PASSed; a model whose maps peak below float32's smallest normal
number FAILed a right patch on both backends, OpenVINO's kernels flushing the subnormals to zero, each such joint
called a real mismatch; an int8 IR verified at f32 FAILed with nothing saying it is int8; a patch giving a map (or a
SimCC x vector) that holds NaN the score 0 PASSed (no probe held NaN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.compare import compare_positions
from graphsurgery.steps.base import Comparison
from graphsurgery.tolerances import DEFAULT_TIE
from graphsurgery.verification import verify
from test_simcc import two_head_model

from modelkit import pose_model

POSE = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_pose.yaml"
SIMCC = POSE.with_name("mmpose_rtmpose_simcc.yaml")
THRESHOLD = "graphsurgery/post/heatmap_argmax/zero_1"  # heatmap_argmax's "score > 0"
NAN_SCORE = "graphsurgery/post/heatmap_argmax/nan"  # the score of a map holding NaN


def _ending(path: Path, nodes: list, constants: list, elem_type: int = TensorProto.FLOAT) -> Path:
    """A tiny pose model (64 × 48 crops, 16 × 12 maps, dynamic batch) whose convolution writes `raw` and `nodes`
    make `heatmaps` of `elem_type` from it."""
    pose_model(path, input_hw=(64, 48), dynamic_batch=True, output_name="raw")
    model = onnx.load(str(path))
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(constants)
    model.graph.output[0].name = "heatmaps"
    model.graph.output[0].type.tensor_type.elem_type = elem_type
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _edited(right: Path, path: Path, name: str, value: float) -> Path:
    """`right` with its constant `name` replaced by `value` (of its own type)."""
    model = onnx.load(str(right))
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(np.asarray(value, numpy_helper.to_array(tensor).dtype), name))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT16, TensorProto.DOUBLE], ids=["float16", "float64"])
def test_heatmaps_of_float16_or_float64_get_cell_probes(tmp_path, elem_type):
    """Was: `cell_probes` took float32 maps only, so a model ending in a Cast to float16 (or float64) had its
    decoder probe (the peaks of 0 and below) but none of the cell probes (flat, tied, cornered and faint peaks): a
    patch calling a joint valid above 1e-3 for above 0 PASSed on both backends, as it FAILs on float32 maps."""
    plain = _ending(tmp_path / "plain.onnx", [helper.make_node("Cast", ["raw"], ["heatmaps"], to=elem_type)], [],
                    elem_type)
    right = apply(POSE, plain, tmp_path / "right.onnx").output
    wrong = _edited(right, tmp_path / "wrong.onnx", THRESHOLD, 1e-3)
    failed = verify(POSE, plain, patched=wrong, random=2, backends=["onnxruntime"])
    assert not failed and any("probe output" in line and "keypoints" in line for line in failed.failures()), \
        failed.failures()
    assert verify(POSE, plain, patched=right, random=2, backends=["onnxruntime"])


def test_the_score_of_a_map_holding_nan_is_probed(tmp_path):
    """Was: a patch giving a map that holds NaN the score 0 (numpy's max, and the recipe's twin, say NaN) PASSed on
    every backend whenever no sample's map held NaN (20 runs of this round; round 52 left NaN decisions unjudged
    because ONNX leaves NaN in Max and ReduceMax to the runtime). heatmap_argmax finds NaN with IsNaN, which no runtime
    chooses, so a cell probe now holds a map with one NaN, and its score is compared (NaN against NaN)."""
    plain = pose_model(tmp_path / "plain.onnx", input_hw=(64, 48), dynamic_batch=True)
    right = apply(POSE, plain, tmp_path / "right.onnx").output
    wrong = _edited(right, tmp_path / "wrong.onnx", NAN_SCORE, 0.0)
    failed = verify(POSE, plain, patched=wrong, random=2, backends=["openvino"])
    assert not failed and any("probe output" in line and "scores" in line for line in failed.failures()), \
        failed.failures()
    assert verify(POSE, plain, patched=right, random=2, backends=["openvino"])


def test_the_score_of_a_simcc_vector_holding_nan_is_probed(tmp_path):
    """Was: the same for SimCC: a patch scoring a joint whose x vector holds NaN 0 (and so (−1, −1)) PASSed on both
    backends (mmpose's get_simcc_maximum: NaN, and the position of the first NaN); the SimCC probe now has an x of
    NaN."""
    plain = two_head_model(tmp_path / "simcc.onnx")
    right = apply(SIMCC, plain, tmp_path / "right.onnx").output
    wrong = _edited(_edited(right, tmp_path / "wrong.onnx", "graphsurgery/post/simcc_decode/nan", 0.0),
                    tmp_path / "wrong.onnx", "graphsurgery/post/simcc_decode/nan_1", 0.0)
    failed = verify(SIMCC, plain, patched=wrong, random=2)
    assert not failed and any("probe output" in line and "scores" in line for line in failed.failures()), \
        failed.failures()
    assert verify(SIMCC, plain, patched=right, random=2)


def test_a_map_peaking_below_the_smallest_normal_float32_is_on_the_threshold():
    """A keypoint whose reference map peaks at a subnormal (1e-40) answered (0, 0) on the other side: a runtime may
    flush subnormals to zero (OpenVINO's kernels do, ONNX Runtime does not), which puts the peak on the score ≤ 0
    threshold; the tie tolerance scaled to such maps (1e-44) made it a real mismatch."""
    maps = np.zeros((1, 2, 4, 4))
    maps[0, 0, 2, 3] = 1e-40  # subnormal in float32
    maps[0, 1, 2, 3] = 2e-38  # normal: still decides
    expected = np.array([[[3.0, 2.0], [3.0, 2.0]]])
    tie = Comparison("float", atol=1e-44, rtol=DEFAULT_TIE.rtol)
    result = compare_positions("keypoints", np.zeros_like(expected), expected, Comparison("coordinates"),
                               reference=maps, tie=tie)
    assert (result.near_ties, result.mismatches) == (1, 1), result.details


def test_a_right_patch_of_subnormal_maps_passes_on_both_backends(tmp_path):
    """Was: FAIL, "patched: onnxruntime → openvino: keypoints … real mismatch" for every joint: the maps of a network
    scaled by 1e-40 are subnormal on ONNX Runtime and zeros on OpenVINO (on AVX-512 and AVX2 kernels alike), so
    ONNX Runtime's patched model answered each joint's peak and OpenVINO's (0, 0)."""
    scale = numpy_helper.from_array(np.float32(1e-40), "tiny")
    plain = _ending(tmp_path / "plain.onnx", [helper.make_node("Mul", ["raw", "tiny"], ["heatmaps"])], [scale])
    report = verify(POSE, plain, random=2)
    assert report, report.failures()


def test_an_int8_ir_verified_at_f32_is_said_to_be_int8(tmp_path):
    """Was: `verify RECIPE PLAIN --patched X.int8.xml --backends openvino` (no --precision int8) FAILed "3 of 3
    comparisons differ" with nothing saying that the IR is int8, whose answers differ from f32 by what quantization
    costs (on this CPU its kernels are AMX's int8), nor that --precision int8 judges it."""
    from graphsurgery.quantize import calibration_set, convert_int8

    plain = pose_model(tmp_path / "plain.onnx", input_hw=(64, 48))
    right = apply(POSE, plain, tmp_path / "right.onnx").output
    ir = convert_int8(right, tmp_path / "right.int8.xml", calibration_set(right, random=4)).xml
    report = verify(POSE, plain, patched=ir, random=2, backends=["openvino"])
    assert any("is an int8 IR" in note and "--precision int8" in note for note in report.notes), report.notes
    assert verify(POSE, plain, patched=ir, random=2, backends=["openvino"], precision="int8")
