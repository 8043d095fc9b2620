"""Round 82: the wild-model side of the one graph cut (`cutting.cut_between`), `chain --check --backends` and the
model-signature memo.

The cut kept the model's IR version: a cut of an IR 3 model (whose initializers must be inputs too) lists none of
its constants among its inputs, and ONNX Runtime refused one whose If, Loop or Scan body read a constant; and it
knew a local function by domain and name alone, so of two overloads (IR 10) it kept what the wrong one called. Both
made verify refuse a right patch (exit 2, naming verify's own scratch file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke
from graphsurgery.api import apply
from graphsurgery.cutting import cut_between

import quirkykit as q

POSE_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_pose.yaml"


def _value(name: str, shape=(2, 3)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None if shape is None else list(shape))


def _spliced(patched: Path, out: Path, nodes, initializers=(), functions=(), ir_version: int | None = None) -> Path:
    """The patched model with its keypoints made by `nodes(raw, "keypoints")` from what made them before; the
    constants listed as inputs too where the model is of IR 3, which wants it; `functions` in domain "local"."""
    model = onnx.load(str(patched))
    index, node = next((i, n) for i, n in enumerate(model.graph.node) if "keypoints" in n.output)
    node.output[list(node.output).index("keypoints")] = "r82_raw"
    for offset, new in enumerate(nodes("r82_raw", "keypoints")):
        model.graph.node.insert(index + 1 + offset, new)
    model.graph.initializer.extend(initializers)
    if model.ir_version < 4:
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                                 for t in initializers)
    if functions:
        model.functions.extend(functions)
        model.opset_import.append(helper.make_opsetid("local", 1))
    model.ir_version = ir_version or model.ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def _verify(plain: Path, patched: Path, backends: str = "onnxruntime"):
    return invoke("verify", POSE_RECIPE, plain, "--patched", patched, "--backends", backends)


def _verdict(result) -> str:
    return " ".join(result.output.split())


# --- 1. IR 3: a body reading a constant ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ir3_pose(tmp_path_factory) -> tuple[Path, Path]:
    """(a pose model of IR 3 and opset 9, its right patch by recipes/hrnet_coco_pose.yaml: IR 3 still)."""
    folder = tmp_path_factory.mktemp("ir3")
    plain = q.pose(folder / "plain.onnx")
    patched = apply(POSE_RECIPE, plain, folder / "patched.onnx").output
    assert onnx.load(str(patched)).ir_version == 3
    return plain, patched


def _scaled_in_a_scan(raw: str, made: str) -> list[onnx.NodeProto]:
    """`made` = each row of `raw` × the constant r82_k, in a Scan body that reads r82_k from the graph around it."""
    body = helper.make_graph([helper.make_node("Mul", ["row", "r82_k"], ["row_out"]),
                              helper.make_node("Identity", ["acc_in"], ["acc_out"])], "rows",
                             [_value("acc_in", None), _value("row", None)], [_value("acc_out", None),
                                                                             _value("row_out", None)])
    return [helper.make_node("Scan", ["r82_init", raw], ["r82_last", made], body=body, num_scan_inputs=1)]


def _scan_constants(k: float) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.float32(k), "r82_k"), numpy_helper.from_array(np.float32(0), "r82_init")]


@pytest.mark.parametrize("backends", ["onnxruntime", "onnxruntime,openvino"])
def test_an_ir3_decoder_reading_a_constant_in_a_scan_body_is_probed(ir3_pose, tmp_path, backends):
    """Was: exit 2, "onnxruntime cannot load the model … decoder_probe.onnx failed: … Graph ctor should have created
    NodeArg for initializer. Missing: r82_k" for the right patch (× 1: PASS, probed); × 1.01 FAILs on the probe too."""
    plain, patched = ir3_pose
    right = _verify(plain, _spliced(patched, tmp_path / "right.onnx", _scaled_in_a_scan, _scan_constants(1.0)),
                    backends)
    said = _verdict(right)
    assert right.exit_code == 0 and "PASS: the patched model agrees" in said, right.output
    assert "output steps on a probe output" in said and "not probed" not in said
    wrong = _verify(plain, _spliced(patched, tmp_path / "wrong.onnx", _scaled_in_a_scan, _scan_constants(1.01)),
                    backends)
    said = _verdict(wrong)
    assert wrong.exit_code == 1 and "FAIL" in said and "PASS" not in said, wrong.output
    assert "onnxruntime: output steps on a probe output: keypoints[" in said


# --- 2. IR 10: overloads of a local function -----------------------------------------------------------------


def _function(name: str, node: onnx.NodeProto, overload: str = "") -> onnx.FunctionProto:
    function = helper.make_function("local", name, ["x"], ["y"], [node],
                                    [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    function.overload = overload
    return function


#: F overload "a" calls G (Identity), F overload "b" calls H (Neg); a is listed first, so a lookup by name finds b
OVERLOADS = [_function("G", helper.make_node("Identity", ["x"], ["y"])),
             _function("H", helper.make_node("Neg", ["x"], ["y"])),
             _function("F", helper.make_node("G", ["x"], ["y"], domain="local"), "a"),
             _function("F", helper.make_node("H", ["x"], ["y"], domain="local"), "b")]


def _call(overload: str):
    def nodes(raw: str, made: str) -> list[onnx.NodeProto]:
        node = helper.make_node("F", [raw], [made], domain="local", name="call F")
        node.overload = overload
        return [node]
    return nodes


def test_a_decoder_calling_an_overloaded_function_is_probed(tmp_path):
    """Was: exit 2, "… decoder_probe.onnx … local:G(-1) is not a registered function" for the right patch (the cut
    kept F's overloads and what the last one calls). Calling the Neg overload FAILs."""
    plain = q.pose(tmp_path / "plain.onnx", opset=17, ir_version=10)
    patched = apply(POSE_RECIPE, plain, tmp_path / "patched.onnx").output
    right = _verify(plain, _spliced(patched, tmp_path / "right.onnx", _call("a"), functions=OVERLOADS))
    said = _verdict(right)
    assert right.exit_code == 0 and "PASS: the patched model agrees" in said, right.output
    assert "output steps on a probe output" in said and "not probed" not in said
    wrong = _verify(plain, _spliced(patched, tmp_path / "wrong.onnx", _call("b"), functions=OVERLOADS))
    assert wrong.exit_code == 1 and "FAIL" in wrong.output, wrong.output


# --- 3. the cut itself, against numpy ---------------------------------------------------------------------------


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_the_cut_of_an_ir3_graph_whose_if_body_reads_a_constant_loads_and_computes_as_numpy(tmp_path):
    """IR 3, `w` an initializer and a graph input as IR 3 wants: the cut reads it in an If body; it loads (it did
    not: "Graph ctor should have created NodeArg for initializer") and gives start × w."""
    then = helper.make_graph([helper.make_node("Mul", ["start", "w"], ["then_out"])], "then", [], [_value("then_out")])
    otherwise = helper.make_graph([helper.make_node("Neg", ["start"], ["else_out"])], "else", [],
                                  [_value("else_out")])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["start"]),
         helper.make_node("If", ["go"], ["end"], then_branch=then, else_branch=otherwise)], "g",
        [_value("x"), _value("w"), helper.make_tensor_value_info("go", TensorProto.BOOL, [])], [_value("end")],
        [numpy_helper.from_array(np.array([[1, 2, 3], [4, 5, 6]], np.float32), "w"),
         numpy_helper.from_array(np.array(True), "go")], value_info=[_value("start")])
    model = helper.make_model(graph, ir_version=3, opset_imports=[helper.make_opsetid("", 9)])
    onnx.checker.check_model(model, full_check=True)
    start = np.random.default_rng(82).normal(size=(2, 3)).astype(np.float32)
    assert cut_between(model, [], {"start": start}, ["end"], tmp_path / "cut.onnx")
    [got] = _run(tmp_path / "cut.onnx", {"start": start})
    np.testing.assert_array_equal(got, start * np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_the_cut_keeps_the_overload_called_and_what_it_calls(tmp_path):
    """F overload "a" (→ G, Identity) is called in a Loop body; the cut keeps F a and G, not F b nor H, and gives
    the start unchanged (Neg, were the other overload run)."""
    body = helper.make_graph([helper.make_node("Identity", ["go_in"], ["go_out"]), *_call("a")("x_in", "x_out")],
                             "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                      helper.make_tensor_value_info("go_in", TensorProto.BOOL, []), _value("x_in")],
                             [helper.make_tensor_value_info("go_out", TensorProto.BOOL, []), _value("x_out")])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["start"]), helper.make_node("Loop", ["trip", "go", "start"], ["end"],
                                                                      body=body)],
        "g", [_value("x")], [_value("end")], [numpy_helper.from_array(np.array(1, np.int64), "trip"),
                                               numpy_helper.from_array(np.array(True), "go")],
        value_info=[_value("start")])
    model = helper.make_model(graph, ir_version=10, functions=OVERLOADS,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    onnx.checker.check_model(model, full_check=True)
    start = np.random.default_rng(82).normal(size=(2, 3)).astype(np.float32)
    assert cut_between(model, [], {"start": start}, ["end"], tmp_path / "cut.onnx")
    cut = onnx.load(str(tmp_path / "cut.onnx"))
    assert [(f.name, f.overload) for f in cut.functions] == [("G", ""), ("F", "a")]
    [got] = _run(tmp_path / "cut.onnx", {"start": start})
    np.testing.assert_array_equal(got, start)


def test_a_call_is_as_large_as_the_overload_it_calls():
    """F overload "a" expands to 60⁵ nodes (a chain of functions each calling the next 60 times), F overload "b",
    listed after it, to one; the graph calls a. Was: counted as b, the model passed `check_work` and onnx's checker,
    next, ran for minutes (killed at 120 s). Refused before it, naming the limit."""
    from graphsurgery.errors import ModelError
    from graphsurgery.modelio import check_work

    def calls(name: str, callee: str, overload: str = "", times: int = 60) -> onnx.FunctionProto:
        names = ["x", *(f"t{i}" for i in range(times - 1)), "y"]
        nodes = [helper.make_node(callee, [names[i]], [names[i + 1]], domain="" if callee == "Identity" else "local")
                 for i in range(times)]
        function = helper.make_function("local", name, ["x"], ["y"], nodes,
                                        [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
        function.overload = overload
        return function

    chain = [calls("L0", "Identity"), *(calls(f"L{k}", f"L{k - 1}") for k in range(1, 4))]
    call = helper.make_node("F", ["x"], ["y"], domain="local")
    call.overload = "a"
    graph = helper.make_graph([call], "g", [_value("x", [1])], [_value("y", [1])])
    model = helper.make_model(graph, ir_version=10, functions=[*chain, calls("F", "L3", "a"),
                                                               calls("F", "Identity", "b", times=1)],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    with pytest.raises(ModelError, match="more than 50,000 nodes"):
        check_work(model, "overloads.onnx")


# --- 4. chain: a pose model with overloads ----------------------------------------------------------------------


PHOTO = Path(__file__).resolve().parent.parent / "examples" / "images" / "astronaut.jpg"


@pytest.fixture(scope="module")
def overloaded_pose(chain_patched, tmp_path_factory) -> Path:
    """The chain's pose model with its keypoints made by F overload "a" (G: Identity) beside F "b" (H: Neg)."""
    return _spliced(chain_patched["pose"], tmp_path_factory.mktemp("overloads") / "pose.onnx", _call("a"),
                    functions=OVERLOADS, ir_version=10)


def test_a_chain_whose_pose_model_has_overloads_passes_its_check(chain_patched, overloaded_pose, tmp_path):
    """Was: exit 1, "FAIL: the chained model is not the two models joined: the pose model's function 'F''s node 'G'
    (G) is a pose/H there" for the right chain (the parts check took F "b" for F "a")."""
    out = tmp_path / "chained.onnx"
    result = invoke("chain", chain_patched["detector"], overloaded_pose, "-o", out, "--check", PHOTO,
                    "--backends", "onnxruntime")
    said = _verdict(result)
    assert result.exit_code == 0, result.output
    assert "PASS: the chained model gives the two models' answers on onnxruntime" in said
    assert "its two parts are the two models node for node" in said


def test_a_chained_call_of_the_other_overload_is_named(chain_patched, overloaded_pose, tmp_path):
    """The chained model's call of F made a call of F "b": the parts check names the call and both overloads."""
    from graphsurgery import chaining

    out = tmp_path / "chained.onnx"
    chaining.chain(chain_patched["detector"], overloaded_pose, out)
    assert chaining.parts_difference(out, chain_patched["detector"], overloaded_pose) is None
    model = onnx.load(str(out))
    [call] = [node for node in model.graph.node if node.op_type == "pose/F"]
    call.overload = "b"
    onnx.save(model, str(out))
    found = chaining.parts_difference(out, chain_patched["detector"], overloaded_pose)
    assert found is not None and "node 'call F' (F) calls the overload 'b' there, not 'a'" in found, found


# --- 5. within a command, a symlink re-pointed after the read -------------------------------------------------------


def _adds(path: Path, value: float) -> Path:
    """A model y = x + `value` (x of shape [1, 3])."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [_value("x", [1, 3])],
                              [_value("y", [1, 3])], [numpy_helper.from_array(np.full((1, 3), value, np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("linked", ["file", "folder"])
def test_a_symlink_repointed_after_the_read_is_refused_as_changed(tmp_path, backend, linked):
    """The model read and checked through a symlink (to the file, or to its folder) that is then re-pointed to
    another model: the runtime opening the path was given the other model, unchecked (y = x + 2 for the checked
    x + 1), as a file replaced there is not (round 44). Refused as a replaced file is, naming the path."""
    from graphsurgery.errors import ModelError
    from graphsurgery.modelio import one_command
    from graphsurgery.runners import model_signature, open_runner

    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        _adds(tmp_path / name / "model.onnx", value)
    link = tmp_path / "link"
    target = {"file": lambda name: tmp_path / name / "model.onnx", "folder": lambda name: tmp_path / name}[linked]
    given = link / "model.onnx" if linked == "folder" else link
    link.symlink_to(target("a"))
    with one_command():
        assert model_signature(given).outputs[0].name == "y"
        link.unlink()
        link.symlink_to(target("b"))
        with pytest.raises(ModelError, match="the model file changed while the command ran") as refused:
            with open_runner(backend, given) as run:
                run({"x": np.zeros((1, 3), np.float32)})
    assert str(given) in str(refused.value)
    with one_command():  # a new command reads it afresh, and runs it
        model_signature(given)
        with open_runner(backend, given) as run:
            np.testing.assert_array_equal(run({"x": np.zeros((1, 3), np.float32)})["y"], np.full((1, 3), 2.0))


# --- 6. where the crops sample, through an If body ------------------------------------------------------------------


TOPDOWN_RECIPE = POSE_RECIPE.parent / "hrnet_coco_topdown.yaml"


def _position_through_an_if(patched: Path, out: Path, factor: float) -> Path:
    """The patched top-down model with what one of crop_boxes' Floor nodes reads passed through an If whose then
    branch multiplies it by a Constant `factor` of its own (1: the same positions)."""
    model = onnx.load(str(patched))
    floor = next(node for node in model.graph.node
                 if node.op_type == "Floor" and node.name.startswith("graphsurgery/pre/crop_boxes/"))
    position = floor.input[0]
    index, node = next((i, n) for i, n in enumerate(model.graph.node) if position in n.output)
    node.output[list(node.output).index(position)] = "r82_position"
    then = helper.make_graph([helper.make_node("Constant", [], ["r82_factor"],
                                               value=numpy_helper.from_array(np.float32(factor))),
                              helper.make_node("Mul", ["r82_position", "r82_factor"], ["r82_then"])], "then", [],
                             [_value("r82_then", None)])
    otherwise = helper.make_graph([helper.make_node("Identity", ["r82_position"], ["r82_else"])], "else", [],
                                  [_value("r82_else", None)])
    model.graph.node.insert(index + 1, helper.make_node("If", ["r82_go"], [position], then_branch=then,
                                                        else_branch=otherwise, name="graphsurgery/pre/crop_boxes/r82"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "r82_go"))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def test_crop_positions_through_an_if_body_are_compared(chain_patched, tmp_path):
    """Was: "not compared" (a note: "the patched graph's crop_boxes Floor nodes read 1 tensors computed from the
    boxes alone, not 2"): every output of a node with a body counted as read from the image. The right one PASSes,
    its positions compared on many boxes; one × (1 + 2⁻²²) there FAILs on them too."""
    plain = chain_patched["plain_pose"]
    right = invoke("verify", TOPDOWN_RECIPE, plain, "--patched",
                   _position_through_an_if(chain_patched["pose"], tmp_path / "right.onnx", 1.0),
                   "--backends", "onnxruntime")
    said = _verdict(right)
    assert right.exit_code == 0 and "PASS: the patched model agrees" in said, right.output
    assert "onnxruntime: crop positions of 8,192 boxes" in said and "not compared" not in said
    wrong = invoke("verify", TOPDOWN_RECIPE, plain, "--patched",
                   _position_through_an_if(chain_patched["pose"], tmp_path / "wrong.onnx", 1 + 2.0 ** -22),
                   "--backends", "onnxruntime")
    positions = _verdict(wrong).split("onnxruntime: crop positions of 8,192 boxes")
    assert wrong.exit_code == 1 and len(positions) == 2, wrong.output
    assert "verdict: FAIL" in positions[1].split("onnxruntime:")[0], wrong.output


# --- 7. chain: constants listed as inputs too -------------------------------------------------------------------


def _constants_as_inputs(patched: Path, out: Path) -> Path:
    """The patched model re-saved with each constant listed as a graph input too (as IR 3 wants it, and torch's
    `keep_initializers_as_inputs` writes)."""
    model = onnx.load(str(patched))
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("part", ["detector", "pose"])
def test_a_part_listing_its_constants_as_inputs_is_refused_for_it(chain_patched, tmp_path, part):
    """Was: exit 2, "not a patched top-down pose model: inputs ['image', 'boxes', 'graphsurgery/pre/…', …] — fix:
    apply recipes/hrnet_coco_topdown.yaml … first" (a patched detector alike), for a model that is one. Chained as
    it is, the detector's constants became inputs without values (exit 3), and a chained model taking the image
    alone FAILed its check against such a detector (ONNX Runtime folds no constant listed as an input). The line
    says what the model does and how to save it without; nothing is written."""
    from clikit import one_line_exit_2

    models = {"detector": chain_patched["detector"], "pose": chain_patched["pose"]}
    models[part] = _constants_as_inputs(models[part], tmp_path / f"{part}.onnx")
    out = tmp_path / "chained.onnx"
    result = invoke("chain", models["detector"], models["pose"], "-o", out, "--check", PHOTO)
    what = "detector" if part == "detector" else "pose model"
    one_line_exit_2(result, str(models[part]), f"the {what} lists", "of its constants", "as graph inputs too",
                    "remove_initializer_from_input.py")
    assert not out.exists()


def test_an_ir3_pose_model_is_refused_for_its_opset_not_as_unpatched(chain_patched, ir3_pose_topdown):
    """Was: "not a patched top-down pose model" with 150 constants among its inputs and the fix to apply the recipe
    it had. The line names what differs: the opsets."""
    from clikit import one_line_exit_2

    result = invoke("chain", chain_patched["detector"], ir3_pose_topdown, "-o", ir3_pose_topdown.parent / "c.onnx")
    one_line_exit_2(result, "the detector has opset 17 and the pose model 9", "export (or --upgrade-opset) both")


@pytest.fixture(scope="module")
def ir3_pose_topdown(tmp_path_factory) -> Path:
    """A pose model of IR 3 and opset 9 (256 × 192) patched with recipes/hrnet_coco_topdown.yaml: IR 3 still."""
    folder = tmp_path_factory.mktemp("ir3_topdown")
    plain = q.pose(folder / "plain.onnx", hw=(256, 192))
    return apply(TOPDOWN_RECIPE, plain, folder / "patched.onnx").output
