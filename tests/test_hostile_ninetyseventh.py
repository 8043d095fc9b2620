"""Round 97: third-party models with unusual ONNX features at the splice points (models from the wild).

Found: `softmax: {skip_if_present}` asked which op makes the model output by its op type alone, in the main graph. A
classifier ending in a call of a model-local function whose body ends in Softmax (torch's
`export_modules_as_functions`: `__main__.Head` = Gemm → Softmax) was given a second softmax, and a local function
named `Softmax` (whose body is a LogSoftmax) was taken for ONNX's and given none; verify's twin decides from the same
facts, so both PASSed with scores that are not the model's probabilities (`model.output_producer` now looks into
functions, and out of them to their arguments, and names an op of another domain with its domain). An image input with
a value of its own (an initializer of its name) was "no input named 'input'; its inputs: " (none listed). OpenVINO's
refusal of a local function (since read inlined) told `run` and `bench` to use `--backends`, which they refuse.
OpenVINO answers an If whose branches read a model output with that output, and gives both outputs both names where
the If folds: verify was an internal error (KeyError). An output declared with another rank than it has, where onnx's
inference cannot tell, made apply write a patch that fails and verify an internal error. A ZipMap output's fix is
skl2onnx's own option. And onnx-graphsurgeon dropped the overload of each call of an overloaded local function (IR
10): the patched model called one overload where the model called two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.model import output_producer
from graphsurgery.runners import open_runner
from graphsurgery.verification import verify

from modelkit import pose_model, unconvertible

ROOT = Path(__file__).resolve().parent.parent
IMAGENET = ROOT / "recipes" / "imagenet_classifier.yaml"
POSE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
CLASSES = 10


def _classifier(path: Path, ending: str) -> Path:
    """A small classifier [1,3,32,32] → Conv → pooling → Gemm `fc` [1,10], then `ending` to its output `probs`:
    `call` a local function `__main__.Head` (Softmax in its body, as torch writes a module exported as a function),
    `nested` a call of `Outer` (a Flatten, then a call of `Inner` = Softmax), `log` a local function named `Softmax`
    whose body is a LogSoftmax, `pass` a Softmax in the graph and then a call of a function whose body is Identity,
    `if` an If whose branches are both a Softmax (`if_mixed`: a Softmax and a Sigmoid)."""
    rng = np.random.default_rng(7)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 8, 8)).astype(np.float32), "c.w"),
               numpy_helper.from_array(rng.normal(0, 3.0, (CLASSES, 8)).astype(np.float32), "fc.w"),
               numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES,)).astype(np.float32), "fc.b")]
    nodes = [helper.make_node("Conv", ["input", "c.w"], ["c"], strides=[8, 8], kernel_shape=[8, 8]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["fc"], transB=1)]
    onnx_opset = helper.make_opsetid("", 17)

    def function(domain, name, body):
        return helper.make_function(domain, name, ["x"], ["y"], body, [onnx_opset, helper.make_opsetid("local", 1)])

    softmax = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    domain, functions = "local", []
    if ending == "call":
        domain, functions = "__main__", [function("__main__", "Head", [softmax])]
        nodes.append(helper.make_node("Head", ["fc"], ["probs"], domain=domain))
    elif ending == "nested":
        functions = [function("local", "Outer", [helper.make_node("Flatten", ["x"], ["flat"]),
                                                 helper.make_node("Inner", ["flat"], ["y"], domain="local")]),
                     function("local", "Inner", [softmax])]
        nodes.append(helper.make_node("Outer", ["fc"], ["probs"], domain="local"))
    elif ending == "log":
        functions = [function("local", "Softmax", [helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)])]
        nodes.append(helper.make_node("Softmax", ["fc"], ["probs"], domain="local"))
    elif ending in ("if", "if_mixed"):  # an If on the logits' mean: both branches a Softmax, or one a Sigmoid
        second = "Softmax" if ending == "if" else "Sigmoid"
        branches = [helper.make_graph([helper.make_node(op, ["fc"], [f"{op}_{k}"], **({"axis": 1} if op == "Softmax"
                                                                                    else {}))],
                                      f"b{k}", [], [helper.make_tensor_value_info(f"{op}_{k}", TensorProto.FLOAT,
                                                                                  [1, CLASSES])])
                    for k, op in enumerate(("Softmax", second))]
        weights.append(numpy_helper.from_array(np.float32(0), "zero"))
        nodes += [helper.make_node("ReduceMean", ["fc"], ["mean"], keepdims=0),
                  helper.make_node("Greater", ["mean", "zero"], ["positive"]),
                  helper.make_node("If", ["positive"], ["probs"], then_branch=branches[0], else_branch=branches[1])]
    else:
        functions = [function("local", "Rename", [helper.make_node("Identity", ["x"], ["y"])])]
        nodes += [helper.make_node("Softmax", ["fc"], ["probabilities"], axis=1),
                  helper.make_node("Rename", ["probabilities"], ["probs"], domain="local")]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, CLASSES])], weights)
    model = helper.make_model(graph, opset_imports=[onnx_opset, helper.make_opsetid(domain, 1)],
                              functions=functions)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("ending, producer", [("call", "Softmax"), ("nested", "Softmax"), ("log", "LogSoftmax"),
                                              ("pass", "Softmax"), ("if", "Softmax")])
def test_the_op_making_the_output_is_found_through_local_functions(tmp_path, ending, producer):
    model = onnx.load(str(_classifier(tmp_path / "m.onnx", ending)))
    assert output_producer(model, "probs") == producer
    if ending == "if":  # branches of two ops: neither is the If's
        assert output_producer(onnx.load(str(_classifier(tmp_path / "mixed.onnx", "if_mixed"))), "probs") == "If"


def test_an_op_of_another_domain_is_named_with_its_domain(tmp_path):
    model = onnx.load(str(pose_model(tmp_path / "m.onnx")))
    model.graph.node[0].domain = "com.example"  # not run: only the name the question answers
    assert output_producer(model, "heatmaps") == "com.example.Conv"


@pytest.mark.parametrize("ending", ["call", "log", "pass", "if"])
def test_the_patched_scores_are_the_models_probabilities(tmp_path, ending):
    """The top-5 scores of the patched model are the five largest probabilities of the model's own (after its
    softmax where it ends in one, after the recipe's where it does not): one softmax, never two or none."""
    plain = _classifier(tmp_path / "m.onnx", ending)
    apply(IMAGENET, plain, tmp_path / "p.onnx")
    image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    with open_runner("onnxruntime", tmp_path / "p.onnx") as run:
        patched = run({"input": image})
    kept = patched["probs"]
    if ending == "log":  # the model's output is log-probabilities: the recipe's softmax makes them probabilities
        expected = np.exp(kept) / np.exp(kept).sum(axis=1, keepdims=True)
    else:
        expected = kept
    np.testing.assert_allclose(patched["scores"][0], np.sort(expected[0])[::-1][:5], rtol=1e-5, atol=1e-6)
    assert abs(expected.sum() - 1) < 1e-5


def test_verify_fails_a_second_softmax_over_a_local_functions_own(tmp_path):
    """verify judges by the same facts: a patch written by the code before (softmax over the model's softmax inside
    `__main__.Head`) now FAILs on its scores."""
    plain = _classifier(tmp_path / "m.onnx", "call")
    apply(IMAGENET, plain, tmp_path / "p.onnx")
    model = onnx.load(str(tmp_path / "p.onnx"))
    skip = next(node for node in model.graph.node if node.name.startswith("graphsurgery/post/softmax/"))
    assert skip.op_type == "Identity"
    skip.op_type = "Softmax"
    skip.attribute.append(helper.make_attribute("axis", -1))
    onnx.save(model, str(tmp_path / "twice.onnx"))
    report = verify(IMAGENET, plain, patched=tmp_path / "twice.onnx", backends=["onnxruntime"], random=2)
    assert not report
    assert any("scores" in line for line in report.failures()), report.failures()


def _image_with_default(path: Path) -> Path:
    """The tiny pose model whose image input `input` has an initializer of its name (zeros): a default, IR 4 on."""
    model = onnx.load(str(pose_model(path, input_hw=(64, 48))))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 3, 64, 48), np.float32), "input"))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("command", ["apply", "verify"])
@pytest.mark.parametrize("target", [False, True])
def test_an_image_input_with_a_value_of_its_own_is_named(tmp_path, command, target):
    plain = _image_with_default(tmp_path / "m.onnx")
    recipe = POSE
    if target:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(POSE.read_text().replace("\ninput:\n", "\ninput:\n  target: input\n"))
    before = plain.read_bytes()
    extra = ["-o", tmp_path / "p.onnx"] if command == "apply" else ["--random", "2"]
    result = invoke(command, recipe, plain, *extra)
    one_line_exit_2(result, "m.onnx", "input 'input' has a value of its own", "remove the initializer 'input'")
    assert not (tmp_path / "p.onnx").exists() and plain.read_bytes() == before


def _pose_openvino_cannot_convert(path: Path) -> Path:
    """The tiny pose model whose heatmaps an `ai.onnx.ml.Scaler` makes (OpenVINO converts none; its local function
    `local.Head` was read inlined since stop 54)."""
    return unconvertible(pose_model(path, input_hw=(64, 48)), path, "heatmaps")


def test_run_names_its_own_option_for_onnxruntime_alone(tmp_path):
    """Was: "fix: … (ONNX Runtime may still run the model: --backends onnxruntime)", which run refuses ("No such
    option"). Taken as the line gives it, run runs the model."""
    import cv2

    apply(POSE, _pose_openvino_cannot_convert(tmp_path / "m.onnx"), tmp_path / "p.onnx")
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8))
    refused = invoke("run", tmp_path / "p.onnx", photo, "-o", tmp_path / "out")
    one_line_exit_2(refused, "p.onnx", "ai.onnx.ml.Scaler node 'scaler'",
                    "may still run the model: --backend onnxruntime)")
    result = invoke("run", tmp_path / "p.onnx", photo, "-o", tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "keypoints.json").is_file()


def test_bench_names_no_option_it_refuses(tmp_path):
    """Was: bench, which times OpenVINO too and has no backend option, named `--backends onnxruntime`."""
    result = invoke("bench", POSE, _pose_openvino_cannot_convert(tmp_path / "m.onnx"), "--iterations", "1",
                    "--warmup", "0")
    one_line_exit_2(result, "m.onnx", "ai.onnx.ml.Scaler node 'scaler'", "`verify --backends onnxruntime`",
                    "`run --backend onnxruntime`")


def _if_reading_the_heatmaps(path: Path, *, constant: bool, copy: bool = False) -> Path:
    """The tiny pose model with a second output made by an If whose branches read the output `heatmaps` (through
    an Identity `copy` with `copy`): `peak`, their max or min, under a constant condition (`constant`), else `neg`,
    −heatmaps or |heatmaps|, under one on the image's mean."""
    model = onnx.load(str(pose_model(path, input_hw=(64, 48))))
    graph, read = model.graph, "copy" if copy else "heatmaps"
    if copy:
        graph.node.append(helper.make_node("Identity", ["heatmaps"], ["copy"]))
    if constant:
        graph.initializer.append(numpy_helper.from_array(np.array(True), "condition"))
        ops, name, shape = ("ReduceMax", "ReduceMin"), "peak", []
    else:
        graph.initializer.append(numpy_helper.from_array(np.float32(0), "zero"))
        graph.node.extend([helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
                           helper.make_node("Greater", ["mean", "zero"], ["condition"])])
        ops, name, shape = ("Neg", "Abs"), "neg", [1, 17, 16, 12]
    keep = {"keepdims": 0} if constant else {}
    branches = [helper.make_graph([helper.make_node(op, [read], [f"{op}_out"], **keep)], op, [],
                                  [helper.make_tensor_value_info(f"{op}_out", TensorProto.FLOAT, shape)])
                for op in ops]
    graph.node.append(helper.make_node("If", ["condition"], [name], name="if", then_branch=branches[0],
                                       else_branch=branches[1]))
    graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _pose_on(tmp_path: Path) -> Path:
    """hrnet_coco_pose with output.target: heatmaps (the model has two outputs)."""
    recipe = tmp_path / "pose.yaml"
    recipe.write_text(POSE.read_text().replace("\noutput:\n", "\noutput:\n  target: heatmaps\n"))
    return recipe


def test_verify_names_each_openvino_output_once(tmp_path):
    """Was: internal error (KeyError: 'peak'), exit 3. OpenVINO folds the constant If and gives both outputs both
    names: each took the first declared name it carries, 'heatmaps'. Named by position now, verify compares `peak`
    on OpenVINO too (where OpenVINO answers it with the heatmaps: a FAIL, with the note below)."""
    plain = _if_reading_the_heatmaps(tmp_path / "m.onnx", constant=True)
    result = invoke("verify", _pose_on(tmp_path), plain, "--random", "2")
    assert result.exit_code in (0, 1) and "internal error" not in result.output, result.output
    if result.exit_code == 1:
        assert "differ (peak)" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("command", ["apply", "verify", "convert"])
def test_openvinos_if_reading_a_model_output_is_a_caveat(tmp_path, command):
    """OpenVINO 2026.4 answers an If whose branches read the model output `heatmaps` with `heatmaps` itself (`neg`
    came out as the heatmaps): a wrong answer, not an error, so each command that meets it says so. Read through an
    Identity, OpenVINO answers it right: no note there, and verify PASSes on both backends."""
    plain = _if_reading_the_heatmaps(tmp_path / "m.onnx", constant=False)
    recipe = _pose_on(tmp_path)
    if command == "convert":
        apply(recipe, plain, tmp_path / "p.onnx")
        result = invoke("convert", tmp_path / "p.onnx", "-o", tmp_path / "p.xml")
    elif command == "apply":
        result = invoke("apply", recipe, plain, "-o", tmp_path / "p.onnx")
    else:
        result = invoke("verify", recipe, plain, "--random", "2")
    said = " ".join(result.output.split())
    assert result.exit_code == (1 if command == "verify" else 0), result.output
    assert "OpenVINO answers If node 'if' with the model output 'heatmaps' that its branches read" in said, said
    assert "an Identity" in said
    if command != "convert":
        copied = _if_reading_the_heatmaps(tmp_path / "copy.onnx", constant=False, copy=True)
        extra = ["-o", tmp_path / "c.onnx"] if command == "apply" else ["--random", "2"]
        result = invoke(command, recipe, copied, *extra)
        assert result.exit_code == 0 and "OpenVINO answers" not in result.output, result.output



@pytest.mark.parametrize("command", ["apply", "verify"])
def test_an_output_declared_of_another_rank_than_it_has_is_refused(tmp_path, command):
    """Was: ONNX Runtime's FusedConv (com.microsoft, which onnx's shape inference does not know) declared [17, 16, 12]
    where it computes [1, 17, 16, 12]: apply wrote a classifier patch built for 3 dims (scores [17, 16, 5]) that
    failed at run time, and verify was an internal error ("Invalid rank for input: heatmaps")."""
    model = onnx.load(str(pose_model(tmp_path / "m.onnx", input_hw=(64, 48))))
    node = model.graph.node[0]
    node.op_type, node.domain = "FusedConv", "com.microsoft"
    node.attribute.append(helper.make_attribute("activation", "Relu"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [17, 16, 12]))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    extra = ["-o", tmp_path / "p.onnx"] if command == "apply" else ["--random", "2", "--backends", "onnxruntime"]
    result = invoke(command, IMAGENET, tmp_path / "m.onnx", *extra)
    one_line_exit_2(result, "m.onnx", "output 'heatmaps' is declared [17, 16, 12], 3 dims; the model computes 4",
                    "export the model with the shape of 'heatmaps' it computes")
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("ending", ["zipmap", "optional"])
def test_an_output_that_is_no_tensor_is_named_with_the_exporters_fix(tmp_path, ending):
    """sklearn-onnx's classifiers end in ai.onnx.ml's ZipMap (a sequence of maps): the fix is its own option, not
    "remove or convert it when exporting". An optional output was "is a optional"."""
    model = onnx.load(str(pose_model(tmp_path / "m.onnx", input_hw=(64, 48))))
    if ending == "zipmap":
        model.graph.node.extend([helper.make_node("ReduceMean", ["heatmaps"], ["mean"], axes=[2, 3], keepdims=0),
                                 helper.make_node("ZipMap", ["mean"], ["probabilities"], domain="ai.onnx.ml",
                                                  classlabels_int64s=list(range(17)))])
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
        kind = helper.make_sequence_type_proto(helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
        needles = ["output 'probabilities' is a sequence", "skl2onnx: options={'zipmap': False}"]
    else:
        model.graph.node.append(helper.make_node("Optional", ["heatmaps"], ["probabilities"]))
        kind = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 17, 16, 12]))
        needles = ["output 'probabilities' is an optional, not a tensor"]
    model.graph.output.append(helper.make_value_info("probabilities", kind))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    one_line_exit_2(invoke("inspect", tmp_path / "m.onnx"), "m.onnx", *needles)


def test_calls_of_overloaded_functions_keep_their_overload(tmp_path):
    """IR 10 overloads: `local.Act` is Relu as overload `relu` and Neg as `neg`, the heatmaps Neg(Relu(conv)). Was:
    onnx-graphsurgeon wrote every call without its overload, and the patched model's heatmaps were another overload
    twice (apply exit 0; verify FAILed it)."""
    model = onnx.load(str(pose_model(tmp_path / "m.onnx", input_hw=(64, 48))))
    model.graph.node[0].output[0] = "conv"
    calls = []
    for overload, op, read, made in (("relu", "Relu", "conv", "relu"), ("neg", "Neg", "relu", "heatmaps")):
        function = helper.make_function("local", "Act", ["x"], ["y"], [helper.make_node(op, ["x"], ["y"])],
                                        [helper.make_opsetid("", 17)])
        function.overload = overload
        model.functions.append(function)
        calls.append(helper.make_node("Act", [read], [made], domain="local", name=overload))
        calls[-1].overload = overload
    model.graph.node.extend(calls)
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    apply(POSE, tmp_path / "m.onnx", tmp_path / "p.onnx")
    patched = onnx.load(str(tmp_path / "p.onnx"))
    assert sorted((n.name, n.overload, len(n.attribute)) for n in patched.graph.node if n.domain == "local") == [
        ("neg", "neg", 0), ("relu", "relu", 0)]
    crop = np.random.default_rng(0).integers(0, 256, (1, 64, 48, 3), dtype=np.uint8)
    with open_runner("onnxruntime", tmp_path / "p.onnx") as run:
        heatmaps = run({"input": crop})["heatmaps"]
    assert heatmaps.max() <= 0 and heatmaps.min() < 0  # −Relu(·): the other overload twice was Neg(Neg) or Relu(Relu)
