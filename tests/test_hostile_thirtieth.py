"""Round 30 of issue 17 (hostile, second pass): a short blind round.

What it found: `verify RECIPE PLAIN --patched P` (and `eval-coco` the same) where PLAIN is itself a patched model
(the patched model given twice, or one patched by another version of the recipe) was "a graphsurgery bug" (exit 3):
with --patched the recipe is not applied, so apply's refusals of such a PLAIN never ran, and the twins' float crops
reached its uint8 input.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("round30")
    plain = pose_model(folder / "plain.onnx")
    patched = apply(RECIPE, plain, folder / "patched.onnx").output
    other = folder / "other.yaml"  # another version of the recipe (std 0.3): same name, another identity
    other.write_text(RECIPE.read_text().replace("std: [0.229, 0.224, 0.225]", "std: [0.3, 0.3, 0.3]"))
    wrong = apply(other, plain, folder / "wrong.onnx").output
    return plain, patched, wrong


def test_verify_refuses_the_patched_model_as_plain(models):
    _, patched, _ = models
    before = patched.read_bytes()
    result = invoke("verify", RECIPE, patched, "--patched", patched, "--backends", "onnxruntime", "--random", "1")
    one_line_exit_2(result, "patched.onnx", "already applied", "--patched")
    assert patched.read_bytes() == before


def test_verify_refuses_a_plain_patched_by_another_recipe_version(models):
    _, _, wrong = models
    result = invoke("verify", RECIPE, wrong, "--patched", wrong, "--backends", "onnxruntime", "--random", "1")
    one_line_exit_2(result, "wrong.onnx", "uint8", "--patched")


def test_eval_coco_refuses_the_patched_model_as_plain(models, tmp_path):
    _, patched, wrong = models
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes((ROOT / "examples" / "images" / "astronaut.jpg").read_bytes())
    keypoints = [100, 100, 2] + [0] * 48
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 512, "height": 512}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 50, 200, 300], "area": 60000,
                         "iscrowd": 0, "keypoints": keypoints, "num_keypoints": 1}],
        "categories": [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)], "skeleton": []}]}))
    for model, needle in ((patched, "already applied"), (wrong, "uint8")):
        result = invoke("eval-coco", RECIPE, model, "--patched", model, "--ann", ann, "--images", images,
                        "--backends", "onnxruntime")
        one_line_exit_2(result, model.name, needle, "--patched")


def test_verify_with_patched_still_passes_the_right_pair(models):
    plain, patched, _ = models
    result = invoke("verify", RECIPE, plain, "--patched", patched, "--backends", "onnxruntime", "--random", "1")
    assert result.exit_code == 0, result.output
