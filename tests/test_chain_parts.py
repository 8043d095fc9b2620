"""`chain --check` proves that the chained graph's two parts are the detector and the pose model, node for node and
constant for constant (`chain_parts.part_difference`, `chaining.parts_difference`).

Round 66 mutated the graph `chain` writes and left wrong chained models PASSing `chain --check`, whose answers on
the caller's photos cannot reach every row or box: the detector's DFL projection × 1.01, its score threshold × 0.99,
its pre-NMS TopK of 301 for 300 (4 real ones), and 17 in the pose part's crop arithmetic and heatmap decode that no
input tried showed. Each changes a node or a constant of a part, which the comparison with the two models' own
graphs finds whatever the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from graphsurgery import chaining
from graphsurgery.chain_parts import part_difference
from graphsurgery.cli import cli

ROOT = Path(__file__).resolve().parent.parent
ASTRONAUT = ROOT / "examples" / "images" / "astronaut.jpg"
CHAIN = chaining.chain  # the real one, before a test's monkeypatch


@pytest.fixture(scope="module")
def chained(chain_patched, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parts") / "chained.onnx"
    CHAIN(chain_patched["detector"], chain_patched["pose"], out)
    return out


def _node(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    return next(node for node in graph.node if node.name == name)


def _scaled_constant(node_name: str, factor: float):
    def edit(graph: onnx.GraphProto) -> None:
        node = _node(graph, node_name)
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t) * factor))
    return edit


def _changed_initializer(name: str, change):
    def edit(graph: onnx.GraphProto) -> None:
        tensor = next(t for t in graph.initializer if t.name == name)
        tensor.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(tensor)), name))
    return edit


def _swapped_inputs(node_name: str):
    def edit(graph: onnx.GraphProto) -> None:
        node = _node(graph, node_name)
        node.input[0], node.input[1] = node.input[1], node.input[0]
    return edit


def _made(node_name: str, op_type: str):
    def edit(graph: onnx.GraphProto) -> None:
        _node(graph, node_name).op_type = op_type
    return edit


def _mutant(chained: Path, tmp_path: Path, edit) -> Path:
    model = onnx.load(str(chained))
    edit(model.graph)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "mutant.onnx"))
    return tmp_path / "mutant.onnx"


def test_the_chained_model_is_its_two_parts(chained, chain_patched):
    assert chaining.parts_difference(chained, chain_patched["detector"], chain_patched["pose"]) is None


NMS = "graphsurgery/post/nms"
POSE = "pose/graphsurgery"
#: round 66's survivors and their kind, each with the words the difference must say
WRONG_PARTS = {
    "DFL projection x 1.01": (_scaled_constant("/Constant_31", 1.01), "the detector's node '/Constant_31'"),
    "score threshold x 0.99": (_changed_initializer(f"{NMS}/score_threshold", lambda a: a * np.float32(0.99)),
                               f"the detector's constant '{NMS}/score_threshold' is another"),
    "pre-NMS TopK 301": (_changed_initializer(f"{NMS}/k", lambda a: a + 1), f"the detector's constant '{NMS}/k'"),
    "crop Sub's inputs swapped": (_swapped_inputs(f"{POSE}/pre/crop_boxes/Sub_30"),
                                  "the pose model's node 'graphsurgery/pre/crop_boxes/Sub_30' (Sub) reads"),
    "ReduceMin for ReduceMax": (_made(f"{POSE}/post/heatmap_argmax/ReduceMax", "ReduceMin"),
                                "'graphsurgery/post/heatmap_argmax/ReduceMax' (ReduceMax) is a ReduceMin there"),
}


def _fed(name: str):
    def edit(graph: onnx.GraphProto) -> None:
        tensor = next(t for t in graph.initializer if t.name == name)
        graph.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
    return edit


WRONG_PARTS["score threshold an input"] = (_fed(f"{NMS}/score_threshold"),
                                           f"the detector's constant '{NMS}/score_threshold' is an input there")


@pytest.mark.parametrize("wrong", WRONG_PARTS)
def test_a_changed_node_or_constant_of_a_part_is_named(chained, chain_patched, tmp_path, wrong):
    edit, words = WRONG_PARTS[wrong]
    found = chaining.parts_difference(_mutant(chained, tmp_path, edit), chain_patched["detector"],
                                      chain_patched["pose"])
    assert found is not None and words in found


def test_chain_check_fails_a_wrong_part_its_photo_does_not_show(chain_patched, tmp_path, monkeypatch):
    """The DFL projection × 1.01 changes no person row on the astronaut: the answers alone PASSed it (round 66)."""
    def wrong_chain(detector, pose, out, **options):
        result = CHAIN(detector, pose, out, **options)
        _mutant(Path(out), tmp_path, WRONG_PARTS["DFL projection x 1.01"][0]).replace(out)
        return result

    monkeypatch.setattr(chaining, "chain", wrong_chain)
    run = CliRunner().invoke(cli, ["chain", str(chain_patched["detector"]), str(chain_patched["pose"]), "-o",
                                   str(tmp_path / "chained.onnx"), "--check", str(ASTRONAUT), "--force"],
                             terminal_width=300)
    assert run.exit_code == 1, run.output
    said = " ".join(run.output.split())
    assert "FAIL: the chained model is not the two models joined: the detector's node '/Constant_31'" in said
    assert "differs by up to" not in said and "PASS" not in said  # its answers on the photo alike


def _pose_like() -> onnx.ModelProto:
    """A pose-shaped model (`image`, `boxes` in; `keypoints`, `scores` out) with what the test models lack: an If
    whose branches read the graph around them, a model-local function, and a node without a name."""
    twice = helper.make_function("local", "Twice", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
                                 [helper.make_opsetid("", 17)])
    scale = numpy_helper.from_array(np.array(3.0, np.float32), "scale")

    def branch(op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["doubled", "total"], ["out"], name=f"{op}_in_branch")],
                                 op, [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])])

    nodes = [helper.make_node("Twice", ["image"], ["doubled"], domain="local", name="twice"),
             helper.make_node("ReduceSum", ["boxes"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "scale"], ["positive"], name="positive"),
             helper.make_node("If", ["positive"], ["keypoints"], name="choose", then_branch=branch("Mul"),
                              else_branch=branch("Sub")),
             helper.make_node("ReduceMean", ["image"], ["scores"], name="mean")]
    graph = helper.make_graph(nodes, "pose", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4]),
                                              helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, [1, 3, 4, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 1, 1])], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                             functions=[twice])


def _joined(pose: onnx.ModelProto) -> onnx.ModelProto:
    """`pose` behind a glue that passes its inputs on, joined as `chain` joins (`onnx.compose`, POSE_PREFIX; no
    outputs named: onnx's Extractor would drop the node only the If's branches read)."""
    glue = helper.make_graph(
        [helper.make_node("Identity", [name], [fed]) for name, fed in chaining.POSE_FED.items()], "glue",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info(chaining.POSE_FED["image"], TensorProto.FLOAT, [1, 3, 4, 4]),
         helper.make_tensor_value_info(chaining.POSE_FED["boxes"], TensorProto.FLOAT, ["n", 4])])
    merged = onnx.compose.merge_models(
        helper.make_model(glue, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]), pose,
        io_map=[(fed, name) for name, fed in chaining.POSE_FED.items()], prefix2=chaining.POSE_PREFIX)
    for name, renamed in chaining.POSE_RENAMED.items():
        chaining._rename(merged.graph, chaining.POSE_PREFIX + name, renamed)
    return merged


def _difference(chained: onnx.ModelProto, pose: onnx.ModelProto) -> str | None:
    return part_difference(chained, pose, chaining.POSE_RENAMED, chaining._pose_name, chaining.POSE_PREFIX,
                           "the pose model")


def test_branches_and_local_functions_are_compared_as_renamed():
    pose = _pose_like()
    assert _difference(_joined(pose), pose) is None


def _in_branch(model: onnx.ModelProto) -> onnx.NodeProto:
    choose = next(node for node in model.graph.node if node.op_type == "If")
    return next(attribute for attribute in choose.attribute if attribute.name == "then_branch").g.node[0]


@pytest.mark.parametrize("where", ["branch's op", "branch's outer read", "function body", "unnamed node"])
def test_a_change_inside_a_branch_or_function_is_named(where):
    pose = _pose_like()
    chained = _joined(pose)
    if where == "branch's op":
        _in_branch(chained).op_type = "Div"
        words = "the pose model's node 'choose' (If)'s then_branch's node 'Mul_in_branch' (Mul) is a Div there"
    elif where == "branch's outer read":
        _in_branch(chained).input[0] = f"{chaining.POSE_PREFIX}total"
        words = "'Mul_in_branch' (Mul) reads"
    elif where == "function body":
        chained.functions[0].node[0].op_type = "Mul"
        words = "the pose model's function 'Twice'"
    else:
        next(node for node in chained.graph.node if node.op_type == "ReduceSum").op_type = "ReduceMax"
        words = "the pose model's node 'ReduceSum' (ReduceSum) is a ReduceMax there"
    found = _difference(chained, pose)
    assert found is not None and words in found
