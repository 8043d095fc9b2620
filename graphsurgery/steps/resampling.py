"""The numpy side of resizing, for the twins: ONNX Resize's semantics (nearest, linear, cubic) and the weights of the
filtered modes (PIL's resampling, OpenCV's INTER_AREA), each written independently from the spec or the libraries'
code, so that the graph is checked against something it was not derived from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from graphsurgery.steps.resize import Resize

#: Filtered resampling (antialias, area, lanczos): each kernel's support in source pixels at scale 1 (PIL's)
SUPPORT = {"linear": 1.0, "cubic": 2.0, "lanczos": 3.0, "area": 0.5}


def onnx_resample(step: Resize, x: np.ndarray, axis: int, length: int) -> np.ndarray:
    """`x` resampled to `length` along `axis`: a weighted sum of source samples (taps), per ONNX Resize."""
    taps, weights = _taps(step, x.shape[axis], length)
    shape = [1] * x.ndim
    shape[axis] = length
    out = np.zeros(x.shape[:axis] + (length,) + x.shape[axis + 1:], np.float64)
    for k in range(taps.shape[1]):
        out += np.take(x, taps[:, k], axis=axis) * weights[:, k].reshape(shape)
    return out


def _taps(step: Resize, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices [n_out, T] and their weights [n_out, T]; indices past an edge repeat the edge sample."""
    x = source_coordinates(step.coordinate_transformation_mode, n_in, n_out).astype(np.float64)
    if step.interpolation == "nearest":
        return np.clip(_round(x, step.nearest_mode), 0, n_in - 1).astype(np.int64)[:, None], np.ones((n_out, 1))
    if step.interpolation == "linear":
        x = np.clip(x, 0, n_in - 1)  # outside the image the edge sample is repeated
        low = np.floor(x).astype(np.int64)
        t = x - low
        return np.stack([low, np.minimum(low + 1, n_in - 1)], 1), np.stack([1 - t, t], 1)
    taps = np.floor(x)[:, None].astype(np.int64) + np.arange(-1, 3)[None, :]  # cubic: 4 taps, edges repeated
    return np.clip(taps, 0, n_in - 1), _cubic_kernel(taps - x[:, None], step.cubic_coeff_a)


def source_coordinates(mode: str, n_in: int, n_out: int) -> np.ndarray:
    """Where each output sample sits in the input (ONNX Resize's coordinate transformation), in float32 as the
    runtimes compute it; the scale is out / in rounded to float32."""
    f32 = np.float32
    x = np.arange(n_out, dtype=f32)
    scale = f32(n_out) / f32(n_in)
    if mode == "align_corners":
        return np.zeros(n_out, f32) if n_out == 1 else x * f32(n_in - 1) / f32(n_out - 1)
    if mode == "asymmetric":
        return x / scale
    if mode == "pytorch_half_pixel" and n_out == 1:
        return np.zeros(1, f32)
    return (x + f32(0.5)) / scale - f32(0.5)  # half_pixel, pytorch_half_pixel


#: how close to a half a rounded pass's sum may come and still round the same way in the graph (float32) as in the
#: twin (float64): measured on random images (lanczos), onnxruntime's sums needed 3e-3, OpenVINO's 1e-2
NEAR_HALF = 1e-2


def filtered_resample(step: Resize, x: np.ndarray, axes: tuple[int, int], resized_hw: tuple[int, int]
                      ) -> np.ndarray:
    """x resampled along `axes` to `resized_hw` in two passes, the columns first unless PIL would run the rows first
    (`Resize.rows_first`), each pass clipped to `clamp` and rounded when asked."""
    for axis, weights in _filtered_passes(step, x.shape, axes, resized_hw):
        x = _weighted(weights, x, axis)
        x = x if step.clamp is None else np.clip(x, *step.clamp)
        x = np.round(x) if step.round else x
    return x


def filtered_resample_bounds(step: Resize, lo: np.ndarray, hi: np.ndarray, axes: tuple[int, int],
                             resized_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The least and greatest values `filtered_resample` may give, in the graph's float32, from inputs anywhere in
    [lo, hi]: a pass's positive weights carry each bound along and its negative ones (lanczos, cubic) the other,
    and a rounded sum within `NEAR_HALF` of a half may round either way."""
    for axis, weights in _filtered_passes(step, lo.shape, axes, resized_hw):
        plus, minus = np.maximum(weights, 0.0), np.minimum(weights, 0.0)
        lo, hi = (_weighted(plus, lo, axis) + _weighted(minus, hi, axis),
                  _weighted(plus, hi, axis) + _weighted(minus, lo, axis))
        if step.clamp is not None:
            lo, hi = np.clip(lo, *step.clamp), np.clip(hi, *step.clamp)
        if step.round:
            lo, hi = np.round(lo - NEAR_HALF), np.round(hi + NEAR_HALF)
    return lo, hi


def _filtered_passes(step: Resize, shape: tuple[int, ...], axes: tuple[int, int], resized_hw: tuple[int, int]):
    """(axis, [new, old] weights) of each filtered pass, in the order the passes run."""
    hw = (shape[axes[0]], shape[axes[1]])
    shrinks = all(new <= old for new, old in zip(resized_hw, hw))
    passes = list(zip(axes, hw, resized_hw))
    for axis, length, new_length in passes if step.rows_first(hw, resized_hw) else reversed(passes):
        yield axis, filter_weights(step.interpolation, step.cubic_coeff_a, length, new_length, shrinks)


def _weighted(weights: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(np.tensordot(weights, x, axes=([1], [axis])), 0, axis)


def filter_weights(interpolation: str, cubic_coeff_a: float, n_in: int, n_out: int, shrinks: bool = True
                   ) -> np.ndarray:
    """[n_out, n_in] float64 weights of the filtered modes, written here from the libraries' code.

    PIL's resampling (libImaging/Resample.c, `precompute_coeffs`): output i sits at centre (i + 0.5) · scale; the
    filter (support s) is stretched by the scale when shrinking; taps from int(centre − support + 0.5) up to
    int(centre + support + 0.5), inside the image, each weighted filter((tap − centre + 0.5) / stretch); each row
    divided by its sum. `area`, OpenCV's INTER_AREA (imgproc/src/resize.cpp): when no side grows (`shrinks`), the
    share of each source pixel inside [i · scale, (i + 1) · scale); else two taps sx = floor(i · scale) and sx + 1
    blended by fx = (i + 1) − (sx + 1) / scale (mod 1 when positive, else 0), the last pixel alone at the far edge;
    both computed in whole numbers (scale = n_in / n_out), so a product that is a whole number is one.
    """
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        if interpolation == "area" and shrinks:  # in units of 1 / n_out source pixels: whole numbers, exact
            start, end = i * n_in, (i + 1) * n_in
            taps = np.arange(start // n_out, min(-(-end // n_out), n_in))
            row = (np.minimum((taps + 1) * n_out, end) - np.maximum(taps * n_out, start)) / n_in
        elif interpolation == "area":  # floor(i · n_in / n_out) in integers: in floats a whole-number product
            source = i * n_in // n_out  # (54 · 416 / 192 = 117) can land below it
            fx = max((i + 1) * n_in - (source + 1) * n_out, 0) / n_in
            if source >= n_in - 1:
                source, fx = n_in - 1, 0.0
            taps, row = np.array([source, min(source + 1, n_in - 1)]), np.array([1 - fx, fx])
        else:
            stretch = max(scale, 1.0)
            support = SUPPORT[interpolation] * stretch
            centre = (i + 0.5) * scale
            taps = np.arange(max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in))
            row = _pil_filter(interpolation, (taps - centre + 0.5) / stretch, cubic_coeff_a)
        np.add.at(weights[i], taps, row / row.sum())
    return weights


def _pil_filter(interpolation: str, d: np.ndarray, cubic_coeff_a: float) -> np.ndarray:
    if interpolation == "linear":
        return np.clip(1 - np.abs(d), 0, None)
    if interpolation == "cubic":
        return _cubic_kernel(d, cubic_coeff_a)
    return np.where(np.abs(d) < 3, np.sinc(d) * np.sinc(d / 3), 0.0)  # lanczos; np.sinc is sin(πx) / (πx)


def _round(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    tie = (x - np.floor(x)) == 0.5
    if mode == "round_prefer_floor":
        return np.where(tie, np.floor(x), np.floor(x + 0.5))
    return np.where(tie, np.ceil(x), np.floor(x + 0.5))  # round_prefer_ceil


def _cubic_kernel(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient `a`, as the ONNX Resize definition writes it."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))
