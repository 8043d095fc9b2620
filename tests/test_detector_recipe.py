"""recipes/yolov8_detector.yaml on the seeded YOLOv8-shaped zoo model: the patched model (letterbox in, boxes in the
caller's pixels out) against the numpy twins through `verify` on both runtimes, against an ultralytics-style
OpenCV pipeline written here, with other geometries, and the refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import onnx
import pytest
from click.testing import CliRunner

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.compare import DetectionResult, compare_detections
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.images import read_image
from graphsurgery.recipe import load_recipe, parse_recipe
from graphsurgery.runners import BACKENDS, open_runner
from graphsurgery.steps.detect import DetectionComparison
from graphsurgery.verification import verify

import ultralyticskit

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "yolov8_detector.yaml"
IMAGES = ROOT / "examples" / "images"
PHOTO = IMAGES / "astronaut.jpg"
PARTS = ("boxes", "scores", "classes", "count")


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    from examples.zoo.export import export_zoo

    return export_zoo(tmp_path_factory.mktemp("detector") / "yolov8.onnx", "yolov8-tiny", opset=17)


def detection_results(report) -> list[DetectionResult]:
    return [result for pair in report.pairs for result in pair.results if isinstance(result, DetectionResult)]


def test_verify_passes_on_both_runtimes_and_compares_real_detections(detector):
    report = verify(RECIPE, detector, images=IMAGES)  # photos: downscaled noise has no detections
    assert report, report.failures()
    results = detection_results(report)
    assert len(results) == 2 * len(BACKENDS) - 1  # unpatched → patched on each backend, and across backends
    assert all(r.detections > 10 and r.matched == r.detections for r in results)


GEOMETRIES = {
    "crop": "- resize: {fit: crop, crop_fraction: 0.875}",
    "stretch + center_crop": "- resize: {size: [150, 190]}\n    - center_crop: {}",
    "top-left letterbox": "- resize: {fit: letterbox, pad_anchor: top_left, pad_value: 114}",
}


def detector_recipe(geometry: str, nms: str = "{iou_threshold: 0.7, best_class_only: true}"):
    return parse_recipe(f"""
version: 1
name: detector-geometry
input:
  name: image
  tensor: {{dtype: uint8, layout: NHWC, color: BGR}}
  model: {{layout: NCHW, color: RGB}}
  steps:
    - cast: {{}}
    - layout: {{to: NCHW}}
    {geometry}
    - reverse_channels: {{}}
    - scale: {{divide: 255}}
output:
  steps:
    - yolo_boxes: {{format: v8}}
    - nms: {nms}
    - boxes_to_image: {{}}
  names: {{boxes: boxes, scores: scores, classes: classes, count: count}}
  keep_original: false
""")


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_other_geometries_map_back_as_the_twins_do(detector, geometry):
    report = verify(detector_recipe(GEOMETRIES[geometry]), detector, images=IMAGES)
    assert report, report.failures()
    assert all(r.detections > 0 for r in detection_results(report))


def test_verify_fails_a_patch_made_with_other_thresholds(detector, tmp_path):
    patched = apply(detector_recipe(GEOMETRIES["crop"], "{iou_threshold: 0.3}"), detector,
                    tmp_path / "loose.onnx").output
    report = verify(detector_recipe(GEOMETRIES["crop"], "{iou_threshold: 0.7}"), detector, patched=patched,
                    images=IMAGES)
    assert not report
    assert any("on one side only" in line for line in report.failures())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_patched_model_agrees_with_an_ultralytics_style_opencv_pipeline(detector, tmp_path, backend):
    patched = apply(RECIPE, detector, tmp_path / "patched.onnx").output
    image = read_image(PHOTO)  # BGR, as cv2.imread gives it
    with open_runner(backend, patched) as run:
        got = run({"image": image[None]})
    with open_runner(backend, detector) as run:
        theirs = ultralyticskit.predict(image, lambda x: run({"input": x})["output0"], (128, 160))
    assert theirs["count"][0] > 5
    # OpenCV resizes in uint8 (rounded) and scales back with one gain: scores agree to ~1e-2, boxes to ~1 px
    rules = DetectionComparison("detections", rtol=0.0, atol=0.02, iou=0.9, score_threshold=0.25, iou_threshold=0.7,
                                max_detections=300)
    result = compare_detections({p: p for p in PARTS}, got, theirs, rules)
    assert result.matched >= 0.9 * result.detections, result.summary()
    assert abs(int(got["count"][0]) - int(theirs["count"][0])) <= max(2, 0.1 * theirs["count"][0])


def test_the_patched_model_takes_any_image_size_and_keeps_boxes_inside_it(detector, tmp_path):
    patched = apply(RECIPE, detector, tmp_path / "patched.onnx").output
    outputs = {o.name: o for o in onnx.load(str(patched)).graph.output}
    assert list(outputs) == ["boxes", "scores", "classes", "count"]
    photo = read_image(PHOTO)
    with open_runner("openvino", patched) as run:
        for h, w in ((90, 400), (480, 120), (128, 160)):
            got = run({"image": cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)[None]})
            n = int(got["count"][0])
            assert n > 0
            assert (got["boxes"][0, :n] >= 0).all() and (got["boxes"][0, :n, 0::2] <= w).all()
            assert (got["boxes"][0, :n, 1::2] <= h).all()


def test_cli_verify_prints_the_detection_comparison(detector):
    result = CliRunner().invoke(cli, ["verify", str(RECIPE), str(detector), "--images", str(IMAGES)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "detections" in result.output and "matched" in result.output


def test_mapping_back_after_crop_boxes_is_refused(tmp_path):
    from examples.zoo.export import export_zoo

    dynamic = export_zoo(tmp_path / "dynamic.onnx", "yolov8-tiny", opset=17, dynamic_batch=True)
    recipe = detector_recipe("- crop_boxes: {}")
    with pytest.raises(GraphsurgeryError, match="to_image mode boxes"):
        apply(recipe, dynamic, tmp_path / "refused.onnx")
    assert not (tmp_path / "refused.onnx").exists()


def test_mapping_back_without_input_steps_is_refused(detector, tmp_path):
    recipe = load_recipe(RECIPE).model_copy(update={"input": None})
    with pytest.raises(GraphsurgeryError, match="maps results back through the input steps"):
        apply(recipe, detector, tmp_path / "refused.onnx")
