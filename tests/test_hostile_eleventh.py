"""An eleventh round of hostile or careless inputs (a red-team run of every command's options at their edges, YAML
features, the user's own code, references and printed paths). Found: a path holding `[/]` (a folder `out[`) was read
as rich markup in `convert`'s, `run`'s and `bench`'s last lines (MarkupError: an internal error after the outputs
were written), and a path holding an escape sequence reached the terminal raw; `verify --tolerance scores=0.1
--tolerance scores=0` let the last one win silently; `convert --ovms DIR --name ""` named the model after its file;
a recipe's `version:` of 900,000 characters came back whole in the error line, and an output name could hold a
newline or an escape sequence (the model it made was not one `run` could read); a YAML merge key (`<<: *defaults`)
was "YAML tag not allowed — remove the `!!` tag"; a reference pipeline or torch factory calling `sys.exit(0)` ended
`verify` with exit 0 having compared nothing, and a module that failed or exited while it was imported was an
internal error; a `--reference` recorded on NaN or infinite inputs let any patch pass (NaN in, NaN out on both
sides, and NaN equals NaN); a plain model's extra input of declared dims [2^20, 2^20] ran out of memory while verify
made up its values. Each is now one line and exit 2 (or works), with no input changed."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import RecipeError
from graphsurgery.recipe import parse_recipe

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
NORMALIZE = "normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


# --- printed paths -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["convert", "convert --ovms", "run", "bench --json"])
def test_paths_are_printed_as_they_are_not_as_markup(plain, patched, tmp_path, command):
    (tmp_path / "out[").mkdir()
    path = tmp_path / "out[" / "]x.xml"  # `[/]` across a folder and a file name
    args = {"convert": ["convert", plain, "-o", path],
            "convert --ovms": ["convert", plain, "--ovms", tmp_path / "out[" / "]repo", "--name", "m"],
            "run": ["run", patched, PHOTO, "-o", tmp_path / "out[" / "]run", "--backend", "onnxruntime"],
            "bench --json": ["bench", CROP, plain, "--iterations", 1, "--warmup", 0, "--threads", 1, "--json",
                             tmp_path / "out[" / "]bench.json"]}[command]
    if command == "convert --ovms":
        (tmp_path / "out[" / "]repo").mkdir()
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output.replace("\n", "") and "internal error" not in result.output  # rich may wrap


def test_an_escape_sequence_in_an_output_path_is_shown_escaped(plain, tmp_path):
    result = invoke("convert", plain, "-o", tmp_path / "x\x1b[2J.xml")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "x\\x1b[2J.xml" in result.output.replace("\n", "")  # rich may wrap


# --- options at their edges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["scores", "*"])
def test_a_tolerance_given_twice_for_one_output_is_refused(plain, name):
    one_line_exit_2(invoke("verify", CROP, plain, "--random", 1, "--backends", "onnxruntime", "--tolerance",
                           f"{name}=0.1", "--tolerance", f"{name}=0"), f"--tolerance names {name!r} twice")


def test_an_empty_ovms_model_name_is_refused_not_defaulted(plain, tmp_path):
    (tmp_path / "repo").mkdir()
    one_line_exit_2(invoke("convert", plain, "--ovms", tmp_path / "repo", "--name", ""),
                    "'' is not a usable model name")
    assert not any((tmp_path / "repo").iterdir())


# --- recipes -----------------------------------------------------------------------------------------------------

def test_a_huge_value_is_cut_short_in_the_error_line():
    text = CROP.read_text().replace("version: 1", "version: 1" + "x" * 900_000)
    with pytest.raises(RecipeError, match="unsupported recipe version") as error:
        parse_recipe(text, "r.yaml")
    assert len(str(error.value)) < 400


@pytest.mark.parametrize("name", ['"key\\npoints"', '"\\e]0;pwned\\a"', "k" * 900_000])
def test_an_output_name_is_a_tensor_name_without_control_characters(name):
    text = CROP.read_text().replace("names: {keypoints: keypoints", f"names: {{keypoints: {name}")
    with pytest.raises(RecipeError, match="output.names.keypoints") as error:
        parse_recipe(text, "r.yaml")
    assert len(str(error.value)) < 400


def test_yaml_merge_keys_are_read_as_yaml_defines_them():
    text = CROP.read_text()
    merged = text.replace(f"- {NORMALIZE}", "- normalize: {<<: {mean: [0.485, 0.456, 0.406], std: [1, 1, 1]}, "
                                            "std: [0.229, 0.224, 0.225]}")
    assert merged != text and parse_recipe(merged).sha256 == parse_recipe(text).sha256
    with pytest.raises(RecipeError, match=r"line \d+: a merge key \(<<\) is given a scalar"):
        parse_recipe(text.replace(f"- {NORMALIZE}", "- normalize: {<<: 1, mean: [0, 0, 0], std: [1, 1, 1]}"))


def test_a_merge_key_bomb_is_bounded():
    lines = ["a0: &a0 {k: 1}"] + [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 9)}], k{i}: 1}}"
                                  for i in range(1, 9)]
    with pytest.raises(RecipeError, match="expands to more than"):
        parse_recipe("\n".join(lines) + "\nversion: 1\nname: x\n")


# --- the user's own code -----------------------------------------------------------------------------------------

@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module of the user's into the current folder, forgotten by Python afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("source, needle", [
    ("import sys\ndef answers(feeds):\n    sys.exit(0)\n", "eleventh_pipe:answers called sys.exit(0)"),
    ("import sys\ndef answers(feeds):\n    return {}\nsys.exit(0)\n", "importing eleventh_pipe called sys.exit(0)"),
    ("raise ValueError('no config file')\n", "importing eleventh_pipe raised ValueError: no config file"),
    ("def answers(feeds:\n", "importing eleventh_pipe raised SyntaxError"),
])
def test_a_reference_pipeline_that_exits_or_cannot_load_is_the_users_to_fix(plain, user_module, source, needle):
    """sys.exit(0) in the user's code ended verify with exit 0, having compared nothing."""
    user_module("eleventh_pipe", source)
    one_line_exit_2(invoke("verify", CROP, plain, "--random", 1, "--backends", "onnxruntime",
                           "--reference-pipeline", "eleventh_pipe:answers"),
                    f"the reference pipeline (--reference-pipeline): {needle}")


def test_a_torch_factory_that_exits_is_the_users_to_fix(user_module):
    from graphsurgery.callables import call_user, import_callable
    from graphsurgery.errors import GraphsurgeryError

    user_module("eleventh_net", "import sys\ndef network():\n    sys.exit('no weights')\n")
    with pytest.raises(GraphsurgeryError, match=r"eleventh_net:network called sys.exit\('no weights'\)"):
        call_user(import_callable("eleventh_net:network", "the torch network (--torch)", "m:f"),
                  "the torch network (--torch)")


def test_a_relative_module_name_is_no_module_function(plain):
    one_line_exit_2(invoke("verify", CROP, plain, "--random", 1, "--reference-pipeline", "..:answers"),
                    "'..:answers' is not MODULE:FUNCTION")


# --- references and made-up inputs -------------------------------------------------------------------------------

@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_a_reference_recorded_on_non_finite_inputs_is_refused(plain, tmp_path, fill):
    """A wrong patch (mean 5) passed: NaN in, NaN out on both sides, and NaN equals NaN in the comparison."""
    import onnxruntime as ort

    from graphsurgery.api import apply

    recipe = tmp_path / "float.yaml"
    recipe.write_text("version: 1\nname: floaty\ninput:\n  tensor: {dtype: float32, layout: NCHW, color: RGB}\n"
                      f"  steps:\n    - {NORMALIZE}\noutput:\n  steps:\n    - heatmap_argmax: {{}}\n")
    wrong = onnx.load(str(apply(recipe, plain, tmp_path / "right.onnx").output))
    mean = next(t for t in wrong.graph.initializer if t.name.endswith("normalize/mean"))
    mean.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(mean), 5.0), mean.name))
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    x = np.full((2, 3, 256, 192), fill, np.float32)
    session = ort.InferenceSession(str(tmp_path / "wrong.onnx"), providers=["CPUExecutionProvider"])
    np.savez(tmp_path / "ref.npz", input=x, **dict(zip([o.name for o in session.get_outputs()],
                                                       session.run(None, {"input": x}))))
    one_line_exit_2(invoke("verify", recipe, plain, "--patched", tmp_path / "wrong.onnx", "--reference",
                           tmp_path / "ref.npz", "--backends", "onnxruntime"),
                    str(tmp_path / "ref.npz"), "'input' holds NaN or infinite values")


def test_an_extra_input_too_large_to_make_up_is_refused(plain, tmp_path):
    model = onnx.load(str(plain))
    model.graph.input.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, [2**20, 2**20]))
    onnx.save(model, str(tmp_path / "m.onnx"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(CROP.read_text().replace("input:\n", "input:\n  target: input\n", 1))
    before = digest(tmp_path / "m.onnx", recipe)
    one_line_exit_2(invoke("verify", recipe, tmp_path / "m.onnx", "--random", 1, "--backends", "onnxruntime"),
                    str(tmp_path / "m.onnx"), "input 'big' takes [1048576, 1048576] values, more than 512 MiB")
    assert digest(tmp_path / "m.onnx", recipe) == before


@pytest.mark.parametrize("location", ["sub", "."])
def test_external_data_naming_a_folder_says_so(plain, tmp_path, location):
    """Was "external data file 'sub' … is missing — put 'sub' beside the model", with the folder right there."""
    model = onnx.load(str(plain))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.data", size_threshold=0)
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(tmp_path / "m.onnx"))
    (tmp_path / "sub").mkdir()
    one_line_exit_2(invoke("inspect", tmp_path / "m.onnx"), f"external data file '{location}'",
                    "is a folder, not a file")
