"""A twenty-fourth round of hostile inputs: every option that writes (apply -o, convert -o/--ovms/--int8, verify
--json, bench --json/--chart, eval-coco --json/--results, run -o, chain -o, examples/hrnet/export.py -o) against
every way of naming a file the command reads or a file that is not a plain new one (the same path, ./x, a/../x, a
symlink, a symlink to the folder, a hard link, a trailing or double slash, /proc/self/fd/N, /dev/fd/N, /dev/stdout
onto an input, a folder, a FIFO, a socket, a character device, a dangling symlink, a symlink loop, a read-only file,
a read-only folder, an immutable file; with and without --force: ~1,000 cases), and signals (SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGPIPE, SIGUSR1 to the process and SIGINT/SIGTERM to its group, at 8 moments of apply, verify, convert,
convert --int8, run, bench, eval-coco and chain: ~500 cases), standard output on a closed pipe and /dev/full,
standard input closed (/tmp/r24 in the round's report).

Found: SIGHUP, SIGQUIT or SIGUSR1 (passed on to the command by the supervisor, and killing it at once) between the
renames that put one output in place left the new external-data file beside the old model (`apply --force`), a new
.bin beside the old .xml (`convert --force`), or half of a set of results: only Ctrl-C and SIGTERM were held back
while outputs were placed. `graphsurgery --help` or `--version` into a full standard output (`> /dev/full`) was a
traceback and exit 1 (a command's own --help said one line, exit 2), and into a closed pipe exit 1, not 141.
`bench --json --chart` interrupted while it drew the chart left the JSON report of an "interrupted" command. An
immutable output (`chattr +i`) was "fix: free disk space". `bench --chart` at a symlink loop replaced it, where
`--json` refuses it. `convert --ovms FILE` said the folder "does not exist — fix: create FILE first". Held: no
input was ever modified, no non-regular file replaced, no scratch folder or process left behind."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from graphsurgery import chart, safeio
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.irconvert import ovms_path

from conftest import RECIPES
from modelkit import pose_model

#: a place() of two outputs (a data file, then its model) with a SIGHUP sent between the two renames, as a closed
#: terminal or `kill -HUP` does; run in its own process, which the signal ends
_HUP_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from graphsurgery import safeio
folder = Path(sys.argv[1])
moves = []
for name in ("m.onnx.data", "m.onnx"):
    (folder / ("staged-" + name)).write_text("new")
    (folder / name).write_text("old")
    moves.append((folder / ("staged-" + name), folder / name))
rename = os.replace
def rename_then_hang_up(source, target):
    rename(source, target)
    os.kill(os.getpid(), signal.SIGHUP)
safeio.os.replace = rename_then_hang_up  # this process only, which ends here
with safeio.placing(folder):
    safeio.place(moves, replace=True)
"""


def test_a_hangup_between_the_renames_of_one_output_waits_for_them(tmp_path):
    """`kill -HUP` between the renames of `apply -o m.onnx --force` (model and data file) left the new data file
    beside the old model: SIGHUP killed the command at once, where Ctrl-C and SIGTERM are held until the output is
    in place. Now it is held too, then ends the process as before, with the output whole."""
    done = subprocess.run([sys.executable, "-c", _HUP_BETWEEN_RENAMES, str(tmp_path)], capture_output=True,
                          timeout=60)
    assert done.returncode == -signal.SIGHUP  # still ended by the signal, after the renames
    assert (tmp_path / "m.onnx.data").read_text() == (tmp_path / "m.onnx").read_text() == "new"


def test_bench_interrupted_while_drawing_its_chart_leaves_no_json_report(tmp_path, monkeypatch):
    """`bench --json b.json --chart b.png`: a Ctrl-C while the chart was drawn (a second of matplotlib, after the
    timing) came after b.json was written: "interrupted", exit 130, and a report beside no chart."""
    def interrupted(result, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(chart, "write_chart", interrupted)
    model = pose_model(tmp_path / "pose.onnx", opset=17, dynamic_batch=False)
    done = CliRunner().invoke(cli, ["bench", str(RECIPES / "hrnet_coco_pose.yaml"), str(model), "--iterations", "1",
                                    "--warmup", "0", "--threads", "1", "--json", str(tmp_path / "b.json"),
                                    "--chart", str(tmp_path / "b.png")])
    assert done.exit_code == 130, done.output
    assert not (tmp_path / "b.json").exists()


def test_an_output_that_may_not_be_replaced_is_not_blamed_on_the_disk(tmp_path, monkeypatch):
    """`apply -o imm.onnx --force` or `convert --force` onto an immutable file (`chattr +i`, which refuses root too):
    "could not write the output (Operation not permitted) — fix: free disk space", on a disk with room; `verify
    --json` onto one said "choose a writable path (the folder must exist)", and the folder existed."""
    def refused(source, target):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(target))

    monkeypatch.setattr(safeio.os, "replace", refused)  # what the rename onto an immutable file does
    with pytest.raises(GraphsurgeryError) as raised:
        safeio.write_text_atomically(tmp_path / "report.json", "{}")
    assert "disk" not in str(raised.value) and "immutable" in str(raised.value)


def test_a_chart_at_a_symlink_loop_is_refused_and_the_link_kept(tmp_path):
    """`bench --chart loop.png` replaced a link that leads back to itself (it "does not exist"), where `--json loop`
    refuses it: a chart has no --force either. Refused before the timing."""
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop.name)
    model = pose_model(tmp_path / "pose.onnx", opset=17, dynamic_batch=False)
    done = CliRunner().invoke(cli, ["bench", str(RECIPES / "hrnet_coco_pose.yaml"), str(model), "--iterations", "1",
                                    "--warmup", "0", "--chart", str(loop)])
    assert done.exit_code == 2 and "symlink loop" in done.output, done.output
    assert loop.is_symlink() and str(loop.readlink()) == loop.name


def test_an_ovms_repository_that_is_a_file_is_not_called_missing(tmp_path):
    """`convert m.onnx --ovms m.onnx`: "the OVMS repository folder does not exist — fix: create m.onnx first", of
    a file that exists (and is the input)."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(GraphsurgeryError) as raised:
        ovms_path(model, "m")
    assert "not a folder" in str(raised.value) and "does not exist" not in str(raised.value)


def _graphsurgery(*args: str, stdout) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphsurgery", *args], stdout=stdout, stderr=subprocess.PIPE,
                          timeout=60)


def test_the_groups_help_and_version_into_a_full_standard_output_say_one_line():
    """`graphsurgery --help > /dev/full` was a traceback (OSError from click's echo, written while the group's
    options were parsed, outside the command's handling) and exit 1, the parity-failure code."""
    for option in ("--help", "--version"):
        with open("/dev/full", "wb") as full:
            done = _graphsurgery(option, stdout=full)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2, lines
        assert len(lines) == 1 and "No space left on device" in lines[0], lines


def test_the_groups_help_into_a_closed_pipe_exits_as_a_broken_pipe():
    """`graphsurgery --help | …` whose reader has gone: exit 1, where every command's output exits 141 (SIGPIPE)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = _graphsurgery("--help", stdout=writer)
    finally:
        os.close(writer)
    assert done.returncode == 128 + signal.SIGPIPE
    assert b"Traceback" not in done.stderr
