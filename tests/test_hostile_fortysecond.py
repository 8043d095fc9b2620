"""Round 42: a recipe parameter mutated the way a careless user's differs from their pipeline, verified against the
original recipe. Samples through a plain network never reached these decisions of the output steps, so the wrong
patches passed; verify now also runs the patched graph's output steps on a probe network output
(`graphsurgery.decoder_probe`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clikit import invoke
from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import pose_model, wheel_model

ROOT = Path(__file__).resolve().parent.parent
POSE_RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
DETECTOR_RECIPE = ROOT / "recipes" / "yolov8_detector.yaml"
IMAGES = ROOT / "examples" / "images"  # photos: the samples do not change with the random sizes
PROBE = "output steps on a probe output"


def mutated(source: Path, folder: Path, side: str, step: str, **values) -> Path:
    """`source` with one parameter of its `step` changed, under another name."""
    recipe = yaml.safe_load(source.read_text())
    next(entry[step] for entry in recipe[side]["steps"] if step in entry).update(values)
    recipe["name"] += "-mutated"
    path = folder / f"mutated_{source.name}"
    path.write_text(yaml.safe_dump(recipe))
    return path


def probe_failures(report) -> list[str]:
    return [line for line in report.failures() if PROBE in line]


@pytest.fixture(scope="module")
def pose(tmp_path_factory):
    return pose_model(tmp_path_factory.mktemp("pose") / "pose.onnx", dynamic_batch=True)


def test_mmpose_invalid_joints_in_an_hrnet_recipe_fail(pose, tmp_path):
    """`invalid: minus_one` for the authors' zeros changes only joints whose map peaks at <= 0, and the tiny pose
    network's maps peaked above 0 on every random crop: the patch passed. The probe lowers every third map to a
    peak of 0 and every third from the second to −0.5."""
    wrong = apply(mutated(POSE_RECIPE, tmp_path, "output", "heatmap_argmax", invalid="minus_one"), pose,
                  tmp_path / "wrong.onnx").output
    report = verify(POSE_RECIPE, pose, patched=wrong, random=2, backends=("onnxruntime",))
    assert not report
    assert [line for line in probe_failures(report) if "keypoints" in line]


def test_the_cli_shows_and_counts_the_probe(pose, tmp_path):
    wrong = apply(mutated(POSE_RECIPE, tmp_path, "output", "heatmap_argmax", invalid="minus_one"), pose,
                  tmp_path / "wrong.onnx").output
    result = invoke("verify", POSE_RECIPE, pose, "--patched", wrong, "--random", 2, "--backends", "onnxruntime",
                    "--json", tmp_path / "report.json")
    assert result.exit_code == 1, result.output
    assert "probe output: keypoints" in " ".join(result.output.split())
    assert "FAIL: 1 of 6 comparisons differ (keypoints)" in result.output  # 6: the network input too
    report = yaml.safe_load((tmp_path / "report.json").read_text())  # JSON is YAML
    assert [pair["passed"] for pair in report["probes"]] == [False] and not report["passed"]


@pytest.mark.parametrize("backends", [("onnxruntime", "openvino"), ("openvino",)])
def test_the_right_pose_patch_passes_with_the_probe(pose, tmp_path, backends):
    """The probe runs on the first backend (what the recipe decides); the backends' agreement is the samples'."""
    right = apply(POSE_RECIPE, pose, tmp_path / "right.onnx").output
    report = verify(POSE_RECIPE, pose, patched=right, random=2, backends=backends)
    assert report, report.failures()
    assert [pair.name for pair in report.probes] == [f"{backends[0]}: {PROBE}"]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from modelkit import zoo_model

    return zoo_model(tmp_path_factory.mktemp("detector") / "yolov8.onnx", "yolov8-tiny", opset=17)


@pytest.mark.parametrize("change", [{"score_threshold": 0.26}, {"score_threshold": 0.3}, {"iou_threshold": 0.65},
                                    {"iou_threshold": 0.75}, {"best_class_only": False}, {"per_class": False}])
def test_nms_of_other_thresholds_or_competitions_fails(detector, tmp_path, change):
    """The zoo detector found 5 objects in 8 random images, all scoring above 0.3 and none overlapping: each of
    these patches passed; on the two photos IoU 0.65 and best_class_only off still passed. Whatever the samples
    find, the probe catches each by itself: its head scores 100 anchors, half near the score threshold, in pairs
    half near the IoU threshold, each in two classes."""
    wrong = apply(mutated(DETECTOR_RECIPE, tmp_path, "output", "nms", **change), detector,
                  tmp_path / "wrong.onnx").output
    report = verify(DETECTOR_RECIPE, detector, patched=wrong, images=IMAGES, backends=("onnxruntime",))
    assert not report
    assert probe_failures(report)


@pytest.mark.parametrize("backends", [("onnxruntime", "openvino"), ("openvino",)])
def test_the_right_detector_patch_passes_with_the_probe(detector, tmp_path, backends):
    right = apply(DETECTOR_RECIPE, detector, tmp_path / "right.onnx").output
    for seed in (0, 7):  # with images, the seed draws the probe head alone
        report = verify(DETECTOR_RECIPE, detector, patched=right, images=IMAGES, backends=backends, seed=seed)
        assert report, report.failures()
        assert [pair.name for pair in report.probes] == [f"{backends[0]}: {PROBE}"]


@pytest.mark.parametrize("random", [3, 8])
def test_a_letterbox_for_a_height_fit_fails_on_random_images(tmp_path, random):
    """RapidOCR's classifier is 192 × 48 (4:1) and every random size was at most 4:3, where `fit: height` and
    `letterbox` scale alike: a letterboxing patch passed. Verify leads with one image wider than the model and one
    taller when its first sizes are not on both sides."""
    classifier = wheel_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    recipe = ROOT / "recipes" / "rapidocr_cls.yaml"
    wrong = apply(mutated(recipe, tmp_path, "input", "resize", fit="letterbox"), classifier,
                  tmp_path / "wrong.onnx").output
    assert not verify(recipe, classifier, patched=wrong, random=random, backends=("onnxruntime",))
    right = apply(recipe, classifier, tmp_path / "right.onnx").output
    report = verify(recipe, classifier, patched=right, random=random)
    assert report, report.failures()
