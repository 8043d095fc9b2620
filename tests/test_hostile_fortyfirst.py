"""Round 41: the leftovers of rounds 38–40. A resize's side rounding that verify's image sizes did not show, a
letterbox padding that overflows the model, float16 probabilities, a model's training_info, a Mod's fmod given
through a function's attribute, and error lines under a Latin-1 terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery import verify
from graphsurgery.api import apply

from conftest import ROOT

BOTH = ("onnxruntime", "openvino")

RECIPE = """version: 1
name: edge-classifier
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NCHW, color: RGB}
  steps: [cast: {}, layout: {to: NCHW}, RESIZE scale: {divide: 255}, normalize: {mean: [0.5], std: [STD]}]
output:
  steps: [softmax: {}, topk: {k: 5}]
  names: {indices: indices, scores: scores}
"""


def recipe(folder: Path, name: str, resize: str = "", std: float = 0.225) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(RECIPE.replace("RESIZE ", f"{resize}, " if resize else "").replace("STD", str(std)))
    return path


def classifier(path: Path, hw: tuple[int, int], classes: int = 10, *, dtype=np.float32, scale: float = 0.3,
               square: bool = False) -> Path:
    """[N, 3, H, W] float32 → (its square) → (Cast to `dtype`) → Flatten → MatMul → logits [N, classes] of `dtype`."""
    weights = np.random.default_rng(0).normal(0, scale, (3 * hw[0] * hw[1], classes)).astype(dtype)
    element = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("Mul", ["input", "input"], ["x"]) if square else helper.make_node("Identity", ["input"],
                                                                                                   ["x"]),
             helper.make_node("Cast", ["x"], ["typed"], to=element),
             helper.make_node("Flatten", ["typed"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, *hw])],
                              [helper.make_tensor_value_info("logits", element, ["N", classes])],
                              [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


# --- resize: verify's image sizes show the side rounding ----------------------------------------------------------


@pytest.mark.parametrize(("hw", "fit", "right", "wrong"), [((64, 64), "letterbox", "round", "ceil"),
                                                           ((48, 48), "crop", "floor", "round")])
def test_a_patch_rounding_the_kept_side_another_way_fails(tmp_path, hw, fit, right, wrong):
    """verify fed the fixed sizes 400×300, 353×481, 224×224, 640×480, at which round and ceil (a 64 × 64
    letterbox) or floor and round (a 48 × 48 crop) give the same sides: a patch rounding the other way PASSed."""
    model = classifier(tmp_path / "classifier.onnx", hw)
    reference = recipe(tmp_path, "right", f"resize: {{fit: {fit}, side_rounding: {right}}}")
    patched = apply(recipe(tmp_path, "wrong", f"resize: {{fit: {fit}, side_rounding: {wrong}}}"), model,
                    tmp_path / "wrong.onnx").output
    report = verify(reference, model, patched=patched, random=2, backends=("onnxruntime",))
    assert not report, report.sizes
    assert any(line.startswith("onnxruntime: input steps: input (network input)") for line in report.failures())
    report = verify(reference, model, random=2, backends=BOTH)
    assert report, report.failures()


def test_sizes_that_show_the_rounding_already_are_kept():
    """Guard: the ImageNet crop of a 224 model tells the roundings apart at 400×300 and 353×481: they lead, and no
    rounding sizes are made (then come two sizes whose centre-cut offsets are an integer and a half and an odd
    integer, `Resize.offset_sizes`; round 58: they had come first, and `--random 2` fed those two, which do not tell
    the roundings apart)."""
    from graphsurgery.samples import RESIZE_SIZES, resize_sizes
    from graphsurgery.steps.resize import Resize

    crop = Resize(size=(224, 224), fit="crop", crop_fraction=0.875)
    assert resize_sizes(crop) == (*RESIZE_SIZES[:2], (226, 224), (227, 224), (224, 225), (224, 227), *RESIZE_SIZES[2:])
    assert crop.roundings_told_apart(resize_sizes(crop)[:2])  # what `--random 2` feeds
    assert resize_sizes(Resize(size=(64, 64))) == RESIZE_SIZES  # stretch: nothing rounded
    assert resize_sizes(Resize(size=(1, 1), fit="letterbox")) == RESIZE_SIZES  # every rounding gives 1 × 1
    letterbox = Resize(size=(64, 64), fit="letterbox")
    assert letterbox.roundings_told_apart(resize_sizes(letterbox)[:2])
    assert resize_sizes(letterbox)[2:] == ((129, 64), (67, 64), (64, 67), *RESIZE_SIZES, (257, 2), (2, 257))  # round
    # 42: both portrait, so one wider follows; round 52: then one whose pad is odd (`Resize.offset_sizes`); round 58:
    # a taller one, whose left pad is odd; round 61: last, two thin ones whose short side scales below a pixel


# --- letterbox padding within a pixel's range ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e20", "-1e20", "1000001"])
def test_a_pad_value_beyond_a_million_is_refused(tmp_path, value):
    """At ±1e19 a model squaring its input overflowed float32 on OpenVINO in the patched graph and not in the plain
    one (NaN against inf: "openvino: unpatched → patched" FAILed a right patch); past 1.7e7 a float16 model
    overflowed on ONNX Runtime and not on OpenVINO. The bound was 1e30."""
    model = classifier(tmp_path / "classifier.onnx", (16, 16))
    path = recipe(tmp_path, "pad", f"resize: {{fit: letterbox, pad_value: {value}}}")
    one_line_exit_2(invoke("apply", path, model, "-o", tmp_path / "patched.onnx"), "pad_value", "1,000,000")
    assert not (tmp_path / "patched.onnx").exists()


def test_a_pad_value_of_a_million_verifies_on_both_runtimes(tmp_path):
    """Guard: at the bound, the squaring model agrees on both runtimes."""
    model = classifier(tmp_path / "classifier.onnx", (16, 16), square=True)
    report = verify(recipe(tmp_path, "pad", "resize: {fit: letterbox, pad_value: 1e6}"), model, random=2,
                    backends=BOTH)
    assert report, report.failures()


def test_a_finite_value_against_an_infinite_one_is_compared_without_warnings():
    """The relative difference of a finite value and an infinite reference was inf / inf: numpy's "invalid value
    encountered in divide" on stderr around verify's table (a pad_value of 1e19), an internal error under
    PYTHONWARNINGS=error."""
    from graphsurgery.compare import compare_floats

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare_floats("logits", np.array([1.0, np.inf, 2.0], np.float32),
                                np.array([np.inf, np.inf, 2.0], np.float32), atol=1e-4, rtol=1e-4)
    assert result.failed == 1 and result.max_rel == result.max_abs == np.inf


# --- float16 probabilities ----------------------------------------------------------------------------------------


def test_softmax_of_float16_logits_is_compared_at_their_resolution(tmp_path):
    """Logits up to ±15 in float16 are a step (2^-7) apart when the two sides round the model's float32 input to
    float16 apart: the probabilities then differ by that step relative (5.5e-3), and at one float16 step (2^-10)
    a right patch FAILed on both runtimes. A std of 0.2 for 0.225 still fails."""
    model = classifier(tmp_path / "classifier.onnx", (8, 8), 1000, dtype=np.float16, scale=0.2)
    report = verify(recipe(tmp_path, "right"), model, random=8, backends=BOTH)
    assert report, report.failures()
    assert any("exponentials of float16 values" in note for note in report.notes)
    wrong = apply(recipe(tmp_path, "wrong", std=0.2), model, tmp_path / "wrong.onnx").output
    assert not verify(recipe(tmp_path, "right"), model, patched=wrong, random=8, backends=BOTH)


# --- training_info ------------------------------------------------------------------------------------------------


def test_apply_keeps_the_models_training_info_and_says_so(tmp_path):
    """apply dropped ModelProto.training_info in silence (onnx-graphsurgeon exports the graph alone)."""
    plain = onnx.load(str(classifier(tmp_path / "plain.onnx", (8, 8))))
    algorithm = helper.make_graph([helper.make_node("Mul", ["w", "rate"], ["step"]),
                                   helper.make_node("Sub", ["w", "step"], ["w_next"])], "algorithm", [],
                                  [helper.make_tensor_value_info("w_next", TensorProto.FLOAT, [192, 10])],
                                  [numpy_helper.from_array(np.array(0.01, np.float32), "rate")])
    info = plain.training_info.add()
    info.algorithm.CopyFrom(algorithm)
    info.update_binding.add(key="w", value="w_next")
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    result = apply(recipe(tmp_path, "classifier"), tmp_path / "plain.onnx", tmp_path / "patched.onnx")
    assert list(onnx.load(str(result.output)).training_info) == list(plain.training_info)
    assert any("training_info" in note for note in result.plan.notes)
    assert verify(recipe(tmp_path, "classifier"), tmp_path / "plain.onnx", patched=result.output, random=2,
                  backends=BOTH)


# --- Mod's fmod through a function's attribute -------------------------------------------------------------------


def mod_in_function(path: Path, fmod: int, opset: int = 13) -> Path:
    """A model-local function taking `fmod` as an attribute its Mod refers to, over the constants int32 min and −1,
    called with `fmod`."""
    k = numpy_helper.from_array
    mod = helper.make_node("Mod", ["a", "b"], ["r"])
    reference = mod.attribute.add()
    reference.name, reference.ref_attr_name, reference.type = "fmod", "fmod", onnx.AttributeProto.INT
    body = [helper.make_node("Constant", [], ["a"], value=k(np.array([np.iinfo(np.int32).min], np.int32))),
            helper.make_node("Constant", [], ["b"], value=k(np.array([-1], np.int32))), mod,
            helper.make_node("Cast", ["r"], ["shift"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "shift"],
                                                                                               ["y"])]
    function = helper.make_function("local", "Shift", ["x"], ["y"], body, [helper.make_opsetid("", opset)],
                                    attributes=["fmod"])
    graph = helper.make_graph([helper.make_node("Shift", ["input"], ["logits"], domain="local", fmod=fmod)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("local", 1)],
                              functions=[function])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_a_mod_whose_fmod_a_call_sets_is_judged_by_the_call(tmp_path):
    """The check of the smallest integer modulo −1 read a function's Mod as fmod 0 when fmod was a reference to the
    function's attribute: apply --upgrade-opset inlined the call's fmod=1 into the patched model (which OpenVINO
    folds, dying of SIGFPE), and only verify's loading of that model refused it."""
    plain = mod_in_function(tmp_path / "plain.onnx", 1, opset=10)
    one_line_exit_2(invoke("inspect", plain), "modulo −1 (fmod=1)")
    path = tmp_path / "resize.yaml"
    path.write_text("version: 1\nname: r\ninput:\n  tensor: {dtype: uint8, layout: NHWC, color: RGB}\n"
                    "  model: {layout: NCHW, color: RGB}\n  steps: [cast: {}, layout: {to: NCHW}, resize: {}]\n")
    one_line_exit_2(invoke("apply", path, plain, "-o", tmp_path / "patched.onnx", "--upgrade-opset"), "fmod=1")
    assert not (tmp_path / "patched.onnx").exists()


def test_a_mod_whose_call_sets_fmod_0_is_taken(tmp_path):
    """Guard: the same function called with fmod=0 (Python's modulo, which does not trap) is read."""
    assert invoke("inspect", mod_in_function(tmp_path / "plain.onnx", 0)).exit_code == 0


# --- error lines under a Latin-1 terminal -------------------------------------------------------------------------


def test_error_lines_under_latin_1_read_in_ascii_and_stay_escaped(tmp_path):
    """Under PYTHONIOENCODING=latin-1 every error line read "… \\u2014 fix: …"; the dash is "--" now, and a name's
    escape sequence and right-to-left override are still shown as `\\x1b` and `\\u202e`."""
    name = tmp_path / "m\u202e\x1b[31m\u2603.onnx"
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "inspect", str(name)], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "latin-1"}, timeout=120)
    line = done.stderr.decode("latin-1")
    assert done.returncode == 2 and line.count("\n") == 1, line
    assert " -- fix: " in line and "\\u2014" not in line, line
    assert "\\u202e\\x1b[31m\\u2603.onnx" in line and "\x1b" not in line, line
