"""A command replaces only its own earlier outputs (issue 17): `run -o` by its run.json, `eval-coco --results` by
its eval-coco.json. Another tool's file of a result's name is refused; an earlier run's file is replaced, even
one written two runs ago."""

from __future__ import annotations

import json

import cv2
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply

from conftest import RECIPES
from examples.synthetic_coco import joint_detector, write_coco_set
from modelkit import bgr_crops, pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own_coco")
    annotations = write_coco_set(folder / "images", images=2, seed=0)
    return annotations, folder / "images", joint_detector(folder / "detector.onnx", opset=17)


def eval_coco(coco, results, *backends):
    annotations, images, detector = coco
    return invoke("eval-coco", CROP, detector, "--ann", annotations, "--images", images,
                  "--backends", ",".join(backends), "--results", results)


def contents(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.parametrize("name", ["patched-onnxruntime.json", "eval-coco.json"])
def test_eval_coco_refuses_to_replace_a_file_no_run_of_it_wrote(coco, tmp_path, name):
    """Another tool's results kept under a results file's name (or a file named like the record) were replaced."""
    results = tmp_path / "results"
    results.mkdir()
    (results / name).write_text('["another tool\'s results"]')
    one_line_exit_2(eval_coco(coco, results, "onnxruntime"), f"{results / name}: a file of that name is already "
                                                             "there and is not the output of an earlier run")
    assert contents(results) == {name: b'["another tool\'s results"]'}


def test_eval_coco_replaces_its_earlier_results_even_from_two_runs_ago(coco, tmp_path):
    """Both backends, then one, then both again: the second run's record still lists the first run's OpenVINO
    results, which the third run replaces."""
    results = tmp_path / "results"
    assert eval_coco(coco, results, "onnxruntime", "openvino").exit_code == 0
    (results / "patched-openvino.json").write_text("[]")  # the first run's, as it left them (marked here)
    assert eval_coco(coco, results, "onnxruntime").exit_code == 0
    assert (results / "patched-openvino.json").read_text() == "[]"  # a backend not run: left as it was
    result = eval_coco(coco, results, "onnxruntime", "openvino")
    assert result.exit_code == 0, result.output
    assert json.loads((results / "patched-openvino.json").read_text())  # replaced by this run's results
    assert sorted(contents(results)) == ["eval-coco.json", *(f"{kind}-{backend}.json" for kind in ("patched",
                                         "unpatched") for backend in ("onnxruntime", "openvino"))]


@pytest.fixture(scope="module")
def patched_and_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own_run")
    patched = apply(CROP, pose_model(folder / "plain.onnx"), folder / "patched.onnx").output
    for name, crop in zip(("a.jpg", "b.jpg"), bgr_crops(2)):
        cv2.imwrite(str(folder / name), crop)
    return patched, folder / "a.jpg", folder / "b.jpg"


def test_run_replaces_its_debug_images_from_two_runs_ago(patched_and_images, tmp_path):
    """`run a b`, `run a`, `run b` into one folder: the third was refused, b's debug images called nobody's."""
    patched, a, b = patched_and_images
    out = tmp_path / "out"
    for images in ((a, b), (a,), (b,)):
        result = invoke("run", patched, *images, "-o", out, "--backend", "onnxruntime")
        assert result.exit_code == 0, result.output
    assert sorted(json.loads((out / "run.json").read_text())["earlier_outputs"]) == ["a_heatmaps.jpg", "a_pose.jpg"]


def test_run_still_refuses_a_file_no_run_wrote(patched_and_images, tmp_path):
    """The earlier runs' list does not open the folder to others: a photo named like b's debug image is kept."""
    patched, a, b = patched_and_images
    out = tmp_path / "out"
    assert invoke("run", patched, a, "-o", out, "--backend", "onnxruntime").exit_code == 0
    (out / "b_pose.jpg").write_bytes(b"the user's photo")
    one_line_exit_2(invoke("run", patched, b, "-o", out, "--backend", "onnxruntime"),
                    f"{out / 'b_pose.jpg'}: a file of that name is already there")
    assert (out / "b_pose.jpg").read_bytes() == b"the user's photo"
