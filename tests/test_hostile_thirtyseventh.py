"""Round 37: wrong patches that verify passed (the comparisons, not the steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from graphsurgery.api import apply
from graphsurgery.compare import compare_positions
from graphsurgery.compare_detections import compare_detections
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.steps.base import Comparison
from graphsurgery.steps.detect import DetectionComparison
from graphsurgery.verification import verify

ROOT = Path(__file__).resolve().parent.parent
DETECTOR_RECIPE = ROOT / "recipes" / "yolov8_detector.yaml"
IMAGES = ROOT / "examples" / "images"


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from modelkit import zoo_model

    return zoo_model(tmp_path_factory.mktemp("detector") / "yolov8.onnx", "yolov8-tiny", opset=17)


def wrong_recipe(source: Path, folder: Path, change) -> Path:
    """`source` with `change(recipe dict)` applied, written to `folder`."""
    recipe = yaml.safe_load(source.read_text())
    change(recipe)
    path = folder / f"wrong_{source.name}"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_detector_patched_with_fewer_detection_rows_fails(detector, tmp_path):
    """nms pads to max_detections rows: a patch cutting at 20 instead of 300 matched every detection of two photos
    (9 each) and passed, though a caller reading row 20 fails."""
    nms = lambda recipe: recipe["output"]["steps"][1]["nms"].update(max_detections=20)  # noqa: E731
    wrong = apply(wrong_recipe(DETECTOR_RECIPE, tmp_path, nms), detector, tmp_path / "wrong.onnx").output
    report = verify(DETECTOR_RECIPE, detector, patched=wrong, images=IMAGES, backends=("onnxruntime",))
    assert not report
    assert "detection rows" in "\n".join(report.failures())


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from modelkit import zoo_model

    return zoo_model(tmp_path_factory.mktemp("classifier") / "resnet.onnx", "resnet-tiny", opset=17)


def test_probabilities_of_a_wrong_centre_crop_fail_without_the_logits(classifier, tmp_path):
    """Top-5 probabilities of 1000 classes are ≈ 2e-3: a crop_fraction of 0.9 for 0.875 moved them 3 % (6e-5),
    inside the absolute 1e-4 floor, and with keep_original off nothing else showed it. The right patch differs by
    2e-7 relative, and still passes."""
    source = ROOT / "recipes" / "imagenet_classifier.yaml"
    right = wrong_recipe(source, tmp_path, lambda recipe: recipe["output"].update(keep_original=False))
    crop = lambda recipe: recipe["input"]["steps"][2]["resize"].update(crop_fraction=0.9)  # noqa: E731
    wrong = apply(wrong_recipe(right, tmp_path, crop), classifier, tmp_path / "wrong.onnx").output
    report = verify(right, classifier, patched=wrong, random=2, backends=("onnxruntime",))
    assert not report
    assert any(line.startswith("onnxruntime: unpatched → patched: scores") for line in report.failures())
    assert verify(right, classifier, random=2, backends=("onnxruntime",))


def test_top_k_indices_of_a_wrong_std_are_no_near_ties(classifier, tmp_path):
    """With only the indices compared, a std of 0.2 for 0.225 reordered the top 5 of two photos, and every swap was
    a near tie: neighbouring probabilities (≈ 1e-3) differ by less than an absolute 1e-4."""
    source = ROOT / "recipes" / "imagenet_classifier.yaml"
    right = wrong_recipe(source, tmp_path, lambda recipe: recipe["output"].update(
        keep_original=False, names={"indices": "indices"}))
    std = lambda recipe: recipe["input"]["steps"][4]["normalize"].update(std=[0.2, 0.2, 0.2])  # noqa: E731
    wrong = apply(wrong_recipe(right, tmp_path, std), classifier, tmp_path / "wrong.onnx").output
    report = verify(right, classifier, patched=wrong, images=IMAGES, backends=("onnxruntime",))
    assert not report
    assert any(line.startswith("onnxruntime: unpatched → patched: indices") for line in report.failures())
    assert verify(right, classifier, images=IMAGES, backends=("onnxruntime",))


def test_dfl_strides_that_do_not_divide_the_input_are_refused(tmp_path):
    """Strides 8, 16, 31 make as many cells on 160×128 as 8, 16, 32 (floor division), so the anchor count let the
    patch through, and verify passed it: the zoo detector's coarsest level finds nothing in the photos."""
    from modelkit import zoo_model

    raw = zoo_model(tmp_path / "raw.onnx", "yolov8-tiny-raw", opset=11)
    dfl = lambda recipe: recipe["output"]["steps"].__setitem__(0, {"dfl_boxes": {"strides": [8, 16, 31]}})  # noqa: E731
    with pytest.raises(GraphsurgeryError, match="do not divide the 160×128 input") as refused:
        apply(wrong_recipe(DETECTOR_RECIPE, tmp_path, dfl), raw, tmp_path / "wrong.onnx")
    # round 100: a PicoDet's strides are its head's, and its grid rounds up; "set `strides` to the head's" alone misled
    assert "a head whose grid rounds a side up (PaddleDetection's PicoDet" in str(refused.value)


def test_a_coordinate_tolerance_that_passes_zeros_is_called_out():
    """`--tolerance keypoints=1000` on 384×288 crops lets keypoints anywhere pass; floats said so, keypoints not."""
    expected = np.array([[[10.0, 20.0], [280.0, 380.0]]])
    loose = compare_positions("keypoints", np.zeros_like(expected), expected, Comparison("coordinates", atol=1000))
    assert loose and "cannot catch a wrong patch" in loose.summary()
    tight = compare_positions("keypoints", expected + 1, expected, Comparison("coordinates", atol=2))
    assert tight and "NOTE" not in tight.summary()


def test_detections_padded_to_other_row_counts_differ():
    rules = DetectionComparison("detections", rtol=1e-5, atol=1e-5, max_detections=5)
    sides = []
    for rows in (5, 3):
        side = {"boxes": np.zeros((1, rows, 4), np.float32), "scores": np.zeros((1, rows), np.float32),
                "classes": np.full((1, rows), -1, np.int64)}
        side["boxes"][0, 0], side["scores"][0, 0], side["classes"][0, 0] = (1, 1, 9, 9), 0.9, 0
        sides.append(side)
    names = {part: part for part in ("boxes", "scores", "classes")}
    result = compare_detections(names, sides[1], sides[0], rules)
    assert not result and "3 detection rows" in result.summary()
