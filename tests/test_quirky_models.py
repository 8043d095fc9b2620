"""The shipped recipes on models with third-party quirks (tests/quirkykit.py): apply, full checker, parity with
the numpy twins on onnxruntime and OpenVINO, and the product's `verify` (which feeds a model's other inputs
deterministic random values).

Recipe variants are the shipped files with a few lines changed, as a user would edit them: a channel-last model
gets `model: {layout: NHWC}` and loses the layout step; a model with several inputs or outputs names its targets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError, ModelError
from graphsurgery.recipe import Recipe, parse_recipe
from graphsurgery.twins import other_inputs
from graphsurgery.verification import verify

import quirkykit as q

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
CLASSIFIER = RECIPES / "imagenet_classifier.yaml"
POSE_CROP = RECIPES / "hrnet_coco_pose.yaml"
POSE_IMAGE = RECIPES / "hrnet_coco_pose_image.yaml"

NHWC_CLASSIFIER = [("model: {layout: NCHW, color: RGB}", "model: {layout: NHWC, color: RGB}"),
                   ("    - layout: {to: NCHW}\n", "")]
NHWC_POSE = NHWC_CLASSIFIER
FIXED_SIZE = [("crop_fraction: 0.875}", "crop_fraction: 0.875, size: [32, 32]}")]


def targets(output: str) -> list[tuple[str, str]]:
    return [("input:\n  tensor:", f'input:\n  target: "{q.IMAGE}"\n  tensor:'),
            ("output:\n  steps:", f'output:\n  target: "{output}"\n  steps:')]


def variant_text(source: Path, changes: list[tuple[str, str]]) -> str:
    """The recipe file's text with `changes` made (each must apply), as a user would edit a copy."""
    text = source.read_text()
    for old, new in changes:
        assert old in text, f"{source.name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def variant(source: Path, changes: list[tuple[str, str]]) -> Recipe:
    return parse_recipe(variant_text(source, changes), source=f"{source.name} (edited)")


MODELS = {  # name: (builder, options)
    "ir3-opset9-softmax": (q.classifier, dict(ends_in_softmax=True)),
    "nhwc": (q.classifier, dict(opset=13, ir_version=7, layout="NHWC")),
    "two-inputs-shared-output": (
        q.classifier,
        dict(opset=11, ir_version=6, temperature_input=True, shared_output=True),
    ),
    "dynamic-hw": (q.classifier, dict(opset=13, ir_version=7, hw=None)),
    "pose-ir3-opset9": (q.pose, {}),
    "pose-nhwc": (q.pose, dict(opset=13, ir_version=7, layout="NHWC")),
}

CASES = {  # name: (model, recipe file, changes, apply options)
    "ir3-opset9-softmax": ("ir3-opset9-softmax", CLASSIFIER, [], {"upgrade_opset": True}),
    "nhwc": ("nhwc", CLASSIFIER, NHWC_CLASSIFIER, {}),
    "two-inputs-logits": ("two-inputs-shared-output", CLASSIFIER, targets(q.LOGITS), {}),
    "two-inputs-probabilities": ("two-inputs-shared-output", CLASSIFIER, targets(q.PROBABILITIES), {}),
    "dynamic-hw": ("dynamic-hw", CLASSIFIER, FIXED_SIZE, {}),
    "pose-ir3-crop": ("pose-ir3-opset9", POSE_CROP, [], {}),
    "pose-ir3-image": ("pose-ir3-opset9", POSE_IMAGE, [], {}),
    "pose-nhwc": ("pose-nhwc", POSE_CROP, NHWC_POSE, {}),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quirky")
    return {name: build(folder / f"{name}.onnx", **options) for name, (build, options) in MODELS.items()}


def caller_images(recipe: Recipe, shape: tuple[int, int], n: int = 2, seed: int = 0) -> np.ndarray:
    layout = recipe.input.tensor.layout
    dims = (n, *shape, 3) if layout == "NHWC" else (n, 3, *shape)
    return np.random.default_rng(seed).integers(0, 256, dims, dtype=np.uint8)


def feeds(case: str, recipe: Recipe) -> list[tuple[np.ndarray, dict, dict]]:
    """(images, other plain-model inputs, extra inputs) to check the case with."""
    other = {q.TEMPERATURE: np.array([1.7], np.float32)} if case.startswith("two-inputs") else {}
    if case.startswith("pose"):
        extras = {}
        if case == "pose-ir3-image":
            extras = {"center": np.array([[96.0, 128.0], [300.5, 210.25]], np.float32),
                      "scale": np.array([[0.6, 0.8], [1.2, 1.6]], np.float32)}
        return [(caller_images(recipe, (64, 48)), other, extras)]
    # any image size: smaller, larger and of other aspect ratios than the model's 32 × 32
    return [(caller_images(recipe, hw, seed=i), other, {}) for i, hw in enumerate([(32, 32), (45, 70), (20, 13)])]


@pytest.mark.parametrize("case", CASES)
def test_recipe_applies_and_matches_the_twins(case, models, tmp_path):
    model_name, source, changes, options = CASES[case]
    plain, recipe = models[model_name], variant(source, changes)
    patched = apply(recipe, plain, tmp_path / "patched.onnx", **options).output
    onnx.checker.check_model(str(patched), full_check=True)
    plain_proto, patched_proto = onnx.load(str(plain)), onnx.load(str(patched))
    # the IR version is kept, unless the opset was upgraded to one that needs a newer IR (IR 3 beside opset 11
    # would be an invalid pair)
    needed = onnx.helper.find_min_ir_version_for(list(patched_proto.opset_import))
    upgraded = options.get("upgrade_opset", False)
    assert patched_proto.ir_version == (max(plain_proto.ir_version, needed) if upgraded else plain_proto.ir_version)
    if patched_proto.ir_version < 4:  # IR 3 lists every initializer as a graph input: still true after the patch
        assert {t.name for t in patched_proto.graph.initializer} <= {i.name for i in patched_proto.graph.input}
    for images, other, extras in feeds(case, recipe):
        assert_parity_everywhere = q.assert_parity(recipe, plain, patched, images, other=other, extras=extras)
        assert set(assert_parity_everywhere) == {"onnxruntime", "openvino"}
    report = verify(recipe, plain, patched=patched, random=2)
    assert report, report.failures()


def _post_ops(patched: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(patched)).graph.node if n.name.startswith("graphsurgery/post/softmax/")]


def test_softmax_is_skipped_only_when_the_model_ends_in_one(models, tmp_path):
    ends = apply(variant(CLASSIFIER, []), models["ir3-opset9-softmax"], tmp_path / "a.onnx", upgrade_opset=True)
    logits = apply(variant(CLASSIFIER, targets(q.LOGITS)), models["two-inputs-shared-output"], tmp_path / "b.onnx")
    probs = apply(
        variant(CLASSIFIER, targets(q.PROBABILITIES)), models["two-inputs-shared-output"], tmp_path / "c.onnx"
    )
    assert _post_ops(ends.output) == ["Identity"] and _post_ops(probs.output) == ["Identity"]
    assert _post_ops(logits.output) == ["Softmax"]


def test_shared_output_stays_consumed_and_both_outputs_remain(models, tmp_path):
    patched = apply(variant(CLASSIFIER, targets(q.LOGITS)), models["two-inputs-shared-output"], tmp_path / "p.onnx")
    graph = onnx.load(str(patched.output)).graph
    # the results take the patched output's place; the model's other output passes through (it used to be dropped)
    assert [o.name for o in graph.output] == ["indices", "scores", q.LOGITS, q.PROBABILITIES]
    assert patched.plan.outputs_kept == [q.PROBABILITIES, q.LOGITS] and patched.plan.outputs_removed == []
    assert any(q.LOGITS in n.input and n.op_type == "Softmax" and not n.name for n in graph.node)  # the model's own
    assert [i.name for i in graph.input if i.name in (q.IMAGE, q.TEMPERATURE)] == [q.IMAGE, q.TEMPERATURE]


def test_nhwc_pose_keypoints_are_scaled_by_the_nhwc_input_size(models, tmp_path):
    """Independent of the twins: crop-pixel keypoints are the heatmap argmax times the stride (64×48 → 16×12)."""
    recipe = variant(POSE_CROP, NHWC_POSE)
    patched = apply(recipe, models["pose-nhwc"], tmp_path / "p.onnx").output
    images = caller_images(recipe, (64, 48))
    out = q.assert_parity(recipe, models["pose-nhwc"], patched, images)["onnxruntime"]
    heatmaps = out[q.HEATMAPS]
    flat = heatmaps.reshape(*heatmaps.shape[:2], -1)
    idx = flat.argmax(-1)
    expected = np.stack([idx % 12, idx // 12], -1) * 4.0 * (flat.max(-1) > 0)[..., None]
    np.testing.assert_array_equal(out["keypoints"], expected)


@pytest.mark.parametrize("case, changes, options, message", [
    ("ir3-opset9-softmax", [], {}, "needs opset 11, the model has opset 9 .*--upgrade-opset"),
    ("dynamic-hw", [], {}, r"not fixed .*size: \[height, width\]"),
    ("two-inputs-shared-output", [], {}, "2 inputs .*set input.target"),
    ("nhwc", [], {}, r"channels are last \(NHWC\).*model: {layout: NHWC}"),
])
def test_quirks_the_recipe_must_be_told_about_give_one_line_errors(case, changes, options, message, models, tmp_path):
    with pytest.raises(ModelError, match=message):
        apply(variant(CLASSIFIER, changes), models[case], tmp_path / "p.onnx", **options)
    assert not (tmp_path / "p.onnx").exists()


def test_upgrade_opset_on_every_command_that_applies_a_recipe(models, tmp_path):
    """The fix the opset error gives can be followed on verify and bench too; the IR version rises with the opset."""
    recipe = tmp_path / "classifier.yaml"
    recipe.write_text(variant_text(CLASSIFIER, []))
    plain = models["ir3-opset9-softmax"]
    for command in (["verify", "--random", "2", "--backends", "onnxruntime"],
                    ["bench", "--iterations", "1", "--warmup", "0", "--threads", "1"]):
        refused = CliRunner().invoke(cli, [command[0], str(recipe), str(plain), *command[1:]])
        assert refused.exit_code == 2 and "--upgrade-opset" in refused.output, refused.output
        done = CliRunner().invoke(cli, [command[0], str(recipe), str(plain), *command[1:], "--upgrade-opset"])
        assert done.exit_code == 0, done.output
    patched = apply(variant(CLASSIFIER, []), plain, tmp_path / "p.onnx", upgrade_opset=True).output
    upgraded = onnx.load(str(patched))
    assert upgraded.opset_import[0].version == 11 and upgraded.ir_version >= 6  # was IR 3 beside opset 11


def test_verify_asks_which_input_to_patch_when_the_plain_model_has_two(models):
    with pytest.raises(GraphsurgeryError, match="the plain model has 2 inputs.*input.target"):
        verify(variant(CLASSIFIER, FIXED_SIZE), models["two-inputs-shared-output"], random=2)


def test_cli_verify_feeds_the_other_input_and_catches_a_patch_that_misuses_it(models, tmp_path):
    """The temperature divides the logits: a patched model that multiplies by it agrees only if verify fed 1."""
    recipe_file, out = tmp_path / "classifier.yaml", tmp_path / "report.json"
    recipe_file.write_text(variant_text(CLASSIFIER, targets(q.LOGITS)))
    plain = models["two-inputs-shared-output"]
    result = CliRunner().invoke(cli, ["verify", str(recipe_file), str(plain), "--random", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "'temperature:0' [1] float32" in " ".join(result.output.split())
    assert any("temperature:0" in note for note in json.loads(out.read_text())["notes"])

    wrong = onnx.load(str(plain))
    next(n for n in wrong.graph.node if n.op_type == "Div").op_type = "Mul"
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    patched = apply(variant(CLASSIFIER, targets(q.LOGITS)), tmp_path / "wrong.onnx", tmp_path / "patched.onnx").output
    result = CliRunner().invoke(cli, ["verify", str(recipe_file), str(plain), "--patched", str(patched),
                                      "--random", "2"])
    assert result.exit_code == 1 and "scores" in result.output and q.LOGITS in result.output, result.output


def test_verify_refuses_a_string_input_in_one_line_writing_nothing(models, tmp_path):
    recipe_file, out = tmp_path / "classifier.yaml", tmp_path / "report.json"
    recipe_file.write_text(variant_text(CLASSIFIER, [*targets(q.LOGITS), *FIXED_SIZE]))
    model = onnx.load(str(models["dynamic-hw"]))
    model.graph.input.append(helper.make_tensor_value_info("label:0", TensorProto.STRING, [1]))  # unused, as allowed
    onnx.save(model, str(tmp_path / "labelled.onnx"))
    result = CliRunner().invoke(cli, ["verify", str(recipe_file), str(tmp_path / "labelled.onnx"), "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert "input 'label:0' of type string" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_other_inputs_follow_their_dtype_and_shape_with_symbolic_dims_filled():
    """A symbolic dim is the batch when it is the first one or named as the image's batch dim; otherwise 1."""
    declared = {"image": (TensorProto.FLOAT, ["batch", 3, 8, 8]), "mask": (TensorProto.FLOAT, ["batch", "length"]),
                "ids": (TensorProto.INT64, [7, "n"]), "flags": (TensorProto.BOOL, ["unk__1"]),
                "late": (TensorProto.FLOAT16, [2, "batch"])}
    graph = helper.make_graph([], "inputs", [helper.make_tensor_value_info(name, dtype, shape)
                                             for name, (dtype, shape) in declared.items()], [])
    proto = helper.make_model(graph)
    names = ["mask", "ids", "flags", "late"]
    values = other_inputs(proto, names, 3, "batch", seed=5, path=Path("m.onnx"))
    assert {n: (v.shape, v.dtype.name) for n, v in values.items()} == {
        "mask": ((3, 1), "float32"), "ids": ((7, 1), "int64"), "flags": ((3,), "bool"), "late": ((2, 3), "float16")}
    assert all(((v >= 0.5) & (v < 1.5)).all() for v in (values["mask"], values["late"]))
    assert set(np.unique(values["ids"])) <= {0, 1}
    again = other_inputs(proto, names, 3, "batch", seed=5, path=Path("m.onnx"))
    assert all(np.array_equal(values[n], again[n]) for n in names)


@pytest.mark.parametrize("unknown", [-1, 0])
def test_dims_written_as_minus_one_or_zero_are_dynamic(unknown, tmp_path):
    """tf2onnx and Paddle write an unknown batch as -1 (or 0): apply makes it a named dim, verify runs (it crashed
    with an IndexError, exit 1), and the input file is left as it was."""
    from modelkit import pose_model

    path = pose_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = unknown
    onnx.save(model, str(path))
    before = path.read_bytes()
    result = apply(RECIPES / "hrnet_coco_pose.yaml", path, tmp_path / "p.onnx")
    for signature in (*result.plan.inputs, *result.plan.outputs):
        assert isinstance(signature.shape[0], str), signature  # named, not -1 or 0
        assert all(not isinstance(d, int) or d > 0 for d in signature.shape), signature
    if unknown < 0:  # onnxruntime runs a plain model whose batch is 0 at batch 0 only: no unpatched pipeline to compare
        report = verify(RECIPES / "hrnet_coco_pose.yaml", path, random=2, backends=("onnxruntime",))
        assert report, report.failures()
    assert path.read_bytes() == before


def test_custom_domains_declared_but_unused_are_kept_and_harmless(models, tmp_path):
    """Some exporters declare opsets of domains they never use (com.microsoft, ai.onnx.ml): apply keeps them (the
    patched model imports what the plain one did), verify passes on both backends and the IR converts."""
    from graphsurgery.irconvert import convert

    model = onnx.load(str(models["pose-ir3-opset9"]))
    model.opset_import.extend([onnx.helper.make_opsetid("com.microsoft", 1), onnx.helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 4  # the lowest IR version that allows several opset imports
    plain = tmp_path / "domains.onnx"
    onnx.save(model, str(plain))
    recipe = variant(POSE_CROP, [])
    patched = apply(recipe, plain, tmp_path / "patched.onnx").output
    domains = {entry.domain: entry.version for entry in onnx.load(str(patched)).opset_import}
    assert domains == {"": 9, "com.microsoft": 1, "ai.onnx.ml": 3}
    report = verify(recipe, plain, patched=patched, random=2)
    assert report, report.failures()
    assert [p.suffix for p in convert(patched, tmp_path / "patched.xml").written] == [".bin", ".xml"]


def test_a_declared_output_shape_that_contradicts_the_graph_is_refused(tmp_path):
    """A heatmap output declared 32 × 24 that the graph computes as 64 × 48 would be decoded with the wrong size:
    refused in one line (exit 2) by the checker's shape inference, nothing written."""
    from click.testing import CliRunner

    from graphsurgery.cli import cli

    from modelkit import pose_model

    model = onnx.load(str(pose_model(tmp_path / "pose.onnx")))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 32, 24
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    result = CliRunner().invoke(cli, ["apply", str(POSE_CROP), str(tmp_path / "wrong.onnx"), "-o",
                                      str(tmp_path / "out.onnx")])
    assert result.exit_code == 2 and "Inferred shape and existing shape differ" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.onnx").exists()
