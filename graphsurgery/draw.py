"""Debug images for pose results: the COCO skeleton over the photo, and a montage of each person's heatmaps.

The classic pipeline saved such images; they are how a person sees at a glance that the keypoints land on joints
(or, with stand-in weights, that they do not). Everything is drawn with OpenCV on uint8 BGR images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphsurgery.cocoformat import KEYPOINT_NAMES, SKELETON
from graphsurgery.images import opencv

LEFT, RIGHT, CENTRE = (255, 128, 0), (0, 128, 255), (0, 220, 0)  # BGR: left side blue, right side orange
MONTAGE_COLUMNS = 6
MONTAGE_MAX_PERSONS = 16
FAR = 2**20  # drawn coordinates are clipped to ±FAR pixels (`_point`)


def _side_colour(joint: int) -> tuple[int, int, int]:
    name = KEYPOINT_NAMES[joint] if joint < len(KEYPOINT_NAMES) else ""
    return LEFT if name.startswith("left") else RIGHT if name.startswith("right") else CENTRE


def draw_skeleton(image: np.ndarray, boxes: Sequence[Sequence[float]], keypoints: Sequence[np.ndarray],
                  scores: Sequence[np.ndarray], min_score: float, label: str = "") -> np.ndarray:
    """A copy of `image` with each person's box, the joints scoring above `min_score`, the limbs between them, and
    `label` (how the keypoints were computed: backend, precision) in the top-left corner."""
    cv2 = opencv()

    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 300))
    if label:  # at most 60 % of the image wide
        unit_width = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0]
        font_scale = min(thickness * 0.5, 0.6 * image.shape[1] / unit_width)
        (width, height), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        cv2.rectangle(canvas, (0, 0), (width + 8, height + base + 8), (0, 0, 0), -1)
        cv2.putText(canvas, label, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    for box, points, score in zip(boxes, keypoints, scores):
        x, y, w, h = box
        cv2.rectangle(canvas, _point((x, y)), _point((x + w, y + h)), (200, 200, 200), thickness)
        # NaN compares False: never drawn; in float64, as a float32 score against `--min-score 1e308` overflowed in
        # the cast (a RuntimeWarning on stderr; an internal error under PYTHONWARNINGS=error)
        shown = np.asarray(score, dtype=np.float64) > min_score
        for a, b in SKELETON:
            if a < len(points) and b < len(points) and shown[a] and shown[b]:
                cv2.line(canvas, _point(points[a]), _point(points[b]), _side_colour(b), thickness, cv2.LINE_AA)
        for joint, point in enumerate(points):
            if shown[joint]:
                cv2.circle(canvas, _point(point), thickness + 2, _side_colour(joint), -1, cv2.LINE_AA)
    return canvas


def _point(xy: np.ndarray) -> tuple[int, int]:
    """Pixel coordinates OpenCV takes (32-bit ints): a chained model's detector box of ±1e30 was an internal error
    ("Can't parse 'pt1'"); far points are clipped well outside the image, where nothing is drawn."""
    return tuple(round(float(np.clip(np.nan_to_num(float(v), nan=-FAR), -FAR, FAR))) for v in xy[:2])


def heatmap_montage(crops: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray]) -> np.ndarray:
    """Per person (at most MONTAGE_MAX_PERSONS), a grid of half-size tiles: the crop, then each joint's heatmap
    over it (colour-mapped; one scale per person, from 0 to its highest finite peak, so joints compare)."""
    cv2 = opencv()

    blocks = []
    for crop, maps in list(zip(crops, heatmaps))[:MONTAGE_MAX_PERSONS]:
        tile_size = (max(1, crop.shape[1] // 2), max(1, crop.shape[0] // 2))  # a 1-pixel model input: not 0 × 0
        base = cv2.resize(crop, tile_size, interpolation=cv2.INTER_AREA)
        values = np.asarray(maps, np.float64)
        finite = np.isfinite(values)
        # the highest finite peak: an infinite one made the scale inf/inf (NaN, a RuntimeWarning) and drew the
        # hottest joint black (round 84); it is drawn at the top of the scale, NaN and -inf at the bottom
        peak = float(values[finite].max()) if finite.any() else 0.0
        kept = np.clip(np.where(finite, values, 0.0), 0.0, max(peak, 0.0))
        # float32 whatever the model's heatmaps are: cv2.resize has no float16 (or int64, bool) kernel, and a model
        # whose kept heatmaps are float16 ended `run` in an internal error (OpenCV's "func != 0")
        normalised = np.where(values == np.inf, 1.0, kept / peak if peak > 0 else 0.0).astype(np.float32)
        tiles = [base]
        for joint, heatmap in enumerate(normalised):
            # a kept 4-D output with an empty side (taken for the heatmaps) is a black tile, not OpenCV's assertion
            scaled = cv2.resize(heatmap, tile_size) if heatmap.size else np.zeros(tile_size[::-1], np.float32)
            coloured = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
            tile = cv2.addWeighted(base, 0.4, coloured, 0.6, 0.0)
            label = KEYPOINT_NAMES[joint] if joint < len(KEYPOINT_NAMES) else str(joint)
            cv2.putText(tile, label, (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        tiles += [np.zeros_like(base)] * (-len(tiles) % MONTAGE_COLUMNS)
        rows = [np.hstack(tiles[i:i + MONTAGE_COLUMNS]) for i in range(0, len(tiles), MONTAGE_COLUMNS)]
        blocks.append(np.vstack(rows))
    return np.vstack(blocks)
