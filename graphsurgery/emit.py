"""Emitting ONNX nodes into a graph for the model's own opset.

Steps never build `gs.Node`s by hand: they call an `Emitter`, which gives every new node and tensor a readable
name under one prefix (`graphsurgery/pre/normalize/Sub`) that cannot collide with the model's names, and which
hides the opset differences (ReduceMax `axes` as an input from 18, Unsqueeze `axes` from 13, no Mod
before 10).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_graphsurgeon as gs

Tensor = gs.Variable | gs.Constant


class Emitter:
    """Adds nodes to `graph` under `prefix`, valid for `opset`."""

    def __init__(self, graph: gs.Graph, opset: int, prefix: str, taken: set[str]):
        self.graph = graph
        self.opset = opset
        self.prefix = prefix
        self._taken = taken  # node and tensor names already used, shared by all emitters of one splice

    def scoped(self, name: str) -> Emitter:
        """An emitter for a sub-scope (`graphsurgery/post/heatmap_argmax`) sharing the taken-name set."""
        return Emitter(self.graph, self.opset, f"{self.prefix}/{name}", self._taken)

    def unique(self, base: str) -> str:
        name, n = f"{self.prefix}/{base}", 1
        while name in self._taken:
            name = f"{self.prefix}/{base}_{n}"
            n += 1
        self._taken.add(name)
        return name

    def const(self, base: str, values: np.ndarray | Sequence | float | int, dtype=None) -> gs.Constant:
        return gs.Constant(self.unique(base), np.asarray(values, dtype=dtype))

    def op(
        self,
        op_type: str,
        inputs: Sequence[Tensor],
        attrs: dict | None = None,
        *,
        dtype=None,
        shape=None,
        num_outputs: int = 1,
    ) -> gs.Variable | list[gs.Variable]:
        """Append one node; returns its output (or outputs when `num_outputs` > 1)."""
        node_name = self.unique(op_type)
        outputs = [
            gs.Variable(self.unique(f"{op_type}_output_{i}"), dtype=dtype if i == 0 else None,
                        shape=shape if i == 0 else None)
            for i in range(num_outputs)
        ]
        self.graph.nodes.append(
            gs.Node(op=op_type, name=node_name, attrs=dict(attrs or {}), inputs=list(inputs), outputs=outputs)
        )
        return outputs[0] if num_outputs == 1 else outputs

    def branch(self, condition: Tensor, then_build, else_build, *, dtype, rank: int) -> gs.Variable:
        """An `If` on a scalar bool: each build gets an emitter writing into its own branch graph (which may read
        any tensor computed before) and returns the branch's result, of `dtype` and `rank`. Only the chosen branch
        runs, so a choice made from the input's sizes costs nothing on the other path."""
        branches = []
        for name, build in (("then", then_build), ("else", else_build)):
            graph = gs.Graph(opset=self.graph.opset)
            result = build(Emitter(graph, self.opset, self.unique(name), self._taken))
            if result.shape is None:  # a branch output must declare its type in full (rank, dims may be unknown)
                result.shape = [None] * rank
            graph.outputs = [result]
            branches.append(graph)
        return self.op("If", [condition], {"then_branch": branches[0], "else_branch": branches[1]}, dtype=dtype,
                       shape=[None] * rank)

    # --- opset-dependent forms -------------------------------------------------------------------------------

    def _reduce(self, op_type: str, axes_input_from: int, x: Tensor, axes: Sequence[int], keepdims: bool,
                **kw) -> gs.Variable:
        if self.opset >= axes_input_from:
            return self.op(op_type, [x, self.const("axes", list(axes), np.int64)], {"keepdims": int(keepdims)}, **kw)
        return self.op(op_type, [x], {"axes": list(axes), "keepdims": int(keepdims)}, **kw)

    def reduce_max(self, x: Tensor, axes: Sequence[int], keepdims: bool = True, **kw) -> gs.Variable:
        return self._reduce("ReduceMax", 18, x, axes, keepdims, **kw)

    def reduce_min(self, x: Tensor, axes: Sequence[int], keepdims: bool = True, **kw) -> gs.Variable:
        return self._reduce("ReduceMin", 18, x, axes, keepdims, **kw)

    def reduce_sum(self, x: Tensor, axes: Sequence[int], keepdims: bool = True, **kw) -> gs.Variable:
        return self._reduce("ReduceSum", 13, x, axes, keepdims, **kw)

    def unsqueeze(self, x: Tensor, axes: Sequence[int], **kw) -> gs.Variable:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const("axes", list(axes), np.int64)], **kw)
        return self.op("Unsqueeze", [x], {"axes": list(axes)}, **kw)

    def float_mod(self, x: Tensor, divisor: float, quotient: Tensor, **kw) -> gs.Variable:
        """x mod divisor for non-negative float x whose integer quotient is already known.

        From opset 10 this is `Mod(fmod=1)` (a float Mod with fmod=0 passes the checker but no runtime accepts
        it); opset 9 has no Mod, so the exact equivalent x − quotient·divisor is emitted (exact for integer
        values below 2^24).
        """
        d = self.const("divisor", divisor, np.float32)
        if self.opset >= 10:
            return self.op("Mod", [x, d], {"fmod": 1}, **kw)
        return self.op("Sub", [x, self.op("Mul", [quotient, d], dtype=np.float32)], **kw)

    def round(self, x: Tensor, **kw) -> gs.Variable:
        """Round half to even (what Round does from opset 11, and OpenCV's cvRound); before 11, the exact
        equivalent for finite x below 2^22: r = Floor(x + 0.5), minus 1 where x was exactly halfway and r is odd."""
        if self.opset >= 11:
            return self.op("Round", [x], **kw)
        f32 = np.float32
        half = self.const("half", 0.5, f32)
        up = self.op("Floor", [self.op("Add", [x, half], dtype=f32)], dtype=f32)
        # up − x lies in (−0.5, 0.5]: halfway where it is not below 0.5; up − 2·floor(up / 2) is 0 or 1
        halfway = self.op("Not", [self.op("Less", [self.op("Sub", [up, x], dtype=f32), half], dtype=np.bool_)],
                          dtype=np.bool_)
        pairs = self.op("Floor", [self.op("Mul", [up, half], dtype=f32)], dtype=f32)
        odd = self.op("Greater", [self.op("Sub", [up, self.op("Add", [pairs, pairs], dtype=f32)], dtype=f32), half],
                      dtype=np.bool_)
        down = self.op("Sub", [up, self.op("Cast", [self.op("And", [halfway, odd], dtype=np.bool_)],
                                           {"to": 1}, dtype=f32)], dtype=f32)
        return self.op("Identity", [down], **kw)

    def gather_last(self, data: Tensor, indices: Tensor, rank: int, length: int, **kw) -> gs.Variable:
        """data[..., indices] along the last axis: data [..., L], int64 indices [..., m] with the same leading dims.

        From opset 11 this is `GatherElements`; opset 9 and 10 have none, so the exact equivalent is emitted: a
        one-hot select (Equal against 0..length-1, Where, ReduceSum), which costs one pass over `data` per index
        and is exact (one value plus zeros), also when other positions hold inf or NaN.
        `rank` is the rank of `data` and `indices`; `length` the static size of data's last axis.
        """
        if self.opset >= 11:
            return self.op("GatherElements", [data, indices], {"axis": rank - 1}, **kw)
        positions = self.const("positions", np.arange(length, dtype=np.int64))
        hit = self.op("Equal", [self.unsqueeze(indices, [rank], dtype=np.int64), positions], dtype=np.bool_)
        dtype = kw.get("dtype") or np.float32
        picked = self.op("Where", [hit, self.unsqueeze(data, [rank - 1], dtype=dtype), self.const("zero", 0, dtype)],
                         dtype=dtype)
        return self.reduce_sum(picked, [rank], keepdims=False, **kw)
