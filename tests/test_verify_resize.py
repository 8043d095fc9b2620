"""`verify` and `bench` on a recipe that resizes (the ImageNet classifier on a zoo ResNet, tiny widths).

The caller's H × W is free there, so verify must feed images of several sizes (random ones, or each photo whole at
its own size), report how far the graph's resize is from `cv2.resize` (informational), and still fail on a wrong
patch, naming the outputs.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from graphsurgery import verify
from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.images import read_image
from graphsurgery.steps.base import TensorSpec
from graphsurgery.steps.resize import Resize

from conftest import ROOT

CLASSIFIER = ROOT / "recipes" / "imagenet_classifier.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"  # 512 × 512
BOTH = ("onnxruntime", "openvino")
MISTAKES = {  # what people get wrong re-implementing the preprocessing: the filter, the /255
    "nearest": ("interpolation: linear", "interpolation: nearest"),
    "no_scale": ("    - scale: {divide: 255}\n", ""),
}


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """The zoo ResNet at tiny widths: input float32 [1,3,224,224] → logits [1,1000]."""
    from modelkit import zoo_model

    return zoo_model(tmp_path_factory.mktemp("zoo") / "resnet.onnx", "resnet-tiny", opset=11)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two photos of different sizes: the astronaut (512 × 512) and the cameraman shrunk to 301 × 187 (W × H)."""
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(PHOTO, folder / "a_astronaut.jpg")
    small = cv2.resize(read_image(ROOT / "examples" / "images" / "cameraman.jpg"), (301, 187))
    cv2.imwrite(str(folder / "b_cameraman.png"), small)
    return folder


def expected_vs_opencv(image_rgb: np.ndarray) -> tuple[float, float]:
    """The recipe's resize on a 224 model (short side to 256, centre 224), numpy twin against cv2.resize by hand."""
    step = Resize(size=(224, 224), fit="crop", crop_fraction=0.875)
    h, w = image_rgb.shape[:2]
    rh, rw = (256, w * 256 // h) if h <= w else (h * 256 // w, 256)
    top, left = round((rh - 224) / 2), round((rw - 224) / 2)
    theirs = cv2.resize(image_rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)[top:top + 224, left:left + 224]
    ours = step.reference(image_rgb[None].astype(np.float32), TensorSpec("float32", "NHWC", "RGB", (1, h, w, 3)))[0]
    difference = np.abs(ours.astype(np.float64) - theirs)
    return float(difference.max()), float(difference.mean())


def test_random_images_come_in_several_sizes(resnet):
    report = verify(CLASSIFIER, resnet, random=4, backends=BOTH)
    assert report, report.failures()
    # led by the two that tell the side's roundings apart (round 41; round 58: again ahead of the offset sizes), then
    # two whose centre cuts start at a half and at an odd offset (round 52, `Resize.offset_sizes`)
    assert report.samples == 4 and report.unit == "images" and report.sizes == [(400, 300), (353, 481),
                                                                                 (226, 224), (227, 224)]
    assert "4 random images of 4 sizes" in report.inputs
    indices = next(r for r in report.pairs[0].results if r.output == "indices")
    assert indices.positions == 4 * 5 and indices.mismatches == 0
    [entry] = report.vs_library
    width, height = report.sizes[0]
    assert entry["step"] == "input.steps[2].resize" and entry["image"] == {"width": width, "height": height}
    assert entry["equivalent"] == "INTER_LINEAR" and entry["image_dtype"] == "uint8"
    assert 0 < entry["mean_abs_diff"] < entry["max_abs_diff"] < 2  # OpenCV's uint8 rounding and fixed point


def test_photos_are_fed_whole_at_their_own_sizes(resnet, photos):
    report = verify(CLASSIFIER, resnet, images=photos, backends=BOTH)
    assert report, report.failures()
    assert report.samples == 2 and report.sizes == [(512, 512), (301, 187)] and "whole images" in report.inputs
    [entry] = report.vs_library
    assert entry["image"] == {"width": 512, "height": 512}
    assert entry["library_call"] == "cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR)"
    astronaut_rgb = np.ascontiguousarray(read_image(PHOTO)[..., ::-1])
    assert (entry["max_abs_diff"], entry["mean_abs_diff"]) == pytest.approx(expected_vs_opencv(astronaut_rgb))


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_wrong_classifier_patch_fails_naming_the_outputs(resnet, tmp_path, mistake):
    old, new = MISTAKES[mistake]
    text = CLASSIFIER.read_text()
    assert old in text
    wrong = tmp_path / f"classifier.{mistake}.yaml"
    wrong.write_text(text.replace(old, new))
    patched = apply(wrong, resnet, tmp_path / "wrong.onnx").output
    report = verify(CLASSIFIER, resnet, patched=patched, random=4, backends=BOTH)
    assert not report
    for pair in report.pairs[:2]:  # unpatched → patched, on each backend
        assert {"scores", "logits"} <= {r.output for r in pair.results if not r}
    assert report.pairs[2] or mistake == "no_scale"  # the wrong patch is the same wrong on both backends (round 52:
    # without /255 on the upscaled 226 × 224 image, logits 255 times larger differed by rounding in 1 of 4000)
    assert any(line.startswith("onnxruntime: unpatched → patched: logits: ") for line in report.failures())
    result = CliRunner().invoke(cli, ["verify", str(CLASSIFIER), str(resnet), "--patched", str(patched),
                                      "--random", "2", "--backends", "onnxruntime"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "logits" in result.output.splitlines()[-1]


def test_cli_reports_the_resize_against_opencv_as_informational(resnet, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["verify", str(CLASSIFIER), str(resnet), "--random", "4", "--backends",
                                      "onnxruntime", "--json", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert "input steps vs the library they imitate (informational, not part of the verdict" in text
    assert "INTER_LINEAR" in text and "(4 images)" in text
    data = json.loads(out.read_text())
    assert data["sizes"] == [{"width": w, "height": h} for w, h in ((400, 300), (353, 481), (226, 224), (227, 224))]
    [entry] = data["informational"]["vs_library"]
    assert entry["equivalent"] == "INTER_LINEAR" and entry["max_abs_diff"] >= entry["mean_abs_diff"] > 0


def test_boxes_are_refused_when_the_recipe_resizes(resnet, photos, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text("{}")
    result = CliRunner().invoke(cli, ["verify", str(CLASSIFIER), str(resnet), "--images", str(photos), "--boxes",
                                      str(boxes)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "give no boxes (--boxes)" in result.output


def test_bench_feeds_one_image_of_a_camera_size(resnet, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", str(CLASSIFIER), str(resnet), "--iterations", "2", "--warmup", "0",
                                      "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["settings"]["input"] == {"name": "input", "dtype": "uint8", "shape": [1, 480, 640, 3]}
    assert {row["key"] for row in data["pipelines"]} >= {"onnxruntime-plain", "openvino-plain",
                                                         "onnxruntime-patched", "openvino-patched-f32"}
    assert all(row["end_to_end_ms"]["median"] > 0 for row in data["pipelines"])


def test_eval_coco_runs_a_pose_recipe_that_resizes(tmp_path):
    """The twins get the plain model's facts there too (resize learns its size from them)."""
    from graphsurgery.coco import evaluate_coco

    from examples.synthetic_coco import joint_detector, write_coco_set

    recipe = tmp_path / "pose_resize.yaml"
    text = (ROOT / "recipes" / "hrnet_coco_pose.yaml").read_text()
    recipe.write_text(text.replace("    - cast: {}\n", "    - cast: {}\n    - resize: {}\n"))
    annotations = write_coco_set(tmp_path / "images", images=2)
    report = evaluate_coco(recipe, joint_detector(tmp_path / "detector.onnx"), annotations, annotations.parent,
                           backends=("onnxruntime",))
    assert report and len(report.pipelines) == 2
