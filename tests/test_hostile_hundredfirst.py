"""Round 101: never double-apply a step, the input side.

Many models prepare their own input inside the graph: Keras' `Rescaling(1/255)` and `Normalization` exported by
tf2onnx (after a Transpose), a torch forward's `x / 255.0` or `(x - mean) / std`, a BGR ↔ RGB flip, a Cast of a
uint8 input. `recipes/imagenet_classifier.yaml` copied onto such a model scaled and normalized the image a second
time, without a word, and verify PASSed it (its numpy twin applies the same steps). The splice now refuses the
recipe steps that do again what the model does itself, naming the model's node, the step and the fix (`--force`
applies them anyway, noted on apply and in verify's report), and `inspect` shows what a model does to its input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.verification import verify

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
#: the imagenet recipe's input steps, without its resize (the models here are 16 × 16)
IMAGENET = """version: 1
name: imagenet-like
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: %s, color: RGB}
  steps:
    - cast: {}
%s    - scale: {divide: 255}
    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
"""
NCHW_RECIPE = IMAGENET % ("NCHW", "    - layout: {to: NCHW}\n")
NHWC_RECIPE = IMAGENET % ("NHWC", "")
BGR_RECIPE = """version: 1
name: bgr
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NCHW, color: BGR}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - reverse_channels: {}
"""


class Net:
    """A small classifier whose first nodes are written by the test: `prelude(net, "image")` returns the tensor the
    network's Conv reads; `after_conv` puts a Mul by 1/255 after the Conv (inside the network)."""

    def __init__(self):
        self.nodes, self.inits, self.inputs = [], [], []

    def const(self, name: str, value, *, as_node: bool = False) -> str:
        array = np.asarray(value, np.float32)
        if as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name)))
        else:
            self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{output}_node", **attrs))
        return output


def build(path: Path, prelude, *, shape=(1, 3, 16, 16), element=TensorProto.FLOAT, after_conv: bool = False,
          extra_input: bool = False) -> Path:
    net = Net()
    net.inputs.append(helper.make_tensor_value_info("image", element, list(shape)))
    if extra_input:
        net.inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 3, 1, 1]))
    ready = prelude(net, "image")
    rng = np.random.default_rng(0)
    weight = net.const("w", rng.normal(0, 0.3, (8, 3, 3, 3)))
    x = net.op("Conv", [ready, weight], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    if after_conv:
        x = net.op("Mul", [x, net.const("inside", 1 / 255)], "scaled_inside")
    x = net.op("GlobalAveragePool", [x], "pool")
    x = net.op("Flatten", [x], "flat", axis=1)
    net.op("MatMul", [x, net.const("dense", rng.normal(0, 0.5, (8, 10)))], "logits")
    graph = helper.make_graph(net.nodes, "net", net.inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], net.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hundredfirst")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def channel(values) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(1, 3, 1, 1)


def keras(net: Net, x: str) -> str:
    """tf2onnx's Keras model: NHWC input, Transpose, Rescaling(1/255) as Mul, Normalization as Sub and Div."""
    x = net.op("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    x = net.op("Mul", [x, net.const("rescaling/scale", 1 / 255)], "rescaled")
    x = net.op("Sub", [x, net.const("normalization/mean", channel(MEAN), as_node=True)], "centred")
    return net.op("Div", [x, net.const("normalization/std", channel(STD))], "normalized")


def torch_div(net: Net, x: str) -> str:
    return net.op("Div", [x, net.const("two_five_five", 255.0, as_node=True)], "scaled")


def torch_mean_std(net: Net, x: str) -> str:
    x = net.op("Sub", [x, net.const("mean", channel(MEAN))], "centred")
    return net.op("Div", [x, net.const("std", channel(STD))], "normalized")


def caffe_mean_std(net: Net, x: str) -> str:
    """A mean and std in pixel units (Caffe's, mmcv's): the model takes 0–255, so a `scale` doubles too."""
    x = net.op("Sub", [x, net.const("mean", channel([123.675, 116.28, 103.53]))], "centred")
    return net.op("Div", [x, net.const("std", channel([58.395, 57.12, 57.375]))], "normalized")


def refused(recipe_text: str, plain: Path, tmp_path: Path, *needles: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text)
    out = tmp_path / "patched.onnx"
    one_line_exit_2(invoke("apply", recipe, plain, "-o", out), *needles)
    assert not out.exists()


def test_a_keras_model_that_rescales_and_normalizes_after_its_transpose_refuses_the_imagenet_steps(tmp_path):
    plain = build(tmp_path / "keras.onnx", keras, shape=(1, 16, 16, 3))
    refused(NHWC_RECIPE, plain, tmp_path, "divides by 255 (Mul node 'rescaled_node')", "subtracts [0.485",
            "Sub node 'centred_node'", "`scale` and `normalize` steps would do it again",
            "fix: drop the `scale` and `normalize` steps", "--force")


def test_the_imagenet_recipe_as_shipped_is_refused_on_a_model_that_normalizes_itself(tmp_path):
    """The user's case: `recipes/imagenet_classifier.yaml` copied as it is onto a torch model whose forward does
    `(x / 255 - mean) / std`."""
    def prelude(net, x):
        return torch_mean_std(net, torch_div(net, x))

    plain = build(tmp_path / "torch.onnx", prelude, shape=(1, 3, 224, 224))
    one_line_exit_2(invoke("apply", ROOT / "recipes" / "imagenet_classifier.yaml", plain, "--dry-run"),
                    "divides by 255 (Div node 'scaled_node')", "divides by [0.229, 0.224, 0.225]",
                    "drop the `scale` and `normalize` steps")


def test_a_layout_step_before_a_model_that_transposes_itself_is_refused(tmp_path):
    """Its dims unknown, the channel-last input is no longer caught by its 3 at the end: the Transpose says it."""
    plain = build(tmp_path / "keras.onnx", keras, shape=("N", "H", "W", "C"))
    refused(NCHW_RECIPE, plain, tmp_path, "transposes NHWC → NCHW (Transpose node 'nchw_node')",
            "`layout`, `scale` and `normalize` steps", "set `model: {layout: NHWC}` in the input section")


@pytest.mark.parametrize("prelude, needle, dropped", [
    (torch_div, "divides by 255 (Div node 'scaled_node')", "drop the `scale` and `normalize` steps"),
    (torch_mean_std, "subtracts [0.485, 0.456, 0.406] (Sub node 'centred_node')", "drop the `normalize` step "),
    (caffe_mean_std, "subtracts [123.7, 116.3, 103.5] (Sub node 'centred_node')",
     "drop the `scale` and `normalize` steps"),
], ids=["x/255", "(x-mean)/std", "pixel-mean"])
def test_a_torch_model_that_scales_or_normalizes_in_its_forward_is_refused(tmp_path, prelude, needle, dropped):
    """A model taking 0–1 values that normalizes them itself keeps the recipe's `scale`: only `normalize` doubles."""
    plain = build(tmp_path / "torch.onnx", prelude)
    refused(NCHW_RECIPE, plain, tmp_path, needle, dropped)
    fixed = tmp_path / "fixed.yaml"  # the fix as the line words it
    fixed.write_text("\n".join(line for line in NCHW_RECIPE.splitlines()
                               if not any(f"- {name}:" in line for name in ("scale", "normalize")
                                          if f"`{name}`" in dropped)))
    result = invoke("apply", fixed, plain, "--dry-run")
    assert result.exit_code == 0 and "note" not in result.output, result.output


def _reversals():
    def gather(net, x):
        net.inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "order"))
        return net.op("Gather", [x, "order"], "rgb", axis=1)

    def slice_back(net, x):
        for name, value in (("starts", [-1]), ("ends", [-(2**63) + 1]), ("axes", [1]), ("steps", [-1])):
            net.inits.append(numpy_helper.from_array(np.array(value, np.int64), name))
        return net.op("Slice", [x, "starts", "ends", "axes", "steps"], "rgb")

    def split_concat(net, x):
        net.nodes.append(helper.make_node("Split", [x], ["b", "g", "r"], name="split_node", axis=1))
        return net.op("Concat", ["r", "g", "b"], "rgb", axis=1)

    return [gather, slice_back, split_concat]


@pytest.mark.parametrize("prelude", _reversals(), ids=["Gather", "Slice", "Split+Concat"])
def test_reverse_channels_before_a_model_that_reverses_them_itself_is_refused(tmp_path, prelude):
    plain = build(tmp_path / "flip.onnx", prelude)
    node = "Split node 'split_node'" if "split" in prelude.__name__ else "node 'rgb_node'"
    refused(BGR_RECIPE, plain, tmp_path, "reverses the channels (BGR ↔ RGB)", node,
            "drop the `reverse_channels` step")


def test_a_uint8_model_that_casts_and_scales_itself_refuses_the_cast_and_the_scale(tmp_path):
    def prelude(net, x):
        x = net.op("Cast", [x], "pixels", to=TensorProto.FLOAT)
        return net.op("Div", [x, net.const("k", 255.0)], "scaled")

    plain = build(tmp_path / "uint8.onnx", prelude, element=TensorProto.UINT8)
    refused(NCHW_RECIPE, plain, tmp_path, "casts uint8 to float (Cast node 'pixels_node')",
            "divides by 255 (Div node 'scaled_node')", "drop the `cast`, `scale` and `normalize` steps")


def test_force_applies_them_with_a_note_that_apply_and_verify_repeat_and_inspect_shows_why(tmp_path):
    plain = build(tmp_path / "torch.onnx", torch_div)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(NCHW_RECIPE)
    result = invoke("apply", recipe, plain, "-o", tmp_path / "patched.onnx", "--force")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "note: the model already prepares its input 'image' itself: it divides by 255" in said
    assert "applied, as --force asked" in said
    report = verify(recipe, plain, patched=tmp_path / "patched.onnx", random=2, backends=("onnxruntime",))
    assert any("divides by 255" in note and "verify's twin applies them too" in note for note in report.notes)
    shown = " ".join(invoke("inspect", plain).output.split())
    assert "input 'image' is prepared inside the model: divides by 255 (Div node 'scaled_node')" in shown
    info = json.loads(invoke("inspect", plain, "--json").output)
    assert info["own_input_steps"] == {"image": ["divides by 255 (Div node 'scaled_node')"]}


def test_the_python_api_refuses_as_the_cli_does(tmp_path):
    plain = build(tmp_path / "torch.onnx", torch_div)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(NCHW_RECIPE)
    with pytest.raises(GraphsurgeryError, match="would do it again"):
        apply(recipe, plain, tmp_path / "patched.onnx")
    with pytest.raises(GraphsurgeryError, match="would do it again"):  # verify builds it with apply
        verify(recipe, plain, random=2, backends=("onnxruntime",))
    assert apply(recipe, plain, tmp_path / "patched.onnx", force=True).plan.notes


# No false alarms: these pass before the fix too; they guard the detector's care.

def _offset_input(net, x):
    return net.op("Sub", [x, "offset"], "centred")


def _computed_mean(net, x):
    mean = net.op("ReduceMean", [x], "mean", axes=[2, 3], keepdims=1)
    return net.op("Sub", [x, mean], "centred")


@pytest.mark.parametrize("prelude, options", [
    (lambda net, x: x, {}),
    (_offset_input, {"extra_input": True}),
    (lambda net, x: x, {"after_conv": True}),
], ids=["conv-first", "sub-of-an-input", "mul-after-the-conv"])
def test_no_false_alarm_where_the_model_does_not_prepare_its_input(tmp_path, prelude, options):
    plain = build(tmp_path / "plain.onnx", prelude, **options)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(NCHW_RECIPE + ("  target: image\n" if options.get("extra_input") else ""))
    result = invoke("apply", recipe, plain, "-o", tmp_path / "patched.onnx")
    assert result.exit_code == 0 and "prepares its input" not in result.output, result.output
    assert "prepared inside" not in invoke("inspect", plain).output


def test_no_false_alarm_on_a_sub_of_a_computed_value_nor_on_the_pose_model(tmp_path):
    from graphsurgery.own_input_steps import own_input_steps

    assert own_input_steps(onnx.load(str(build(tmp_path / "m.onnx", _computed_mean))), "image") == []
    assert own_input_steps(onnx.load(str(pose_model(tmp_path / "pose.onnx"))), "input") == []
