"""The HRNet authors' top-down test pipeline, written as they wrote it and independent of graphsurgery: what the
top-down graph (`recipes/hrnet_coco_topdown.yaml`) must equal.

From leoxiaobin/deep-high-resolution-net.pytorch: `_xywh2cs` (lib/dataset/coco.py), `get_affine_transform`,
`affine_transform`, `flip_back`, `transform_preds` (lib/utils/transforms.py), the flip test of `validate`
(lib/core/function.py, FLIP_TEST and SHIFT_HEATMAP on), `get_max_preds` and `get_final_preds` with POST_PROCESS
(lib/core/inference.py). The crop is `cv2.warpAffine(..., flags=cv2.INTER_LINEAR)` on the BGR image, the loader
turns it to RGB, /255 and ImageNet mean/std.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

IMAGE_SIZE = (192, 256)  # (w, h), as the config gives it
FLIP_PAIRS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def xywh2cs(x, y, w, h, image_size=IMAGE_SIZE, pixel_std=200):
    aspect_ratio = image_size[0] * 1.0 / image_size[1]
    center = np.zeros((2), dtype=np.float32)
    center[0] = x + w * 0.5
    center[1] = y + h * 0.5
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w * 1.0 / pixel_std, h * 1.0 / pixel_std], dtype=np.float32)
    if center[0] != -1:
        scale = scale * 1.25
    return center, scale


def get_dir(src_point, rot_rad):
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return [src_point[0] * cs - src_point[1] * sn, src_point[0] * sn + src_point[1] * cs]


def get_3rd_point(a, b):
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center, scale, rot, output_size, shift=None, inv=0):
    shift = np.array([0, 0], dtype=np.float32) if shift is None else shift
    scale_tmp = scale * 200.0
    src_w = scale_tmp[0]
    dst_w, dst_h = output_size[0], output_size[1]
    rot_rad = np.pi * rot / 180
    src_dir = get_dir([0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale_tmp * shift
    src[1, :] = center + src_dir + scale_tmp * shift
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2:, :] = get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])
    if inv:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def affine_transform(pt, t):
    new_pt = np.array([pt[0], pt[1], 1.]).T
    return np.dot(t, new_pt)[:2]


def transform_preds(coords, center, scale, output_size):
    target_coords = np.zeros(coords.shape)
    trans = get_affine_transform(center, scale, 0, output_size, inv=1)
    for p in range(coords.shape[0]):
        target_coords[p, 0:2] = affine_transform(coords[p, 0:2], trans)
    return target_coords


def flip_back(output_flipped, matched_parts):
    output_flipped = output_flipped[:, :, :, ::-1]
    for pair in matched_parts:
        tmp = output_flipped[:, pair[0], :, :].copy()
        output_flipped[:, pair[0], :, :] = output_flipped[:, pair[1], :, :]
        output_flipped[:, pair[1], :, :] = tmp
    return output_flipped


def get_max_preds(batch_heatmaps):
    batch_size, num_joints, width = batch_heatmaps.shape[0], batch_heatmaps.shape[1], batch_heatmaps.shape[3]
    heatmaps_reshaped = batch_heatmaps.reshape((batch_size, num_joints, -1))
    idx = np.argmax(heatmaps_reshaped, 2).reshape((batch_size, num_joints, 1))
    maxvals = np.amax(heatmaps_reshaped, 2).reshape((batch_size, num_joints, 1))
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = (preds[:, :, 0]) % width
    preds[:, :, 1] = np.floor((preds[:, :, 1]) / width)
    pred_mask = np.tile(np.greater(maxvals, 0.0), (1, 1, 2)).astype(np.float32)
    return preds * pred_mask, maxvals


def get_final_preds(batch_heatmaps, center, scale):
    """POST_PROCESS as the authors' loop does it (1 < px < W−1, 1 < py < H−1, quarter pixel towards the higher
    neighbour), written over all joints at once, then transform_preds."""
    coords, maxvals = get_max_preds(batch_heatmaps)
    n, k, heatmap_height, heatmap_width = batch_heatmaps.shape
    px, py = (np.floor(coords[..., i] + 0.5).astype(int) for i in (0, 1))
    inside = (px > 1) & (px < heatmap_width - 1) & (py > 1) & (py < heatmap_height - 1)
    pxs, pys = np.where(inside, px, 2), np.where(inside, py, 2)
    rows, joints = np.arange(n)[:, None], np.arange(k)[None, :]
    dx = batch_heatmaps[rows, joints, pys, pxs + 1] - batch_heatmaps[rows, joints, pys, pxs - 1]
    dy = batch_heatmaps[rows, joints, pys + 1, pxs] - batch_heatmaps[rows, joints, pys - 1, pxs]
    coords += np.where(inside[..., None], np.sign(np.stack([dx, dy], -1)) * .25, 0).astype(np.float32)
    preds = coords.copy()
    for i in range(coords.shape[0]):
        preds[i] = transform_preds(coords[i], center[i], scale[i], [heatmap_width, heatmap_height])
    return preds, maxvals


def crop_input(image_bgr: np.ndarray, center, scale) -> np.ndarray:
    """The loader: warpAffine crop, BGR → RGB, ToTensor (/255), Normalize; [3, h, w] float32."""
    trans = get_affine_transform(center, scale, 0, IMAGE_SIZE)
    crop = cv2.warpAffine(image_bgr, trans, (int(IMAGE_SIZE[0]), int(IMAGE_SIZE[1])), flags=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return np.transpose((rgb - MEAN) / STD, (2, 0, 1)).astype(np.float32)


def top_down(image_bgr: np.ndarray, boxes: np.ndarray, model: Callable[[np.ndarray], np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints [N, 17, 2] in image pixels, scores [N, 17, 1] and the averaged heatmaps, the authors' way;
    `model` maps one normalised crop [1, 3, h, w] to heatmaps [1, 17, H, W]."""
    centers, scales = zip(*(xywh2cs(*box) for box in boxes.tolist()))
    inputs = np.stack([crop_input(image_bgr, c, s) for c, s in zip(centers, scales)])
    output = np.concatenate([model(x[None]) for x in inputs])
    input_flipped = np.flip(inputs, 3).copy()
    output_flipped = flip_back(np.concatenate([model(x[None]) for x in input_flipped]), FLIP_PAIRS)
    output_flipped = output_flipped.copy()
    output_flipped[:, :, :, 1:] = output_flipped.copy()[:, :, :, 0:-1]  # SHIFT_HEATMAP
    output = (output + output_flipped) * 0.5
    preds, maxvals = get_final_preds(output, np.stack(centers), np.stack(scales))
    return preds.astype(np.float32), maxvals.astype(np.float32), output
