"""CLI: apply, inspect, schema, steps — happy paths and the errors a user meets first."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from graphsurgery.cli import cli

from conftest import RECIPES
from modelkit import pose_model

CROP = str(RECIPES / "hrnet_coco_pose.yaml")


@pytest.fixture
def plain(tmp_path):
    return pose_model(tmp_path / "plain.onnx")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_every_command_has_help():
    for name, command in cli.commands.items():
        assert command.help and command.help.strip(), f"{name} has no help text"
        result = invoke(name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_apply_default_output_beside_the_input(plain):
    result = invoke("apply", CROP, plain)
    assert result.exit_code == 0, result.output
    out = plain.with_name("plain.patched.onnx")
    assert out.exists() and "keypoints: float32[1×17×2]" in result.output
    again = invoke("apply", CROP, plain)
    assert_user_error(again, "plain.patched.onnx", "output exists", "--force")
    assert invoke("apply", CROP, plain, "--force").exit_code == 0


def test_apply_dry_run_prints_the_plan_and_writes_nothing(plain, tmp_path):
    result = invoke("apply", CROP, plain, "-o", tmp_path / "p.onnx", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "graphsurgery/pre/normalize/Sub" in result.output and "graphsurgery/post/heatmap_argmax" in result.output
    assert "in   input: uint8[1×256×192×3]" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


def test_apply_output_equal_to_input_is_refused(plain):
    assert_user_error(invoke("apply", CROP, plain, "-o", plain, "--force"), str(plain), "overwrite an input")


def test_apply_missing_output_folder(plain, tmp_path):
    assert_user_error(invoke("apply", CROP, plain, "-o", tmp_path / "nope" / "p.onnx"), "output folder does not exist")


def test_apply_missing_model(tmp_path):
    assert_user_error(invoke("apply", CROP, tmp_path / "missing.onnx", "-o", tmp_path / "p.onnx"),
                      "missing.onnx", "no such model file")


def test_apply_wrong_target_lists_the_real_tensors(plain, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(open(CROP).read().replace("output:\n", "output:\n  target: logits\n"))
    assert_user_error(invoke("apply", recipe, plain, "-o", tmp_path / "p.onnx"),
                      str(plain), "no output named 'logits'", "'heatmaps'", "output.target")


def test_apply_broken_recipe_names_file_and_line(plain, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(open(CROP).read().replace("heatmap_argmax", "heatmap_argmx"))
    result = invoke("apply", recipe, plain, "-o", tmp_path / "p.onnx")
    assert_user_error(result, str(recipe), "output.steps[0]", "did you mean 'heatmap_argmax'")
    assert not (tmp_path / "p.onnx").exists()


def test_inspect_json_and_table(plain, tmp_path):
    invoke("apply", CROP, plain, "-o", tmp_path / "p.onnx")
    info = json.loads(invoke("inspect", tmp_path / "p.onnx", "--json").output)
    assert info["opset"] == 17 and info["ir_version"] == onnx.load(str(plain)).ir_version
    assert info["inputs"] == [{"name": "input", "dtype": "uint8", "shape": [1, 256, 192, 3]}]
    assert [o["name"] for o in info["outputs"]] == ["keypoints", "scores", "heatmaps"]
    # the exact decode's two position searches (the row, then the column in it), no ArgMax
    assert info["op_types"]["Conv"] == 1 and info["op_types"]["ReduceMin"] == 2 and "ArgMax" not in info["op_types"]
    assert info["provenance"][0]["recipe"] == "hrnet-coco-pose"
    table = invoke("inspect", tmp_path / "p.onnx").output
    assert "hrnet-coco-pose" in table and "keypoints" in table


def test_schema_is_json_with_steps():
    schema = json.loads(invoke("schema").output)
    output_steps = {next(iter(v["properties"])) for v in schema["$defs"]["OutputStep"]["oneOf"]}
    assert {"heatmap_argmax", "quarter_offset", "to_image", "softmax", "topk"} <= output_steps


def test_steps_lists_and_documents():
    listing = invoke("steps").output
    for name in ("cast", "layout", "reverse_channels", "scale", "normalize", "heatmap_argmax", "topk"):
        assert name in listing
    detail = invoke("steps", "normalize")
    assert detail.exit_code == 0 and "mean" in detail.output and "Sub and Div" in detail.output
    assert_user_error(invoke("steps", "normalise"), "unknown step 'normalise'", "'normalize'")


def test_steps_detail_keeps_the_docstring_lines_and_names_types_plainly():
    """At 80 columns the docstring is not re-wrapped mid-sentence, and a Literal reads as its choices."""
    from graphsurgery.steps.output import HeatmapArgmax

    detail = invoke("steps", "heatmap_argmax").output
    for line in inspect.cleandoc(HeatmapArgmax.__doc__).splitlines():
        assert line in detail.splitlines()
    assert "  method: exact | argmax (default 'exact') — exact:" in detail and "typing." not in detail


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "graphsurgery", "apply", CROP, str(tmp_path / "none.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and "none.onnx" in proc.stderr


def test_model_text_is_shown_as_is_never_as_markup_or_terminal_escapes(tmp_path):
    """Names like `[bold]in` keep their brackets; a producer name carrying an ANSI escape cannot drive the
    terminal (it is shown as \\x1b), in reports and in error lines."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["[bold]in"], ["out[red]x"])], "g",
                              [helper.make_tensor_value_info("[bold]in", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("out[red]x", TensorProto.FLOAT, ["batch", 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="evil\x1b]0;owned\x07")
    path = tmp_path / "markup.onnx"
    onnx.save(model, str(path))
    shown = invoke("inspect", str(path)).output
    assert "[bold]in" in shown and "out[red]x" in shown and "['batch', 3, 8, 8]" in shown
    assert "\x1b" not in shown and "\x07" not in shown and "evil\\x1b]0;owned\\x07" in shown
    model.graph.output[0].name = model.graph.node[0].output[0] = "clear\x1b[2J"
    onnx.save(model, str(path))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nname: r\noutput:\n  target: nope\n  steps: [{softmax: {}}]\n")
    error = invoke("apply", str(recipe), str(path), "-o", str(tmp_path / "p.onnx"))
    assert error.exit_code == 2 and "clear\\x1b[2J" in error.output and "\x1b" not in error.output


def test_apply_and_convert_reports_have_json(plain, tmp_path):
    applied = invoke("apply", CROP, plain, "-o", str(tmp_path / "p.onnx"), "--json")
    data = json.loads(applied.output)
    assert applied.exit_code == 0 and data["written"] == [str(tmp_path / "p.onnx")]
    assert data["outputs_added"] == ["keypoints", "scores"] and data["input_target"] == "input"
    dry = json.loads(invoke("apply", CROP, plain, "--dry-run", "--json").output)
    assert dry["written"] == [] and dry["nodes"]
    converted = invoke("convert", str(tmp_path / "p.onnx"), "--json")
    info = json.loads(converted.output)
    assert converted.exit_code == 0 and info["weights"] == "FP32" and info["notes"] == []
    assert sorted(Path(p).suffix for p in info["written"]) == [".bin", ".xml"]
