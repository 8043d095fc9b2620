"""Where a top-down recipe's crops sample the image, for many boxes, and what they compute there before their
rounding: the patched graph's against the twin's, exactly.

Verify compares the crops of its ~20 random boxes value by value (`staged`), but crop_boxes' exact box arithmetic
changed where it seldom matters (a constant of its source points, a Mul made Div or an Add made Sub in an error
term, a rounding) moves a crop by one grey level in a few pixels for 0.2–6 % of boxes, each wrong patch on its own
boxes (rounds 61, 64, 66): 20 boxes seldom hold one, and the crop costs ~20 ms a box. Such a change moves first
where the crop samples. So the patched graph is also cut from its `boxes` input to the two tensors crop_boxes'
Floor nodes read (x per crop column [N, w], y per crop row [N, h]: boxes in, no image, no pixel), fed MANY_BOXES
boxes (`samples.many_person_boxes`) and compared exactly with the twin's (`CropBoxes.sampling_positions`): the
graph and its twin compute them with the same float32 roundings on every runtime (`affine_crop`).

The pixel arithmetic after them (masks, the lerp along a row, the blend between rows: fused multiply-adds emulated
with error terms and exact split products) had only the samples' crops, compared after the rounding to integers: a
wrong error term or split (an Add made Sub, a Sub's inputs swapped, the split factor made a divisor) moves the
unrounded value by an ulp in one value in a few hundred, which rounds to another integer in 2–28 boxes of 720
(round 76). So the graph is also cut from the image crop_boxes cuts from and its boxes to the crops before their
rounding (crop_boxes' `BLENDED` tensor), fed BLEND_BOXES boxes on a small random image, and compared exactly with
the twin's (`CropBoxes.blended`): every value, not only those near a half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.compare import FloatResult, compare_either_way
from graphsurgery.cutting import cut_between
from graphsurgery.model import node_reads
from graphsurgery.runners import open_runner
from graphsurgery.samples import MANY_BOX_SIZES
from graphsurgery.scopes import step_nodes
from graphsurgery.steps.base import InputStep, TensorSpec, hw_axes
from graphsurgery.steps.topdown import BLENDED, BOXES, CropBoxes

#: boxes fed to the cut: round 71's rarest wrong arithmetic moves the positions of ~0.03 % of random boxes (of its
#: thin ones, wider or taller than the crop); 4,096 missed it at one seed of three, 8,192 at none. About 0.1 s on
#: ONNX Runtime and 0.1 s plus the compilation (~0.3 s) on OpenVINO, 0.1 s for the boxes and the twin
MANY_BOXES = 8192
#: boxes whose crops are compared before their rounding (of the positions' boxes, the first of BLEND_IMAGE: inside,
#: partly outside, tiny), on a random image of that size: round 76's 13 wrong pixel arithmetics each moved at least
#: 959 of their 589,824 values (seeds 0–3)
BLEND_BOXES = 4
#: (W, H) of that image (`samples.MANY_BOX_SIZES`' smallest): small, so that the crops sample at positions of a few
#: pixels, whose fractions have the low bits that make the lerp's error terms count (on a 640 × 480 image 4 of the
#: 13 moved no value of 4 boxes)
BLEND_IMAGE = (40, 30)
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
    unplaced = "where the crops sample the image was not compared with the twin's on many boxes, nor the crops " \
               "before their rounding ({}): only the crops of the samples' boxes were"
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
    """The tensors computed from the tensor `start` and constants alone (no graph input but it, read by a node or
    its If, Loop or Scan bodies; the cut starts at `start`, whatever makes it): the positions are, and the rounding's
    Floor nodes (before opset 11) read the crops. A Constant node's output too (round 78: a crop constant made a
    Constant node counted as a second image crop_boxes cuts from, and its crops before their rounding went
    uncompared). Round 82: every output of a node with a body was taken for one that reads an input, and a position
    passed through an If was not compared ("read 1 tensors computed from the boxes alone")."""
    reached, tainted = {start}, {value.name for value in graph.input} - {start, *(i.name for i in graph.initializer)}
    for node in graph.node:  # in order: a graph is sorted
        if node_reads(node) & tainted:
            tainted.update(set(node.output) - {start})
        else:
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
    return compare_either_way([graph], twin, tolerances=dict.fromkeys(twin, (0.0, 0.0)),
                              what="the patched graph's crop positions are")


@dataclass(frozen=True)
class BlendCut:
    """A graph cut from the image its crop cuts from (`image`, fed `picture`) and where the crop samples it (`ends`,
    the positions cut's: fed what the graph computed there for the `rows` of the positions' boxes) to the crops
    before their rounding (`end`). Without the box arithmetic it compiles in half the time (OpenVINO: 0.4 s)."""

    model: Path
    image: str
    picture: np.ndarray
    ends: tuple[str, ...]
    rows: np.ndarray
    end: str


def blend_cut(proto: onnx.ModelProto, path: Path, positions: PositionsCut, placed: dict[str, np.ndarray],
              spec: TensorSpec, seed: int, nodes: str = CROP_NODES) -> BlendCut | str:
    """`proto` cut from the image its crop_boxes nodes (named `nodes…`) cut from, in `spec`'s layout and channels,
    and the positions cut's ends (`placed`: what a backend computed there) to the crops before their rounding, saved
    at `path`; else why not. Fed the boxes of the small image among the positions' (`blend_rows`)."""
    made = {name for node in proto.graph.node if node.name.startswith(nodes) for name in node.output}
    outside = {name for node in proto.graph.node if node.name.startswith(nodes) for name in node.input
               if name and name not in made} - {tensor.name for tensor in proto.graph.initializer}
    images = outside - _from_boxes(proto.graph, positions.start)
    end = nodes + BLENDED
    if len(images) != 1 or end not in made:
        return (f"the patched graph's crop_boxes nodes read {len(images)} tensors besides the boxes, not 1"
                if len(images) != 1 else f"the patched graph has no {end!r}")
    height, width = _blend_size(spec)
    channels = spec.shape[1 if spec.layout == "NCHW" else 3]
    picture = np.random.default_rng(seed).integers(0, 256, (1, height, width, channels)).astype(np.float32)  # as
    # `cast` makes it
    picture = np.ascontiguousarray(picture.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else picture)
    rows = blend_rows(len(placed[positions.ends[0]]))
    image = images.pop()
    if not cut_between(proto, [], {image: picture, **{name: placed[name][rows] for name in positions.ends}}, [end],
                       path):
        return ("the graph cannot be cut there: constants in external data, the crops have no type, or they need "
                "more than the image and the positions")
    return BlendCut(path, image, picture, positions.ends, rows, end)


def _blend_size(spec: TensorSpec) -> tuple[int, int]:
    """The (H, W) of the image the crops before rounding are cut from: BLEND_IMAGE's, but the tensor's where it is
    fixed (round 79: a caller's fixed [1, 3, 100, 80] took a 40 × 30 image, which the runtime refused: an internal
    error). Its boxes are BLEND_IMAGE's all the same: they sample the same positions of an image of another size."""
    return tuple(dim if isinstance(dim, int) else default
                 for dim, default in zip((spec.shape[axis] for axis in hw_axes(spec.layout)), BLEND_IMAGE[::-1]))


def blend_rows(count: int) -> np.ndarray:
    """Which of `count` boxes of `many_person_boxes` the crops before rounding are compared on: the first
    BLEND_BOXES of BLEND_IMAGE's."""
    return np.arange(MANY_BOX_SIZES.index(BLEND_IMAGE), count, len(MANY_BOX_SIZES))[:BLEND_BOXES]


def crop_spec(caller: TensorSpec, steps: Sequence[InputStep]) -> TensorSpec:
    """The tensor crop_boxes cuts from: the caller's (`caller`) through the input steps before it."""
    for step in takewhile(lambda step: not isinstance(step, CropBoxes), steps):
        caller = step.spec_after(caller)
    return caller


def graph_blended(cut: BlendCut, backend: str, placed: dict[str, np.ndarray]) -> np.ndarray:
    """The crops before their rounding that the cut graph computes on `backend`, where the graph's positions cut
    computed `placed` on it."""
    with open_runner(backend, cut.model) as run:
        return run({cut.image: cut.picture, **{name: placed[name][cut.rows] for name in cut.ends}})[cut.end]


def twin_blended(steps: Sequence[InputStep], spec: TensorSpec, cut: BlendCut, boxes: np.ndarray) -> np.ndarray:
    """The twin's crops before their rounding (`CropBoxes.blended`) for the cut's rows of `boxes` (the positions'):
    computed once for every backend."""
    crop = next(step for step in steps if isinstance(step, CropBoxes))
    return crop.blended(cut.picture, spec, boxes[cut.rows])


def blend_results(graph: np.ndarray, twin: np.ndarray) -> list[FloatResult]:
    """The graph's crops before their rounding (`graph_blended`) against the twin's (`twin_blended`), exactly."""
    return compare_either_way([{"crops before rounding": graph}], {"crops before rounding": twin},
                              tolerances={"crops before rounding": (0.0, 0.0)},
                              what="the patched graph's crops before their rounding are")
