"""Round 39: the process's environment and the less-travelled commands (inspect, steps, schema, bench's chart,
chain's options).

Found: COLUMNS=0 made every rich report empty (verify's verdict too, exit 0), COLUMNS=1 printed a character a line
and COLUMNS=² (or LINES=²) was an internal error; under a locale of another encoding (LC_ALL=en_US.ISO-8859-1) a
model named in UTF-8 "failed the ONNX checker — re-export it"; `apply -o m.xml` and `chain -o c.xml` wrote an ONNX
model that every command then read as an OpenVINO IR; and a `matplotlibrc` in the folder `bench --chart` ran in
(or named by $MATPLOTLIBRC) ended the command after the whole timing: a FIFO waited for ever, binary bytes or an
empty colour cycle were internal errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clikit import invoke, one_line_exit_2
from graphsurgery import safeio
from graphsurgery.benchmark import BenchResult
from graphsurgery.chart import write_chart
from graphsurgery.errors import GraphsurgeryError

from conftest import RECIPES, ROOT
from modelkit import pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"


@pytest.fixture(scope="module")
def small_pose(tmp_path_factory):
    return pose_model(tmp_path_factory.mktemp("pose") / "pose.onnx", input_hw=(64, 48), dynamic_batch=True)


@pytest.fixture(scope="module")
def small_patched(small_pose, tmp_path_factory):
    out = tmp_path_factory.mktemp("patched") / "p.onnx"
    assert invoke("apply", CROP, small_pose, "-o", out).exit_code == 0
    return out


# --- COLUMNS and LINES ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variable, value", [("COLUMNS", "0"), ("COLUMNS", "1"), ("COLUMNS", "²"), ("LINES", "²"),
                                             ("LINES", "0")])
def test_a_terminal_size_rich_cannot_lay_out_is_ignored(small_patched, monkeypatch, variable, value):
    """The report as it is without the variable (80 columns in a pipe), not empty, a character a line or an
    internal error (int('²'))."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    unset = invoke("inspect", small_patched)
    assert unset.exit_code == 0 and "heatmaps" in unset.output
    monkeypatch.setenv(variable, value)
    result = invoke("inspect", small_patched)
    assert (result.exit_code, result.output) == (0, unset.output)


def test_verify_says_its_verdict_at_zero_columns(small_pose, small_patched, monkeypatch):
    """COLUMNS=0: verify printed nothing at all and exited 0."""
    monkeypatch.setenv("COLUMNS", "0")
    result = invoke("verify", CROP, small_pose, "--patched", small_patched, "--random", 2)
    assert result.exit_code == 0 and "PASS" in result.output, result.output


def test_a_usable_column_count_is_kept(small_patched, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    invoke("inspect", small_patched)
    assert os.environ["COLUMNS"] == "200"


# --- file names in a locale of another encoding ---------------------------------------------------------------------

def test_a_utf8_name_read_in_another_encoding_is_named_as_such(monkeypatch):
    """Python under a Latin-1 locale reads the UTF-8 name `é.onnx` as `Ã©.onnx`, whose UTF-8 (what onnx's C++ opens)
    names another file: "fails the ONNX checker — re-export it". Simulated here: the name's bytes as Latin-1 gives
    them."""
    monkeypatch.setattr(safeio.os, "fsencode", lambda path: os.fspath(path).encode("latin-1"))
    with pytest.raises(GraphsurgeryError) as caught:
        safeio.utf8_path(Path("é.onnx".encode().decode("latin-1")), "model")
    assert "PYTHONUTF8=1" in caught.value.fix and "latin-1" not in caught.value.message
    assert safeio.utf8_path(Path("plain.onnx"), "model") == Path("plain.onnx")


@pytest.mark.skipif(shutil.which("localedef") is None, reason="no localedef to build a Latin-1 locale")
def test_a_model_named_in_utf8_under_a_latin1_locale(small_pose, tmp_path):
    """The real locale, built for the test (LOCPATH): one line naming the setting, not the model's fault."""
    locales = tmp_path / "locales"
    locales.mkdir()
    built = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1", str(locales / "en_US.ISO-8859-1")],
                           capture_output=True, timeout=60)
    if built.returncode != 0:
        pytest.skip(f"localedef cannot build en_US.ISO-8859-1: {built.stderr[-200:]!r}")
    model = tmp_path / "modèle.onnx"
    model.write_bytes(small_pose.read_bytes())
    env = {**os.environ, "LOCPATH": str(locales), "LC_ALL": "en_US.ISO-8859-1", "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUTF8", None)
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "apply", str(CROP), "modèle.onnx", "-o", "ü.onnx"],
                          capture_output=True, cwd=tmp_path, env=env, timeout=120)
    lines = done.stderr.decode("latin-1").splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "PYTHONUTF8=1" in lines[0], lines
    assert "checker" not in lines[0] and sorted(os.listdir(tmp_path)) == ["locales", "modèle.onnx"]


# --- an ONNX output named .xml -------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["apply", "chain"])
@pytest.mark.parametrize("name", ["m.xml", "M.XML"])
def test_an_onnx_model_is_not_written_under_an_ir_name(small_pose, tmp_path, command, name):
    """`run m.xml` of such a model: "not an OpenVINO IR"; inspect: "is an OpenVINO IR; this command reads ONNX"."""
    args = (CROP, small_pose) if command == "apply" else (small_pose, small_pose)
    one_line_exit_2(invoke(command, *args, "-o", tmp_path / name), ".xml", "OpenVINO IR", ".onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("write", ["apply", "chain"])
def test_the_api_writes_no_onnx_model_under_an_ir_name(small_pose, tmp_path, write):
    """The check is the API's (`modelio.check_output_path`), so a script calling apply or chain is held too."""
    from graphsurgery.api import apply
    from graphsurgery.chaining import chain

    with pytest.raises(GraphsurgeryError, match=r"\.xml, which every command reads as an OpenVINO IR"):
        if write == "apply":
            apply(CROP, small_pose, tmp_path / "m.Xml")
        else:
            chain(small_pose, small_pose, tmp_path / "m.xml")
    assert os.listdir(tmp_path) == []


def test_an_ir_name_is_still_the_output_of_convert(small_patched, tmp_path):
    assert invoke("convert", small_patched, "-o", tmp_path / "m.xml").exit_code == 0
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]


# --- the chart and matplotlib's settings files ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_result(small_pose, tmp_path_factory):
    report = tmp_path_factory.mktemp("bench") / "bench.json"
    result = invoke("bench", CROP, small_pose, "--iterations", 1, "--warmup", 0, "--threads", 1, "--json", report)
    assert result.exit_code == 0, result.output
    return report


EMPTY_CYCLE = 'axes.prop_cycle: cycler("color", [])\n'  # matplotlib's ZeroDivisionError picking a bar's colour


@pytest.mark.parametrize("where, kind", [("here", "fifo"), ("here", "binary"), ("here", "empty cycle"),
                                         ("MATPLOTLIBRC", "empty cycle")])
def test_a_matplotlibrc_of_the_user_does_not_stop_the_chart(bench_result, tmp_path, where, kind):
    """Read as matplotlib is first imported (a child process): a FIFO named matplotlibrc in the current folder
    blocked `bench --chart` for ever after the timing; binary bytes and an empty colour cycle were internal errors.
    The current folder and $MATPLOTLIBRC are the user's again afterwards."""
    settings = tmp_path / ("matplotlibrc" if where == "here" else "settings.rc")
    if kind == "fifo":
        os.mkfifo(settings)
    else:
        settings.write_bytes(bytes(range(128, 256)) if kind == "binary" else EMPTY_CYCLE.encode())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MATPLOTLIBRC", None)
    if where == "MATPLOTLIBRC":
        env["MATPLOTLIBRC"] = str(settings)
    code = ("import json, os, sys; from graphsurgery.benchmark import BenchResult; "
            "from graphsurgery.chart import write_chart; "
            "write_chart(BenchResult(**json.loads(open(sys.argv[1]).read())), 'c.png'); "
            "assert os.getcwd() == sys.argv[2] and os.environ.get('MATPLOTLIBRC') == (sys.argv[3] or None)")
    done = subprocess.run([sys.executable, "-c", code, str(bench_result), str(tmp_path), env.get("MATPLOTLIBRC", "")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr[-2000:]
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG" and image.width < 2000


def test_settings_read_before_the_chart_do_not_stop_it(bench_result, tmp_path, monkeypatch):
    """matplotlib imported earlier (a --torch module's) with the user's settings: the chart is drawn in the defaults."""
    import matplotlib
    from cycler import cycler

    monkeypatch.setitem(matplotlib.rcParams, "axes.prop_cycle", cycler(color=[]))
    write_chart(BenchResult(**json.loads(bench_result.read_text())), tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG"
    assert matplotlib.rcParams["axes.prop_cycle"] == cycler(color=[])
