"""Verify's comparison of what a detector's nms reads, at every anchor: the decoded candidates and class scores.

Detections show only what nms keeps, and the decoder probe scores some anchors, so a decode wrong where nothing is
kept passed: a YOLOX grid entry swapped inside a level FAILed at 1 to 3 seeds of 7, never at the default (rounds 61
and 64), and a DFL projection × 1.01 or a level's stride × 0.99 only where a detection landed on it. So the patched
graph is also cut from the network output to the two tensors its nms step reads (`nms.nms_reads`, found by what the
step reads, as `staged` finds the network input), fed the network output the twins decoded (each batch's, and the
probe's), and compared value by value with what the nms twin read (`twins.decision_inputs`), at the decode step's
declared float tolerance raised to the model floor (`tolerances.model_float`), or at the caller's where set by name
(`tolerances.nms_read_tolerances`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.compare import FloatResult, compare_either_way
from graphsurgery.cutting import cut_between, declared_type
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import Recipe
from graphsurgery.runners import open_runner
from graphsurgery.steps.base import Comparison
from graphsurgery.steps.nms import Nms, nms_reads
from graphsurgery.tolerances import model_float

#: what nms reads, as the twins name it (`decision_inputs`)
READS = ("candidates", "class_scores")


@dataclass(frozen=True)
class NmsCut:
    """The patched graph cut from its network output `start` (of element type `dtype`) to what nms reads (`ends`)."""

    model: Path
    start: str
    dtype: np.dtype
    ends: tuple[str, ...]
    comparison: Comparison  # the decode step's, raised to the model floor


def nms_cut(recipe: Recipe, facts: ModelFacts, proto: onnx.ModelProto | None, head: np.ndarray, folder: Path
            ) -> tuple[NmsCut | None, str | None]:
    """The cut, where the recipe decodes a head for an nms and `proto` (None: an IR) makes the network output and
    two tensors its nms step reads; `head`: a network output, for the cut's input where the graph declares none.
    Else None (the detections alone are compared), with a note for a recipe that has such steps."""
    steps = recipe.output.steps if recipe.output else ()
    decode = next((step for step in steps if "candidates" in step.writes()), None)
    if decode is None or not any(isinstance(step, Nms) for step in steps):
        return None, None
    unread = "what nms reads (each anchor's candidates and class scores) was not compared with the twins' ({}): " \
             "only the detections were"
    if proto is None:
        return None, unread.format("a patched IR cannot be cut")
    ends = tuple(sorted(nms_reads(proto.graph)))
    made = {name for node in proto.graph.node for name in node.output}
    if len(ends) != len(READS) or facts.output_name not in made:
        return None, unread.format(f"the patched graph's nms nodes read {len(ends)} tensors, not 2, or it makes no "
                                   f"{facts.output_name!r}")
    path = folder / "nms_reads.onnx"
    if not cut_between(proto, [], {facts.output_name: head}, ends, path):
        return None, unread.format("the graph cannot be cut there: constants in external data, what nms reads "
                                   "has no type, or it needs more than the network output")
    return NmsCut(path, facts.output_name, declared_type(path, facts.output_name), ends,
                  model_float(decode.writes()["candidates"])), None


def graph_reads(cut: NmsCut, backend: str, heads: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """What nms reads in the patched graph on `backend`, per network output of `heads`."""
    with open_runner(backend, cut.model) as run:
        return [run({cut.start: head.astype(cut.dtype)}) for head in heads]


def reads_results(cut: NmsCut, graph: Sequence[dict[str, np.ndarray]], twins: dict[str, np.ndarray],
                  given: Mapping[str, Comparison] | None = None) -> list[FloatResult]:
    """The graph's candidates and class scores (`graph_reads`, batches in order) against the twins' (joined), each
    graph tensor taken as the one of the twin's shape (`compare_either_way`: a head of 4 anchors and 4 classes fits
    both ways), a batch at a time; each at the cut's comparison or, where the caller set one, at `given`'s (by READS
    key: `tolerances.nms_read_tolerances`)."""
    compared = {key: (given or {}).get(key, cut.comparison) for key in READS}
    return compare_either_way(graph, {key: np.asarray(twins[key], np.float32) for key in READS},
                              tolerances={key: (c.atol, c.rtol) for key, c in compared.items()},
                              what="the patched graph's nms reads")
