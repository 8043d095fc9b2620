"""verify compares the network input each patched graph computes with the input steps' twins, for every recipe.

Outputs alone let an input step slightly off pass: round 45 mutated the recipe of RapidOCR's trained orientation
classifier, and one channel's mean 0.04 % off (0.4998 for 0.5) PASSed on every sample, its probabilities within the
float tolerance. The network input itself is 4e-4 off, four times the float floor (`staged`).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from graphsurgery.api import apply
from graphsurgery.irconvert import convert
from graphsurgery.modelio import load_model
from graphsurgery.staged import exposed_copy
from graphsurgery.verification import verify

import quirkykit
from modelkit import wheel_model

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER_RECIPE = ROOT / "recipes" / "rapidocr_cls.yaml"
POSE_RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"


@pytest.fixture(scope="module")
def classifier() -> Path:
    """The trained classifier inside the pinned rapidocr wheel."""
    return wheel_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")


@pytest.mark.parametrize("change", [("mean: [0.5, 0.5, 0.5]", "mean: [0.4998, 0.5, 0.5]"),
                                    ("mean: [0.5, 0.5, 0.5]", "mean: [0.5, 0.5, 0.4999]"),
                                    ("std: [0.5, 0.5, 0.5]", "std: [0.5, 0.5, 0.5001]")],
                         ids=["mean 0.04 %", "mean 0.02 %", "std 0.02 %"])
def test_an_input_step_a_little_off_fails_on_the_network_input_where_the_outputs_agree(classifier, tmp_path, change):
    """Each of these PASSed before (round 45's survivors): the trained model's outputs agree within the floor."""
    wrong_recipe = tmp_path / "wrong.yaml"
    text = CLASSIFIER_RECIPE.read_text()
    assert change[0] in text
    wrong_recipe.write_text(text.replace(change[0], change[1]))
    wrong = apply(wrong_recipe, classifier, tmp_path / "wrong.onnx").output
    report = verify(CLASSIFIER_RECIPE, classifier, patched=wrong, random=2, backends=("onnxruntime", "openvino"))
    assert not report
    assert all(report.pairs), report.failures()  # the outputs alone: within the floor
    assert [pair.name for pair in report.input_steps] == ["onnxruntime: input steps", "openvino: input steps"]
    assert not any(report.input_steps)
    assert all("x (network input)" in line for line in report.failures()), report.failures()


def test_the_right_patch_passes_the_network_input_on_both_backends(classifier, tmp_path):
    right = apply(CLASSIFIER_RECIPE, classifier, tmp_path / "right.onnx").output
    report = verify(CLASSIFIER_RECIPE, classifier, patched=right, random=2)
    assert report, report.failures()
    assert len(report.input_steps) == 2 and all(report.input_steps)
    assert report.to_dict()["input_steps"][0]["outputs"][0]["output"] == "x (network input)"


def test_the_copy_that_exposes_the_network_input_holds_the_input_steps_alone(plain, tmp_path):
    """Each backend runs the input steps once more, not the network: no node or weight of the model is in the copy."""
    patched = apply(POSE_RECIPE, plain, tmp_path / "patched.onnx").output
    network_input = onnx.load(str(plain)).graph.input[0]
    exposed = exposed_copy(load_model(patched), network_input, tmp_path, onnx.load(str(plain)).graph)
    assert exposed is not None
    graph = onnx.load(str(exposed.model)).graph
    assert graph.node and all(node.name.startswith("graphsurgery/pre/") for node in graph.node)
    assert [output.name for output in graph.output] == [exposed.tensor]
    model_weights = {init.name for init in onnx.load(str(plain)).graph.initializer}
    assert not model_weights & {init.name for init in graph.initializer}


def test_a_patched_ir_says_its_network_input_was_not_compared(plain, tmp_path):
    patched = apply(POSE_RECIPE, plain, tmp_path / "patched.onnx").output
    xml = convert(patched, tmp_path / "patched.xml").xml
    report = verify(POSE_RECIPE, plain, patched=xml, random=2, backends=("openvino",))
    assert report, report.failures()
    assert not report.input_steps
    assert any(note.startswith("the network input was not compared") and "IR" in note for note in report.notes)


def test_input_steps_ending_in_another_element_type_are_compared_not_refused(plain, tmp_path):
    """A patched graph whose input steps end in a float16 Cast (and a Cast back inside the network): the copy
    declared the plain model's float32 there, and verify stopped at "onnxruntime cannot load" a temporary file the
    user never gave. Now the float16 network input is compared, and its rounding (1e-3 at values near 2) fails."""
    patched = onnx.load(str(apply(POSE_RECIPE, plain, tmp_path / "patched.onnx").output))
    graph = patched.graph
    made = {name for node in graph.node if node.name.startswith("graphsurgery/pre/") for name in node.output}
    first = next(node for node in graph.node if not node.name.startswith("graphsurgery/") and made & set(node.input))
    tensor = next(name for name in first.input if name in made)
    for node in graph.node:
        if not node.name.startswith("graphsurgery/"):
            node.input[:] = [f"{tensor}_f" if name == tensor else name for name in node.input]
    at = list(graph.node).index(first)
    graph.node.insert(at, helper.make_node("Cast", [f"{tensor}_h"], [f"{tensor}_f"], to=TensorProto.FLOAT))
    graph.node.insert(at, helper.make_node("Cast", [tensor], [f"{tensor}_h"], to=TensorProto.FLOAT16,
                                           name="graphsurgery/pre/half"))
    onnx.save(patched, str(tmp_path / "half.onnx"))
    report = verify(POSE_RECIPE, plain, patched=tmp_path / "half.onnx", random=2, backends=("onnxruntime",))
    assert not report and len(report.input_steps) == 1 and not report.input_steps[0]
    assert 5e-4 < report.input_steps[0].results[0].max_abs < 2e-3


def test_the_cut_copy_of_a_model_that_lists_its_weights_as_inputs_asks_only_for_the_callers(tmp_path):
    """An IR-3 model lists its weights among its inputs: cut to the input steps without them, the copy would have
    required the network's weights as inputs (the runtime's "missing input"), so those the cut drops go too."""
    plain = quirkykit.pose(tmp_path / "ir3.onnx")
    weights = {tensor.name for tensor in onnx.load(str(plain)).graph.initializer}
    assert weights & {value.name for value in onnx.load(str(plain)).graph.input}  # listed among the inputs
    patched = apply(POSE_RECIPE, plain, tmp_path / "patched.onnx").output
    plain_graph = onnx.load(str(plain)).graph
    copy = onnx.load(str(exposed_copy(load_model(patched), plain_graph.input[0], tmp_path, plain_graph).model)).graph
    inputs = {value.name for value in copy.input}
    assert not inputs & weights
    assert inputs - {tensor.name for tensor in copy.initializer} == {onnx.load(str(patched)).graph.input[0].name}
    report = verify(POSE_RECIPE, plain, patched=patched, random=2, backends=("onnxruntime",))
    assert report and len(report.input_steps) == 1, report.failures()


def test_a_node_reading_an_earlier_tensor_of_the_input_steps_leaves_the_network_input_compared(plain, tmp_path):
    """A node outside the spliced chain that also reads an earlier tensor of the input steps (and feeds nothing)
    does not hide the network input: it is the tensor the plain model's own first node reads (round 51; before,
    verify gave up comparing it and compared the outputs alone)."""
    patched = onnx.load(str(apply(POSE_RECIPE, plain, tmp_path / "patched.onnx").output))
    first = next(node for node in patched.graph.node if node.name.startswith("graphsurgery/pre/"))
    patched.graph.node.append(helper.make_node("Identity", [first.output[0]], ["spy"], name="spy"))
    onnx.save(patched, str(tmp_path / "two.onnx"))
    report = verify(POSE_RECIPE, plain, patched=tmp_path / "two.onnx", random=2, backends=("onnxruntime",))
    assert report and len(report.input_steps) == 1, report.failures()
    assert not any("network input was not compared" in note for note in report.notes), report.notes


def test_the_cut_copy_declares_the_plain_models_type_where_shape_inference_fails(plain, tmp_path, monkeypatch):
    patched = apply(POSE_RECIPE, plain, tmp_path / "patched.onnx").output

    def failing(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("no inference here")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", failing)
    network_input = onnx.load(str(plain)).graph.input[0]
    exposed = exposed_copy(load_model(patched), network_input, tmp_path, onnx.load(str(plain)).graph)
    output = onnx.load(str(exposed.model)).graph.output[0]
    assert output.type.tensor_type.elem_type == network_input.type.tensor_type.elem_type == TensorProto.FLOAT
