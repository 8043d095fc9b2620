"""Round 44: a fresh hostile set in the spirit of issue 17's held-back one (~530 cases: paths spelled oddly, images of
every mode and size, recipes of odd but legal YAML, models of odd but valid features, options, environment, signals,
files changing while a command runs, detectors). What broke: a model file replaced between the check and the
runtime's own read of it (an internal error in verify; convert converted a file no check saw); `run` of a model that
crops in the graph with more than 200 boxes (a 0 × 0 blank image timed the run: graphsurgery's own Gather failed on
ONNX Runtime, OpenCV drew on it under OpenVINO, an internal error) and with a `--batch` of thousands (every box of a
call cropped at once, unbounded); a signal after a command's last line when its exit was slow (the exit code became
143 or 130, and a SIGHUP added a second line); a `--reference` recording only some outputs (PASS, the others never
compared and not said); an external data file with a second hard link ("re-export" a sound model); eval-coco of a
detector recipe ("pass caller_shape", an API argument)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from clikit import invoke, one_line_exit_2

from conftest import ROOT
from modelkit import pose_model

CROP = ROOT / "recipes" / "hrnet_coco_pose.yaml"
TOPDOWN = ROOT / "recipes" / "hrnet_coco_topdown.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
HW = (64, 48)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny pose model, another model of other inputs (swapped in for it), and the top-down patched model."""
    from graphsurgery.api import apply

    folder = tmp_path_factory.mktemp("models")
    plain = pose_model(folder / "plain.onnx", input_hw=HW, dynamic_batch=True)
    other = pose_model(folder / "other.onnx", input_hw=HW, dynamic_batch=True, input_name="image")
    topdown = apply(TOPDOWN, plain, folder / "topdown.onnx").output
    return {"plain": plain, "other": other, "topdown": topdown}


# --- a model replaced after it was read: the runtimes read the file by its path ------------------------------------

def _swapped_on_first_read(monkeypatch, module, name: str, target, replacement) -> list:
    """`module.name` (a runtime's entry point that reads a model by path), replacing `target` with `replacement`
    just before it reads `target` the first time: a file rewritten while the command runs."""
    real, swapped = getattr(module, name), []

    def reading(model, *args, **kwargs):
        if not swapped and str(model) == str(target):
            os.replace(replacement, target)
            swapped.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(module, name, reading)
    return swapped


def test_verify_refuses_a_plain_model_replaced_before_onnxruntime_reads_it(models, tmp_path, monkeypatch):
    """verify ran its twins on the plain model as read, and ONNX Runtime read the file moved over it a moment later
    (inputs image, boxes): "internal error (ValueError: Required inputs (['image', 'boxes']) are missing)"."""
    import onnxruntime

    plain, other = tmp_path / "plain.onnx", tmp_path / "other.onnx"
    plain.write_bytes(models["plain"].read_bytes())
    other.write_bytes(models["other"].read_bytes())
    swapped = _swapped_on_first_read(monkeypatch, onnxruntime, "InferenceSession", plain, other)
    result = invoke("verify", CROP, plain, "--random", 1, "--backends", "onnxruntime")
    assert swapped
    one_line_exit_2(result, "plain.onnx", "changed while the command ran", "fix: run the command again")


def test_convert_does_not_convert_a_file_no_check_saw(models, tmp_path, monkeypatch):
    """convert checked the model, then OpenVINO converted whatever the path held by then, and wrote its IR."""
    import openvino

    model, other = tmp_path / "model.onnx", tmp_path / "other.onnx"
    model.write_bytes(models["plain"].read_bytes())
    other.write_bytes(models["other"].read_bytes())
    swapped = _swapped_on_first_read(monkeypatch, openvino, "convert_model", model, other)
    result = invoke("convert", model, "-o", tmp_path / "model.xml")
    assert swapped
    one_line_exit_2(result, "model.onnx", "changed while the command ran")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_runner_refuses_a_model_replaced_since_the_command_read_it(models, tmp_path, backend):
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.modelio import load_model, one_command
    from graphsurgery.runners import open_runner

    model, other = tmp_path / "model.onnx", tmp_path / "other.onnx"
    model.write_bytes(models["plain"].read_bytes())
    other.write_bytes(models["other"].read_bytes())
    with one_command():
        load_model(model)
        os.replace(other, model)
        with pytest.raises(GraphsurgeryError, match="changed while the command ran"), open_runner(backend, model):
            pass


def test_outside_a_command_a_rewritten_model_is_taken_as_it_is(models, tmp_path):
    """An application may rewrite a model between two calls: the runners take the file as it is then (guard)."""
    from graphsurgery.modelio import load_model
    from graphsurgery.runners import open_runner

    model = tmp_path / "model.onnx"
    model.write_bytes(models["plain"].read_bytes())
    load_model(model)
    model.unlink()
    model.write_bytes(models["other"].read_bytes())
    with open_runner("onnxruntime", model) as run:
        outputs = run({"image": np.zeros((1, 3, *HW), np.float32)})
    assert outputs["heatmaps"].shape == (1, 17, HW[0] // 4, HW[1] // 4)


# --- run of a model that crops in the graph, with many boxes --------------------------------------------------------

@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_run_of_the_top_down_model_with_many_boxes_runs(models, tmp_path, backend):
    """Past 200 boxes, run times one batch first (to say how long it takes) on a blank crop of the model's crop
    size, which the top-down model's signature does not give: (0, 0). ONNX Runtime failed graphsurgery's own crop
    Gather on the 0 × 0 image ("a node graphsurgery added fails"), and under OpenVINO OpenCV drew the skeleton on
    it: an internal error."""
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({PHOTO.name: [[100, 50, 80, 160]] * 201}))
    result = invoke("run", models["topdown"], PHOTO, "-o", tmp_path / "out", "--boxes", boxes, "--backend", backend)
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "out" / "keypoints.json").read_text())) == 201


def test_run_of_the_top_down_model_gives_it_a_bounded_number_of_boxes_a_call(models, tmp_path, monkeypatch):
    """`--batch 20000` gave the graph 20,000 boxes in one call, each cropped at once at a size nothing bounded
    (the crop-size bound of run is 0 for this model): out of memory. It gets crops.BOXES_PER_CALL, as eval-coco and
    verify give it, and run.json says so."""
    from graphsurgery import crops, pose

    calls = []
    estimate = pose._estimate_in_graph

    def counting(run, model, image, boxes, batch):
        calls.append(batch)
        return estimate(run, model, image, boxes, batch)

    monkeypatch.setattr(pose, "_estimate_in_graph", counting)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({PHOTO.name: [[100, 50, 80, 160]] * 100}))
    result = invoke("run", models["topdown"], PHOTO, "-o", tmp_path / "out", "--boxes", boxes, "--backend",
                    "onnxruntime", "--batch", 20000)
    assert result.exit_code == 0, result.output
    assert calls and set(calls) == {crops.BOXES_PER_CALL}
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["batch"] == crops.BOXES_PER_CALL
    assert any(f"at most {crops.BOXES_PER_CALL} boxes a call" in note for note in record["notes"])


# --- a signal after the last line, on a busy machine ----------------------------------------------------------------

#: `graphsurgery inspect MISSING` under the real launch and supervisor, whose Python shutdown takes 5 s (an atexit
#: hook: a machine so busy that the exit outlasts the parent's grace, here 0.3 s)
SLOW_EXIT = '''
import atexit, sys, time
from graphsurgery import supervisor
supervisor._GRACE = 0.3
atexit.register(time.sleep, 5)
sys.argv = ["graphsurgery", "inspect", sys.argv[1]]
from graphsurgery.launch import main
main()
'''


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_after_the_last_line_keeps_the_exit_code_however_slow_the_exit(tmp_path, signal_name):
    """tests/test_hostile_eighth.py's flake made deterministic: the refusal was said (exit 2 to come), SIGTERM came,
    the child ignored it but took longer than the parent's grace to exit, and the parent ended it with 143."""
    started = subprocess.Popen([sys.executable, "-c", SLOW_EXIT, str(tmp_path / "none.onnx")], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = started.stderr.readline()
        started.send_signal(getattr(signal, signal_name))
        started.wait(timeout=60)
        rest = started.stderr.read()
    finally:
        if started.poll() is None:
            started.kill()
            started.wait()
    assert "no such model file" in line and rest == "", (line, rest)
    assert started.returncode == 2, started.returncode


# --- a reference that records some outputs --------------------------------------------------------------------------

def test_a_reference_without_some_outputs_says_they_were_not_compared(models, tmp_path):
    """A reference holding keypoints alone PASSed "the patched model agrees" with scores and heatmaps never
    compared, and the report did not say so."""
    from graphsurgery import verify
    from graphsurgery.api import apply
    from graphsurgery.runners import open_runner

    crops = np.random.default_rng(0).integers(0, 256, (2, *HW, 3), dtype=np.uint8)
    patched = apply(CROP, models["plain"], tmp_path / "patched.onnx").output
    with open_runner("onnxruntime", patched) as run:
        keypoints = run({"input": crops})["keypoints"]
    reference = tmp_path / "reference.npz"
    np.savez(reference, input=crops, keypoints=keypoints)
    report = verify(CROP, models["plain"], reference=reference, backends=("onnxruntime",))
    assert report
    assert any("'scores', 'heatmaps' are not in the reference: not compared" in note for note in report.notes), \
        report.notes


# --- an external data file with a second name ----------------------------------------------------------------------

def test_a_data_file_with_another_hard_link_is_named_with_the_fix(models, tmp_path):
    """onnx's checker refuses a data file of more than one hard link ("a potential hardlink attack"), and the line
    said the model "is invalid; re-export it": a sound model whose data file has a second name (a `cp -al` backup)."""
    import onnx

    model = tmp_path / "model.onnx"
    onnx.save(onnx.load(str(models["plain"])), str(model), save_as_external_data=True, location="model.data",
              size_threshold=0)
    os.link(tmp_path / "model.data", tmp_path / "backup.data")
    result = invoke("inspect", model)
    one_line_exit_2(result, "model.onnx: model.data has more than one hard link",
                    "fix: give it a file of its own: copy it and move the copy over it (cp model.data x.tmp")


# --- eval-coco of a recipe that makes no keypoints -----------------------------------------------------------------

def test_eval_coco_refuses_a_recipe_that_makes_no_keypoints(tmp_path):
    """The YOLOv8 recipe reached the twins, which asked to "pass caller_shape (the shape of the tensor the caller
    feeds)", an API argument no eval-coco option gives, after the annotations were read."""
    from examples.synthetic_coco import write_coco_set
    from modelkit import zoo_model

    annotations = write_coco_set(tmp_path / "coco", images=1, size=(320, 240))
    model = zoo_model(tmp_path / "yolov8.onnx", "yolov8-tiny", opset=17)
    result = invoke("eval-coco", ROOT / "recipes" / "yolov8_detector.yaml", model, "--ann", annotations, "--images",
                    tmp_path / "coco", "--backends", "onnxruntime")
    one_line_exit_2(result, "yolov8_detector.yaml: the recipe's output steps make boxes, scores, classes, count",
                    "fix: eval-coco needs a pose recipe")
