"""The Python API covers every CLI command, under the command's name, without importing a runtime up front."""

from __future__ import annotations

import json
import subprocess
import sys

import graphsurgery
from graphsurgery.cli import cli

from conftest import RECIPES


def test_every_command_has_a_python_function():
    for name in cli.commands:
        if name in ("schema", "steps"):  # documentation commands: recipe_json_schema() and the registry
            continue
        function = getattr(graphsurgery, name.replace("-", "_"), None)
        assert callable(function) and function.__doc__, name


def test_apply_and_inspect_through_the_package(tiny_pose_models, tmp_path):
    result = graphsurgery.apply(RECIPES / "hrnet_coco_pose.yaml", tiny_pose_models[(17, False)], tmp_path / "p.onnx")
    info = graphsurgery.inspect(result.output)
    assert [o["name"] for o in info.outputs] == ["keypoints", "scores", "heatmaps"]
    assert info.provenance[0]["recipe"] == "hrnet-coco-pose"
    assert info.to_dict()["outputs"] == info.outputs and json.loads(json.dumps(info.to_dict()))["opset"] == info.opset


def test_importing_the_package_loads_no_runtime():
    code = ("import sys, graphsurgery\n"
            "print(sorted(m for m in ('onnxruntime', 'openvino', 'torch') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
