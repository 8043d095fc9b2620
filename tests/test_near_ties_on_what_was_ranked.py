"""Near ties of indices and detections are judged on what their step ranked (`twins.decision_inputs`), not on the
model output: top-k over a saturated softmax ranks probabilities of 0 whose logits differ; a detection head's boxes
are pixels, and its near-tie tolerance measured on their rounding made every detection a near tie, so a wrong patch
passed. Boxes of zero area match by their corners; in an image whose candidates are not finite (NMS of NaN / inf is
each runtime's own rule) differences are near ties, and a comparison of near ties only proves nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.compare import DetectionResult
from graphsurgery.compare_detections import Candidates, compare_detections
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import parse_recipe
from graphsurgery.steps.detect import DetectionComparison
from graphsurgery.tolerances import DEFAULT_TIE
from graphsurgery.twins import comparisons, decision_inputs
from graphsurgery.verification import compare, verify
from test_detect import NAMES, detections

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "yolov8_detector.yaml"
IMAGES = ROOT / "examples" / "images"
RULES = DetectionComparison("detections", rtol=1e-4, atol=1e-4, score_threshold=0.25, iou_threshold=0.7,
                            max_detections=5)


def candidates(box_of_second: tuple) -> Candidates:
    """What an nms read for one image: two anchors of one class, both above the threshold (output where read)."""
    boxes = np.array([[[10, 10, 50, 80], box_of_second]], np.float32)
    return Candidates(boxes, np.array([[[0.9, 0.6]]], np.float32), boxes)


def test_boxes_of_zero_area_match_by_their_corners():
    point = (0, 0.9, (30, 40, 30, 40))  # IoU of two such boxes is 0 / 0
    result = compare_detections(NAMES, detections([point]), detections([point]), RULES)
    assert result and result.matched == 1, result.summary()
    moved = compare_detections(NAMES, detections([(0, 0.9, (31, 40, 31, 40))]), detections([point]), RULES)
    assert not moved and moved.mismatches == 2, moved.summary()


def test_differences_in_an_image_with_candidates_that_are_not_finite_are_near_ties():
    kept = (0, 0.9, (10, 10, 50, 80))
    only_reference = detections([kept, (0, 0.6, (100, 100, 140, 170))])
    settled = compare_detections(NAMES, detections([kept]), only_reference, RULES,
                                 candidates=candidates((100, 100, 140, 170)))
    assert not settled and settled.mismatches == 1 and settled.unsettled == 0, settled.summary()
    odd = compare_detections(NAMES, detections([kept]), only_reference, RULES,
                             candidates=candidates((np.nan, 100, np.inf, 170)))
    assert odd and odd.near_ties == 1 and odd.unsettled == 1, odd.summary()
    assert "not finite" in odd.summary()


def test_a_comparison_of_near_ties_only_proves_nothing():
    at_threshold = (0, 0.25 + 1e-6, (10, 10, 50, 80))  # a score on the threshold: one side may drop it
    result = compare_detections(NAMES, detections([]), detections([at_threshold]), RULES)
    assert not result and result.near_ties == 1 and "proves nothing" in result.summary()
    other = (1, 0.9, (60, 60, 90, 90))
    with_a_match = compare_detections(NAMES, detections([other]), detections([at_threshold, other]), RULES)
    assert with_a_match and with_a_match.near_ties == 1 and with_a_match.matched == 1, with_a_match.summary()


@pytest.fixture(scope="module")
def huge_boxes(tmp_path_factory) -> Path:
    """The seeded YOLOv8-shaped model with its box rows scaled by 1e37 (scores untouched)."""
    from modelkit import zoo_model

    folder = tmp_path_factory.mktemp("huge")
    plain = onnx.load(zoo_model(folder / "plain.onnx", "yolov8-tiny", opset=17))
    output = plain.graph.output[0]
    rows = output.type.tensor_type.shape.dim[1].dim_value
    for node in plain.graph.node:
        node.output[:] = ["head" if name == output.name else name for name in node.output]
    scale = np.where(np.arange(rows).reshape(1, rows, 1) < 4, 1e37, 1).astype(np.float32)
    plain.graph.initializer.append(numpy_helper.from_array(scale, "box_scale"))
    plain.graph.node.append(helper.make_node("Mul", ["head", "box_scale"], [output.name]))
    onnx.save(plain, folder / "huge.onnx")
    return folder / "huge.onnx"


def test_a_wrong_patch_of_a_head_with_huge_boxes_fails(huge_boxes, tmp_path):
    wrong_recipe = tmp_path / "wrong.yaml"  # another score threshold: fewer detections
    wrong_recipe.write_text(RECIPE.read_text().replace("score_threshold: 0.25", "score_threshold: 0.5"))
    wrong = apply(wrong_recipe, huge_boxes, tmp_path / "wrong.onnx").output
    report = verify(RECIPE, huge_boxes, patched=wrong, images=IMAGES)
    assert not report
    assert not any("near ties on" in note and "e+" in note for note in report.notes), report.notes
    results = [r for pair in report.pairs for r in pair.results if isinstance(r, DetectionResult)]
    assert not any(r and r.near_ties for r in results[:1]), [r.summary() for r in results]


TOPK = """
version: 1
name: top3
output:
  steps: [softmax: {}, topk: {k: 3}]
"""


def test_top_k_ties_are_judged_on_the_probabilities_it_ranked():
    recipe = parse_recipe(TOPK, "top3.yaml")
    facts = ModelFacts.of(classifier(), recipe)
    logits = np.array([[200.0, 0.0, -300.0, 50.0]], np.float32)  # softmax: 1, then three probabilities of 0
    probabilities = np.exp(logits.astype(np.float64) - logits.max())
    probabilities /= probabilities.sum()
    reads = decision_inputs(recipe, logits, facts)
    assert list(reads) == ["indices"] and np.allclose(reads["indices"]["probabilities"], probabilities, atol=1e-30)
    expected = {"indices": np.array([[0, 1, 2]]), "scores": np.array([[1.0, 0.0, 0.0]], np.float32)}
    actual = {"indices": np.array([[0, 3, 1]]), "scores": expected["scores"]}  # a runtime's order of the zeros
    wanted = comparisons(recipe, facts)
    on_logits = indices(compare(actual, expected, logits, wanted, {}, DEFAULT_TIE))
    assert not on_logits and on_logits.mismatches == 2  # 0 vs 50 and -300: no tie on the logits
    ranked = indices(compare(actual, expected, logits, wanted, {}, DEFAULT_TIE, decided=reads))
    assert ranked and ranked.near_ties == 2, ranked.summary()
    wrong = {"indices": np.array([[3, 0, 1]]), "scores": expected["scores"]}  # another best class: 1 vs 0
    assert not indices(compare(wrong, expected, logits, wanted, {}, DEFAULT_TIE, decided=reads))


def indices(results: list) -> object:
    return next(result for result in results if result.output == "indices")


def classifier() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["logits"])], "cls",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
