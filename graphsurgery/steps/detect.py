"""Detector post-processing: a YOLO head's tensor → candidate boxes and class scores → (non-maximum suppression, in
`steps/nms.py`) → boxes in the caller's pixels.

The head layouts are the exports' own: ultralytics YOLOv8 ([N, 4 + C, A]: cx, cy, w, h in input pixels, then
class probabilities), YOLOv5 ([N, A, 5 + C]: cx, cy, w, h, objectness, class probabilities) and YOLOX before its
`decode_outputs` ([N, A, 5 + C]: offsets on each stride's grid and log sizes, objectness, class probabilities).
`dfl_boxes` decodes the raw distribution-focal heads (YOLOv8 before its DFL, GFL/PicoDet).
`DetectionComparison` (detections compared as sets) and the shape checks (`static_dim`, `to_float`) are here because
`nms` and `boxes_to_image` both use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import GEOMETRY, Comparison, OutputStep, StepError

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts

CANDIDATES = Comparison("float", rtol=1e-5, atol=1e-4)
#: a head's strides, finest first: each between 1 and 1024 pixels
Strides = tuple[Annotated[int, Field(ge=1, le=1024)], ...]


@dataclass(frozen=True)
class DetectionComparison(Comparison):
    """Detections are compared as sets (`compare_detections`): per image the same count, and each reference
    detection matched by one of the same class with IoU ≥ `iou`, its corners within `box_atol` + `box_rtol` × the
    largest |coordinate| of the two boxes (pixels), and its score within atol or rtol. `part` says which of the
    group's outputs this is; the thresholds tell near ties (a score at the threshold or at the max_detections cut,
    an overlap at the IoU threshold) from real differences. The corner tolerance is relative to the box's largest
    coordinate, not to each corner: a corner near 0 is computed from a centre and a size of hundreds of pixels."""

    part: Literal["boxes", "scores", "classes", "count"] = "boxes"
    iou: float = 0.99
    #: IoU ≥ 0.99 alone let every edge off by 0.6 % pass (round 52); right patches of the YOLOv8 recipe differ by
    #: 1.2e-4 px at most (3e-7 of the largest coordinate) between the twins and either runtime and across them
    box_atol: float = 1e-4
    box_rtol: float = 1e-4
    #: the head's own relative resolution (one float16 step for a float16 head: `twins.float16_resolution`), which
    #: `compare_detections._reach` carries to the caller's pixels; no tolerance of the caller's loosens it
    box_resolution: float = 0.0
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    per_class: bool = True
    best_class_only: bool = False


def static_dim(shape, axis: int, what: str) -> int:
    dim = shape[axis] if shape is not None and len(shape) == 3 else None
    if not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise StepError(f"{what} needs a 3-D tensor with a static size on axis {axis}; it is "
                        f"{list(shape) if shape is not None else 'of unknown shape'}",
                        "export the model with a fixed input size (only the batch free)")
    return int(dim)


def batch_dim(shape) -> int | str:
    """The batch as the detections declare it: the model's where it fixes one (a batch-1 export answers [1, D, 4],
    as the README shows), else the dim "N" of their own (a dynamic batch's rows are judged by what they answer)."""
    dim = shape[0] if shape is not None and len(shape) else None
    return int(dim) if isinstance(dim, (int, np.integer)) and dim > 0 else "N"


def to_float(em: Emitter, x: gs.Variable) -> gs.Variable:
    if x.dtype is None or np.dtype(x.dtype) == np.float32:
        return x
    return em.op("Cast", [x], {"to": TensorProto.FLOAT}, dtype=np.float32, shape=x.shape)


def anchor_grid(step: str, strides: tuple[int, ...], facts: ModelFacts | None, anchors: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each anchor's cell (x, y) [A, 2] and stride [A, 1], float32, levels finest first and row-major within one:
    the grid of a head over the model's static input size (yolox, DFL heads)."""
    if facts is None or facts.input_size is None:
        raise StepError(f"{step} needs the model's input size, which is not static",
                        "export the model with a fixed input size")
    width, height = facts.input_size
    uneven = [stride for stride in strides if width % stride or height % stride]
    if uneven:  # a head's levels divide its input (ultralytics makes imgsz a multiple of the largest stride); 31
        # for 32 made the same cell count on 160×128, and boxes 3 % off that verify could not see (round 37)
        raise StepError(f"the strides {list(strides)} do not divide the {width}×{height} input ({uneven[0]})",
                        "set `strides` to the head's; a head whose grid rounds a side up (PaddleDetection's "
                        "PicoDet: ceil(side / stride) cells) is not one this step reads")
    cells, sizes = [], []
    for stride in strides:
        rows, cols = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        sizes.append(np.full((rows * cols, 1), stride))
    cells, sizes = np.concatenate(cells), np.concatenate(sizes)
    if len(cells) != anchors:
        raise StepError(f"the strides {list(strides)} make {len(cells)} cells on a {width}×{height} input, the head "
                        f"has {anchors} anchors", "set `strides` to the head's")
    return cells.astype(np.float32), sizes.astype(np.float32)


#: Ops that choose detections: a head read after one is already decoded and suppressed
SUPPRESSIONS = {"NonMaxSuppression", "EfficientNMS_TRT", "BatchedNMS_TRT", "BatchedNMSDynamic_TRT"}


def _in_words(node: gs.Node) -> str:
    article = "an" if node.op[:1] in "AEIOU" else "a"  # round 106: "a Exp node"
    return f"{node.op} node {node.name!r}" if node.name else f"{article} {node.op} node"


def _onnx_producer(x: gs.Variable, depth: int) -> gs.Node | None:
    """The ONNX-domain node that makes `x`; None for a graph input, another domain's op, or past `depth`."""
    node = x.inputs[0] if len(x.inputs) == 1 and depth > 0 else None
    return node if node is not None and node.domain in (None, "", "ai.onnx") else None


def suppressed_by(x: gs.Variable) -> str | None:
    """The node, in words, of a non-maximum suppression `x` is computed from (an ultralytics export with nms=True,
    [1, 300, 6] detections); None where none is. Its rows are detections, not a raw head's anchors: yolo_boxes read
    them as cx, cy, w, h of 300 anchors (round 102: applied without a word, verify PASSed)."""
    seen, todo = set(), [x]
    while todo:
        tensor = todo.pop()
        for node in tensor.inputs:
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op in SUPPRESSIONS:
                return _in_words(node)
            todo += list(node.inputs)
    return None


def refuse_suppressed(step: str, x: gs.Variable) -> None:
    """`step` (a head's decode) refused where the model output it reads is already after a suppression."""
    if (made := suppressed_by(x)) is not None:
        raise StepError(f"the model output is computed after {made}: its rows are detections already decoded and "
                        f"suppressed, not a raw head, and {step} would decode them again",
                        "use the model's detections as they are (drop the decode and nms steps, and "
                        "boxes_to_image: the whole output section where that is all of it; the boxes stay in "
                        "model-input pixels), or export the model without its NMS")


def exp_decoded(x: gs.Variable, depth: int = 8) -> str | None:
    """The Exp node, in words, of a YOLOX head the model decodes itself (`decode_outputs`: a Concat of (xy + grid) ·
    stride, exp(wh) · stride and the scores; before YOLOX 0.2 the same written in place, which torch exports as
    ScatterND of those updates), seen through Identity, Cast and Reshape; None where the output is neither holding
    a Mul of an Exp."""
    node = _onnx_producer(x, depth)
    if node is None:
        return None
    if node.op in ("Identity", "Cast", "Reshape"):
        return exp_decoded(node.inputs[0], depth - 1)
    if node.op == "ScatterND" and len(node.inputs) == 3:  # round 103: `y[..., 2:4] = torch.exp(…) * strides`
        return _exp_times(node.inputs[2], depth - 1) or exp_decoded(node.inputs[0], depth - 1)
    if node.op != "Concat":
        return None
    return next((made for piece in node.inputs if (made := _exp_times(piece, depth - 1)) is not None), None)


def _exp_times(x: gs.Variable, depth: int) -> str | None:
    """The Exp node, in words, of `x` = exp(·) · something, seen through the Reshape and Expand of an update."""
    node = _onnx_producer(x, depth)
    if node is not None and node.op in ("Reshape", "Expand", "Identity", "Cast"):
        return _exp_times(node.inputs[0], depth - 1)
    for operand in node.inputs if node is not None and node.op == "Mul" else ():
        exp = _onnx_producer(operand, depth)
        if exp is not None and exp.op == "Exp":
            return _in_words(exp)
    return None


def sigmoid_made(x: gs.Variable, depth: int = 8) -> str | None:
    """The Sigmoid node, in words, that made `x`'s last rows along axis 1 (a raw head's class scores, after its box
    rows); None where they are not known to be a Sigmoid's (`rows_made_by`)."""
    return rows_made_by(x, "Sigmoid", -1, depth)


def softmax_made(x: gs.Variable, depth: int = 8) -> str | None:
    """The Softmax node, in words, that made `x`'s first rows along axis 1 (a DFL head's box bins, before its class
    rows): a head whose bins the model already softmaxes (round 104: dfl_boxes softmaxed them again)."""
    return rows_made_by(x, "Softmax", 0, depth)


def rows_made_by(x: gs.Variable, op: str, piece: int, depth: int) -> str | None:
    """The `op` node, in words, that made the rows of `x` along axis 1 that a Concat along axis 1 holds in its
    `piece` (0: the first, −1: the last), seen through Identity, Cast, Reshape and Transpose, and every piece of a
    Concat along another axis (the levels side by side); None where they are not known to be an `op`'s."""
    node = _onnx_producer(x, depth)
    if node is None:
        return None
    if node.op == op:
        return _in_words(node)
    if node.op in ("Identity", "Cast", "Reshape", "Transpose"):
        return rows_made_by(node.inputs[0], op, piece, depth - 1)
    axis = node.attrs.get("axis") if node.op == "Concat" else None
    rank = len(x.shape) if x.shape is not None else None
    if axis is None or (axis < 0 and rank is None):
        return None
    if axis == 1 or (rank is not None and axis % rank == 1):
        return rows_made_by(node.inputs[piece], op, piece, depth - 1)
    made = [rows_made_by(part, op, piece, depth - 1) for part in node.inputs]
    return made[0] if made and all(made) else None


@register
class YoloBoxes(OutputStep):
    """Read a YOLO head: candidate boxes (x1, y1, x2, y2 in model-input pixels) and per-class scores.

    Reads "output", writes "candidates" [N, A, 4] and "class_scores" [N, C, A] (float comparisons), what `nms`
    reads. `format`:
    - v8 (ultralytics YOLOv8/v11 export): [N, 4 + C, A], rows cx, cy, w, h then class probabilities;
    - v5 (YOLOv5/v7 export): [N, A, 5 + C], cx, cy, w, h, objectness, class probabilities; score = obj · class;
    - yolox (YOLOX export without decode_in_inference): [N, A, 5 + C] on the grids of `strides` (finest first,
      row-major, needs the model's static input size): cx, cy = (offset + cell) · stride, w, h = exp(·) · stride;
      score = obj · class. A head the model decodes itself (exported with decode_in_inference: exp(wh) · stride
      in the graph) is refused: read it with v5.
    Corners are centre ∓ size / 2 in float32. A model output computed after a NonMaxSuppression (an export with
    its NMS: detections, not a head) is refused here and by dfl_boxes; so is a head whose box rows a Sigmoid
    made (0–1 values the model does not decode).
    """

    step_name: ClassVar[str] = "yolo_boxes"
    min_opset: ClassVar[int] = 11
    format: Literal["v8", "v5", "yolox"] = Field(default="v8", description="the head's layout (v8, v5, yolox)")
    strides: Strides = Field(default=(8, 16, 32), min_length=1, max_length=8,
                             description="yolox: the strides of the head's levels, finest first (1 to 8 of them, "
                                         "each 1 to 1024)")


    def writes(self) -> dict[str, Comparison]:
        return {"candidates": CANDIDATES, "class_scores": CANDIDATES}

    def _sizes(self, shape) -> tuple[int, int]:
        """(C, A): classes and anchors of a head of this shape."""
        if self.format == "v8":
            rows, anchors = static_dim(shape, 1, "yolo_boxes (v8)"), static_dim(shape, 2, "yolo_boxes (v8)")
            classes = rows - 4
        else:
            anchors, rows = static_dim(shape, 1, f"yolo_boxes ({self.format})"), static_dim(shape, 2, "yolo_boxes")
            classes = rows - 5
        if classes < 1:
            layout = "[N, 4 + C, A]" if self.format == "v8" else "[N, A, 5 + C]"
            raise StepError(f"yolo_boxes format {self.format} reads {layout}, and the output {list(shape)} leaves "
                            f"no class scores", "check `format` (v8 puts the anchors last, v5 and yolox first)")
        return classes, anchors

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        f32, i64 = np.float32, np.int64
        refuse_suppressed("yolo_boxes", env["output"])
        if (made := rows_made_by(env["output"], "Sigmoid", 0, 8)) is not None:  # round 107: a raw YOLOv5 head
            # (every row sigmoided, not decoded) was read as centres and sizes in pixels, and verify PASSed
            raise StepError(f"the model output's box rows are made by {made}: 0–1 values of a head the model does "
                            f"not decode, not centres and sizes in input pixels, and format {self.format} would "
                            "read them as pixels", "export the model with its head's decode (as the ultralytics "
                            "and YOLOv5 exports write it; YOLOX: its raw head's box rows are no Sigmoid's)")
        if self.format == "yolox" and (made := exp_decoded(env["output"])) is not None:
            # round 102: an export with decode_in_inference got the grid and exp again, and verify PASSed
            raise StepError(f"the model decodes its YOLOX head itself (exp(wh) · stride by {made}): format yolox "
                            "would add the grid and exponentiate again", "set `format: v5` (centres and sizes in "
                            "input pixels, objectness, class scores), or export with decode_in_inference off")
        head = to_float(em, env["output"])
        classes, anchors = self._sizes(head.shape)

        def cut(start: int, end: int, axis: int) -> gs.Variable:
            return em.op("Slice", [head, em.const("start", [start], i64), em.const("end", [end], i64),
                                   em.const("axis", [axis], i64)], dtype=f32)

        if self.format == "v8":
            centre_size = em.op("Transpose", [cut(0, 4, 1)], {"perm": [0, 2, 1]}, dtype=f32)
            scores = cut(4, 4 + classes, 1)
        else:
            centre_size = cut(0, 4, 2)
            scores = em.op("Transpose", [em.op("Mul", [cut(4, 5, 2), cut(5, 5 + classes, 2)], dtype=f32)],
                           {"perm": [0, 2, 1]}, dtype=f32)
        centre = em.op("Slice", [centre_size, em.const("start", [0], i64), em.const("end", [2], i64),
                                 em.const("axis", [2], i64)], dtype=f32)
        size = em.op("Slice", [centre_size, em.const("start", [2], i64), em.const("end", [4], i64),
                               em.const("axis", [2], i64)], dtype=f32)
        if self.format == "yolox":
            cells, strides = anchor_grid("yolo_boxes format yolox", self.strides, facts, anchors)
            stride = em.const("stride", strides[None])
            centre = em.op("Mul", [em.op("Add", [centre, em.const("cells", cells[None])], dtype=f32), stride],
                           dtype=f32)
            size = em.op("Mul", [em.op("Exp", [size], dtype=f32), stride], dtype=f32)
        half = em.op("Mul", [size, em.const("half", 0.5, f32)], dtype=f32)
        corners = em.op("Concat", [em.op("Sub", [centre, half], dtype=f32), em.op("Add", [centre, half], dtype=f32)],
                        {"axis": 2}, dtype=f32)
        batch = head.shape[0] if head.shape else None
        corners.shape, scores.shape = [batch, anchors, 4], [batch, classes, anchors]
        return {"candidates": corners, "class_scores": scores}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        centre, size, scores = self.decode(np.asarray(env["output"], np.float32), facts)
        half = size * np.float32(0.5)
        return {"candidates": np.concatenate([centre - half, centre + half], axis=2),
                "class_scores": np.ascontiguousarray(scores)}

    def decode(self, head: np.ndarray, facts: ModelFacts | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The head's box centres and sizes [N, A, 2] in input pixels and class scores [N, C, A] (numpy)."""
        classes, anchors = self._sizes(head.shape)
        if self.format == "v8":
            centre_size, scores = head[:, :4].transpose(0, 2, 1), head[:, 4:]
        else:
            centre_size, scores = head[..., :4], (head[..., 4:5] * head[..., 5:]).transpose(0, 2, 1)
        centre, size = centre_size[..., :2], centre_size[..., 2:]
        if self.format == "yolox":
            cells, strides = anchor_grid("yolo_boxes format yolox", self.strides, facts, anchors)
            centre, size = (centre + cells) * strides, np.exp(size) * strides
        return centre, size, scores


@register
class DflBoxes(OutputStep):
    """Decode a distribution-focal (DFL) head: candidate boxes from per-side bin distributions, and class scores.

    Reads "output" [N, 4 · bins + C, A] (the raw head of YOLOv8-style
    and GFL/PicoDet-style detectors, levels concatenated finest first,
    row-major; for heads exported per level, concatenate them first),
    writes "candidates" [N, A, 4] (x1, y1, x2, y2 in model-input pixels)
    and "class_scores" [N, C, A], what `nms` reads. Each side's distance
    (left, top, right, bottom, `bins` logits each) is the expectation of
    0 … bins − 1 under the softmax of its logits, in stride units, from
    the cell's anchor point (col + `cell_offset`, row + `cell_offset`):
    x1 = (anchor x − left) · stride, x2 = (anchor x + right) · stride, …
    `scores: sigmoid` (default) applies the sigmoid to the class logits
    (refused where a Sigmoid node already made them); `none` takes them as
    they are. `bin_scores: softmax` (default) applies the softmax to the
    box bins (refused where a Softmax node already made them); `none`
    weighs the model's own probabilities as they are. Needs the model's
    static input size
    (the grids of `strides`). YOLOv8: bins 16, cell_offset 0.5;
    PicoDet: bins 8 (reg_max 7), cell_offset 0.5.
    """

    step_name: ClassVar[str] = "dfl_boxes"
    min_opset: ClassVar[int] = 11
    bins: int = Field(default=16, ge=2, le=256, description="bins per box side (YOLOv8 16; PicoDet reg_max + 1 = 8)")
    strides: Strides = Field(default=(8, 16, 32), min_length=1, max_length=8,
                             description="the strides of the head's levels, finest first (1 to 8 of them, "
                                         "each 1 to 1024)")
    cell_offset: float = Field(default=0.5, ge=0.0, le=1.0, description="anchor point within its cell")
    scores: Literal["sigmoid", "none"] = Field(default="sigmoid", description="what the class logits need")
    bin_scores: Literal["softmax", "none"] = Field(default="softmax", description="what the box bins need: softmax "
                                                   "(logits), none (the model's own softmax made them)")


    def writes(self) -> dict[str, Comparison]:
        return {"candidates": CANDIDATES, "class_scores": CANDIDATES}

    def _sizes(self, shape) -> tuple[int, int]:
        rows, anchors = static_dim(shape, 1, "dfl_boxes"), static_dim(shape, 2, "dfl_boxes")
        if rows <= 4 * self.bins:
            raise StepError(f"dfl_boxes with {self.bins} bins reads [N, 4·{self.bins} + C, A]; the output "
                            f"{list(shape)} leaves no class scores", "set `bins` to the head's (YOLOv8 16, PicoDet 8)")
        return rows - 4 * self.bins, anchors

    def anchors(self, facts: ModelFacts | None, anchors: int) -> tuple[np.ndarray, np.ndarray]:
        """Each anchor's point (x, y) in stride units [A, 2] and its stride [A, 1], float32, in the head's order."""
        cells, strides = anchor_grid("dfl_boxes", self.strides, facts, anchors)
        return cells + np.float32(self.cell_offset), strides

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        f32, i64 = np.float32, np.int64
        refuse_suppressed("dfl_boxes", env["output"])
        head = to_float(em, env["output"])
        classes, anchors = self._sizes(head.shape)
        points, strides = self.anchors(facts, anchors)
        bins = 4 * self.bins
        if self.scores == "sigmoid" and (made := sigmoid_made(env["output"])) is not None:
            # round 102: a head whose class scores a Sigmoid already made got a second one (every score ≥ 0.5), and
            # verify's twin did the same and PASSed
            raise StepError(f"the model's class scores (the head's rows from {bins}) are already made by {made}: "
                            "dfl_boxes would apply the sigmoid again", "set `scores: none` in the dfl_boxes step "
                            "(a head the model decodes itself, 4 box rows then the scores as ultralytics exports "
                            "it, is read by `yolo_boxes: {format: v8}`)")  # round 103: the zoo's YOLOv8 got only
            # `scores: none`, and dfl_boxes then read its 4 box rows and 60 class rows as DFL bins, in silence
        if self.bin_scores == "softmax" and (made := softmax_made(env["output"])) is not None:
            raise StepError(f"the model's box bins (the head's first {bins} rows) are already made by {made}: "
                            "dfl_boxes would apply the softmax again", "set `bin_scores: none` in the dfl_boxes step")
        logits = em.op("Slice", [head, em.const("start", [0], i64), em.const("end", [bins], i64),
                                 em.const("axis", [1], i64)], dtype=f32)
        # [N, 4·bins, A] → [N, 4, bins, A] → [N, 4, A, bins]: the softmax over the last axis, valid at every opset
        sides = em.op("Transpose", [em.op("Reshape", [logits, em.const("sides", [0, 4, self.bins, anchors], i64)],
                                          dtype=f32)], {"perm": [0, 1, 3, 2]}, dtype=f32)
        weights = em.op("Softmax", [sides], {"axis": 3}, dtype=f32) if self.bin_scores == "softmax" else sides
        expectation = em.op("MatMul", [weights, em.const("bin_values", np.arange(self.bins, dtype=f32)[:, None])],
                            dtype=f32)
        distances = em.op("Transpose", [em.op("Reshape", [expectation, em.const("flat", [0, 4, anchors], i64)],
                                              dtype=f32)], {"perm": [0, 2, 1]}, dtype=f32)           # [N, A, 4]
        signs = em.const("signs", np.array([-1, -1, 1, 1], f32))
        corners = em.op("Mul", [em.op("Add", [em.const("points", np.tile(points, 2)[None]),
                                              em.op("Mul", [distances, signs], dtype=f32)], dtype=f32),
                                em.const("stride", strides[None])], dtype=f32)
        scores = em.op("Slice", [head, em.const("start", [bins], i64), em.const("end", [bins + classes], i64),
                                 em.const("axis", [1], i64)], dtype=f32)
        if self.scores == "sigmoid":
            scores = em.op("Sigmoid", [scores], dtype=f32)
        batch = head.shape[0] if head.shape else None
        corners.shape, scores.shape = [batch, anchors, 4], [batch, classes, anchors]
        return {"candidates": corners, "class_scores": scores}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        head = np.asarray(env["output"], np.float32)
        classes, anchors = self._sizes(head.shape)
        points, strides = self.anchors(facts, anchors)
        n = len(head)
        logits = head[:, :4 * self.bins].reshape(n, 4, self.bins, anchors).astype(np.float64)
        if self.bin_scores == "softmax":
            weights = np.exp(logits - logits.max(axis=2, keepdims=True))
            distances = (weights * np.arange(self.bins)[:, None]).sum(axis=2) / weights.sum(axis=2)  # [N, 4, A]
        else:  # the model's own probabilities, weighed as they are
            distances = (logits * np.arange(self.bins)[:, None]).sum(axis=2)
        left_top, right_bottom = distances[:, :2].transpose(0, 2, 1), distances[:, 2:].transpose(0, 2, 1)
        corners = np.concatenate([points - left_top, points + right_bottom], axis=2) * strides
        scores = head[:, 4 * self.bins:].astype(np.float64)
        if self.scores == "sigmoid":
            scores = 1 / (1 + np.exp(-scores))
        return {"candidates": corners.astype(np.float32), "class_scores": scores.astype(np.float32)}


@register
class BoxesToImage(OutputStep):
    """Map detected boxes back to the caller's image pixels, through the input steps' resize, crop and letterbox.

    Reads "boxes" [N, D, 4], "scores" and "classes" [N, D] (after `nms`)
    and the input geometry the splice records; rewrites all four: each
    corner (x − offset) / scale, per axis, with the scale and offset the
    input steps applied (resize: the resampled size over the caller's,
    per axis; letterbox: plus the padding before; crop and center_crop:
    minus the cut); a box wholly outside the caller's image (in the
    letterbox padding) is dropped and the rest move up, best first, with
    "count" lowered; then clipped to [0, width] × [0, height] with `clip`.
    Rows past the count hold zeros and class −1. Needs the input steps
    to be half_pixel resizes, crops and pads (and the pixel-wise steps);
    crop_boxes and flip_test are refused.
    """

    step_name: ClassVar[str] = "boxes_to_image"
    min_opset: ClassVar[int] = 11
    reads: ClassVar[tuple[str, ...]] = ("boxes", "scores", "classes", GEOMETRY)
    clip: bool = Field(default=True, description="clip the boxes to the caller's image")

    def writes(self) -> dict[str, Comparison]:
        return {part: DetectionComparison("detections", rtol=1e-4, atol=1e-4, part=part)
                for part in ("boxes", "scores", "classes", "count")}

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        f32, i64, boolean = np.float32, np.int64, np.bool_
        geometry, boxes, scores, classes = env[GEOMETRY], to_float(em, env["boxes"]), env["scores"], env["classes"]
        d = static_dim(boxes.shape, 1, "boxes_to_image's boxes")

        def part(tensor: gs.Variable, start: int, end: int, axis: int) -> gs.Variable:
            return em.op("Slice", [tensor, em.const("start", [start], i64), em.const("end", [end], i64),
                                   em.const("axis", [axis], i64)], dtype=f32)

        def twice(start: int) -> gs.Variable:  # geometry[start:start + 2] twice: x, y, x, y
            pair = part(geometry, start, start + 2, 0)
            return em.op("Concat", [pair, pair], {"axis": 0}, dtype=f32, shape=[4])

        mapped = em.op("Div", [em.op("Sub", [boxes, twice(2)], dtype=f32), twice(0)], dtype=f32)
        size = part(geometry, 4, 6, 0)
        # wholly outside: x2 <= 0 or y2 <= 0 (Not Greater), or x1 >= width or y1 >= height (Not Less)
        beyond = em.op("Or", [em.op("Not", [em.op("Greater", [part(mapped, 2, 4, 2), em.const("zero", 0.0, f32)],
                                                  dtype=boolean)], dtype=boolean),
                              em.op("Not", [em.op("Less", [part(mapped, 0, 2, 2), size], dtype=boolean)],
                                    dtype=boolean)], dtype=boolean)
        outside = em.op("Cast", [em.reduce_max(em.op("Cast", [beyond], {"to": TensorProto.INT32}, dtype=np.int32),
                                               [2], keepdims=False, dtype=np.int32)], {"to": TensorProto.BOOL},
                        dtype=boolean)
        keep = em.op("And", [em.op("Not", [em.op("Less", [classes, em.const("no_class", 0, i64)], dtype=boolean)],
                                   dtype=boolean), em.op("Not", [outside], dtype=boolean)], dtype=boolean)
        if self.clip:
            mapped = em.op("Min", [em.op("Max", [mapped, em.const("zero", 0.0, f32)], dtype=f32), twice(4)],
                           dtype=f32)
        # the kept rows first, best first (the dropped ones rank below every score)
        rank = em.op("Where", [keep, scores, em.const("minus_inf", -np.inf, f32)], dtype=f32)
        _, order = em.op("TopK", [rank, em.const("k", [d], i64)], {"axis": 1, "largest": 1, "sorted": 1},
                         num_outputs=2)
        order.dtype = i64
        kept = em.op("Cast", [em.op("GatherElements", [em.op("Cast", [keep], {"to": TensorProto.INT32},
                                                             dtype=np.int32), order], {"axis": 1}, dtype=np.int32)],
                     {"to": TensorProto.BOOL}, dtype=boolean)
        rows = em.op("Tile", [em.unsqueeze(order, [2], dtype=i64), em.const("corners", [1, 1, 4], i64)], dtype=i64)
        gathered = em.op("GatherElements", [mapped, rows], {"axis": 1}, dtype=f32)
        return {
            "boxes": em.op("Where", [em.unsqueeze(kept, [2], dtype=boolean), gathered, em.const("zero", 0.0, f32)],
                           dtype=f32, shape=boxes.shape),
            "scores": em.op("Where", [kept, em.op("GatherElements", [scores, order], {"axis": 1}, dtype=f32),
                                      em.const("zero", 0.0, f32)], dtype=f32, shape=scores.shape),
            "classes": em.op("Where", [kept, em.op("GatherElements", [classes, order], {"axis": 1}, dtype=i64),
                                       em.const("no_class", -1, i64)], dtype=i64, shape=classes.shape),
            "count": em.reduce_sum(em.op("Cast", [kept], {"to": TensorProto.INT64}, dtype=i64), [1], keepdims=False,
                                   dtype=i64, shape=[batch_dim(boxes.shape)]),
        }

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        boxes, outside = self._in_image(env["boxes"], env)
        keep = (np.asarray(env["classes"]) >= 0) & ~outside
        n, d = keep.shape
        out = {"boxes": np.zeros((n, d, 4), np.float32), "scores": np.zeros((n, d), np.float32),
               "classes": np.full((n, d), -1, np.int64), "count": keep.sum(axis=1).astype(np.int64)}
        for image in range(n):  # the kept rows move up, in their order (nms's: best first)
            rows = np.nonzero(keep[image])[0]
            out["boxes"][image, :len(rows)] = boxes[image, rows]
            out["scores"][image, :len(rows)] = np.asarray(env["scores"])[image, rows]
            out["classes"][image, :len(rows)] = np.asarray(env["classes"])[image, rows]
        return out

    def moved_boxes(self, boxes: np.ndarray, env: dict[str, np.ndarray]) -> np.ndarray:
        placed, outside = self._in_image(boxes, env)
        return np.where(outside[..., None], np.float32(np.nan), placed)

    def _in_image(self, boxes: np.ndarray, env: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """`boxes` in the caller's pixels (clipped with `clip`), and where one lies wholly outside the image."""
        geometry = np.asarray(env[GEOMETRY], np.float32)
        scale, offset, size = (np.tile(geometry[start:start + 2], 2) for start in (0, 2, 4))
        boxes = (np.asarray(boxes, np.float32) - offset) / scale
        outside = (boxes[..., 2:] <= 0).any(axis=-1) | (boxes[..., :2] >= size[:2]).any(axis=-1)
        return (np.minimum(np.maximum(boxes, np.float32(0)), size) if self.clip else boxes), outside
