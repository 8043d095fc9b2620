"""Splicing recipes into HRNet-shaped models: parity with the plain model + numpy twins, names, provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.model import PROVENANCE_KEY, ModelFacts, provenance
from graphsurgery.recipe import InputSection, Recipe, load_recipe, parse_recipe
from graphsurgery.runners import open_runner
from graphsurgery.steps.input import Normalize, Scale
from graphsurgery.twins import run_unpatched

from conftest import RECIPES
from modelkit import bgr_crops, pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"
IMAGE = RECIPES / "hrnet_coco_pose_image.yaml"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _feeds(recipe, batch: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    feeds = {"input": bgr_crops(batch, seed=seed)}
    extras = {}
    if any(s.step_name == "to_image" and s.mode == "original" for s in recipe.output.steps):
        extras = {"center": rng.uniform(50, 600, (batch, 2)).astype(np.float32),
                  "scale": rng.uniform(0.5, 3.0, (batch, 2)).astype(np.float32)}
    return feeds, extras


@pytest.mark.parametrize("recipe_path", [CROP, IMAGE], ids=["crop", "image"])
@pytest.mark.parametrize("opset", [9, 11, 13, 17, 18])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_patched_equals_plain_plus_twins(tiny_pose_models, tmp_path, recipe_path, opset, dynamic):
    plain = tiny_pose_models[(opset, dynamic)]
    before = _sha(plain)
    result = apply(recipe_path, plain, tmp_path / "patched.onnx")
    assert _sha(plain) == before, "the input model must never be modified"
    onnx.checker.check_model(str(result.output), full_check=True)

    recipe = load_recipe(recipe_path)
    batch = 3 if dynamic else 1
    feeds, extras = _feeds(recipe, batch)
    with open_runner("onnxruntime", result.output) as run_patched:
        got = run_patched({**feeds, **extras})
    with open_runner("onnxruntime", plain) as run_plain:
        want = run_unpatched(recipe, ModelFacts.of(onnx.load(str(plain)), recipe),
                             lambda x: run_plain({"input": x}), feeds["input"], extras)
    assert set(got) == {"keypoints", "scores", "heatmaps"}
    assert got["keypoints"].shape == (batch, 17, 2) and got["keypoints"].dtype == np.float32
    assert got["scores"].shape == (batch, 17, 1)
    if recipe_path == CROP:
        assert np.array_equal(got["keypoints"], want["keypoints"])
    else:  # original-image coordinates: float arithmetic on center/scale, compared as the step declares
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(got["heatmaps"], want["heatmaps"], rtol=1e-5, atol=1e-6)


def test_signature_and_shapes(tiny_pose_models, tmp_path):
    result = apply(CROP, tiny_pose_models[(17, True)], tmp_path / "p.onnx")
    model = onnx.load(str(result.output))

    def dims(value):
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    (inp,) = model.graph.input
    assert inp.name == "input" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims(inp) == ["N", 256, 192, 3]
    outputs = {o.name: dims(o) for o in model.graph.output}
    assert outputs == {"keypoints": ["N", 17, 2], "scores": ["N", 17, 1], "heatmaps": ["N", 17, 64, 48]}


def test_new_names_are_readable_and_never_collide(tmp_path):
    plain = pose_model(tmp_path / "m.onnx")
    model = onnx.load(str(plain))
    model.graph.node[0].name = "graphsurgery/pre/cast/Cast"  # a model that already uses our first name
    onnx.save(model, str(plain))
    result = apply(CROP, plain, tmp_path / "p.onnx")
    names = [n.name for n in onnx.load(str(result.output)).graph.node]
    assert len(names) == len(set(names))
    assert "graphsurgery/pre/cast/Cast_1" in names
    assert "graphsurgery/pre/normalize/Sub" in names and "graphsurgery/pre/normalize/Div" in names
    assert any(n.startswith("graphsurgery/post/heatmap_argmax/ReduceMin") for n in names)


def test_provenance_and_refusing_a_second_application(tiny_pose_models, tmp_path):
    first = apply(CROP, tiny_pose_models[(17, False)], tmp_path / "once.onnx").output
    (entry,) = provenance(onnx.load(str(first)))
    assert entry["recipe"] == "hrnet-coco-pose"
    assert entry["recipe_file_sha256"] == hashlib.sha256(CROP.read_bytes()).hexdigest()
    assert entry["recipe_sha256"] == load_recipe(CROP).sha256 != entry["recipe_file_sha256"]
    assert entry["tool"].startswith("graphsurgery ")
    with pytest.raises(GraphsurgeryError, match="already applied.*--force"):
        apply(CROP, first, tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists()


def test_recipe_identity_is_its_content(tiny_pose_models, tmp_path):
    """Comments, name, description and formatting do not change a recipe's identity; parameters do."""
    text = CROP.read_text()
    edited = parse_recipe("# a new comment\n" + text.replace("name: hrnet-coco-pose", "name: renamed")
                          .replace("{divide: 255}", "{ divide: 255.0 }"))
    assert edited.sha256 == load_recipe(CROP).sha256 and edited.file_sha256 != load_recipe(CROP).file_sha256
    changed = parse_recipe(text.replace("{divide: 255}", "{divide: 256}"))
    assert changed.sha256 != load_recipe(CROP).sha256
    first = apply(CROP, tiny_pose_models[(17, False)], tmp_path / "once.onnx").output
    with pytest.raises(GraphsurgeryError, match="already applied"):
        apply(edited, first, tmp_path / "again.onnx")
    built = Recipe(version=1, name="python-built", input=load_recipe(CROP).input, output=load_recipe(CROP).output)
    assert built.file_sha256 is None and built.sha256 == load_recipe(CROP).sha256
    with pytest.raises(GraphsurgeryError, match="already applied"):
        apply(built, first, tmp_path / "again.onnx")


def test_two_different_python_built_recipes_apply_one_after_the_other(tiny_pose_models, tmp_path):
    def halve(divide: float) -> Recipe:
        return Recipe(version=1, name="halve", input=InputSection(steps=(Scale(divide=divide),)))

    once = apply(halve(2), tiny_pose_models[(17, False)], tmp_path / "once.onnx").output
    twice = apply(halve(3), once, tmp_path / "twice.onnx").output
    assert [entry["recipe_sha256"] for entry in provenance(onnx.load(str(twice)))] == [halve(2).sha256,
                                                                                       halve(3).sha256]
    with pytest.raises(GraphsurgeryError, match="already applied"):
        apply(halve(3), twice, tmp_path / "thrice.onnx")


def test_models_patched_before_content_identities_are_still_recognised(tiny_pose_models, tmp_path):
    """Older provenance recorded the file's hash as recipe_sha256: the same file is still refused."""
    first = apply(CROP, tiny_pose_models[(17, False)], tmp_path / "once.onnx").output
    model = onnx.load(str(first))
    entry = {"recipe": "hrnet-coco-pose", "recipe_sha256": hashlib.sha256(CROP.read_bytes()).hexdigest(),
             "tool": "graphsurgery 0.1.0"}
    next(p for p in model.metadata_props if p.key == PROVENANCE_KEY).value = json.dumps([entry])
    onnx.save(model, str(first))
    with pytest.raises(GraphsurgeryError, match="already applied"):
        apply(CROP, first, tmp_path / "twice.onnx")


def test_force_applies_an_input_recipe_again(tiny_pose_models, tmp_path):
    text = "version: 1\nname: half\ninput:\n  steps: [{scale: {divide: 2}}]\n"
    recipe = parse_recipe(text)
    once = apply(recipe, tiny_pose_models[(17, False)], tmp_path / "once.onnx").output
    twice = apply(recipe, once, tmp_path / "twice.onnx", force=True).output
    model = onnx.load(str(twice))
    assert len(provenance(model)) == 2
    assert [p.key for p in model.metadata_props].count(PROVENANCE_KEY) == 1
    x = np.random.default_rng(1).normal(size=(1, 3, 256, 192)).astype(np.float32)
    with (
        open_runner("onnxruntime", twice) as run_twice,
        open_runner("onnxruntime", tiny_pose_models[(17, False)]) as run,
    ):
        np.testing.assert_allclose(
            run_twice({"input": x})["heatmaps"], run({"input": x / 4})["heatmaps"], rtol=1e-5, atol=1e-6
        )


def test_step_needing_a_newer_opset_is_refused_unless_upgrade(tiny_pose_models, tmp_path, monkeypatch):
    monkeypatch.setattr(Normalize, "min_opset", 13)
    plain = tiny_pose_models[(9, False)]
    with pytest.raises(GraphsurgeryError, match="needs opset 13.*--upgrade-opset"):
        apply(CROP, plain, tmp_path / "p.onnx")
    result = apply(CROP, plain, tmp_path / "p.onnx", upgrade_opset=True)
    assert result.plan.opset == 13
    assert onnx.load(str(result.output)).opset_import[0].version == 13


def test_facet_mismatch_names_the_missing_step(tiny_pose_models, tmp_path):
    text = CROP.read_text().replace("    - reverse_channels: {}\n", "")
    with pytest.raises(GraphsurgeryError, match="model wants RGB.*reverse_channels"):
        apply(parse_recipe(text), tiny_pose_models[(17, False)], tmp_path / "p.onnx")


def test_channel_count_must_match_normalize(tmp_path):
    text = (
        CROP.read_text().replace("[0.485, 0.456, 0.406]", "[0.5, 0.5]").replace("[0.229, 0.224, 0.225]", "[0.2, 0.2]")
    )
    with pytest.raises(GraphsurgeryError, match="2 mean/std values but the tensor has 3 channels"):
        apply(parse_recipe(text), pose_model(tmp_path / "m.onnx"), tmp_path / "p.onnx")


@pytest.mark.parametrize(("mean", "std"),
                         [("[0.5]", "[0.25]"), ("[0.5, 0.5, 0.5]", "[0.25]"), ("[0.5]", "[0.25, 0.25, 0.25]")])
def test_one_mean_or_std_value_serves_every_channel(tmp_path, mean, std):
    """As torchvision's Normalize broadcasts `mean=[0.5]`: one value is every channel's, the heatmaps of the model
    fed (x/255 − 0.5)/0.25 in RGB, computed here with numpy."""
    text = CROP.read_text().replace("[0.485, 0.456, 0.406]", mean).replace("[0.229, 0.224, 0.225]", std)
    plain = pose_model(tmp_path / "m.onnx")
    result = apply(parse_recipe(text), plain, tmp_path / "p.onnx")
    crops = bgr_crops(2)[:1]
    with open_runner("onnxruntime", result.output) as run_patched, open_runner("onnxruntime", plain) as run_plain:
        got = run_patched({"input": crops})["heatmaps"]
        rgb = np.transpose(crops[..., ::-1], (0, 3, 1, 2)).astype(np.float32)
        want = run_plain({"input": np.ascontiguousarray((rgb / np.float32(255) - np.float32(0.5)) / np.float32(0.25))})
    np.testing.assert_allclose(got, next(iter(want.values())), rtol=1e-6, atol=1e-6)


def test_several_inputs_need_a_target(tmp_path):
    plain = pose_model(tmp_path / "m.onnx")
    model = onnx.load(str(plain))
    model.graph.input.append(onnx.helper.make_tensor_value_info("aux", onnx.TensorProto.FLOAT, [1]))
    onnx.save(model, str(plain))
    with pytest.raises(GraphsurgeryError, match=r"2 inputs \('input', 'aux'\).*input\.target"):
        apply(CROP, plain, tmp_path / "p.onnx")
    text = CROP.read_text().replace("input:\n", "input:\n  target: input\n", 1)
    assert apply(parse_recipe(text), plain, tmp_path / "p.onnx").plan.input_target == "input"
    wrong = CROP.read_text().replace("input:\n", "input:\n  target: image\n", 1)
    with pytest.raises(GraphsurgeryError, match="no input named 'image'; its inputs: 'input', 'aux'"):
        apply(parse_recipe(wrong), plain, tmp_path / "q.onnx")


def test_external_data_is_written_beside_the_output(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    plain = pose_model(source / "m.onnx")
    model = onnx.load(str(plain))
    onnx.save(model, str(plain), save_as_external_data=True, location="m.weights", size_threshold=0)
    before = {p.name: _sha(p) for p in source.iterdir()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = apply(CROP, plain, out_dir / "p.onnx")
    assert {p.name for p in out_dir.iterdir()} == {"p.onnx", "p.onnx.data"}
    assert {p.name: _sha(p) for p in source.iterdir()} == before
    x = bgr_crops(1)
    with open_runner("onnxruntime", result.output) as run_ext:
        got = run_ext({"input": x})
    reference = apply(CROP, pose_model(tmp_path / "inline.onnx"), tmp_path / "inline.p.onnx").output
    with open_runner("onnxruntime", reference) as run_inline:
        want = run_inline({"input": x})
    assert np.array_equal(got["keypoints"], want["keypoints"])


def test_dry_run_writes_nothing(tiny_pose_models, tmp_path):
    result = apply(CROP, tiny_pose_models[(17, False)], tmp_path / "p.onnx", dry_run=True)
    assert result.output is None and not list(tmp_path.iterdir())
    assert result.plan.input_target == "input" and result.plan.output_target == "heatmaps"
    assert [str(s) for s in result.plan.inputs] == ["input: uint8[1×256×192×3]"]
    assert "keypoints: float32[1×17×2]" in [str(s) for s in result.plan.outputs]
