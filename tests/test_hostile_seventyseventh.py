"""Round 77: a hostile review of `chain --check`'s parts check (`chain_parts`) and `chaining._check_bodies`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from graphsurgery import chaining
from graphsurgery.chain_parts import part_difference
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.images import read_image
from test_chain_parts import _joined

ROOT = Path(__file__).resolve().parent.parent


def _through_a_loop(pose: Path, out: Path, *, constant_in_body: bool = False) -> Path:
    """`pose` with its keypoints passed through a Loop run once whose body holds an If whose branches read the
    Loop's state (`v`), or, with `constant_in_body`, a constant the Loop's body holds."""
    model = onnx.load(str(pose))
    for node in model.graph.node:
        node.output[:] = ["raw" if name == "keypoints" else name for name in node.output]
    read = "c" if constant_in_body else "v"

    def branch(op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["v", read], [f"{op}_out"])], op, [],
                                 [helper.make_tensor_value_info(f"{op}_out", TensorProto.FLOAT, None)])

    body = helper.make_graph(
        [helper.make_node("Identity", ["go_in"], ["go_out"]),
         helper.make_node("If", ["go_in"], ["v_out"], then_branch=branch("Max"), else_branch=branch("Min"))],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("go_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("go_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(-1e9, np.float32), "c")] if constant_in_body else [])
    model.graph.initializer.extend([numpy_helper.from_array(np.array(1, np.int64), "trip"),
                                    numpy_helper.from_array(np.array(True), "go")])
    model.graph.node.append(helper.make_node("Loop", ["trip", "go", "raw"], ["keypoints"], body=body, name="once"))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def test_an_if_in_a_loop_reading_the_loops_state_chains(chain_patched, tmp_path):
    """An If inside a Loop's body reading the Loop's state (a common export of a loop with a branch) was refused as
    "reads 'v' from the graph around it": `_check_bodies` counted the enclosing body as the graph around, though
    onnx.compose renames such reads and the chained model is right (round 77)."""
    pose = _through_a_loop(chain_patched["pose"], tmp_path / "loop.onnx")
    chained = chaining.chain(chain_patched["detector"], pose, tmp_path / "chained.onnx").written[-1]
    assert chaining.parts_difference(chained, chain_patched["detector"], pose) is None
    photo = read_image(ROOT / "examples" / "images" / "astronaut.jpg")[None]
    rows = chaining.verify_chain(chained, chain_patched["detector"], pose, [photo], backends=("onnxruntime",))
    assert rows[0]["people"] > 0 and max(rows[0][key] for key in ("keypoints", "keypoint_scores", "boxes")) == 0.0


def test_a_body_reading_a_constant_of_the_body_around_it_is_still_refused(chain_patched, tmp_path):
    """Guard: onnx.compose prefixes a body's constants after the bodies inside it, so their reads of it are left
    unprefixed (a model ONNX Runtime refuses): still refused in one line."""
    pose = _through_a_loop(chain_patched["pose"], tmp_path / "loop.onnx", constant_in_body=True)
    with pytest.raises(GraphsurgeryError, match=r"loop.onnx: a body of an If, Loop or Scan \('Max'\) reads 'c' from"):
        chaining.chain(chain_patched["detector"], pose, tmp_path / "chained.onnx")
    assert not (tmp_path / "chained.onnx").exists()


def _with_leaky_function(alpha: float) -> onnx.ModelProto:
    """A pose-shaped model whose keypoints are a local function's LeakyRelu, its alpha the function's default."""
    leaky = helper.make_node("LeakyRelu", ["x"], ["y"])
    leaky.attribute.append(helper.make_attribute_ref("alpha", AttributeProto.FLOAT))
    function = helper.make_function("local", "Leaky", ["x"], ["y"], [leaky], [helper.make_opsetid("", 17)],
                                    attribute_protos=[helper.make_attribute("alpha", alpha)])
    graph = helper.make_graph([helper.make_node("Leaky", ["image"], ["keypoints"], domain="local", name="leaky"),
                               helper.make_node("ReduceMean", ["boxes"], ["scores"], name="mean")], "pose",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4]),
                               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, [1, 3, 4, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                             functions=[function])


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_a_local_functions_changed_attribute_default_is_named(alpha):
    """A local function's default attribute value (ONNX Runtime uses it: LeakyRelu's alpha 0.2 for 0.1 halves
    every negative keypoint less) was not compared: a chained model with it changed PASSed the parts check
    (round 77). With the same default it still passes."""
    pose = _with_leaky_function(0.1)
    chained = _joined(pose)
    chained.functions[0].attribute_proto[0].f = alpha
    found = part_difference(chained, pose, chaining.POSE_RENAMED, chaining._pose_name, chaining.POSE_PREFIX,
                            "the pose model")
    if alpha == 0.1:
        assert found is None
    else:
        assert found is not None and "the pose model's function 'Leaky' has other attributes" in found


def test_a_detector_output_chain_leaves_out_made_with_an_empty_optional_output(chain_patched, tmp_path):
    """A detector with a second output `chain` leaves out, made by a node whose optional output is left out ("")
    (a Dropout's mask): the detector's Resize reads "" for its roi, so the parts check took the dead Dropout for a
    node the detector's outputs need and FAILed a right chained model: "node 'dead' (Dropout) is missing" (round
    77)."""
    detector = onnx.load(str(chain_patched["detector"]))
    assert any("" in node.input for node in detector.graph.node)  # the Resize
    feature = next(node for node in detector.graph.node if node.op_type == "Conv").output[0]
    detector.graph.node.append(helper.make_node("Dropout", [feature], ["extra", ""], name="dead"))
    detector.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, None, None, None]))
    onnx.checker.check_model(detector, full_check=True)
    onnx.save(detector, str(tmp_path / "detector.onnx"))
    chained = chaining.chain(tmp_path / "detector.onnx", chain_patched["pose"], tmp_path / "chained.onnx")
    assert "the detector's extra" in " ".join(chained.notes)
    assert chaining.parts_difference(chained.written[-1], tmp_path / "detector.onnx", chain_patched["pose"]) is None


def _with_names(names: list[bytes]) -> onnx.ModelProto:
    """A pose-shaped model whose scores count a constant of strings."""
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["keypoints"], name="same"),
                               helper.make_node("Shape", ["names"], ["n"], name="count"),
                               helper.make_node("Cast", ["n"], ["scores"], to=TensorProto.FLOAT, name="cast")],
                              "pose", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4]),
                                       helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, [1, 3, 4, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(np.array(names, dtype=object), "names")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])


@pytest.mark.parametrize("theirs", [[b"nose", b"eye"], [b"nose", b"ear"]])
def test_a_constant_of_strings_is_compared_by_its_strings(theirs):
    """`_same_tensor` compared the bytes of numpy arrays, which for strings (object arrays) are pointers: a pose
    model's string constant was "another there" in its own right chained model (round 77). A changed string is
    still named."""
    pose = _with_names([b"nose", b"eye"])
    chained = _joined(pose)
    constant = next(t for t in chained.graph.initializer if t.name.endswith("names"))
    constant.CopyFrom(numpy_helper.from_array(np.array(theirs, dtype=object), constant.name))
    found = part_difference(chained, pose, chaining.POSE_RENAMED, chaining._pose_name, chaining.POSE_PREFIX,
                            "the pose model")
    assert found == (None if theirs == [b"nose", b"eye"] else "the pose model's constant 'names' is another there")


def test_a_changed_opset_of_the_chained_model_is_named():
    """Every node and constant alike, the chained model's opset of 13 for a part's 11 changes what its nodes
    compute (Softmax over one axis, not the flattened rest): it PASSed the parts check (round 77)."""
    pose = _with_leaky_function(0.1)
    chained = _joined(pose)
    assert part_difference(chained, pose, chaining.POSE_RENAMED, chaining._pose_name, chaining.POSE_PREFIX,
                           "the pose model") is None
    for opset in chained.opset_import:  # merge_models lists each twice
        opset.version = 18 if opset.domain == "" else opset.version
    assert part_difference(chained, pose, chaining.POSE_RENAMED, chaining._pose_name, chaining.POSE_PREFIX,
                           "the pose model") == "the pose model's opset ai.onnx 17 is 18 there"


def _with_sparse(path: Path, out: Path, *, extra_output: bool = False) -> Path:
    """The model at `path` holding an unused sparse constant; with `extra_output`, a second output besides those
    `chain` takes (a pose model's kept heatmaps)."""
    model = onnx.load(str(path))
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0], np.float32), "sparse"),
        numpy_helper.from_array(np.array([0], np.int64), "sparse_at"), [4]))
    if extra_output:
        model.graph.node.append(helper.make_node("Identity", ["keypoints"], ["kept"]))
        model.graph.output.append(helper.make_tensor_value_info("kept", TensorProto.FLOAT, [None, 17, 2]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("which", ["detector", "pose with a kept output"])
def test_a_sparse_constant_in_a_graph_chain_cuts_is_refused_in_one_line(chain_patched, tmp_path, which):
    """onnx.compose cuts the detector (always) and a pose model with outputs `chain` leaves out with onnx's
    Extractor, which raises on a sparse initializer: `chain` ended in exit 3, "internal error (ValueError:
    len_sparse_initializer is 1, it must be 0.)" (round 77)."""
    models = dict(chain_patched)
    models[which.split()[0]] = _with_sparse(chain_patched[which.split()[0]], tmp_path / "sparse.onnx",
                                            extra_output=which != "detector")
    with pytest.raises(GraphsurgeryError, match=r"sparse.onnx: the model holds sparse initializers, which "
                                                r"onnx.compose cannot cut"):
        chaining.chain(models["detector"], models["pose"], tmp_path / "chained.onnx")
    assert not (tmp_path / "chained.onnx").exists()


def test_a_pose_models_sparse_constant_is_chained_and_compared(chain_patched, tmp_path):
    """Guard: a pose model without other outputs is not cut, so its sparse constant is chained (renamed) and the
    parts check compares it; changed, it is named."""
    pose = _with_sparse(chain_patched["pose"], tmp_path / "sparse.onnx")
    chained = chaining.chain(chain_patched["detector"], pose, tmp_path / "chained.onnx").written[-1]
    assert chaining.parts_difference(chained, chain_patched["detector"], pose) is None
    model = onnx.load(str(chained))
    values = model.graph.sparse_initializer[0].values
    values.CopyFrom(numpy_helper.from_array(np.array([2.0], np.float32), values.name))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    assert chaining.parts_difference(tmp_path / "wrong.onnx", chain_patched["detector"], pose) == (
        "the pose model's sparse constant 'sparse' is missing or another there")
