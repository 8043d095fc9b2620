"""Hostile round 22: a new held-back-style set (~560 cases over recipes, models, paths, images, boxes, options,
environment, signals and wrong patches; harness in /tmp/r22a). What broke:

- an external tensor without a `length` whose file is larger than the tensor (the model file itself, one file for
  every tensor) passed the load checks (a missing length was never compared) and `apply` wrote a broken model;
- after a kill, the next command into that folder removed only the same output's scratch folders (`apply -o b.onnx`
  left a killed `-o a.onnx`'s copy of the model behind for ever);
- an owner marker that is a FIFO blocked every command for ever, and one holding a number past any process ID was
  an internal error (OverflowError), also in a shared $TMPDIR where anyone can put them;
- `inspect --json` printed NaN (not JSON) from a model's provenance metadata;
- `run` on one photo with 50,000 boxes worked for minutes with nothing on the screen: it now says how long.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery import longrun, safeio
from graphsurgery.safeio import OWNER

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
POSE = RECIPES / "hrnet_coco_pose.yaml"
IMAGES = Path(__file__).resolve().parent.parent / "examples" / "images"


def _pose(path: Path, batch: int | str = 1) -> Path:
    """A 64×48 heatmap model: input float32 [batch, 3, 64, 48] → heatmaps [batch, 17, 16, 12]."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.05, (17, 3, 4, 4)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(0, 0.1, (17,)).astype(np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["heatmaps"], kernel_shape=[4, 4], strides=[4, 4])], "pose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 64, 48])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, 17, 16, 12])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)  # that process has exited: its pid names no live process (reuse aside)


def test_external_data_without_a_length_must_fill_the_rest_of_its_file(tmp_path):
    """No `length`: onnx reads the tensor to the end of the file. Pointed at a larger file (here the model file
    itself), the check compared nothing and `apply` wrote a model whose tensor holds the wrong number of bytes."""
    model = onnx.load(str(_pose(tmp_path / "plain.onnx")))
    weight = next(t for t in model.graph.initializer if t.name == "w")
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="m.onnx")
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    out = tmp_path / "out.onnx"
    result = invoke("apply", POSE, tmp_path / "m.onnx", "-o", out)
    one_line_exit_2(result, "m.onnx", "tensor 'w' holds", "needs 3,264")
    assert not out.exists()


def test_inspect_json_is_strict_json_whatever_the_provenance_holds(tmp_path):
    """Python's json module reads NaN and Infinity; a model's provenance holding them came out of `inspect --json`
    as NaN, which JSON readers (jq, JavaScript) refuse. Such metadata is no provenance of ours."""
    model = onnx.load(str(_pose(tmp_path / "plain.onnx")))
    model.metadata_props.add(key="graphsurgery.provenance",
                             value='[{"recipe": "x", "sha256": NaN, "identity": Infinity}]')
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = invoke("inspect", "--json", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise ValueError(constant)

    assert json.loads(result.output, parse_constant=refuse)["provenance"] == []


def test_a_killed_commands_scratch_folder_goes_whatever_output_it_was_for(tmp_path):
    """Only scratch folders named for the same output were removed: a killed `apply -o a.onnx` left `.a.onnx.*`
    (a whole copy of the model) behind while later commands wrote b.onnx, c.onnx into the folder."""
    pid = _dead_pid()
    stale = tmp_path / ".a.onnx.k1ll3d"
    stale.mkdir()
    (stale / OWNER).write_text(str(pid))
    (stale / "a.onnx").write_bytes(b"half a model")
    stale_run = tmp_path / ".graphsurgery-run-k1ll3d"  # `run -o` killed while its output folder did not exist yet
    stale_run.mkdir()
    (stale_run / OWNER).write_text(str(pid))
    alive = tmp_path / ".c.onnx.live42"
    alive.mkdir()
    (alive / OWNER).write_text(str(os.getpid()))  # a live process's folder is left alone
    foreign = tmp_path / ".git"
    foreign.mkdir()  # no owner file: not ours, left alone
    result = invoke("apply", POSE, _pose(tmp_path / "plain.onnx"), "-o", tmp_path / "b.onnx")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not stale_run.exists() and alive.exists() and foreign.exists()
    assert f"removed {stale}, left behind by process {pid}" in result.output


def test_an_owner_marker_that_is_a_fifo_blocks_nothing(tmp_path):
    """The marker was read with read_text(): a FIFO in its place (in a shared $TMPDIR, anyone may make
    /tmp/graphsurgery-x/.graphsurgery-owner) blocked every later command for ever. Run apart: it would hang."""
    folder = tmp_path / ".o.onnx.evil"
    folder.mkdir()
    os.mkfifo(folder / OWNER)
    code = "import sys; from pathlib import Path; from graphsurgery.safeio import _remove_stale; " \
           "_remove_stale(Path(sys.argv[1]), '.o.onnx.')"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=20,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert folder.exists()  # not ours to judge: left alone


@pytest.mark.parametrize("marker", ["9" * 20, "99999999999"])
def test_an_owner_marker_past_any_process_id_is_left_alone(tmp_path, marker):
    """int("9" * 20) passed to os.kill was an OverflowError: an internal error of every command (a hostile
    /tmp/graphsurgery-x in a shared $TMPDIR)."""
    folder = tmp_path / "graphsurgery-verify-evil"
    folder.mkdir()
    (folder / OWNER).write_text(marker)
    safeio._remove_stale(tmp_path, "graphsurgery-")
    assert folder.exists()


def test_a_signal_while_a_scratch_folder_is_removed_leaves_no_folder(tmp_path):
    """SIGTERM just after `convert --ovms` placed its IR: exit 143 as due, but the scratch folder stayed, emptied of
    its owner marker, so that no later command removes it. The removal now finishes, then the signal is acted on.
    (In a process of its own: a real Ctrl-C in a test runner's worker killed the worker.)"""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from graphsurgery import safeio\n"
        "real_unlink = os.unlink\n"
        "def interrupted_unlink(path, *args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the removal starts\n"
        "    real_unlink(path, *args, **kwargs)\n"
        "os.unlink = interrupted_unlink\n"
        "folder = Path(sys.argv[1])\n"
        "try:\n"
        "    with safeio.scratch_folder(folder, '.out.onnx.', folder / 'out.onnx') as staging:\n"
        "        (staging / 'out.onnx').write_bytes(b'a whole model')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after the removal')\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "interrupted after the removal", (done.stdout, done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_reference_recorded_at_the_wrong_crop_size_is_refused_in_one_line(tmp_path):
    """`verify --reference` with inputs of 100 rows for a 64-row model: ONNX Runtime's INVALID_ARGUMENT came out
    as an internal error (exit 3)."""
    plain = _pose(tmp_path / "plain.onnx", batch="N")
    patched = tmp_path / "patched.onnx"
    assert invoke("apply", POSE, plain, "-o", patched).exit_code == 0
    reference = tmp_path / "reference.npz"
    np.savez(reference, input=np.zeros((2, 100, 48, 3), np.uint8), keypoints=np.zeros((2, 17, 2), np.float32))
    result = invoke("verify", POSE, plain, "--patched", patched, "--reference", reference, "--backends", "onnxruntime")
    one_line_exit_2(result, "reference.npz", "uint8[2, 100, 48, 3]", "takes uint8[?, 64, 48, 3]")


def test_run_says_how_long_a_long_run_will_take(tmp_path, monkeypatch):
    """50,000 boxes on one photo ran for minutes (about 5 with the tiny HRNet) with nothing on the screen, the
    progress bar counting images: not a hang, but it has to say so. One batch is timed first."""
    plain = _pose(tmp_path / "plain.onnx", batch="N")
    patched = tmp_path / "patched.onnx"
    assert invoke("apply", POSE, plain, "-o", patched).exit_code == 0
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"astronaut.jpg": [[10, 10, 50, 100]] * 300}))
    monkeypatch.setattr(longrun, "LONG_RUN_SECONDS", 0.0)  # this small model is fast: any run is "long"
    result = invoke("run", patched, IMAGES / "astronaut.jpg", "-o", tmp_path / "out", "--boxes", boxes,
                    "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert "note: 300 crops to run: about" in result.output and "measured on one batch" in result.output
