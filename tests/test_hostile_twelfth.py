"""A twelfth round of hostile or careless inputs (a red-team run of signals at random moments and at known points, files
replaced while a command runs, odd file names and the Python API's argument types). Found: Ctrl-C or SIGTERM between
the two renames that place an IR left a new `.bin` beside the old `.xml` (`convert --force`); a report (`verify
--json`, `bench --json`) killed while written left its temporary file for good, and `run` killed while it moved its
results into a new folder left half of them there (the next run then refused the folder) and its scratch folder
beside it, where no later run looked; a recipe, image or model replaced by a FIFO after its checks blocked the
command for ever, an image replaced after its header was judged was decoded unchecked, and a model replaced between
its reading and the checker was used unchecked; a folder not named in UTF-8 made `verify --json` and `convert --int8
--calibration` internal errors, and `convert` in a folder deeper than the system's path limit too (a UTF-8 name read
as ASCII under LC_ALL=C was told to be renamed to UTF-8); the Python API let an os.PathLike whose `__fspath__` raises
or returns bytes, a NUL in a path, numpy's scalars (into run.json and the chain's provenance), an int too large for a
float as a tolerance and bench settings of the wrong type (or 10^12 rounds, which ran for ever) through to deep
inside. Each is now one line and exit 2 (or works), with no input changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.safeio import OWNER

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def in_process(hook: str, *args, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """`graphsurgery ARGS` in a process of its own, after `hook` (Python source) has run in it."""
    script = f"import os, signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n{hook}\n" \
             "from graphsurgery.cli import main\nsys.argv = ['graphsurgery', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


# --- signals and kills at known points ---------------------------------------------------------------------------

#: the signal is sent just after the .bin is placed, before the .xml is
AFTER_THE_BIN = """
real = os.replace
def replace(source, target, *args, **kwargs):
    placed = real(source, target, *args, **kwargs)
    if str(target).endswith(".bin"):
        os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    return placed
os.replace = replace
"""


@pytest.mark.parametrize("name, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_between_the_irs_two_renames_leaves_a_whole_ir(patched, tmp_path, name, code, word):
    """`convert --force` over an FP16 IR: the new FP32 .bin was placed, the .xml stayed the FP16 one's."""
    out = tmp_path / "p.xml"
    assert invoke("convert", patched, "-o", out, "--fp16").exit_code == 0
    fp16 = digest(out, out.with_suffix(".bin"))
    done = in_process(AFTER_THE_BIN, "convert", patched, "-o", out, "--force", env={"SIGNAL": name})
    assert done.returncode == code and done.stderr.strip() == word, done.stderr
    now = digest(out, out.with_suffix(".bin"))
    assert all(now[path] != fp16[path] for path in now), "the .xml of one conversion beside the .bin of another"


#: SIGKILL just before the report is renamed into place
KILLED_AT_THE_REPORT = """
real = os.replace
def replace(source, target, *args, **kwargs):
    if str(target).endswith("v.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(source, target, *args, **kwargs)
os.replace = replace
"""


def test_a_report_killed_while_written_is_cleaned_by_the_next_run(plain, tmp_path):
    """A bare temporary file (`.v.json.x1y2.json`) stayed for good: it names no process, so no run removed it."""
    args = ["verify", CROP, plain, "--random", 1, "--backends", "onnxruntime", "--json", tmp_path / "v.json"]
    killed = in_process(KILLED_AT_THE_REPORT, *args)
    assert killed.returncode == -9 and not (tmp_path / "v.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".v.json.")]  # left by the kill
    result = invoke(*args)
    assert result.exit_code == 0 and "left behind by process" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]
    json.loads((tmp_path / "v.json").read_text())


#: SIGKILL once `run` has moved its first result into the results folder
KILLED_AMONG_THE_RESULTS = """
real, moved = os.replace, []
def replace(source, target, *args, **kwargs):
    placed = real(source, target, *args, **kwargs)
    if os.path.basename(os.path.dirname(str(target))) == "results":
        os.kill(os.getpid(), signal.SIGKILL)
    return placed
os.replace = replace
"""


def test_run_killed_while_placing_a_new_results_folder_leaves_all_or_nothing(patched, tmp_path):
    """The results moved one by one into the new folder: a kill left one of them there (the next run then refused
    the folder, "not the output of an earlier run") and the scratch folder beside it, where no run looked."""
    out = tmp_path / "results"
    args = ["run", patched, PHOTO, "-o", out, "--backend", "onnxruntime"]
    in_process(KILLED_AMONG_THE_RESULTS, *args)
    if out.exists():  # all of them, or no folder
        listed = json.loads((out / "run.json").read_text())
        assert {Path(listed["keypoints"]).name, "run.json"} <= {p.name for p in out.iterdir()}
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["results"]  # no scratch folder left anywhere


def test_a_scratch_folder_beside_an_existing_results_folder_is_removed(patched, tmp_path):
    """A run killed while its results folder did not exist yet stages beside it; once the folder exists, later runs
    stage inside it and never looked beside it."""
    out = tmp_path / "results"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".graphsurgery-run-abc123"
    stale.mkdir()
    (stale / OWNER).write_text(dead.stdout.strip())
    result = invoke("run", patched, PHOTO, "-o", out, "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and f"removed {stale}" in result.output


# --- files replaced while the command runs -----------------------------------------------------------------------

@pytest.mark.parametrize("reader", ["recipe", "image", "model"])
def test_an_input_replaced_by_a_fifo_after_its_checks_is_refused_at_once(plain, fifo_after_the_checks, reader):
    """open() of a FIFO waits for a writer: the command blocked for ever (the checks had passed on the file the
    FIFO replaced)."""
    from graphsurgery.images import read_image
    from graphsurgery.modelio import load_model
    from graphsurgery.recipe import load_recipe

    read, like, name = {"recipe": (load_recipe, CROP, "r.yaml"), "image": (read_image, PHOTO, "a.jpg"),
                        "model": (load_model, plain, "m.onnx")}[reader]
    path = fifo_after_the_checks(name, like)
    with pytest.raises(GraphsurgeryError, match="is not a regular file"):  # (blocked, it reads nothing after 5 s)
        read(path)


def test_an_image_replaced_after_its_header_is_checked_is_not_decoded(tmp_path, monkeypatch):
    """OpenCV decoded the file by its name: what replaced the judged file was decoded unchecked (any size, any
    format)."""
    from graphsurgery.images import read_image

    image = tmp_path / "a.jpg"
    image.write_bytes(PHOTO.read_bytes())
    other = tmp_path / "other.png"
    other.write_bytes(cv2.imencode(".png", np.zeros((20, 10, 3), np.uint8))[1].tobytes())
    real = cv2.imread

    def swapped(name, *args):
        os.replace(other, image)
        return real(name, *args)

    monkeypatch.setattr(cv2, "imread", swapped)
    assert read_image(image).shape == (512, 512, 3)


def test_a_model_replaced_while_it_is_read_is_refused(plain, tmp_path, monkeypatch):
    """The checker reads by path: a valid model put in place of an invalid one after it was read passed the check,
    and the unchecked, invalid one was used."""
    import onnx

    from graphsurgery.modelio import load_model

    model = tmp_path / "m.onnx"
    invalid = onnx.load(str(plain))
    invalid.graph.node[0].op_type = "NoSuchOp"
    onnx.save(invalid, str(model))
    real = onnx.checker.check_model

    def replaced(checked, *args, **kwargs):
        if str(checked) == str(model):
            (tmp_path / "valid.onnx").write_bytes(plain.read_bytes())
            os.replace(tmp_path / "valid.onnx", model)
        return real(checked, *args, **kwargs)

    monkeypatch.setattr(onnx.checker, "check_model", replaced)
    with pytest.raises(GraphsurgeryError, match="the model file changed while it was read"):
        load_model(model)


# --- file names --------------------------------------------------------------------------------------------------

@pytest.fixture
def undecodable_images(tmp_path) -> Path:
    """A folder of images whose name is not UTF-8 (b'im\\xff')."""
    folder = tmp_path / os.fsdecode(b"im\xff")
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO.read_bytes())
    return folder


def test_a_report_naming_a_folder_that_is_not_utf8_is_written(plain, undecodable_images, tmp_path):
    """verify --json was an internal error (UnicodeEncodeError: surrogates not allowed)."""
    report = tmp_path / "v.json"
    done = in_process("", "verify", CROP, plain, "--images", undecodable_images, "--backends", "onnxruntime",
                      "--json", report)  # (the real console: it shows the name escaped)
    assert done.returncode == 0, done.stderr
    assert "im\\udcff" in report.read_text(encoding="utf-8")  # JSON's escape: it reads back as the folder's name
    assert os.fsdecode(b"im\xff") in json.dumps(json.loads(report.read_text()), ensure_ascii=False)


def test_int8_calibration_in_a_folder_that_is_not_utf8(patched, undecodable_images, tmp_path):
    """OpenVINO's rt_info took the folder's name: 'Unable to cast Python instance of type str', an internal error."""
    done = in_process("", "convert", patched, "-o", tmp_path / "p.xml", "--int8", "--calibration", undecodable_images)
    assert done.returncode == 0 and (tmp_path / "p.xml").exists(), done.stderr


def test_convert_in_a_folder_deeper_than_the_path_limit_is_one_line(patched, tmp_path, monkeypatch):
    """OpenVINO's writer: 'filesystem error: cannot make canonical path: File name too long', an internal error."""
    monkeypatch.chdir(tmp_path)
    for _ in range(40):  # 40 × 121 bytes: beyond PATH_MAX (4096), reached one folder at a time
        os.mkdir("d" * 120)
        os.chdir("d" * 120)
    one_line_exit_2(invoke("convert", patched, "-o", "p.xml"), "could not write the IR", "shorter path")
    assert os.listdir(".") == []


def test_a_utf8_name_read_as_ascii_is_not_called_undecodable(plain, tmp_path):
    """Under LC_ALL=C with UTF-8 mode off, Python reads `modèle.onnx` as bytes: "not UTF-8 text — rename the file
    to UTF-8", of a file named in UTF-8."""
    model = tmp_path / "modèle.onnx"
    model.write_bytes(plain.read_bytes())
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "inspect", "modèle.onnx"], capture_output=True,
                          cwd=tmp_path, env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0",
                                             "PYTHONPATH": str(ROOT)}, timeout=120)
    lines = done.stderr.decode("ascii", "replace").splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "PYTHONUTF8=1" in lines[0], lines


# --- the Python API's arguments ------------------------------------------------------------------------------------

class RaisingPath(os.PathLike):
    def __fspath__(self):
        raise RuntimeError("no path here")


class BytesPath(os.PathLike):
    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return os.fsencode(self.path)


class NumberPath(os.PathLike):
    def __fspath__(self):
        return 3


@pytest.mark.parametrize("value, needle", [(RaisingPath(), "RaisingPath.__fspath__ raised RuntimeError: no path"),
                                           ("BYTES", "BytesPath.__fspath__ returned bytes, not str"),
                                           (NumberPath(), "NumberPath.__fspath__ raised TypeError"),
                                           ("m.onnx\0x", "holds a NUL character")])
@pytest.mark.parametrize("where", ["model", "output", "images", "calibration", "patched", "reference"])
def test_api_paths_that_are_no_paths_are_refused_in_one_line(plain, patched, tmp_path, value, needle, where):
    """They were the object's own exception, pathlib's TypeError or "embedded null byte" (ValueError) from deep
    inside."""
    import graphsurgery

    value = BytesPath(plain) if value == "BYTES" else value
    call = {"model": lambda: graphsurgery.apply(CROP, value, tmp_path / "p.onnx"),
            "output": lambda: graphsurgery.apply(CROP, plain, value),
            "images": lambda: graphsurgery.run(patched, [value], tmp_path / "out", backend="onnxruntime"),
            "calibration": lambda: graphsurgery.convert(patched, tmp_path / "p.xml", int8=True, calibration=value),
            "patched": lambda: graphsurgery.verify(CROP, plain, patched=value, random=1,
                                                   backends=("onnxruntime",)),
            "reference": lambda: graphsurgery.verify(CROP, plain, reference=value, backends=("onnxruntime",))}[where]
    with pytest.raises(GraphsurgeryError, match=needle) as error:
        call()
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_wrong_types_are_refusals_and_type_errors_alike(plain):
    """The deliberate TypeErrors of the API (a bytes path, force="no") are GraphsurgeryErrors too, as every
    refusal is."""
    import graphsurgery

    for call in (lambda: graphsurgery.inspect(os.fsencode(plain)), lambda: graphsurgery.apply(CROP, plain, force="no"),
                 lambda: graphsurgery.verify(CROP, plain, backends=None)):
        with pytest.raises(GraphsurgeryError) as error:
            call()
        assert isinstance(error.value, TypeError)


def test_numpy_scalars_are_taken_as_numbers(patched, tmp_path):
    """np.int64 passed the checks as a whole number and then failed to go into run.json ('Object of type int64 is
    not JSON serializable')."""
    import graphsurgery

    summary = graphsurgery.run(patched, [PHOTO], tmp_path / "out", backend="onnxruntime", threads=np.int64(1),
                               batch=np.int64(2), min_score=np.float32(0.2))
    assert json.loads((tmp_path / "out" / "run.json").read_text())["batch"] == 2 and summary.threads == 1


def test_the_chain_takes_a_numpy_person_class(tmp_path):
    """It went into the provenance's JSON: 'Object of type int64 is not JSON serializable'."""
    from graphsurgery.api import apply
    from graphsurgery.chaining import chain

    from modelkit import pose_model, zoo_model

    detector = apply(RECIPES / "yolov8_detector.yaml", zoo_model(tmp_path / "d.onnx", "yolov8-tiny", opset=17),
                     tmp_path / "d.patched.onnx").output
    pose = apply(RECIPES / "hrnet_coco_topdown.yaml", pose_model(tmp_path / "p.onnx", opset=17),
                 tmp_path / "p.patched.onnx").output
    assert chain(detector, pose, tmp_path / "c.onnx", person_class=np.int64(0)).written[-1].exists()


@pytest.mark.parametrize("call, needle", [
    (lambda gs, plain, out: gs.run(plain, None, out), "images is a path or a list of paths, not NoneType"),
    (lambda gs, plain, out: gs.run(plain, [PHOTO], out, on_image=5), "on_image is a function"),
    (lambda gs, plain, out: gs.chain(plain, plain, out / "c.onnx", also_reads=5), "also_reads is a path or a list"),
    (lambda gs, plain, out: gs.verify(CROP, plain, random=1, tolerances={"scores": (10**400, 0)}),
     "tolerances for 'scores' must be two finite numbers"),
    (lambda gs, plain, out: gs.run(plain, [PHOTO], out, min_score=10**400), "is not a finite number"),
])
def test_api_values_that_failed_deep_inside_are_refused(plain, tmp_path, call, needle):
    """'NoneType' object is not iterable, 'int' object is not callable (after the first image had run), 'int'
    object is not iterable, OverflowError: int too large to convert to float."""
    import graphsurgery

    with pytest.raises(GraphsurgeryError, match=needle) as error:
        call(graphsurgery, plain, tmp_path / "out")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("settings, needle", [
    (dict(iterations="3"), "iterations='3' \\(--iterations\\) is not a whole number from 1 to 100,000"),
    (dict(iterations=2.5), "iterations=2.5"), (dict(iterations=10**12), "iterations=1000000000000"),
    (dict(warmup=10**12), "warmup="), (dict(batch=2.0), "batch=2.0"), (dict(torch=5), "torch is a 'module:function'"),
])
def test_bench_settings_are_held_to_the_clis_options(plain, settings, needle):
    """"3" and 2.5 were TypeErrors from deep inside, 10^12 rounds ran for ever, torch=5 an AttributeError."""
    import graphsurgery
    from graphsurgery.benchmark import Settings

    with pytest.raises(GraphsurgeryError, match=needle):
        graphsurgery.bench(CROP, plain, Settings(**settings))
    with pytest.raises(GraphsurgeryError, match="settings is a graphsurgery.benchmark.Settings, not dict"):
        graphsurgery.bench(CROP, plain, {"iterations": 1})
