"""Round 104: never double-apply a step, the cases rounds 101–102 left.

Output side: a classifier ending in Softmax → Transpose, → Mul by 1 / Add of 0, → Slice, a softmax written out as
Exp → ReduceSum → Div (with or without a ReduceMax taken off first) and LogSoftmax → Exp all got the recipe's
softmax a second time, and verify PASSed (its twin did the same): `output_producer` now looks through them.
Input side: a BatchNormalization node on the image (Caffe's / Keras' "data_bn") with a mean in pixel units was not
seen, so `scale` and `normalize` were applied before it without a word.
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
from test_hostile_hundredfirst import NCHW_RECIPE, build, refused
from test_hostile_hundredsecond import CLASSIFIER, classifier

from modelkit import saved

IMAGE = np.random.default_rng(0).normal(0, 3, (2, 3, 8, 8)).astype(np.float32)


def _ending(*nodes, inits=(), shape=("N", 10)):
    def ending(graph_nodes, graph_inits):
        graph_nodes += list(nodes)
        graph_inits += [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits]
        return [helper.make_tensor_value_info("prob", TensorProto.FLOAT, list(shape))]
    return ending


def node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=f"{output}_node", **attrs)


ENDINGS = {
    "softmax-transpose": _ending(node("Reshape", ["logits", "to3"], "logits3"),
                                 node("Softmax", ["logits3"], "soft", axis=1),
                                 node("Transpose", ["soft"], "prob", perm=[0, 2, 1]),
                                 inits=[]),
    "softmax-mul-1": _ending(node("Softmax", ["logits"], "soft", axis=-1), node("Mul", ["soft", "one"], "prob"),
                             inits=[("one", 1.0)]),
    "softmax-add-0": _ending(node("Softmax", ["logits"], "soft", axis=-1), node("Add", ["zero", "soft"], "prob"),
                             inits=[("zero", np.zeros(10))]),
    "softmax-slice": _ending(node("Softmax", ["logits"], "soft", axis=-1),
                             node("Slice", ["soft", "start", "end", "axis"], "prob"), shape=("N", 10)),
    "exp-reducesum-div": _ending(node("Exp", ["logits"], "e"), node("ReduceSum", ["e", "last"], "total", keepdims=1),
                                 node("Div", ["e", "total"], "prob")),
    "stable-exp-reducesum-div": _ending(node("ReduceMax", ["logits"], "top", axes=[-1], keepdims=1),
                                        node("Sub", ["logits", "top"], "shifted"), node("Exp", ["shifted"], "e"),
                                        node("ReduceSum", ["e", "last"], "total", keepdims=1),
                                        node("Div", ["e", "total"], "prob")),
    "logsoftmax-exp": _ending(node("LogSoftmax", ["logits"], "log", axis=-1), node("Exp", ["log"], "prob")),
}


def _with_ints(name, ending):
    """The integer constants some endings read (a Reshape's shape, a Slice's bounds, ReduceSum's axes)."""
    def wrapped(graph_nodes, graph_inits):
        graph_inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
                        (("to3", [0, 10, 1]), ("start", [0]), ("end", [1000]), ("axis", [0]), ("last", [-1]))]
        outputs = ending(graph_nodes, graph_inits)
        if name == "softmax-transpose":
            outputs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, 10])]
        return outputs
    return wrapped


@pytest.mark.parametrize("name", list(ENDINGS))
def test_a_classifier_whose_softmax_is_hidden_or_written_out_gets_no_second_softmax(tmp_path, name):
    plain = classifier(tmp_path / "plain.onnx", _with_ints(name, ENDINGS[name]))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLASSIFIER % "")
    patched = apply(recipe, plain, tmp_path / "patched.onnx").output
    want = onnxruntime.InferenceSession(str(plain)).run(None, {"input": IMAGE})[0].reshape(2, 10)
    got = onnxruntime.InferenceSession(str(patched)).run(["scores"], {"input": IMAGE})[0]
    # the model's own probabilities, not a softmax of them
    np.testing.assert_allclose(got.reshape(2, 3), -np.sort(-want, axis=1)[:, :3], rtol=1e-5)


def test_no_false_alarm_where_the_model_ends_in_logits_scaled_or_exponentiated(tmp_path):
    """A Mul by 2 (a temperature), a bare Exp and a Div by a sum of something else are no softmax: applied."""
    for name, ending in {"temperature": _ending(node("Mul", ["logits", "two"], "prob"), inits=[("two", 2.0)]),
                         "exp": _ending(node("Exp", ["logits"], "prob")),
                         "div-other": _ending(node("Exp", ["logits"], "e"), node("Abs", ["logits"], "a"),
                                              node("ReduceSum", ["a", "last"], "total", keepdims=1),
                                              node("Div", ["e", "total"], "prob"))}.items():
        plain = classifier(tmp_path / f"{name}.onnx", _with_ints(name, ending))
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(CLASSIFIER % "")
        patched = apply(recipe, plain, tmp_path / f"{name}-patched.onnx").output
        assert any(n.op_type == "Softmax" for n in onnx.load(str(patched)).graph.node), name
    plain = classifier(tmp_path / "mul1.onnx", _with_ints("softmax-mul-1", ENDINGS["softmax-mul-1"]))
    patched = apply(recipe, plain, tmp_path / "mul1-patched.onnx").output
    assert sum(n.op_type == "Softmax" for n in onnx.load(str(patched)).graph.node) == 1  # the model's own


def data_bn(net, x):
    """Caffe's ResNet "data_bn": an inference BatchNormalization on the image, its mean and variance in pixels."""
    return net.op("BatchNormalization", [x, net.const("bn_scale", np.ones(3)), net.const("bn_bias", np.zeros(3)),
                                         net.const("bn_mean", [123.7, 116.3, 103.5]),
                                         net.const("bn_var", np.square([58.4, 57.1, 57.4]))], "data_bn")


def computed_divisor(net, x):
    """torch's `x / torch.full_like(x[:1, :1, :1, :1], 255.)`-style export: a ConstantOfShape of 255."""
    net.inits.append(numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "ones_shape"))
    net.nodes.append(helper.make_node("ConstantOfShape", ["ones_shape"], ["k"],
                                      value=numpy_helper.from_array(np.array([255.0], np.float32))))
    return net.op("Div", [x, "k"], "scaled")


def constant_over_constant(net, x):
    """A divisor folded by nobody: Constant(510) / Constant(2)."""
    k = net.op("Div", [net.const("big", 510.0, as_node=True), net.const("two", 2.0, as_node=True)], "k")
    return net.op("Div", [x, k], "scaled")


@pytest.mark.parametrize("prelude, needle", [(data_bn, "subtracts [123.7, 116.3, 103.5] (BatchNormalization node "
                                                      "'data_bn_node')"),
                                             (computed_divisor, "divides by 255 (Div node 'scaled_node')"),
                                             (constant_over_constant, "divides by 255 (Div node 'scaled_node')")],
                         ids=["data-bn", "constant-of-shape", "constant-div-constant"])
def test_a_normalization_by_batchnorm_or_by_a_computed_divisor_is_seen(tmp_path, prelude, needle):
    refused(NCHW_RECIPE, build(tmp_path / "m.onnx", prelude), tmp_path, needle, "drop the `scale` and `normalize`")


def local_function_model(path: Path) -> Path:
    """torch's export_modules_as_functions: the model's `Normalize` module is a local function called on the image."""
    body = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array(255.0, np.float32))),
            helper.make_node("Div", ["x", "k"], ["y"], name="inside_div")]
    function = helper.make_function("local", "Scale", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Scale", ["image"], ["scaled"], domain="local", name="scale_call"),
             helper.make_node("Conv", ["scaled", "w"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["conv"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["logits"], axis=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_a_scale_inside_a_local_function_called_on_the_image_is_seen(tmp_path):
    refused(NCHW_RECIPE, local_function_model(tmp_path / "f.onnx"), tmp_path, "divides by 255 (Div node 'inside_div')")


def skip_and_scale(net, x):
    """The image read twice: a `/ 255` and a skip connection adding the raw image back."""
    scaled = net.op("Div", [x, net.const("k", 255.0)], "scaled")
    return net.op("Add", [scaled, x], "skip")


def test_an_input_read_by_a_scale_and_a_skip_connection_is_noted_not_refused(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(NCHW_RECIPE)
    result = invoke("apply", recipe, build(tmp_path / "skip.onnx", skip_and_scale), "-o", tmp_path / "p.onnx")
    assert result.exit_code == 0, result.output
    assert "is read by more than one node, and one of them divides by 255 (Div node 'scaled_node')" in result.output
    assert "would likely do it again" in result.output


def near_identity_bn(net, x):
    """A BatchNormalization learnt on already normalized input (mean ≈ 0, variance ≈ 1): no normalization."""
    return net.op("BatchNormalization", [x, net.const("bn_scale", [1.1, 0.9, 1.0]), net.const("bn_bias", [0.01] * 3),
                                         net.const("bn_mean", [0.02, -0.01, 0.0]),
                                         net.const("bn_var", [0.9, 1.1, 1.0])], "bn")


def test_no_false_alarm_on_a_learnt_batchnorm_nor_on_a_computed_non_pixel_factor(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(NCHW_RECIPE)

    def doubled_k(net, x):  # 2 · 1 computed: a factor that scales no pixel range
        return net.op("Mul", [x, net.op("Mul", [net.const("a", 2.0, as_node=True), net.const("b", 1.0)], "k")], "m")

    for name, prelude in (("bn", near_identity_bn), ("k", doubled_k)):
        result = invoke("apply", recipe, build(tmp_path / f"{name}.onnx", prelude), "-o", tmp_path / f"{name}-p.onnx")
        assert result.exit_code == 0 and "prepares its input" not in result.output, result.output
    one_line_exit_2(invoke("apply", recipe, build(tmp_path / "bn.onnx", data_bn), "--dry-run"), "data_bn_node")


def softmaxed_dfl(path: Path, *, softmaxed: bool) -> Path:
    """A raw DFL head [1, 64 + 3, 21] (32 × 32 image, strides 8, 16, 32) whose box bins the model itself puts
    through a Softmax (Reshape [1, 4, 16, 21] → Softmax over the bins → Reshape back) before the Concat."""
    rng = np.random.default_rng(1)
    ints = {"bins4": [1, 4, 16, 21], "flat64": [1, 64, 21], "box_shape": [1, 64, 21], "cls_shape": [1, 3, 21]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()]
    inits += [numpy_helper.from_array(rng.normal(0, 1, (48, rows * 21)).astype(np.float32), f"w_{part}")
              for part, rows in (("box", 64), ("cls", 3))]
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
             helper.make_node("MatMul", ["features", "w_box"], ["flat_box"]),
             helper.make_node("Reshape", ["flat_box", "box_shape"], ["box"]),
             helper.make_node("MatMul", ["features", "w_cls"], ["flat_cls"]),
             helper.make_node("Reshape", ["flat_cls", "cls_shape"], ["cls"])]
    if softmaxed:
        nodes += [helper.make_node("Reshape", ["box", "bins4"], ["bins"]),
                  helper.make_node("Softmax", ["bins"], ["bin_probs"], axis=2, name="dfl_softmax"),
                  helper.make_node("Reshape", ["bin_probs", "flat64"], ["box_ready"])]
    nodes.append(helper.make_node("Concat", ["box_ready" if softmaxed else "box", "cls"], ["output0"], axis=1))
    graph = helper.make_graph(nodes, "dfl", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 67, 21])], inits)
    return saved(graph, path)


DFL = """version: 1
name: dfl
output:
  steps:
    - dfl_boxes: {bins: 16, scores: none%s}
    - nms: {iou_threshold: 0.7, score_threshold: -100, max_detections: 30, best_class_only: true}
  names: {boxes: boxes, scores: scores, classes: classes, count: count}
"""


def test_dfl_boxes_on_bins_the_model_already_softmaxes_is_refused_and_bin_scores_none_decodes_them(tmp_path):
    plain = softmaxed_dfl(tmp_path / "dfl.onnx", softmaxed=True)
    refused(DFL % "", plain, tmp_path, "dfl_boxes: the model's box bins (the head's first 64 rows) are already "
            "made by Softmax node 'dfl_softmax'", "fix: set `bin_scores: none` in the dfl_boxes step")
    recipe = tmp_path / "none.yaml"
    recipe.write_text(DFL % ", bin_scores: none")
    result = invoke("verify", recipe, plain, "--random", "2")
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    patched = apply(recipe, plain, tmp_path / "none.onnx").output
    image = np.random.default_rng(0).random((1, 3, 32, 32), np.float32)
    head = onnxruntime.InferenceSession(str(plain)).run(None, {"images": image})[0]
    boxes = onnxruntime.InferenceSession(str(patched)).run(["boxes"], {"images": image})[0]
    # the distances are expectations of 0 … 15 under the model's own probabilities: corners stay within 15 strides
    distances = (head[0, :64].reshape(4, 16, 21) * np.arange(16)[:, None]).sum(axis=1)
    assert distances.max() < 15 and np.isfinite(boxes).all()


def test_no_false_alarm_on_a_raw_dfl_head_and_bin_scores_none_applies_a_softmaxed_one(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(DFL % "")
    assert invoke("apply", recipe, softmaxed_dfl(tmp_path / "raw.onnx", softmaxed=False), "-o",
                  tmp_path / "raw-p.onnx").exit_code == 0
    recipe.write_text(DFL % ", bin_scores: none")  # the option is no earlier than this round
    assert invoke("apply", recipe, softmaxed_dfl(tmp_path / "soft.onnx", softmaxed=True), "-o",
                  tmp_path / "soft-p.onnx").exit_code == 0


def sigmoid_head(graph_nodes, graph_inits):
    graph_nodes.append(node("Sigmoid", ["logits"], "prob"))
    return [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10])]


def test_a_softmax_over_a_multi_label_heads_sigmoids_is_noted_by_apply_and_verify(tmp_path):
    plain = classifier(tmp_path / "multi.onnx", sigmoid_head)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLASSIFIER % "")
    needle = "output.steps[0].softmax: the model output 'prob' is already made by a Sigmoid"
    result = invoke("apply", recipe, plain, "-o", tmp_path / "p.onnx")
    assert result.exit_code == 0 and needle in result.output, result.output
    result = invoke("verify", recipe, plain, "--random", "2")
    assert "is already made by a Sigmoid" in result.output, result.output
    recipe.write_text(CLASSIFIER.replace("    - softmax: {}\n", "").replace("{k: 3}", "{k: 3, source: output}") % "")
    assert "Sigmoid" not in invoke("apply", recipe, plain, "-o", tmp_path / "q.onnx").output


def simcc_model(path: Path, *, softmaxed: bool) -> Path:
    """An 8 × 8 SimCC head: two joints, 16 bins a side (split_ratio 2), each vector put through a Softmax."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1)]
    inits = [numpy_helper.from_array(np.array([1, 2, 16], np.int64), "shape")]
    for side in ("x", "y"):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (192, 32)).astype(np.float32), f"w_{side}"))
        made = f"simcc_{side}_logits" if softmaxed else f"simcc_{side}"
        nodes += [helper.make_node("MatMul", ["flat", f"w_{side}"], [f"m_{side}"]),
                  helper.make_node("Reshape", [f"m_{side}", "shape"], [made])]
        if softmaxed:
            nodes.append(helper.make_node("Softmax", [made], [f"simcc_{side}"], axis=-1))
    graph = helper.make_graph(nodes, "simcc", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(f"simcc_{s}", TensorProto.FLOAT, [1, 2, 16])
                               for s in ("x", "y")], inits)
    return saved(graph, path)


SIMCC = """version: 1
name: simcc
output:
  target: [simcc_x, simcc_y]
  steps:
    - simcc_decode: {split_ratio: 2.0}
  names: {keypoints: keypoints, scores: scores}
"""


def test_simcc_vectors_the_model_already_softmaxes_are_decoded_with_a_note_on_their_scores(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(SIMCC)
    needle = "the model's 'simcc_x' is already made by a Softmax: the keypoints are the same"
    result = invoke("apply", recipe, simcc_model(tmp_path / "soft.onnx", softmaxed=True), "-o", tmp_path / "s.onnx")
    assert result.exit_code == 0 and needle in result.output, result.output
    result = invoke("apply", recipe, simcc_model(tmp_path / "raw.onnx", softmaxed=False), "-o", tmp_path / "r.onnx")
    assert result.exit_code == 0 and "already made by" not in result.output, result.output


def branching_model(path: Path, *, both: bool) -> Path:
    """The image read by an If (a flag input chooses): its then branch divides it by 255, its else branch too
    (`both`) or not at all, each then Conv'd by the same weights."""
    rng = np.random.default_rng(0)

    def branch(name: str, scales: bool) -> onnx.GraphProto:
        body = [helper.make_node("Div", ["image", f"k_{name}"], [f"s_{name}"], name=f"div_{name}")] if scales else []
        body.append(helper.make_node("Conv", [f"s_{name}" if scales else "image", "w"], [f"out_{name}"],
                                     kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        inits = [numpy_helper.from_array(np.array(255.0, np.float32), f"k_{name}")] if scales else []
        return helper.make_graph(body, name, [], [helper.make_tensor_value_info(f"out_{name}", TensorProto.FLOAT,
                                                                                [1, 8, 16, 16])], inits)

    nodes = [helper.make_node("If", ["flag"], ["conv"], then_branch=branch("then", True),
                              else_branch=branch("else", both)),
             helper.make_node("GlobalAveragePool", ["conv"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["logits"], axis=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                           [1, 3, 16, 16]),
                                             helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")])
    return saved(graph, path)


def test_a_scale_in_both_branches_of_an_if_on_the_image_is_seen_and_in_one_branch_is_not_refused(tmp_path):
    from graphsurgery.own_input_steps import own_input_steps

    both = onnx.load(str(branching_model(tmp_path / "both.onnx", both=True)))
    assert [step.does for step in own_input_steps(both, "image")] == ["divides by 255"]
    assert own_input_steps(onnx.load(str(branching_model(tmp_path / "one.onnx", both=False))), "image") == []
