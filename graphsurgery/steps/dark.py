"""DARK: distribution-aware sub-pixel refinement of heatmap maxima (mmpose's MSRAHeatmap with `unbiased=True`).

The reference is mmpose 1.x, `refine_keypoints_dark` (mmpose/codecs/utils/refinement.py) with `gaussian_blur`
(mmpose/codecs/utils/post_processing.py): each map is blurred with OpenCV's Gaussian kernel for the size, zero
outside the map, rescaled to its original maximum, clamped at 1e-10 and turned into its log; at each keypoint
inside the map (two cells from its edges) one Newton step with the 2×2 Hessian of the log moves it towards the
peak of the fitted Gaussian. The graph blurs with two 1-D convolutions (the kernel is separable) and reads the 13
values around each keypoint with one GatherElements.
"""

from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field, field_validator

from graphsurgery.emit import Emitter
from graphsurgery.images import opencv
from graphsurgery.registry import register
from graphsurgery.steps.base import Comparison, OutputStep, StepError
from graphsurgery.steps.output import heatmap_hw, off_centre, require, truncate

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts

#: the Newton step in float32 graph arithmetic vs numpy's LAPACK solve and OpenCV's blur, in heatmap cells (the
#: keypoints are still in heatmap pixels here)
DARK_COMPARISON = Comparison("coordinates", rtol=0.0, atol=1e-3)
#: (dx, dy) of the values read around a keypoint, in this order
AROUND = ((0, 0), (1, 0), (-1, 0), (2, 0), (-2, 0), (0, 1), (0, -1), (0, 2), (0, -2),
          (1, 1), (1, -1), (-1, 1), (-1, -1))


def gaussian_kernel(size: int) -> np.ndarray:
    """OpenCV's 1-D Gaussian kernel for `size` with sigma from the size, as cv2.GaussianBlur(..., (size, size), 0)
    uses it on a float32 image."""
    cv2 = opencv()

    return cv2.getGaussianKernel(size, 0, cv2.CV_32F).ravel().astype(np.float32)


def blurred_maps(em: Emitter, heatmaps: gs.Variable, h: int, w: int, size: int) -> gs.Variable:
    """mmpose's gaussian_blur: blur(map) · max(map) / max(blur(map)) for [N, K, H, W] maps, the blur zero-padded
    (two 1-D convolutions of every map as a one-channel image; N may be 0)."""
    f32, i64 = np.float32, np.int64
    kernel = gaussian_kernel(size)
    border = (size - 1) // 2
    shape = em.op("Shape", [heatmaps], dtype=i64, shape=[4])
    maps = em.op("Mul", [em.op("Gather", [shape, em.const("n", [0], i64)], {"axis": 0}, dtype=i64),
                         em.op("Gather", [shape, em.const("k", [1], i64)], {"axis": 0}, dtype=i64)], dtype=i64)
    single_shape = em.op("Concat", [maps, em.const("single", [1, h, w], i64)], {"axis": 0}, dtype=i64)
    single = em.op("Reshape", [heatmaps, single_shape], dtype=f32)                                 # [N·K, 1, H, W]
    rows = em.op("Conv", [single, em.const("row_kernel", kernel.reshape(1, 1, 1, -1))],
                 {"pads": [0, border, 0, border]}, dtype=f32)
    blurred = em.op("Conv", [rows, em.const("column_kernel", kernel.reshape(1, 1, -1, 1))],
                    {"pads": [border, 0, border, 0]}, dtype=f32)
    blurred = em.op("Reshape", [blurred, shape], dtype=f32)                                         # [N, K, H, W]
    peak = em.reduce_max(heatmaps, [2, 3], keepdims=True, dtype=f32)
    blurred_peak = em.reduce_max(blurred, [2, 3], keepdims=True, dtype=f32)
    return em.op("Mul", [blurred, em.op("Div", [peak, blurred_peak], dtype=f32)], dtype=f32)


class BlurredLogRefine(OutputStep):
    """What DARK and UDP share: they read keypoints and heatmaps, blur with an odd Gaussian kernel, need opset 11
    (GatherElements, Clip with inputs) and are compared within 1e-3 cells."""

    reads: ClassVar[tuple[str, ...]] = ("keypoints", "heatmaps")
    min_opset: ClassVar[int] = 11
    blur_kernel_size: int = Field(default=11, ge=3, le=31,
                                  description="odd Gaussian kernel size (mmpose: 11 for sigma 2, 17 for sigma 3)")

    @field_validator("blur_kernel_size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError("blur_kernel_size must be odd")
        return size

    def writes(self) -> dict[str, Comparison]:
        return {"keypoints": DARK_COMPARISON}

    def _inputs(self, env: dict[str, gs.Variable]) -> tuple[gs.Variable, gs.Variable, int, int]:
        """keypoints, heatmaps and the heatmaps' static (H, W)."""
        require(env, self.reads, self.step_name)
        return (env["keypoints"], env["heatmaps"], *heatmap_hw(env["heatmaps"].shape, "the heatmaps"))


@register
class DarkRefine(BlurredLogRefine):
    """Refine keypoints with DARK: mmpose's refine_keypoints_dark.

    Reads "keypoints" (from `heatmap_argmax`, typically `invalid:
    minus_one`) and "heatmaps"; writes "keypoints" in heatmap pixels
    (compared within 1e-3 cells: float32 graph arithmetic vs numpy's
    LAPACK solve and OpenCV's blur). Each map is blurred with OpenCV's
    Gaussian kernel of `blur_kernel_size` (11: sigma 2; 17: sigma 3), zero
    outside the map, rescaled to the map's own maximum, clamped at 1e-10,
    log. A keypoint (x, y) truncated to integers with 1 < x < W−2 and
    1 < y < H−2 moves by −H⁻¹·∇ (gradient and Hessian by central
    differences, mmpose's formulas) unless the Hessian's determinant is 0;
    others (invalid joints at −1) stay. Needs opset 11 and maps of at least
    5×5. Maps holding NaN or ±inf give unspecified keypoints where refined.
    """

    step_name: ClassVar[str] = "dark_refine"

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        keypoints, heatmaps, h, w = self._inputs(env)
        if h < 5 or w < 5:
            raise StepError(
                f"dark_refine needs heatmaps of at least 5×5; these are {h}×{w}", "drop dark_refine for maps this small"
            )
        f32, i64 = np.float32, np.int64
        rescaled = blurred_maps(em, heatmaps, h, w, self.blur_kernel_size)
        log_maps = em.op("Log", [em.op("Max", [rescaled, em.const("floor", 1e-10, f32)], dtype=f32)], dtype=f32)
        flat = em.op("Reshape", [log_maps, em.const("flat", [0, 0, h * w], i64)], dtype=f32)  # [N, K, H·W]
        pixel = truncate(em, keypoints)
        # 1 < x < W−2 and 1 < y < H−2: |p − (size−1)/2| < (size−3)/2 on both axes
        inside = em.op(
            "Less",
            [
                em.reduce_max(
                    off_centre(em, pixel, ((w - 1) / 2, (h - 1) / 2), ((w - 3) / 2, (h - 3) / 2)),
                    [2],
                    keepdims=True,
                    dtype=f32,
                ),
                em.const("zero", 0.0, f32),
            ],
            dtype=np.bool_,
        )  # [N, K, 1]
        centre = em.reduce_sum(
            em.op("Mul", [pixel, em.const("strides", [1.0, float(w)], f32)], dtype=f32), [2], keepdims=True, dtype=f32
        )
        safe = em.op(
            "Cast",
            [em.op("Where", [inside, centre, em.const("interior", float(2 + 2 * w), f32)], dtype=f32)],
            {"to": TensorProto.INT64},
            dtype=i64,
        )
        offsets = em.const("around", [dx + dy * w for dx, dy in AROUND], i64)
        values = em.gather_last(flat, em.op("Add", [safe, offsets], dtype=i64), 3, h * w, dtype=f32)  # [N, K, 13]
        v = {
            at: em.op("Gather", [values, em.const("at", [i], i64)], {"axis": 2}, dtype=f32)
            for i, at in enumerate(AROUND)
        }

        def op(kind, a, b):
            return em.op(kind, [a, b], dtype=f32)

        def times(a, factor):
            return op("Mul", a, em.const("factor", factor, f32))

        centre_twice = times(v[0, 0], 2.0)
        dx = times(op("Sub", v[1, 0], v[-1, 0]), 0.5)
        dy = times(op("Sub", v[0, 1], v[0, -1]), 0.5)
        dxx = times(op("Add", op("Sub", v[2, 0], centre_twice), v[-2, 0]), 0.25)
        dxy = times(op("Add", op("Sub", op("Sub", v[1, 1], v[1, -1]), v[-1, 1]), v[-1, -1]), 0.25)
        dyy = times(op("Add", op("Sub", v[0, 2], centre_twice), v[0, -2]), 0.25)
        det = op("Sub", op("Mul", dxx, dyy), op("Mul", dxy, dxy))
        # −H⁻¹·∇ with H⁻¹ = [[dyy, −dxy], [−dxy, dxx]] / det
        offset_x = op("Div", op("Sub", op("Mul", dxy, dy), op("Mul", dyy, dx)), det)
        offset_y = op("Div", op("Sub", op("Mul", dxy, dx), op("Mul", dxx, dy)), det)
        offset = em.op("Concat", [offset_x, offset_y], {"axis": 2}, dtype=f32)  # [N, K, 2]
        moves = em.op(
            "And",
            [inside, em.op("Not", [em.op("Equal", [det, em.const("zero", 0.0, f32)], dtype=np.bool_)], dtype=np.bool_)],
            dtype=np.bool_,
        )
        offset = em.op("Where", [moves, offset, em.const("still", 0.0, f32)], dtype=f32)
        return {"keypoints": op("Add", keypoints, offset)}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:

        require(env, self.reads, self.step_name)
        keypoints = np.array(env["keypoints"], dtype=np.float32)  # a copy
        batch = np.asarray(env["heatmaps"], dtype=np.float32)
        # mmpose decodes one instance at a time: heatmaps (K, H, W), keypoints (1, K, 2)
        for n in range(len(batch)):
            keypoints[n : n + 1] = _refine_keypoints_dark(keypoints[n : n + 1], batch[n].copy(), self.blur_kernel_size)
        return {"keypoints": keypoints}


def _gaussian_blur(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """mmpose's gaussian_blur, as written: per map, zero border, cv2.GaussianBlur, rescaled to the map's maximum."""
    cv2 = opencv()

    border = (kernel - 1) // 2
    k_maps, h, w = heatmaps.shape
    for k in range(k_maps):
        origin_max = np.max(heatmaps[k])
        dr = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
        dr[border:-border, border:-border] = heatmaps[k].copy()
        dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
        heatmaps[k] = dr[border:-border, border:-border].copy()
        heatmaps[k] *= origin_max / np.max(heatmaps[k])
    return heatmaps


def _refine_keypoints_dark(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
    """mmpose's refine_keypoints_dark, as written (keypoints (N, K, 2), heatmaps (K, H, W))."""
    n_instances, k_joints = keypoints.shape[:2]
    h, w = heatmaps.shape[1:]
    heatmaps = _gaussian_blur(heatmaps, blur_kernel_size)
    np.maximum(heatmaps, 1e-10, heatmaps)
    np.log(heatmaps, heatmaps)
    for n, k in product(range(n_instances), range(k_joints)):
        x, y = keypoints[n, k, :2].astype(int)
        if 1 < x < w - 2 and 1 < y < h - 2:
            dx = 0.5 * (heatmaps[k, y, x + 1] - heatmaps[k, y, x - 1])
            dy = 0.5 * (heatmaps[k, y + 1, x] - heatmaps[k, y - 1, x])
            dxx = 0.25 * (heatmaps[k, y, x + 2] - 2 * heatmaps[k, y, x] + heatmaps[k, y, x - 2])
            dxy = 0.25 * (
                heatmaps[k, y + 1, x + 1]
                - heatmaps[k, y - 1, x + 1]
                - heatmaps[k, y + 1, x - 1]
                + heatmaps[k, y - 1, x - 1]
            )
            dyy = 0.25 * (heatmaps[k, y + 2, x] - 2 * heatmaps[k, y, x] + heatmaps[k, y - 2, x])
            derivative = np.array([[dx], [dy]])
            hessian = np.array([[dxx, dxy], [dxy, dyy]])
            if dxx * dyy - dxy**2 != 0:
                hessianinv = np.linalg.inv(hessian)
                offset = -hessianinv @ derivative
                offset = np.squeeze(np.array(offset.T), axis=0)
                keypoints[n, k, :2] += offset
    return keypoints


@register
class UdpRefine(BlurredLogRefine):
    """Refine keypoints with UDP's DARK: mmpose's refine_keypoints_dark_udp.

    Reads "keypoints" (from `heatmap_argmax: {invalid: minus_one}`) and
    "heatmaps"; writes "keypoints" in heatmap pixels (within 1e-3 cells of
    mmpose's). Each map is blurred as in `dark_refine`, clipped to
    [1e-3, 50], log, padded by one cell repeating its edge; every keypoint
    (no gate, as in mmpose) moves by −(H + eps·I)⁻¹·∇ from the 7 values
    around it, eps = float32's. Invalid joints (−1, −1) read the padded
    corner and, as in mmpose, the row before it, which numpy's negative
    index takes from the previous joint's map (the last joint's for the
    first): the same cells are read (the step from them is ill-conditioned:
    mmpose inverts in float64, the graph in float32). Maps whose maximum is
    exactly 0 rescale by 0 / 0 in mmpose (NaN); here that is the runtime's.
    Follow it with `to_image: {mode: crop, udp: true}` for UDP's
    input_size / (heatmap_size − 1) scale. Needs opset 11 and a static
    joint count.
    """

    step_name: ClassVar[str] = "udp_refine"

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        keypoints, heatmaps, h, w = self._inputs(env)
        joints = heatmaps.shape[1]
        if not isinstance(joints, (int, np.integer)):
            raise StepError("udp_refine needs the number of joints to be static", "export with a fixed joint count")
        f32, i64 = np.float32, np.int64
        rescaled = blurred_maps(em, heatmaps, h, w, self.blur_kernel_size)
        clipped = em.op("Clip", [rescaled, em.const("low", 1e-3, f32), em.const("high", 50.0, f32)], dtype=f32)
        log_maps = em.op("Log", [clipped], dtype=f32)
        padded = em.op("Pad", [log_maps, em.const("pads", [0, 0, 1, 1, 0, 0, 1, 1], i64)], {"mode": "edge"},
                       dtype=f32)
        length = int(joints) * (h + 2) * (w + 2)
        flat = em.op("Reshape", [padded, em.const("flat", [0, length], i64)], dtype=f32)            # [N, L]
        # index = x + 1 + (y + 1)·(W + 2) + k·(W + 2)·(H + 2), as mmpose computes it; in integers (Cast truncates
        # towards zero, as astype(int) does)
        cells = em.op("Cast", [keypoints], {"to": TensorProto.INT64}, dtype=i64)                    # [N, K, 2]
        place = em.reduce_sum(em.op("Mul", [em.op("Add", [cells, em.const("one", 1, i64)], dtype=i64),
                                            em.const("strides", [1, w + 2], i64)], dtype=i64),
                              [2], keepdims=True, dtype=i64)
        index = em.op("Add", [place, em.const("maps", (np.arange(joints) * (h + 2) * (w + 2)).reshape(1, -1, 1)
                                              .astype(i64))], dtype=i64)                             # [N, K, 1]
        index = em.op("Add", [index, em.const("around", [0, 1, w + 2, w + 3, -w - 3, -1, -w - 2], i64)], dtype=i64)
        # numpy's negative index counts from the end (once)
        index = em.op("Where", [em.op("Less", [index, em.const("zero", 0, i64)], dtype=np.bool_),
                                em.op("Add", [index, em.const("length", length, i64)], dtype=i64), index], dtype=i64)
        picked = em.op("GatherElements", [flat, em.op("Reshape", [index, em.const("rows", [0, -1], i64)],
                                                           dtype=i64)], {"axis": 1}, dtype=f32)
        values = em.op("Reshape", [picked, em.const("per_joint", [0, int(joints), 7], i64)], dtype=f32)
        i_, ix1, iy1, ix1y1, ix1_y1_, ix1_, iy1_ = (
            em.op("Gather", [values, em.const("at", [i], i64)], {"axis": 2}, dtype=f32) for i in range(7))

        def op(kind, a, b):
            return em.op(kind, [a, b], dtype=f32)

        half = em.const("half", 0.5, f32)
        dx = op("Mul", op("Sub", ix1, ix1_), half)
        dy = op("Mul", op("Sub", iy1, iy1_), half)
        centre_twice = op("Mul", i_, em.const("two", 2.0, f32))
        dxx = op("Add", op("Sub", ix1, centre_twice), ix1_)
        dyy = op("Add", op("Sub", iy1, centre_twice), iy1_)
        terms = op("Add", op("Add", op("Sub", op("Sub", ix1y1, ix1), iy1), i_), i_)
        dxy = op("Mul", op("Add", op("Sub", op("Sub", terms, ix1_), iy1_), ix1_y1_), half)
        eps = em.const("eps", np.finfo(np.float32).eps, f32)
        a, d = op("Add", dxx, eps), op("Add", dyy, eps)
        det = op("Sub", op("Mul", a, d), op("Mul", dxy, dxy))
        # (H + eps·I)⁻¹ = [[d, −b], [−b, a]] / det, b = dxy; keypoints −= (H + eps·I)⁻¹·∇
        offset_x = op("Div", op("Sub", op("Mul", d, dx), op("Mul", dxy, dy)), det)
        offset_y = op("Div", op("Sub", op("Mul", a, dy), op("Mul", dxy, dx)), det)
        offset = em.op("Concat", [offset_x, offset_y], {"axis": 2}, dtype=f32)
        return {"keypoints": op("Sub", keypoints, offset)}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        require(env, self.reads, self.step_name)
        keypoints = np.array(env["keypoints"], dtype=np.float32)
        batch = np.asarray(env["heatmaps"], dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            for n in range(len(batch)):
                keypoints[n:n + 1] = _refine_keypoints_dark_udp(keypoints[n:n + 1], batch[n].copy(),
                                                                self.blur_kernel_size)
        return {"keypoints": keypoints}


def _refine_keypoints_dark_udp(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
    """mmpose's refine_keypoints_dark_udp, as written (keypoints (N, K, 2), heatmaps (K, H, W))."""
    n_instances, k_joints = keypoints.shape[:2]
    h, w = heatmaps.shape[1:]
    heatmaps = _gaussian_blur(heatmaps, blur_kernel_size)
    np.clip(heatmaps, 1e-3, 50., heatmaps)
    np.log(heatmaps, heatmaps)
    heatmaps_pad = np.pad(heatmaps, ((0, 0), (1, 1), (1, 1)), mode='edge').flatten()
    for n in range(n_instances):
        index = keypoints[n, :, 0] + 1 + (keypoints[n, :, 1] + 1) * (w + 2)
        index += (w + 2) * (h + 2) * np.arange(0, k_joints)
        index = index.astype(int).reshape(-1, 1)
        i_ = heatmaps_pad[index]
        ix1 = heatmaps_pad[index + 1]
        iy1 = heatmaps_pad[index + w + 2]
        ix1y1 = heatmaps_pad[index + w + 3]
        ix1_y1_ = heatmaps_pad[index - w - 3]
        ix1_ = heatmaps_pad[index - 1]
        iy1_ = heatmaps_pad[index - 2 - w]
        dx = 0.5 * (ix1 - ix1_)
        dy = 0.5 * (iy1 - iy1_)
        derivative = np.concatenate([dx, dy], axis=1).reshape(k_joints, 2, 1)
        dxx = ix1 - 2 * i_ + ix1_
        dyy = iy1 - 2 * i_ + iy1_
        dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
        hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(k_joints, 2, 2)
        hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
        keypoints[n] -= np.einsum('imn,ink->imk', hessian, derivative).squeeze()
    return keypoints
