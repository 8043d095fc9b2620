"""Round 38: models from the wild with structure quirks — If/Loop bodies, model-local functions, node names, and
a model whose only input is no image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.recipe import load_recipe
from graphsurgery.verification import verify

from modelkit import bgr_crops, pose_model
from quirkykit import assert_parity

ROOT = Path(__file__).resolve().parent.parent
POSE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
TOPDOWN = ROOT / "recipes" / "hrnet_coco_topdown.yaml"
CLASSIFIER = ROOT / "recipes" / "imagenet_classifier.yaml"
HW = (64, 48)


def value(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def behind_an_if(folder: Path, then_nodes: list[onnx.NodeProto], then_output: str, *, dynamic_batch: bool = True,
                 declared=None, on_the_path: bool = True) -> Path:
    """A pose model whose Conv writes `raw`, then an If on a constant true: its then-branch is `then_nodes`
    (ending in `then_output`), its else-branch an Identity. `on_the_path`: the If's result is the heatmaps output
    (else it is left unread, and `raw` is the output)."""
    model = onnx.load(str(pose_model(folder / "base.onnx", input_hw=HW, dynamic_batch=dynamic_batch,
                                     output_name="raw")))
    then = helper.make_graph(then_nodes, "then", [], [value(then_output, declared)])
    otherwise = helper.make_graph([helper.make_node("Identity", ["raw"], ["else_out"])], "else", [],
                                  [value("else_out", declared)])
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    model.graph.node.append(helper.make_node("If", ["cond"], ["heatmaps"], then_branch=then, else_branch=otherwise,
                                             name="if"))
    if on_the_path:
        model.graph.output[0].name = "heatmaps"
    onnx.checker.check_model(model, full_check=True)
    path = folder / "plain.onnx"
    onnx.save(model, str(path))
    return path


def test_a_new_output_named_like_a_tensor_of_a_subgraph_is_refused(tmp_path):
    """An If body holding a tensor `keypoints`: apply named the decoded output `keypoints` too and wrote a model
    ONNX Runtime refuses ("Graph must be in single static assignment form"). The subgraphs' names count."""
    plain = behind_an_if(tmp_path, [helper.make_node("Identity", ["raw"], ["keypoints"])], "keypoints",
                         on_the_path=False)
    result = invoke("apply", POSE, plain, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "'keypoints'", "output.names.keypoints")
    assert not (tmp_path / "out.onnx").exists()


def test_names_the_splice_adds_avoid_the_names_of_subgraphs(tmp_path):
    """An If body whose node and tensor bear the names the splice gives its first nodes: the patched model failed
    the checker ("report this: a graphsurgery bug"). The splice now picks other names, and the patch is right."""
    taken = "graphsurgery/pre/layout/Transpose"
    plain = behind_an_if(tmp_path, [helper.make_node("Relu", ["raw"], [f"{taken}_output_0"], name=taken)],
                         f"{taken}_output_0")
    patched = apply(POSE, plain, tmp_path / "patched.onnx").output
    assert_parity(load_recipe(POSE), plain, patched, bgr_crops(2, HW))


def test_a_body_reading_the_patched_input_reads_what_the_model_read(tmp_path):
    """An If body reading the model's input from the outer scope (its mean scales the heatmaps): after the splice
    it must read the normalised tensor, not the caller's uint8 input that took the name (guard)."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=1, axes=[1, 2, 3]),
             helper.make_node("Mul", ["raw", "mean"], ["then_out"])]
    plain = behind_an_if(tmp_path, nodes, "then_out")
    patched = apply(POSE, plain, tmp_path / "patched.onnx").output
    then_branch = next(a.g for n in onnx.load(str(patched)).graph.node if n.op_type == "If" for a in n.attribute
                       if a.name == "then_branch")
    assert then_branch.node[0].input[0] != "input"  # the normalised float tensor, under its internal name
    assert_parity(load_recipe(POSE), plain, patched, bgr_crops(2, HW))


def test_a_static_batch_model_whose_if_declares_the_batch_takes_the_topdown_recipe(tmp_path):
    """The top-down recipe frees a static batch (N boxes, 2N crops with the flip test); an If whose branches declared
    [1, 17, 16, 12] kept the batch at 1, and the flip average's Split of it failed the checker ("a graphsurgery
    bug"). The bodies lose their sizes as the main graph does."""
    plain = behind_an_if(tmp_path, [helper.make_node("Relu", ["raw"], ["then_out"])], "then_out",
                         dynamic_batch=False, declared=[1, 17, 16, 12])
    patched = apply(TOPDOWN, plain, tmp_path / "patched.onnx").output
    report = verify(TOPDOWN, plain, patched=patched, random=2, backends=("onnxruntime",))
    assert report, report.failures()


@pytest.mark.parametrize("in_subgraph", [False, True])
def test_two_nodes_of_one_name_are_refused_when_the_model_is_read(tmp_path, in_subgraph):
    """ONNX Runtime refuses a graph with two nodes of one name (onnx's checker does not): apply printed twenty
    lines of onnx-graphsurgeon warnings on standard output and wrote a model ONNX Runtime could not load."""
    if in_subgraph:
        nodes = [helper.make_node("Relu", ["raw"], ["r"], name="twin"),
                 helper.make_node("Identity", ["r"], ["then_out"], name="twin")]
        plain = behind_an_if(tmp_path, nodes, "then_out")
    else:
        model = onnx.load(str(pose_model(tmp_path / "base.onnx", input_hw=HW, output_name="raw")))
        model.graph.node.append(helper.make_node("Identity", ["raw"], ["heatmaps"], name="conv"))
        model.graph.output[0].name = "heatmaps"
        plain = tmp_path / "plain.onnx"
        onnx.save(model, str(plain))
    with pytest.raises(Exception, match="same node name"):  # the runtime's own view of the model
        ort.InferenceSession(str(plain))
    before = plain.read_bytes()
    for args in (("inspect", plain), ("apply", POSE, plain, "-o", tmp_path / "out.onnx")):
        one_line_exit_2(invoke(*args), "named 'twin'" if in_subgraph else "named 'conv'", "share a name")
    assert not (tmp_path / "out.onnx").exists() and plain.read_bytes() == before


def _classifier_ending_in(path: Path, node: onnx.NodeProto, *, domain: tuple[str, int] | None = None,
                          function: onnx.FunctionProto | None = None) -> Path:
    """A classifier at opset 9 (which the resize step needs upgraded to 11) whose logits pass through `node`."""
    import quirkykit as q

    model = onnx.load(str(q.classifier(path, opset=9, ir_version=4)))
    logits = model.graph.output[0].name
    for existing in model.graph.node:
        existing.output[:] = [f"{name}/pre" if name == logits else name for name in existing.output]
    model.graph.node.append(node)
    if domain:
        model.opset_import.append(helper.make_opsetid(*domain))
    if function:
        model.functions.append(function)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", ["local function", "com.microsoft", "function named like an op"])
def test_upgrade_opset_keeps_functions_and_other_domains(tmp_path, kind):
    """--upgrade-opset on a model importing another domain was an internal error (onnx's table of IR versions
    knows no `local` nor `com.microsoft`), and onnx's version converter drops model-local functions, leaving
    their calls to no op. The functions are inlined first (not one named like an ONNX op: the runtimes run the op,
    and so does the patched model)."""
    logits = "logits/BiasAdd:0"
    if kind == "local function":
        node = helper.make_node("Twice", [f"{logits}/pre"], [logits], domain="local")
        function = helper.make_function("local", "Twice", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
                                        [helper.make_opsetid("", 9)])
        plain = _classifier_ending_in(tmp_path / "plain.onnx", node, domain=("local", 1), function=function)
    elif kind == "com.microsoft":
        node = helper.make_node("Gelu", [f"{logits}/pre"], [logits], domain="com.microsoft")
        plain = _classifier_ending_in(tmp_path / "plain.onnx", node, domain=("com.microsoft", 1))
    else:
        node = helper.make_node("Relu", [f"{logits}/pre"], [logits])
        function = helper.make_function("", "Relu", ["x"], ["y"], [helper.make_node("Neg", ["x"], ["y"])],
                                        [helper.make_opsetid("", 9)])
        plain = _classifier_ending_in(tmp_path / "plain.onnx", node, function=function)
    patched = apply(CLASSIFIER, plain, tmp_path / "patched.onnx", upgrade_opset=True).output
    model = onnx.load(str(patched))
    defined = {(f.domain, f.name) for f in model.functions}
    assert not [n for n in model.graph.node if n.domain == "local" and (n.domain, n.op_type) not in defined]
    report = verify(CLASSIFIER, plain, patched=patched, random=2, backends=("onnxruntime",), upgrade_opset=True)
    assert report, report.failures()


def test_verify_of_a_model_without_an_image_input_is_one_line(tmp_path):
    """An output-only recipe on a model whose only input is a vector: verify's crop size unpacked a 1-D shape, an
    internal error (exit 3)."""
    heatmaps = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 17, 16, 12)).astype(np.float32),
                                       "heatmaps")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [value("x", [1])],
                              [value("heatmaps", [2, 17, 16, 12]), value("y", [1])], [heatmaps])
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    recipe = tmp_path / "decode.yaml"
    recipe.write_text("version: 1\nname: decode\noutput:\n  target: heatmaps\n  steps:\n    - heatmap_argmax: {}\n"
                      "  names: {keypoints: keypoints, scores: scores}\n")
    one_line_exit_2(invoke("verify", recipe, plain, "--random", "2"), "'x' has 1 dims", "4-D")


@pytest.mark.parametrize("domain, version", [("ai.onnx.ml", 6), ("com.microsoft", 2), ("com.microsoft", 10**9)])
def test_an_opset_newer_than_the_runtimes_know_of_any_domain_is_refused(tmp_path, domain, version):
    """Only ai.onnx's opset was held to what onnx knows: a model importing ai.onnx.ml 6 or com.microsoft 2 (used or
    not) was inspected and patched, and ONNX Runtime refused it and the patched model later ("check the model with
    `graphsurgery inspect`", which found nothing)."""
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx", input_hw=HW)))
    model.opset_import.append(helper.make_opsetid(domain, version))
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    with pytest.raises(Exception, match=f"support for domain {domain} is till opset"):  # the runtime's own view
        ort.InferenceSession(str(plain))
    for args in (("inspect", plain), ("apply", POSE, plain, "-o", tmp_path / "out.onnx")):
        one_line_exit_2(invoke(*args), f"opset {version} of domain '{domain}'", "newer")
    assert not (tmp_path / "out.onnx").exists()


def test_the_newest_opset_of_another_domain_still_loads(tmp_path):
    """ai.onnx.ml 5 and com.microsoft 1 are what the runtimes know (guard)."""
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx", input_hw=HW)))
    model.opset_import.extend([helper.make_opsetid("ai.onnx.ml", 5), helper.make_opsetid("com.microsoft", 1)])
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    assert invoke("inspect", plain).exit_code == 0


def _reshapes_through_batch_one() -> list[onnx.NodeProto]:
    """[1, 17, 16, 12] → [1, 17, 192] → back: writes a batch of 1 (unnamed nodes, the first writing `flat`)."""
    return [helper.make_node("Constant", [], ["flat_shape"],
                             value=numpy_helper.from_array(np.array([1, 17, 192], np.int64))),
            helper.make_node("Constant", [], ["map_shape"],
                             value=numpy_helper.from_array(np.array([1, 17, 16, 12], np.int64))),
            helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
            helper.make_node("Reshape", ["flat", "map_shape"], ["y"])]


@pytest.mark.parametrize("where", ["if body", "function"])
def test_a_reshape_writing_the_batch_in_a_body_or_function_is_refused_by_name(tmp_path, where):
    """The top-down recipe frees a static batch; a Reshape writing batch 1 in the main graph was refused naming it,
    but in an If body or a model-local function it made a patched model that failed the checker ("a graphsurgery
    bug")."""
    if where == "if body":
        nodes = [helper.make_node("Identity", ["raw"], ["x"]), *_reshapes_through_batch_one(),
                 helper.make_node("Identity", ["y"], ["then_out"])]
        plain = behind_an_if(tmp_path, nodes, "then_out", dynamic_batch=False)
    else:
        model = onnx.load(str(pose_model(tmp_path / "base.onnx", input_hw=HW, output_name="raw")))
        model.functions.append(helper.make_function("local", "Flat", ["x"], ["y"], _reshapes_through_batch_one(),
                                                    [helper.make_opsetid("", 17)]))
        model.opset_import.append(helper.make_opsetid("local", 1))
        model.graph.node.append(helper.make_node("Flat", ["raw"], ["heatmaps"], domain="local", name="flat"))
        model.graph.output[0].name = "heatmaps"
        plain = tmp_path / "plain.onnx"
        onnx.save(model, str(plain))
    result = invoke("apply", TOPDOWN, plain, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "Reshape (unnamed, output 'flat') writes a batch of 1", "dynamic batch")
    assert not (tmp_path / "out.onnx").exists()


def test_a_node_named_like_a_new_output_is_no_clash(tmp_path):
    """Node names and tensor names are apart in ONNX: a node named `scores` (its tensor `scores:0`) does not stop
    the recipe's `scores` output (guard)."""
    model = onnx.load(str(pose_model(tmp_path / "base.onnx", input_hw=HW, output_name="raw")))
    model.graph.node.append(helper.make_node("Identity", ["raw"], ["heatmaps"], name="scores"))
    model.graph.output[0].name = "heatmaps"
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    patched = apply(POSE, plain, tmp_path / "patched.onnx").output
    assert [o.name for o in onnx.load(str(patched)).graph.output] == ["keypoints", "scores", "heatmaps"]


def _referring(node: onnx.NodeProto, name: str, parameter: str, kind: int) -> onnx.NodeProto:
    """`node` with attribute `name` set by the function's `parameter` at each call (ref_attr_name)."""
    node.attribute.append(onnx.AttributeProto(name=name, ref_attr_name=parameter, type=kind))
    return node


@pytest.mark.parametrize("body", ["Constant", "Mod"])
def test_a_function_with_attribute_parameters_is_read_and_patched(tmp_path, body):
    """Model-local functions take attributes their body refers to (`ref_attr_name`: onnxscript and torch.onnx's
    functions): reading the body's constants asked onnx for the value of the reference, and every command, inspect
    included, was an internal error."""
    k = numpy_helper.from_array
    if body == "Constant":
        nodes = [_referring(helper.make_node("Constant", [], ["k"]), "value_float", "alpha",
                            onnx.AttributeProto.FLOAT)]
    else:
        nodes = [helper.make_node("Constant", [], ["a"], value=k(np.array([7], np.int64))),
                 helper.make_node("Constant", [], ["b"], value=k(np.array([3], np.int64))),
                 _referring(helper.make_node("Mod", ["a", "b"], ["m"]), "fmod", "alpha", onnx.AttributeProto.INT),
                 helper.make_node("Cast", ["m"], ["k"], to=TensorProto.FLOAT)]
    nodes.append(helper.make_node("Mul", ["x", "k"], ["y"]))
    model = onnx.load(str(pose_model(tmp_path / "base.onnx", input_hw=HW, output_name="raw")))
    model.functions.append(helper.make_function("local", "Scale", ["x"], ["y"], nodes, [helper.make_opsetid("", 17)],
                                                attributes=["alpha"]))
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.graph.node.append(helper.make_node("Scale", ["raw"], ["heatmaps"], domain="local", name="scale",
                                             alpha=-3.0 if body == "Constant" else 0))
    model.graph.output[0].name = "heatmaps"
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    assert invoke("inspect", plain).exit_code == 0
    patched = apply(POSE, plain, tmp_path / "patched.onnx").output
    kept = onnx.load(str(patched)).functions  # as text: onnx-graphsurgeon writes empty names, the same nodes
    assert list(map(onnx.printer.to_text, kept)) == list(map(onnx.printer.to_text, model.functions))
    report = verify(POSE, plain, patched=patched, random=2, backends=("onnxruntime",))  # OpenVINO: no local functions
    assert report, report.failures()


def test_an_output_whose_size_follows_the_inputs_values_is_refused(tmp_path):
    """An If on the input's mean choosing between branches of other sizes (the heatmaps, or them max-pooled to
    the declared 16 × 12): apply built the steps for the size a run on zeros gave, and verify's crops, which take
    the other branch, failed in graphsurgery's Reshape: "internal error", exit 3."""
    model = onnx.load(str(pose_model(tmp_path / "base.onnx", input_hw=HW, output_name="raw", stride=2,
                                     dynamic_batch=True)))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    model.graph.node.extend([helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
                             helper.make_node("Greater", ["mean", "zero"], ["positive"])])
    then = helper.make_graph([helper.make_node("Identity", ["raw"], ["as_is"])], "then", [], [value("as_is", None)])
    otherwise = helper.make_graph([helper.make_node("MaxPool", ["raw"], ["pooled"], kernel_shape=[2, 2],
                                                    strides=[2, 2])], "else", [], [value("pooled", None)])
    model.graph.node.append(helper.make_node("If", ["positive"], ["heatmaps"], then_branch=then,
                                             else_branch=otherwise))
    model.graph.output[0].name = "heatmaps"
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 16, 12
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    session = ort.InferenceSession(str(plain))  # the two sizes, as the runtime computes them
    shapes = {session.run(None, {"input": np.full((1, 3, *HW), fill, np.float32)})[0].shape for fill in (-1, 1)}
    assert shapes == {(1, 17, 16, 12), (1, 17, 32, 24)}
    for args in (("apply", POSE, plain, "-o", tmp_path / "out.onnx"), ("verify", POSE, plain, "--random", "2")):
        one_line_exit_2(invoke(*args), "output 'heatmaps'", "follows the input's values")
    assert not (tmp_path / "out.onnx").exists()
