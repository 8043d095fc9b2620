"""Round 79: a review of round 78. Verify's crops before their rounding were cut from a 40 × 30 image whatever the
caller's image, so a right top-down patch of a caller with a fixed size whose crop reads that input ([1, 3, 100, 80]
float) was an internal error (ONNX Runtime: "Got invalid dimensions for input: image"). `chain` renamed the
detector's tensors named like the chained model's, not its nodes or local functions: a detector node named like a
glue node or the pose part's (`pose/conv`) made a model ONNX Runtime refuses ("two nodes with same node name", told
as the chained model's fault), and a local function named like the pose part's (`pose/F`) was an internal error
(`onnx.compose`: "overlapping local function names")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from onnx import helper

from graphsurgery import chaining
from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.images import read_image
from graphsurgery.verification import verify

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
CROP = "graphsurgery/pre/crop_boxes/"
ROW = "onnxruntime: crops of 4 boxes before rounding"
# the top-down recipe for a caller that sends float32 RGB [1, 3, 100, 80]: crop_boxes reads the graph input itself
FIXED = """version: 1
name: hrnet-fixed-size
input:
  name: image
  tensor: {dtype: float32, layout: NCHW, color: RGB, shape: [1, 3, 100, 80]}
  model: {layout: NCHW, color: RGB}
  steps:
    - crop_boxes: {}
    - scale: {divide: 255}
    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
    - flip_test: {}
output:
  steps:
    - flip_average: {}
    - heatmap_argmax: {}
    - quarter_offset: {}
    - to_image: {mode: boxes}
  names: {keypoints: keypoints, scores: scores}
  keep_original: false
"""


# --- 1. verify's crops before their rounding, for a caller of a fixed size --------------------------------------------


def test_a_fixed_size_caller_compares_its_crops_before_rounding(tmp_path):
    """Was: an internal error. The crops before their rounding are cut from an image of the caller's fixed size now
    (the same boxes: the same positions), compared exactly with the twin's; a wrong lerp weight still FAILs there."""
    recipe = tmp_path / "fixed.yaml"
    recipe.write_text(FIXED)
    plain = pose_model(tmp_path / "plain.onnx", input_hw=(64, 48))
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    report = verify(recipe, plain, patched=right, backends=["onnxruntime"])
    assert report, report.failures()
    [pair] = report.crop_values
    assert pair.name == ROW and [result.output for result in pair.results] == ["crops before rounding"]
    assert all(result and result.max_abs == 0.0 and result.elements == 4 * 3 * 64 * 48 for result in pair.results)
    assert not [note for note in report.notes if "before their rounding" in note], report.notes
    model = onnx.load(str(right))  # round 76's wrong lerp weight: its split factor made a divisor
    next(node for node in model.graph.node if node.name == CROP + "Mul_117").op_type = "Div"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    wrong = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    assert not wrong and any(line.startswith(f"{ROW}: crops before rounding") for line in wrong.failures())


# --- 2. a detector's nodes and local functions named like the chained model's ----------------------------------------


def test_a_detector_node_named_like_a_glue_or_pose_node(chain_patched, tmp_path):
    """Was: `chain --check` exit 2, "onnxruntime cannot load the model … two nodes with same node name", the chained
    model written so. The detector's node is renamed as its tensors are; the chained graph's node names are unique."""
    pose_node = next(node.name for node in onnx.load(str(chain_patched["pose"])).graph.node if node.name)
    model = onnx.load(str(chain_patched["detector"]))
    model.graph.node[0].name, model.graph.node[1].name = "graphsurgery/chain/keep", "pose/" + pose_node
    onnx.save(model, str(tmp_path / "detector.onnx"))
    out = tmp_path / "chained.onnx"
    result = CliRunner().invoke(cli, ["chain", str(tmp_path / "detector.onnx"), str(chain_patched["pose"]), "-o",
                                      str(out), "--check", str(PHOTO), "--backends", "onnxruntime"],
                                terminal_width=250)
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    names = [node.name for node in onnx.load(str(out)).graph.node if node.name]
    assert len(names) == len(set(names))
    assert {"graphsurgery/chain/detector/graphsurgery/chain/keep", f"graphsurgery/chain/detector/pose/{pose_node}",
            "graphsurgery/chain/keep", f"pose/{pose_node}"} <= set(names)


def _with_function(path: Path, out: Path, name: str) -> Path:
    """The model at `path` with a local function `name` (domain "local": an Identity) called after its first Conv."""
    model = onnx.load(str(path))
    model.functions.append(helper.make_function("local", name, ["x"], ["y"], [helper.make_node("Identity", ["x"],
                                                                                               ["y"])],
                                                [helper.make_opsetid("", 17)]))
    model.opset_import.append(helper.make_opsetid("local", 1))
    index, conv = next((index, node) for index, node in enumerate(model.graph.node) if node.op_type == "Conv")
    made = conv.output[0]
    conv.output[0] = made + "_before_call"
    model.graph.node.insert(index + 1, helper.make_node(name, [made + "_before_call"], [made], domain="local",
                                                        name=f"call {name}"))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def test_a_detector_function_named_like_the_pose_parts(chain_patched, tmp_path):
    """Was: an internal error ("Can't merge models with overlapping local function names … pose/F"). The detector's
    local functions are named after graphsurgery/chain/detector/ in the chained model (as onnx.compose names the pose
    model's after pose/), the parts check comparing them under that name: a changed one is named."""
    detector = _with_function(chain_patched["detector"], tmp_path / "detector.onnx", "pose/F")
    pose = _with_function(chain_patched["pose"], tmp_path / "pose.onnx", "F")
    out = tmp_path / "chained.onnx"
    chaining.chain(detector, pose, out)
    model = onnx.load(str(out))
    assert sorted((f.domain, f.name) for f in model.functions) == [("local", "graphsurgery/chain/detector/pose/F"),
                                                                   ("local", "pose/F")]
    assert chaining.parts_difference(out, detector, pose) is None
    [row] = chaining.verify_chain(out, detector, pose, [read_image(PHOTO)[None]], backends=("onnxruntime",))
    assert row["people"] > 0 and max(row[key] for key in ("boxes", "scores", "keypoints", "keypoint_scores",
                                                          "detector", "random_boxes", "crop_positions")) == 0.0
    next(f for f in model.functions if f.name.startswith("graphsurgery/")).node[0].op_type = "Neg"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    assert chaining.parts_difference(tmp_path / "wrong.onnx", detector, pose) \
        == "the detector's function 'pose/F''s node 'Identity' (Identity) is a Neg there"
    # and the chained model's answers are the two models': its keypoints those of the pose model on its boxes
    image = read_image(PHOTO)[None]
    chained = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": image})
    corners = np.asarray(chained[0], np.float32)
    boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    alone = ort.InferenceSession(str(pose), providers=["CPUExecutionProvider"]).run(
        ["keypoints"], {"image": image, "boxes": boxes})[0]
    np.testing.assert_array_equal(chained[2], alone)


def test_two_versions_of_a_functions_domain_are_refused_in_one_line(chain_patched, tmp_path):
    """Was: an internal error (`onnx.compose`: "different operator set ids for a given domain"): the two models'
    local functions' domain at 1 and 2. Now exit 2, naming the domain, its versions and the pose model; at one
    version they chain."""
    detector = _with_function(chain_patched["detector"], tmp_path / "detector.onnx", "G")
    pose = _with_function(chain_patched["pose"], tmp_path / "pose.onnx", "G")
    model = onnx.load(str(pose))
    next(opset for opset in model.opset_import if opset.domain == "local").version = 2
    onnx.save(model, str(tmp_path / "pose_v2.onnx"))
    result = CliRunner().invoke(cli, ["chain", str(detector), str(tmp_path / "pose_v2.onnx"), "-o",
                                      str(tmp_path / "chained.onnx")], terminal_width=250)
    assert result.exit_code == 2 and "Traceback" not in result.output and "internal error" not in result.output
    assert "pose_v2.onnx: the detector imports operator set 'local' at version 1 and the pose model at 2" \
        in " ".join(result.output.split()), result.output
    assert not (tmp_path / "chained.onnx").exists()
    chaining.chain(detector, pose, tmp_path / "chained.onnx")
    assert chaining.parts_difference(tmp_path / "chained.onnx", detector, pose) is None
