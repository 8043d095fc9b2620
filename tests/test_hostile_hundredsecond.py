"""Round 102: never double-apply a step, the output side, and round 101's input side bypassed or over-eager.

A float16 classifier ends in Softmax → Cast to float32 (onnxconverter-common's keep_io_types): `softmax`'s
skip_if_present did not see through the Cast and gave it a second softmax; verify PASSed (its twin did the same). A
model ending in TopK got the recipe's `topk` again: its indices were places in the model's own list, not classes,
and verify PASSed. A raw DFL head whose class rows a Sigmoid already made got dfl_boxes' sigmoid again (every score
≥ 0.5), a YOLOX head the model decodes itself got the grid and exp again, and a detector's own
NonMaxSuppression output was decoded again as a raw head: all PASSed. On the input
side, a `/ 255` behind an Unsqueeze/Reshape or a Clip was not seen, and a learnt affine on the input (a Keras
BatchNormalization exported as Mul + Add, near 1 and 0) was taken for the normalization the recipe's `normalize`
does, and the recipe refused. And round 101's stop 54: one recorded `center` for three crops was blamed on the
patched model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.reference import verify_reference
from test_hostile_hundredfirst import NCHW_RECIPE, build, channel, refused

from modelkit import bgr_crops, pose_model, saved

ROOT = Path(__file__).resolve().parent.parent

CLASSIFIER = """version: 1
name: classifier-ending
output:
%s  steps:
    - softmax: {}
    - topk: {k: 3}
  names: {indices: indices, scores: scores}
"""


def classifier(path: Path, ending) -> Path:
    """[N, 3, 8, 8] → MatMul logits [N, 10] → `ending(nodes, inits)`, which returns the outputs' value infos."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (192, 10)).astype(np.float32), "w")]
    outputs = ending(nodes, inits)
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  ["N", 3, 8, 8])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def float16_softmax(nodes, inits):
    nodes += [helper.make_node("Cast", ["logits"], ["half"], to=TensorProto.FLOAT16),
              helper.make_node("Softmax", ["half"], ["softmax"], axis=-1),
              helper.make_node("Cast", ["softmax"], ["prob"], name="graph_output_cast", to=TensorProto.FLOAT)]
    return [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10])]


def top_five(nodes, inits):
    inits.append(numpy_helper.from_array(np.array([5], np.int64), "k"))
    nodes += [helper.make_node("Softmax", ["logits"], ["softmax"], axis=-1),
              helper.make_node("TopK", ["softmax", "k"], ["prob", "idx"], axis=-1)]
    return [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 5])]


def softmaxes(path: Path) -> int:
    return sum(node.op_type == "Softmax" for node in onnx.load(str(path)).graph.node)


def test_a_float16_classifier_ending_in_softmax_then_cast_gets_no_second_softmax(tmp_path):
    plain = classifier(tmp_path / "half.onnx", float16_softmax)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLASSIFIER % "")
    patched = apply(recipe, plain, tmp_path / "patched.onnx").output
    assert softmaxes(patched) == 1
    got = onnxruntime.InferenceSession(str(patched)).run(
        ["scores"], {"input": np.random.default_rng(0).normal(0, 3, (2, 3, 8, 8)).astype(np.float32)})[0]
    assert got[:, 0].min() > 0.2  # the model's own probabilities, not a softmax of them (all near 0.1)


@pytest.mark.parametrize("recipe_text", [CLASSIFIER % "  target: prob\n",
                                         CLASSIFIER.replace("    - softmax: {}\n", "").replace(
                                             "{k: 3}", "{k: 3, source: output}") % "  target: prob\n"],
                         ids=["softmax-topk", "topk-of-output"])
def test_topk_on_a_model_output_a_topk_already_made_is_refused(tmp_path, recipe_text):
    """(With the softmax before it, the softmax is refused first since round 105's leftover.)"""
    plain = classifier(tmp_path / "top5.onnx", top_five)
    if "softmax" in recipe_text:
        refused(recipe_text, plain, tmp_path, "softmax: the model output 'prob' is already made by a TopK node",
                "not the classes' probabilities", "fix: drop the `softmax` step")
        return
    refused(recipe_text, plain, tmp_path, "topk: the model output 'prob' is already made by a TopK node",
            "its indices would be places in that list, not classes", "fix: drop the `topk` step")


def dfl_head(path: Path, *, sigmoid: bool, levels: bool = False) -> Path:
    """A raw DFL head [1, 64 + 3, 21] for a 32 × 32 image (strides 8, 16, 32), its class rows made by a Sigmoid
    (`sigmoid`), the rows concatenated per level and the levels side by side (`levels`) or all at once."""
    rng = np.random.default_rng(1)
    classes, anchors = 3, (16, 4, 1)
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1)]
    inits = []
    pieces = []
    for level, count in enumerate(anchors if levels else (sum(anchors),)):
        for part, rows in (("box", 64), ("cls", classes)):
            name = f"{part}{level}"
            inits += [numpy_helper.from_array(rng.normal(0, 1, (48, rows * count)).astype(np.float32), f"w_{name}"),
                      numpy_helper.from_array(np.array([1, rows, count], np.int64), f"shape_{name}")]
            nodes += [helper.make_node("MatMul", ["features", f"w_{name}"], [f"flat_{name}"]),
                      helper.make_node("Reshape", [f"flat_{name}", f"shape_{name}"], [name])]
        if sigmoid:
            nodes.append(helper.make_node("Sigmoid", [f"cls{level}"], [f"prob{level}"], name=f"sigmoid{level}"))
        nodes.append(helper.make_node("Concat", [f"box{level}", f"prob{level}" if sigmoid else f"cls{level}"],
                                      [f"level{level}"], axis=1))
        pieces.append(f"level{level}")
    nodes.append(helper.make_node("Concat", pieces, ["output0"], axis=2))
    graph = helper.make_graph(nodes, "dfl", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 64 + classes, 21])],
                              inits)
    return saved(graph, path)


DFL = """version: 1
name: dfl
output:
  steps:
    - dfl_boxes: {bins: 16%s}
    - nms: {iou_threshold: 0.7, score_threshold: 0.25, max_detections: 30, best_class_only: true}
  names: {boxes: boxes, scores: scores, classes: classes, count: count}
"""


@pytest.mark.parametrize("levels", [False, True], ids=["one-concat", "per-level"])
def test_dfl_boxes_sigmoid_on_class_scores_a_sigmoid_already_made_is_refused(tmp_path, levels):
    plain = dfl_head(tmp_path / "dfl.onnx", sigmoid=True, levels=levels)
    refused(DFL % "", plain, tmp_path, "dfl_boxes: the model's class scores (the head's rows from 64) are already "
            "made by Sigmoid node 'sigmoid0'", "would apply the sigmoid again", "fix: set `scores: none`")
    recipe = tmp_path / "none.yaml"  # the fix as the line words it, and the raw head as before
    recipe.write_text(DFL % ", scores: none")
    assert invoke("apply", recipe, plain, "--dry-run").exit_code == 0
    recipe.write_text(DFL % "")
    assert invoke("apply", recipe, dfl_head(tmp_path / "raw.onnx", sigmoid=False, levels=levels),
                  "--dry-run").exit_code == 0


def unsqueezed(net, x):
    net.inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    x = net.op("Squeeze", [net.op("Unsqueeze", [x, "axis0"], "batched"), "axis0"], "unbatched")
    return net.op("Div", [x, net.const("k", 255.0)], "scaled")


def clamped(net, x):
    x = net.op("Clip", [x, net.const("low", 0.0), net.const("high", 255.0)], "clamped")
    return net.op("Div", [x, net.const("k", 255.0)], "scaled")


@pytest.mark.parametrize("prelude", [unsqueezed, clamped], ids=["unsqueeze-squeeze", "clip"])
def test_a_scale_behind_a_reshape_or_a_clamp_is_seen(tmp_path, prelude):
    plain = build(tmp_path / "m.onnx", prelude)
    refused(NCHW_RECIPE, plain, tmp_path, "divides by 255 (Div node 'scaled_node')",
            "drop the `scale` and `normalize` steps")


def learnt_affine(net, x):
    """A Keras BatchNormalization on the input, as tf2onnx writes it: a Mul and an Add near 1 and 0."""
    x = net.op("Mul", [x, net.const("bn/scale", channel([1.1, 0.9, 1.05]))], "bn_mul")
    return net.op("Add", [x, net.const("bn/shift", channel([0.01, -0.02, 0.03]))], "bn_add")


def test_a_learnt_affine_on_the_input_is_no_normalization_the_recipe_doubles(tmp_path):
    plain = build(tmp_path / "bn.onnx", learnt_affine)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(NCHW_RECIPE)
    result = invoke("apply", recipe, plain, "-o", tmp_path / "patched.onnx")
    assert result.exit_code == 0 and "prepares its input" not in result.output, result.output
    one_line_exit_2(invoke("apply", recipe, build(tmp_path / "scaled.onnx", clamped), "--dry-run"), "divides by 255")


def suppressed_detector(path: Path) -> Path:
    """A detector whose output [1, 300, 6] is computed after its own NonMaxSuppression (an ultralytics export with
    nms=True): detections, not a raw head."""
    rng = np.random.default_rng(2)
    anchors = 21
    inits = [numpy_helper.from_array(rng.normal(0, 1, (48, 4 * anchors)).astype(np.float32), "w_box"),
             numpy_helper.from_array(rng.normal(0, 1, (48, anchors)).astype(np.float32), "w_score"),
             numpy_helper.from_array(np.array([1, anchors, 4], np.int64), "box_shape"),
             numpy_helper.from_array(np.array([1, 1, anchors], np.int64), "score_shape"),
             numpy_helper.from_array(np.array([300], np.int64), "most"),
             numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
             numpy_helper.from_array(np.array([2], np.int64), "column"),
             numpy_helper.from_array(np.zeros((1, 300, 6), np.float32), "rows")]
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
             helper.make_node("MatMul", ["features", "w_box"], ["flat_box"]),
             helper.make_node("Reshape", ["flat_box", "box_shape"], ["corners"]),
             helper.make_node("MatMul", ["features", "w_score"], ["flat_score"]),
             helper.make_node("Reshape", ["flat_score", "score_shape"], ["confidence"]),
             helper.make_node("NonMaxSuppression", ["corners", "confidence", "most", "iou"], ["selected"],
                              name="nms"),
             helper.make_node("Gather", ["selected", "column"], ["kept"], axis=1),
             helper.make_node("Cast", ["kept"], ["kept_float"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["kept_float"], ["total"], keepdims=0),
             helper.make_node("Add", ["rows", "total"], ["output0"])]
    graph = helper.make_graph(nodes, "suppressed", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                  [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 300, 6])], inits)
    return saved(graph, path)


def test_a_head_decode_on_detections_the_model_already_suppressed_is_refused(tmp_path):
    """yolo_boxes v5 read [1, 300, 6] as 300 anchors of cx, cy, w, h, objectness and one class: applied without a
    word, and verify PASSed."""
    recipe = DFL.replace("dfl_boxes: {bins: 16%s}", "yolo_boxes: {format: v5}").replace("name: dfl", "name: yolo")
    refused(recipe, suppressed_detector(tmp_path / "nms.onnx"), tmp_path,
            "yolo_boxes: the model output is computed after NonMaxSuppression node 'nms'",
            "detections already decoded and suppressed", "drop the decode and nms steps")


def test_a_recording_of_one_center_for_three_crops_is_refused_as_the_recordings_fault(tmp_path):
    """Fed among companions (round 101's stop 54), one recorded `center` [1, 2] for three crops met onnxruntime's
    broadcast error, blamed on the patched model ("re-export it"); before the companions, an IndexError."""
    recipe = ROOT / "recipes" / "hrnet_coco_pose_image.yaml"
    plain = pose_model(tmp_path / "pose.onnx", dynamic_batch=True)
    patched = apply(recipe, plain, tmp_path / "patched.onnx").output
    crops = bgr_crops(3)
    one = {"center": np.array([[96.0, 128.0]], np.float32), "scale": np.array([[1.0, 1.25]], np.float32)}
    session = onnxruntime.InferenceSession(str(patched))
    answers = [dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": crops[i:i + 1], **one})))
               for i in range(3)]
    reference = tmp_path / "reference.npz"
    np.savez(reference, input=crops, **one, **{name: np.concatenate([a[name] for a in answers]) for name in answers[0]})
    with pytest.raises(GraphsurgeryError, match=r"the reference's 'center' holds 1 row\(s\) for 3 samples of "
                                                r"'input'.*record one 'center' row per sample"):
        verify_reference(recipe, plain, reference=reference, patched=patched, backends=["onnxruntime"])


def test_the_refusal_in_verify_says_how_to_verify_a_forced_model(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(NCHW_RECIPE)
    one_line_exit_2(invoke("verify", recipe, build(tmp_path / "m.onnx", clamped), "--random", "1"),
                    "graphsurgery apply --force`, then give verify or eval-coco the result with --patched")


def yolox_head(path: Path, *, decoded: bool) -> Path:
    """A YOLOX-shaped head [1, 21, 5 + 2] for a 32 × 32 image, raw or decoded by the model itself (its export's
    decode_in_inference: (xy + grid) · stride, exp(wh) · stride, then the scores, concatenated)."""
    rng = np.random.default_rng(3)
    anchors, rows = 21, 7
    inits = [numpy_helper.from_array(rng.normal(0, 1, (48, anchors * rows)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, anchors, rows], np.int64), "head_shape"),
             numpy_helper.from_array(rng.uniform(0, 4, (1, anchors, 2)).astype(np.float32), "grid"),
             numpy_helper.from_array(np.full((1, anchors, 1), 8, np.float32), "stride"),
             *[numpy_helper.from_array(np.array([value], np.int64), name)
               for name, value in (("zero", 0), ("two", 2), ("four", 4), ("seven", 7), ("last", 2))]]
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
             helper.make_node("MatMul", ["features", "w"], ["flat"]),
             helper.make_node("Reshape", ["flat", "head_shape"], ["raw" if decoded else "output0"])]
    if decoded:
        nodes += [helper.make_node("Slice", ["raw", "zero", "two", "last"], ["xy"]),
                  helper.make_node("Slice", ["raw", "two", "four", "last"], ["wh"]),
                  helper.make_node("Slice", ["raw", "four", "seven", "last"], ["rest"]),
                  helper.make_node("Add", ["xy", "grid"], ["cells"]),
                  helper.make_node("Mul", ["cells", "stride"], ["centres"]),
                  helper.make_node("Exp", ["wh"], ["sizes_in_cells"], name="exp_wh"),
                  helper.make_node("Mul", ["sizes_in_cells", "stride"], ["sizes"]),
                  helper.make_node("Concat", ["centres", "sizes", "rest"], ["output0"], axis=-1)]
    graph = helper.make_graph(nodes, "yolox", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, anchors, rows])], inits)
    return saved(graph, path)


def test_format_yolox_on_a_head_the_model_decodes_itself_is_refused(tmp_path):
    """Exported with decode_in_inference, the head is centres and sizes in pixels: format yolox added the grid and
    exponentiated again, and verify PASSed."""
    recipe = DFL.replace("dfl_boxes: {bins: 16%s}", "yolo_boxes: {format: yolox, strides: [8, 16, 32]}")
    refused(recipe, yolox_head(tmp_path / "decoded.onnx", decoded=True), tmp_path,
            "yolo_boxes: the model decodes its YOLOX head itself (exp(wh) · stride by Exp node 'exp_wh')",
            "fix: set `format: v5`")
    fixed = tmp_path / "v5.yaml"
    fixed.write_text(recipe.replace("format: yolox, strides: [8, 16, 32]", "format: v5"))
    assert invoke("apply", fixed, tmp_path / "decoded.onnx", "--dry-run").exit_code == 0
    raw = tmp_path / "raw.yaml"
    raw.write_text(recipe)
    assert invoke("apply", raw, yolox_head(tmp_path / "raw.onnx", decoded=False), "--dry-run").exit_code == 0
