"""Models with several outputs: every output the recipe does not patch comes through unchanged, verify compares
every output, and a Softmax hidden behind a reshape or rename is still seen (no double softmax)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.recipe import parse_recipe
from graphsurgery.runners import open_runner
from graphsurgery.verification import verify

from conftest import RECIPES
from modelkit import bgr_crops, softmax_then, three_head_model

#: the shipped crop recipe, aimed at one of the model's heads
TEXT = (RECIPES / "hrnet_coco_pose.yaml").read_text().replace("output:\n", "output:\n  target: heatmaps\n", 1)


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    return three_head_model(tmp_path_factory.mktemp("heads") / "three_heads.onnx")


def test_the_heads_the_recipe_does_not_decode_come_through_unchanged(heads, tmp_path):
    result = apply(parse_recipe(TEXT), heads, tmp_path / "p.onnx")
    names = [o.name for o in onnx.load(str(result.output)).graph.output]
    assert names == ["peaks", "keypoints", "scores", "heatmaps", "energy"]  # results in the decoded head's place
    assert result.plan.outputs_added == ["keypoints", "scores"]
    assert result.plan.outputs_kept == ["peaks", "energy", "heatmaps"] and result.plan.outputs_removed == []
    crops = bgr_crops(2)
    x = ((crops[..., ::-1] / np.float32(255) - np.float32([0.485, 0.456, 0.406])) /
         np.float32([0.229, 0.224, 0.225])).transpose(0, 3, 1, 2).astype(np.float32)
    with open_runner("onnxruntime", result.output) as patched, open_runner("onnxruntime", heads) as plain:
        got, want = patched({"input": crops}), plain({"input": x})
    for head in ("peaks", "energy", "heatmaps"):
        np.testing.assert_allclose(got[head], want[head], rtol=1e-5, atol=1e-5)


def test_verify_compares_every_output(heads):
    report = verify(parse_recipe(TEXT), heads, random=2, backends=("onnxruntime",))
    assert report, report.failures()
    compared = {result.output for result in report.pairs[0].results}
    assert compared == {"peaks", "keypoints", "scores", "heatmaps", "energy"}


def test_a_recipe_without_output_section_compares_every_output(heads):
    recipe = parse_recipe(TEXT.split("output:")[0])
    report = verify(recipe, heads, random=2, backends=("onnxruntime",))
    assert {result.output for result in report.pairs[0].results} == {"peaks", "heatmaps", "energy"}


def test_verify_fails_when_a_passed_through_head_is_wrong(heads, tmp_path):
    """A patched model whose undecoded head differs from the plain model's fails verify on that head."""
    patched = onnx.load(str(apply(parse_recipe(TEXT), heads, tmp_path / "p.onnx").output))
    relu = next(node for node in patched.graph.node if node.op_type == "Relu")
    relu.op_type = "Sigmoid"  # `energy` is no longer the plain model's
    onnx.save(patched, str(tmp_path / "broken.onnx"))
    report = verify(parse_recipe(TEXT), heads, patched=tmp_path / "broken.onnx", random=2, backends=("onnxruntime",))
    assert not report and {r.output for r in report.pairs[0].results if not r} == {"energy"}


def test_dry_run_lists_added_kept_and_removed_outputs(heads, tmp_path):
    recipe = tmp_path / "drop.yaml"
    recipe.write_text(TEXT.replace("keep_original: true", "keep_original: false"))
    result = CliRunner().invoke(cli, ["apply", str(recipe), str(heads), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert ("outputs added: keypoints, scores; kept unchanged: peaks, energy; removed: heatmaps"
            in " ".join(result.output.split()))
    assert "out  peaks: float32[N×17]" in result.output  # dims in brackets are printed, not read as markup
    assert "in   input: uint8[N×256×192×3]" in result.output


@pytest.mark.parametrize("ending", ["Identity", "Reshape", "Flatten"])
def test_softmax_behind_a_reshape_or_rename_is_not_applied_twice(ending, tmp_path):
    model = softmax_then(tmp_path / f"{ending}.onnx", ending)
    recipe = parse_recipe("version: 1\nname: top\noutput:\n  steps:\n    - softmax: {}\n    - topk: {k: 3}\n")
    patched = apply(recipe, model, tmp_path / "p.onnx").output
    x = np.random.default_rng(0).normal(0, 3, (2, 3, 8, 8)).astype(np.float32)
    with open_runner("onnxruntime", patched) as run:
        got = run({"input": x})
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    with open_runner("onnxruntime", model) as plain:
        np.testing.assert_allclose(got["probabilities"], plain({"input": x})["prob"], rtol=1e-6, atol=1e-7)
    assert got["scores"][:, 0].max() > 0.2  # a second softmax over probabilities flattens them towards 1/10
    report = verify(recipe, model, random=2, backends=("onnxruntime",))
    assert report, report.failures()
    assert json.dumps(report.to_dict())  # serialisable


def test_verify_pairs_all_eight_outputs_of_a_detector_head(tmp_path):
    """A PicoDet-style export ends in 8 outputs (class scores and box distributions at 4 strides): with the input
    side patched and no output section, verify pairs every one of them, and a wrong patch fails on all 8."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, outputs, weights = [], [], []
    for stride in (8, 16, 32, 64):
        for kind, channels in (("cls", 4), ("reg", 8)):
            name = f"{kind}_{stride}"
            weights.append(numpy_helper.from_array(rng.standard_normal((channels, 3, 1, 1)).astype(np.float32),
                                                   f"w_{name}"))
            pooled = 64 // stride
            nodes += [helper.make_node("AveragePool", ["x"], [f"pool_{name}"], kernel_shape=[64 // pooled] * 2,
                                       strides=[64 // pooled] * 2),
                      helper.make_node("Conv", [f"pool_{name}", f"w_{name}"], [name])]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, pooled, pooled]))
    graph = helper.make_graph(nodes, "eight", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              outputs, weights)
    plain = tmp_path / "eight.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(plain))
    text = """
version: 1
name: picodet-input
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - reverse_channels: {}
    - normalize: {mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]}
"""
    report = verify(parse_recipe(text), plain, random=2)
    assert report, report.failures()
    names = {o.name for o in outputs}
    assert len(names) == 8 and all({r.output for r in pair.results} == names for pair in report.pairs)
    wrong = parse_recipe(text.replace("mean: [123.675, 116.28, 103.53]", "mean: [0, 0, 0]"))  # forgets the mean
    patched = apply(wrong, plain, tmp_path / "wrong.onnx").output
    failed = verify(parse_recipe(text), plain, patched=patched, random=2, backends=("onnxruntime",))
    assert not failed and {r.output for r in failed.pairs[0].results if not r} == names
