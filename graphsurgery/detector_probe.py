"""The decoder probe's detector head: a network output rewritten so that `nms` meets each of its decisions.

A head is read through its step's own decoding into boxes (cx, cy, w, h in input pixels) and class scores, crowded
(`_crowd`) and written back in the head's layout, so one rewrite serves every head the steps read (round 43: only
YOLOv8 heads had a probe, so after a v5, YOLOX or DFL head an nms of another threshold or competition passed).
Where the probe's values lie matters as much (round 43: overlaps uniform within ±0.04 of the IoU threshold caught
0.72 for 0.7 by one detection and 0.71 by none): they sit on ladders that close in on each threshold, within
what can exist (round 46: at `iou_threshold: 1` the pairs above it were an internal error; a side of a threshold
where nothing can lie is left out with a note), and hold candidates whatever the cut (at `max_detections: 1` the
probe held none and failed a right patch).
"""

from __future__ import annotations

import numpy as np

from graphsurgery.model import ModelFacts
from graphsurgery.steps.detect import DflBoxes, YoloBoxes, anchor_grid
from graphsurgery.steps.nms import Nms

#: Class scores the probe writes: probabilities, strictly between 0 and 1 (what a head's sigmoid gives)
SCORES = (0.0, 1.0)
#: Pairs the probe makes at least, whatever max_detections: more candidates than a small cut probes the cut (round
#: 46: at max_detections 1 a third of the cut was no anchor, and the probe, holding no detection, failed a right
#: patch as proving nothing)
LEAST_PAIRS = 10
#: How deep the probe's edge boxes reach into the model's input from its edge (pixels, past the point a DFL box must
#: hold): a half, so that no letterbox padding (whole pixels) ends on one
EDGE_DEPTH = 0.5


def crowded_head(step: YoloBoxes | DflBoxes, nms: Nms, facts: ModelFacts, head: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray | None, list[str]]:
    """`head` rewritten by `_crowd` and the notes on what it could not make; None for a score threshold no
    probability exceeds (the probe could hold no detection). A head of one class is probed too, without the pairs
    in two classes (round 100: a one-class YOLOX had no probe, and an nms of another IoU or score threshold
    PASSed)."""
    if nms.score_threshold >= SCORES[1]:
        return None, [f"decoder probe skipped: no class score (0 to 1) can exceed the score threshold "
                      f"{nms.score_threshold:g}, so no probe output could hold a detection"]
    codec = _DflHead(step, facts) if isinstance(step, DflBoxes) else _YoloHead(step, facts)
    boxes, scores = codec.decode(head)
    notes: list[str] = []
    boxes, scores = _crowd(codec, boxes, scores, nms, rng, notes)
    return codec.encode(boxes, scores), notes


class _YoloHead:
    """A `yolo_boxes` head of any format, whose boxes may lie anywhere: a pair is any two anchors. v5 and YOLOX get
    an objectness of 1, so a score is its class probability."""

    def __init__(self, step: YoloBoxes, facts: ModelFacts):
        self.step, self.facts = step, facts
        self.highest = 1.0  # the overlap of two boxes moved apart by nothing: every overlap below it can be made

    def decode(self, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre, size, scores = self.step.decode(head, self.facts)
        return np.concatenate([centre, size], axis=2), scores

    def pairs(self, rng: np.random.Generator, count: int, anchors: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` pairs of anchors (at most half of them), any two; for a YOLOX grid, led by the first and last
        anchor of each of its levels (`_level_ends`), the leaders of the first pairs scoring clearly: a grid wrong
        at one anchor only (the last cell's column and row swapped) FAILed only where the draw scored it, 1 seed in
        7 (round 61)."""
        wanted = min(count, anchors // 2)
        if self.step.format != "yolox":  # no grid in the recipe's decode
            chosen = rng.choice(anchors, 2 * wanted, replace=False)
            return chosen[0::2], chosen[1::2]
        ends = self._level_ends(anchors)
        pool = np.concatenate([ends, rng.permutation(np.setdiff1d(np.arange(anchors), ends))])
        return pool[:wanted], pool[wanted:2 * wanted]

    def _level_ends(self, anchors: int) -> np.ndarray:
        """The first and last anchor of each level of a YOLOX head's grid."""
        _, strides = anchor_grid("yolo_boxes format yolox", self.step.strides, self.facts, anchors)
        starts = np.flatnonzero(np.diff(strides[:, 0], prepend=np.nan))  # where a level begins
        return np.unique(np.concatenate([starts, np.r_[starts[1:], anchors] - 1]))

    def place(self, box: np.ndarray, leaders: np.ndarray, followers: np.ndarray, moved: np.ndarray) -> None:
        """The followers' boxes: the leaders', moved sideways by `moved` times their width. A leader at a level's
        end of a YOLOX grid (`_level_ends`) first gets a box two strides wide on its own cell: decoded from a
        stand-in head, its box spanned thousands of pixels, clipped to the whole image whatever its cell."""
        if self.step.format == "yolox":
            ends = np.intersect1d(leaders, self._level_ends(len(box)))
            cells, strides = anchor_grid("yolo_boxes format yolox", self.step.strides, self.facts, len(box))
            box[ends] = np.concatenate([(cells[ends] + 0.5) * strides[ends], 2 * strides[ends].repeat(2, 1)], 1)
        box[leaders, 2:] = np.abs(box[leaders, 2:]) + 1
        box[followers] = box[leaders]
        box[followers, 0] += moved * box[leaders, 2]

    def points(self, anchors: int, rng: np.random.Generator) -> np.ndarray:
        """A point each anchor's box holds (input pixels): its boxes lie anywhere, so one drawn at least a pixel from
        the model input's edges."""
        width, height = self.facts.input_size
        return rng.uniform(1, [width - 1, height - 1], (anchors, 2))

    def encode(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.step.format == "v8":
            return np.concatenate([boxes.transpose(0, 2, 1), scores], axis=1).astype(np.float32)
        if self.step.format == "yolox":
            cells, strides = anchor_grid("yolo_boxes format yolox", self.step.strides, self.facts, boxes.shape[1])
            boxes = np.concatenate([boxes[..., :2] / strides - cells, np.log(boxes[..., 2:] / strides)], axis=2)
        objectness = np.ones(boxes.shape[:2] + (1,), np.float32)
        return np.concatenate([boxes, objectness, scores.transpose(0, 2, 1)], axis=2).astype(np.float32)


class _DflHead:
    """A `dfl_boxes` head, whose box holds its anchor point within bins − 1 strides of each side: a pair is two
    neighbours in one row, and the leader's box, centred on its point, is as wide as makes the step to the next
    point the overlap asked for (at most 2·(bins − 1) strides: overlaps above (2·bins − 3) / (2·bins − 1) come out
    lower). Each distance is written as two neighbouring bins whose softmax expects it."""

    def __init__(self, step: DflBoxes, facts: ModelFacts):
        self.step, self.facts = step, facts
        self.highest = (2 * step.bins - 3) / (2 * step.bins - 1)  # the widest box, moved by one stride

    def decode(self, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        decoded = self.step.reference({"output": head}, self.facts)
        corners = decoded["candidates"]
        size = corners[..., 2:] - corners[..., :2]
        return np.concatenate([corners[..., :2] + size / 2, size], axis=2), decoded["class_scores"]

    def pairs(self, rng: np.random.Generator, count: int, anchors: int) -> tuple[np.ndarray, np.ndarray]:
        points, strides = self.step.anchors(self.facts, anchors)
        same_row = (points[1:, 1] == points[:-1, 1]) & (strides[1:, 0] == strides[:-1, 0])
        even = np.floor(points[:-1, 0]) % 2 == 0  # leaders in even columns: no anchor is in two pairs
        leaders = rng.permutation(np.flatnonzero(same_row & even))[:count]
        return leaders, leaders + 1

    def place(self, box: np.ndarray, leaders: np.ndarray, followers: np.ndarray, moved: np.ndarray) -> None:
        points, strides = self.step.anchors(self.facts, len(box))
        stride, widest = strides[leaders, 0], 2 * (self.step.bins - 1) * strides[leaders, 0]
        box[leaders, :2] = points[leaders] * strides[leaders]
        box[leaders, 2] = np.minimum(stride / moved, widest)
        box[leaders, 3] = np.minimum(np.abs(box[leaders, 3]) + 1, widest)
        box[followers] = box[leaders]
        box[followers, 0] += stride

    def points(self, anchors: int, rng: np.random.Generator) -> np.ndarray:
        """The point each anchor's box holds (input pixels)."""
        points, strides = self.step.anchors(self.facts, anchors)
        return points * strides

    def encode(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        n, anchors, _ = boxes.shape
        points, strides = self.step.anchors(self.facts, anchors)
        half = boxes[..., 2:] / 2
        distances = np.concatenate([points - (boxes[..., :2] - half) / strides,
                                    (boxes[..., :2] + half) / strides - points], axis=2)  # left, top, right, bottom
        bins = self.step.bins
        distances = distances.clip(0, bins - 1).transpose(0, 2, 1)[:, :, None]             # [N, 4, 1, A]
        low = np.minimum(np.floor(distances), bins - 2).astype(np.int64)
        weights = np.zeros((n, 4, bins, anchors))
        np.put_along_axis(weights, low, 1 - (distances - low), axis=2)
        np.put_along_axis(weights, low + 1, distances - low, axis=2)
        logits = np.log(weights + 1e-12).reshape(n, 4 * bins, anchors)
        if self.step.scores == "sigmoid":
            probability = scores.astype(np.float64).clip(1e-12, 1 - 1e-7)
            scores = np.log(probability) - np.log1p(-probability)
        return np.concatenate([logits, scores], axis=1).astype(np.float32)


def _ladder(threshold: float, count: int, widest: float, rng: np.random.Generator) -> np.ndarray:
    """`count` values on both sides of `threshold`, geometrically closer towards it (from widest / 20 to
    `widest`, each moved by up to 10 %), shuffled: a threshold moved by a sixth of `widest` crosses several of them
    (round 43: overlaps uniform within ±0.04 of the IoU threshold, and 0.71 for 0.7 passed, 0.72 failed on one).
    Rungs outside what can exist (an overlap above 1, a score below 0) are the caller's to drop (`_made`)."""
    steps = np.geomspace(widest / 20, widest, (count + 1) // 2) * rng.uniform(0.9, 1.1, (count + 1) // 2)
    return rng.permutation(threshold + np.concatenate([steps, -steps])[:count])


def _made(rungs: np.ndarray, low: float, high: float) -> np.ndarray:
    """Which rungs of a ladder can exist: strictly between `low` and `high` (round 46: at `iou_threshold: 1` the
    rungs above it were overlaps above 1, and drawing the pairs beyond them was an internal error)."""
    return (rungs > low) & (rungs < high)


def _side_notes(what: str, name: str, threshold: float, rungs: np.ndarray, made: np.ndarray,
                span: tuple[float, float]) -> list[str]:
    """The note on a side of a threshold where no rung was made, because no `what` there can exist."""
    if not len(rungs):
        return []
    above, below = (made & (rungs > threshold)).any(), (made & (rungs < threshold)).any()
    where = f"{what}s lie between {span[0]:.4g} and {span[1]:.4g} here"
    if not (above or below):
        return [f"decoder probe: no {what} near the {name} {threshold:g} can be made ({where}): the probe leaves "
                "that threshold out"]
    if not above:
        return [f"decoder probe: no {what} can exceed the {name} {threshold:g} ({where}): the probe holds {what}s "
                "below it only"]
    if not below:
        return [f"decoder probe: no {what} can lie below the {name} {threshold:g} ({where}): the probe holds "
                f"{what}s above it only"]
    return []


def _clear(score: float) -> tuple[float, float]:
    """Scores clearly above the score threshold, below 1."""
    low = score + (1 - score) * 0.3
    return (float(np.clip(low, 0.05, 0.95)), 0.95) if low < 0.95 else (low, score + (1 - score) * 0.9)


def _crowd(codec: _YoloHead | _DflHead, boxes: np.ndarray, scores: np.ndarray, nms: Nms, rng: np.random.Generator,
           notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, A, 4] (cx, cy, w, h) and scores [N, C, A] where a third of max_detections anchors score (at least
    `LEAST_PAIRS` pairs: a small cut is then probed too), in pairs: a second box of each pair repeats the first's,
    moved sideways to a chosen overlap. Two fifths of the pairs overlap on a ladder around the IoU threshold, both
    boxes scoring clearly, the first more; three tenths score on a ladder around the score threshold, overlapping
    little; of the rest, half overlap above the IoU threshold in two classes, scoring like the first group, half
    overlap and score uniformly in 0.05–0.95 (round 43: when only these met across classes, by chance,
    `per_class: false` after a DFL head passed). Every anchor scores in a second class too, 0.8–1 times its best
    (a head of one class has neither: its pairs in two classes are more of the last group). So scores and overlaps
    lie on both sides of both thresholds, within 0.01 of each by several, anchors score in more than one class
    (where there are two), and the detections are fewer than the cut (but for a cut under `LEAST_PAIRS`). Rungs
    that cannot exist (an overlap above what the head's boxes make, a score outside 0–1) are not made: their anchors
    do not score, and a side of a threshold left with none is said in `notes`."""
    boxes, scores = boxes.copy(), np.zeros_like(scores)
    n, classes, anchors = scores.shape
    iou, score = nms.iou_threshold, nms.score_threshold
    clear = _clear(score)
    lowest, highest = (min(0.01, score / 2) if score > 0 else 1e-4), max(0.99, score + (1 - score) * 0.95)
    room = iou + 0.02 < codec.highest  # pairs clearly above the IoU threshold can be made
    if not room:
        notes.append(f"decoder probe: no pair can overlap clearly above the IoU threshold {iou:g} (the head's boxes "
                     f"overlap at most {codec.highest:.4g}): the pairs in two classes that probe per_class are not "
                     "made")
    for image in range(n):
        wanted = max(LEAST_PAIRS, min(anchors, nms.max_detections // 3) // 2)
        leaders, followers = codec.pairs(rng, wanted, anchors)
        pairs = len(leaders)
        near_iou, near_score = pairs * 2 // 5, pairs * 3 // 10
        across = (pairs - near_iou - near_score) // 2 if room and classes > 1 else 0
        loose = pairs - near_iou - near_score - across
        rungs = _ladder(iou, near_iou, 0.04, rng)
        made_iou = _made(rungs, 0, codec.highest)
        little = rng.uniform(0.05, 0.5, near_score)  # below the IoU threshold; disjoint boxes at 0
        overlap = np.concatenate([np.where(made_iou, rungs, codec.highest / 2), little * iou if iou > 0 else -little,
                                  rng.uniform(min(iou + 0.02, 1), 1, across).clip(0.01, 0.99),
                                  rng.uniform(0.05, 0.95, loose).clip(0.01, 0.99)])
        codec.place(boxes[image], leaders, followers, (1 - overlap) / (1 + overlap))  # a box moved by d·w
        # sideways overlaps its copy (1 − d) / (1 + d)
        ranked = near_iou + near_score, near_iou + near_score + across  # the pairs of the third group
        clear_iou = rng.uniform(*clear, near_iou)
        lead_rungs = _ladder(score, near_score, 0.03, rng)
        lead = np.concatenate([clear_iou, lead_rungs, rng.uniform(*clear, across), rng.uniform(0.05, 0.95, loose)])
        follow_rungs = _ladder(score, near_score, 0.03, rng)
        follow = np.concatenate([np.zeros(near_iou), follow_rungs, np.zeros(across), rng.uniform(0.05, 0.95, loose)])
        second = np.r_[:near_iou, ranked[0]:ranked[1]]
        follow[second] = score + (lead[second] - score) * rng.uniform(0.5, 0.95, len(second))
        made = np.ones((pairs, 2), bool)
        made[:near_iou] = made_iou[:, None]
        made_lead, made_follow = _made(lead_rungs, *SCORES), _made(follow_rungs, *SCORES)
        made[near_iou:ranked[0]] = np.stack([made_lead, made_follow], 1)
        best = rng.integers(0, classes, pairs)
        other = (best + rng.integers(1, classes, pairs)) % classes if classes > 1 else best
        chosen = np.stack([leaders, followers], 1).ravel()  # leader, follower, leader, …
        top = np.clip(np.stack([lead, follow], 1).ravel(), lowest, highest) * made.ravel()  # not made: no score
        in_two = (np.arange(pairs) >= ranked[0]) & (np.arange(pairs) < ranked[1])
        firsts = np.stack([best, np.where(in_two, other, best)], 1).ravel()
        scores[image, firsts, chosen] = top
        if classes > 1:  # one class: no second one to score in
            seconds = (firsts + rng.integers(1, classes, 2 * pairs)) % classes
            scores[image, seconds, chosen] = top * rng.uniform(0.8, 1.0, 2 * pairs)
        _edge_boxes(codec, boxes[image], scores[image], chosen, clear, rng)
        if image == 0:
            notes += _side_notes("overlap", "IoU threshold", iou, rungs, made_iou, (0, codec.highest))
            notes += _side_notes("class score", "score threshold", score, np.r_[lead_rungs, follow_rungs],
                                 np.r_[made_lead, made_follow], SCORES)
    return boxes, scores


def _edge_boxes(codec: _YoloHead | _DflHead, box: np.ndarray, scores: np.ndarray, used: np.ndarray,
                clear: tuple[float, float], rng: np.random.Generator) -> None:
    """Four more anchors (not `used`) scoring clearly, each a thin box along one edge of the model's input (top,
    bottom, left, right): from the edge to `EDGE_DEPTH` past the point it must hold, 1 px to either side of it. An
    image letterboxed with padding there has it in the padding, which boxes_to_image drops, and the probe runs at
    every image size. None where fewer than four anchors are left (a head of 3 anchors holds one pair: round 54).
    Round 58: a stand-in detector's boxes were all tens of pixels tall, none wholly in a padding, and a patch that
    dropped boxes left of the image but kept those above it PASSed."""
    free = np.setdiff1d(np.arange(len(box)), used)
    if codec.facts.input_size is None or len(free) < 4:
        return
    size = np.array(codec.facts.input_size, np.float64)
    points = codec.points(len(box), rng)[free]
    for axis, far in ((1, False), (1, True), (0, False), (0, True)):
        reach = size[axis] - points[:, axis] if far else points[:, axis]
        pick = int(np.argmin(reach))
        anchor, point = free[pick], points[pick]
        depth = reach[pick] + EDGE_DEPTH
        centre = point.copy()
        centre[axis] = size[axis] - depth / 2 if far else depth / 2
        extent = np.full(2, 2.0)
        extent[axis] = depth
        box[anchor] = [*centre, *extent]
        scores[:, anchor] = 0
        scores[rng.integers(0, scores.shape[0]), anchor] = rng.uniform(*clear)
        free, points = np.delete(free, pick), np.delete(points, pick, axis=0)
