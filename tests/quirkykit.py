"""Models as they come from elsewhere, with the quirks of old exporters, built with onnx helpers, and the parity
check every model patched in these tests must pass (`assert_parity`).

Every model here has tensor names with `/` and `:` (TensorFlow style), nodes without names, a symbolic batch
dim and initializers also listed as graph inputs (what IR 3 required and some exporters still do). Options add
the other quirks: IR 3 with opset 9, channel-last (NHWC) inputs, symbolic height and width, a second input, an
output that other nodes also consume, a model that already ends in Softmax.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphsurgery.compare import compare_output
from graphsurgery.model import ModelFacts, real_inputs
from graphsurgery.recipe import Recipe
from graphsurgery.runners import BACKENDS, open_runner
from graphsurgery.twins import comparisons, run_unpatched

IMAGE = "image:0"
TEMPERATURE = "temperature:0"
LOGITS = "logits/BiasAdd:0"
PROBABILITIES = "probabilities/Softmax:0"
HEATMAPS = "heatmaps/BiasAdd:0"


class _Builder:
    """Collects unnamed nodes and initializers (also listed as inputs) for one quirky graph."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], std: float) -> str:
        self.weights.append(numpy_helper.from_array(self.rng.normal(0, std, shape).astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))  # no name, as some exporters write
        return output

    def image_input(self, layout: str, hw: tuple[int, int] | None) -> tuple[onnx.ValueInfoProto, str]:
        """The image input and the NCHW tensor the network reads (a Transpose for NHWC)."""
        h, w = hw if hw is not None else ("height", "width")
        shape = ["batch_size", 3, h, w] if layout == "NCHW" else ["batch_size", h, w, 3]
        value = helper.make_tensor_value_info(IMAGE, TensorProto.FLOAT, shape)
        if layout == "NCHW":
            return value, IMAGE
        return value, self.node("Transpose", [IMAGE], "transpose/perm:0", perm=[0, 3, 1, 2])

    def save(self, path: Path, inputs, outputs, *, opset: int, ir_version: int) -> Path:
        listed = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.weights]
        graph = helper.make_graph(self.nodes, "quirky", [*inputs, *listed], outputs, self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="quirkykit")
        model.ir_version = ir_version
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(path))
        return path


def classifier(path: Path, *, opset: int = 9, ir_version: int = 3, layout: str = "NCHW",
               hw: tuple[int, int] | None = (32, 32), classes: int = 10, ends_in_softmax: bool = False,
               temperature_input: bool = False, shared_output: bool = False, seed: int = 0) -> Path:
    """A small CNN classifier: image [N,3,H,W] (or NHWC) → two stride-2 convs → global pooling → logits [N, classes].

    `ends_in_softmax`: the only output is softmax probabilities. `temperature_input`: a second input
    `temperature:0` [1] divides the logits. `shared_output`: the logits are an output and also feed a Softmax
    whose probabilities are a second output.
    """
    b = _Builder(seed)
    image, x = b.image_input(layout, hw)
    x = b.node("Conv", [x, b.weight("conv1/kernel:0", (8, 3, 3, 3), 0.3), b.weight("conv1/bias:0", (8,), 0.1)],
               "conv1/BiasAdd:0", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.node("Relu", [x], "conv1/Relu:0")
    x = b.node("Conv", [x, b.weight("conv2/kernel:0", (16, 8, 3, 3), 0.2), b.weight("conv2/bias:0", (16,), 0.1)],
               "conv2/BiasAdd:0", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.node("Relu", [x], "conv2/Relu:0")
    x = b.node("GlobalAveragePool", [x], "pool/Mean:0")
    x = b.node("Flatten", [x], "flatten/Reshape:0", axis=1)
    dense = "dense/MatMul:0" if temperature_input else LOGITS
    b.node("Gemm", [x, b.weight("dense/kernel:0", (classes, 16), 1.0), b.weight("dense/bias:0", (classes,), 0.5)],
           dense, transB=1)
    inputs = [image]
    if temperature_input:
        inputs.append(helper.make_tensor_value_info(TEMPERATURE, TensorProto.FLOAT, [1]))
        b.node("Div", [dense, TEMPERATURE], LOGITS)
    outputs = []
    logits_info = helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch_size", classes])
    if ends_in_softmax or shared_output:
        b.node("Softmax", [LOGITS], PROBABILITIES, axis=1)
        if shared_output:
            outputs.append(logits_info)
        outputs.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch_size", classes]))
    else:
        outputs.append(logits_info)
    return b.save(path, inputs, outputs, opset=opset, ir_version=ir_version)


def pose(path: Path, *, opset: int = 9, ir_version: int = 3, layout: str = "NCHW", hw: tuple[int, int] = (64, 48),
         joints: int = 17, stride: int = 4, seed: int = 0) -> Path:
    """A heatmap model: image [N,3,H,W] (or NHWC) → one stride-`stride` conv → heatmaps [N, joints, H/s, W/s]."""
    b = _Builder(seed)
    image, x = b.image_input(layout, hw)
    b.node(
        "Conv",
        [x, b.weight("head/kernel:0", (joints, 3, stride, stride), 0.05), b.weight("head/bias:0", (joints,), 0.1)],
        HEATMAPS,
        kernel_shape=[stride, stride],
        strides=[stride, stride],
    )
    heatmaps = helper.make_tensor_value_info(HEATMAPS, TensorProto.FLOAT,
                                             ["batch_size", joints, hw[0] // stride, hw[1] // stride])
    return b.save(path, [image], [heatmaps], opset=opset, ir_version=ir_version)


def assert_parity(recipe: Recipe, plain: Path, patched: Path, images: np.ndarray, *,
                  other: dict[str, np.ndarray] | None = None, extras: dict[str, np.ndarray] | None = None
                  ) -> dict[str, dict[str, np.ndarray]]:
    """On every backend, the patched model answers as the plain model (on the same backend) between the recipe's
    numpy twins, output by output as the recipe declares (indices exactly). `other`: the plain model's other
    inputs, fed to both; `extras`: the inputs the output steps add. Returns the patched outputs by backend."""
    proto = onnx.load(str(plain), load_external_data=False)
    facts = ModelFacts.of(proto, recipe)
    plain_input = recipe.input.target or real_inputs(proto)[0]
    patched_input = recipe.input.name or plain_input
    other, extras = other or {}, extras or {}
    answers = {}
    for backend in BACKENDS:
        with open_runner(backend, plain) as run_plain, open_runner(backend, patched) as run_patched:
            want = run_unpatched(recipe, facts, lambda x: run_plain({plain_input: x, **other}),
                                 images, extras)
            got = run_patched({patched_input: images, **other, **extras})
        for name, comparison in comparisons(recipe, facts).items():
            result = compare_output(name, got[name], want[name], comparison)
            assert result, f"{backend}: {name}: {result.summary()}"
        answers[backend] = got
    return answers
