"""A model's signature is read and checked once while its files stay as read (`runners.model_signature`): each
runtime a command opens asks it, and reading the model again every time was 4 % of the suite's CPU. A file
rewritten since, or its external data, is read again; within a command, a signature taken from memory holds the
files to what was read as a new read does (`modelio.read_by_path`)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

import graphsurgery.modelio as modelio
from graphsurgery.errors import ModelError
from graphsurgery.runners import model_signature

from modelkit import pose_model


@pytest.fixture
def loads(monkeypatch):
    """The models `load_model` read, in order."""
    read = []
    real = modelio.load_model

    def counted(path):
        read.append(path)
        return real(path)

    monkeypatch.setattr(modelio, "load_model", counted)
    return read


def test_an_unchanged_model_is_read_once_a_rewritten_one_again(tmp_path, loads):
    model = pose_model(tmp_path / "pose.onnx")
    first = model_signature(model)
    assert model_signature(model) == first and len(loads) == 1
    proto = onnx.load(str(model))
    proto.graph.output[0].name = "renamed"
    proto.graph.node[0].output[0] = "renamed"
    onnx.save(proto, str(tmp_path / "other.onnx"))
    os.replace(tmp_path / "other.onnx", model)
    assert [port.name for port in model_signature(model).outputs] == ["renamed"] and len(loads) == 2


def test_rewritten_external_data_is_read_again(tmp_path, loads):
    proto = onnx.load(str(pose_model(tmp_path / "plain.onnx")))
    model = tmp_path / "external.onnx"
    onnx.save(proto, str(model), save_as_external_data=True, location="weights.bin", size_threshold=0)
    model_signature(model)
    model_signature(model)
    assert len(loads) == 1
    (tmp_path / "weights.bin").write_bytes((tmp_path / "weights.bin").read_bytes()[:-4])  # one float short
    with pytest.raises(ModelError, match="weights.bin|external data"):
        model_signature(model)
    assert len(loads) == 2


def test_within_a_command_a_remembered_signature_holds_the_file_to_what_was_read(tmp_path, loads):
    model = pose_model(tmp_path / "pose.onnx")
    with modelio.one_command():
        model_signature(model)
    with modelio.one_command():
        model_signature(model)  # from memory
        assert len(loads) == 1
        pose_model(tmp_path / "swap.onnx", seed=1)
        os.replace(tmp_path / "swap.onnx", model)
        with pytest.raises(ModelError, match="changed while the command ran"), modelio.read_by_path(model):
            pass


def test_a_model_or_data_file_removed_after_its_signature_was_kept_is_refused(tmp_path, loads):
    proto = onnx.load(str(pose_model(tmp_path / "plain.onnx")))
    model = tmp_path / "external.onnx"
    onnx.save(proto, str(model), save_as_external_data=True, location="weights.bin", size_threshold=0)
    model_signature(model)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError, match="weights.bin"):
        model_signature(model)
    model.unlink()
    with pytest.raises(ModelError, match="no such model file"):
        model_signature(model)
    assert len(loads) == 3


def test_verify_reads_each_model_once(tmp_path, monkeypatch):
    """verify read the patched model three times (its signature, its own read, the exposed copy) and the plain one
    three (its own, apply's, its signature): 0.3 s a read for HRNet-W32. Its own reads now give the signatures, and
    apply splices a copy of its plain model."""
    from graphsurgery.verification import verify

    reads = []
    real = modelio._read_and_check
    monkeypatch.setattr(modelio, "_read_and_check", lambda path: reads.append(path.name) or real(path))
    plain = pose_model(tmp_path / "plain.onnx")
    report = verify(Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_pose.yaml", plain, random=2)
    assert report, report.failures()
    assert reads.count("patched.onnx") == 1 and reads.count("plain.onnx") == 1, reads


def test_verify_against_a_reference_reads_the_plain_model_once(tmp_path, monkeypatch):
    """As verify: apply splices a copy of the plain model verify_reference read (it read the model again)."""
    import numpy as np

    from graphsurgery.verification import verify

    from modelkit import bgr_crops

    reads = []
    real = modelio._read_and_check
    monkeypatch.setattr(modelio, "_read_and_check", lambda path: reads.append(path.name) or real(path))
    plain = pose_model(tmp_path / "plain.onnx")
    np.savez(tmp_path / "reference.npz", input=bgr_crops(1, seed=3), keypoints=np.zeros((1, 17, 2), np.float32))
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_pose.yaml"
    verify(recipe, plain, reference=tmp_path / "reference.npz", backends=("onnxruntime",))
    assert reads.count("plain.onnx") == 1, reads
