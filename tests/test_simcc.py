"""`simcc_decode`: mmpose's get_simcc_maximum + SimCCLabel.decode, on two model outputs listed in output.target.

Graph (ONNX Runtime at opsets 9, 11, 17; OpenVINO f32 at 11, 17) and twin against per-joint loops written here
from the rules, on crafted vectors: ties, NaN in x, in y or both, all −inf, scores ≤ 0, x's maximum above and below
y's. Then a whole model with two SimCC heads, patched by a recipe that lists both, through `verify`.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.emit import Emitter
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.steps.simcc import SimccDecode

K, WX, WY = 17, 384, 512


def decode_model(step: SimccDecode, opset: int) -> onnx.ModelProto:
    graph = gs.Graph(opset=opset)
    x = gs.Variable(step.x, dtype=np.float32, shape=["N", K, WX])
    y = gs.Variable(step.y, dtype=np.float32, shape=["N", K, WY])
    graph.inputs = [x, y]
    env = step.build(Emitter(graph, opset, "post", {x.name, y.name}), {"output": x, step.x: x, step.y: y})
    outputs = []
    for name in ("keypoints", "scores"):
        out = gs.Variable(f"{name}_out", dtype=np.float32)
        graph.nodes.append(gs.Node("Identity", inputs=[env[name]], outputs=[out]))
        outputs.append(out)
    graph.outputs = outputs
    model = gs.export_onnx(graph.cleanup().toposort())
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", opset))
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def crafted() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, K, WX)).astype(np.float32)
    y = rng.standard_normal((6, K, WY)).astype(np.float32)
    x[1, :, 10] = x[1, :, 200] = 9.0                 # ties: the first wins
    y[1, :, 3] = y[1, :, 4] = 9.0
    x[2] = -np.abs(x[2])                             # every score <= 0: (−1, −1)
    x[3, 0, 5] = np.nan                              # NaN in x: location of the NaN, score NaN
    y[3, 1, 7] = np.nan                              # NaN in y only: score is x's (x > NaN is false)
    x[3, 2, 9] = y[3, 2, 11] = np.nan                # both
    x[3, 3] = -np.inf                                # all −inf: argmax 0, score −inf, (−1, −1)
    x[3, 4] = -np.abs(x[3, 4])
    x[3, 4, 20] = np.nan                             # NaN among negatives: still valid
    x[4, :, 50], y[4, :, 60] = 3.0, 2.0              # x's maximum above y's: y's score
    x[5, :, 50], y[5, :, 60] = 2.0, 3.0
    x[5, 0], y[5, 0] = 0.0, 0.0                      # score exactly 0: invalid
    return x, y


def expected(x: np.ndarray, y: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    def first(values: list[float]) -> int:
        nans = [i for i, v in enumerate(values) if v != v]
        return nans[0] if nans else max(range(len(values)), key=lambda i: (values[i], -i))

    n = x.shape[0]
    keypoints, scores = np.zeros((n, K, 2), np.float32), np.zeros((n, K, 1), np.float32)
    for i in range(n):
        for k in range(K):
            xs, ys = x[i, k].tolist(), y[i, k].tolist()
            px, py = first(xs), first(ys)
            score = ys[py] if xs[px] > ys[py] else xs[px]
            scores[i, k, 0] = score
            keypoints[i, k] = (-1.0, -1.0) if score <= 0 else (px, py)
    return keypoints / np.float32(ratio), scores


@pytest.mark.parametrize("opset", [9, 11, 17])
def test_simcc_decode_equals_get_simcc_maximum(opset):
    step = SimccDecode()
    x, y = crafted()
    want_keypoints, want_scores = expected(x, y, 2.0)
    model = decode_model(step, opset)
    answers = [ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"simcc_x": x, "simcc_y": y})]
    with np.errstate(invalid="ignore"):
        twin = step.reference({"simcc_x": x, "simcc_y": y})
    answers.append([twin["keypoints"], twin["scores"]])
    if opset >= 11:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled({"simcc_x": x, "simcc_y": y})
        answers.append([result[port] for port in compiled.outputs])
    assert (want_keypoints == -0.5).any() and np.isnan(want_scores).any()
    for keypoints, scores in answers:
        assert np.array_equal(keypoints, want_keypoints)
        assert np.array_equal(scores, want_scores, equal_nan=True)


def test_simcc_decode_refuses_a_vector_of_unknown_length():
    graph = gs.Graph(opset=17)
    x = gs.Variable("simcc_x", dtype=np.float32, shape=["N", K, "L"])
    y = gs.Variable("simcc_y", dtype=np.float32, shape=["N", K, WY])
    from graphsurgery.steps.base import StepError

    with pytest.raises(StepError, match="static length"):
        SimccDecode().build(Emitter(graph, 17, "post", set()), {"output": x, "simcc_x": x, "simcc_y": y})


# --- a model with two heads, through the splice and verify ---------------------------------------------------------


def two_head_model(path):
    """[N,3,256,192] → Conv → two heads: simcc_x [N,17,384] and simcc_y [N,17,512] (means over the rows / columns
    of a 2× upsampled map, each bin repeated 4×), plus an unrelated third output that must pass through."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (K, 3, 4, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "twice"),
             numpy_helper.from_array(np.array([1, 1, 4], np.float32), "four_times"),
             numpy_helper.from_array(np.array([], np.float32), "roi")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["maps"], strides=[4, 4]),
             helper.make_node("Resize", ["maps", "roi", "twice"], ["big"], mode="nearest"),    # [N,17,128,96]
             helper.make_node("ReduceMean", ["big"], ["rows"], axes=[2], keepdims=0),         # [N,17,96]
             helper.make_node("ReduceMean", ["big"], ["cols"], axes=[3], keepdims=0),         # [N,17,128]
             helper.make_node("Resize", ["rows", "roi", "four_times"], ["simcc_x"], mode="nearest"),
             helper.make_node("Resize", ["cols", "roi", "four_times"], ["simcc_y"], mode="nearest"),
             helper.make_node("Relu", ["maps"], ["energy"])]
    graph = helper.make_graph(
        nodes, "simcc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 256, 192])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, ["N", K, WX]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, ["N", K, WY]),
         helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["N", K, 64, 48])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


RECIPE = """version: 1
name: simcc-test
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - reverse_channels: {}
    - normalize: {mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]}
output:
  target: [simcc_x, simcc_y]
  steps:
    - simcc_decode: {split_ratio: 2.0}
  keep_original: KEEP
"""


@pytest.mark.parametrize("keep", [True, False])
def test_two_heads_are_decoded_together_and_verified(tmp_path, keep):
    from graphsurgery.verification import verify

    plain = two_head_model(tmp_path / "simcc.onnx")
    recipe = tmp_path / "simcc.yaml"
    recipe.write_text(RECIPE.replace("KEEP", str(keep).lower()))
    result = apply(recipe, plain, tmp_path / "patched.onnx")
    outputs = [o.name for o in onnx.load(str(result.output)).graph.output]
    assert outputs == (["keypoints", "scores", "simcc_x", "simcc_y", "energy"] if keep
                       else ["keypoints", "scores", "energy"])
    assert result.plan.outputs_removed == ([] if keep else ["simcc_x", "simcc_y"])
    report = verify(recipe, plain, patched=result.output, random=4)
    assert report, report.failures()
    compared = {r.output for pair in report.pairs for r in pair.results}
    assert compared == set(outputs)  # every output, the passed-through one too


def test_a_target_named_like_a_step_result_is_refused(tmp_path):
    plain = two_head_model(tmp_path / "simcc.onnx")
    model = onnx.load(str(plain))
    for node in model.graph.node:
        node.output[:] = ["scores" if o == "simcc_y" else o for o in node.output]
    model.graph.output[1].name = "scores"
    onnx.save(model, str(tmp_path / "clash.onnx"))
    recipe = tmp_path / "simcc.yaml"
    recipe.write_text(RECIPE.replace("KEEP", "true").replace("[simcc_x, simcc_y]", "[simcc_x, scores]").replace(
        "simcc_decode: {split_ratio: 2.0}", "simcc_decode: {y: scores}"))
    with pytest.raises(GraphsurgeryError, match="which the steps use for their own tensors"):
        apply(recipe, tmp_path / "clash.onnx", tmp_path / "out.onnx")
