"""Hostile round 26: the process and its environment (resource limits, TMPDIR, standard streams, the current
folder, concurrent commands) and the Python API's arguments.

Under `ulimit -v` OpenVINO's thread pools or its ONNX frontend failed to start and the model was blamed ("OpenVINO
cannot compile the model: Resource temporarily unavailable", "Unable to read the model … Available frontends: jax ir
tf"); under `ulimit -u` (a normal user's processes and threads) the same, and onnxruntime's "pthread_create failed";
a TMPDIR whose path is not UTF-8 was "rename the output", a path the user never gave. A non-blocking standard
output lost the report with exit 0; a folder that may be listed but not entered made every command an internal
error; an output folder moved away midway kept the scratch folder; bench and eval-coco named their scratch files.
The Python API took false values ("", [], 0, {}) for "not given", and raised numpy's and the system's errors for
arrays, non-mapping tolerances, paths too long and a reference pipeline answering no numbers.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from clikit import invoke, one_line_exit_2

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


# --- resource limits: the user's, said as such --------------------------------------------------------------------


def _limited(monkeypatch, **limits):
    """The process as if its soft and hard limits were `limits` (resource name → value), the user not root."""
    real_get, real_set = resource.getrlimit, resource.setrlimit
    faked = {getattr(resource, name): value for name, value in limits.items()}

    def getrlimit(which):
        return (faked[which], faked[which]) if which in faked else real_get(which)

    def setrlimit(which, values):
        if which in faked:
            raise ValueError("not allowed to raise maximum limit")
        return real_set(which, values)

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    monkeypatch.setattr(os, "getuid", lambda: 1000)


@pytest.mark.parametrize("text", [
    # OpenVINO's CPU plugin could not start its threads (no room for their stacks)
    "Exception from src/inference/src/cpp/core.cpp:132:\nException from src/inference/src/dev/plugin.cpp:59:\n"
    "Resource temporarily unavailable\n",
    # its ONNX frontend library did not load: it fell back on the others
    'Exception from src/inference/src/cpp/core.cpp:107:\nUnable to read the model: "m.onnx" Please check that model '
    'format: ".onnx" is supported and the model is correct. Available frontends: jax ir tf\n',
])
def test_openvino_failing_under_a_memory_limit_says_the_limit(monkeypatch, text):
    """`verify --backends openvino` under `ulimit -v 400000` (and `bench` under 500000) said "OpenVINO cannot compile
    the model: …" with the fix "check the model"."""
    from graphsurgery import limits

    _limited(monkeypatch, RLIMIT_AS=400 * 2**20)
    error = limits.limit_error(RuntimeError(text), "OpenVINO")
    assert error is not None and "ulimit -v" in str(error) and "OpenVINO ran out of memory" in str(error)


def test_a_model_openvino_cannot_read_is_still_the_models_fault_under_a_memory_limit(monkeypatch):
    from graphsurgery import limits

    _limited(monkeypatch, RLIMIT_AS=400 * 2**20)
    text = ('Unable to read the model: "m.onnx" Please check that model format: ".onnx" is supported and the model '
            "is correct. Available frontends: onnx jax ir tf paddle pytorch tflite\n")
    assert limits.limit_error(RuntimeError(text), "OpenVINO") is None


def test_a_process_limit_too_small_for_the_runtimes_is_one_line_up_front(monkeypatch):
    """`ulimit -u 5` as a normal user: `run` said "OpenVINO cannot compile the model: Failed to create plugin … for
    device CPU", verify "onnxruntime cannot load the model: … pthread_create failed" (fix: check the model)."""
    _limited(monkeypatch, RLIMIT_NPROC=5)
    one_line_exit_2(invoke("steps"), "ulimit -u", "only 5 processes")


@pytest.mark.parametrize("text", [
    "Exception from src/inference/src/dev/core_impl.cpp:847:\nFailed to create plugin \"libopenvino_intel_cpu_plugin"
    ".so\" for device CPU\nPlease, check your environment\nResource temporarily unavailable\n",
    "(int, Eigen::ThreadPoolInterface*), const onnxruntime::ThreadOptions&) pthread_create failed, error code: 11",
])
def test_a_thread_not_started_under_a_process_limit_says_the_limit(monkeypatch, text):
    """A limit that suffices by itself, reached with the user's other processes (`ulimit -u 16` beside ten)."""
    from graphsurgery import limits

    _limited(monkeypatch, RLIMIT_NPROC=40, RLIMIT_AS=resource.RLIM_INFINITY, RLIMIT_DATA=resource.RLIM_INFINITY)
    error = limits.limit_error(RuntimeError(text), "OpenVINO")
    assert error is not None and "ulimit -u" in str(error) and "40 processes" in str(error)


def test_root_is_not_held_to_a_process_limit_but_a_thread_refused_is_still_no_fault_of_the_model(monkeypatch):
    """The kernel does not count root's processes; a container's pids limit refuses root's threads too."""
    from graphsurgery import limits

    _limited(monkeypatch, RLIMIT_NPROC=5, RLIMIT_AS=resource.RLIM_INFINITY, RLIMIT_DATA=resource.RLIM_INFINITY)
    monkeypatch.setattr(os, "getuid", lambda: 0)
    limits.ensure_processes()
    error = limits.limit_error(RuntimeError("Resource temporarily unavailable"), "OpenVINO")
    assert error is not None and "could not start a thread" in str(error) and "ulimit -u)" not in str(error)
    # Python's own EAGAIN (a lock taken without waiting, a non-blocking file) is no thread refused
    assert limits.limit_error(BlockingIOError(11, "Resource temporarily unavailable"), "the command") is None


# --- TMPDIR ---------------------------------------------------------------------------------------------------------


def test_a_temporary_folder_whose_path_is_not_utf8_names_tmpdir(tmp_path, monkeypatch, plain):
    """TMPDIR=/tmp/$'\\xff': verify and bench said "the output's path is not UTF-8 … rename the file (or folder)",
    naming `…/graphsurgery-bench-…/plain.patched.onnx`."""
    folder = os.fsencode(tmp_path) + b"/\xff"
    os.mkdir(folder)
    monkeypatch.setattr(tempfile, "tempdir", os.fsdecode(folder))
    result = invoke("verify", RECIPES / "hrnet_coco_pose.yaml", plain, "--backends", "onnxruntime")
    one_line_exit_2(result, "temporary folder", "TMPDIR")
    assert "output" not in result.output
    assert os.listdir(folder) == []


# --- standard streams -----------------------------------------------------------------------------------------------


def test_a_non_blocking_standard_output_with_a_slow_reader_loses_nothing(tmp_path):
    """A pipe left O_NONBLOCK by the parent (node.js does), read a moment late: `schema` wrote the 4,096 bytes that
    fit the pipe and dropped the other 54,000 in silence, exit 0."""
    import fcntl

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    expected = subprocess.run([sys.executable, "-m", "graphsurgery", "schema"], capture_output=True, cwd=tmp_path,
                              env=env, timeout=60).stdout
    read, write = os.pipe()
    fcntl.fcntl(write, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    os.set_blocking(write, False)
    try:
        child = subprocess.Popen([sys.executable, "-m", "graphsurgery", "schema"], stdout=write,
                                 stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    finally:
        os.close(write)
    time.sleep(1.5)  # the child fills the pipe and meets EAGAIN
    with os.fdopen(read, "rb") as pipe:
        got = pipe.read()
    assert child.wait(timeout=60) == 0, child.stderr.read()
    child.stderr.close()
    assert len(expected) > 20_000 and got == expected


# --- the Python API ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["inspect", "apply-out", "run-image", "verify-images"])
def test_a_path_too_long_for_the_system_is_a_graphsurgery_error_in_the_api(plain, patched, tmp_path, call):
    """The CLI said "File name too long" in one line; the API raised the system's OSError (ENAMETOOLONG)."""
    import graphsurgery
    from graphsurgery.errors import GraphsurgeryError

    long_name, deep = "x" * 300, "d/" * 2100 + "m.onnx"
    calls = {
        "inspect": lambda: graphsurgery.inspect(tmp_path / deep),
        "apply-out": lambda: graphsurgery.apply(RECIPES / "hrnet_coco_pose.yaml", plain, tmp_path / long_name),
        "run-image": lambda: graphsurgery.run(patched, [tmp_path / f"{long_name}.jpg"], tmp_path / "out",
                                              backend="onnxruntime"),
        "verify-images": lambda: graphsurgery.verify(RECIPES / "hrnet_coco_pose.yaml", plain,
                                                     images=tmp_path / long_name, backends=["onnxruntime"]),
    }
    with pytest.raises(GraphsurgeryError, match="File name too long.*use a shorter path"):
        calls[call]()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("threads", ["", [], 0, {}])
def test_run_threads_that_are_falsy_are_refused_not_the_default(patched, tmp_path, threads):
    import graphsurgery
    from graphsurgery.errors import GraphsurgeryError

    with pytest.raises(GraphsurgeryError, match="threads"):
        graphsurgery.run(patched, [ROOT / "examples" / "images" / "astronaut.jpg"], tmp_path / "out",
                         backend="onnxruntime", threads=threads)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["backend", "precision"])
def test_a_numpy_array_for_a_name_is_an_argument_error(patched, tmp_path, name):
    """`backend=np.array([1, 2])`: "The truth value of an array … is ambiguous", a ValueError."""
    import numpy as np

    import graphsurgery
    from graphsurgery.errors import ArgumentError

    with pytest.raises(ArgumentError, match=name):
        graphsurgery.run(patched, [ROOT / "examples" / "images" / "astronaut.jpg"], tmp_path / "out",
                         **{name: np.array([1, 2])})
    with pytest.raises(ArgumentError, match="precision"):
        graphsurgery.verify(RECIPES / "hrnet_coco_pose.yaml", patched, precision=np.array([1, 2]))


@pytest.mark.parametrize("tolerances", [0.1, "", [], (1e-3, 1e-3), {1: (0, 0)}, {None: (0, 0)}])
def test_tolerances_are_a_mapping_by_output_name(plain, tolerances):
    """0.1 was "'float' object is not iterable"; "" and [] ran with no tolerance at all, in silence."""
    import graphsurgery
    from graphsurgery.errors import ArgumentError

    with pytest.raises(ArgumentError, match="tolerances"):
        graphsurgery.verify(RECIPES / "hrnet_coco_pose.yaml", plain, tolerances=tolerances,
                            backends=["onnxruntime"], random=1)


@pytest.mark.parametrize("settings", [{}, "", []])
def test_bench_settings_that_are_falsy_are_refused_not_the_defaults(plain, settings):
    """`bench(recipe, model, {})` ran 55 rounds of the default settings in silence (`settings or Settings()`)."""
    import graphsurgery
    from graphsurgery.errors import GraphsurgeryError

    with pytest.raises(GraphsurgeryError, match="Settings"):
        graphsurgery.bench(RECIPES / "hrnet_coco_pose.yaml", plain, settings)


@pytest.mark.parametrize("given, needle", [({"int8": 0}, "calibration samples"), ({"threads": 0}, "threads"),
                                           ({"threads": ""}, "threads"), ({"torch": ""}, "MODULE:FUNCTION")])
def test_bench_settings_that_are_falsy_are_not_absent(plain, given, needle):
    """Settings(int8=0) timed no int8 IR, threads=0 or "" the machine's CPU count, torch="" no network: as if not
    given, in silence (the CLI's options refuse 0 and "")."""
    import graphsurgery
    from graphsurgery.benchmark import Settings
    from graphsurgery.errors import GraphsurgeryError

    with pytest.raises(GraphsurgeryError, match=needle):
        graphsurgery.bench(RECIPES / "hrnet_coco_pose.yaml", plain, Settings(iterations=1, warmup=0, **given))


@pytest.mark.parametrize("answer, needle", [
    (lambda feeds: {"heatmaps": 1}, "int64[]"),  # numpy: "zero-dimensional arrays cannot be concatenated"
    (lambda feeds: {"heatmaps": [[1.0], [1.0, 2.0]]}, "list"),  # a ragged list: "inhomogeneous shape"
    (lambda feeds: {"heatmaps": ["a"] * len(feeds["input"])}, "<U1"),
])
def test_a_reference_pipeline_answering_no_numbers_is_one_line(plain, answer, needle):
    import graphsurgery
    from graphsurgery.errors import GraphsurgeryError

    with pytest.raises(GraphsurgeryError, match=f"answered 'heatmaps' with {re.escape(needle)}.*one row per sample"):
        graphsurgery.verify(RECIPES / "hrnet_coco_pose.yaml", plain, reference_pipeline=answer,
                            backends=["onnxruntime"], random=2)


# --- permissions: a folder that may be listed but not entered ------------------------------------------------------


def _as_a_user() -> list[str]:
    """A prefix that runs a command without root's power over permissions (root reads any folder), or a skip."""
    if os.geteuid() != 0:
        return []
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions are not enforced")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


@pytest.mark.parametrize("what", ["model", "image", "output"])
def test_a_file_in_a_folder_that_cannot_be_entered_is_one_line(plain, patched, tmp_path, what):
    """`chmod 600 DIR` (r without x): pathlib's is_dir() raised PermissionError for every file in it, and inspect,
    apply, run, verify --images, chain … were internal errors (exit 3)."""
    import shutil

    closed = tmp_path / "closed"
    closed.mkdir()
    shutil.copy(plain, closed / "m.onnx")
    shutil.copy(ROOT / "examples" / "images" / "astronaut.jpg", closed / "a.jpg")
    closed.chmod(0o600)
    args = {"model": ["inspect", closed / "m.onnx"],
            "image": ["run", patched, closed, "-o", tmp_path / "out", "--backend", "onnxruntime"],
            "output": ["apply", RECIPES / "hrnet_coco_pose.yaml", plain, "-o", closed / "p.onnx"]}[what]
    try:
        done = subprocess.run([*_as_a_user(), sys.executable, "-m", "graphsurgery", *map(str, args)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        closed.chmod(0o755)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "Permission denied" in lines[0] and "internal error" not in lines[0]
    assert sorted(os.listdir(closed)) == ["a.jpg", "m.onnx"] and not (tmp_path / "out").exists()


# --- errors about scratch files name the user's model --------------------------------------------------------------


@pytest.mark.parametrize("command", ["bench", "eval-coco"])
def test_a_failure_in_the_scratch_folder_names_the_users_model(plain, tmp_path, command):
    """Under `ulimit -f 4` bench said "/tmp/graphsurgery-bench-…/plain.patched.onnx: could not write the output",
    eval-coco "/tmp/graphsurgery-coco-…/patched.onnx: …": files the user never gave (verify named the model)."""
    from examples.synthetic_coco import write_coco_set

    recipe = RECIPES / "hrnet_coco_pose.yaml"
    if command == "bench":
        args = ["bench", recipe, plain, "--iterations", "1", "--warmup", "0"]
    else:
        annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
        args = ["eval-coco", recipe, plain, "--ann", annotations, "--images", tmp_path / "images"]
    done = subprocess.run([sys.executable, "-m", "graphsurgery", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                          "TMPDIR": str(tmp_path)},
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"{plain} (patched by {recipe})" in lines[0] and "ulimit -f" in lines[0]
    assert "graphsurgery-" not in lines[0] and not list(tmp_path.glob("graphsurgery-*"))


# --- an output folder moved while the command runs -----------------------------------------------------------------


def test_run_into_a_folder_moved_away_midway_leaves_no_scratch_folder_in_it(patched, tmp_path):
    """`mv out out.old` during `run -o out`: one line, and the scratch folder `.graphsurgery-run-…`, which went with
    the folder, stayed in `out.old` for good (it was looked for under its old path)."""
    import shutil

    import graphsurgery
    from graphsurgery.errors import GraphsurgeryError

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(ROOT / "examples" / "images" / "astronaut.jpg", images / name)
    out, moved = tmp_path / "out", tmp_path / "out.old"
    out.mkdir()

    def move_it(summary):
        if out.exists():
            out.rename(moved)

    with pytest.raises(GraphsurgeryError, match="was removed while the command ran"):
        graphsurgery.run(patched, images, out, backend="onnxruntime", on_image=move_it)
    assert os.listdir(moved) == [] and not out.exists()


# --- a full disk: which disk, and what to do ----------------------------------------------------------------------


def test_a_full_temporary_folder_says_tmpdir_not_the_models_folder(tmp_path):
    """verify, bench and eval-coco with a full $TMPDIR (a 40 kB tmpfs) said "plain.onnx (patched by …): could not
    write the output (No space left on device) — fix: free disk space or choose another folder": the user's model
    is on another disk, and there is no folder to choose but TMPDIR."""
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.safeio import scratch_named

    with pytest.raises(GraphsurgeryError) as caught, scratch_named(tmp_path, "plain.onnx (patched by r.yaml)"):
        raise GraphsurgeryError("could not write the output (No space left on device)", path=tmp_path / "p.onnx",
                                fix="free disk space or choose another folder; nothing was written")
    assert str(caught.value).startswith("plain.onnx (patched by r.yaml): could not write the output")
    assert "TMPDIR" in caught.value.fix and str(tmp_path.parent) in caught.value.fix


def test_a_report_or_chart_on_a_full_disk_is_told_to_free_space():
    """`bench --chart full/c.png`: "cannot write the chart (No space left on device) — fix: choose a writable path
    (the folder must exist)", of a folder that exists."""
    import errno

    from graphsurgery.limits import write_fix

    fix = write_fix(OSError(errno.ENOSPC, "No space left on device"), "choose a writable path (the folder must exist)")
    assert "free disk space" in fix and "must exist" not in fix
