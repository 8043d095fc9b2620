"""Round 107: are the "already done by the model" decisions right?

softmax's `skip_if_present` took any softmax the output walk found for the recipe's: one over another axis of the
output (a torch `dim=1` on [N, 2, 5], a Softmax over 5 then a Transpose, LogSoftmax → Exp over axis 1, a written-out
softmax whose ReduceSum adds up axis 1, the batch or everything) was skipped, and verify's twin skipped it too, so it
PASSed. Such a softmax is now refused, naming its axis and the fix; a Dropout in training mode and a sum taken
without its kept dims are no longer looked through. On the input side, tf2onnx's Transpose to NHWC and back to NCHW
was read as the model taking NHWC, and the `layout: {to: NCHW}` its NCHW input needs was refused.
yolo_boxes read a raw head whose every row a Sigmoid made (YOLOv5's, not decoded) as pixels: now refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.model import output_producer
from test_hostile_hundredfirst import NCHW_RECIPE, build
from test_hostile_hundredsecond import classifier

IMAGE = np.random.default_rng(0).normal(0, 3, (2, 3, 8, 8)).astype(np.float32)
RECIPE = """version: 1
name: probabilities
output:
  steps:
    - softmax: {%s}
  names: {probabilities: p}
"""


def node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=f"{output}_node", **attrs)


def ending(nodes, shape, ints=(), floats=()):
    """A classifier's [N, 10] logits → `nodes` → "prob" of `shape`, with the constants they read."""
    def made(graph_nodes, graph_inits):
        graph_nodes += nodes
        graph_inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints]
        graph_inits += [numpy_helper.from_array(np.array(v), k) for k, v in floats]
        return [helper.make_tensor_value_info("prob", TensorProto.FLOAT, list(shape))]
    return made


TO_3D = node("Reshape", ["logits", "to3"], "logits3")
OTHER_AXIS = {  # name: (ending, the axis the model's softmax is over, as the refusal names it)
    "softmax-dim-1": (ending([TO_3D, node("Softmax", ["logits3"], "prob", axis=1)], ["N", 2, 5], [("to3", [0, 2, 5])]),
                      "axis 1"),
    "softmax-then-transpose": (ending([TO_3D, node("Softmax", ["logits3"], "soft", axis=-1),
                                       node("Transpose", ["soft"], "prob", perm=[0, 2, 1])], ["N", 5, 2],
                                      [("to3", [0, 2, 5])]), "axis 1"),
    "logsoftmax-exp": (ending([TO_3D, node("LogSoftmax", ["logits3"], "log", axis=1), node("Exp", ["log"], "prob")],
                              ["N", 2, 5], [("to3", [0, 2, 5])]), "axis 1"),
    "sum-over-axis-1": (ending([TO_3D, node("Exp", ["logits3"], "e"), node("ReduceSum", ["e", "one"], "total"),
                                node("Div", ["e", "total"], "prob")], ["N", 2, 5], [("to3", [0, 2, 5]), ("one", [1])]),
                        "axis 1"),
    "sum-over-batch": (ending([node("Exp", ["logits"], "e"), node("ReduceSum", ["e", "zero"], "total"),
                               node("Div", ["e", "total"], "prob")], ["N", 10], [("zero", [0])]), "axis 0"),
    "sum-of-everything": (ending([node("Exp", ["logits"], "e"), node("ReduceSum", ["e"], "total"),
                                  node("Div", ["e", "total"], "prob")], ["N", 10]), "axes 0, 1"),
    "softmax-over-batch": (ending([node("Softmax", ["logits"], "prob", axis=0)], ["N", 10]), "axis 0"),
}


@pytest.mark.parametrize("name", list(OTHER_AXIS))
def test_a_softmax_over_another_axis_than_the_recipes_is_refused_not_skipped(tmp_path, name):
    made, axis = OTHER_AXIS[name]
    plain = classifier(tmp_path / "plain.onnx", made)
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "patched.onnx"
    recipe.write_text(RECIPE % "")
    one_line_exit_2(invoke("apply", recipe, plain, "-o", out), f"already made by a softmax over its {axis}, not over "
                    "the softmax step's axis -1", "fix: ")
    assert not out.exists()
    if axis == "axis 1":  # the fix followed: the model's probabilities over axis 1, passed through
        recipe.write_text(RECIPE % "axis: 1")
        patched = apply(recipe, plain, out).output
        want = onnxruntime.InferenceSession(str(plain)).run(None, {"input": IMAGE})[0]
        np.testing.assert_array_equal(onnxruntime.InferenceSession(str(patched)).run(["p"], {"input": IMAGE})[0],
                                      want)
        assert sum(n.op_type == "Softmax" for n in onnx.load(str(patched)).graph.node) <= 1


def test_a_training_dropout_and_a_sum_without_its_kept_dims_are_no_softmaxs_output(tmp_path):
    """A Dropout in training mode drops and scales up at random; e / ReduceSum(e, keepdims=0) lines the sums up
    with the classes, not the rows: neither output is the softmax's. An inference Dropout still is."""
    for mode, producer in ((True, "Dropout"), (False, "Softmax")):
        plain = classifier(tmp_path / f"dropout-{mode}.onnx", ending(
            [node("Softmax", ["logits"], "soft", axis=-1), node("Dropout", ["soft", "ratio", "mode"], "prob")],
            ["N", 10], floats=[("ratio", np.float32(0.5)), ("mode", np.bool_(mode))]))
        assert output_producer(onnx.load(str(plain)), "prob") == producer
    plain = classifier(tmp_path / "flat-sum.onnx", ending(
        [node("Exp", ["logits"], "e"), node("ReduceSum", ["e", "last"], "total", keepdims=0),
         node("Div", ["e", "total"], "prob")], ["N", 10], [("last", [-1])]))
    assert output_producer(onnx.load(str(plain)), "prob") == "Div"


def there_and_back(net, x: str) -> str:
    """tf2onnx with `inputs_as_nchw`: a Transpose to the NHWC the TF graph computes in, then back to NCHW before
    the Conv (an optimizer that left the pair): the model's input is NCHW, as declared."""
    return net.op("Transpose", [net.op("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])], "nchw", perm=[0, 3, 1, 2])


def test_a_transpose_to_nhwc_and_back_is_no_layout_step_of_the_models_own(tmp_path):
    plain = build(tmp_path / "there-and-back.onnx", there_and_back)
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "patched.onnx"
    recipe.write_text(NCHW_RECIPE)
    result = invoke("apply", recipe, plain, "-o", out)
    assert result.exit_code == 0, result.output
    shown = invoke("inspect", plain).output  # both transposes still shown
    assert "transposes NCHW → NHWC" in shown and "transposes NHWC → NCHW" in shown, shown
    # a Transpose from NHWC, then there and back again: the model's own layout, still refused (dims unknown)
    one = build(tmp_path / "nhwc.onnx", lambda net, x: there_and_back(net, net.op("Transpose", [x], "first",
                                                                                    perm=[0, 3, 1, 2])),
                shape=("N", "H", "W", "C"))
    one_line_exit_2(invoke("apply", recipe, one, "-o", tmp_path / "nhwc-patched.onnx"),
                    "transposes NHWC → NCHW (Transpose node 'nchw_node')", "`layout`",
                    "set `model: {layout: NHWC}`")


def yolov5_head(path, decoded: bool):
    """A stride-8 YOLOv5-style head, 3 anchors × (5 + 2) rows a cell, every row through a Sigmoid, as an export of
    the raw head writes it ([1, 48, 7]); `decoded`: the sigmoids scaled to pixels after (the Detect layer's decode,
    a Mul standing in for it)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (21, 3, 8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 3, 7, 16], np.int64), "split"),
             numpy_helper.from_array(np.array([1, 48, 7], np.int64), "rows"),
             numpy_helper.from_array(np.array([32, 32, 32, 32, 1, 1, 1], np.float32), "pixels")]
    nodes = [node("Conv", ["images", "w"], "conv", kernel_shape=[8, 8], strides=[8, 8]),
             node("Sigmoid", ["conv"], "head_sigmoid"), node("Reshape", ["head_sigmoid", "split"], "levels"),
             node("Transpose", ["levels"], "anchors", perm=[0, 1, 3, 2]),
             node("Reshape", ["anchors", "rows"], "sigmoids" if decoded else "output0")]
    if decoded:
        nodes.append(node("Mul", ["sigmoids", "pixels"], "output0"))
    graph = helper.make_graph(nodes, "v5", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 48, 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_yolo_boxes_on_a_head_whose_box_rows_a_sigmoid_made_is_refused(tmp_path):
    """Its rows are 0–1 values the model does not decode: format v5 read them as centres and sizes in pixels (boxes
    of a pixel or less), and verify's twin did the same. A head decoded after its Sigmoid is still read."""
    recipe = yaml.safe_load((Path(__file__).resolve().parent.parent / "recipes" / "yolov8_detector.yaml").read_text())
    recipe["output"]["steps"][0] = {"yolo_boxes": {"format": "v5"}}
    path = tmp_path / "v5.yaml"
    path.write_text(yaml.safe_dump(recipe))
    one_line_exit_2(invoke("apply", path, yolov5_head(tmp_path / "raw.onnx", False), "--dry-run"),
                    "box rows are made by Sigmoid node 'head_sigmoid_node'", "format v5", "fix: export the model")
    result = invoke("apply", path, yolov5_head(tmp_path / "decoded.onnx", True), "--dry-run")
    assert result.exit_code == 0, result.output
