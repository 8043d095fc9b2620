"""Small models built with onnx helpers, shaped like the ones users bring (HRNet-like pose, classifiers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def pose_model(path: Path, *, opset: int = 17, dynamic_batch: bool = False, ir_version: int | None = None,
               input_hw: tuple[int, int] = (256, 192), stride: int = 4, joints: int = 17, seed: int = 0,
               input_name: str = "input", output_name: str = "heatmaps") -> Path:
    """An HRNet-shaped model: [N,3,H,W] float → Conv(stride) → Relu-free heatmaps [N,K,H/s,W/s]."""
    rng = np.random.default_rng(seed)
    h, w = input_hw
    batch = "N" if dynamic_batch else 1
    weight = numpy_helper.from_array(rng.normal(0, 0.05, (joints, 3, stride, stride)).astype(np.float32), "conv.weight")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, (joints,)).astype(np.float32), "conv.bias")
    node = helper.make_node("Conv", [input_name, "conv.weight", "conv.bias"], [output_name], name="conv",
                            kernel_shape=[stride, stride], strides=[stride, stride])
    graph = helper.make_graph(
        [node], "pose",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, joints, h // stride, w // stride])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="modelkit")
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def pose_model_with_bias(path: Path, *, opset: int = 17) -> Path:
    """`pose_model` with a second real input, `bias` [1, 17, 1, 1], added to the heatmaps: a 4-D input that is not
    the image (the recipe must name its target)."""
    model = onnx.load(str(pose_model(path, opset=opset, output_name="raw")))
    model.graph.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, 17, 1, 1]))
    model.graph.node.append(helper.make_node("Add", ["raw", "bias"], ["heatmaps"], name="add_bias"))
    model.graph.output[0].name = "heatmaps"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def bgr_crops(n: int, hw: tuple[int, int] = (256, 192), seed: int = 0) -> np.ndarray:
    """Random uint8 NHWC BGR crops, as OpenCV would hand them over."""
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)
