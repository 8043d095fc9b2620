"""Round 106: hostile models against the graph walks of rounds 101-105 (`own_input_steps`, `output_producer`).

Five models made `apply` and `inspect` an internal error (exit 3) where the walk read what it could not compute:
a ConstantOfShape of [2^32, 2^32, 1, 1] (numpy's product of the shape wrapped to 0, under the 4,096-value cap, and
an array of 2^64 values was asked for), a string Constant that is no number cast to float, a local function's
attribute that each call sets (`ref_attr_name`: a ConstantOfShape's value, a Gather's axis, a BatchNormalization's
epsilon; now read from the call, as the runtimes do; a value of another type, an axis of 1.0, is not read), and a
call with more outputs than its function has; and `apply` overflowed the stack on 500 If nodes one after another
before the output (each walked in a recursion).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke
from test_hostile_hundredfirst import NCHW_RECIPE
from test_hostile_hundredsecond import CLASSIFIER

LOCAL = helper.make_opsetid("local", 1)


def _net(path: Path, prelude: list, inits=(), functions=(), *, ending=None, free_batch: bool = False) -> Path:
    """[1, 3, 8, 8] image → `prelude` (makes "x") → Conv → GlobalAveragePool → Flatten → MatMul "logits", then
    `ending` (makes "prob"), saved unchecked: the command's own checks judge it. `free_batch`: the output's first
    dim is free (the checker then takes a Gather of a mistyped axis)."""
    rng = np.random.default_rng(0)
    nodes = [*prelude, helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["conv"], ["pool"]), helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("MatMul", ["flat", "dense"], ["logits"]), *(ending or [])]
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(0, 0.5, (8, 10)).astype(np.float32), "dense")]
    out = "prob" if ending else "logits"
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N" if free_batch else 1, 10])],
                              [*inits, *weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), LOCAL], functions=list(functions))
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _runs(tmp_path: Path, recipe_text: str, model: Path) -> None:
    """`apply` and `inspect` end without an internal error."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text)
    for args in (("apply", recipe, model, "-o", tmp_path / "out.onnx"), ("inspect", model)):
        result = invoke(*args)
        assert result.exit_code in (0, 2) and "internal error" not in result.output, result.output


def _function(body: list, attributes=()) -> onnx.FunctionProto:
    return helper.make_function("local", "prep", ["a"], ["x_"], body, [helper.make_opsetid("", 17)], list(attributes))


def _set_by_call(node: onnx.NodeProto, name: str, kind: int) -> onnx.NodeProto:
    node.attribute.append(onnx.AttributeProto(name=name, ref_attr_name=name, type=kind))
    return node


def test_a_constant_of_shape_whose_size_wraps_around_is_not_allocated(tmp_path):
    prelude = [helper.make_node("Identity", ["shape"], ["hidden"]),  # its size unknown to the checker
               helper.make_node("ConstantOfShape", ["hidden"], ["k"],
                                value=numpy_helper.from_array(np.array([255], np.float32))),
               helper.make_node("Div", ["image", "k"], ["x"])]
    shape = numpy_helper.from_array(np.array([2**32, 2**32, 1, 1], np.int64), "shape")
    _runs(tmp_path, NCHW_RECIPE, _net(tmp_path / "m.onnx", prelude, [shape]))


def test_a_string_constant_cast_to_float_is_not_read(tmp_path):
    prelude = [helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array(["abc"], object))),
               helper.make_node("Cast", ["s"], ["k"], to=TensorProto.FLOAT),
               helper.make_node("Div", ["image", "k"], ["x"])]
    _runs(tmp_path, NCHW_RECIPE, _net(tmp_path / "m.onnx", prelude))


def _indices(name: str, values, dtype=np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype), name))


BODIES = {  # each with what the walk reads once the call's attribute is given to the body
    "constant-of-shape-value": ([_indices("one", [1]),
                                 _set_by_call(helper.make_node("ConstantOfShape", ["one"], ["k"]), "value",
                                              onnx.AttributeProto.TENSOR),
                                 helper.make_node("Div", ["a", "k"], ["x_"])],
                                {"value": numpy_helper.from_array(np.array([255], np.float32))}, "divides by 255"),
    "gather-axis": ([_indices("i", [2, 1, 0]),
                     _set_by_call(helper.make_node("Gather", ["a", "i"], ["x_"]), "axis", onnx.AttributeProto.INT)],
                    {"axis": 1}, "reverses the channels"),
    "batch-normalization-epsilon": ([*(_indices(n, v, np.float32) for n, v in (("sc", [1] * 3), ("bi", [0] * 3),
                                                                             ("me", [123, 117, 104]), ("va", [1] * 3))),
                                     _set_by_call(helper.make_node("BatchNormalization", ["a", "sc", "bi", "me", "va"],
                                                                   ["x_"]), "epsilon", onnx.AttributeProto.FLOAT)],
                                    {"epsilon": 1e-3}, "subtracts [123, 117, 104]"),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_function_attribute_each_call_sets_is_read_from_the_call(tmp_path, name):
    body, given, does = BODIES[name]
    call = helper.make_node("prep", ["image"], ["x"], domain="local", **given)
    model = _net(tmp_path / "m.onnx", [call], functions=[_function(body, list(given))])
    _runs(tmp_path, NCHW_RECIPE, model)
    shown = invoke("inspect", model)
    assert shown.exit_code == 0 and does in " ".join(shown.output.split()), shown.output


def test_a_call_of_more_outputs_than_its_function_has_is_no_internal_error(tmp_path):
    softmax = helper.make_function("local", "soft", ["a"], ["b"], [helper.make_node("Softmax", ["a"], ["b"])],
                                   [helper.make_opsetid("", 17)])
    ending = [helper.make_node("soft", ["logits"], ["extra", "prob"], domain="local")]
    model = _net(tmp_path / "m.onnx", [helper.make_node("Identity", ["image"], ["x"])], functions=[softmax],
                 ending=ending)
    _runs(tmp_path, CLASSIFIER % "", model)


def test_a_chain_of_if_nodes_before_the_output_is_no_stack_overflow(tmp_path):
    ending, made = [helper.make_node("Softmax", ["logits"], ["s0"])], "s0"
    for index in range(500):  # each If's branches pass on the one before: output_producer walked them recursively
        branches = {f"{side}_branch": helper.make_graph(
            [helper.make_node("Identity", [made], [f"{side}{index}"])], side, [],
            [helper.make_tensor_value_info(f"{side}{index}", TensorProto.FLOAT, [1, 10])]) for side in ("then", "else")}
        made = f"s{index + 1}"
        ending.append(helper.make_node("If", ["cond"], [made], **branches))
    ending.append(helper.make_node("Identity", [made], ["prob"]))
    cond = numpy_helper.from_array(np.array(True), "cond")
    model = _net(tmp_path / "m.onnx", [helper.make_node("Identity", ["image"], ["x"])], [cond], ending=ending)
    _runs(tmp_path, CLASSIFIER % "", model)


@pytest.mark.parametrize("axis", [1.0, [1, 1], "1"])
def test_a_call_giving_an_attribute_of_another_type_is_not_read(tmp_path, axis):
    body, _, _ = BODIES["gather-axis"]
    call = helper.make_node("prep", ["image"], ["x"], domain="local", axis=axis)
    model = _net(tmp_path / "m.onnx", [call], functions=[_function(body, ["axis"])], free_batch=True)
    _runs(tmp_path, NCHW_RECIPE, model)


def test_an_unnamed_node_is_named_with_its_article():
    """Round 106's leftover: the yolox refusal of an unnamed Exp said "a Exp node"."""
    import onnx_graphsurgeon as gs

    from graphsurgery.steps.detect import _in_words

    assert _in_words(gs.Node("Exp")) == "an Exp node" and _in_words(gs.Node("Sigmoid")) == "a Sigmoid node"
