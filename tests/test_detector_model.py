"""The zoo's YOLOv8-shaped detector (examples/zoo, seeded weights): its ONNX export computes what torch computes, its
boxes are ultralytics' DFL decoding redone in numpy, and its scores leave the detection recipes something to compare
(candidates above 0.25, some of them same-class boxes that NMS must choose between)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from graphsurgery.images import read_image
from graphsurgery.runners import open_runner

ROOT = Path(__file__).resolve().parent.parent
TINY = "yolov8-tiny"  # input 128×160 (H×W): a non-square anchor grid, 16·20 + 8·10 + 4·5 = 420 anchors


def random_pixels(size: tuple[int, int], batch: int = 1) -> np.ndarray:
    """Seeded uint8 pixels as a detector is fed them: NCHW float32 in [0, 1]."""
    pixels = np.random.default_rng(0).integers(0, 256, (batch, 3, *size), dtype=np.uint8)
    return (pixels / np.float32(255)).astype(np.float32)


def astronaut(size: tuple[int, int]) -> np.ndarray:
    import cv2

    rgb = np.ascontiguousarray(read_image(ROOT / "examples" / "images" / "astronaut.jpg")[..., ::-1])
    return (cv2.resize(rgb, size[::-1]).transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


def torch_outputs(name: str, x: np.ndarray):
    """The model's `output0` and its raw per-level head outputs, as numpy."""
    import torch

    from examples.zoo.models import build_zoo_model

    model = build_zoo_model(name)
    with torch.no_grad():
        heads = [(box.numpy(), cls.numpy()) for box, cls in model.head_outputs(torch.from_numpy(x))]
        return model(torch.from_numpy(x)).numpy(), heads


@pytest.mark.parametrize("opset", [11, 17])
def test_export_computes_what_torch_computes(opset, tmp_path):
    from examples.zoo.export import export_zoo

    path = export_zoo(tmp_path / "yolov8.onnx", TINY, opset=opset, dynamic_batch=True)
    declared = onnx.load(str(path)).graph.output[0]
    assert declared.name == "output0"
    assert [d.dim_param or d.dim_value for d in declared.type.tensor_type.shape.dim] == ["N", 84, 420]
    x = random_pixels((128, 160), batch=2)
    want, _ = torch_outputs(TINY, x)
    with open_runner("onnxruntime", path) as run:
        got = run({"input": x})["output0"]
    assert got.shape == want.shape == (2, 84, 420)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_boxes_are_ultralytics_dfl_decoding_in_numpy():
    """Softmax over 16 bins per side, expectation → (l, t, r, b) in strides about the cell centre (col + 0.5,
    row + 0.5); cx, cy, w, h from the corners, times the stride; stride-8 cells first, row-major."""
    out, heads = torch_outputs(TINY, random_pixels((128, 160), batch=2))
    boxes, scores = [], []
    for stride, (box, cls) in zip((8, 16, 32), heads):
        n, _, h, w = box.shape
        assert (h, w) == (128 // stride, 160 // stride)
        logits = box.astype(np.float64).reshape(n, 4, 16, h, w)
        p = np.exp(logits - logits.max(2, keepdims=True))
        left, top, right, bottom = ((p / p.sum(2, keepdims=True)) * np.arange(16)[:, None, None]).sum(2).swapaxes(0, 1)
        ax, ay = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # [h, w] each
        x1, y1, x2, y2 = ax - left, ay - top, ax + right, ay + bottom
        boxes.append((np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1) * stride).reshape(n, 4, h * w))
        scores.append(1 / (1 + np.exp(-cls.astype(np.float64).reshape(n, 80, h * w))))
    np.testing.assert_allclose(out[:, :4], np.concatenate(boxes, 2), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out[:, 4:], np.concatenate(scores, 2), rtol=1e-5, atol=1e-6)


def same_class_overlaps(out: np.ndarray, threshold: float = 0.25, iou: float = 0.5) -> int:
    """Pairs of candidates of one class whose boxes overlap at more than `iou`: what NMS has to settle."""
    cx, cy, w, h = out[0, :4]
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    pairs = 0
    for scores in out[0, 4:]:
        b = corners[scores > threshold]
        lo, hi = np.maximum(b[:, None, :2], b[None, :, :2]), np.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = np.clip(hi - lo, 0, None).prod(2)
        area = (b[:, 2:] - b[:, :2]).prod(1)
        pairs += int(np.triu(inter / (area[:, None] + area[None] - inter) > iou, 1).sum())
    return pairs


@pytest.mark.parametrize("name", [TINY, "yolov8"])
@pytest.mark.parametrize("image", ["random", "astronaut"])
def test_seeded_scores_give_candidates_for_nms(name, image):
    from examples.zoo.models import PRESETS

    size = PRESETS[name].input_size
    out, _ = torch_outputs(name, random_pixels(size) if image == "random" else astronaut(size))
    assert 1 <= (out[:, 4:] > 0.25).sum() <= 1000
    assert same_class_overlaps(out) >= 5
