"""Compare a detector's outputs (boxes, scores, classes, count) as sets, image by image.

Detections are not one output judged by its kind (`graphsurgery.compare`): the outputs of one nms are judged
together, and the order, the count and even the presence of a detection may change under float rounding. So each
reference detection is matched greedily to one of the same class and an agreeing score, and what is left on either
side is a near tie only when a rounding could have decided it: a score at the threshold or at the max_detections
cut, an overlap at the IoU threshold. The result, `compare.DetectionResult`, stays with the other result kinds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from graphsurgery.compare import MAX_DETAILS, DetectionResult, exceeds, relative, within
from graphsurgery.parts import largest_finite
from graphsurgery.steps.base import Comparison
from graphsurgery.steps.nms import competitions, greedy_nms, iou
from graphsurgery.tolerances import DEFAULT_TIE

#: How close an IoU must be to the suppression threshold for a detection that one side kept and the other dropped
#: to count as a near tie (boxes that agree within 1e-4 px move an IoU by less).
IOU_TIE = 1e-4

#: Boxes whose corners agree within this (pixels) are the same box even where IoU says nothing: two boxes of zero
#: area have no union (round 34: a head of zero-size boxes matched 0 of 480 detections between two runtimes).
SAME_BOX = 1e-3


class Candidates(NamedTuple):
    """What the reference's nms read, per image: its candidate `boxes` [N, A, 4] and `scores` [N, C, A], and the
    boxes `placed` where the recipe outputs detections (boxes_to_image: the caller's pixels; `twins.PLACED`)."""

    boxes: np.ndarray
    scores: np.ndarray
    placed: np.ndarray


def compare_detections(names: dict[str, str], actual: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                       comparison, tie: Comparison = DEFAULT_TIE,
                       candidates: Candidates | None = None) -> DetectionResult:
    """Compare a group of detector outputs as sets. `names`: part (boxes, scores, classes, count) → output name;
    `comparison` a `steps.detect.DetectionComparison` (its iou, atol/rtol for scores, and the thresholds that decide
    near ties); `tie`: the float tolerance under which a score sits on a threshold; `candidates`: what the
    reference's nms read, to tell the images where a candidate it could keep is not finite (the ONNX spec leaves NMS
    of NaN or inf to each runtime, so there every difference is a near tie) and the detections whose presence the
    order of equal scores decided (`_tied`)."""
    result = DetectionResult(", ".join(names.values()), iou=comparison.iou, atol=comparison.atol, rtol=comparison.rtol,
                             box_atol=comparison.box_atol, box_rtol=comparison.box_rtol,
                             box_resolution=comparison.box_resolution)
    needed = [part for part in ("boxes", "scores", "classes") if part not in names]
    if needed:
        result.problem = (f"detections are compared as sets of boxes, scores and classes; the recipe's output.names "
                          f"leave out {', '.join(needed)}")
        return result
    sides = []
    for answers in (expected, actual):
        boxes, scores, classes = (np.asarray(answers[names[part]]) for part in ("boxes", "scores", "classes"))
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2] or classes.shape != scores.shape:
            result.problem = (f"detections must be boxes [N, D, 4], scores and classes [N, D]; got "
                              f"{list(boxes.shape)}, {list(scores.shape)}, {list(classes.shape)}")
            return result
        valid = classes >= 0
        if "count" in names and not np.array_equal(np.asarray(answers[names["count"]]).ravel(), valid.sum(axis=1)):
            result.problem = "count differs from the number of rows with a class (>= 0)"
            return result
        sides.append((boxes.astype(np.float64), scores.astype(np.float64), classes, valid))
    if sides[0][0].shape[:2] != sides[1][0].shape[:2]:  # D rows too: nms pads to its max_detections, and a patch
        # of another cut matched every detection of images with fewer (round 37: 20 rows for 300 passed)
        (images, rows), (ref_images, ref_rows) = sides[1][0].shape[:2], sides[0][0].shape[:2]
        result.problem = (f"{images} images of {rows} detection rows, the reference has {ref_images} of {ref_rows} "
                          "(rows are the nms step's max_detections)")
        return result
    if problem := _layout_differs(sides):
        result.problem = problem
        return result
    result.images = sides[0][0].shape[0]
    unsettled = _unsettled(candidates, comparison.score_threshold, result.images)
    result.unsettled = int(unsettled.sum())
    usable = candidates is not None and len(candidates.boxes) == result.images
    for image in range(result.images):
        ref, got = (tuple(part[image][valid[image]] for part in parts) for *parts, valid in sides)
        reordered = (usable and not unsettled[image] and _differ(ref, got)
                     and _order_explains(candidates, image, (ref, got), comparison, tie))
        result.reordered += reordered
        near = (np.asarray(candidates.placed[image], np.float64), _reach(candidates, image, comparison)) if usable \
            else None
        _match_image(result, image, ref, got, comparison, tie, bool(unsettled[image]) or reordered, near)
    if result.images and not (result.detections or result.mismatches or result.near_ties):  # as a reference of
        # no finite value (`compare.compare_floats`): a detector that found nothing in random noise passed any patch
        result.problem = (f"neither side holds a detection in any of the {result.images} image(s), so agreement "
                          "proves nothing; verify with images where the detector finds objects (--images)")
    elif result.near_ties and not (result.matched or result.mismatches):  # only near ties: a patch that finds
        # other objects everywhere would pass as well
        odd = f", {result.unsettled} of them with candidates that are not finite," if result.unsettled else ""
        result.problem = (f"no detection matched in the {result.images} image(s){odd} and all {result.near_ties} "
                          "differences are near ties, so agreement proves nothing; verify with images where the "
                          "detector finds objects clearly (--images)")
    return result


def group_comparison(parts: dict[str, Comparison]) -> Comparison:
    """One comparison for a detector's outputs (part → its `DetectionComparison`): the boxes' thresholds and corner
    tolerance with the scores' tolerance, each as set for its own output by name."""
    boxes = parts.get("boxes", next(iter(parts.values())))
    scores = parts.get("scores", boxes)
    return replace(boxes, atol=scores.atol, rtol=scores.rtol)


def _layout_differs(sides: list[tuple]) -> str | None:
    """Where the patched side's rows are not laid out as the reference's: its detections (rows with a class) first,
    then rows of the fill nms writes (boxes and scores 0, class −1) to max_detections. Round 52: the sets were
    compared, and a patch whose boxes_to_image sorted its rows the other way (every detection past `count`, the
    first `count` rows zeros) or filled the scores past the count with −1 passed; a caller reads the first `count`
    rows. Not judged when the reference itself is laid out otherwise."""
    (ref_boxes, ref_scores, ref_classes, ref_valid), (boxes, scores, classes, valid) = sides

    def prefix(rows: np.ndarray) -> bool:  # every row with a class before every row without one
        return bool((np.diff(rows.astype(np.int8), axis=1) <= 0).all())

    if not prefix(ref_valid):
        return None
    if not prefix(valid):
        image = int(np.flatnonzero(~np.all(np.diff(valid.astype(np.int8), axis=1) <= 0, axis=1))[0])
        return (f"image {image}: a detection row (class >= 0) follows a row without one; the unpatched pipeline "
                "puts its detections first, as many as its count")
    for part, ref, got, value in (("boxes", ref_boxes, boxes, 0), ("scores", ref_scores, scores, 0),
                                  ("classes", ref_classes, classes, -1)):
        fill = np.unique(ref[~ref_valid].reshape(-1))
        if len(fill) != 1 or fill[0] != value or not (~valid).any():  # a pipeline of your own (--reference) may
            # fill otherwise: not judged
            continue
        wrong = got[~valid]
        if not np.all((wrong == fill[0]) | (np.isnan(wrong) & np.isnan(fill[0]))):
            return (f"rows past the count hold {part} other than the unpatched pipeline's fill {fill[0]:g} (e.g. "
                    f"{wrong[wrong != fill[0]].reshape(-1)[0]:g})")
    return None


def _unsettled(candidates: Candidates | None, threshold: float, images: int) -> np.ndarray:
    """Per image: does a candidate the nms could keep (a class score above the threshold, or NaN) have a box or a
    score that is not finite? Its IoUs are NaN or inf, and the spec leaves what NMS does with them to the runtime."""
    if candidates is None or len(candidates.boxes) != images:
        return np.zeros(images, bool)
    boxes, scores = (np.asarray(part, np.float64) for part in candidates[:2])
    with np.errstate(invalid="ignore"):
        could_keep = ((scores > threshold) | np.isnan(scores)).any(axis=1)  # [N, A]
    odd = ~np.isfinite(boxes).all(axis=2) | ~np.isfinite(scores).all(axis=1)
    return (could_keep & odd).any(axis=1)


def _order_explains(candidates: Candidates, image: int, sides: tuple[tuple, tuple], comparison, tie: Comparison
                   ) -> bool:
    """Does the order of equal scores explain both sides of one image? ONNX's NonMaxSuppression lets a runtime keep
    either of two overlapping boxes of one score, and which it keeps decides in turn the boxes below that either
    would suppress: on a letterbox's padding or a blank image whole regions of anchors tie (round 31: onnxruntime,
    OpenVINO and the twin kept other ones of 37, and a right patch FAILed). A side is explained when each of its
    detections is one of the reference's candidates and the nms, run on them with those first among the scores
    within `tie` of theirs, keeps exactly them (if some order of ties gives a set, this order gives it). A box a
    wrong patch moved is no candidate; another threshold keeps another set."""
    return all(_kept_in_some_order(candidates, image, side, comparison, tie) for side in sides)


def _kept_in_some_order(candidates: Candidates, image: int, side: tuple, comparison, tie: Comparison) -> bool:
    """`_order_explains` for one side's detections (boxes, scores, classes) of `image`. Candidates are told apart by
    where the output puts them: clipped to the image, several may land on one box."""
    boxes, scores, classes = side
    competing = competitions(np.asarray(candidates.scores[image], np.float64), comparison.per_class,
                             comparison.best_class_only, _best_classes(candidates, image, side, comparison, tie))
    placed, reach = np.asarray(candidates.placed[image], np.float64), _reach(candidates, image, comparison)
    options = []  # per detection: the (competition, anchor) it may be
    for box, score, label in zip(boxes, scores, classes):
        number = int(label) if comparison.per_class else 0
        if not 0 <= number < len(competing):
            return False
        row, labels = competing[number]
        with np.errstate(invalid="ignore"):  # another class's anchors are −inf with best_class_only
            same = np.nonzero(np.isfinite(row) & (labels == label) & ~exceeds(
                np.abs(row - score), np.abs(row), comparison.atol, comparison.rtol))[0]
        same = same[_same_box(box, placed[same], comparison, reach[same])] if len(same) else same
        if not len(same) and _all_but_dropped(box, (placed, reach), comparison):
            continue  # where the reference dropped it: a near tie of its own (`_match_image`)
        if not len(same):
            return False  # no candidate: a box moved, a score changed
        options.append({(number, int(anchor)) for anchor in same})
    preferred = set().union(*options)
    kept = set()
    for number, (row, _) in enumerate(competing):
        first = np.zeros(len(row), bool)
        first[[anchor for competition, anchor in preferred if competition == number]] = True
        lifted = np.where(first, row + np.maximum(tie.atol, relative(tie.rtol, np.abs(np.where(first, row, 0.0)))),
                          row)
        kept |= {(number, anchor) for anchor in greedy_nms(candidates.boxes[image], lifted,
                                                            comparison.score_threshold, comparison.iou_threshold)}
    # boxes_to_image drops what lies wholly in the letterbox padding (placed nowhere), after nms's cut
    dropped = {(number, anchor) for number, anchor in kept if not np.isfinite(placed[anchor]).all()}
    unused = kept - dropped
    for choice in options:  # each detection one kept candidate of its own
        taken = next(iter(choice & unused), None)
        if taken is None:
            return False
        unused.discard(taken)
    lowest = min(scores, default=np.inf)
    cut = len(options) + sum(competing[number][0][anchor] >= lowest for number, anchor in dropped)
    return not unused or cut >= comparison.max_detections  # past the cut, the rest falls below it


def _best_classes(candidates: Candidates, image: int, side: tuple, comparison, tie: Comparison) -> np.ndarray:
    """Each anchor's best class (the first on ties), but where several of its class scores lie within `tie` of its
    best, which of them is best is float rounding's (round 54: saturated sigmoids, 1.0 in two classes on one side,
    1.0 and 0.99999994 on the other, and onnxruntime and OpenVINO kept one box in two classes; a right patch FAILed):
    there the class of the side's detection that is this anchor (its box where the output puts it, its score), else
    that of a detection suppressing it (an overlap above the IoU threshold), as the side's own nms must have had
    it. A class clearly below the best (multi-label) stays no anchor's."""
    scores = np.asarray(candidates.scores[image], np.float64)
    best, top = scores.argmax(axis=0), scores.max(axis=0)
    with np.errstate(invalid="ignore"):  # NaN and ±inf scores are no such tie
        tied = np.isfinite(scores) & ~exceeds(np.abs(top - scores), np.abs(top), tie.atol, tie.rtol)  # [C, A]
    undecided = tied.sum(axis=0) > 1
    if not undecided.any():
        return best
    placed, boxes = (np.asarray(part[image], np.float64) for part in (candidates.placed, candidates.boxes))
    reach = _reach(candidates, image, comparison)
    found = []  # (anchor, class) of the side's detections
    for box, score, label in zip(*side):
        if not 0 <= label < len(scores):
            continue
        label = int(label)
        with np.errstate(invalid="ignore"):
            mine = undecided & tied[label] & ~exceeds(np.abs(scores[label] - score), np.abs(scores[label]),
                                                      comparison.atol, comparison.rtol)
        mine &= _same_box(box, placed, comparison, reach)
        best[mine] = label
        found += [(int(anchor), label) for anchor in np.nonzero(mine)[0][:1]]
    for anchor, label in found:
        best[undecided & tied[label] & (iou(boxes[anchor], boxes) > comparison.iou_threshold)] = label
    for anchor, label in found:  # the detections themselves, whatever overlaps them
        best[anchor] = label
    return best


def _match_image(result: DetectionResult, image: int, ref: tuple, got: tuple, comparison, tie: Comparison,
                 settled_by_order: bool, near: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Match one image's detections greedily, best reference first, each to the unmatched one of its class with the
    highest IoU (at least `comparison.iou`; the same corners count as IoU 1) whose corners and score agree; a box
    that overlaps as well but lies elsewhere by more than rounding is no match (round 52: every edge moved by 0.6 %
    kept IoU ≥ 0.99 and passed). Then judge what is left on either side (all near ties where the candidates are not
    finite or the order of ties explains both sides: `settled_by_order`). `near`: the image's placed candidates and
    their `_reach`, where the reference's nms read is known."""
    (ref_boxes, ref_scores, ref_classes), (got_boxes, got_scores, got_classes) = ref, got
    result.detections += len(ref_scores)
    result.largest_score = max(result.largest_score, largest_finite(ref_scores))
    free = np.ones(len(got_scores), bool)
    unmatched_ref = []
    for index in range(len(ref_scores)):
        candidates = free & (got_classes == ref_classes[index])
        candidates &= ~exceeds(np.abs(got_scores - ref_scores[index]), np.full(len(got_scores), ref_scores[index]),
                               comparison.atol, comparison.rtol)
        reach = _reach_of(ref_boxes[index], near, comparison)
        candidates &= _corners_agree(ref_boxes[index], got_boxes, comparison, reach)
        ious = np.where(candidates, _agreement(ref_boxes[index], got_boxes, reach) if len(got_boxes) else 0.0, -1.0)
        best = int(np.argmax(ious)) if len(ious) else -1
        if best < 0 or ious[best] < comparison.iou:
            unmatched_ref.append(index)
            continue
        free[best] = False
        result.matched += 1
        result.min_iou = min(result.min_iou, float(ious[best]))
        result.max_score_diff = max(result.max_score_diff, abs(float(got_scores[best] - ref_scores[index])))
        result.max_corner_diff = max(result.max_corner_diff,
                                     float(np.nan_to_num(np.abs(got_boxes[best] - ref_boxes[index])).max()))
    all_boxes = np.concatenate([ref_boxes, got_boxes])
    all_classes = np.concatenate([ref_classes, got_classes])
    cut = min(ref_scores.min(initial=np.inf), got_scores.min(initial=np.inf))
    full = max(len(ref_scores), len(got_scores)) >= comparison.max_detections
    for side, indices in (("reference", unmatched_ref), ("patched", np.nonzero(free)[0].tolist())):
        boxes, scores, classes = (ref_boxes, ref_scores, ref_classes) if side == "reference" else (
            got_boxes, got_scores, got_classes)
        for index in indices:
            at_threshold = within(scores[index], comparison.score_threshold, tie)[1]
            at_cut = full and within(scores[index], cut, tie)[1]
            same = all_classes == classes[index] if comparison.per_class else np.ones(len(all_classes), bool)
            same[index if side == "reference" else len(ref_scores) + index] = False  # not itself: its IoU of 1
            # put every detection on an IoU threshold of 1 (round 46: a patch suppressing at 0.98 passed)
            ious = iou(boxes[index], all_boxes[same]) if same.any() else np.zeros(0)
            at_overlap = bool((np.abs(ious - comparison.iou_threshold) <= IOU_TIE).any())
            at_edge = _all_but_dropped(boxes[index], near, comparison)
            near_tie = settled_by_order or at_threshold or at_cut or at_overlap or at_edge
            result.near_ties += near_tie
            result.mismatches += not near_tie
            if len(result.details) < MAX_DETAILS:
                result.details.append({"image": image, "only_in": side, "class": int(classes[index]),
                                       "score": float(scores[index]), "box": boxes[index].tolist(),
                                       "near_tie": near_tie})


def _differ(ref: tuple, got: tuple) -> bool:
    """Do two sides of one image hold other detections (other counts, or other boxes or classes in order)?"""
    return (len(ref[0]) != len(got[0]) or not np.allclose(ref[0], got[0], atol=SAME_BOX, equal_nan=True)
            or not np.array_equal(ref[2], got[2]))


def _same_box(box: np.ndarray, boxes: np.ndarray, comparison, reach: np.ndarray) -> np.ndarray:
    """Which of `boxes` (candidates where the output puts them, each with its `_reach`) are `box` as `_match_image`
    takes a match: overlapping at IoU ≥ `comparison.iou`, and every corner within rounding (`_corners_agree`)."""
    return (_agreement(box, boxes, reach) >= comparison.iou) & _corners_agree(box, boxes, comparison, reach)


def _reach(candidates: Candidates, image: int, comparison) -> np.ndarray:
    """Per candidate anchor of `image`, how far (caller pixels) the head's own rounding moves its corners: the
    comparison's `box_resolution` (one float16 step for a float16 head, else 0) × the anchor's largest |coordinate|
    in the head, × the caller's pixels per head pixel (the largest ratio of a placed side to the head's, over sides
    of a head pixel or more; clipping only shortens). Round 56: a float16 head rounds its coordinates where the
    head has them; through a letterbox's padding and a downscale that was up to 3.7 px on a box whose corners in the
    caller's pixels are near 0, and a box a few pixels wide lost IoU 0.99, so right patches FAILed on OpenVINO."""
    boxes, placed = (np.asarray(part[image], np.float64) for part in (candidates.boxes, candidates.placed))
    with np.errstate(invalid="ignore", divide="ignore"):
        sides = np.abs(boxes[:, 2:] - boxes[:, :2])
        ratios = np.abs(placed[:, 2:] - placed[:, :2]) / sides
    ratios = ratios[(sides >= 1) & np.isfinite(ratios)]
    scale = ratios.max() if ratios.size else 1.0
    return comparison.box_resolution * _extent(boxes) * scale


def _reach_of(box: np.ndarray, near: tuple[np.ndarray, np.ndarray] | None, comparison) -> float:
    """The `_reach` of the candidate `box` is (placed at its corners), at least the resolution × its own largest
    |coordinate| (all there is without the reference's candidates: `--reference`)."""
    own = comparison.box_resolution * float(_extent(box))
    if near is None:
        return own
    placed, reach = near
    with np.errstate(invalid="ignore"):
        mine = (np.abs(placed - box) <= SAME_BOX).all(axis=1)
    return max(own, float(reach[mine].max(initial=0.0)))


def _all_but_dropped(box: np.ndarray, near: tuple[np.ndarray, np.ndarray] | None, comparison) -> bool:
    """Is `box` (clipped to the image) within the head's rounding (`_reach_of`) of lying wholly outside the image,
    where boxes_to_image drops it? Round 56: 0.033 px inside a float16 head's letterbox padding on OpenVINO, dropped
    by the twins, was a real mismatch of a right patch."""
    with np.errstate(invalid="ignore"):  # inf − inf: a box of infinite corners is no such box
        sides = box[2:] - box[:2]
    return bool(((sides > 0) & (sides <= _reach_of(box, near, comparison))).any())


def _extent(corners: np.ndarray) -> np.ndarray:
    """The largest finite |coordinate| of each box."""
    return np.abs(np.where(np.isfinite(corners), corners, 0.0)).max(axis=-1)


def _corners_agree(box: np.ndarray, boxes: np.ndarray, comparison, reach: float | np.ndarray = 0.0) -> np.ndarray:
    """Which of `boxes` have every corner within the comparison's corner tolerance of `box`, the tolerance scaled by
    the boxes' largest finite |coordinate|, or within `reach` (`_reach`: the head's own rounding). The same infinity
    or NaN agrees, as in `_differ` (images whose candidates are not finite)."""
    allowed = np.maximum(comparison.box_atol + relative(comparison.box_rtol, np.maximum(_extent(boxes), _extent(box))),
                         reach)[:, None]
    with np.errstate(invalid="ignore"):
        close = (np.abs(boxes - box) <= allowed) | (boxes == box) | (np.isnan(boxes) & np.isnan(box))
    return close.all(axis=1)


def _agreement(box: np.ndarray, boxes: np.ndarray, reach: float | np.ndarray = 0.0) -> np.ndarray:
    """IoU of `box` with each of `boxes`, 1 where the corners are the same (`SAME_BOX`, and the head's own rounding
    `reach`: a box a few pixels wide of a float16 head) whatever their area."""
    with np.errstate(invalid="ignore"):
        same = (np.abs(boxes - box) <= SAME_BOX + np.reshape(reach, (-1, 1))).all(axis=1)
    return np.where(same, 1.0, iou(box, boxes))
