"""Detector post-processing (graphsurgery/steps/detect.py and nms.py): the numpy twin of the suppression against
OpenCV's, the emitted graph against the twin on both runtimes, and the set comparison verify uses for detections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from graphsurgery.compare_detections import compare_detections
from graphsurgery.steps.detect import DetectionComparison, DflBoxes, YoloBoxes
from graphsurgery.steps.nms import Nms, greedy_nms

from stepkit import chain

PARTS = ("boxes", "scores", "classes", "count")
NAMES = {part: part for part in PARTS}
RUNTIMES = ("ort", "openvino", "twin")


def random_boxes(rng: np.random.Generator, count: int, extent: float = 100.0) -> np.ndarray:
    """Corners (x1, y1, x2, y2) of boxes 4–40 px wide, crowded enough that many overlap."""
    corner = rng.uniform(0, extent, (count, 2))
    return np.concatenate([corner, corner + rng.uniform(4, 40, (count, 2))], 1).astype(np.float32)


def as_rects(corners: np.ndarray) -> list[tuple[float, ...]]:
    return [(float(x1), float(y1), float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in corners]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou_threshold", [0.3, 0.45, 0.7])
def test_greedy_nms_keeps_what_opencv_keeps(seed, iou_threshold):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    kept = greedy_nms(boxes, scores, 0.25, iou_threshold)
    theirs = cv2.dnn.NMSBoxes(as_rects(boxes), scores.tolist(), 0.25, iou_threshold)
    assert 20 < len(kept) < 280  # both the threshold and the suppression have work to do
    assert kept == np.asarray(theirs).ravel().tolist()  # the same boxes, in the same order (best first)


def kept_by_definition(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float
                       ) -> list[int]:
    """Greedy suppression as its definition reads: in descending score order (ties by index), keep a box unless its
    IoU (float64; 0 for an empty union, NaN for corners that are not finite, which suppresses nothing) with a box
    kept before exceeds the threshold."""
    order = sorted((i for i in range(len(scores)) if scores[i] > score_threshold), key=lambda i: (-scores[i], i))
    corners = np.asarray(boxes, np.float64)
    kept: list[int] = []
    for i in order:
        suppressed = False
        for j in kept:
            low = np.maximum(np.minimum(corners[i, :2], corners[i, 2:]), np.minimum(corners[j, :2], corners[j, 2:]))
            high = np.minimum(np.maximum(corners[i, :2], corners[i, 2:]), np.maximum(corners[j, :2], corners[j, 2:]))
            with np.errstate(invalid="ignore"):
                inter = np.prod(np.clip(high - low, 0, None))
                union = (np.prod(np.abs(corners[i, 2:] - corners[i, :2])) + np.prod(np.abs(corners[j, 2:] -
                                                                                           corners[j, :2])) - inter)
                suppressed |= bool(union > 0 and inter / union > iou_threshold)
        if not suppressed:
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(4))
def test_greedy_nms_keeps_what_the_definition_keeps_on_odd_boxes(seed):
    """Reversed corners, empty and infinite boxes, NaN corners and scores, equal scores, thresholds 0 and 1."""
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 120).astype(np.float64)
    boxes[:10] = boxes[:10, [2, 3, 0, 1]]  # corners in the other order
    boxes[10:14] = boxes[10:14, [0, 1, 0, 1]]  # empty
    boxes[14:18] = rng.choice([np.nan, np.inf, -np.inf], (4, 4))
    scores = np.round(rng.uniform(0, 1, 120), 1)  # many equal scores
    scores[rng.integers(0, 120, 5)] = np.nan
    for iou_threshold in (0.0, 0.3, 0.7, 1.0):
        kept = greedy_nms(boxes, scores, 0.2, iou_threshold)
        assert kept == kept_by_definition(boxes, scores, 0.2, iou_threshold)
        assert 0 < len(kept) < 100 or iou_threshold == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_best_class_only_is_opencvs_batched_nms(seed):
    """ultralytics' predict: each anchor in its best class, suppression within each class."""
    rng = np.random.default_rng(seed)
    anchors, classes = 400, 5
    boxes = random_boxes(rng, anchors)
    scores = (rng.uniform(0, 1, (1, classes, anchors)) ** 2).astype(np.float32)
    step = Nms(iou_threshold=0.5, score_threshold=0.3, max_detections=anchors, best_class_only=True)
    twin = step.reference({"candidates": boxes[None], "class_scores": scores})
    best, label = scores[0].max(axis=0), scores[0].argmax(axis=0)
    theirs = np.asarray(cv2.dnn.NMSBoxesBatched(as_rects(boxes), best.tolist(), label.tolist(), 0.3, 0.5)).ravel()
    count = int(twin["count"][0])
    assert count == len(theirs) > 10
    assert sorted(zip(twin["classes"][0][:count].tolist(), twin["scores"][0][:count].tolist())) == sorted(
        zip(label[theirs].tolist(), best[theirs].tolist()))
    assert np.all(np.diff(twin["scores"][0][:count]) <= 0)  # best first


def head(fmt: str, batch: int, anchors: int, classes: int, seed: int) -> np.ndarray:
    """A raw head of `fmt` with plausible values: centres in a 100 px image, sizes 4–40 px (log sizes for yolox),
    class scores mostly low."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 100, (batch, anchors, 2))
    size = rng.uniform(4, 40, (batch, anchors, 2))
    scores = rng.uniform(0, 1, (batch, anchors, classes)) ** 3
    if fmt == "v8":
        return np.concatenate([centre, size, scores], 2).transpose(0, 2, 1).astype(np.float32)
    if fmt == "yolox":
        centre, size = rng.uniform(-0.5, 0.5, (batch, anchors, 2)), rng.uniform(0, 2, (batch, anchors, 2))
    return np.concatenate([centre, size, rng.uniform(0.3, 1, (batch, anchors, 1)), scores], 2).astype(np.float32)


YOLOX_SIZE = (64, 32)  # (W, H): 8·4 + 4·2 + 2·1 = 42 anchors at strides 8, 16, 32
CASES = [
    ("v8", {}), ("v8", {"best_class_only": True}), ("v8", {"per_class": False}),
    ("v5", {}), ("v5", {"max_detections": 500}),  # more detections asked for than the head has candidates
    ("yolox", {"best_class_only": True}),
]


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("fmt,options", CASES)
def test_graph_detects_what_the_twin_detects(fmt, options, opset):
    classes = 4
    anchors = 42 if fmt == "yolox" else 120
    steps = (YoloBoxes(format=fmt), Nms(**{"iou_threshold": 0.45, "score_threshold": 0.2, "max_detections": 25,
                                           **options}))
    x = head(fmt, 2, anchors, classes, seed=opset)
    rows = (4 + classes, anchors) if fmt == "v8" else (anchors, 5 + classes)
    facts = (("input_size", YOLOX_SIZE),) if fmt == "yolox" else ()
    run = chain(steps, (np.float32, ("N", *rows)), opset, PARTS, facts)
    want = dict(zip(PARTS, run.twin({"output": x})))
    assert (want["count"] > 3).all()
    d = steps[1].max_detections
    for runtime in ("ort", "openvino"):
        got = dict(zip(PARTS, getattr(run, runtime)({"output": x})))
        assert {k: v.shape for k, v in got.items()} == {"boxes": (2, d, 4), "scores": (2, d), "classes": (2, d),
                                                        "count": (2,)}
        np.testing.assert_array_equal(got["count"], want["count"])
        result = compare_detections(NAMES, got, want, steps[1].writes()["boxes"])
        assert result and result.matched == result.detections == want["count"].sum(), result.summary()
        for image in range(2):  # rows past the count: zeros and class −1
            past = slice(int(got["count"][image]), None)
            assert (got["classes"][image, past] == -1).all() and not got["boxes"][image, past].any()
            assert not got["scores"][image, past].any()


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("scores", ["sigmoid", "none"])
def test_dfl_boxes_graph_is_the_twin(opset, scores):
    """PicoDet-style: 8 bins per side, anchor points at the cells' corners (cell_offset 0)."""
    classes, bins, anchors = 3, 8, 42
    rng = np.random.default_rng(opset)
    logits = rng.normal(0, 2, (2, 4 * bins, anchors))
    class_part = rng.normal(-2, 1.5, (2, classes, anchors)) if scores == "sigmoid" else rng.uniform(0, 1, (
        2, classes, anchors)) ** 3
    x = np.concatenate([logits, class_part], 1).astype(np.float32)
    steps = (DflBoxes(bins=bins, cell_offset=0.0, scores=scores), Nms(score_threshold=0.2, max_detections=20))
    run = chain(steps, (np.float32, ("N", 4 * bins + classes, anchors)), opset,
                ("candidates", "class_scores", *PARTS), (("input_size", YOLOX_SIZE),))
    want = dict(zip(("candidates", "class_scores", *PARTS), run.twin({"output": x})))
    assert (want["count"] > 3).all()
    for runtime in ("ort", "openvino"):
        got = dict(zip(("candidates", "class_scores", *PARTS), getattr(run, runtime)({"output": x})))
        np.testing.assert_allclose(got["candidates"], want["candidates"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got["class_scores"], want["class_scores"], rtol=1e-5, atol=1e-6)
        assert compare_detections(NAMES, got, want, steps[1].writes()["boxes"])
    # the anchor of the first stride-16 cell (index 32 of 42) sits at (0, 0) · 16: its box is the distances · 16
    first = want["candidates"][0, 32]
    assert first[0] <= 0 <= first[2] and first[1] <= 0 <= first[3]


def detections(rows: list[tuple[int, float, tuple]], d: int = 5) -> dict[str, np.ndarray]:
    """One image's outputs from (class, score, box) rows, padded to d."""
    out = {"boxes": np.zeros((1, d, 4), np.float32), "scores": np.zeros((1, d), np.float32),
           "classes": np.full((1, d), -1, np.int64), "count": np.array([len(rows)], np.int64)}
    for slot, (label, score, box) in enumerate(rows):
        out["boxes"][0, slot], out["scores"][0, slot], out["classes"][0, slot] = box, score, label
    return out


RULES = DetectionComparison("detections", rtol=1e-5, atol=1e-5, score_threshold=0.25, iou_threshold=0.45,
                            max_detections=5)
PEOPLE = [(0, 0.9, (10, 10, 50, 80)), (0, 0.8, (60, 10, 90, 80)), (2, 0.6, (0, 0, 20, 20))]


def test_detections_compare_as_sets():
    swapped = detections([PEOPLE[1], PEOPLE[0], PEOPLE[2]])  # equal sets, another order
    result = compare_detections(NAMES, swapped, detections(PEOPLE), RULES)
    assert result and result.matched == 3 and result.min_iou == 1.0


@pytest.mark.parametrize("change,what", [
    (lambda rows: rows[:2], "a detection missing"),
    (lambda rows: [*rows, (1, 0.5, (30, 30, 60, 60))], "an extra detection"),
    (lambda rows: [rows[0], rows[1], (1, 0.6, (0, 0, 20, 20))], "another class"),
    (lambda rows: [rows[0], rows[1], (2, 0.6, (3, 0, 23, 20))], "a box moved by 3 px"),
    (lambda rows: [rows[0], rows[1], (2, 0.59, (0, 0, 20, 20))], "a score off by 0.01"),
])
def test_different_detections_fail(change, what):
    result = compare_detections(NAMES, detections(change(PEOPLE)), detections(PEOPLE), RULES)
    assert not result, what
    assert result.mismatches >= 1 and "on one side only" in result.summary()


def test_a_detection_at_the_score_threshold_is_a_near_tie():
    at_threshold = [*PEOPLE, (1, 0.25 + 2e-6, (30, 30, 60, 60))]
    result = compare_detections(NAMES, detections(PEOPLE), detections(at_threshold), RULES)
    assert result and result.near_ties == 1 and result.mismatches == 0


def test_a_detection_suppressed_at_the_iou_threshold_is_a_near_tie():
    # [0, 0, 100, 45] inside [0, 0, 100, 100]: IoU 0.45 exactly, so one runtime may keep it and another not
    kept = [(0, 0.9, (0, 0, 100, 100)), (0, 0.8, (0, 0, 100, 45))]
    result = compare_detections(NAMES, detections(kept[:1]), detections(kept), RULES)
    assert result and result.near_ties == 1


def test_count_must_agree_with_the_rows():
    broken = detections(PEOPLE)
    broken["count"][0] = 2
    result = compare_detections(NAMES, broken, detections(PEOPLE), RULES)
    assert not result and "count" in result.summary()


def test_a_grid_that_does_not_fit_the_head_is_refused():
    from graphsurgery.steps.base import StepError

    from stepkit import model_facts

    x = head("yolox", 1, 42, 4, seed=0)
    with pytest.raises(StepError, match=r"the strides \[8, 16\] make 40 cells on a 64×32 input, the head has 42"):
        YoloBoxes(format="yolox", strides=(8, 16)).reference({"output": x}, model_facts({"input_size": YOLOX_SIZE}))
    with pytest.raises(StepError, match="dfl_boxes needs the model's input size"):
        DflBoxes(bins=8).reference({"output": np.zeros((1, 4 * 8 + 3, 42), np.float32)}, model_facts({}))


@pytest.mark.parametrize("step", ["yolo_boxes: {format: yolox, strides: [8, 0]}", "dfl_boxes: {strides: [2048]}"])
def test_strides_out_of_range_are_refused_in_the_recipe(step):
    from graphsurgery.errors import RecipeError
    from graphsurgery.recipe import parse_recipe

    with pytest.raises(RecipeError, match="strides"):
        parse_recipe(f"version: 1\nname: strides\noutput:\n  steps:\n    - {step}\n")
