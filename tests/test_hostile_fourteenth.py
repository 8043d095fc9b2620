"""A fourteenth round of hostile conditions: the process's environment and resource limits rather than its inputs
(`ulimit -f/-n/-v/-t/-s`, standard streams closed, full or open the wrong way, TMPDIR and HOME missing, full or
read-only, a deleted or unreadable current folder, odd umasks, terminal and runtime variables). Found: too few open
files (`ulimit -n 24`) made OpenVINO say "Cannot recognize input model" and `convert` told the user to change the
model; a memory limit (`ulimit -v`) was an internal error where a library failed to load ("failed to map segment")
or an allocation failed (MemoryError), or OpenVINO's "Cannot load library" blamed on the model, and `eval-coco`
asked Python for 1 GiB to read a 4 kB annotation file (its read cap was allocated up front); a file size limit
(`ulimit -f`) was "free disk space" (`convert`: with "78,169,571,328 bytes free there"); the CPU time limit (`ulimit
-St`) killed the process by SIGXCPU (exit 152, a core dump, scratch folders left); standard error closed (`2>&-`)
made `run` and `eval-coco` internal errors, and a full one (`2>/dev/full`) exit 1, the parity-failure code;
standard output open read-only (`1<&0`) was an internal error (EBADF); OPENCV_IO_MAX_IMAGE_PIXELS below an image's
size was an internal error; a HOME the user cannot write made OpenVINO's telemetry print three to six warnings on
success. Each is now one line naming the limit and how to raise it, exit 2 (or works), with no input changed.
Held: TMPDIR missing, a file, read-only or full (Python falls back to /tmp), HOME unset, umask 0777/0000, a deleted
or unreadable current folder, COLUMNS/LINES of 0, -5 or 100000, TERM=dumb, NO_COLOR, PYTHONIOENCODING=ascii,
PYTHONWARNINGS=error, OMP_NUM_THREADS of 0, -1, 100000 or abc, output folders read-only or on a read-only mount.
Out of reach: a stack limit under ~100 kB crashes Python itself before any code runs, and a CPU time limit whose
hard value equals the soft one is SIGKILL from the kernel."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from graphsurgery.safeio import read_small_file

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
#: a finite address-space limit far above what any command uses (x86-64 user space is 128 TiB)
HUGE_AS = 1 << 45


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def graphsurgery(*args, hook: str = "", limits: dict | None = None, env: dict | None = None, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, close_stderr: bool = False, timeout: int = 120, cwd=ROOT):
    """`graphsurgery ARGS` in a process of its own, under resource `limits` ({RLIMIT_…: (soft, hard)}), after `hook`
    (Python source) has run in it."""
    script = f"import os, sys\n{hook}\nfrom graphsurgery.launch import main\nsys.argv = ['graphsurgery', " \
             "*sys.argv[1:]]\nmain()\n"

    def before():
        for limit, values in (limits or {}).items():
            resource.setrlimit(limit, values)
        if close_stderr:
            os.close(2)

    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], stdout=stdout, stderr=stderr,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})}, preexec_fn=before)
    err = done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) else ""
    return done.returncode, [line for line in err.splitlines() if line.strip()]


def refused(code, lines, *needles):
    assert code == 2 and len(lines) == 1, (code, lines)
    assert "Traceback" not in lines[0] and "internal error" not in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- resource limits ---------------------------------------------------------------------------------------------

def test_too_few_open_files_is_the_limit_not_the_model(patched, tmp_path):
    """`ulimit -n 24`: OpenVINO could not load its frontend, "Cannot recognize input model — fix: change or remove
    that node before converting"."""
    before = digest(patched)
    code, lines = graphsurgery("convert", patched, "-o", tmp_path / "p.xml",
                               limits={resource.RLIMIT_NOFILE: (24, 24)})
    refused(code, lines, "ulimit -n", "24")
    assert digest(patched) == before and not list(tmp_path.iterdir())


def test_a_soft_open_files_limit_is_raised_to_what_the_command_needs(patched, tmp_path):
    """`ulimit -Sn 12` (the hard limit higher): the command raises its own soft limit and works (OpenVINO failed:
    "Can't open xml file", an internal error, or "Cannot recognize input model")."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 64:
        pytest.skip("this process's hard limit on open files is below 64")
    code, lines = graphsurgery("convert", patched, "-o", tmp_path / "p.xml",
                               limits={resource.RLIMIT_NOFILE: (12, hard)})
    assert code == 0, lines
    assert (tmp_path / "p.xml").exists() and (tmp_path / "p.bin").exists()


@pytest.mark.parametrize("command", ["apply", "convert"])
def test_a_file_size_limit_is_named_not_a_full_disk(plain, patched, tmp_path, command):
    """`ulimit -f 4`: "could not write the output (File too large) — fix: free disk space" (convert: "78,169,571,328
    bytes free there")."""
    args = ("apply", CROP, plain, "-o", tmp_path / "p.onnx") if command == "apply" else \
        ("convert", patched, "-o", tmp_path / "p.xml")
    before = digest(plain, patched)
    code, lines = graphsurgery(*args, limits={resource.RLIMIT_FSIZE: (4096, 4096)})
    refused(code, lines, "ulimit -f")
    assert "free disk space" not in lines[0] and "bytes free" not in lines[0]
    assert digest(plain, patched) == before and not list(tmp_path.iterdir())


#: OpenVINO's CPU plugin failing to load under an address-space limit, as it said under `ulimit -v 300000`
MAP_FAILED = """
import openvino
def compile_model(self, *args, **kwargs):
    raise RuntimeError('Exception from src/inference/src/cpp/core.cpp:112:\\nCannot load library "libopenvino_intel_'
                       'cpu_plugin.so": libopenvino_intel_cpu_plugin.so: failed to map segment from shared object')
openvino.Core.compile_model = compile_model
"""

#: an allocation failing under an address-space limit, where `run` decodes its image
ALLOCATION_FAILS = """
import cv2
def imread(*args, **kwargs):
    raise MemoryError
cv2.imread = imread
"""


@pytest.mark.parametrize("hook, backend", [(MAP_FAILED, "openvino"), (ALLOCATION_FAILS, "onnxruntime")])
def test_memory_under_a_memory_limit_is_the_limit(patched, tmp_path, hook, backend):
    """Under `ulimit -v`: OpenVINO's "failed to map segment" was the model's fault ("check the model with
    `graphsurgery inspect`"), a MemoryError "internal error (out of memory) — this is a graphsurgery bug"."""
    code, lines = graphsurgery("run", patched, PHOTO, "-o", tmp_path / "out", "--backend", backend, hook=hook,
                               limits={resource.RLIMIT_AS: (HUGE_AS, HUGE_AS)})
    refused(code, lines, "ulimit -v")
    assert not (tmp_path / "out").exists()


def test_a_small_file_is_read_without_allocating_its_cap(tmp_path):
    """eval-coco's annotation file (capped at 1 GiB) made Python allocate 1 GiB + 1 bytes to read 4 kB: a
    MemoryError, an internal error, under `ulimit -v 1000000`."""
    small = tmp_path / "ann.json"
    small.write_text("[]" * 2000)
    script = ("import resource, sys\nfrom graphsurgery.safeio import read_small_file\n"
              "resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))\n"
              "sys.exit(len(read_small_file(sys.argv[1], 1 << 30, 'annotation file')) != 4000)")
    done = subprocess.run([sys.executable, "-c", script, str(small)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]
    assert read_small_file(small, 4000, "annotation file") == small.read_bytes()


def test_the_cpu_time_limit_ends_the_command_in_one_line(tmp_path):
    """`ulimit -St 2`: SIGXCPU killed bench (exit 152, a core dump), its scratch folder in TMPDIR left behind."""
    from modelkit import pose_model

    plain = pose_model(tmp_path / "plain.onnx", opset=17, dynamic_batch=True)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    code, lines = graphsurgery("bench", CROP, plain, "--iterations", "100000", "--warmup", "1", "--threads", "1",
                               limits={resource.RLIMIT_CPU: (2, 60)}, env={"TMPDIR": str(scratch)})
    # bench's note on a long run (100,000 rounds) may come before
    refused(code, [line for line in lines if not line.startswith("note: 100,001 rounds")], "ulimit -t")  # round 29
    assert not list(scratch.iterdir())


# --- standard streams --------------------------------------------------------------------------------------------

def test_standard_error_closed_is_no_internal_error(patched, tmp_path):
    """`run … 2>&-`: an AttributeError on sys.stderr (None) as the image was decoded, exit 3."""
    code, _ = graphsurgery("run", patched, PHOTO, "-o", tmp_path / "out", "--backend", "onnxruntime",
                           stderr=None, close_stderr=True)
    assert code == 0
    assert (tmp_path / "out" / "keypoints.json").exists()


def test_an_error_line_into_a_full_standard_error_keeps_exit_2(tmp_path):
    """`inspect missing.onnx 2>/dev/full`: writing the error line failed and the OSError ended the process with
    exit 1, which scripts read as "no parity"."""
    with open("/dev/full", "wb") as full:
        code, _ = graphsurgery("inspect", tmp_path / "missing.onnx", stderr=full)
    assert code == 2


def test_standard_output_open_read_only_is_refused(patched):
    """`inspect m.onnx 1<&0` (stdin /dev/null): every write failed, "internal error (OSError: [Errno 9] Bad file
    descriptor)"."""
    with open(os.devnull, "rb") as read_only:
        code, lines = graphsurgery("inspect", patched, stdout=read_only)
    refused(code, lines, "standard output")


# --- variables the libraries read --------------------------------------------------------------------------------

def test_opencvs_pixel_limit_from_the_environment_is_named(patched, tmp_path):
    """OPENCV_IO_MAX_IMAGE_PIXELS=1: OpenCV's assertion "pixels <= CV_IO_MAX_IMAGE_PIXELS" was an internal error."""
    code, lines = graphsurgery("run", patched, PHOTO, "-o", tmp_path / "out", "--backend", "onnxruntime",
                               env={"OPENCV_IO_MAX_IMAGE_PIXELS": "1"})
    refused(code, lines, "OPENCV_IO_MAX_IMAGE_PIXELS", str(PHOTO))
    assert not (tmp_path / "out").exists()


#: a HOME this user cannot write (a container, a read-only file system; root can write anywhere else)
HOME_UNWRITABLE = """
real_access = os.access
def access(path, mode, *args, **kwargs):
    if str(path).startswith(os.environ["HOME"]) and mode & os.W_OK:
        return False
    return real_access(path, mode, *args, **kwargs)
os.access = access
"""


def test_openvinos_telemetry_is_quiet_in_an_unwritable_home(patched, tmp_path):
    """`convert` with a HOME the user cannot write printed "WARNING:root:Failed to create openvino_telemetry file"
    three to six times, and exit 0."""
    home = tmp_path / "home"
    home.mkdir()
    code, lines = graphsurgery("convert", patched, "-o", tmp_path / "p.xml", hook=HOME_UNWRITABLE,
                               env={"HOME": str(home)})
    assert code == 0 and lines == [], lines


def test_openvino_telemetry_sends_nothing():
    """Its messages went out from a forked child that urlopen kept waiting without a network; killed after a
    timeout, the child printed a traceback into `convert`'s stderr (once, in a clean-clone CI run)."""
    from openvino_telemetry.utils.sender import TelemetrySender

    from graphsurgery.limits import openvino_telemetry_off

    class Backend:
        sent: list = []

        def send(self, message):
            self.sent.append(message)

    openvino_telemetry_off()
    sender = TelemetrySender()
    sender.send(Backend(), {"event": "convert"})
    sender.executor.shutdown(wait=True)
    assert Backend.sent == []
