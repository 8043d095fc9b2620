"""The decoder probe's detector head: a network output rewritten so that `nms` meets each of its decisions.

A head is read through its step's own decoding into boxes (cx, cy, w, h in input pixels) and class scores, crowded
(`_crowd`) and written back in the head's layout, so one rewrite serves every head the steps read (round 43: only
YOLOv8 heads had a probe, so after a v5, YOLOX or DFL head an nms of another threshold or competition passed).
Where the probe's values lie matters as much (round 43: overlaps uniform within ±0.04 of the IoU threshold caught
0.72 for 0.7 by one detection and 0.71 by none): they sit on ladders that close in on each threshold.
"""

from __future__ import annotations

import numpy as np

from graphsurgery.model import ModelFacts
from graphsurgery.steps.detect import DflBoxes, YoloBoxes, anchor_grid
from graphsurgery.steps.nms import Nms


def crowded_head(step: YoloBoxes | DflBoxes, nms: Nms, facts: ModelFacts, head: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray | None:
    """`head` rewritten by `_crowd`, or None for a head of one class (no anchor can score in two)."""
    codec = _DflHead(step, facts) if isinstance(step, DflBoxes) else _YoloHead(step, facts)
    boxes, scores = codec.decode(head)
    return codec.encode(*_crowd(codec, boxes, scores, nms, rng)) if scores.shape[1] > 1 else None


class _YoloHead:
    """A `yolo_boxes` head of any format, whose boxes may lie anywhere: a pair is any two anchors. v5 and YOLOX get
    an objectness of 1, so a score is its class probability."""

    def __init__(self, step: YoloBoxes, facts: ModelFacts):
        self.step, self.facts = step, facts

    def decode(self, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre, size, scores = self.step.decode(head, self.facts)
        return np.concatenate([centre, size], axis=2), scores

    def pairs(self, rng: np.random.Generator, count: int, anchors: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = rng.choice(anchors, 2 * min(count, anchors // 2), replace=False)
        return chosen[0::2], chosen[1::2]

    def place(self, box: np.ndarray, leaders: np.ndarray, followers: np.ndarray, moved: np.ndarray) -> None:
        """The followers' boxes: the leaders', moved sideways by `moved` times their width."""
        box[leaders, 2:] = np.abs(box[leaders, 2:]) + 1
        box[followers] = box[leaders]
        box[followers, 0] += moved * box[leaders, 2]

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
    (round 43: overlaps uniform within ±0.04 of the IoU threshold, and 0.71 for 0.7 passed, 0.72 failed on one)."""
    steps = np.geomspace(widest / 20, widest, (count + 1) // 2) * rng.uniform(0.9, 1.1, (count + 1) // 2)
    return rng.permutation(threshold + np.concatenate([steps, -steps])[:count])


def _crowd(codec: _YoloHead | _DflHead, boxes: np.ndarray, scores: np.ndarray, nms: Nms, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, A, 4] (cx, cy, w, h) and scores [N, C, A] where a third of max_detections anchors score, in
    pairs: a second box of each pair repeats the first's, moved sideways to a chosen overlap. Two fifths of the
    pairs overlap on a ladder around the IoU threshold, both boxes scoring clearly, the first more; three tenths
    score on a ladder around the score threshold, overlapping little; of the rest, half overlap above the IoU
    threshold in two classes, scoring like the first group, half overlap and score uniformly in 0.05–0.95 (round
    43: when only these met across classes, by chance, `per_class: false` after a DFL head passed). Every
    anchor scores in a second class too, 0.8–1 times its best. So scores and overlaps lie on both sides of both
    thresholds, within 0.01 of each by several, anchors score in more than one class, and the detections are fewer
    than the cut."""
    boxes, scores = boxes.copy(), np.zeros_like(scores)
    n, classes, anchors = scores.shape
    iou, score = nms.iou_threshold, nms.score_threshold
    clear = np.clip(score + (1 - score) * 0.3, 0.05, 0.95), 0.95
    for image in range(n):
        leaders, followers = codec.pairs(rng, max(1, min(anchors, nms.max_detections // 3) // 2), anchors)
        pairs = len(leaders)
        near_iou, near_score = pairs * 2 // 5, pairs * 3 // 10
        across = (pairs - near_iou - near_score) // 2
        loose = pairs - near_iou - near_score - across
        overlap = np.concatenate([_ladder(iou, near_iou, 0.04, rng), rng.uniform(0.05, 0.5, near_score) * iou,
                                  rng.uniform(iou + 0.02, 1, across), rng.uniform(0.05, 0.95, loose)]).clip(0.01, 0.99)
        codec.place(boxes[image], leaders, followers, (1 - overlap) / (1 + overlap))  # a box moved by d·w
        # sideways overlaps its copy (1 − d) / (1 + d)
        ranked = near_iou + near_score, near_iou + near_score + across  # the pairs of the third group
        lead = np.concatenate([rng.uniform(*clear, near_iou), _ladder(score, near_score, 0.03, rng),
                               rng.uniform(*clear, across), rng.uniform(0.05, 0.95, loose)])
        follow = np.concatenate([np.zeros(near_iou), _ladder(score, near_score, 0.03, rng), np.zeros(across),
                                 rng.uniform(0.05, 0.95, loose)])
        second = np.r_[:near_iou, ranked[0]:ranked[1]]
        follow[second] = score + (lead[second] - score) * rng.uniform(0.5, 0.95, len(second))
        best = rng.integers(0, classes, pairs)
        other = (best + rng.integers(1, classes, pairs)) % classes
        chosen = np.stack([leaders, followers], 1).ravel()  # leader, follower, leader, …
        top = np.clip(np.stack([lead, follow], 1).ravel(), 0.01, 0.99)
        in_two = (np.arange(pairs) >= ranked[0]) & (np.arange(pairs) < ranked[1])
        firsts = np.stack([best, np.where(in_two, other, best)], 1).ravel()
        seconds = (firsts + rng.integers(1, classes, 2 * pairs)) % classes
        scores[image, firsts, chosen] = top
        scores[image, seconds, chosen] = top * rng.uniform(0.8, 1.0, 2 * pairs)
    return boxes, scores
