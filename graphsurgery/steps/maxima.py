"""The first maximum along the last axis, built from nodes whose answer no runtime chooses.

ArgMax and TopK leave ties (before opsets 12 and 11) and NaN to the runtime, and OpenVINO's answer changes with
the CPU: on AVX-512 its TopK skips NaN where on AVX2 it propagated it. Measured with OpenVINO 2026.4 besides:
ReduceMax over a row of only −inf gives −3.4e38 (ReduceMin over +inf gives +3.4e38), and Greater(NaN, 0) is true
on AVX-512. So the construction compares only values that cannot be NaN and reduces only finite or integer values
where a reduction's answer matters:

    peak  = ReduceMax(x)                                  (may be NaN, or −3.4e38 for an all −inf row)
    first = ReduceMin(Where(x < peak, L, 0..L−1))         int32: the first position holding the peak, or L
    nan   = ReduceMax(Cast(IsNaN(x)))                      does the row hold a NaN (a reduction over 0/1 only)

A row holding a NaN gets value NaN (NaN counts as the maximum, as in numpy); a row where the peak is nowhere
(all −inf on OpenVINO) gets value −inf, as numpy's max gives. Positions are int32 (exact, and what OpenVINO
computes int64 in anyway). `topk` (k = 1) uses `first_maximum`; `heatmap_argmax` uses `first_maximum_2d`, the
same answer in fewer passes over the whole maps (row maxima first), which is what costs on onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from graphsurgery.emit import Emitter, Tensor


@dataclass(frozen=True)
class FirstMaximum:
    """The tensors of `first_maximum`, each with the reduced axis kept (size 1).

    first: int32, the first position holding the maximum; the row length L where it is nowhere (all −inf).
      `first_maximum_2d` leaves it to the runtime where `comparable` is not above −inf or the row holds a NaN.
    value: float32, the maximum; NaN where the row holds a NaN, −inf where the row is all −inf.
    comparable: float32, `value` with 0 in place of NaN: compare this one, never `value`.
    has_nan: bool.
    """

    first: gs.Variable
    value: gs.Variable
    comparable: gs.Variable
    has_nan: gs.Variable


def first_maximum(em: Emitter, x: Tensor, rank: int, length: int) -> FirstMaximum:
    """The first maximum along the last axis of float32 `x` [..., L] (L static, below 2^24)."""
    f32, i32 = np.float32, np.int32
    axis = rank - 1
    peak = em.reduce_max(x, [axis], keepdims=True, dtype=f32)
    below = em.op("Less", [x, peak], dtype=np.bool_)
    candidates = em.op(
        "Where",
        [below, em.const("beyond", length, i32), em.const("positions", np.arange(length, dtype=i32))],
        dtype=i32,
    )
    first = em.reduce_min(candidates, [axis], keepdims=True, dtype=i32)
    has_nan = _holds_nan(em, x, axis)
    found = em.op("Less", [first, em.const("length", length, i32)], dtype=np.bool_)
    value = em.op("Where", [found, peak, em.const("minus_inf", -np.inf, f32)], dtype=f32)
    return FirstMaximum(first=first, has_nan=has_nan,
                        value=em.op("Where", [has_nan, em.const("nan", np.nan, f32), value], dtype=f32),
                        comparable=em.op("Where", [has_nan, em.const("zero", 0.0, f32), value], dtype=f32))


def first_nan(em: Emitter, x: Tensor, rank: int, length: int) -> gs.Variable:
    """int32 position of the first NaN along the last axis (L where there is none), as numpy's argmax reports it."""
    i32 = np.int32
    positions = em.op(
        "Where",
        [
            em.op("IsNaN", [x], dtype=np.bool_),
            em.const("positions", np.arange(length, dtype=i32)),
            em.const("beyond", length, i32),
        ],
        dtype=i32,
    )
    return em.reduce_min(positions, [rank - 1], keepdims=True, dtype=i32)


def _flag_type(em: Emitter) -> tuple[int, type]:
    """The element type 0/1 flags are reduced in: uint8 from opset 13, float before. ONNX lets ReduceMax take
    uint8 from opset 12, but OpenVINO 2026.4 reads ReduceMax-12 over u8 as "Unsupported input type u8": every
    heatmap model at opset 12 failed to compile or convert on graphsurgery's own nodes."""
    return (TensorProto.UINT8, np.uint8) if em.opset >= 13 else (TensorProto.FLOAT, np.float32)


def _holds_nan(em: Emitter, x: Tensor, axis: int) -> gs.Variable:
    """bool: does the row hold a NaN. IsNaN → 0/1 → ReduceMax: a reduction over plain numbers (`_flag_type`)."""
    small = _flag_type(em)
    flags = em.op("Cast", [em.op("IsNaN", [x], dtype=np.bool_)], {"to": small[0]}, dtype=small[1])
    return em.op("Cast", [em.reduce_max(flags, [axis], keepdims=True, dtype=small[1])], {"to": TensorProto.BOOL},
                 dtype=np.bool_)


def first_maximum_2d(em: Emitter, maps: Tensor, flat: Tensor, h: int, w: int) -> FirstMaximum:
    """`first_maximum` of each [H, W] map of float32 `maps` [N, K, H, W] (`flat` is their [N, K, H·W] view), with
    fewer passes over the whole maps: the row maxima, then the first row holding the peak, then that one row.

    On onnxruntime a `Where` over all H·W values costs ≈ 80 µs and every reduction over them a parallel section,
    so this reads the maps in three reductions (row maxima; any value above −inf, which OpenVINO on AVX-512 also
    says of NaN, harmless as a map holding NaN answers NaN; any NaN) and handles the rest on [N, K, H] and
    [N, K, W]. Merging the last two into one reduction over codes 0/1/2 needs a `Where` over the maps: 15 µs
    dearer on onnxruntime (Intel Xeon, 2026-12-02). `first` is left to the runtime where the map holds a NaN or
    its maximum is not above −3.4e38 (callers read it only where `comparable` > 0): there OpenVINO's −3.4e38 for
    a ReduceMax over a row of −inf may pick a row without the peak. A search that finds nothing answers the last
    row or column, so every index read back stays inside the maps whatever a runtime's reductions give.
    """
    f32, i32, b = np.float32, np.int32, np.bool_
    small = _flag_type(em)
    minus_inf = em.const("minus_inf", -np.inf, f32)
    has_nan = _holds_nan(em, flat, 2)                                                               # [N, K, 1]
    above = em.op("Cast", [em.op("Greater", [flat, minus_inf], dtype=b)], {"to": small[0]}, dtype=small[1])
    real = em.op("Cast", [em.reduce_max(above, [2], keepdims=True, dtype=small[1])], {"to": TensorProto.BOOL},
                 dtype=b)
    rows = em.reduce_max(maps, [3], keepdims=False, dtype=f32)                                       # [N, K, H]
    peak = em.op("Where", [real, em.reduce_max(rows, [2], keepdims=True, dtype=f32), minus_inf], dtype=f32)
    row = em.reduce_min(em.op("Where", [em.op("Less", [rows, peak], dtype=b), em.const("last_row", h - 1, i32),
                                        em.const("row_numbers", np.arange(h, dtype=i32))], dtype=i32),
                        [2], keepdims=False, dtype=i32)                                             # [N, K]
    # the row's positions from a table, not row·W + 0..W−1: OpenVINO 2026.4 fuses a Multiply into the int32
    # ReduceMin before it and, from 256 maps on, gets positions beyond the maps
    table = em.const("positions", np.arange(h * w, dtype=i32).reshape(h, w))
    positions = em.op("Gather", [table, row], {"axis": 0}, dtype=i32)                                # [N, K, W]
    if em.opset >= 11:
        values = em.op("GatherElements", [flat, positions], {"axis": 2}, dtype=f32)
    else:  # no GatherElements: keep the chosen row, zero the others, add up (one value plus zeros: exact)
        chosen = em.unsqueeze(em.op("Equal", [em.unsqueeze(row, [2], dtype=i32),
                                              em.const("row_numbers", np.arange(h, dtype=i32))], dtype=b),
                              [3], dtype=b)                                                         # [N, K, H, 1]
        values = em.reduce_sum(em.op("Where", [chosen, maps, em.const("zero", 0.0, f32)], dtype=f32), [2],
                               keepdims=False, dtype=f32)
    column = em.reduce_min(em.op("Where", [em.op("Less", [values, peak], dtype=b), em.const("last_column", w - 1, i32),
                                           em.const("column_numbers", np.arange(w, dtype=i32))], dtype=i32),
                           [2], keepdims=True, dtype=i32)                                           # [N, K, 1]
    if em.opset >= 11:
        first = em.op("GatherElements", [positions, column], {"axis": 2}, dtype=i32)
    else:
        first = em.gather_last(positions, em.op("Cast", [column], {"to": TensorProto.INT64}, dtype=np.int64), 3, w,
                               dtype=i32)
    return FirstMaximum(first=first, has_nan=has_nan,
                        value=em.op("Where", [has_nan, em.const("nan", np.nan, f32), peak], dtype=f32),
                        comparable=em.op("Where", [has_nan, em.const("zero", 0.0, f32), peak], dtype=f32))
