"""Architectures exported from PyTorch (examples/zoo, tiny widths, seeded weights) patched with the shipped recipes:
a ResNet-style classifier with the ImageNet recipe, a SimpleBaseline pose net (384×288 → 96×72) with the HRNet
recipes; and the worked example of README.md (Patch your own model), command by command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.images import read_image
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import load_recipe
from graphsurgery.runners import BACKENDS, open_runner
from graphsurgery.twins import run_unpatched

import quirkykit as q

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = ROOT / "recipes" / "imagenet_classifier.yaml"
POSE_CROP = ROOT / "recipes" / "hrnet_coco_pose.yaml"
POSE_IMAGE = ROOT / "recipes" / "hrnet_coco_pose_image.yaml"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    from examples.zoo.export import export_zoo

    folder = tmp_path_factory.mktemp("zoo")
    return {"resnet": export_zoo(folder / "resnet.onnx", "resnet-tiny", opset=11),
            "simplebaseline": export_zoo(folder / "simplebaseline.onnx", "simplebaseline-tiny", opset=9,
                                         dynamic_batch=True)}


def test_exports_compute_what_torch_computes(zoo):
    import torch

    from examples.zoo.models import build_zoo_model

    for name, preset, batch in (("resnet", "resnet-tiny", 1), ("simplebaseline", "simplebaseline-tiny", 2)):
        model = build_zoo_model(preset)
        x = torch.randn(batch, 3, *model.config.input_size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = model(x).numpy()
        with open_runner("onnxruntime", zoo[name]) as run:
            got = next(iter(run({"input": x.numpy()}).values()))
        assert got.shape == ((1, 1000) if name == "resnet" else (2, 17, 96, 72))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def photo_and_random_images() -> list[np.ndarray]:
    """The astronaut photo (512×512, as RGB) and random images smaller, larger and of other aspect ratios."""
    rng = np.random.default_rng(0)
    photo = read_image(ROOT / "examples" / "images" / "astronaut.jpg")[..., ::-1]
    randoms = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((224, 224), (300, 451), (150, 97))]
    return [np.ascontiguousarray(photo)[None], *(r[None] for r in randoms)]


def test_classifier_top5_equals_the_plain_model_with_numpy(zoo, tmp_path):
    recipe = load_recipe(CLASSIFIER)
    patched = apply(recipe, zoo["resnet"], tmp_path / "resnet.patched.onnx").output
    onnx.checker.check_model(str(patched), full_check=True)
    facts = ModelFacts.of(onnx.load(str(zoo["resnet"])), recipe)
    for image in photo_and_random_images():
        q.assert_parity(recipe, zoo["resnet"], patched, image)  # every output, both backends
        with open_runner("onnxruntime", zoo["resnet"]) as plain:
            want = run_unpatched(recipe, facts, lambda x: plain({"input": x}), image)
        for backend in BACKENDS:
            with open_runner(backend, patched) as run:
                got = run({"input": image})
            np.testing.assert_array_equal(got["indices"], want["indices"])
            np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe_path", [POSE_CROP, POSE_IMAGE], ids=["crop", "image"])
def test_simplebaseline_with_the_hrnet_recipes(recipe_path, zoo, tmp_path):
    recipe = load_recipe(recipe_path)
    patched = apply(recipe, zoo["simplebaseline"], tmp_path / "sb.patched.onnx").output
    onnx.checker.check_model(str(patched), full_check=True)
    crops = np.random.default_rng(0).integers(0, 256, (2, 384, 288, 3), dtype=np.uint8)
    extras = {}
    if recipe_path == POSE_IMAGE:
        extras = {"center": np.array([[320.0, 240.0], [101.5, 377.0]], np.float32),
                  "scale": np.array([[1.5, 2.0], [0.75, 1.0]], np.float32)}
    out = q.assert_parity(recipe, zoo["simplebaseline"], patched, crops, extras=extras)["openvino"]
    assert out["keypoints"].shape == (2, 17, 2) and out["heatmaps"].shape == (2, 17, 96, 72)
    if recipe_path == POSE_CROP:  # crop pixels: inside the 288 × 384 crop
        assert (out["keypoints"] >= 0).all() and (out["keypoints"] < [288, 384]).all()


def test_the_worked_example_runs_as_written(zoo, tmp_path):
    """README.md (Patch your own model): inspect → apply → verify, the commands as the page gives them."""
    plain = tmp_path / "resnet.onnx"
    plain.write_bytes(zoo["resnet"].read_bytes())
    runner = CliRunner()
    inspected = runner.invoke(cli, ["inspect", str(plain), "--json"])
    assert inspected.exit_code == 0
    info = json.loads(inspected.output)
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]
    applied = runner.invoke(cli, ["apply", str(CLASSIFIER), str(plain)])
    assert applied.exit_code == 0, applied.output
    assert "input: uint8[1×H×W×3]" in applied.output and (tmp_path / "resnet.patched.onnx").exists()
    verified = runner.invoke(cli, ["verify", str(CLASSIFIER), str(plain), "--random", "4"])
    assert verified.exit_code == 0, verified.output
    assert "PASS" in verified.output
