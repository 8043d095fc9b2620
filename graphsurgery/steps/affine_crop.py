"""The arithmetic of `cv2.warpAffine` (OpenCV 5, INTER_LINEAR) on the HRNet authors' box crop, in float32 ops that
ONNX Runtime and OpenVINO execute alike, written once for both the graph (`GraphOps`) and its numpy twin (`NumpyOps`).

OpenCV 5 (imgproc/src/imgwarp.cpp, warp_kernels.simd.hpp, warp_common.vector.hpp) inverts the double matrix, rounds
it to float32 M, and per crop pixel (i, j) samples at x = fma(M0, j, M2), y = RN(RN(i·M4) + M5), then
top = fma(α, p01 − p00, p00), bottom = fma(α, p11 − p10, p10), out = fma(β, bottom − top, top), rounded half to
even (α, β: the fractions of x, y; pixels outside the image are 0). For the authors' matrix (rotation 0),
M2 = s2x and M0, M4, M5 are exact quotients of float32 box values (`matrix`), rounded once.

OpenVINO fuses a Multiply into the Add after it (one rounding fewer), folds chains of constant multiplies and turns
a division by a constant into a multiplication: so every product here is exact (powers of two, or halves of a
Veltkamp split), every rounding happens in an Add or Sub, and quotients are corrected to the correctly rounded one.
The only difference left is OpenCV's own: its double-precision matrix breaks exact ties of those quotients either
way (measured: 0.3 % of detector-like boxes, 0.04 % of COCO boxes with 2 decimals, none with integer boxes).
"""

from __future__ import annotations

from math import gcd

import numpy as np

F32 = np.float32


class NumpyOps:
    """float32 numpy, one rounding per operation: the twin."""

    def c(self, value: float):
        return F32(value)

    def add(self, a, b):
        return np.add(a, b, dtype=F32)

    def sub(self, a, b):
        return np.subtract(a, b, dtype=F32)

    def mul(self, a, b):
        return np.multiply(a, b, dtype=F32)

    def floor(self, a):
        return np.floor(a).astype(F32)

    def abs(self, a):
        return np.abs(a).astype(F32)

    def less(self, a, b):
        with np.errstate(invalid="ignore"):
            return np.less(a, b)

    def equal(self, a, b):
        return ~(self.less(a, b) | self.less(b, a))

    def both(self, a, b):
        return a & b

    def either(self, a, b):
        return a | b

    def negate(self, a):
        return ~a

    def where(self, mask, a, b):
        return np.where(mask, a, b).astype(F32)

    def nan_to_zero(self, a):
        return np.where(np.isnan(a), F32(0), a).astype(F32)


class GraphOps:
    """The same operations as ONNX nodes (all valid from opset 9)."""

    def __init__(self, em):
        self.em = em

    def c(self, value: float):
        return self.em.const("c", value, F32)

    def _f(self, op, *inputs):
        return self.em.op(op, list(inputs), dtype=F32)

    def _b(self, op, *inputs):
        return self.em.op(op, list(inputs), dtype=np.bool_)

    def add(self, a, b):
        return self._f("Add", a, b)

    def sub(self, a, b):
        return self._f("Sub", a, b)

    def mul(self, a, b):
        return self._f("Mul", a, b)

    def floor(self, a):
        return self._f("Floor", a)

    def abs(self, a):
        return self._f("Abs", a)

    def less(self, a, b):
        return self._b("Less", a, b)

    def equal(self, a, b):  # Equal takes floats only from opset 11
        return self._b("Not", self._b("Or", self.less(a, b), self.less(b, a)))

    def both(self, a, b):
        return self._b("And", a, b)

    def either(self, a, b):
        return self._b("Or", a, b)

    def negate(self, a):
        return self._b("Not", a)

    def where(self, mask, a, b):
        return self._f("Where", mask, a, b)

    def nan_to_zero(self, a):
        return self._f("Where", self._b("IsNaN", a), self.c(0.0), a)


def two_sum(o, a, b):
    """s = RN(a + b) and its exact error: a + b = s + e (Knuth; additions only)."""
    s = o.add(a, b)
    bb = o.sub(s, a)
    return s, o.add(o.sub(a, o.sub(s, bb)), o.sub(b, bb))


def split(o, a, bits: int):
    """Veltkamp: a = hi + lo, hi of 24 − bits significant bits, lo of bits − 1 and a sign. a·2^bits + a replaces
    a·(2^bits + 1) so that the product is exact (fused or not)."""
    c = o.add(o.mul(a, o.c(2.0 ** bits)), a)
    hi = o.sub(c, o.sub(c, a))
    return hi, o.sub(a, hi)


def times_int(o, a, n):
    """RN(a·n) for integer-valued n, |n| < 2^11: two exact products, one rounding."""
    hi, lo = split(o, a, 11)
    return o.add(o.mul(hi, n), o.mul(lo, n))


def fma_int(o, a, n, c):
    """RN(a·n + c) for integer-valued n, |n| < 2^11: one rounding, as OpenCV's v_fma."""
    hi, lo = split(o, a, 11)
    s, e = two_sum(o, o.mul(hi, n), c)
    return o.add(s, o.add(e, o.mul(lo, n)))


def divide(o, xh, xl, divisor: int):
    """RN((xh + xl) / divisor), ties to even, for |xl| ≤ ulp(xh)/2 and an integer divisor whose odd part is below
    64: an estimate, refined once, then its neighbours tested against the exact remainder."""
    while divisor % 2 == 0:
        divisor //= 2
        xh, xl = o.mul(xh, o.c(0.5)), o.mul(xl, o.c(0.5))
    k, inv = o.c(divisor), o.c(1.0 / divisor)

    def remainder(q):  # xh − k·q, exact
        hi, lo = split(o, q, 6)
        return o.sub(o.sub(xh, o.mul(hi, k)), o.mul(lo, k))

    q = o.mul(xh, inv)
    q = o.add(q, o.mul(o.add(remainder(q), xl), inv))
    step = o.mul(o.abs(q), o.c(0.7 * 2.0 ** -23))  # 0.7 to 1.4 ulp: q ± step rounds to q's neighbours
    up, down = o.add(q, step), o.sub(q, step)
    ulp_up, ulp_down = o.sub(up, q), o.sub(q, down)
    rest, zero, half_k = remainder(q), o.c(0.0), o.c(divisor / 2)
    above = o.add(o.sub(rest, o.mul(ulp_up, half_k)), xl)  # sign of X − k·(midpoint above q), exact
    below = o.add(o.add(rest, o.mul(ulp_down, half_k)), xl)  # sign of X − k·(midpoint below q)
    half = o.c(0.5)
    # a tie goes to the even neighbour, which is where the hardware rounds the midpoint itself
    to_up = o.either(o.less(zero, above), o.both(o.equal(above, zero), o.equal(o.add(q, o.mul(ulp_up, half)), up)))
    to_down = o.either(o.less(below, zero),
                       o.both(o.equal(below, zero), o.equal(o.add(down, o.mul(ulp_down, half)), down)))
    return o.where(to_up, up, o.where(to_down, down, q))


def odd_part(n: int) -> int:
    while n % 2 == 0:
        n //= 2
    return n


def supported(height: int, width: int) -> bool:
    """Crop sizes whose matrix `matrix` derives exactly: aspect W/H = q/p with p a power of two (so the authors'
    float64 aspect is exact), |p − q| zero or a power of two, and small odd parts to divide by."""
    g = gcd(width, height)
    q, p = width // g, height // g
    return (odd_part(p) == 1 and (p == q or odd_part(abs(p - q)) == 1) and odd_part(q) < 64
            and odd_part(width) < 64 and max(height, width) < 2 ** 11)


def matrix(o, x, y, w, h, height: int, width: int):
    """(M0, M2, M4, M5) of the float32 inverse matrix cv2.warpAffine samples with, for the authors' `_xywh2cs` +
    `get_affine_transform(center, scale, 0, (width, height))` of box (x, y, w, h); float32 box values in."""
    g = gcd(width, height)
    q, p = width // g, height // g
    zero = o.c(0.0)
    cx = o.add(x, o.mul(w, o.c(0.5)))
    cy = o.add(y, o.mul(h, o.c(0.5)))
    # the padded width W = max(w, h·q/p) exactly (h·q as an exact pair), then scale = RN(RN(W/200)·1.25)·200
    qh_hi, qh_lo = split(o, h, 6)
    t_hi, t_lo = two_sum(o, o.mul(qh_hi, o.c(q)), o.mul(qh_lo, o.c(q)))
    use_w = o.negate(o.less(o.sub(o.sub(o.mul(w, o.c(p)), t_hi), t_lo), zero))  # p·w ≥ q·h
    wide_hi = o.where(use_w, w, o.mul(t_hi, o.c(1.0 / p)))
    wide_lo = o.where(use_w, zero, o.mul(t_lo, o.c(1.0 / p)))
    scale = divide(o, wide_hi, wide_lo, 200)
    scale = o.add(scale, o.mul(scale, o.c(0.25)))
    src_w = times_int(o, scale, o.c(200.0))
    # the authors' three source points: center, center − (0, src_w/2), and the third one turned from them
    s1y = o.sub(cy, o.mul(src_w, o.c(0.5)))
    s2x = o.sub(cx, o.sub(cy, s1y))
    xh, xl = two_sum(o, cx, o.sub(zero, s2x))
    yh, yl = two_sum(o, cy, o.sub(zero, s1y))
    # M5 = cy − (H/W)·(cy − s1y) = (p·s1y − (p − q)·cy) / q
    zh, zl = two_sum(o, o.mul(s1y, o.c(p)), o.mul(cy, o.c(q - p)))
    return (divide(o, o.mul(xh, o.c(2.0)), o.mul(xl, o.c(2.0)), width), s2x,
            divide(o, o.mul(yh, o.c(2.0)), o.mul(yl, o.c(2.0)), width), divide(o, zh, zl, q))


def positions(o, m, columns, rows):
    """Sampling positions as OpenCV computes them: x per crop column, y per crop row."""
    m0, m2, m4, m5 = m
    return fma_int(o, m0, columns, m2), o.add(times_int(o, m4, rows), m5)


def fraction(o, at, low):
    """at − floor(at), 0 where the position is not finite (the crop is then zeros, whatever the box)."""
    return o.nan_to_zero(o.sub(at, low))


def lerp_weights(o, alpha):
    """The split of a column fraction that `lerp` multiplies with: both products with a pixel difference exact."""
    return split(o, alpha, 10)


def lerp(o, weights, p0, p1):
    """RN(p0 + α·(p1 − p0)), OpenCV's fma along a row, for integer-valued pixels."""
    hi, lo = weights
    d = o.sub(p1, p0)
    s, e = two_sum(o, p0, o.mul(hi, d))
    return o.add(s, o.add(e, o.mul(lo, d)))


def blend_weights(o, beta):
    return split(o, beta, 12)


def blend(o, weights, top, bottom):
    """RN(top + β·(bottom − top)), OpenCV's fma between the rows: four exact partial products, one rounding."""
    b_hi, b_lo = weights
    v_hi, v_lo = split(o, o.sub(bottom, top), 12)
    s, e = two_sum(o, top, o.mul(b_hi, v_hi))
    cross = o.add(o.mul(b_hi, v_lo), o.mul(b_lo, v_hi))
    return o.add(s, o.add(o.add(e, cross), o.mul(b_lo, v_lo)))
