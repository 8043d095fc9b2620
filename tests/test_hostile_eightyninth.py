"""An eighty-ninth round of hostile inputs, aimed at the newest commands and options (`chain`, `eval-coco`, `bench
--chart/--json`, `convert --int8`, `verify --reference` and `--reference-pipeline`, `run --boxes`, the Python API).

Found: a `--reference-pipeline` function (or its module, as it was imported) that ended the process itself,
`os._exit(0)`, made `verify` exit 0 with no line, having compared nothing (a script reads a PASS), and `os._exit(1)`
a silent "parity failure"; one whose atexit handler called `os._exit(0)` turned a FAIL into exit 0; a pipeline that
ran out of memory (MemoryError) was "internal error (out of memory) — this is a graphsurgery bug", exit 3, and a
MemoryError out of the API, and a pipeline object was named by its own `__repr__`, whose exception came out of
verify. Each is now one line naming the function, exit 2 (`supervisor.users_code`, `callables.call_user`), a FAIL
stays exit 1, and the user's code is still not timed as a native step (its long-run note no longer says it is).

Closed after the round: a non-daemon thread the pipeline left running kept verify alive for ever after its last line
(it ends with the command now, `launch._lingering_threads`), and one of its threads ending the process after the
function returned, before the last line, was still a silent exit 0 (`supervisor.users_code_ran`: one line, exit 2).
An option that keeps one value given twice (`chain --check a.jpg --check b.jpg`) kept the last silently: refused.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import graphsurgery
from graphsurgery.errors import GraphsurgeryError

from conftest import RECIPES

CROP = RECIPES / "hrnet_coco_pose.yaml"

PIPELINE = '''
import os, time
import numpy as np

def exits_0(feeds):
    os._exit(0)

def exits_1(feeds):
    os._exit(1)

def out_of_memory(feeds):
    raise MemoryError

def wrong_then_exit_0_at_exit(feeds):
    import atexit
    atexit.register(os._exit, 0)
    count = len(feeds["input"])
    return {"keypoints": np.zeros((count, 17, 2), np.float32), "scores": np.zeros((count, 17, 1), np.float32)}

def closes_standard_output(feeds):
    os.close(1)
    return answers(feeds)

def closes_sys_stdout(feeds):
    import sys
    sys.stdout.close()
    return answers(feeds)

def answers(feeds):
    count = len(feeds["input"])
    return {"keypoints": np.zeros((count, 17, 2), np.float32), "scores": np.zeros((count, 17, 1), np.float32)}

def slow(feeds):
    time.sleep(2.5)
    raise ValueError("slow but done")

def leaves_a_thread_running(feeds):
    import threading
    threading.Thread(target=threading.Event().wait, name="never ends").start()
    return answers(feeds)

def thread_ends_the_process_before_the_last_line(feeds):
    import threading
    from graphsurgery import reference
    compared = threading.Event()
    threading.Thread(target=lambda: (compared.wait(), os._exit(0)), daemon=True).start()

    def compare(*args, **kwargs):  # verify compares: the thread ends the process meanwhile
        compared.set()
        time.sleep(60)

    reference.compare = compare
    return answers(feeds)
'''


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_with(folder: Path, plain: Path, patched: Path, pipeline: str, **env) -> subprocess.CompletedProcess:
    """The CLI as a user runs it (its own process, watched by the supervisor), from `folder`, which holds the
    user's module."""
    temporary = folder / "tmp"
    temporary.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "graphsurgery", "verify", str(CROP), str(plain), "--patched",
                           str(patched), "--random", "1", "--backends", "onnxruntime", "--reference-pipeline",
                           pipeline], cwd=folder, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(temporary), **env})


@pytest.fixture
def user_folder(tmp_path) -> Path:
    (tmp_path / "userpipeline.py").write_text(PIPELINE)
    return tmp_path


@pytest.mark.parametrize("function, code", [("exits_0", 0), ("exits_1", 1)])
def test_a_pipeline_that_ends_the_process_is_one_line_not_a_silent_exit(user_folder, plain, patched, function, code):
    """Was: exit 0 (or 1) and nothing on either stream: `verify … && deploy` deployed an unverified model."""
    before = digest(patched)
    done = verify_with(user_folder, plain, patched, f"userpipeline:{function}")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stdout, done.stderr)
    for needle in (f"ended (exit {code})", "the reference pipeline", f"userpipeline:{function}", "fix:"):
        assert needle in lines[0], lines[0]
    assert "PASS" not in done.stdout and digest(patched) == before
    assert not list((user_folder / "tmp").iterdir())  # the scratch folder went with it


def test_a_failure_said_stays_a_failure_whatever_the_users_code_does_at_exit(user_folder, plain, patched):
    """Was: "FAIL: …", then exit 0: the pipeline's atexit handler ended the process with os._exit(0)."""
    done = verify_with(user_folder, plain, patched, "userpipeline:wrong_then_exit_0_at_exit")
    assert done.returncode == 1 and "FAIL" in done.stdout, (done.returncode, done.stdout, done.stderr)


def test_a_module_that_ends_the_process_as_it_is_imported_is_one_line(tmp_path, plain, patched):
    (tmp_path / "exitsonimport.py").write_text("import os\nos._exit(0)\n")
    done = verify_with(tmp_path, plain, patched, "exitsonimport:answers")
    assert done.returncode == 2 and "importing exitsonimport" in done.stderr, (done.returncode, done.stderr)
    assert len(done.stderr.splitlines()) == 1


def test_a_pipeline_out_of_memory_is_the_users_one_line(user_folder, plain, patched):
    """Was: "internal error (out of memory) — this is a graphsurgery bug", exit 3."""
    done = verify_with(user_folder, plain, patched, "userpipeline:out_of_memory")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert "userpipeline:out_of_memory ran out of memory" in lines[0] and "internal error" not in lines[0]


def test_a_pipeline_out_of_memory_through_the_api_is_a_graphsurgery_error(plain, patched):
    def hungry(feeds):
        raise MemoryError

    with pytest.raises(GraphsurgeryError, match="the reference pipeline .*hungry ran out of memory"):
        graphsurgery.verify(CROP, plain, patched=patched, reference_pipeline=hungry, random=1,
                            backends=["onnxruntime"])


def test_the_users_code_is_not_timed_as_a_step_in_native_code(user_folder, plain, patched):
    """The pipeline's own time is the user's: a 2.5 s pipeline under a 1 s step limit runs to its end."""
    done = verify_with(user_folder, plain, patched, "userpipeline:slow", GRAPHSURGERY_TIME_LIMIT="1")
    assert done.returncode == 2 and "raised ValueError: slow but done" in done.stderr, done.stderr


def test_a_pipeline_object_is_named_by_its_type_not_its_str(plain, patched):
    """Was: the object's own `__repr__` was called to name it, and its ZeroDivisionError came out of verify."""
    class Pipeline:
        def __call__(self, feeds):
            raise MemoryError

        def __repr__(self):
            return str(1 / 0)

    with pytest.raises(GraphsurgeryError, match="Pipeline ran out of memory"):
        graphsurgery.verify(CROP, plain, patched=patched, reference_pipeline=Pipeline(), random=1,
                            backends=["onnxruntime"])


def test_the_note_on_a_long_run_in_the_users_code_promises_no_time_limit():
    """Was: "not stuck: each step is stopped after 30 s" while a pipeline that never returns ran on untimed."""
    from graphsurgery.supervisor import USERS_CODE, _long_run_line

    line = _long_run_line(61, f"{USERS_CODE}the reference pipeline (--reference-pipeline) m:f", 30)
    assert "m:f" in line and "no time limit" in line and "not stuck" not in line
    assert "not stuck" in _long_run_line(61, "OpenVINO runs m.xml", 30)


@pytest.mark.parametrize("function", ["closes_standard_output", "closes_sys_stdout"])
def test_a_pipeline_that_closes_standard_output_is_the_users_one_line(user_folder, plain, patched, function):
    """Was: the report failed to print, "internal error (OSError: [Errno 9] Bad file descriptor)", exit 3."""
    done = verify_with(user_folder, plain, patched, f"userpipeline:{function}")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert f"userpipeline:{function} closed standard output" in lines[0] and "fix:" in lines[0]


def test_a_thread_the_pipeline_leaves_running_ends_with_the_command(user_folder, plain, patched):
    """Was: "FAIL: …" on stdout, then no exit: Python's shutdown waited for the thread (the run was killed at the
    test's timeout)."""
    done = verify_with(user_folder, plain, patched, "userpipeline:leaves_a_thread_running")
    assert done.returncode == 1 and "FAIL" in done.stdout, (done.returncode, done.stdout, done.stderr)
    assert not list((user_folder / "tmp").iterdir())


def test_a_thread_of_the_pipeline_that_ends_the_process_before_the_last_line_is_one_line(user_folder, plain,
                                                                                           patched):
    """Was: exit 0 and nothing on either stream, nothing compared (the function itself had returned)."""
    done = verify_with(user_folder, plain, patched, "userpipeline:thread_ends_the_process_before_the_last_line")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stdout, done.stderr)
    for needle in ("ended (exit 0) before the command finished", "after running the user's code", "fix:"):
        assert needle in lines[0], lines[0]
    assert "PASS" not in done.stdout
    assert not list((user_folder / "tmp").iterdir())


@pytest.mark.parametrize("args, option", [
    (["verify", CROP, "m.onnx", "--random", "2", "--random", "3"], "--random"),
    (["chain", "d.onnx", "p.onnx", "--check", "a.jpg", "--check=b.jpg"], "--check"),
    (["apply", CROP, "m.onnx", "-o", "a.onnx", "--output", "b.onnx"], "-o/--output"),
])
def test_an_option_of_one_value_given_twice_is_refused(tmp_path, monkeypatch, args, option):
    """Was: the last one used, silently (click's rule), so `--patched a.onnx … --patched b.onnx` checked b alone."""
    from clikit import invoke, one_line_exit_2

    monkeypatch.chdir(tmp_path)
    one_line_exit_2(invoke(*args), option, "given more than once", "give it once")


@pytest.mark.parametrize("args", [["verify", CROP, "m.onnx", "--tolerance", "a=1", "--tolerance", "b=2"],
                                  ["apply", CROP, "m.onnx", "--force", "--force"]], ids=["collects", "flag"])
def test_options_that_collect_and_plain_flags_may_repeat(tmp_path, monkeypatch, args):
    from clikit import invoke, one_line_exit_2

    monkeypatch.chdir(tmp_path)
    one_line_exit_2(invoke(*args), "m.onnx: no such model file")


def test_help_asked_with_an_option_given_twice_is_shown():
    """Round 91's leftover: `verify -h --random 1 --random 2` was refused for the repeat instead of showing help."""
    from clikit import invoke

    shown = invoke("verify", "-h", "--random", "1", "--random", "2")
    assert shown.exit_code == 0 and shown.output.startswith("Usage: ") and "verify [OPTIONS]" in shown.output, \
        shown.output
