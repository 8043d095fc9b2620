"""Round 26's leftovers in the entry point (`graphsurgery.launch`) and its supervisor: the command's first moments.

Under `ulimit -v 100000` OpenBLAS ended the process from C while numpy loaded ("Memory allocation still failed",
exit 1: the parity-failure code, with no line of ours); under `ulimit -v 150000` the import failed with a traceback,
exit 1; under `ulimit -u 2` OpenBLAS could not start its threads and numpy raised SIGINT ("interrupted", 130). A
crash under a memory limit (cv2's import, SIGSEGV under `ulimit -v 500000`) blamed the model, and the system's
loader giving up (exit 127, "cannot allocate memory for thread-local data") left the scratch folders and no line.

Each is made here without the limit itself (its threshold differs between machines): a stand-in numpy, first on
the path, does in a command's real entry point what the library did.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: the command line's entry point, after `setup`, as the console script calls it
ENTRY = """
import os, resource, signal, sys
sys.argv = ["graphsurgery", "steps"]
{setup}
from graphsurgery.launch import main
main()
"""
#: a limit that holds nothing back on this machine but is set, as `ulimit -v` sets it
SET_BUT_HARMLESS = "resource.setrlimit(resource.RLIMIT_AS, (2**44, 2**44))"


def _command(tmp_path: Path, numpy_does: str | None, setup: str = "") -> subprocess.CompletedProcess:
    """The command `steps`, after `setup`, with a stand-in numpy doing `numpy_does` (None: the real numpy)."""
    path = [str(ROOT)]
    if numpy_does is not None:
        fake = tmp_path / "fake"
        (fake / "numpy").mkdir(parents=True)
        (fake / "numpy" / "__init__.py").write_text(f"import os, signal\n{numpy_does}\n")
        path.insert(0, str(fake))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run([sys.executable, "-c", ENTRY.format(setup=setup)], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize("code", [1, 127])
def test_a_library_ending_the_process_while_it_loads_is_one_line_exit_2(tmp_path, code):
    result = _command(tmp_path, f"os._exit({code})")
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the command's process ended abruptly (exit {code}) "
                                                   "while graphsurgery was loading its libraries"), result.stderr
    assert "ulimit -v" not in lines[0]  # no limit set: not blamed on one


def test_a_library_ending_the_process_under_a_memory_limit_names_the_limit(tmp_path):
    result = _command(tmp_path, "os._exit(1)", SET_BUT_HARMLESS)
    assert result.returncode == 2 and "memory limit of 16,777,216 MiB (ulimit -v) is the likely cause" in \
        result.stderr, result


@pytest.mark.parametrize("limited", [False, True])
def test_a_crash_under_a_memory_limit_names_the_limit(tmp_path, limited):
    result = _command(tmp_path, "os.kill(os.getpid(), signal.SIGSEGV)", SET_BUT_HARMLESS if limited else "")
    assert result.returncode == 2, result
    assert "crashed in native code (SIGSEGV" in result.stderr
    assert ("ulimit -v" in result.stderr) is limited  # without a limit the model stays the suspect
    assert "holds values this code cannot take" in result.stderr


def test_an_import_failing_under_a_memory_limit_is_one_line(tmp_path):
    result = _command(tmp_path, 'raise ImportError("failed to map segment from shared object")', SET_BUT_HARMLESS)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "error: graphsurgery's libraries could not be loaded under the process's memory limit of 16,777,216 MiB "
        "(ulimit -v) (ImportError) — fix: raise the limit (`ulimit -v unlimited`) and run the command again"]


def test_a_process_limit_too_small_is_refused_before_numpy_loads(tmp_path):
    """The stand-in numpy ends the process: the refusal must come first."""
    setup = ("import graphsurgery.limits as limits\n"
             "limits.process_limit = lambda: 2\n"
             "def refused(*args):\n"
             "    raise ValueError('not allowed to raise maximum limit')\n"
             "resource.setrlimit = refused\n")
    result = _command(tmp_path, "os._exit(1)", setup)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "error: the user may run only 2 processes and threads (ulimit -u), fewer than the 16 graphsurgery and its "
        "runtimes need — fix: raise the limit (`ulimit -u 4096`) and run the command again"]


#: after the libraries loaded, while the command runs: a scratch folder made, then the process ended from C
AFTER_LOADING = """
import click
def ended(self, ctx):
    from graphsurgery.safeio import temporary_folder
    temporary_folder("stand-in").__enter__()
    {ending}
click.Group.invoke = ended
"""


@pytest.mark.parametrize("ending, line", [
    ("os._exit(127)", "error: the command's process ended abruptly (exit 127) — fix: the process's memory limit"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "error: the command was killed (SIGKILL, Killed), by the system "
                                             "running out of memory or by another process — fix: free memory")])
def test_an_end_from_native_code_while_the_command_runs_removes_its_scratch_folder(tmp_path, monkeypatch, ending,
                                                                                  line):
    """The system's loader giving up (exit 127) or a kill (SIGKILL), under a memory limit: one line, naming the
    limit for the loader (the limit refuses allocations; it kills nobody: a SIGKILL is not blamed on it), exit 2,
    and the scratch folder the command had made removed (the loader's exit left it)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    result = _command(tmp_path, None, SET_BUT_HARMLESS + AFTER_LOADING.format(ending=ending))
    assert result.returncode == 2, result
    assert result.stderr.startswith(line) and len(result.stderr.splitlines()) == 1, result.stderr
    assert list(scratch.iterdir()) == []
