"""Hostile round 62: the commands run as a user other than root (every earlier round ran as root, where permissions
are not enforced), with detectors, `chain`, `convert --int8` and `bench`. What broke: a scratch folder another user
left in a shared folder (a dead process's, which this user may not remove) was reported "removed" on every command,
and stayed; and `run -o` into a sticky folder (/tmp) holding another user's earlier results failed with "cannot move
the results into the output folder (Operation not permitted) — fix: run the command again and leave the output folder
alone", which no run again ever mends; and `bench --json` (`--chart`, `verify --json`) over another user's file
in such a folder (`run -o` over its results) was refused only after the whole timing (every image).

The cases run in a child process that imports graphsurgery as root and then becomes `nobody`: the interpreter may lie
where another user cannot read it (a pyenv under /root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


@pytest.fixture
def shared() -> Path:
    """A sticky folder anyone may write in, as /tmp is, removed afterwards (pytest's tmp_path is root's only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to make another user's files and then run the case as nobody)")
    folder = Path(tempfile.mkdtemp(prefix="gs-shared-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder)


def as_nobody(script: str, folder: Path) -> subprocess.CompletedProcess:
    """`script` run after graphsurgery.safeio is imported (as root) and the process has become nobody."""
    prelude = ("import os, sys\nfrom pathlib import Path\nfrom graphsurgery import ownoutputs, safeio\n"
               "from graphsurgery.errors import GraphsurgeryError\n"
               f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n")
    return subprocess.run([sys.executable, "-c", prelude + script], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)


@pytest.mark.parametrize("name", [".pose.onnx.abcd1234", "graphsurgery-verify-abcd1234"])
def test_another_users_stale_scratch_folder_is_not_said_removed(shared, name):
    """Was: `note: removed …/.pose.onnx.abcd1234, left behind by process 999999, which was killed` on every command
    run by a user who may not remove it (root's, in a shared folder); the folder stayed."""
    stale = shared / name
    stale.mkdir()
    (stale / ".graphsurgery-owner").write_text("999999")  # no such process
    (stale / "patched.onnx").write_bytes(b"root's")
    prefix = "." if name.startswith(".") else "graphsurgery-"
    done = as_nobody(f"safeio._remove_stale(Path('.'), {prefix!r})\n", shared)
    assert done.returncode == 0, done.stderr
    assert "removed" not in done.stderr, done.stderr
    assert (stale / "patched.onnx").read_bytes() == b"root's"


@pytest.mark.parametrize("result", ["keypoints.json", "run.json"])
def test_results_over_another_users_in_a_sticky_folder_say_permissions(shared, result):
    """Was: "cannot move the results into the output folder (Operation not permitted) — fix: run the command again
    and leave the output folder alone until it ends" (`run -o /tmp/shared`, root's earlier results there)."""
    (shared / result).write_text("root's")
    done = as_nobody("try:\n"
                     "    with safeio.staged_folder(Path('.').resolve(), '.graphsurgery-run-') as stage:\n"
                     f"        (stage / {result!r}).write_text('new')\n"
                     "except GraphsurgeryError as exc:\n    print(exc)\n", shared)
    assert "Traceback" not in done.stderr, done.stderr
    assert "Operation not permitted" in done.stdout and "permissions" in done.stdout, done.stdout
    assert "run the command again" not in done.stdout, done.stdout
    assert (shared / result).read_text() == "root's"
    assert sorted(path.name for path in shared.iterdir()) == [result]


@pytest.mark.parametrize("check", ["safeio.check_report_path(Path('report.json'), [])",
                                   "safeio.check_folder_writable(Path('report.json'))",
                                   "ownoutputs.refuse_replacing(Path('.'), ['report.json'], safeio.InputFiles([]), "
                                   "{'report.json'}, 'fix')"])
def test_another_users_report_in_a_sticky_folder_is_refused_before_the_work(shared, check):
    """Was: `bench --json /tmp/report.json` (`--chart`, `verify --json`) over another user's file in a sticky folder
    passed the checks before the work (the folder is writable), ran the whole timing, then said "cannot write the
    file (Operation not permitted)"; `run -o` there (an earlier run's results, listed in its run.json) ran every
    image first."""
    (shared / "report.json").write_text("root's")
    done = as_nobody(f"try:\n    {check}\n    print('accepted')\n"
                     "except GraphsurgeryError as exc:\n    print(exc)\n", shared)
    assert "Traceback" not in done.stderr, done.stderr
    assert "another user's file in a sticky folder" in done.stdout, done.stdout
    assert (shared / "report.json").read_text() == "root's"


def test_verify_int8_of_a_model_without_a_static_size_names_the_way_that_exists(tmp_path):
    """Round 62's leftover: `verify --precision int8` of the detector recipe (an image of any size) said "fix it for
    int8 with --input-shape image=1,H,W,3", an option of convert's that verify does not have."""
    from clikit import invoke, one_line_exit_2

    from modelkit import zoo_model

    plain = zoo_model(tmp_path / "yolov8.onnx", "yolov8-tiny", opset=17)
    result = invoke("verify", ROOT / "recipes" / "yolov8_detector.yaml", plain, "--precision", "int8")
    one_line_exit_2(result, "'image' has no static size", "`graphsurgery convert --int8 --input-shape image=1,H,W,3`",
                    "--precision int8 --patched IR.xml")
    assert "fix it for int8 with" not in result.output


def test_convert_int8_names_an_input_shape_for_no_input(tmp_path):
    """Round 62's leftover: `convert --int8 --input-shape nope=…` on a model of any image size said the image input
    had no static size (the calibration read its dims first); plain `convert` named the unknown input."""
    from clikit import invoke, one_line_exit_2

    from modelkit import zoo_model

    plain = zoo_model(tmp_path / "yolov8.onnx", "yolov8-tiny", opset=17)
    patched = invoke("apply", ROOT / "recipes" / "yolov8_detector.yaml", plain, "-o", tmp_path / "p.onnx")
    assert patched.exit_code == 0, patched.output
    result = invoke("convert", tmp_path / "p.onnx", "-o", tmp_path / "p.xml", "--int8", "--calibration-random", "4",
                    "--input-shape", "nope=1,64,64,3")
    one_line_exit_2(result, "--input-shape names 'nope', which is not an input", "'image'")
    assert not (tmp_path / "p.xml").exists()


def test_a_missing_static_size_named_after_the_users_model_keeps_its_input():
    """verify names errors of its scratch copy after the user's model (`GraphsurgeryError.about`), rebuilding the
    error from its message: `NoStaticSize` takes the input's name too, and rebuilt without it was a TypeError."""
    from graphsurgery.quantize import NoStaticSize

    named = NoStaticSize("the input 'image' has no static size", path="/tmp/scratch/patched.onnx", fix="give one",
                         input_name="image").about("model.onnx")
    assert isinstance(named, NoStaticSize) and named.input_name == "image" and named.path == "model.onnx"
