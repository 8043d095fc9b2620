"""Models whose declarations a recipe must see through (issue 12, models from the wild).

Heatmap outputs declared with symbolic sizes that the model's static input fixes (ViT-style exports reshape with a
shape computed from Shape(), which onnx's shape inference does not follow) or with wrong sizes: `apply` takes the
sizes the model computes (shape inference, else one run on zeros) and says so; the patched model then decodes right
on both runtimes. Where the input's own size is free nothing can be learned, and the step refuses in one line. And
a one-channel (grayscale) model takes a recipe without colour steps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.errors import ModelError
from graphsurgery.recipe import parse_recipe
from graphsurgery.runners import BACKENDS, open_runner
from graphsurgery.verification import verify

RECIPE = """
version: 1
name: decode-only
output:
  steps:
    - heatmap_argmax: {}
  names: {keypoints: keypoints, scores: scores}
"""


def reshaped_heatmap_model(path: Path, input_hw: tuple, declared: list | None = None) -> Path:
    """x [1, 3, H, W] → 1×1 Conv to 5 maps → Reshape to Concat(Shape[0:2], Shape[2:4]); the output is declared
    [n, k, h, w] (or `declared`) whatever H and W are: shape inference cannot tell."""
    weights = np.random.default_rng(0).standard_normal((5, 3, 1, 1)).astype(np.float32)
    bounds = [numpy_helper.from_array(np.array([v], np.int64), name)
              for name, v in (("zero", 0), ("two", 2), ("four", 4))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["maps"]),
             helper.make_node("Shape", ["maps"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "two"], ["batch_joints"]),
             helper.make_node("Slice", ["shape", "two", "four"], ["height_width"]),
             helper.make_node("Concat", ["batch_joints", "height_width"], ["new_shape"], axis=0),
             helper.make_node("Reshape", ["maps", "new_shape"], ["heatmaps"])]
    graph = helper.make_graph(nodes, "reshaped", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                [1, 3, *input_hw])],
                              [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT,
                                                             declared or ["n", "k", "h", "w"])],
                              [numpy_helper.from_array(weights, "w"), *bounds])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_sizes_fixed_by_a_static_input_are_learned_from_one_run(tmp_path):
    plain = reshaped_heatmap_model(tmp_path / "plain.onnx", (16, 12))
    before = hashlib.sha256(plain.read_bytes()).hexdigest()
    result = apply(parse_recipe(RECIPE), plain, tmp_path / "patched.onnx")
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == before  # the input file is not touched
    [note] = [n for n in result.plan.notes if "one ONNX Runtime run on zeros" in n]
    assert "'heatmaps' is declared ['n', 'k', 'h', 'w']; the model computes [5, 16, 12] after the batch" in note
    x = np.random.default_rng(1).random((1, 3, 16, 12), dtype=np.float32)
    for backend in BACKENDS:
        with open_runner(backend, plain) as run:
            maps = run({"x": x})["heatmaps"]
        with open_runner(backend, result.output) as run:
            keypoints = run({"x": x})["keypoints"]
        flat = maps.reshape(5, -1)  # the authors' get_max_preds on the maps the plain model gives: (0, 0) where ≤ 0
        first = flat.argmax(-1)
        expected = np.stack([first % 12, first // 12], -1) * (flat.max(-1) > 0)[:, None]
        np.testing.assert_array_equal(keypoints[0], expected)
    assert verify(parse_recipe(RECIPE), plain, random=2)


def test_sizes_left_free_by_the_input_are_refused_in_one_line(tmp_path):
    plain = reshaped_heatmap_model(tmp_path / "free.onnx", ("H", "W"))
    with pytest.raises(ModelError, match="height and width are not static"):
        apply(parse_recipe(RECIPE), plain, tmp_path / "patched.onnx")
    recipe = tmp_path / "decode.yaml"
    recipe.write_text(RECIPE)
    result = CliRunner().invoke(cli, ["apply", str(recipe), str(plain), "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 2 and "not static" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p.onnx").exists()


def test_wrong_declared_sizes_give_way_to_what_the_model_computes(tmp_path):
    """Declared 8×6 where the model computes 16×12: decoding with the declared width would be wrong (and ONNX Runtime
    refuses such a model), so apply takes the computed sizes, says so, and verify passes."""
    plain = reshaped_heatmap_model(tmp_path / "wrong.onnx", (16, 12), declared=[1, 5, 8, 6])
    result = apply(parse_recipe(RECIPE), plain, tmp_path / "patched.onnx")
    assert any("declared [1, 5, 8, 6]; the model computes [5, 16, 12] after the batch (one ONNX Runtime run" in note
               for note in result.plan.notes), result.plan.notes
    assert verify(parse_recipe(RECIPE), plain, random=2)


def test_sizes_shape_inference_knows_need_no_run(tmp_path, monkeypatch):
    """A plain Conv output declared [n, k, h, w]: shape inference gives its sizes; the model is not run."""
    import graphsurgery.probe

    monkeypatch.setattr(graphsurgery.probe, "open_runner", None)  # a run would fail the test
    weights = numpy_helper.from_array(np.ones((5, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["heatmaps"])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 12])],
                              [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["n", "k", "h", "w"])],
                              [weights])
    plain = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(plain))
    result = apply(parse_recipe(RECIPE), plain, tmp_path / "patched.onnx")
    assert any("the model computes [5, 16, 12] after the batch (shape inference)" in n for n in result.plan.notes)


GRAY = """
version: 1
name: gray
input:
  tensor: {dtype: uint8, layout: NHWC}
  model: {layout: NCHW}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - scale: {divide: 255}
    - normalize: {mean: [0.5], std: [0.5]}
"""


def test_a_grayscale_model_takes_a_recipe_without_colour_steps(tmp_path):
    """One channel: cast, layout, scale and a one-value normalize apply and verify; reverse_channels is refused with
    a fix that can be followed (it used to say "check input.model.layout" for any channel count but 3)."""
    weights = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "gray",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 28, 28])], [weights])
    plain = tmp_path / "gray.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(plain))
    patched = apply(parse_recipe(GRAY), plain, tmp_path / "gray.patched.onnx").output
    assert [d.dim_value for d in onnx.load(str(patched)).graph.input[0].type.tensor_type.shape.dim] == [1, 28, 28, 1]
    assert verify(parse_recipe(GRAY), plain, random=2)
    with_colour = GRAY.replace("    - cast: {}\n", "    - cast: {}\n    - reverse_channels: {}\n")
    with pytest.raises(ModelError, match=r"reverse_channels needs 3 colour channels, the tensor has 1 — fix: drop the "
                                         r"`reverse_channels` step"):
        apply(parse_recipe(with_colour), plain, tmp_path / "colour.onnx")


def test_an_input_too_large_to_feed_is_not_run_and_the_step_says_why(tmp_path, monkeypatch):
    """The run on zeros feeds the input whole: beyond MAX_PROBE_BYTES it is not made (a static batch of millions would
    run out of memory), the sizes stay unknown, and the step refuses in one line as for a free input."""
    import graphsurgery.probe

    monkeypatch.setattr(graphsurgery.probe, "MAX_PROBE_BYTES", 3 * 16 * 12 * 4 - 1)  # one float short of the input
    monkeypatch.setattr(graphsurgery.probe, "open_runner", None)  # a run would fail the test
    plain = reshaped_heatmap_model(tmp_path / "plain.onnx", (16, 12))
    with pytest.raises(ModelError, match="height and width are not static"):
        apply(parse_recipe(RECIPE), plain, tmp_path / "patched.onnx")
