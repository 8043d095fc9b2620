"""Each call of the Python API is one command, as the CLI runs it (`modelio.command`): a model the call read and
checked stays as read to the call's end. Through the API nothing held it: a patched model replaced between its
check and ONNX Runtime's read went to the runtime unchecked, where the CLI refused it (round 44)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import graphsurgery
from graphsurgery import modelio
from graphsurgery.errors import GraphsurgeryError

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_pose.yaml"


@pytest.fixture
def replaced_as_the_runtime_reads(monkeypatch):
    """`replace(path)`: the model at `path` is replaced by a copy of itself (a new file, the same bytes) as the first
    runtime opens it; returns the list of paths replaced."""
    reading = modelio.read_by_path
    replaced: list[Path] = []

    def replace(path: Path) -> list[Path]:
        def replaced_first(model):
            if Path(model) == path and not replaced:
                shutil.copy(path, path.with_name("copy.onnx"))
                os.replace(path.with_name("copy.onnx"), path)
                replaced.append(path)
            return reading(model)

        monkeypatch.setattr(modelio, "read_by_path", replaced_first)
        return replaced

    return replace


def test_a_model_replaced_within_an_api_call_is_refused(patched, plain, tmp_path, replaced_as_the_runtime_reads):
    model = tmp_path / "patched.onnx"
    shutil.copy(patched, model)
    replaced = replaced_as_the_runtime_reads(model)
    with pytest.raises(GraphsurgeryError, match="changed while the command ran"):
        graphsurgery.verify(RECIPE, plain, patched=model, random=2, backends=["onnxruntime"])
    assert replaced == [model]


def test_a_model_rewritten_between_two_api_calls_is_read_again(patched, plain, tmp_path):
    """Guard: a call is a command, not the process: an application may rewrite a model between two calls."""
    model = tmp_path / "patched.onnx"
    shutil.copy(patched, model)
    assert graphsurgery.verify(RECIPE, plain, patched=model, random=2, backends=["onnxruntime"])
    shutil.copy(patched, tmp_path / "copy.onnx")
    os.replace(tmp_path / "copy.onnx", model)
    assert graphsurgery.verify(RECIPE, plain, patched=model, random=2, backends=["onnxruntime"])
    assert modelio._COMMAND.get() is None  # each call's reads ended with it


def test_an_api_call_within_a_command_is_part_of_it(patched, plain, tmp_path):
    """A model read by the outer command and rewritten before the inner call is refused by it: the outer read
    holds."""
    model = tmp_path / "patched.onnx"
    shutil.copy(patched, model)
    with modelio.one_command():
        modelio.load_model(model)
        shutil.copy(patched, tmp_path / "copy.onnx")
        os.replace(tmp_path / "copy.onnx", model)
        with pytest.raises(GraphsurgeryError, match="changed while the command ran"):
            graphsurgery.verify(RECIPE, plain, patched=model, random=2, backends=["onnxruntime"])
