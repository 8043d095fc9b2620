"""Where a top-down recipe's crops sample the image, for many boxes: the patched graph's positions against the twin's.

Verify compares the crops of its ~20 random boxes value by value (`staged`), but crop_boxes' exact box arithmetic
changed where it seldom matters (a constant of its source points, a Mul made Div or an Add made Sub in an error
term, a rounding) moves a crop by one grey level in a few pixels for 0.2–6 % of boxes, each wrong patch on its own
boxes (rounds 61, 64, 66): 20 boxes seldom hold one, and the crop costs ~20 ms a box. Such a change moves first
where the crop samples. So the patched graph is also cut from its `boxes` input to the two tensors crop_boxes'
Floor nodes read (x per crop column [N, w], y per crop row [N, h]: boxes in, no image, no pixel), fed MANY_BOXES
boxes (`samples.many_person_boxes`) and compared exactly with the twin's (`CropBoxes.sampling_positions`): the
graph and its twin compute them with the same float32 roundings on every runtime (`affine_crop`). The crop's pixel
arithmetic after them is the same for every box and is proven on the samples' crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.compare import FloatResult, compare_either_way
from graphsurgery.decoder_probe import cut_between
from graphsurgery.runners import open_runner
from graphsurgery.scopes import step_nodes
from graphsurgery.steps.base import InputStep
from graphsurgery.steps.topdown import BOXES, CropBoxes

#: boxes fed to the cut: round 71's rarest wrong arithmetic moves the positions of ~0.03 % of random boxes (of its
#: thin ones, wider or taller than the crop); 4,096 missed it at one seed of three, 8,192 at none. About 0.1 s on
#: ONNX Runtime and 0.1 s plus the compilation (~0.3 s) on OpenVINO, 0.1 s for the boxes and the twin
MANY_BOXES = 8192
#: where splice puts the crop step's nodes (`graphsurgery/pre/crop_boxes/…`)
CROP_NODES = step_nodes(CropBoxes.side, CropBoxes.step_name)
#: the twin's positions, in the order reported
POSITIONS = ("x per crop column", "y per crop row")


@dataclass(frozen=True)
class PositionsCut:
    """A graph cut from the tensor it crops boxes from (`start`) to the two tensors its crop's Floor nodes read."""

    model: Path
    start: str
    ends: tuple[str, ...]


def positions_cut(steps: Sequence[InputStep], proto: onnx.ModelProto | None, boxes: np.ndarray, folder: Path
                  ) -> tuple[PositionsCut | None, str | None]:
    """Verify's cut, to be fed `boxes`, where the input steps crop boxes (`steps`, bound to the model) and `proto`
    (None: an IR) has the crop's two position tensors. Else None, with a note for a recipe that crops."""
    if not any(isinstance(step, CropBoxes) for step in steps):
        return None, None
    unplaced = "where the crops sample the image was not compared with the twin's on many boxes ({}): only the " \
               "crops of the samples' boxes were"
    if proto is None:
        return None, unplaced.format("a patched IR cannot be cut")
    cut = cut_at_positions(proto, folder / "crop_positions.onnx", boxes)
    return (cut, None) if isinstance(cut, PositionsCut) else (None, unplaced.format(cut))


def cut_at_positions(proto: onnx.ModelProto, path: Path, boxes: np.ndarray, start: str = BOXES.name,
                     nodes: str = CROP_NODES) -> PositionsCut | str:
    """`proto` cut from the tensor `start` (to be fed `boxes`) to the two tensors the Floor nodes named `nodes…` read
    that are computed from it alone (as a crop's positions are), saved at `path`; else why not (`chain --check` cuts
    a chained graph's pose part, whose nodes and boxes are named otherwise)."""
    floors = [node for node in proto.graph.node if node.op_type == "Floor" and node.name.startswith(nodes)]
    ends = tuple(node.input[0] for node in floors if node.input and node.input[0] in _from_boxes(proto.graph, start))
    if len(ends) != len(POSITIONS):
        return (f"the patched graph's crop_boxes Floor nodes read {len(ends)} tensors computed from the boxes alone, "
                "not 2")
    if not cut_between(proto, [], {start: boxes}, ends, path):
        return "the graph cannot be cut there: constants in external data, or a position has no type"
    return PositionsCut(path, start, ends)


def _from_boxes(graph: onnx.GraphProto, start: str) -> set[str]:
    """The tensors computed from the tensor `start` and constants alone (no graph input but it, no subgraph; the cut
    starts at `start`, whatever makes it): the positions are, and the rounding's Floor nodes (before opset 11) read
    the crops."""
    reached, tainted = {start}, {value.name for value in graph.input} - {start, *(i.name for i in graph.initializer)}
    for node in graph.node:  # in order: a graph is sorted
        reads = {name for name in node.input if name}
        if reads & tainted or any(attribute.type == onnx.AttributeProto.GRAPH for attribute in node.attribute):
            tainted.update(set(node.output) - {start})
        elif reads & reached:
            reached.update(node.output)
    return reached


def graph_positions(cut: PositionsCut, backend: str, boxes: np.ndarray) -> dict[str, np.ndarray]:
    """The positions the cut graph computes on `backend` for `boxes`, by tensor name."""
    with open_runner(backend, cut.model) as run:
        return run({cut.start: boxes})


def twin_positions(steps: Sequence[InputStep], boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Where the crop twin samples for `boxes` (`CropBoxes.sampling_positions`), by POSITIONS: computed once for every
    backend."""
    crop = next(step for step in steps if isinstance(step, CropBoxes))
    return dict(zip(POSITIONS, crop.sampling_positions(boxes), strict=True))


def positions_results(graph: dict[str, np.ndarray], twin: dict[str, np.ndarray]) -> list[FloatResult]:
    """The graph's positions (`graph_positions`) against the twin's (`twin_positions`), exactly
    (`compare_either_way`: a square crop's two fit both ways)."""
    return compare_either_way([graph], twin, atol=0.0, rtol=0.0, what="the patched graph's crop positions are")
