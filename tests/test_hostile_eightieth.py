"""Round 80: `chain` and control flow. `onnx.compose.add_prefix` renames a call of the pose model's local function
in the graph and in other functions alone, by name whatever its domain: a call in a Loop body made a chained model
ONNX Runtime cannot load ("local:F is not a registered function", blamed on the chained model), and a function
`local.Sign` renamed the pose model's standard Sign nodes too (an internal error). `_check_bodies` refused a body
reading the graph's input or a node's output, which onnx.compose joins right where its cut keeps that node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from graphsurgery import chaining
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.images import read_image

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
COMPARED = ("boxes", "scores", "keypoints", "keypoint_scores", "detector", "random_boxes", "crop_positions")


def _value(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _spliced(path: Path, out: Path, after: str, nodes, functions=(), initializers=()) -> Path:
    """The model at `path` with the first node making `after` making `<after>_raw` instead, and `nodes(raw, after)`
    making `after` from it; `functions` in domain "local"."""
    model = onnx.load(str(path))
    index, node = next((index, node) for index, node in enumerate(model.graph.node) if after in node.output)
    node.output[list(node.output).index(after)] = after + "_raw"
    for offset, new in enumerate(nodes(after + "_raw", after)):
        model.graph.node.insert(index + 1 + offset, new)
    model.graph.initializer.extend(initializers)
    if functions:
        model.functions.extend(functions)
        model.opset_import.append(helper.make_opsetid("local", 1))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def _identity_function(name: str) -> onnx.FunctionProto:
    return helper.make_function("local", name, ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
                                [helper.make_opsetid("", 17)])


def _in_a_loop(raw: str, made: str) -> list[onnx.NodeProto]:
    """`made` = F(`raw`) in the body of a Loop run once."""
    body = helper.make_graph([helper.make_node("Identity", ["go_in"], ["go_out"]),
                              helper.make_node("F", ["x_in"], ["x_out"], domain="local", name="call F")], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("go_in", TensorProto.BOOL, []), _value("x_in")],
                             [helper.make_tensor_value_info("go_out", TensorProto.BOOL, []), _value("x_out")])
    return [helper.make_node("Loop", ["trip", "go", raw], [made], body=body, name="once")]


LOOP_CONSTANTS = [numpy_helper.from_array(np.array(1, np.int64), "trip"), numpy_helper.from_array(np.array(True), "go")]


def _pose_alone(pose: Path, image: np.ndarray, corners: np.ndarray) -> list[np.ndarray]:
    boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    return ort.InferenceSession(str(pose), providers=["CPUExecutionProvider"]).run(
        ["keypoints", "scores"], {"image": image, "boxes": boxes})


def _chains_exactly(detector: Path, pose: Path, out: Path) -> onnx.ModelProto:
    """`chain` joins them into a model onnx's full check passes, whose parts are the two models, with the answers of
    the two models one after the other (onnxruntime: OpenVINO converts no model with a `local` function)."""
    chaining.chain(detector, pose, out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert chaining.parts_difference(out, detector, pose) is None
    image = read_image(PHOTO)[None]
    [row] = chaining.verify_chain(out, detector, pose, [image], backends=("onnxruntime",))
    assert row["people"] > 0 and max(row[key] for key in COMPARED) == 0.0, row
    corners, _, keypoints, keypoint_scores = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"image": image})
    alone = _pose_alone(pose, image, np.asarray(corners, np.float32))
    np.testing.assert_array_equal(keypoints, alone[0])
    np.testing.assert_array_equal(keypoint_scores, alone[1])
    return model


# --- 1. a pose model's local function called in a body, or named like a standard op -----------------------------------


def test_a_pose_function_called_in_a_loop_body_chains(chain_patched, tmp_path):
    """Was: `chain` wrote a model ONNX Runtime cannot load (the body's call left `F` while the function became
    `pose/F`), and `--check` blamed the chained model, exit 2. The call is renamed with its function; a chained
    model whose body calls the function otherwise is named by the parts check."""
    pose = _spliced(chain_patched["pose"], tmp_path / "pose.onnx", "keypoints", _in_a_loop,
                    [_identity_function("F")], LOOP_CONSTANTS)
    model = _chains_exactly(chain_patched["detector"], pose, tmp_path / "chained.onnx")
    loop = next(node for node in model.graph.node if node.op_type == "Loop")
    call = next(node for node in loop.attribute[0].g.node if node.domain == "local")
    assert (call.op_type, [f.name for f in model.functions]) == ("pose/F", ["pose/F"])
    call.op_type = "G"
    model.functions.append(_identity_function("G"))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    assert chaining.parts_difference(tmp_path / "wrong.onnx", chain_patched["detector"], pose) \
        == "the pose model's node 'once' (Loop)'s body's node 'call F' (F) is a G there"


def test_a_pose_function_called_in_a_functions_loop_body_chains(chain_patched, tmp_path):
    """A local function G whose Loop body calls F: the call in G's body is renamed too (onnx.compose renamed the
    calls in a function's own nodes alone)."""
    loop = _in_a_loop("x", "y")[0]
    wrapper = helper.make_function("local", "G", ["x"], ["y"], [
        helper.make_node("Constant", [], ["trip"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Constant", [], ["go"], value=numpy_helper.from_array(np.array(True))), loop],
        [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    pose = _spliced(chain_patched["pose"], tmp_path / "pose.onnx", "keypoints",
                    lambda raw, made: [helper.make_node("G", [raw], [made], domain="local", name="call G")],
                    [_identity_function("F"), wrapper])
    model = _chains_exactly(chain_patched["detector"], pose, tmp_path / "chained.onnx")
    body = next(f for f in model.functions if f.name == "pose/G").node[2].attribute[0].g
    assert [node.op_type for node in body.node] == ["Identity", "pose/F"]


def test_a_pose_function_named_like_a_standard_op_renames_no_standard_node(chain_patched, tmp_path):
    """Was: an internal error, exit 3 (onnx's checker: "No Op registered for pose/Sign"): a function `local.Sign`
    renamed the pose model's standard Sign nodes with it. Only the calls of the function are renamed."""
    pose = _spliced(chain_patched["pose"], tmp_path / "pose.onnx", "keypoints",
                    lambda raw, made: [helper.make_node("Sign", [raw], [made], domain="local", name="call Sign")],
                    [_identity_function("Sign")])
    result = CliRunner().invoke(cli, ["chain", str(chain_patched["detector"]), str(pose), "-o",
                                      str(tmp_path / "cli.onnx")], terminal_width=250)
    assert result.exit_code == 0, result.output
    model = _chains_exactly(chain_patched["detector"], pose, tmp_path / "chained.onnx")
    signs = sorted((node.domain, node.op_type) for node in model.graph.node if node.op_type.endswith("Sign"))
    assert ("local", "pose/Sign") in signs and ("", "Sign") in signs and ("", "pose/Sign") not in signs


# --- 2. bodies reading the graph around them -------------------------------------------------------------------------


def _branches(raw: str, made: str, reads: str, condition: str = "go") -> list[onnx.NodeProto]:
    """`made` = `raw` through an If (on `condition`: true) whose branches read `raw` and `reads` of the graph around
    them: then `raw`, else `-raw`; both also give the shape of `reads`, which nothing reads."""
    branches = {key: helper.make_graph([helper.make_node(op, [raw], [f"{op}_out"]),
                                        helper.make_node("Shape", [reads], [f"{op}_aside"])], op, [],
                                       [_value(f"{op}_out"), helper.make_tensor_value_info(f"{op}_aside",
                                                                                          TensorProto.INT64, None)])
                for key, op in (("then_branch", "Identity"), ("else_branch", "Neg"))}
    return [helper.make_node("If", [condition], [made, f"{made}_aside"], name="branch", **branches)]


def test_a_pose_if_reading_an_input_and_a_node_output_chains(chain_patched, tmp_path):
    """Was: refused, "reads 'boxes' from the graph around it" (exit 2), though onnx.compose renames such reads (and
    the glue feeds the body `boxes`): the chained model is the pose model joined, its answers the same."""
    pose = _spliced(chain_patched["pose"], tmp_path / "pose.onnx", "keypoints",
                    lambda raw, made: _branches(raw, made, "boxes"), initializers=LOOP_CONSTANTS[1:])
    model = _chains_exactly(chain_patched["detector"], pose, tmp_path / "chained.onnx")
    branch = next(node for node in model.graph.node if node.op_type == "If")
    assert [list(node.input) for node in branch.attribute[0].g.node] == [["pose/keypoints_raw"],
                                                                        ["graphsurgery/chain/coco_boxes"]]


def test_a_detector_if_reading_a_node_output_the_cut_keeps_chains(chain_patched, tmp_path):
    """Was: refused as above. Its boxes' raw values are also read by a node the cut keeps (the If's condition)."""
    def checked_branch(raw: str, made: str) -> list[onnx.NodeProto]:
        return [helper.make_node("ReduceMin", [raw], ["lowest"], keepdims=0),
                helper.make_node("Greater", ["lowest", "floor"], ["go_on"]),
                *_branches(raw, made, "image", "go_on")]

    detector = _spliced(chain_patched["detector"], tmp_path / "detector.onnx", "boxes", checked_branch,
                        initializers=[numpy_helper.from_array(np.array(-1e30, np.float32), "floor")])
    _chains_exactly(detector, chain_patched["pose"], tmp_path / "chained.onnx")


def test_a_detector_if_reading_what_only_bodies_read_is_still_refused(chain_patched, tmp_path):
    """Guard: onnx.compose cuts the detector, and its Extractor drops a node whose output bodies alone read (a model
    ONNX Runtime refuses): still refused in one line, naming that node; nothing written."""
    detector = _spliced(chain_patched["detector"], tmp_path / "detector.onnx", "boxes",
                        lambda raw, made: _branches(raw, made, "image"), initializers=LOOP_CONSTANTS[1:])
    with pytest.raises(GraphsurgeryError, match=r"detector.onnx: the node '([^']+)' is read by an If, Loop or Scan "
                                                r"body alone, which onnx.compose's cut drops") as refused:
        chaining.chain(detector, chain_patched["pose"], tmp_path / "chained.onnx")
    assert not (tmp_path / "chained.onnx").exists()
    graph = onnx.load(str(detector)).graph  # a node the boxes' raw values need, which no other output does
    named = str(refused.value).split("'")[1]
    assert named in _makers(graph, ["boxes_raw"]) - _makers(graph, ["scores", "classes", "count"])


def _makers(graph: onnx.GraphProto, names: list[str]) -> set[str]:
    """The names of the nodes `names` are computed with, through node inputs (the If reads `boxes_raw` otherwise)."""
    producers = {output: node for node in graph.node for output in node.output}
    found, pending = set(), list(names)
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in found:
            found.add(node.name)
            pending.extend(node.input)
    return found
