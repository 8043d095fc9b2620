"""The command runs in a child process watched by a light parent (graphsurgery.supervisor): a kernel of ONNX Runtime
or OpenVINO that dies by a signal on a value the model computes from its input (no check before the run can see
it) was a death by SIGFPE with no line and scratch folders left in $TMPDIR; now one line naming the runtime and the
model, exit 2, nothing left. A step in native code that outlasts GRAPHSURGERY_TIME_LIMIT (a model OpenVINO compiles
in quadratic time, a Loop counted by the input) is stopped the same way. Kills of either process are tested too."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_hostile_thirteenth import counting_body, pose_with, save

from conftest import RECIPES

POSE = RECIPES / "hrnet_coco_pose.yaml"
OWNER = ".graphsurgery-owner"


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.array(value, dtype), name)


def zero_from_the_input(dtype) -> list:
    """Nodes making `zi`, a zero of `dtype` computed from the input image: no static check can read it."""
    return [helper.make_node("ReduceMin", ["input"], ["m"], keepdims=0),
            helper.make_node("Mul", ["m", "zero"], ["z"]),
            helper.make_node("Cast", ["z"], ["zi"], to=dtype)]


def smallest_divided_by_minus_one():
    """INT_MIN / -1 at run time: SIGFPE in ONNX Runtime's Div (OpenVINO saturates)."""
    nodes = [*zero_from_the_input(TensorProto.INT32), helper.make_node("Add", ["zi", "smallest"], ["a"]),
             helper.make_node("Add", ["zi", "minus1"], ["b"]), helper.make_node("Div", ["a", "b"], ["bomb"])]
    return pose_with(nodes, "bomb", [const("zero", 0.0), const("smallest", np.iinfo(np.int32).min, np.int32),
                                     const("minus1", -1, np.int32)])


def range_of_step_zero():
    """A Range whose step is 0 at run time: SIGFPE in OpenVINO (ONNX Runtime refuses it in an exception)."""
    nodes = [*zero_from_the_input(TensorProto.INT64), helper.make_node("Add", ["zi", "five"], ["limit"]),
             helper.make_node("Range", ["zi", "limit", "zi"], ["bomb"])]
    return pose_with(nodes, "bomb", [const("zero", 0.0), const("five", 5, np.int64)])


def relu_chain(length: int = 1500):
    """The input through `length` ReLUs in a row: OpenVINO's CPU plugin compiles such chains in quadratic time
    (1,500: ~8 s, 5,000: 90 s; HRNet-W32: 1 s)."""
    nodes = [helper.make_node("Identity", ["input"], ["r0"])]
    nodes += [helper.make_node("Relu", [f"r{k}"], [f"r{k + 1}"]) for k in range(length)]
    return pose_with(nodes, f"r{length}")


def loop_counted_by_the_input():
    """A Loop whose trip count (10^15) is computed from the input: no static check reads it; it ran for ever."""
    nodes = [*zero_from_the_input(TensorProto.FLOAT), helper.make_node("Add", ["zi", "big"], ["b"]),
             helper.make_node("Cast", ["b"], ["trips"], to=TensorProto.INT64),
             helper.make_node("Loop", ["trips", "cond", "v0"], ["v_end"], body=counting_body(
                 helper.make_node("Identity", ["cond_in"], ["cond_out"])), name="counter")]
    return pose_with(nodes, "v_end", [const("zero", 0.0), const("big", 1e15), const("cond", True, bool),
                                      const("v0", 0.0)])


def command(*args) -> list[str]:
    return [sys.executable, "-m", "graphsurgery", *map(str, args)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def temporary(tmp_path):
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("build, backend, runtime", [
    (smallest_divided_by_minus_one, "onnxruntime", "ONNX Runtime"),
    (range_of_step_zero, "openvino", "OpenVINO"),
])
def test_a_runtime_dying_on_a_value_computed_at_run_time_is_one_line(tmp_path, temporary, build, backend, runtime):
    model = save(build(), tmp_path / "bomb.onnx")
    before = digest(model)
    done = subprocess.run(command("verify", POSE, model, "--random", 1, "--backends", backend), capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TMPDIR": str(temporary)})
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    for needle in ("crashed in native code (SIGFPE", f"while {runtime} was running", "bomb.onnx", "fix:"):
        assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert digest(model) == before
    assert list(temporary.iterdir()) == []  # the scratch folder of the dead process was removed by its parent


def started_verify(plain, temporary) -> tuple[subprocess.Popen, int, Path]:
    """`verify` running in a process group of its own, once its scratch folder holds the patched model: the
    process, its worker's ID, the folder."""
    # 300 samples: a second or more of work left once the patched model is there, even on a loaded machine (with
    # 32, verify once finished before the test's signal reached it)
    process = subprocess.Popen(command("verify", POSE, plain, "--random", 300), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(temporary)},
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(temporary.glob("graphsurgery-verify-*/patched.onnx")):
        assert process.poll() is None and time.monotonic() < deadline, "verify ended before it could be killed"
        time.sleep(0.01)
    (folder,) = temporary.glob("graphsurgery-verify-*")
    return process, int((folder / OWNER).read_text()), folder


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"  # reaped by nobody yet: dead all the same
    except FileNotFoundError:
        return True


def test_a_worker_killed_is_one_line_and_leaves_nothing(tiny_pose_models, temporary):
    """The out-of-memory killer, or `kill -9` of the worker: it died without a line (exit -9) and its folder stayed."""
    process, worker, folder = started_verify(tiny_pose_models[(17, False)], temporary)
    assert worker != process.pid
    os.kill(worker, signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    lines = stderr.splitlines()
    assert process.returncode == 2 and len(lines) == 1, stderr
    assert "the command was killed (SIGKILL" in lines[0] and "out of memory" in lines[0], lines[0]
    assert not folder.exists()


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_killing_the_command_ends_its_worker(tiny_pose_models, temporary, stopped):
    """`kill -9 PID` of the command: its worker must not run on, orphaned. It got SIGTERM, which a worker stopped
    (Ctrl-Z) or stuck in native code never acted on: one ran on for over an hour. It is killed; its scratch
    folder names it, for the next command to remove."""
    process, worker, folder = started_verify(tiny_pose_models[(17, False)], temporary)
    if stopped:
        os.kill(worker, signal.SIGSTOP)
    try:
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not gone(worker):
            assert time.monotonic() < deadline, "the worker ran on after its command was killed"
            time.sleep(0.05)
    finally:
        if not gone(worker):
            os.kill(worker, signal.SIGKILL)
    assert not folder.exists() or (folder / OWNER).read_text() == str(worker)


@pytest.mark.parametrize("name, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_to_the_whole_process_group_is_acted_on_once(tiny_pose_models, temporary, name, code, word):
    """A shell's `kill -INT -PGID` reaches both processes, and the parent forwards it: still one line and the
    signal's exit code (a second signal while the first unwound could break into its clean-up)."""
    process, _, folder = started_verify(tiny_pose_models[(17, False)], temporary)
    os.killpg(process.pid, getattr(signal, name))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code and stderr.strip() == word, stderr
    assert not folder.exists()


@pytest.mark.parametrize("call, error", [("fork", "BlockingIOError(11, 'Resource temporarily unavailable')"),
                                         ("memfd_create", "OSError(24, 'Too many open files')")])
def test_without_a_process_to_spare_the_command_runs_in_its_own(tiny_pose_models, call, error):
    """`ulimit -u` reached (fork fails) or no descriptor left for the shared file: the command runs unwatched rather
    than not at all."""
    script = ("import os, sys\n"
              f"def refuse(*args):\n    raise {error}\n"
              f"os.{call} = refuse\n"
              "sys.argv = ['graphsurgery', 'inspect', sys.argv[1]]\n"
              "from graphsurgery.launch import main\nmain()\n")
    done = subprocess.run([sys.executable, "-c", script, str(tiny_pose_models[(17, False)])], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "heatmaps" in done.stdout


@pytest.mark.parametrize("build, backend, activity", [
    (relu_chain, "openvino", "OpenVINO was compiling"),
    (loop_counted_by_the_input, "onnxruntime", "ONNX Runtime was running"),
])
def test_a_step_that_outlasts_the_time_limit_is_stopped_in_one_line(tmp_path, temporary, build, backend, activity):
    """GRAPHSURGERY_TIME_LIMIT (30 s by default; 2 here, to keep the test short): the step is stopped, its
    scratch folders removed, and the line says what ran too long and how to allow more time."""
    model = save(build(), tmp_path / "slow.onnx")
    started = time.monotonic()
    done = subprocess.run(command("verify", POSE, model, "--random", 1, "--backends", backend), capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TMPDIR": str(temporary),
                                                       "GRAPHSURGERY_TIME_LIMIT": "2"})
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    for needle in (activity, "slow.onnx", "for more than 2 s",
                   "GRAPHSURGERY_TIME_LIMIT=", "fix:"):
        assert needle in lines[0], lines[0]
    assert time.monotonic() - started < 60
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize("value", ["soon", "-1", "1e3", "99999999999"])
def test_a_time_limit_that_is_not_whole_seconds_is_one_line(tiny_pose_models, value):
    done = subprocess.run(command("inspect", tiny_pose_models[(17, False)]), capture_output=True, text=True,
                          timeout=60, env={**os.environ, "GRAPHSURGERY_TIME_LIMIT": value})
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "GRAPHSURGERY_TIME_LIMIT" in lines[0], done.stderr
    assert "fix:" in lines[0] and done.stdout == ""


@pytest.mark.parametrize("soft, hard", [(2, 2), (1, 3)], ids=["ulimit -t", "soft below hard"])
def test_a_child_killed_at_its_cpu_time_limit_is_the_cpu_limit_line(tmp_path, temporary, soft, hard):
    """At the hard CPU time limit the kernel kills by SIGKILL, with no SIGXCPU first when both limits are one
    (`ulimit -t N`), or after SIGXCPUs that native code never let Python act on: it was blamed on memory."""
    model = save(loop_counted_by_the_input(), tmp_path / "slow.onnx")

    def limited():
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))

    done = subprocess.run(command("verify", POSE, model, "--random", 1, "--backends", "onnxruntime"),
                          capture_output=True, text=True, timeout=120, preexec_fn=limited,
                          env={**os.environ, "TMPDIR": str(temporary), "GRAPHSURGERY_TIME_LIMIT": "0"})
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert "CPU time limit (ulimit -t)" in lines[0] and "memory" not in lines[0], lines[0]
    assert list(temporary.iterdir()) == []


def test_a_scratch_folder_loses_its_owner_marker_last(tmp_path, monkeypatch):
    """A removal cut short (SIGKILL, or a file that would not go) left a folder holding a model but no marker, which
    no later command could tell from a stranger's: seven of them, up to 114 MB each, had piled up in $TMPDIR."""
    from graphsurgery import safeio

    folder = tmp_path / "graphsurgery-verify-x"
    (folder / "sub").mkdir(parents=True)
    (folder / OWNER).write_text("12345")
    (folder / "patched.onnx").write_bytes(b"model")
    (folder / "sub" / "weights.data").write_bytes(b"weights")
    real_unlink = os.unlink

    def stuck(path, *args, **kwargs):  # the model will not go (a removal cut short at it)
        if os.fsdecode(path).endswith("patched.onnx"):
            raise PermissionError(13, "Permission denied")
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", stuck)
    safeio.remove_scratch(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == [OWNER, "patched.onnx"]  # the marker stays with what stays
    safeio.remove_scratch(os.fsencode(folder))  # as the supervisor names it
    assert not folder.exists()
