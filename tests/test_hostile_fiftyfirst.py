"""Hostile round 51: a node between the spliced input chain and the network.

verify compares the network input the patched graph computes with the input steps' twins, because a trained network
answers an input step slightly off within the float tolerance of its outputs. The tensor it compared was the one the
spliced chain (`graphsurgery/pre/…` nodes) makes and the network reads; a node named otherwise put between the two
(an Add of 4e-4: the mean 0.5002 for 0.5) was trusted as the network, so the chain's right tensor was compared, the
network was fed another, and the trained RapidOCR classifier passed on the photos with outputs within the tolerance
(beyond it on other inputs). Now the tensor is the one the plain network's own nodes read in place of their input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import pose_model, wheel_model

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "examples" / "images"


def _between(patched: Path, out: Path, node_name: str, value: float) -> Path:
    """`patched` with an Add of `value` between the spliced input chain and the network's first node."""
    model = onnx.load(patched)
    graph = model.graph
    made = {name for node in graph.node if node.name.startswith("graphsurgery/pre/") for name in node.output}
    reads = [(node, slot) for node in graph.node if not node.name.startswith("graphsurgery/")
             for slot, name in enumerate(node.input) if name in made]
    assert len(reads) == 1
    node, slot = reads[0]
    graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), "shift"))
    graph.node.insert(list(graph.node).index(node), helper.make_node("Add", [node.input[slot], "shift"], ["shifted"],
                                                                     name=node_name))
    node.input[slot] = "shifted"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out)
    return out


def _network_input_failed(report) -> bool:
    return any("(network input)" in line for line in report.failures())


def test_a_trained_classifier_fed_a_shifted_input_past_its_chain_fails(tmp_path):
    recipe = ROOT / "recipes" / "rapidocr_cls.yaml"
    plain = wheel_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    wrong = _between(right, tmp_path / "wrong.onnx", "net/Add", 4e-4)
    report = verify(recipe, plain, patched=wrong, images=IMAGES, backends=["onnxruntime"])
    assert not report and _network_input_failed(report), report.failures()
    assert verify(recipe, plain, patched=right, images=IMAGES, backends=["onnxruntime"])


@pytest.mark.parametrize("node_name", ["net/Add", "conv_pre"])
def test_the_network_input_compared_is_the_one_the_network_reads(tmp_path, node_name):
    recipe = ROOT / "recipes" / "hrnet_coco_pose.yaml"
    plain = pose_model(tmp_path / "plain.onnx")
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    wrong = _between(right, tmp_path / "wrong.onnx", node_name, 0.05)
    report = verify(recipe, plain, patched=wrong, random=2, backends=["onnxruntime"])
    assert not report and _network_input_failed(report), report.failures()


def test_the_network_is_found_by_what_it_writes_when_its_nodes_are_unnamed(tmp_path):
    recipe = ROOT / "recipes" / "hrnet_coco_pose.yaml"
    model = onnx.load(pose_model(tmp_path / "named.onnx"))
    for node in model.graph.node:
        node.name = ""
    onnx.save(model, tmp_path / "plain.onnx")
    right = apply(recipe, tmp_path / "plain.onnx", tmp_path / "right.onnx").output
    wrong = _between(right, tmp_path / "wrong.onnx", "", 0.05)
    report = verify(recipe, tmp_path / "plain.onnx", patched=wrong, random=2, backends=["onnxruntime"])
    assert not report and _network_input_failed(report), report.failures()
