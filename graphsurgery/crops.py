"""Top-down person crops exactly as the HRNet authors make them (lib/dataset/coco.py, lib/utils/transforms.py).

A box (x, y, w, h) becomes a center and a scale (padded to the model's aspect ratio, in units of 200 px, × 1.25);
the crop is an affine warp (bilinear) of that region to the model's input size. `center`/`scale` are also what the
`to_image` step takes to map keypoints back into the original image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphsurgery.images import opencv

PIXEL_STD = 200.0
PADDING = 1.25
#: person boxes given to a model that crops in the graph per call (eval-coco's `coco.WholeImages`, verify's and
#: int8 calibration's `samples.box_image_samples`): the graph crops every box it is given (twice with the flip
#: test) at once, and 2,000 people in one image ran out of memory; COCO images hold up to ~20 people
BOXES_PER_CALL = 64


def in_parts(boxes: np.ndarray) -> list[np.ndarray]:
    """`boxes` [N, 4] in consecutive parts of at most BOXES_PER_CALL, one a call."""
    return [boxes[start:start + BOXES_PER_CALL] for start in range(0, len(boxes), BOXES_PER_CALL)]


def box_to_center_scale(box: Sequence[float], aspect_ratio: float = 192 / 256) -> tuple[np.ndarray, np.ndarray]:
    """The authors' `_box2cs`: center of the box, scale (w, h)/200 after padding to `aspect_ratio` (w/h), × 1.25."""
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * PADDING
    return center, scale.astype(np.float32)


def affine_transform(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int], inverse: bool = False
                     ) -> np.ndarray:
    """The authors' `get_affine_transform` with rotation 0: a 2×3 matrix mapping the box region to (W, H)."""
    src_w = scale[0] * PIXEL_STD
    dst_w, dst_h = output_size
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0, src_w * -0.5], dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5], dtype=np.float32) + np.array([0, dst_w * -0.5], dtype=np.float32)
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return _affine_from_points(dst, src) if inverse else _affine_from_points(src, dst)


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 matrix M with M·[x, y, 1] = dst for three point pairs (what cv2.getAffineTransform computes)."""
    a = np.hstack([src.astype(np.float64), np.ones((3, 1))])
    return np.linalg.solve(a, dst.astype(np.float64)).T


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def crop(image_bgr: np.ndarray, center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int] = (192, 256)
         ) -> np.ndarray:
    """Warp the region given by center/scale to `output_size` (W, H): uint8 HWC BGR, bilinear, like the authors."""
    cv2 = opencv()

    matrix = affine_transform(center, scale, output_size)
    return cv2.warpAffine(image_bgr, matrix, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR)


def person_crop(image_bgr: np.ndarray, box: Sequence[float], output_size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box's center and scale (padded to the aspect of `output_size`, W / H) and its crop at that size."""
    center, scale = box_to_center_scale(box, output_size[0] / output_size[1])
    return center, scale, crop(image_bgr, center, scale, output_size)


def whole_image_box(image: np.ndarray) -> tuple[float, float, float, float]:
    """The box used when no person boxes are given: the whole image."""
    return (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))


def to_original(keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, heatmap_size: tuple[int, int]
                ) -> np.ndarray:
    """The authors' `transform_preds` (rotation 0): heatmap coordinates [K,2] → original image coordinates."""
    matrix = affine_transform(center, scale, heatmap_size, inverse=True)
    ones = np.ones((keypoints.shape[0], 1), dtype=np.float64)
    return (np.concatenate([keypoints.astype(np.float64), ones], axis=1) @ matrix.T).astype(np.float32)
