"""Leftovers of the thirteenth round (issue 17), each fixed with the test that found it: a command killed (SIGKILL)
while it worked in the system's temporary folder left its scratch folder there for good (`verify`, `bench`,
`eval-coco`, the int8 accuracy control: tempfile's folders carry no owner), and a machine whose temporary folders
all refuse files was an internal error. Such folders now name their process and the next command removes those of
dead processes, saying so; no temporary folder at all is one line and exit 2."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery import safeio
from graphsurgery.folding import MAX_CONSTANT_MACS
from graphsurgery.modelio import MAX_SUBGRAPH_DEPTH
from graphsurgery.safeio import OWNER
from test_hostile_thirteenth import loop_model, nested_ifs, pose_with, save

from conftest import RECIPES, ROOT

POSE = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


@pytest.fixture
def temporary(tmp_path, monkeypatch):
    """A fresh system temporary folder for this test ($TMPDIR as tempfile reads it)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)  # that process has exited: its pid names no live process (reuse aside)


def test_temporary_folders_of_killed_processes_are_removed_by_the_next_command(tiny_pose_models, temporary):
    pid = _dead_pid()
    stale = []
    for purpose in ("verify", "bench", "int8"):  # any command's folder: the next command of any kind removes it
        folder = temporary / f"graphsurgery-{purpose}-abc123"
        folder.mkdir()
        (folder / OWNER).write_text(str(pid))
        (folder / "patched.onnx").write_bytes(b"half a model")
        stale.append(folder)
    alive = temporary / "graphsurgery-verify-live42"
    alive.mkdir()
    (alive / OWNER).write_text(str(os.getpid()))  # a live process's folder is left alone
    foreign = temporary / "graphsurgery-notours"
    foreign.mkdir()  # no owner file: not ours, left alone
    result = invoke("verify", POSE, tiny_pose_models[(17, False)], "--random", 1, "--backends", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert not any(folder.exists() for folder in stale)
    for folder in stale:
        assert f"removed {folder}, left behind by process {pid}" in result.output
    assert sorted(temporary.iterdir()) == sorted([alive, foreign])  # and verify's own folder is gone


def test_a_verify_killed_mid_run_leaves_a_folder_the_next_run_removes(tiny_pose_models, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary)}
    command = [sys.executable, "-m", "graphsurgery", "verify", str(POSE), str(tiny_pose_models[(17, False)]),
               "--random", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(temporary.glob("graphsurgery-verify-*/patched.onnx")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the command and the process that watches it (graphsurgery.supervisor)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL  # killed while it worked, not after it ended
    (left,) = temporary.glob("graphsurgery-verify-*")
    worker = int((left / OWNER).read_text())
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"removed {left}, left behind by process {worker}, which was killed" in done.stderr
    assert list(temporary.iterdir()) == []


def test_no_writable_temporary_folder_is_one_line(tiny_pose_models, monkeypatch):
    def nowhere():
        raise FileNotFoundError(2, "No usable temporary directory found")
    monkeypatch.setattr(tempfile, "gettempdir", nowhere)
    result = invoke("verify", POSE, tiny_pose_models[(17, False)], "--random", 1)
    one_line_exit_2(result, "no writable temporary folder", "set TMPDIR to a writable folder")


def test_a_temporary_folder_that_refuses_files_is_one_line(tiny_pose_models, temporary):
    temporary.chmod(0o500)
    try:
        if os.access(temporary, os.W_OK):  # root ignores the mode: a file where the folder should be instead
            temporary.chmod(0o700)
            temporary.rmdir()
            temporary.write_text("not a folder")
        result = invoke("bench", POSE, tiny_pose_models[(17, False)], "--iterations", 1, "--warmup", 0)
    finally:
        if temporary.is_dir():
            temporary.chmod(0o700)
    one_line_exit_2(result, str(temporary), "cannot create files in the temporary folder", "set TMPDIR")


# --- refusals name the node the user can find --------------------------------------------------------------------

def test_an_unnamed_node_is_named_by_its_output(tmp_path):
    model = loop_model(2**62)
    model.graph.node[1].name = ""  # exporters leave names empty: the line said "node ''"
    path = save(model, tmp_path / "loop.onnx")
    one_line_exit_2(invoke("inspect", path), "unnamed Loop node (output 'v_end') has a constant trip count")


def test_deep_nesting_names_the_outermost_node(tmp_path):
    path = save(nested_ifs(MAX_SUBGRAPH_DEPTH + 3), tmp_path / "ifs.onnx")  # the inner Ifs are unnamed
    one_line_exit_2(invoke("inspect", path), "If node 'outer' nests subgraphs")


# --- a name of only blanks --------------------------------------------------------------------------------------

def test_an_input_named_with_only_blanks_is_read_when_it_exists(tiny_pose_models, tmp_path, monkeypatch):
    """It was refused as "an empty path" although the file was there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / " ").write_bytes(POSE.read_bytes())
    result = invoke("apply", " ", tiny_pose_models[(17, False)], "-o", "p.onnx")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.onnx").is_file()


def test_a_missing_input_or_any_output_named_with_only_blanks_is_refused(tiny_pose_models, tmp_path, monkeypatch):
    import graphsurgery
    from graphsurgery.errors import GraphsurgeryError

    monkeypatch.chdir(tmp_path)
    one_line_exit_2(invoke("apply", "  ", tiny_pose_models[(17, False)], "-o", "p.onnx"),
                    "a path of only blanks ('  ') names no file or folder to read")
    (tmp_path / " ").write_text("an earlier file")  # existing or not, nobody sees such an output in a listing
    one_line_exit_2(invoke("apply", POSE, tiny_pose_models[(17, False)], "-o", " ", "--force"),
                    "a path of only blanks (' ') names no file to write")
    with pytest.raises(GraphsurgeryError, match=r"a path of only blanks \(' '\) names no file to write"):
        graphsurgery.apply(POSE, tiny_pose_models[(17, False)], " ", force=True)
    assert (tmp_path / " ").read_text() == "an earlier file"
    assert sorted(path.name for path in tmp_path.iterdir()) == [" "]


# --- constants multiplied while the runtimes load the model ---------------------------------------------------------

def _filled(name: str, shape_name: str) -> onnx.NodeProto:
    return helper.make_node("ConstantOfShape", [shape_name], [name],
                            value=numpy_helper.from_array(np.array([0.5], np.float32)))


def constant_matmul(n: int, *, computed_shape: bool = False) -> onnx.ModelProto:
    """The pose model plus the sum of a MatMul of two n × n ConstantOfShape; `computed_shape`: their shape is a
    Concat of two Constant nodes, which only data propagation follows."""
    if computed_shape:
        nodes = [helper.make_node("Constant", [], [f"side{i}"], value=numpy_helper.from_array(np.array([n], np.int64)))
                 for i in range(2)]
        nodes.append(helper.make_node("Concat", ["side0", "side1"], ["shape"], axis=0))
        shapes = []
    else:
        nodes, shapes = [], [numpy_helper.from_array(np.array([n, n], np.int64), "shape")]
    nodes += [_filled("a", "shape"), helper.make_node("MatMul", ["a", "a"], ["product"], name="square")]
    return pose_with(nodes, "product", shapes)


def constant_conv(side: int) -> onnx.ModelProto:
    """The pose model plus the sum of a 3×3 convolution, 64 → 64 channels, of a side × side ConstantOfShape."""
    nodes = [_filled("image", "shape"), helper.make_node("Conv", ["image", "k"], ["filtered"], pads=[1, 1, 1, 1])]
    return pose_with(nodes, "filtered", [numpy_helper.from_array(np.array([1, 64, side, side], np.int64), "shape"),
                                         numpy_helper.from_array(np.ones((64, 64, 3, 3), np.float32), "k")])


@pytest.mark.parametrize("model, needle", [
    pytest.param(lambda: constant_matmul(30_000), "MatMul node 'square' multiplies constants only, "
                                                  "27,000,000,000,000 multiply-adds", id="matmul"),
    pytest.param(lambda: constant_matmul(30_000, computed_shape=True), "27,000,000,000,000", id="computed-shape"),
    pytest.param(lambda: constant_conv(2048), "unnamed Conv node (output 'filtered') multiplies constants only, "
                                              "154,618,822,656 multiply-adds", id="conv"),
])
@pytest.mark.parametrize("command", ["inspect", "convert", "verify"])
def test_a_huge_product_of_constants_is_refused_before_a_runtime_folds_it(tmp_path, model, needle, command):
    """`convert` of the MatMul ran for many minutes (OpenVINO folds constants while converting; ONNX Runtime does
    when it opens a session)."""
    path = save(model(), tmp_path / "m.onnx")
    args = {"inspect": [path], "convert": [path, "-o", tmp_path / "m.xml"], "verify": [POSE, path]}[command]
    one_line_exit_2(invoke(command, *args), needle, f"at most {MAX_CONSTANT_MACS:,}", "fix:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_small_product_of_constants_converts(tmp_path):
    path = save(constant_matmul(500), tmp_path / "m.onnx")
    result = invoke("convert", path, "-o", tmp_path / "m.xml")
    assert result.exit_code == 0, result.output


# --- two commands placing outputs in one folder at once --------------------------------------------------------------

@contextmanager
def folder_locked(folder):
    """The lock another command holds while it places its outputs in `folder`."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(handle)


@pytest.mark.parametrize("command", ["apply", "convert", "run"])
def test_outputs_are_placed_only_while_no_other_command_places_there(tiny_pose_models, tmp_path, command):
    """Two `apply -o m.onnx --force` (or `convert`, or `run -o`) at once could interleave their renames: one's model
    beside the other's data file, one's .xml beside the other's .bin, half of each run's results."""
    model = tiny_pose_models[(17, False)]
    out = tmp_path / "out"
    out.mkdir()
    if command == "run":
        patched = tmp_path / "p.onnx"
        assert invoke("apply", POSE, model, "-o", patched).exit_code == 0
    args = {"apply": ["apply", POSE, model, "-o", out / "m.onnx"],
            "convert": ["convert", model, "-o", out / "m.xml"],
            "run": ["run", tmp_path / "p.onnx", PHOTO, "-o", out / "results"]}[command]
    with folder_locked(out):
        process = subprocess.Popen([sys.executable, "-m", "graphsurgery", *map(str, args)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not _staged(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # time enough to rename, if it did not wait
        assert process.poll() is None, process.communicate()
        assert _placed(out) == []  # waiting, with its outputs staged
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert _placed(out)


def _staged(folder) -> list:
    return [path for path in folder.rglob("*") if path.name.startswith(".") and path.is_dir()]


def _placed(folder) -> list:
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def test_a_folder_held_too_long_is_one_line(tiny_pose_models, tmp_path, monkeypatch):
    monkeypatch.setattr(safeio, "PLACING_WAIT", 0.3)
    with folder_locked(tmp_path):
        result = invoke("apply", POSE, tiny_pose_models[(17, False)], "-o", tmp_path / "m.onnx")
    one_line_exit_2(result, "another command has been placing its outputs in this folder", "wait for it")
    assert list(tmp_path.iterdir()) == []


# --- integer division the runtimes fold while loading: the smallest integer by −1 -----------------------------------

def integer_division(dividend, divisor, *, dtype=np.int32) -> onnx.ModelProto:
    """The pose model plus a Div of integer constants: `dividend`, and `divisor` (or None: 0 − 1, computed)."""
    constants = [numpy_helper.from_array(np.array(dividend, dtype), "dividend")]
    nodes = []
    if divisor is None:
        constants += [numpy_helper.from_array(np.array([0], dtype), "zero"),
                      numpy_helper.from_array(np.array([1], dtype), "one")]
        nodes.append(helper.make_node("Sub", ["zero", "one"], ["divisor"]))
    else:
        constants.append(numpy_helper.from_array(np.array(divisor, dtype), "divisor"))
    nodes.append(helper.make_node("Div", ["dividend", "divisor"], ["quotient"], name="halve"))
    return pose_with(nodes, "quotient", constants)


SMALLEST32, SMALLEST64 = int(np.iinfo(np.int32).min), int(np.iinfo(np.int64).min)


@pytest.mark.parametrize("model, needle", [
    pytest.param(lambda: integer_division([SMALLEST32], [-1]), "divides the smallest integer by −1", id="int32"),
    pytest.param(lambda: integer_division([5, SMALLEST64], [2, -1], dtype=np.int64),
                 "divides the smallest integer by −1", id="int64"),
    pytest.param(lambda: integer_division([SMALLEST32], None), "by a divisor computed from constants",
                 id="computed-divisor"),
])
@pytest.mark.parametrize("command", ["convert", "verify"])
def test_the_smallest_integer_divided_by_minus_one_is_refused(tmp_path, model, needle, command):
    """ONNX Runtime (opening a session: verify, bench, run) and OpenVINO (convert) fold the division and died of
    SIGFPE. Run in a child process: the code before the fix killed it."""
    path = save(model(), tmp_path / "m.onnx")
    args = {"convert": [path, "-o", tmp_path / "m.xml"], "verify": [POSE, path, "--random", 1]}[command]
    done = subprocess.run([sys.executable, "-m", "graphsurgery", command, *map(str, args)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Div node 'halve'" in lines[0] and needle in lines[0] and "SIGFPE" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("dividend, divisor", [([SMALLEST32], [2]), ([7, -8], [-1, -1])])
def test_integer_division_that_cannot_trap_converts(tmp_path, dividend, divisor):
    path = save(integer_division(dividend, divisor), tmp_path / "m.onnx")
    result = invoke("convert", path, "-o", tmp_path / "m.xml")
    assert result.exit_code == 0, result.output
