"""recipes/yolov8_detector.yaml on the seeded YOLOv8-shaped zoo model: the patched model (letterbox in, boxes in the
caller's pixels out) against the numpy twins through `verify` on both runtimes, against an ultralytics-style
OpenCV pipeline written here, with other geometries, and the refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.compare import DetectionResult
from graphsurgery.compare_detections import compare_detections
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
    from modelkit import zoo_model

    return zoo_model(tmp_path_factory.mktemp("detector") / "yolov8.onnx", "yolov8-tiny", opset=17)


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
                                max_detections=300, box_atol=2.0)
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
    from modelkit import zoo_model

    dynamic = zoo_model(tmp_path / "dynamic.onnx", "yolov8-tiny", opset=17, dynamic_batch=True)
    recipe = detector_recipe("- crop_boxes: {}")
    with pytest.raises(GraphsurgeryError, match="to_image mode boxes"):
        apply(recipe, dynamic, tmp_path / "refused.onnx")
    assert not (tmp_path / "refused.onnx").exists()


def test_mapping_back_without_input_steps_is_refused(detector, tmp_path):
    recipe = load_recipe(RECIPE).model_copy(update={"input": None})
    with pytest.raises(GraphsurgeryError, match="maps results back through the input steps"):
        apply(recipe, detector, tmp_path / "refused.onnx")


@pytest.fixture(scope="module")
def raw_detector(tmp_path_factory) -> Path:
    """The same detector (same seeded weights) exported before its DFL and sigmoid: [1, 4·16 + 80, A]."""
    from modelkit import zoo_model

    return zoo_model(tmp_path_factory.mktemp("raw") / "yolov8_raw.onnx", "yolov8-tiny-raw", opset=11)


def raw_recipe():
    text = RECIPE.read_text().replace("    - yolo_boxes: {format: v8}\n", "    - dfl_boxes: {bins: 16}\n")
    return parse_recipe(text.replace("name: yolov8-detector", "name: yolov8-raw-detector"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dfl_boxes_on_the_raw_head_find_what_the_exported_decode_finds(detector, raw_detector, tmp_path, backend):
    """dfl_boxes in the graph against the decode ultralytics exports (the zoo model's own, in PyTorch): the same
    detections from the same weights, at opset 11."""
    decoded = apply(RECIPE, detector, tmp_path / "decoded.onnx").output
    raw = apply(raw_recipe(), raw_detector, tmp_path / "raw.onnx").output
    image = read_image(PHOTO)[None]
    with open_runner(backend, decoded) as run:
        want = run({"image": image})
    with open_runner(backend, raw) as run:
        got = run({"image": image})
    result = compare_detections({p: p for p in PARTS}, got, want, load_recipe(RECIPE).output.steps[1].writes()["boxes"])
    assert result and result.matched == result.detections > 5, result.summary()


def test_verify_passes_on_the_raw_head(raw_detector):
    report = verify(raw_recipe(), raw_detector, images=IMAGES)
    assert report, report.failures()
    assert all(r.matched == r.detections > 5 for r in detection_results(report))


def two_box_detector(path: Path) -> Path:
    """A 64×64 'detector' whose head always holds two confident boxes (model pixels, cx, cy, w, h): one over the
    image rows of a wide letterboxed picture, one in the padding above them (and zero times the image, so the
    output depends on the input as a model's does)."""
    head = np.zeros((1, 5, 2), np.float32)
    head[0, :, 0] = [20, 32, 20, 8, 0.9]   # x 10–30, y 28–36: inside rows 24–40
    head[0, :, 1] = [20, 7, 20, 10, 0.8]   # y 2–12: in the padding
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["head", "nothing"], ["output0"])]
    graph = helper.make_graph(nodes, "two_boxes", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                   [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 2])],
                              [numpy_helper.from_array(head, "head"), numpy_helper.from_array(np.float32(0), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_box_in_the_letterbox_padding_is_dropped(tmp_path, backend):
    plain = two_box_detector(tmp_path / "two.onnx")
    patched = apply(RECIPE, plain, tmp_path / "two.patched.onnx").output
    image = np.zeros((1, 32, 128, 3), np.uint8)  # → 16 × 64 image rows, 24 rows of padding above and below
    with open_runner(backend, patched) as run:
        got = run({"image": image})
    assert got["count"].tolist() == [1]
    np.testing.assert_allclose(got["boxes"][0, 0], [20, 8, 60, 24], atol=1e-4)  # (x − 0) / 0.5, (y − 24) / 0.5
    assert got["classes"][0, :2].tolist() == [0, -1] and got["scores"][0, 1] == 0
    report = verify(RECIPE, plain, patched=patched, random=2, backends=(backend,))
    assert report and all(r.detections >= 1 for r in detection_results(report))
