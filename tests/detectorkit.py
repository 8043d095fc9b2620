"""Small YOLO-shaped detectors and the detector recipe's wrong patches, shared by the detector tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
DETECTOR_RECIPE = ROOT / "recipes" / "yolov8_detector.yaml"


def yolo_head(path: Path, *, h: int, w: int, classes: int, anchors: int, grid: int,
              bounds: tuple[tuple[float, float], ...], score_bias: float = 0.0, head: int = TensorProto.FLOAT,
              v5: bool = False, seed: int = 0) -> Path:
    """A YOLOv8-shaped head [1, 4 + C, A] of element type `head` for an h × w image: boxes (cx, cy, w, h) drawn
    within `bounds`, row by row, moved by the image's `grid` × `grid` means; class scores the sigmoid of a linear map
    of them plus `score_bias` (30: every score 1.0 in float32, or a float32 step below it). `v5`: YOLOv5's layout
    [1, A, 5 + C], its objectness the best class score."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([rng.uniform(low, high, (1, anchors)) for low, high in bounds]).astype(np.float32)
    features = 3 * grid * grid
    constants = [numpy_helper.from_array(base, "base"),
                 numpy_helper.from_array(rng.normal(0, 4, (features, 4 * anchors)).astype(np.float32), "box_weights"),
                 numpy_helper.from_array(rng.normal(0, 3, (features, classes * anchors)).astype(np.float32),
                                         "weights"),
                 numpy_helper.from_array(np.float32(score_bias), "bias"),
                 numpy_helper.from_array(np.array([1, 4, anchors], np.int64), "box_shape"),
                 numpy_helper.from_array(np.array([1, classes, anchors], np.int64), "score_shape")]
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[h // grid, w // grid],
                              strides=[h // grid, w // grid]),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
             helper.make_node("MatMul", ["features", "box_weights"], ["moves"]),
             helper.make_node("Reshape", ["moves", "box_shape"], ["box_moves"]),
             helper.make_node("Add", ["box_moves", "base"], ["xywh"]),
             helper.make_node("MatMul", ["features", "weights"], ["raw"]),
             helper.make_node("Reshape", ["raw", "score_shape"], ["logits"]),
             helper.make_node("Add", ["logits", "bias"], ["biased"]),
             helper.make_node("Sigmoid", ["biased"], ["probabilities"]),
             helper.make_node("Concat", ["xywh", "probabilities"], ["v8"], axis=1)]
    if v5:
        nodes += [helper.make_node("ReduceMax", ["probabilities"], ["objectness"], axes=[1], keepdims=1),
                  helper.make_node("Concat", ["xywh", "objectness", "probabilities"], ["rows"], axis=1),
                  helper.make_node("Transpose", ["rows"], ["head"], perm=[0, 2, 1])]
    else:
        nodes.append(helper.make_node("Identity", ["v8"], ["head"]))
    nodes.append(helper.make_node("Cast", ["head"], ["output0"], to=head))
    shape = [1, anchors, 5 + classes] if v5 else [1, 4 + classes, anchors]
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                [1, 3, h, w])],
                              [helper.make_tensor_value_info("output0", head, shape)], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def wider(right: Path, path: Path) -> Path:
    """The right patch with every box's right edge moved out by 0.5 % of its width (x2' = 1.005 x2 − 0.005 x1): IoU
    0.995 with the right box, and the fill rows (zeros) stay zeros."""
    model = onnx.load(str(right))
    producer = next(node for node in model.graph.node if "boxes" in node.output)
    producer.output[list(producer.output).index("boxes")] = "boxes_right"
    corners = np.eye(4, dtype=np.float32)
    corners[0, 2], corners[2, 2] = -0.005, 1.005
    model.graph.initializer.append(numpy_helper.from_array(corners, "wider"))
    model.graph.node.append(helper.make_node("MatMul", ["boxes_right", "wider"], ["boxes"]))
    onnx.save(model, str(path))
    return path


def with_nms(folder: Path, fmt: str = "v8", **change) -> Path:
    """The detector recipe for a head of `fmt` with its nms's parameters changed, under another name."""
    recipe = yaml.safe_load(DETECTOR_RECIPE.read_text())
    next(entry["nms"] for entry in recipe["output"]["steps"] if "nms" in entry).update(change)
    next(entry["yolo_boxes"] for entry in recipe["output"]["steps"] if "yolo_boxes" in entry)["format"] = fmt
    recipe["name"] += "-mutated"
    path = folder / "mutated.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path
