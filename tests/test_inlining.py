"""Model-local functions read inlined by OpenVINO (`graphsurgery.inlining`): torch's `export_modules_as_functions`
writes a module as a function and the graph as calls of it; OpenVINO 2026.4 has no conversion rule for a call, so
`convert`, `run` and verify's OpenVINO side refused such a model (round 97's leftover)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from clikit import invoke
from graphsurgery.api import apply
from graphsurgery.irconvert import convert
from graphsurgery.runners import open_runner
from graphsurgery.verification import verify

from conftest import RECIPES

POSE = RECIPES / "hrnet_coco_pose.yaml"


class Head(torch.nn.Module):
    """17 heatmaps at a quarter of the input's size, exported as the function `__main__.Head`."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 17, 4, stride=4)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Pose(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = Head()

    def forward(self, x):
        return self.head(x)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("functions") / "pose.onnx"
    torch.onnx.export(Pose().eval(), torch.zeros(1, 3, 64, 48), str(path), input_names=["input"],
                      output_names=["heatmaps"], opset_version=17, export_modules_as_functions={Head}, dynamo=False)
    assert onnx.load(str(path)).functions, "torch wrote no local function: the test proves nothing"
    return path


def test_convert_writes_an_ir_answering_as_onnx_runtime(exported, tmp_path):
    before = hashlib.sha256(exported.read_bytes()).hexdigest()
    convert(exported, tmp_path / "pose.xml")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 48)).astype(np.float32)
    output = onnx.load(str(exported)).graph.output[0].name  # torch names an output a call makes by number
    with open_runner("onnxruntime", exported) as run:
        expected = run({"input": x})[output]
    with open_runner("openvino", tmp_path / "pose.xml") as run:
        np.testing.assert_allclose(run({"input": x})[output], expected, rtol=1e-4, atol=1e-5)
    assert hashlib.sha256(exported.read_bytes()).hexdigest() == before  # the user's file as it was


def test_the_patched_model_verifies_and_runs_on_openvino(exported, tmp_path):
    report = verify(POSE, exported, random=3)
    assert report, report.failures()
    assert any(pair.name.startswith("openvino") for pair in report.pairs)
    patched = apply(POSE, exported, tmp_path / "patched.onnx").output
    assert onnx.load(str(patched)).functions  # apply keeps the model's own structure: only OpenVINO's copy is inlined
    photo = tmp_path / "photo.png"
    import cv2

    cv2.imwrite(str(photo), np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8))
    result = invoke("run", patched, photo, "-o", tmp_path / "out", "--backend", "openvino")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "keypoints.json").is_file()


def test_a_model_onnx_cannot_inline_goes_to_openvino_as_it_is(exported, tmp_path, monkeypatch):
    """Where onnx's inliner refuses the model, OpenVINO reads the file as it is: its own refusal of the call, in one
    line naming the file, no scratch copy left behind."""
    import onnx.inliner

    from graphsurgery.errors import GraphsurgeryError

    def refuses(model):
        raise RuntimeError("the inliner cannot")

    monkeypatch.setattr(onnx.inliner, "inline_local_functions", refuses)
    with pytest.raises(GraphsurgeryError, match="OpenVINO cannot convert") as refused:
        convert(exported, tmp_path / "pose.xml")
    assert str(exported) in str(refused.value) and not (tmp_path / "pose.xml").exists()
