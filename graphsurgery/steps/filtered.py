"""The filtered resize modes in the graph: PIL's resampling (antialias, Lanczos) and OpenCV's INTER_AREA, written
as two MatMuls whose weight matrices the graph computes from the image's size.

OpenVINO ignores the Resize op's `antialias` attribute, so these modes cannot use Resize: standard ops keep them
the same on every runtime. The numpy side (the twin's weights) is `resampling.filter_weights`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from graphsurgery.emit import Emitter
from graphsurgery.steps.base import TensorSpec
from graphsurgery.steps.resampling import SUPPORT

if TYPE_CHECKING:
    from graphsurgery.steps.resize import Resize


def emit_filtered(step: Resize, em: Emitter, x: gs.Variable, shape: gs.Variable, hw: gs.Variable,
                  resized_hw: gs.Variable, spec: TensorSpec) -> gs.Variable:
    """PIL's separable resampling as two MatMuls with weight matrices computed in the graph from the sizes: the
    columns (a [w', W] matrix) and the rows ([h', H]), each pass clipped to `clamp` and rounded when asked, as
    PIL does; where that makes the order show, an If picks it from the sizes as `rows_first` does. Dense
    matrices waste multiplications on zeros (the kernel covers a few source pixels per output), but MatMul is
    what every runtime runs fastest."""
    i64 = np.int64

    def pick(values: gs.Variable, index: int) -> gs.Variable:
        return em.op("Gather", [values, em.const("index", index, i64)], {"axis": 0}, dtype=i64, shape=[])

    # OpenCV's INTER_AREA is an area average only when no side grows (else its own two-tap blend)
    shrinks = None
    if step.interpolation == "area":
        grows = em.op("Cast", [em.op("Less", [hw, resized_hw], dtype=np.bool_)], {"to": TensorProto.INT32},
                      dtype=np.int32)
        any_grows = em.op("Cast", [em.reduce_max(grows, [0], keepdims=False, dtype=np.int32)],
                          {"to": TensorProto.BOOL}, dtype=np.bool_)
        shrinks = em.op("Not", [any_grows], dtype=np.bool_)
    rows = _weights(step, em, pick(hw, 0), pick(resized_hw, 0), shrinks)             # [h', H]
    columns = _weights(step, em, pick(hw, 1), pick(resized_hw, 1), shrinks)          # [w', W]
    passes = (_NCHWPasses(step, rows, columns) if spec.layout == "NCHW"
              else _NHWCPasses(step, rows, columns, shape, resized_hw))
    if not step.pass_order_shows:
        return passes.columns_first(em, x)
    # rows first where h − h' > 0 and h − h' > 2 · (w − w'), as `rows_first`
    shrunk = em.op("Sub", [hw, resized_hw], dtype=i64, shape=[2])
    height_shrunk, width_shrunk = pick(shrunk, 0), pick(shrunk, 1)
    zero, two = em.const("zero", 0, i64), em.const("two", 2, i64)
    rows_first = em.op("And", [
        em.op("Greater", [height_shrunk, zero], dtype=np.bool_),
        em.op("Greater", [height_shrunk, em.op("Mul", [width_shrunk, two], dtype=i64)], dtype=np.bool_)],
        dtype=np.bool_)
    return em.branch(rows_first, lambda branch: passes.rows_first(branch, x),
                     lambda branch: passes.columns_first(branch, x), dtype=np.float32, rank=4)


def finish_pass(step: Resize, em: Emitter, y: gs.Variable) -> gs.Variable:
    """One pass's result clipped to `clamp` and rounded when asked (PIL's uint8 passes)."""
    if step.clamp is not None:
        low, high = (em.const(name, value, np.float32) for name, value in zip(("low", "high"), step.clamp))
        y = em.op("Clip", [y, low, high], dtype=np.float32)
    return em.round(y, dtype=np.float32) if step.round else y


def _weights(step: Resize, em: Emitter, n_in: gs.Variable, n_out: gs.Variable, shrinks: gs.Variable | None
             ) -> gs.Variable:
    """[n_out, n_in] float32 resampling weights, PIL's `precompute_coeffs`: output i centred at (i + 0.5) ·
    scale in the source, the kernel stretched by the scale when shrinking, taps past the edges left out and
    each row renormalised. Area (OpenCV's INTER_AREA): where no side grows (`shrinks`), the share of each source
    pixel inside the output pixel's span; else OpenCV's two-tap blend (both in int64: `_area_weights`)."""
    f32 = np.float32
    if step.interpolation == "area":
        return _area_weights(em, n_in, n_out, shrinks)
    n_in_f = em.op("Cast", [n_in], {"to": TensorProto.FLOAT}, dtype=f32)
    n_out_f = em.op("Cast", [n_out], {"to": TensorProto.FLOAT}, dtype=f32)
    scale = em.op("Div", [n_in_f, n_out_f], dtype=f32)
    one, half, zero = (em.const(name, value, f32) for name, value in (("one", 1.0, ), ("half", 0.5), ("zero", 0.0)))
    out_index = em.unsqueeze(em.op("Range", [zero, n_out_f, one], dtype=f32), [1], dtype=f32)        # [m, 1]
    in_index = em.unsqueeze(em.op("Range", [zero, n_in_f, one], dtype=f32), [0], dtype=f32)          # [1, n]
    stretch = em.op("Max", [scale, one], dtype=f32)
    support = em.op("Mul", [em.const("support", SUPPORT[step.interpolation], f32), stretch], dtype=f32)
    centre = em.op("Mul", [em.op("Add", [out_index, half], dtype=f32), scale], dtype=f32)
    first = em.op("Max", [em.op("Floor", [em.op("Add", [em.op("Sub", [centre, support], dtype=f32), half],
                                                dtype=f32)], dtype=f32), zero], dtype=f32)
    last = em.op("Min", [em.op("Floor", [em.op("Add", [em.op("Add", [centre, support], dtype=f32), half],
                                               dtype=f32)], dtype=f32), n_in_f], dtype=f32)
    inside = em.op("And", [em.op("Not", [em.op("Less", [in_index, first], dtype=np.bool_)], dtype=np.bool_),
                           em.op("Less", [in_index, last], dtype=np.bool_)], dtype=np.bool_)
    distance = em.op("Div", [em.op("Add", [em.op("Sub", [in_index, centre], dtype=f32), half], dtype=f32),
                             stretch], dtype=f32)
    weights = em.op("Where", [inside, _kernel(step, em, distance), zero], dtype=f32)
    return em.op("Div", [weights, em.reduce_sum(weights, [1], dtype=f32)], dtype=f32)


def _area_weights(em: Emitter, n_in: gs.Variable, n_out: gs.Variable, shrinks: gs.Variable) -> gs.Variable:
    """OpenCV's INTER_AREA as [n_out, n_in] weights, each row summing to 1, worked out in int64 (in units of 1 /
    n_out of a source pixel) and rounded to float32 once, at the end.

    Where no side grows (`shrinks`): the share of source pixel j inside output i's span [i · scale, (i + 1) ·
    scale), that is min((j + 1) · n_out, (i + 1) · n_in) − max(j · n_out, i · n_in) (when positive) over n_in.
    Else OpenCV's blend of sx = floor(i · scale) and sx + 1 by fx = (i + 1) − (sx + 1) / scale, taken modulo 1
    when positive (else 0), the last source pixel alone at the far edge: sx = (i · n_in) div n_out and fx · n_in
    = (i + 1) · n_in − (sx + 1) · n_out, below n_in since (sx + 1) · n_out > i · n_in (modulo 1 is the identity).

    Not in float32: where i · n_in / n_out is whole, the product i · scale lands a hair either side of it
    (224 → 192, i = 54: 54 × 1.1666666 = 62.999996 on onnxruntime, whose division is correctly rounded; 63.000004
    on OpenVINO, whose 224 / 192 is 1.1666667), and floor(i · scale) moved the blend's taps a pixel on one
    runtime; the spans' float32 ends also left the weights off by up to 1.6e-5 of a level per level. Integer Div
    of non-negative operands floors on every runtime (floor and truncation agree); Where stands in for integer
    Min and Max, which opset 11 lacks."""
    i64, f32 = np.int64, np.float32
    one, zero = em.const("one", 1, i64), em.const("zero", 0, i64)
    out_index = em.unsqueeze(em.op("Range", [zero, n_out, one], dtype=i64), [1], dtype=i64)          # [m, 1]
    in_index = em.unsqueeze(em.op("Range", [zero, n_in, one], dtype=i64), [0], dtype=i64)            # [1, n]
    n_in_f = em.op("Cast", [n_in], {"to": TensorProto.FLOAT}, dtype=f32)

    def times(a: gs.Variable, b: gs.Variable) -> gs.Variable:
        return em.op("Mul", [a, b], dtype=i64)

    def plus_one(a: gs.Variable) -> gs.Variable:
        return em.op("Add", [a, one], dtype=i64)

    def positive(a: gs.Variable) -> gs.Variable:
        return em.op("Where", [em.op("Greater", [a, zero], dtype=np.bool_), a, zero], dtype=i64)

    def share(numerator: gs.Variable) -> gs.Variable:
        return em.op("Div", [em.op("Cast", [numerator], {"to": TensorProto.FLOAT}, dtype=f32), n_in_f], dtype=f32)

    # shrinking: the spans' overlap
    start, end = times(out_index, n_in), times(plus_one(out_index), n_in)                    # [m, 1]
    left, right = times(in_index, n_out), times(plus_one(in_index), n_out)                   # [1, n]
    low = em.op("Where", [em.op("Greater", [left, start], dtype=np.bool_), left, start], dtype=i64)
    high = em.op("Where", [em.op("Less", [right, end], dtype=np.bool_), right, end], dtype=i64)
    overlap = share(positive(em.op("Sub", [high, low], dtype=i64)))
    # growing: OpenCV's two taps
    source = em.op("Div", [start, n_out], dtype=i64)
    numerator = positive(em.op("Sub", [end, times(plus_one(source), n_out)], dtype=i64))
    last = em.op("Sub", [n_in, one], dtype=i64)
    edge = em.op("Not", [em.op("Less", [source, last], dtype=np.bool_)], dtype=np.bool_)
    fraction = share(em.op("Where", [edge, zero, numerator], dtype=i64))
    source = em.op("Where", [edge, last, source], dtype=i64)
    near = em.op("Where", [em.op("Equal", [in_index, source], dtype=np.bool_),
                           em.op("Sub", [em.const("one", 1.0, f32), fraction], dtype=f32),
                           em.const("zero", 0.0, f32)], dtype=f32)
    far = em.op("Where", [em.op("Equal", [in_index, plus_one(source)], dtype=np.bool_), fraction,
                          em.const("zero", 0.0, f32)], dtype=f32)
    return em.op("Where", [shrinks, overlap, em.op("Add", [near, far], dtype=f32)], dtype=f32)


def _kernel(step: Resize, em: Emitter, d: gs.Variable) -> gs.Variable:
    """PIL's filters at distance `d` (in kernel units): triangle, Keys cubic with `cubic_coeff_a`, Lanczos-3."""
    f32 = np.float32
    a = em.op("Abs", [d], dtype=f32)
    one, zero = em.const("one", 1.0, f32), em.const("zero", 0.0, f32)
    if step.interpolation == "linear":
        return em.op("Max", [em.op("Sub", [one, a], dtype=f32), zero], dtype=f32)
    if step.interpolation == "cubic":
        c = float(step.cubic_coeff_a)
        near = em.op("Add", [em.op("Mul", [em.op("Mul", [em.op("Sub", [em.op("Mul", [a, em.const("n1", c + 2, f32)],
                                                                            dtype=f32), em.const("n2", c + 3, f32)],
                                                              dtype=f32), a], dtype=f32), a], dtype=f32), one],
                      dtype=f32)
        far = em.op("Sub", [em.op("Mul", [em.op("Add", [em.op("Mul", [em.op("Sub", [
            em.op("Mul", [a, em.const("f1", c, f32)], dtype=f32), em.const("f2", 5 * c, f32)], dtype=f32), a],
            dtype=f32), em.const("f3", 8 * c, f32)], dtype=f32), a], dtype=f32), em.const("f4", 4 * c, f32)],
            dtype=f32)
        two = em.const("two", 2.0, f32)
        return em.op("Where", [em.op("Less", [a, one], dtype=np.bool_), near,
                               em.op("Where", [em.op("Less", [a, two], dtype=np.bool_), far, zero], dtype=f32)],
                     dtype=f32)
    # lanczos: sinc(d) · sinc(d / 3) for |d| < 3; sinc(0) = 1
    pi_d = em.op("Mul", [d, em.const("pi", np.pi, f32)], dtype=f32)
    third = em.op("Div", [pi_d, em.const("three", 3.0, f32)], dtype=f32)
    tiny = em.op("Less", [a, em.const("tiny", 1e-6, f32)], dtype=np.bool_)
    safe = em.op("Where", [tiny, one, pi_d], dtype=f32)
    safe_third = em.op("Where", [tiny, one, third], dtype=f32)
    product = em.op("Div", [em.op("Mul", [em.op("Sin", [safe], dtype=f32), em.op("Sin", [safe_third], dtype=f32)],
                                  dtype=f32), em.op("Mul", [safe, safe_third], dtype=f32)], dtype=f32)
    product = em.op("Where", [tiny, one, product], dtype=f32)
    return em.op("Where", [em.op("Less", [a, em.const("three", 3.0, f32)], dtype=np.bool_), product, zero],
                 dtype=f32)


class _NCHWPasses:
    """The filtered passes on [N, C, H, W]: x @ columnsᵀ along W, rows @ x along H."""

    def __init__(self, step: Resize, rows: gs.Variable, columns: gs.Variable):
        self.step, self.rows, self.columns = step, rows, columns

    def along_columns(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        columns_t = em.op("Transpose", [self.columns], {"perm": [1, 0]}, dtype=np.float32)
        return finish_pass(self.step, em, em.op("MatMul", [x, columns_t], dtype=np.float32))

    def along_rows(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        return finish_pass(self.step, em, em.op("MatMul", [self.rows, x], dtype=np.float32))

    def columns_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        return self.along_rows(em, self.along_columns(em, x))

    def rows_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        return self.along_columns(em, self.along_rows(em, x))


class _NHWCPasses(_NCHWPasses):
    """The filtered passes on [N, H, W, C], seen as [N, H, C, W] for the columns, so that they are one large MatMul
    (a [w', W] against each row of three channels is many tiny ones: 1.45× the time on a 4000×3000 photo), and as
    [N, H, W·C] for the rows."""

    def __init__(self, step: Resize, rows: gs.Variable, columns: gs.Variable, shape: gs.Variable,
                 resized_hw: gs.Variable):
        super().__init__(step, rows, columns)
        self.shape, self.resized_hw = shape, resized_hw

    def _sized(self, em: Emitter, y: gs.Variable, dims: list[tuple[gs.Variable, int]]) -> gs.Variable:
        """y reshaped to the listed dims, each one element of `self.shape` or `self.resized_hw`."""
        i64 = np.int64
        parts = [em.op("Slice", [source, em.const("start", [i], i64), em.const("end", [i + 1], i64)], dtype=i64)
                 for source, i in dims]
        return em.op("Reshape", [y, em.op("Concat", parts, {"axis": 0}, dtype=i64)], dtype=np.float32)

    def columns_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        f32, i64 = np.float32, np.int64
        y = self.along_columns(em, em.op("Transpose", [x], {"perm": [0, 1, 3, 2]}, dtype=f32))   # [N, H, C, w']
        y = self.along_rows(em, em.op("Reshape", [y, em.const("rows_last", [0, 0, -1], i64)], dtype=f32))
        y = self._sized(em, y, [(self.shape, 0), (self.resized_hw, 0), (self.shape, 3), (self.resized_hw, 1)])
        return em.op("Transpose", [y], {"perm": [0, 1, 3, 2]}, dtype=f32)                        # [N, h', w', C]

    def rows_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        f32, i64 = np.float32, np.int64
        y = self.along_rows(em, em.op("Reshape", [x, em.const("rows_last", [0, 0, -1], i64)], dtype=f32))
        y = self._sized(em, y, [(self.shape, 0), (self.resized_hw, 0), (self.shape, 2), (self.shape, 3)])
        y = self.along_columns(em, em.op("Transpose", [y], {"perm": [0, 1, 3, 2]}, dtype=f32))  # [N, h', C, w']
        return em.op("Transpose", [y], {"perm": [0, 1, 3, 2]}, dtype=f32)                        # [N, h', w', C]
