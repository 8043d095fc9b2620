"""Round 28 of issue 17 (hostile, second pass): a regression run of rounds 22 and 24's harnesses on 38d1469, and new
cases around its changes (scratch folders held by a descriptor, the supervisor's exits while loading, made_here).

What it found: a model that loads and converts but fails at run time (a Reshape's shape damaged after apply, or any
node whose shapes conflict only at run time) was "a graphsurgery bug" (exit 3) under `convert --int8`: NNCF's
statistics collection ran it outside the runners, which judge such failures (`runners.failed_run`). A regression
of 38d1469: the supervisor's per-step time limit also bounded the import of the libraries (published as an activity
to say an exit from C there), and a slow import (a cold disk, a busy machine, a small GRAPHSURGERY_TIME_LIMIT) was
stopped as "the model is too slow for this step".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clikit import invoke

from modelkit import damaged_patched

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


def test_int8_calibration_of_a_model_that_fails_at_run_time_is_the_files_fault(tmp_path):
    _, damaged = damaged_patched(tmp_path)
    before = damaged.read_bytes()
    out = tmp_path / "out.xml"
    result = invoke("convert", damaged, "--int8", "--calibration-random", "2", "-o", out)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert "damaged.onnx" in lines[-1] and "OpenVINO cannot run the model" in lines[-1], lines[-1]
    assert "apply the recipe to the plain model again" in lines[-1]
    assert damaged.read_bytes() == before and not out.exists() and not out.with_suffix(".bin").exists()


# --- loading the libraries is not a step the time limit bounds --------------------------------------------------

SLOW_IMPORT = '''
import os, sys, time


class Slow:  # the CLI's import made slow, as on a cold disk or a busy machine
    def find_spec(self, name, path=None, target=None):
        if name == "graphsurgery.cli":
            time.sleep(3.5)
        return None


sys.meta_path.insert(0, Slow())
'''


def test_a_slow_import_of_the_libraries_is_not_stopped_by_the_time_limit(tmp_path):
    """38d1469 published "loading its libraries" as an activity (to say an exit from C there), and the per-step time
    limit then stopped an import slower than the limit, saying "the model is too slow for this step"."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_IMPORT)
    env = dict(os.environ, GRAPHSURGERY_TIME_LIMIT="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "--version"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "version" in done.stdout, done.stderr
    assert "too slow" not in done.stderr


# --- SIGTERM twice (`kill -TERM -PGID`, GNU timeout): the second must not break into the unwinding ----------------

TWICE = '''
import os, signal, time
from graphsurgery import launch

launch._command_line = True  # as `launch.main` sets it
signal.signal(signal.SIGTERM, launch.terminate)  # the CLI group's handler while a command runs
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except launch.Terminated:
    try:  # unwinding (the finally that removes a scratch folder): the copy the supervisor forwarded arrives
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("removed")
    except launch.Terminated:
        print("broken into")
'''


def test_a_second_sigterm_does_not_break_into_the_cleanup(tmp_path):
    """The CLI group set SIGTERM to the plain `terminate`, over launch's `_once`: `run` killed by its process group's
    SIGTERM left its scratch folder (`.graphsurgery-run-*`) in 2 of 30 runs. The signals go to a subprocess."""
    done = subprocess.run([sys.executable, "-c", TWICE], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "removed", (done.stdout, done.stderr)


def test_chain_check_with_a_damaged_pose_model_names_that_file(tmp_path):
    """A top-down pose model whose crop Gather reads index 99 (of 4) after apply wrote it: `chain --check` ran the
    chained model first, which this process wrote, and the failing node was "a graphsurgery bug" (exit 3). The two
    models now run first, and the pose model is named."""
    import onnx
    from onnx import numpy_helper

    from graphsurgery.api import apply

    from modelkit import pose_model, zoo_model

    detector = apply(RECIPES / "yolov8_detector.yaml", zoo_model(tmp_path / "d.onnx", "yolov8-tiny", opset=17),
                     tmp_path / "d.patched.onnx").output
    pose = apply(RECIPES / "hrnet_coco_topdown.yaml", pose_model(tmp_path / "p.onnx", opset=17),
                 tmp_path / "p.patched.onnx").output
    model = onnx.load(str(pose))
    index = next(t for t in model.graph.initializer if t.name == "graphsurgery/pre/crop_boxes/box_1")
    index.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(index) * 0 + 99, index.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    result = invoke("chain", detector, damaged, "-o", tmp_path / "c.onnx", "--check", ROOT / "examples" / "images")
    assert result.exit_code == 2, result.output
    assert f"{damaged}: onnxruntime cannot run the model" in result.output
    assert "internal error" not in result.output
