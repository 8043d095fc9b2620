"""An application's own YOLOv8 pipeline, the way ultralytics' predict does it (ultralytics/data/augment.py LetterBox,
ultralytics/utils/ops.py non_max_suppression and scale_boxes), written with OpenCV and numpy: what a patched
detector is compared against in the tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def predict(image: np.ndarray, model: Callable[[np.ndarray], np.ndarray], size: tuple[int, int]
            ) -> dict[str, np.ndarray]:
    """Detections as ultralytics' predict makes them, written with OpenCV: LetterBox (round, centred, 114) of the
    BGR `image` to `size` (H, W), `model` (an NCHW RGB float batch → [N, 4 + C, A]), best class per anchor,
    per-class NMS at IoU 0.7 on scores > 0.25 (cv2.dnn.NMSBoxesBatched), the best 300, scale_boxes with one gain,
    clipped; padded to 300 like the recipe's outputs."""
    h, w = image.shape[:2]
    gain = min(size[0] / h, size[1] / w)
    new_w, new_h = round(w * gain), round(h * gain)
    dw, dh = (size[1] - new_w) / 2, (size[0] - new_h) / 2
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    x = np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1)[None], np.float32) / 255
    head = model(x)[0]  # [4 + C, A]
    scores, labels = head[4:].max(axis=0), head[4:].argmax(axis=0)
    corners = np.concatenate([head[:2] - head[2:4] / 2, head[:2] + head[2:4] / 2]).T
    rects = [(float(x1), float(y1), float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in corners]
    kept = np.asarray(cv2.dnn.NMSBoxesBatched(rects, scores.tolist(), labels.tolist(), 0.25, 0.7), int).ravel()[:300]
    boxes = (corners[kept] - [left, top, left, top]) / gain
    boxes = np.clip(boxes, 0, [w, h, w, h])
    out = {"boxes": np.zeros((1, 300, 4), np.float32), "scores": np.zeros((1, 300), np.float32),
           "classes": np.full((1, 300), -1, np.int64), "count": np.array([len(kept)])}
    out["boxes"][0, :len(kept)], out["scores"][0, :len(kept)], out["classes"][0, :len(kept)] = (
        boxes, scores[kept], labels[kept])
    return out
