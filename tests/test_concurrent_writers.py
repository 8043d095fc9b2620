"""Two commands writing one output at once (issue 17's leftover): the refusal of an existing output without --force
was decided when a command started, so two such commands started together both found the output free and the later
one's output silently replaced the earlier one's. It is now decided again as the outputs are placed, under the lock
of the folder (`safeio.placing`), and a new output is placed without replacing anything (`safeio.place`). The other
command is played by the test: its output appears while this one waits for the folder. Also the two error paths of
writing that had no test: a file system without locks, and a full $TMPDIR."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import tempfile
import time

import onnx
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery import safeio
from test_hostile_thirteenth_leftovers import folder_locked

from conftest import RECIPES, ROOT
from modelkit import pose_model

POSE = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
THEIRS = b"the other command's output"


@pytest.fixture
def external(tmp_path):
    """A model whose weights live in a data file beside it: `apply` writes `<out>.data` with its output."""
    folder = tmp_path / "model"
    folder.mkdir()
    path = pose_model(folder / "model.onnx")
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.data", size_threshold=0)
    return path


@pytest.fixture
def meanwhile(monkeypatch):
    """`meanwhile(action)`: `action()` runs once, when the command asks for the lock of the folder it places its
    outputs in, its start checks long passed: what another command placing the same outputs then would do."""

    def arrange(action):
        real, done = safeio._lock, []

        def lock(handle, folder):
            if not done:
                done.append(action())
            return real(handle, folder)

        monkeypatch.setattr(safeio, "_lock", lock)
        return done

    return arrange


def write(folder, names) -> dict:
    """The other command's files in `folder`; what they hold, by path."""
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(THEIRS + name.encode())
    return {folder / name: THEIRS + name.encode() for name in names}


def untouched(files: dict) -> bool:
    return all(path.read_bytes() == data for path, data in files.items())


def staging_left(*folders) -> list:
    return [path for folder in folders if folder.is_dir() for path in folder.iterdir() if path.name.startswith(".")]


# --- a command without --force refuses an output placed while it worked ---------------------------------------------

@pytest.mark.parametrize("theirs", [("m.onnx", "m.onnx.data"), ("m.onnx",), ("m.onnx.data",)])
def test_apply_refuses_an_output_placed_while_it_worked(external, tmp_path, meanwhile, theirs):
    out = tmp_path / "out"
    out.mkdir()
    other = {}
    meanwhile(lambda: other.update(write(out, theirs)))
    result = invoke("apply", POSE, external, "-o", out / "m.onnx")
    first = "the output exists" if "m.onnx" in theirs else "the output's data file m.onnx.data exists"
    one_line_exit_2(result, str(out / "m.onnx"), first, "--force")
    assert untouched(other)
    assert sorted(path.name for path in out.iterdir()) == sorted(theirs)  # none of its files beside theirs
    assert staging_left(out) == []


@pytest.mark.parametrize("theirs", [("m.xml", "m.bin"), ("m.bin",), ("m.xml",)])
def test_convert_refuses_an_ir_placed_while_it_worked(tiny_pose_models, tmp_path, meanwhile, theirs):
    out = tmp_path / "out"
    out.mkdir()
    other = {}
    meanwhile(lambda: other.update(write(out, theirs)))
    result = invoke("convert", tiny_pose_models[(17, False)], "-o", out / "m.xml")
    one_line_exit_2(result, str(out / theirs[0]), "the output exists", "--force")
    assert untouched(other)
    assert sorted(path.name for path in out.iterdir()) == sorted(theirs)  # no .xml beside their .bin
    assert staging_left(out) == []


@pytest.mark.parametrize("existed", [False, True], ids=["new-folder", "empty-folder"])
def test_run_refuses_a_file_put_in_its_results_folder_while_it_worked(patched, tmp_path, meanwhile, existed):
    """`run` replaces only what an earlier run wrote (its run.json says which); a file put there by another command
    while this one ran was judged before it existed and replaced."""
    results = tmp_path / "results"
    if existed:
        results.mkdir()
    other = {}
    meanwhile(lambda: other.update(write(results, ["keypoints.json"])))
    result = invoke("run", patched, PHOTO, "-o", results)
    one_line_exit_2(result, "keypoints.json", "is already there and is not the output of an earlier run")
    assert untouched(other)
    assert [path.name for path in results.iterdir()] == ["keypoints.json"]  # none of its results moved
    assert staging_left(tmp_path, results) == []


@pytest.mark.parametrize("command", ["apply", "convert"])
def test_with_force_the_later_output_replaces_the_earlier_one_as_before(external, tmp_path, meanwhile, command):
    out = tmp_path / "out"
    out.mkdir()
    names = {"apply": ("m.onnx", "m.onnx.data"), "convert": ("m.xml", "m.bin")}[command]
    meanwhile(lambda: write(out, names))
    args = {"apply": ["apply", POSE, external], "convert": ["convert", external]}[command]
    result = invoke(*args, "-o", out / names[0], "--force")
    assert result.exit_code == 0, result.output
    assert all(THEIRS not in (out / name).read_bytes() for name in names)
    assert staging_left(out) == []


@pytest.mark.parametrize("command", ["apply", "convert"])
def test_two_processes_one_output_the_later_is_refused(external, tmp_path, command):
    """The same across processes: the test holds the folder as another command placing there would, places its
    output, and lets go; the command, started before that output existed, is refused and leaves it whole."""
    out = tmp_path / "out"
    out.mkdir()
    names = {"apply": ("m.onnx", "m.onnx.data"), "convert": ("m.xml", "m.bin")}[command]
    args = {"apply": ["apply", POSE, external], "convert": ["convert", external]}[command]
    with folder_locked(out):
        process = subprocess.Popen([sys.executable, "-m", "graphsurgery", *map(str, args), "-o", str(out / names[0])],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not staging_left(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # its staging folder: its start checks are behind it
        assert process.poll() is None, process.communicate()
        other = write(out, names)
    stdout, stderr = process.communicate(timeout=120)
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert process.returncode == 2 and len(lines) == 1, stdout + stderr
    assert "the output exists" in lines[0] and "Traceback" not in lines[0]
    assert untouched(other)
    assert sorted(path.name for path in out.iterdir()) == sorted(names)


# --- safeio.place: never replaces without `replace` -----------------------------------------------------------------

def staged_pair(tmp_path):
    stage = tmp_path / ".stage"
    stage.mkdir()
    for name in ("m.onnx.data", "m.onnx"):
        (stage / name).write_bytes(b"ours")
    return [(stage / "m.onnx.data", tmp_path / "m.onnx.data"), (stage / "m.onnx", tmp_path / "m.onnx")]


def test_place_never_replaces_a_file_made_after_its_check(tmp_path, monkeypatch):
    """A writer that takes no lock makes the model between the check and the move: os.rename would replace it; the
    hard link fails, and the data file already placed is taken back."""
    moves = staged_pair(tmp_path)
    real_link = os.link

    def link(source, target, **kwargs):
        if target == tmp_path / "m.onnx":
            (tmp_path / "m.onnx").write_bytes(THEIRS)
        return real_link(source, target, **kwargs)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(FileExistsError) as raised:
        safeio.place(moves, replace=False)
    assert raised.value.filename == str(tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == THEIRS
    assert not (tmp_path / "m.onnx.data").exists()  # ours, placed first: no data file beside their model


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_place_without_hard_links_renames_what_it_checked(tmp_path, monkeypatch, code):
    """A file system without hard links (FAT, some FUSE mounts): checked, then renamed, still under the lock."""
    moves = staged_pair(tmp_path)

    def no_links(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_links)
    assert safeio.place(moves, replace=False) == [target for _, target in moves]
    assert all(target.read_bytes() == b"ours" and not staged.exists() for staged, target in moves)


# --- a file system without locks; a full $TMPDIR ----------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
@pytest.mark.parametrize("command", ["apply", "run"])
def test_a_file_system_without_locks_goes_unlocked(external, patched, tmp_path, monkeypatch, code, command):
    """flock fails on some network mounts (ENOLCK, EOPNOTSUPP): the outputs are placed all the same."""
    asked = []

    def no_locks(handle, operation):
        asked.append(operation)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    if command == "apply":
        result = invoke("apply", POSE, external, "-o", tmp_path / "m.onnx")
        assert result.exit_code == 0, result.output
        assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == ["m.onnx", "m.onnx.data"]
        onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    else:
        result = invoke("run", patched, PHOTO, "-o", tmp_path / "results")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "results" / "keypoints.json").is_file()
    assert asked  # it did try to lock
    assert staging_left(tmp_path) == []


def test_a_full_temporary_folder_is_one_line_naming_tmpdir(plain, tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    real_mkdtemp = tempfile.mkdtemp

    def full(*args, **kwargs):
        parent = kwargs.get("dir", args[2] if len(args) > 2 else None)
        if parent is not None and os.path.realpath(parent) == os.path.realpath(folder):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_mkdtemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    result = invoke("verify", POSE, plain, "--random", 1, "--backends", "onnxruntime")
    one_line_exit_2(result, "cannot create files in the temporary folder", os.strerror(errno.ENOSPC), str(folder),
                    "free disk space there or set TMPDIR to another folder")
    assert list(folder.iterdir()) == []
