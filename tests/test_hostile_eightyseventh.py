"""Round 87: the Python API embedded in an application, and recipe values at their edges.

A callback of the API (run's `on_image`, eval-coco's `progress`) that changed the current folder moved every
relative path the command held: `run(…, "out", on_image=…)` ran every image, then looked for its scratch folder in
the callback's folder and said the output folder had been deleted; eval-coco read the next image from there.
A recipe resizing to 40000 × 40000 was an internal error "out of memory" in verify's and bench's random images,
where a folder's images of that size were refused in one line (round 44). A note on standard error (a damaged
JPEG decoded) was an AttributeError out of the API in an application without one (`sys.stderr` None), and with
standard error full (`2>/dev/full`) `run` lost every result, exit 2 without a word. In a current folder deleted
under the application, the API's commands were FileNotFoundError (`import openvino` looks in it) or, for a torch
network, oneMKL's FATAL ERROR ending the process: they are refused up front, as the CLI refuses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import graphsurgery
from graphsurgery.benchmark import Settings
from graphsurgery.errors import GraphsurgeryError

from conftest import RECIPES, ROOT
from quirkykit import classifier

PHOTOS = sorted((ROOT / "examples" / "images").glob("*.jpg"))


def _wandering(tmp_path):
    """A callback that moves the process into another folder each time it is called."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    calls = []

    def callback(*args):
        calls.append(args)
        os.chdir(elsewhere)

    return callback, calls, elsewhere


def test_run_keeps_its_folder_across_on_image(patched, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callback, calls, elsewhere = _wandering(tmp_path)
    summary = graphsurgery.run(patched, PHOTOS, "out", backend="onnxruntime", on_image=callback)
    assert len(calls) == len(PHOTOS) and os.getcwd() == str(tmp_path)
    assert [image.file_name for image in summary.images] == [photo.name for photo in PHOTOS]
    results = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert {entry["image_id"] for entry in results} == {1, 2}
    assert not list(elsewhere.iterdir())


def test_eval_coco_keeps_its_folder_across_progress(tmp_path, monkeypatch):
    from examples.synthetic_coco import joint_detector, write_coco_set

    monkeypatch.chdir(tmp_path)
    annotations = write_coco_set(tmp_path / "coco", images=2, seed=0)
    joint_detector(tmp_path / "detector.onnx", opset=17)
    callback, calls, elsewhere = _wandering(tmp_path)
    report = graphsurgery.eval_coco(RECIPES / "hrnet_coco_pose.yaml", "detector.onnx",
                                    os.path.relpath(annotations), "coco", backends=["onnxruntime"],
                                    results_dir="results", progress=callback)
    assert calls and os.getcwd() == str(tmp_path)
    assert report.proven and (tmp_path / "results" / "eval-coco.json").is_file()
    assert not list(elsewhere.iterdir())


HUGE_RESIZE = """version: 1
name: huge-resize
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - resize: {size: [40000, 40000]}
    - scale: {divide: 255}
output:
  steps:
    - softmax: {}
    - topk: {k: 3}
"""


@pytest.fixture
def huge_resize(tmp_path):
    """A classifier of any input size (`quirkykit.classifier`) and a recipe resizing to 40000 × 40000: 17.9 GiB
    as float32 per image."""
    (tmp_path / "huge.yaml").write_text(HUGE_RESIZE)
    return tmp_path / "huge.yaml", classifier(tmp_path / "classifier.onnx", opset=17, ir_version=8, hw=None)


def test_verify_refuses_random_images_resized_past_the_memory_bound(huge_resize):
    recipe, model = huge_resize
    with pytest.raises(GraphsurgeryError) as refused:
        graphsurgery.verify(recipe, model, random=2, backends=["onnxruntime"])
    assert "40,000 × 40,000 pixels" in str(refused.value) and str(model) in str(refused.value)


def test_bench_refuses_its_frame_resized_past_the_memory_bound(huge_resize):
    recipe, model = huge_resize
    with pytest.raises(GraphsurgeryError) as refused:
        graphsurgery.bench(recipe, model, Settings(iterations=1, warmup=0))
    assert "40,000 × 40,000 pixels" in str(refused.value) and str(model) in str(refused.value)


@pytest.fixture
def cut_jpeg(tmp_path):
    """The first half of a photo's JPEG: OpenCV decodes it with the rest grey, and graphsurgery notes it."""
    data = PHOTOS[0].read_bytes()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cut.jpg").write_bytes(data[:len(data) // 2])
    return tmp_path / "images" / "cut.jpg"


@pytest.mark.parametrize("stream", ["none", "closed"])
def test_run_notes_into_no_standard_error(patched, cut_jpeg, tmp_path, monkeypatch, stream):
    import io

    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", None if stream == "none" else closed)
    summary = graphsurgery.run(patched, [cut_jpeg], tmp_path / "out", backend="onnxruntime")
    assert [image.persons for image in summary.images] == [1]
    assert (tmp_path / "out" / "keypoints.json").is_file()


def test_run_keeps_its_results_when_standard_error_is_full(patched, cut_jpeg, tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "graphsurgery", "run", str(patched), str(cut_jpeg), "-o",
                               str(tmp_path / "out"), "--backend", "onnxruntime"], stdout=subprocess.DEVNULL,
                              stderr=full, cwd=ROOT, timeout=120)
    assert done.returncode == 0
    assert len(json.loads((tmp_path / "out" / "keypoints.json").read_text())) == 1


@pytest.fixture
def deleted_folder(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()


def test_a_deleted_current_folder_is_refused_before_a_named_pipeline_is_looked_for(plain, deleted_folder):
    with pytest.raises(GraphsurgeryError, match="the current folder no longer exists"):
        graphsurgery.verify(RECIPES / "hrnet_coco_pose.yaml", plain, random=2, backends=["onnxruntime"],
                            reference_pipeline="pipeline:reference")


def test_convert_in_a_deleted_current_folder_is_one_refusal(patched, tmp_path):
    gone = tmp_path / "gone"
    call = (f"import graphsurgery\ntry:\n    graphsurgery.convert({str(patched)!r}, {str(tmp_path / 'm.xml')!r})\n"
            "except graphsurgery.errors.GraphsurgeryError as exc:\n    print('refused:', exc)")
    done = subprocess.run(["sh", "-c", f'mkdir "{gone}" && cd "{gone}" && rmdir "{gone}" && exec "$0" -c "$1"',
                           sys.executable, call], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.startswith("refused: the current folder no longer exists"), done.stdout + done.stderr
    assert not (tmp_path / "m.xml").exists()


@pytest.mark.parametrize("precision", ["F32", "fp32", "int4"])
def test_an_unknown_precision_is_named_as_such_on_onnxruntime_alone(plain, precision):
    """Round 87's leftover: "precision F32 applies to OpenVINO only — add openvino to the backends", and with
    openvino added, "unknown precision": the first fix led to a second refusal."""
    with pytest.raises(GraphsurgeryError, match=f"unknown precision '{precision}'.*f32, bf16, f16"):
        graphsurgery.verify(RECIPES / "hrnet_coco_pose.yaml", plain, precision=precision, backends=["onnxruntime"])
