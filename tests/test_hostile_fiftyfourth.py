"""Hostile round 54: right patches that verify failed.

Rounds 42–53 added decoder probes and exact comparisons so that wrong patches fail; they were tried on the project's
own test models only. Round 54 fed them right patches (what `apply` writes, unmodified) of quirky but legitimate
models: detector heads of a few anchors, class scores saturated at 1.0 in several classes of one anchor (and boxes
in the letterbox padding), float16 heatmaps under the top-down recipe, and a top-k of one class over several rows.
Each test here failed a right patch before its fix (exit 1, 2 or 3); the wrong patches the probes were made for
still fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from detectorkit import DETECTOR_RECIPE, with_nms, yolo_head
from graphsurgery.api import apply
from graphsurgery.compare_detections import Candidates, compare_detections
from graphsurgery.steps.base import GEOMETRY
from graphsurgery.steps.detect import BoxesToImage, DetectionComparison
from graphsurgery.tolerances import DEFAULT_TIE
from graphsurgery.verification import verify

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
PROBE = "output steps on a probe output"


def detector(path: Path, *, classes: int, anchors: int, score_bias: float = 0.0, seed: int = 0) -> Path:
    """A YOLOv8-shaped head [1, 4 + C, A] from a 64 × 64 image, its boxes spread over the image, moved by the
    image's 4 × 4 means (`detectorkit.yolo_head`)."""
    return yolo_head(path, h=64, w=64, classes=classes, anchors=anchors, grid=4,
                     bounds=((6, 58), (6, 58), (6, 26), (6, 26)), score_bias=score_bias, seed=seed)


def test_a_head_of_too_few_anchors_for_a_probe_of_detections_is_not_probed(tmp_path):
    """Was: with 1 anchor the probe made no pair (no anchor scored), with 3 its one pair lay in the letterbox padding
    of the sample's image; either probe held no detection, "proves nothing", and the right patch FAILed with exit 1
    whatever the samples said. Now the probe is left out, with a note, when the twins find no detection on it; on a
    head where they do, it still catches the nms it was made for."""
    for anchors in (1, 3):
        plain = detector(tmp_path / f"plain_{anchors}.onnx", classes=2, anchors=anchors)
        right = apply(DETECTOR_RECIPE, plain, tmp_path / f"right_{anchors}.onnx").output
        report = verify(DETECTOR_RECIPE, plain, patched=right)
        assert report, report.failures()
        assert not report.probes and any("decoder probe skipped" in note for note in report.notes), report.notes
    plain = detector(tmp_path / "plain.onnx", classes=3, anchors=64)
    for change in ({"score_threshold": 0.3}, {"iou_threshold": 0.75}, {"per_class": False}):
        wrong = apply(with_nms(tmp_path, **change), plain, tmp_path / "wrong.onnx", force=True).output
        report = verify(DETECTOR_RECIPE, plain, patched=wrong, backends=("onnxruntime",))
        assert not report and [line for line in report.failures() if PROBE in line], change


# --- class scores tied within rounding --------------------------------------------------------------------------------


def test_a_right_patch_of_saturated_class_scores_passes_and_a_wrong_one_fails(tmp_path):
    """Was: every class score 1.0, or one float32 step below, so each anchor's best class (best_class_only) was
    float rounding's: onnxruntime kept a box in class 0 and OpenVINO the same box in class 1, and verify failed the
    right patch ("2 detection(s) on one side only"). Also, the nms of the order of ties kept anchors that
    boxes_to_image drops (in the letterbox padding), so no order explained the sides."""
    plain = detector(tmp_path / "plain.onnx", classes=3, anchors=40, score_bias=30.0)
    right = apply(DETECTOR_RECIPE, plain, tmp_path / "right.onnx").output
    report = verify(DETECTOR_RECIPE, plain, patched=right)
    assert report, report.failures()
    for change in ({"best_class_only": False}, {"per_class": False}, {"score_threshold": 0.3}):
        wrong = apply(with_nms(tmp_path, **change), plain, tmp_path / "wrong.onnx", force=True).output
        assert not verify(DETECTOR_RECIPE, plain, patched=wrong), change


A, B, FAR, PAD = [0, 0, 100, 100], [10, 0, 110, 100], [300, 300, 400, 400], [0, 460, 100, 490]  # A, B: IoU 0.82
C = [200, 0, 260, 60]


def one_image(*rows):
    """Detections [1, 4, ...] of (box, score, class) rows."""
    boxes, scores, classes = np.zeros((1, 4, 4), np.float32), np.zeros((1, 4), np.float32), np.full((1, 4), -1)
    for slot, (box, score, label) in enumerate(rows):
        boxes[0, slot], scores[0, slot], classes[0, slot] = box, score, label
    return {"boxes": boxes, "scores": scores, "classes": classes}


def compared(kept: list, scores: list[list[float]], placed: np.ndarray | None = None):
    """The reference keeps A in class 0 and FAR in class 1; `kept`, the other side; the candidates A, B, FAR and PAD
    score `scores` [C, 4] under nms with best_class_only."""
    comparison = DetectionComparison("detections", rtol=1e-4, atol=1e-4, iou_threshold=0.7, max_detections=4,
                                     score_threshold=0.25, best_class_only=True)
    boxes = np.array([[A, B, FAR, PAD]], np.float32)
    names = {part: part for part in ("boxes", "scores", "classes")}
    return compare_detections(names, one_image(*kept), one_image((A, 0.9, 0), (FAR, 0.8, 1)), comparison,
                              DEFAULT_TIE, Candidates(boxes, np.array([scores], np.float32),
                                                      boxes if placed is None else placed))


def test_a_box_in_either_of_two_tied_classes_is_explained_by_their_order():
    """The reference keeps A (class 0) and suppresses B; the other side keeps B, in class 1. B's scores in classes
    0 and 1 tie: its best class is rounding's, and in class 1 nothing suppresses it, so the sides differ by an order
    of ties. Where class 1 is clearly below B's best, a patch keeping it there is wrong (multi-label)."""
    for b_scores, explained in (([0.9, 0.9], True), ([0.9, 0.5], False)):
        scores = [[0.9, b_scores[0], 0.1, 0.1], [0.1, b_scores[1], 0.8, 0.1]]
        result = compared([(A, 0.9, 0), (B, b_scores[1], 1), (FAR, 0.8, 1)], scores)
        assert bool(result) is explained and (result.reordered == 1) is explained, result.summary()


def test_a_box_in_the_letterbox_padding_is_no_detection_an_order_of_ties_must_explain():
    """PAD scores above the threshold but lies in the padding: boxes_to_image drops it (placed nowhere: NaN), so the
    order of ties that explains the sides keeps A or B, and FAR, not PAD too."""
    geometry = {GEOMETRY: np.array([1, 1, 0, 0, 500, 450], np.float32)}  # an image of 500 × 450: PAD below it
    placed = BoxesToImage().moved_boxes(np.array([[A, B, FAR, PAD]], np.float32), geometry)
    assert np.isnan(placed[0, 3]).all() and np.isfinite(placed[0, :3]).all()
    result = compared([(B, 0.9, 0), (FAR, 0.8, 1)], [[0.9, 0.9, 0.1, 0.7], [0.1, 0.1, 0.8, 0.1]], placed)
    assert result and result.reordered == 1, result.summary()



def test_a_cut_filled_with_a_box_the_padding_drops_is_still_the_cut():
    """With max_detections 3, nms keeps PAD (0.95), then two of A, FAR and C (0.9 each, disjoint: their order is the
    runtime's); boxes_to_image then drops PAD, in the padding. The sides keep {A, FAR} and {A, C}: both are an order
    of ties past the cut, though neither holds 3 detections (was: a real mismatch, on saturated multi-label heads
    whose nms kept 4,000 boxes per image). A side that lost a detection is not explained."""
    comparison = DetectionComparison("detections", rtol=1e-4, atol=1e-4, iou_threshold=0.7, max_detections=3,
                                     score_threshold=0.25)
    geometry = {GEOMETRY: np.array([1, 1, 0, 0, 500, 450], np.float32)}
    boxes = np.array([[A, FAR, C, PAD]], np.float32)
    candidates = Candidates(boxes, np.array([[[0.9, 0.9, 0.9, 0.95]]], np.float32),
                            BoxesToImage().moved_boxes(boxes, geometry))
    names = {part: part for part in ("boxes", "scores", "classes")}
    reference = one_image((A, 0.9, 0), (FAR, 0.9, 0))
    for kept, explained in (([(C, 0.9, 0), (A, 0.9, 0)], True), ([(A, 0.9, 0)], False)):
        result = compare_detections(names, one_image(*kept), reference, comparison, DEFAULT_TIE, candidates)
        assert bool(result) is explained, result.summary()

# --- flip_average on float16 heatmaps -----------------------------------------------------------------------------


def test_the_top_down_recipe_applies_to_float16_heatmaps_and_verifies(tmp_path):
    """Was: a pose model whose heatmaps are float16 (exported half, or ending in a Cast) and the top-down recipe:
    apply refused, "the patched model fails the ONNX checker … Split … (10) vs (1) … a graphsurgery bug" (exit 2):
    flip_average split the float16 maps as float32. It now averages them in float32, as its twin does; a wrong
    flip_average (no one-pixel shift) still fails."""
    recipe = ROOT / "recipes" / "hrnet_coco_topdown.yaml"
    plain = onnx.load(str(pose_model(tmp_path / "pose.onnx", output_name="maps")))
    plain.graph.node.append(helper.make_node("Cast", ["maps"], ["heatmaps"], to=TensorProto.FLOAT16))
    plain.graph.output[0].CopyFrom(helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT16, [1, 17, 64, 48]))
    onnx.save(plain, str(tmp_path / "half.onnx"))
    right = apply(recipe, tmp_path / "half.onnx", tmp_path / "right.onnx").output
    report = verify(recipe, tmp_path / "half.onnx", patched=right, random=2)
    assert report, report.failures()
    mutated = yaml.safe_load(recipe.read_text())
    mutated["output"]["steps"][0] = {"flip_average": {"shift": False}}
    mutated["name"] += "-mutated"
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(mutated))
    wrong = apply(tmp_path / "wrong.yaml", tmp_path / "half.onnx", tmp_path / "wrong.onnx").output
    assert not verify(recipe, tmp_path / "half.onnx", patched=wrong, random=2)


# --- the probe of ranked rows on one class ---------------------------------------------------------------------------

TOP_ONE = """version: 1
name: top-one
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: BGR}
  steps: [{cast: {}}, {layout: {to: NCHW}}, {scale: {divide: 255}}]
output:
  steps: [{topk: {k: 1, source: output}}]
  names: {indices: label, scores: score}
"""


def static_batch_classifier(path: Path, classes: int) -> Path:
    """[2, 3, 4, 4] → Flatten → MatMul → logits [2, classes]: a static batch of two rows."""
    weights = np.random.default_rng(0).normal(0, 0.3, (48, classes)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, classes])],
                              [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_topk_of_one_class_over_several_rows_verifies(tmp_path):
    """Was: a score of one class (a single logit), a static batch of 2 and `topk: {k: 1}`: verify's probe of ranked
    rows put the second row's peak on class 1, an IndexError, exit 3. A top-k whose first-maximum table was zeroed
    still fails on the probe (two classes)."""
    recipe = tmp_path / "top1.yaml"
    recipe.write_text(TOP_ONE)
    plain = static_batch_classifier(tmp_path / "one.onnx", 1)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()
    plain = static_batch_classifier(tmp_path / "two.onnx", 2)
    model = onnx.load(str(apply(recipe, plain, tmp_path / "right_two.onnx").output))
    table = next(t for t in model.graph.initializer if t.name.startswith("graphsurgery/post/topk")
                 and t.name.endswith("positions"))
    table.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(table)), table.name))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=("onnxruntime",))
    assert not report and any(PROBE in line for line in report.failures()), report.failures()
