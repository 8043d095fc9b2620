"""Round 81: `chain --check --backends`, and one graph cut for verify and chain (`cutting.cut_between`).

`chain --check` ran on ONNX Runtime and OpenVINO always; OpenVINO converts no model with a `local` function, and its
refusal's fix named `--backends onnxruntime`, an option chain did not take (round 80's leftover). Verify cut the
patched graph with onnx's Extractor, which follows node inputs alone: a patched model whose decoder calls a local
function in a Loop body was refused (exit 2, a cut ONNX Runtime cannot load), one whose decoder reads through an If
body went unprobed (a wrong one PASSed), and a sparse initializer or a quantization annotation anywhere in the graph
was an internal error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from clikit import one_line_exit_2
from graphsurgery import chaining
from graphsurgery.cli import cli
from graphsurgery.cli.chain import CHAIN_TOLERANCE
from graphsurgery.images import read_image
from test_hostile_eightieth import LOOP_CONSTANTS, _identity_function, _in_a_loop, _spliced
from test_hostile_seventieth import nms_read, read_through, through_an_if

from modelkit import unconvertible

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
POSE_RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
CHAIN = chaining.chain


@pytest.fixture(scope="module")
def looped_pose(chain_patched, tmp_path_factory) -> Path:
    """The chain's pose model with its keypoints made by a local function called in a Loop body (round 80's)."""
    return _spliced(chain_patched["pose"], tmp_path_factory.mktemp("looped") / "pose.onnx", "keypoints", _in_a_loop,
                    [_identity_function("F")], LOOP_CONSTANTS)


def _chain(chain_patched, pose: Path, out: Path, *options):
    return CliRunner().invoke(cli, ["chain", str(chain_patched["detector"]), str(pose), "-o", str(out), *options],
                              terminal_width=250)


# --- 1. chain --check --backends ----------------------------------------------------------------------------------


def test_the_openvino_refusal_names_an_option_chain_takes(chain_patched, tmp_path):
    """Was: the fix `--backends onnxruntime` was "No such option" for chain. Taken as the line gives it, the check
    runs on ONNX Runtime alone and PASSes, the PASS line naming the backend it ran on and no other. (The pose
    model's keypoints made by an op OpenVINO has no rule for: its local function in a Loop body, round 80's, is
    read inlined since stop 54.)"""
    pose = unconvertible(chain_patched["pose"], tmp_path / "pose.onnx", "keypoints")
    refused = _chain(chain_patched, pose, tmp_path / "both.onnx", "--check", PHOTO)
    assert refused.exit_code == 2, refused.output
    fix = re.search(r"ONNX Runtime may still run the model: (--backends \w+)", refused.output)
    assert fix is not None, refused.output
    result = _chain(chain_patched, pose, tmp_path / "chained.onnx", "--check", PHOTO, *fix.group(1).split())
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "PASS: the chained model gives the two models' answers on onnxruntime (1 images," in said
    assert "openvino" not in said[said.index("chained model vs"):]  # not in a table row, nor in the PASS line


def test_a_wrong_chain_still_fails_on_onnxruntime_alone(chain_patched, looped_pose, tmp_path, monkeypatch):
    """A pose constant of the chained model × 1.01 (where its keypoints are scaled to the image): FAIL, exit 1, on
    ONNX Runtime alone, the line saying where it compared; its difference at least what numpy finds on the photo."""
    scaled = "pose/graphsurgery/post/to_image/pixels_per_cell"

    def wrong_chain(detector, pose, out, **options):
        result = CHAIN(detector, pose, out, **options)
        model = onnx.load(str(out))
        tensor = next(t for t in model.graph.initializer if t.name == scaled)
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.01), scaled))
        onnx.save(model, str(out))
        return result

    monkeypatch.setattr(chaining, "chain", wrong_chain)
    out = tmp_path / "chained.onnx"
    result = _chain(chain_patched, looped_pose, out, "--check", PHOTO, "--backends", "onnxruntime")
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "PASS" not in said, result.output
    assert "FAIL: the chained model is not the two models joined: the pose model's constant" in said
    found = re.search(r"FAIL: the chained model differs by up to ([0-9.e+-]+) \(compared on onnxruntime\)", said)
    assert found is not None, said
    image = read_image(PHOTO)[None]
    corners, _, keypoints, _ = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"image": image})
    boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    [alone] = ort.InferenceSession(str(looped_pose), providers=["CPUExecutionProvider"]).run(
        ["keypoints"], {"image": image, "boxes": boxes})
    moved = float(np.abs(keypoints - alone).max())
    assert moved > CHAIN_TOLERANCE and float(found.group(1)) >= moved


@pytest.mark.parametrize("given", ["cuda", ",", "onnxruntime,tensorrt"])
def test_an_unknown_backend_is_one_line(chain_patched, tmp_path, given):
    """As verify says it, before anything is written."""
    out = tmp_path / "chained.onnx"
    result = _chain(chain_patched, chain_patched["pose"], out, "--check", PHOTO, "--backends", given)
    one_line_exit_2(result, "Invalid value for '--backends'", "chain [OPTIONS] DETECTOR POSE")
    assert not out.exists()


def test_backends_without_check_is_refused(chain_patched, tmp_path):
    """No backend runs without --check: `--backends openvino` taken in silence reads as a check that never ran."""
    out = tmp_path / "chained.onnx"
    result = _chain(chain_patched, chain_patched["pose"], out, "--backends", "openvino")
    one_line_exit_2(result, "--backends chooses where --check runs", "add --check IMAGES, or drop --backends")
    assert not out.exists()


def test_verify_chain_takes_backends_as_verify_does(chain_patched, tmp_path):
    """Was: "onnxruntime" iterated into the backends 'o', 'n', … ("unknown backend 'o'")."""
    out = tmp_path / "chained.onnx"
    CHAIN(chain_patched["detector"], chain_patched["pose"], out)
    [row] = chaining.verify_chain(out, chain_patched["detector"], chain_patched["pose"], [read_image(PHOTO)[None]],
                                  backends="onnxruntime")
    assert row["backend"] == "onnxruntime" and row["people"] > 0 and row["keypoints"] == 0.0


# --- 2. verify's cut follows bodies, calls, sparse constants ---------------------------------------------------------


@pytest.fixture(scope="module")
def pose_patch(chain_patched, tmp_path_factory) -> tuple[Path, Path]:
    """(the plain pose model, its right patch by recipes/hrnet_coco_pose.yaml)."""
    from graphsurgery.api import apply

    plain = chain_patched["plain_pose"]
    return plain, apply(POSE_RECIPE, plain, tmp_path_factory.mktemp("pose_patch") / "patched.onnx").output


def _edited(patched: Path, out: Path, edit) -> Path:
    model = onnx.load(str(patched))
    edit(model)
    onnx.save(model, str(out))
    return out


def _verify(plain: Path, patched: Path):
    from graphsurgery.verification import verify

    return verify(POSE_RECIPE, plain, patched=patched, backends=["onnxruntime"])


def _loop_calls_a_function(model: onnx.ModelProto) -> None:
    """The keypoints made by a local function F called in the body of a Loop run once."""
    index, node = next((i, n) for i, n in enumerate(model.graph.node) if "keypoints" in n.output)
    node.output[list(node.output).index("keypoints")] = "keypoints_raw"
    model.graph.node.insert(index + 1, _in_a_loop("keypoints_raw", "keypoints")[0])
    model.graph.initializer.extend(LOOP_CONSTANTS)
    model.functions.append(_identity_function("F"))
    model.opset_import.append(helper.make_opsetid("local", 1))
    onnx.checker.check_model(model, full_check=True)


def _validity_in_an_if(zero: float | None):
    """heatmap_argmax's test of a joint's validity (its maximum > 0) made in an If's branches, which read the maximum
    (a node output nothing else reads) and the 0 (a constant nothing else reads) from the graph around them; `zero`
    for that 0 where given (a wrong decoder: maxima above it count as found)."""
    def edit(model: onnx.ModelProto) -> None:
        index, node = next((i, n) for i, n in enumerate(model.graph.node)
                           if n.name == "graphsurgery/post/heatmap_argmax/Greater_1")
        first, second = node.input
        made = node.output[0]
        del model.graph.node[index]
        if zero is not None:
            tensor = next(t for t in model.graph.initializer if t.name == second)
            tensor.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(tensor), zero), second))
        branches = {key: helper.make_graph([helper.make_node(op, [first, second], [f"{op}_out"])], op, [],
                                           [helper.make_tensor_value_info(f"{op}_out", TensorProto.BOOL, None)])
                    for key, op in (("then_branch", "Greater"), ("else_branch", "Less"))}
        model.graph.node.insert(index, helper.make_node("If", ["go"], [made], name="branch", **branches))
        model.graph.initializer.append(numpy_helper.from_array(np.array(True), "go"))
        onnx.checker.check_model(model, full_check=True)
    return edit


def test_a_decoder_calling_a_function_in_a_loop_body_is_probed(pose_patch, tmp_path):
    """Was: exit 2, "onnxruntime cannot load the model … decoder_probe.onnx … local:F(-1) is not a registered
    function" for a right patch (the Extractor kept no function only a body called)."""
    plain, patched = pose_patch
    report = _verify(plain, _edited(patched, tmp_path / "looped.onnx", _loop_calls_a_function))
    assert report, report.failures()
    assert report.probes and not any("not probed" in note for note in report.notes)


def test_a_decoder_reading_through_an_if_body_is_probed(pose_patch, tmp_path):
    """Was: PASS with "the output steps were not probed", also for a wrong decoder that the probe alone shows (its
    maps of maximum 0 and −0.5 found, not marked invalid): the Extractor dropped the node and the constant only the
    If's branches read. The right one PASSes probed; the wrong one FAILs on the probe."""
    plain, patched = pose_patch
    right = _verify(plain, _edited(patched, tmp_path / "right.onnx", _validity_in_an_if(None)))
    assert right and right.probes and not any("not probed" in note for note in right.notes), right.failures()
    wrong = _verify(plain, _edited(patched, tmp_path / "wrong.onnx", _validity_in_an_if(-1.0)))
    assert not wrong and all(wrong.pairs), wrong.failures()  # the samples alike: the probe decides
    assert not all(wrong.probes)


@pytest.fixture(scope="module")
def detector_patch(tmp_path_factory) -> tuple[Path, Path]:
    """(plain zoo YOLOv8, its right patch by the shipped detector recipe)."""
    from detectorkit import DETECTOR_RECIPE
    from graphsurgery.api import apply

    from modelkit import zoo_model

    folder = tmp_path_factory.mktemp("detector")
    plain = zoo_model(folder / "v8.onnx", "yolov8-tiny", opset=17)
    return plain, apply(DETECTOR_RECIPE, plain, folder / "right.onnx").output


def _half_in_an_if(model: onnx.ModelProto, tensor: str) -> None:
    """What nms reads rounded through float16 in an If's branches, which read it from the graph around them (the
    detections may not move: round 70's wrong step before nms, in a body)."""
    branches = {key: helper.make_graph([helper.make_node("Cast", [tensor], [f"{key}_half"], to=TensorProto.FLOAT16),
                                        helper.make_node("Cast", [f"{key}_half"], [key], to=TensorProto.FLOAT)],
                                       key, [], [helper.make_tensor_value_info(key, TensorProto.FLOAT, None)])
                for key in ("r81_then", "r81_else")}
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "r81_true"))
    read_through(model, tensor, [helper.make_node("If", ["r81_true"], ["r81_read"], then_branch=branches["r81_then"],
                                                  else_branch=branches["r81_else"])], "r81_read")


@pytest.mark.parametrize("edit", [through_an_if, _half_in_an_if])
def test_steps_before_nms_read_through_an_if_body_are_compared_there(detector_patch, tmp_path, edit):
    """Was: not cut at what nms reads (a note, "it needs more than the network output"), nor probed: a step before
    nms rounding through float16 in an If body PASSed. The right one is compared there and PASSes, probed; the wrong
    one FAILs before nms."""
    from detectorkit import DETECTOR_RECIPE
    from graphsurgery.verification import verify

    plain, right = detector_patch
    model = onnx.load(str(right))
    edit(model, nms_read(model)[0])
    onnx.save(model, str(tmp_path / "patched.onnx"))
    report = verify(DETECTOR_RECIPE, plain, patched=tmp_path / "patched.onnx", backends=["onnxruntime"])
    assert report.before_nms and report.probes, report.notes
    assert not any("needs more than the network output" in note or "not probed" in note for note in report.notes)
    if edit is through_an_if:
        assert report, report.failures()
    else:
        assert not report and not all(report.before_nms), report.failures()


def _annotated(model: onnx.ModelProto) -> None:
    annotation = model.graph.quantization_annotation.add(tensor_name="heatmaps")
    annotation.quant_parameter_tensor_names.add(key="SCALE_TENSOR", value="graphsurgery/post/to_image/ratio")


def _unused_sparse(model: onnx.ModelProto) -> None:
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0], np.float32), "r81_sparse"),
        numpy_helper.from_array(np.array([0], np.int64), "r81_sparse_indices"), [3]))


@pytest.mark.parametrize("edit", [_annotated, _unused_sparse])
def test_sparse_constants_and_annotations_are_no_internal_error(pose_patch, tmp_path, edit):
    """Was: exit 3, "len_quantization_annotation is 1, it must be 0" / "len_sparse_initializer is 1" (the Extractor
    cuts no graph holding either). They take no part in what the probe computes: the right patch PASSes, probed."""
    plain, patched = pose_patch
    report = _verify(plain, _edited(patched, tmp_path / "edited.onnx", edit))
    assert report and report.probes, report.failures()


def test_the_cut_keeps_what_bodies_read_and_call_and_computes_as_numpy(tmp_path):
    """`cutting.cut_between` on a graph whose cut part has an If body reading a node output and a constant only it
    reads, and a Loop body calling a function that calls another: the cut's answer is numpy's; the function the cut
    never calls is left out, as the nodes before the start."""
    from graphsurgery.cutting import cut_between

    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3])

    inner = helper.make_function("local", "Inner", ["x"], ["y"], [helper.make_node("Neg", ["x"], ["y"])],
                                 [helper.make_opsetid("", 17)])
    outer = helper.make_function("local", "Outer", ["x"], ["y"], [helper.make_node("Inner", ["x"], ["t"],
                                                                                   domain="local"),
                                                                  helper.make_node("Exp", ["t"], ["y"])],
                                 [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    unused = _identity_function("Unused")
    then = helper.make_graph([helper.make_node("Mul", ["doubled", "scale"], ["then_out"])], "then", [],
                             [value("then_out")])
    otherwise = helper.make_graph([helper.make_node("Neg", ["doubled"], ["else_out"])], "else", [],
                                  [value("else_out")])
    body = helper.make_graph([helper.make_node("Identity", ["go_in"], ["go_out"]),
                              helper.make_node("Outer", ["x_in"], ["x_out"], domain="local")], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("go_in", TensorProto.BOOL, []), value("x_in")],
                             [helper.make_tensor_value_info("go_out", TensorProto.BOOL, []), value("x_out")])
    graph = helper.make_graph([
        helper.make_node("Unused", ["x"], ["before"], domain="local"),
        helper.make_node("Relu", ["before"], ["start"]),
        helper.make_node("Add", ["start", "start"], ["doubled"]),
        helper.make_node("If", ["go"], ["branched"], then_branch=then, else_branch=otherwise),
        helper.make_node("Loop", ["trip", "go", "branched"], ["end"], body=body)], "g", [value("x")],
        [value("end")], [numpy_helper.from_array(np.array(1, np.int64), "trip"),
                         numpy_helper.from_array(np.array(True), "go"),
                         numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "scale")],
        value_info=[value("start")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[inner, outer, unused])
    onnx.checker.check_model(model, full_check=True)
    start = np.random.default_rng(81).normal(size=(2, 3)).astype(np.float32)
    assert cut_between(model, [], {"start": start}, ["end"], tmp_path / "cut.onnx")
    cut = onnx.load(str(tmp_path / "cut.onnx"))
    onnx.checker.check_model(cut, full_check=True)
    assert sorted(f.name for f in cut.functions) == ["Inner", "Outer"]
    assert [node.op_type for node in cut.graph.node] == ["Add", "If", "Loop"]
    [got] = ort.InferenceSession(str(tmp_path / "cut.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"start": start})
    np.testing.assert_allclose(got, np.exp(-(start + start) * np.float32(0.5)), rtol=1e-6)
