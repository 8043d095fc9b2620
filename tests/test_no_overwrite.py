"""No command writes over a file it reads, whatever the spelling or link, and nothing replaces what is not a
regular file: the model's external data, the recipe, the plain model under --json, an input image under run -o."""

from __future__ import annotations

import os
import shutil

import onnx
import pytest

from clikit import invoke
from graphsurgery.api import apply

from conftest import RECIPES, ROOT
from modelkit import pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"


def snapshot(*paths):
    return {path: path.read_bytes() for path in paths}


@pytest.fixture
def external(tmp_path):
    """A model whose weights live in `weights.bin` beside it (a name `convert` would also pick for its .bin)."""
    path = pose_model(tmp_path / "model.onnx")
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    return path, tmp_path / "weights.bin"


def test_apply_never_writes_over_the_models_external_data(external, tmp_path):
    model, weights = external
    before = snapshot(model, weights)
    for target in (weights, tmp_path / "sub" / ".." / "weights.bin"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        result = invoke("apply", CROP, model, "-o", target, "--force")
        assert result.exit_code == 2 and "would overwrite an input" in result.output, result.output
    os.link(weights, tmp_path / "hard.onnx")  # a hard link is the same file under another name
    result = invoke("apply", CROP, model, "-o", tmp_path / "hard.onnx", "--force")
    assert result.exit_code == 2 and "would overwrite an input" in result.output
    assert snapshot(model, weights) == before


def test_convert_never_writes_its_bin_over_the_models_external_data(external, tmp_path):
    model, weights = external
    before = snapshot(model, weights)
    result = invoke("convert", model, "-o", tmp_path / "weights.xml", "--force")
    assert result.exit_code == 2 and "would overwrite an input" in result.output, result.output
    assert snapshot(model, weights) == before


def test_reports_never_overwrite_an_input(tiny_pose_models, tmp_path):
    plain = tmp_path / "plain.onnx"
    shutil.copy(tiny_pose_models[(17, False)], plain)
    recipe = tmp_path / "recipe.yaml"
    shutil.copy(CROP, recipe)
    os.symlink(recipe, tmp_path / "link.json")
    before = snapshot(plain, recipe)
    for command in (["verify", recipe, plain, "--random", "1", "--backends", "onnxruntime"],
                    ["bench", recipe, plain, "--iterations", "1", "--warmup", "0"]):
        for target in (plain, recipe, tmp_path / "link.json"):
            option = "--json"
            result = invoke(*command, option, target)
            assert result.exit_code == 2 and "would overwrite an input" in result.output, (command, result.output)
    result = invoke("bench", recipe, plain, "--iterations", "1", "--warmup", "0", "--chart", plain)
    assert result.exit_code == 2
    assert snapshot(plain, recipe) == before


def test_nothing_replaces_a_fifo(tiny_pose_models, tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    result = invoke("apply", CROP, tiny_pose_models[(17, False)], "-o", fifo, "--force")
    assert result.exit_code == 2 and "not a regular file" in result.output
    assert fifo.is_fifo()


def test_run_never_writes_a_debug_image_over_an_input_image(tiny_pose_models, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "images" / "astronaut.jpg", folder / "a.jpg")
    shutil.copy(ROOT / "examples" / "images" / "cameraman.jpg", folder / "a_pose.jpg")  # named like a's debug image
    patched = apply(CROP, tiny_pose_models[(17, True)], tmp_path / "p.onnx").output
    before = snapshot(*folder.iterdir())
    result = invoke("run", patched, folder, "-o", folder, "--backend", "onnxruntime")
    assert result.exit_code == 2 and "would overwrite an input" in result.output, result.output
    assert snapshot(*folder.iterdir()) == before  # nothing moved in, not even keypoints.json
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a_pose.jpg"]


@pytest.mark.parametrize("foreign", ["astronaut_pose.jpg", "keypoints.json", "run.json"])
def test_run_never_replaces_a_file_it_did_not_write(tiny_pose_models, tmp_path, foreign):
    """The output folder may hold the user's own files: a debug image (or results file) of the same name is refused,
    while a second run into the folder replaces what the first one wrote (its run.json lists it)."""
    patched = apply(CROP, tiny_pose_models[(17, True)], tmp_path / "p.onnx").output
    images = ROOT / "examples" / "images"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / foreign).write_text("the user's own file")
    result = invoke("run", patched, images, "-o", mine, "--backend", "onnxruntime")
    assert result.exit_code == 2 and "is not the output of an earlier run" in result.output, result.output
    assert sorted(p.name for p in mine.iterdir()) == [foreign]
    assert (mine / foreign).read_text() == "the user's own file"
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces its own earlier outputs
        result = invoke("run", patched, images, "-o", out, "--backend", "onnxruntime")
        assert result.exit_code == 0, result.output
    assert {"run.json", "keypoints.json", "astronaut_pose.jpg"} <= {p.name for p in out.iterdir()}
