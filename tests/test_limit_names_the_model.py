"""A runtime that runs out of memory under the process's memory limit (`ulimit -v`) says so in one line; the line
named no file (`convert` of a model of static batch 100,000 under `ulimit -v 4000000`: "OpenVINO ran out of
memory under the process's memory limit …"). It names the model the runtime was at."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from graphsurgery import limits
from graphsurgery.errors import GraphsurgeryError

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent


def test_convert_out_of_memory_under_a_limit_names_the_model(tmp_path):
    model = onnx.load(pose_model(tmp_path / "pose.onnx", dynamic_batch=True))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 100_000  # 100,000 crops of 256 × 192 at once
    big = tmp_path / "big.onnx"
    onnx.save(model, big)

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    done = subprocess.run([sys.executable, "-m", "graphsurgery", "convert", str(big), "-o", str(tmp_path / "big.xml")],
                          capture_output=True, text=True, preexec_fn=limited, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {big}: OpenVINO ran out of memory under the process's memory limit"), lines
    assert sorted(path.name for path in tmp_path.iterdir()) == ["big.onnx", "pose.onnx"]  # no output, no scratch


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError("std::bad_alloc")])
def test_every_runtime_limit_line_names_the_model_given(tmp_path, monkeypatch, failure):
    monkeypatch.setattr(limits, "memory_limit", lambda: "3,906 MiB (ulimit -v)")
    with pytest.raises(GraphsurgeryError) as refused:
        limits.refuse_if_limited(failure, "onnxruntime", tmp_path / "m.onnx")
    assert refused.value.path == str(tmp_path / "m.onnx") and "raise the limit" in refused.value.fix
