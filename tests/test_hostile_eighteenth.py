"""An eighteenth round of hostile inputs, with fresh eyes on what earlier rounds left: the environment the command
runs in (LANG/LC_ALL, PYTHONIOENCODING, COLUMNS, TERM, NO_COLOR, PYTHONOPTIMIZE, PYTHONWARNINGS, OMP_NUM_THREADS,
OpenVINO's, ONNX Runtime's, OpenCV's and matplotlib's variables), path spellings (newlines, a leading '-', '~', a
trailing slash, `.` and `/`, /proc and /sys, sockets, folders for files and files for folders), images (CMYK,
progressive, EXIF-rotated, 12-bit and arithmetic JPEG headers, interlaced, animated, 16-bit grey+alpha and palette
PNGs, zTXt/iCCP/iTXt decompression bombs, 1×1 and 1×N), recipe spellings (YAML directives, local tags, BOMs and
other encodings, CR and NEL line breaks, every step parameter at its bounds), models (ai.onnx.ml and com.microsoft
ops, sparse initializers, inputs without type or shape, inputs that are initializers, training_info, huge
metadata, names the splice uses itself) and option combinations per command: 883 cases, each in its own folder
under `timeout 60` and `ulimit -v 6000000` (/tmp/round18 in the round's report).

Found: `graphsurgery steps` under `python -OO` (PYTHONOPTIMIZE=2) was an internal error (IndexError: docstrings
dropped); `apply`, `convert` and `chain -o .` an internal error (ValueError from pathlib: a path without a name);
`bench --chart` an internal error after the whole timing for a model file named like mathtext (`m$\\foo$.onnx`) and
under MPLBACKEND set to a backend matplotlib does not know; a recipe overflowing float32 (`scale: {multiply: 1e30}`,
std 1e-30), or any model whose outputs are all NaN, made `verify` PASS whatever the patch (NaN equals NaN), with a
RuntimeWarning on stderr; a model whose value_info contradicts a graph input's or output's declaration went past
the checker and made `apply` say "the patched model fails the ONNX checker — a graphsurgery bug" (or blame the
recipe); `run --min-score 1e308` printed numpy's overflow warning; and under PYTHONWARNINGS=error a library's warning
was an internal error. Each is now a clean result, a FAIL that says why, or one line naming the file or setting."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import warnings
import zlib

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from clikit import invoke, one_line_exit_2
from graphsurgery import verification
from graphsurgery.compare import compare_floats
from graphsurgery.errors import ModelError
from graphsurgery.registry import steps_for
from graphsurgery.steps.base import UNDOCUMENTED

from conftest import RECIPES, ROOT
from modelkit import pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_pose(tmp_path_factory):
    """The tests' pose model at 64 × 48 with a free batch (small is fast)."""
    return pose_model(tmp_path_factory.mktemp("pose") / "pose.onnx", input_hw=(64, 48), dynamic_batch=True)


# --- environment ----------------------------------------------------------------------------------------------------


def test_steps_without_docstrings_are_listed(monkeypatch):
    """`python -OO` drops docstrings: `graphsurgery steps` was an internal error (IndexError)."""
    for side in ("input", "output"):
        for cls in steps_for(side).values():
            monkeypatch.setattr(cls, "__doc__", None)
    listing = invoke("steps")
    assert listing.exit_code == 0 and "cast" in listing.output, listing.output
    one = invoke("steps", "resize")
    assert one.exit_code == 0 and "-OO" in one.output and "interpolation" in one.output, one.output
    assert UNDOCUMENTED.startswith("(no documentation")


def test_a_warning_raised_as_an_error_names_the_setting(small_pose, monkeypatch):
    """PYTHONWARNINGS=error turns a library's warning into an exception: it was an internal error."""
    import graphsurgery.api as api

    def warns(*args, **kwargs):
        raise RuntimeWarning("overflow encountered in cast")

    monkeypatch.setattr(api, "inspect_model", warns)
    one_line_exit_2(invoke("inspect", small_pose), "RuntimeWarning", "PYTHONWARNINGS=error", "fix: run the command")


def test_an_unknown_matplotlib_backend_does_not_stop_the_chart():
    """MPLBACKEND=junk failed matplotlib's import: an internal error after the timing. (A child process: matplotlib
    reads the variable once, when it is first imported.) The variable is the user's again afterwards."""
    code = ("from graphsurgery.chart import _pyplot; plt = _pyplot(); import os; "
            "assert plt.get_backend().lower() == 'agg'; assert os.environ['MPLBACKEND'] == 'junk'")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MPLBACKEND": "junk"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr


def test_a_chart_shows_a_model_name_as_it_is_not_as_mathtext(small_pose, tmp_path):
    """A model file named `m$\\foo$.onnx` put mathtext in the chart's title: ParseFatalException in savefig, an
    internal error after the whole timing."""
    model = tmp_path / "m$\\foo$.onnx"
    model.write_bytes(small_pose.read_bytes())
    result = invoke("bench", CROP, model, "--iterations", 1, "--warmup", 0, "--chart", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").stat().st_size > 0


# --- paths ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["apply", "convert", "chain"])
def test_an_output_path_without_a_name_is_refused(small_pose, tmp_path, monkeypatch, command):
    """`-o .` names no file: pathlib's `with_name` raised ValueError, an internal error."""
    monkeypatch.chdir(tmp_path)
    args = {"apply": ["apply", CROP, small_pose], "convert": ["convert", small_pose],
            "chain": ["chain", small_pose, small_pose]}[command]
    before = set(tmp_path.iterdir())
    one_line_exit_2(invoke(*args, "-o", ".", "--force"), "names a folder, not a file", "fix: give a file name")
    assert set(tmp_path.iterdir()) == before


# --- NaN on both sides proves nothing -------------------------------------------------------------------------------

#: The pose recipe made to overflow float32: x · 1e30 / 1e-30 is inf, and the heatmaps NaN (inf · ±w summed)
OVERFLOW = (CROP.read_text().replace("scale: {divide: 255}", "scale: {multiply: 1e30}")
            .replace("std: [0.229, 0.224, 0.225]", "std: [1e-30, 1e-30, 1e-30]"))


def test_outputs_all_nan_on_both_sides_fail_and_say_why(small_pose, tmp_path):
    """NaN equals NaN: every output NaN on both sides PASSed, for a wrong patch too (another mean); numpy's overflow
    warning went to stderr (an internal error under PYTHONWARNINGS=error)."""
    recipe, wrong = tmp_path / "overflow.yaml", tmp_path / "wrong.yaml"
    recipe.write_text(OVERFLOW)
    wrong.write_text(OVERFLOW.replace("mean: [0.485, 0.456, 0.406]", "mean: [0, 0, 0]"))
    assert invoke("apply", wrong, small_pose, "-o", tmp_path / "wrong.onnx").exit_code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the twin's overflow warning: an exception, as PYTHONWARNINGS=error makes it
        result = invoke("verify", recipe, small_pose, "--patched", tmp_path / "wrong.onnx", "--random", 1,
                        "--backends", "onnxruntime")
    assert result.exit_code == 1, result.output
    assert "no finite value" in result.output and "agreement proves nothing" in result.output, result.output
    assert "internal error" not in result.output


def test_outputs_with_some_nan_still_compare_nan_as_equal():
    """A NaN here and there (a heatmap of NaN scores NaN) is compared as before; only nothing finite proves nothing.
    An empty output has nothing to prove."""
    some = np.array([1.0, np.nan], dtype=np.float32)
    assert compare_floats("x", some, some.copy(), atol=0, rtol=0)
    assert compare_floats("x", some[:0], some[:0], atol=0, rtol=0)
    none = np.full(2, np.nan, dtype=np.float32)
    assert not compare_floats("x", none, none.copy(), atol=0, rtol=0)


def test_a_min_score_beyond_float32_is_quiet(patched, tmp_path):
    """`run --min-score 1e308` compared float32 scores with it: numpy's overflow warning on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = invoke("run", patched, PHOTO, "-o", tmp_path / "out", "--backend", "onnxruntime",
                        "--min-score", "1e308")
    assert result.exit_code == 0, result.output


# --- models ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, dims, elem", [
    ("input", ["N", 3, 48, 64], TensorProto.FLOAT),  # H and W swapped: "the patched model fails the checker"
    ("input", [1, 1, 1, 1], TensorProto.FLOAT),  # "reverse_channels needs 3 colour channels, the tensor has 1"
    ("heatmaps", ["N", 17, 16, 12], TensorProto.INT64),  # "the heatmaps are int64"
    ("heatmaps", ["N", 17, 12, 16], TensorProto.FLOAT),
], ids=["input swapped", "input ones", "output int64", "output swapped"])
def test_value_info_contradicting_a_declaration_is_the_models_fault(small_pose, tmp_path, name, dims, elem):
    proto = onnx.load(str(small_pose))
    proto.graph.value_info.append(helper.make_tensor_value_info(name, elem, dims))
    model = tmp_path / "m.onnx"
    onnx.save(proto, str(model))
    before = digest(model)
    one_line_exit_2(invoke("apply", CROP, model, "-o", tmp_path / "out.onnx"), "m.onnx", f"value_info of {name!r}",
                    "contradicts")
    assert digest(model) == before and not (tmp_path / "out.onnx").exists()


def test_value_info_agreeing_with_a_declaration_still_loads(small_pose, tmp_path):
    proto = onnx.load(str(small_pose))
    proto.graph.value_info.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 64, 48]))
    proto.graph.value_info.append(helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["B", 17, 16, 12]))
    model = tmp_path / "m.onnx"
    onnx.save(proto, str(model))
    result = invoke("apply", CROP, model, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output


def png_with(chunk_type: bytes, payload: bytes) -> bytes:
    """An 8 × 8 black PNG with one more chunk before its pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    return png[:33] + chunk(chunk_type, payload) + png[33:]  # after the signature and IHDR


@pytest.mark.parametrize("chunk_type, keyword", [(b"zTXt", b"comment"), (b"iCCP", b"profile")])
def test_png_metadata_past_pillows_bound_says_why_it_is_refused(tmp_path, patched, chunk_type, keyword):
    """A compressed text chunk or ICC profile of 2 MB (Pillow reads 1 MB a chunk): "not a readable JPEG or PNG image
    — convert it", though the pixels are sound; the line now names the metadata and how to drop it."""
    image = tmp_path / "meta.png"
    image.write_bytes(png_with(chunk_type, keyword + b"\0\0" + zlib.compress(b"a" * (2 << 20))))
    one_line_exit_2(invoke("run", patched, image, "-o", tmp_path / "out"), "meta.png", "metadata",
                    "decompression bomb", "without its metadata")
    assert not (tmp_path / "out").exists()


def test_verify_names_the_users_model_not_its_scratch_copy(tmp_path, monkeypatch):
    """An error about the patched model verify builds in its scratch folder named that file
    (`/tmp/graphsurgery-verify-…/patched.onnx`), which the user never gave and which is gone when they read it."""
    def refused(patched_path, *args):
        raise ModelError("onnxruntime cannot load the model: something", path=patched_path, fix="check it")

    monkeypatch.setattr(verification, "patched_inputs", refused)
    plain = pose_model(tmp_path / "plain.onnx")
    result = invoke("verify", CROP, plain, "--random", 1)
    one_line_exit_2(result, f"{plain} (patched by {CROP})", "onnxruntime cannot load the model", "fix: check it")
    assert "graphsurgery-verify" not in result.output
