"""Ctrl-C and SIGTERM end a command with 130 / 143 and one line, leaving no scratch folder and no partial output;
a scratch folder left by a killed process is removed by the next run that writes there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from graphsurgery.cli import cli
from graphsurgery.safeio import OWNER

from conftest import RECIPES

CROP = RECIPES / "hrnet_coco_pose.yaml"

#: Runs `graphsurgery apply` in a real process whose onnx.save_model sends the process a signal first: the signal
#: arrives while the output is being written, every time.
SCRIPT = """
import os, signal, sys
import onnx
real, which = onnx.save_model, getattr(signal, sys.argv[1])
def save(*args, **kwargs):
    os.kill(os.getpid(), which)
    return real(*args, **kwargs)
onnx.save_model = save
from graphsurgery.cli import main
sys.argv = ["graphsurgery", "apply", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("signal_name, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_mid_write_leaves_nothing_behind(tiny_pose_models, tmp_path, signal_name, code, word):
    out = tmp_path / "p.onnx"
    done = subprocess.run([sys.executable, "-c", SCRIPT, signal_name, str(CROP), str(tiny_pose_models[(17, False)]),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stderr.strip() == word and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no .p.onnx.* scratch folder


def test_a_scratch_folder_of_a_killed_process_is_removed_by_the_next_run(tiny_pose_models, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited: its pid names no live process (reuse aside)
    stale = tmp_path / ".p.onnx.abc123"
    stale.mkdir()
    (stale / OWNER).write_text(str(pid))
    (stale / "p.onnx").write_bytes(b"half a model")
    alive = tmp_path / ".p.onnx.live42"
    alive.mkdir()
    (alive / OWNER).write_text(str(os.getpid()))  # a live process's folder is left alone
    foreign = tmp_path / ".p.onnx.notours"
    foreign.mkdir()  # no owner file: not ours, left alone
    result = CliRunner().invoke(cli, ["apply", str(CROP), str(tiny_pose_models[(17, False)]),
                                      "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and alive.exists() and foreign.exists()
    assert f"removed {stale}, left behind by process {pid}" in result.output


def test_after_the_last_line_sigterm_stays_ignored_until_main_sees_the_exit(tmp_path, monkeypatch):
    """On the command line `_end` ignores SIGTERM once the command has said its last line; the group's `finally`
    set its own handler back, and a SIGTERM in the frames before `launch.main` saw the exit was a traceback of
    Terminated after the line (seen under load in CI: test_hostile_fortyfourth's slow-exit case)."""
    import signal

    from graphsurgery import launch

    monkeypatch.setattr(launch, "_command_line", True)
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as ended:
            cli.main(["inspect", str(tmp_path / "none.onnx")], prog_name="graphsurgery")
        assert ended.value.code == 2
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
