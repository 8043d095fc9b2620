"""`apply` frees the original model's weights before saving with a full garbage collection only for models whose
weights are large: on small models the collection was 9 % of the test suite's CPU and freed a few kB."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

import graphsurgery.api as api
from graphsurgery.api import apply

from modelkit import pose_model

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_pose.yaml"


@pytest.fixture
def collections(monkeypatch):
    """The full collections `apply` asks for, counted."""
    asked = []
    monkeypatch.setattr(api.gc, "collect", lambda *args: asked.append(args))
    return asked


def test_a_small_model_is_saved_without_a_collection_a_large_one_after(tmp_path, collections, monkeypatch):
    model = pose_model(tmp_path / "pose.onnx")
    apply(RECIPE, model, tmp_path / "small.onnx")
    assert collections == []
    monkeypatch.setattr(api, "COLLECT_FROM_BYTES", 1)  # the same model, taken for a large one
    apply(RECIPE, model, tmp_path / "large.onnx")
    assert collections == [()]
    small, large = (onnx.load(str(tmp_path / name)) for name in ("small.onnx", "large.onnx"))
    assert small.graph.SerializeToString() == large.graph.SerializeToString()


def test_weights_in_memory_count_inline_tensors_not_external_ones(tmp_path):
    proto = onnx.load(str(pose_model(tmp_path / "pose.onnx")))
    inline = sum(numpy_helper.to_array(tensor).nbytes for tensor in proto.graph.initializer)
    assert inline > 0 and api._weights_in_memory(proto) == inline
    onnx.save(proto, str(tmp_path / "external.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    external = onnx.load(str(tmp_path / "external.onnx"), load_external_data=False)
    assert api._weights_in_memory(external) == 0
