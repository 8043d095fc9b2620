"""Non-maximum suppression for detectors: the `nms` step, and its numpy twin `greedy_nms` with the `iou` it uses;
`class_count` reads back from a detector patched with it how many classes it tells apart (`chain` checks its
person class against it).

`nms` comes between the head decoders of `steps/detect.py` (`yolo_boxes`, `dfl_boxes`: candidate boxes and class
scores) and `boxes_to_image`. It has a module of its own because it is the largest of those steps, with a numpy twin
that stands on its own: `greedy_nms` is tested against OpenCV, and `compare` matches detections with `iou`.

Suppression is ONNX NonMaxSuppression; its numpy twin is the greedy suppression of `cv2.dnn.NMSBoxes` (the tests
compare the two). The runtimes may order detections of equal score differently and may keep a box whose score
equals the threshold, so the step filters the suppressed set again with `score > score_threshold` (a box at the
threshold only ever suppresses boxes scored no higher, which that filter removes too) and `verify` compares
detections as sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.scopes import step_nodes
from graphsurgery.steps.base import Comparison, OutputStep
from graphsurgery.steps.detect import DetectionComparison, batch_dim, static_dim, to_float
from graphsurgery.steps.maxima import first_maximum

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts


@register
class Nms(OutputStep):
    """Non-maximum suppression: the best detections, padded to a fixed count.

    Reads "candidates" [N, A, 4] (x1, y1, x2, y2) and "class_scores"
    [N, C, A] (after `yolo_boxes`); writes "boxes" [N, D, 4] float32,
    "scores" [N, D] float32, "classes" [N, D] int64 and "count" [N] int64,
    D = `max_detections`, best first; rows past `count` hold zeros and
    class −1. A box survives when its score > `score_threshold` and its
    IoU with every better box kept (of its class with `per_class`, else
    of any class) is <= `iou_threshold`, as cv2.dnn.NMSBoxes and
    torchvision's nms decide, on every runtime (OpenVINO suppresses at an
    IoU equal to the threshold it is given: it is given the next float32
    up, and at 1 boxes that cannot overlap). `best_class_only`: each
    anchor competes only in its best class (the first on ties), as
    ultralytics' predict (multi_label off) and YOLOv5's detect do;
    otherwise in every class whose score passes (multi-label, as their
    validation does).
    `per_class: false` gives each anchor its best class and suppresses
    across classes (ultralytics' agnostic_nms).
    Compared as sets (IoU ≥ 0.99, same class, score within tolerance):
    runtimes order equal scores their own way. NaN scores: each runtime's
    own rule. Opset 11.
    """

    step_name: ClassVar[str] = "nms"
    min_opset: ClassVar[int] = 11
    reads: ClassVar[tuple[str, ...]] = ("candidates", "class_scores")
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0, description="suppress above this IoU")
    score_threshold: float = Field(default=0.25, ge=-1e30, le=1e30, description="keep scores above this")
    max_detections: int = Field(default=100, ge=1, le=100_000, description="detections per image (D)")
    per_class: bool = Field(default=True, description="suppress within each class (false: across classes)")
    best_class_only: bool = Field(default=False, description="each anchor competes in its best class only")

    def writes(self) -> dict[str, Comparison]:
        parts = ("boxes", "scores", "classes", "count")
        return {part: DetectionComparison("detections", rtol=1e-4, atol=1e-4, part=part,
                                          score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                                          max_detections=self.max_detections, per_class=self.per_class,
                                          best_class_only=self.best_class_only)
                for part in parts}

    def _sizes(self, env: dict) -> tuple[int, int]:
        scores = env["class_scores"]
        return (static_dim(getattr(scores, "shape", None), 1, "nms's class_scores"),
                static_dim(getattr(scores, "shape", None), 2, "nms's class_scores"))

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        f32, i64 = np.float32, np.int64
        classes, anchors = self._sizes(env)
        boxes, scores = to_float(em, env["candidates"]), to_float(em, env["class_scores"])
        best_class = None
        if self.best_class_only and self.per_class:  # the other classes' scores out of the competition
            best = first_maximum(em, em.op("Transpose", [scores], {"perm": [0, 2, 1]}, dtype=f32), 3, classes)
            first = em.op("Transpose", [best.first], {"perm": [0, 2, 1]}, dtype=np.int32)             # [N, 1, A]
            mine = em.op("Equal", [em.const("classes", np.arange(classes, dtype=np.int32)[:, None]), first],
                         dtype=np.bool_)                                                           # [N, C, A]
            scores = em.op("Where", [mine, scores, em.const("minus_inf", -np.inf, f32)], dtype=f32)
        if not self.per_class:  # each anchor's best class, the first on ties
            by_anchor = em.op("Transpose", [scores], {"perm": [0, 2, 1]}, dtype=f32)
            best = first_maximum(em, by_anchor, 3, classes)                                       # [N, A, 1]
            scores = em.op("Transpose", [best.value], {"perm": [0, 2, 1]}, dtype=f32)           # [N, 1, A]
            best_class = em.op("Cast", [em.op("Reshape", [best.first, em.const("flat", [0, -1], i64)], dtype=np.int32)],
                               {"to": TensorProto.INT64}, dtype=i64)                              # [N, A]
        threshold = em.const("score_threshold", self.score_threshold, f32)
        selected = em.op("NonMaxSuppression", [self._suppressing(em, boxes, anchors), scores,
                                               em.const("per_class", [self.max_detections], i64),
                                               em.const("iou_threshold", [self._runtime_iou_threshold()], f32),
                                               em.const("score_threshold", [self.score_threshold], f32)],
                         {"center_point_box": 0}, dtype=i64, shape=[None, 3])  # not a named dim: two nms steps
        # shared it and ONNX Runtime planned one buffer for both selections ("Shape mismatch attempting to re-use")
        # the kept scores, scattered back to their (image, class, anchor); −inf elsewhere and at the threshold
        picked = em.op("GatherND", [scores, selected], dtype=f32)
        kept = em.op("Where", [em.op("Greater", [picked, threshold], dtype=np.bool_), picked,
                               em.const("minus_inf", -np.inf, f32)], dtype=f32)
        nothing = em.op("Expand", [em.const("minus_inf", -np.inf, f32), em.op("Shape", [scores], dtype=i64)],
                        dtype=f32)
        dense = em.op("ScatterND", [nothing, selected, kept], dtype=f32)
        flat = em.op("Reshape", [dense, em.const("flat", [0, -1], i64)], dtype=f32)
        found = min(self.max_detections, (classes if self.per_class else 1) * anchors)
        values, order = em.op("TopK", [flat, em.const("k", [found], i64)], {"axis": 1, "largest": 1, "sorted": 1},
                              num_outputs=2)
        values.dtype, order.dtype = f32, i64
        if found < self.max_detections:  # fewer candidates than detections asked for: pad
            pads = em.const("pads", [0, 0, 0, self.max_detections - found], i64)
            values = em.op("Pad", [values, pads, em.const("minus_inf", -np.inf, f32)], dtype=f32)
            order = em.op("Pad", [order, pads, em.const("zero", 0, i64)], dtype=i64)
        valid = em.op("Greater", [values, threshold], dtype=np.bool_)                                 # [N, D]
        anchor = em.op("Mod", [order, em.const("anchors", anchors, i64)], dtype=i64)
        if best_class is None:
            label = em.op("Div", [order, em.const("anchors", anchors, i64)], dtype=i64)
        else:
            label = em.op("GatherElements", [best_class, anchor], {"axis": 1}, dtype=i64)
        where = em.op("Tile", [em.unsqueeze(anchor, [2], dtype=i64), em.const("corners", [1, 1, 4], i64)], dtype=i64)
        corners = em.op("GatherElements", [boxes, where], {"axis": 1}, dtype=f32)
        d, n = self.max_detections, batch_dim(env["class_scores"].shape)
        return {
            "boxes": em.op("Where", [em.unsqueeze(valid, [2], dtype=np.bool_), corners, em.const("zero", 0.0, f32)],
                           dtype=f32, shape=[n, d, 4]),
            "scores": em.op("Where", [valid, values, em.const("zero", 0.0, f32)], dtype=f32, shape=[n, d]),
            "classes": em.op("Where", [valid, label, em.const("no_class", -1, i64)], dtype=i64, shape=[n, d]),
            "count": em.reduce_sum(em.op("Cast", [valid], {"to": TensorProto.INT64}, dtype=i64), [1],
                                   keepdims=False, dtype=i64, shape=[n]),
        }

    def _runtime_iou_threshold(self) -> np.float32:
        """The threshold given to NonMaxSuppression, so that ONNX's rule (suppress where IoU > threshold) holds on
        every runtime: ONNX Runtime suppresses above it, OpenVINO from it (IoU ≥ threshold), so at `iou_threshold: 0`
        OpenVINO kept one box of each class, disjoint ones suppressed (round 40). The next float32 up gives both
        the same answer but for an IoU of exactly that value; at least the smallest normal float32, which OpenVINO
        does not flush to zero. At 1 nothing is suppressed (`_suppressing`), and ONNX Runtime refuses more."""
        threshold = np.float32(self.iou_threshold)
        if threshold >= 1:
            return np.float32(1.0)
        return max(np.nextafter(threshold, np.float32(np.inf)), np.finfo(np.float32).tiny)

    def _suppressing(self, em: Emitter, boxes: gs.Variable, anchors: int) -> gs.Variable:
        """The boxes NonMaxSuppression compares: the candidates; at `iou_threshold: 1`, which suppresses nothing,
        one disjoint unit box per anchor instead (OpenVINO suppressed identical boxes, IoU 1 ≥ 1). The kept anchors'
        corners are read from the candidates either way."""
        if np.float32(self.iou_threshold) < 1:
            return boxes
        left = 2 * np.arange(anchors, dtype=np.float32)[None, :, None]
        apart = np.concatenate([left, np.zeros_like(left), left + 1, np.ones_like(left)], axis=2)      # [1, A, 4]
        return em.op("Expand", [em.const("disjoint_boxes", apart), em.op("Shape", [boxes], dtype=np.int64)],
                     dtype=np.float32)

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        boxes = np.asarray(env["candidates"], np.float32)
        scores = np.asarray(env["class_scores"], np.float32)
        n, d = len(boxes), self.max_detections
        out = {"boxes": np.zeros((n, d, 4), np.float32), "scores": np.zeros((n, d), np.float32),
               "classes": np.full((n, d), -1, np.int64), "count": np.zeros(n, np.int64)}
        for image in range(n):
            found = []  # (score, class, anchor), class by class, each best first
            for row, labels in competitions(scores[image], self.per_class, self.best_class_only):
                for anchor in greedy_nms(boxes[image], row, self.score_threshold, self.iou_threshold):
                    found.append((row[anchor], labels[anchor], anchor))
            found.sort(key=lambda entry: -entry[0])  # stable: equal scores keep class, then anchor order
            found = found[:d]
            out["count"][image] = len(found)
            for slot, (score, label, anchor) in enumerate(found):
                out["boxes"][image, slot], out["scores"][image, slot] = boxes[image, anchor], score
                out["classes"][image, slot] = label
        return out


def competitions(scores: np.ndarray, per_class: bool, best_class_only: bool, best: np.ndarray | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """What an nms suppresses within, for one image's class scores [C, A]: per competition each anchor's score and
    class. Each class (only the anchors whose best it is, the first on ties, with `best_class_only`), or every anchor
    at its best class (`per_class` false). `best`: each anchor's best class where another rule chose it (a near tie
    of two classes: `compare_detections`)."""
    classes, anchors = scores.shape
    best = scores.argmax(axis=0) if best is None else best
    if not per_class:
        return [(np.take_along_axis(scores, best[None], axis=0)[0], best)]
    if best_class_only:
        scores = np.where(best[None] == np.arange(classes)[:, None], scores, -np.inf)
    return [(scores[label], np.full(anchors, label, np.int64)) for label in range(classes)]


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float) -> list[int]:
    """The indices cv2.dnn.NMSBoxes keeps, best first: scores above the threshold in descending order (equal
    scores in index order: a stable sort), each kept unless its IoU with a box kept before exceeds the threshold."""
    candidates = np.nonzero(scores > score_threshold)[0]
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    corners = np.asarray(boxes, np.float64)
    kept: list[int] = []
    # each kept box removes the later ones it overlaps, one IoU row per kept box rather than one per candidate
    # (the same set: IoU is symmetric, and a box still there when its turn comes overlaps no box kept before it)
    while order.size:
        kept.append(int(order[0]))
        order = order[1:][~(iou(corners[order[0]], corners[order[1:]]) > iou_threshold)]
    return kept


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of `boxes`, all corners (x1, y1, x2, y2) in either order, in float64; 0 where the
    union is empty."""
    box, boxes = np.asarray(box, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4)
    low, high = np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])
    low_1, high_1 = np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])
    with np.errstate(invalid="ignore"):  # inf − inf, inf / inf: a box of infinite corners (a hostile head), IoU 0
        overlap = np.clip(np.minimum(high, high_1) - np.maximum(low, low_1), 0, None)
        inter = overlap[:, 0] * overlap[:, 1]
        union = np.prod(high - low, axis=1) + np.prod(high_1 - low_1) - inter
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def class_count(inferred: onnx.ModelProto) -> int | None:
    """How many classes a detector patched with `nms` tells apart: the `classes` it outputs are below this. It is
    dim 1 of the "class_scores" [N, C, A] the step read (static: the step requires it), found among the tensors its
    nodes (`graphsurgery/post/nms/…`, as splice names them) read from the step before: the 3-D one that is not the
    candidates [N, A, 4]. `inferred`: the model after shape inference. None when no nms step made the model (a
    detector with a suppression of its own) or the shapes are not known."""
    read = nms_reads(inferred.graph)
    dims = {value.name: [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
            for value in inferred.graph.value_info if value.name in read}
    classes = {shape[1] for shape in dims.values() if len(shape) == 3 and shape[2] != 4}
    return classes.pop() if len(classes) == 1 and None not in classes else None


def nms_reads(graph: onnx.GraphProto) -> set[str]:
    """The tensors an nms step's nodes (`graphsurgery/post/nms/…`, as splice names them) read from the steps before
    it: its candidates and class scores as the patched graph computes them (empty where no nms step made it)."""
    scope = step_nodes(Nms.side, Nms.step_name)
    made_here = {name for node in graph.node if node.name.startswith(scope) for name in node.output}
    constants = {tensor.name for tensor in graph.initializer}
    return {name for node in graph.node if node.name.startswith(scope) for name in node.input
            if name and name not in made_here and name not in constants}
