"""Round 31 of issue 17 (hostile, blind): numeric and runtime-dependent hostility, run on an AMD EPYC (AVX2 only).

What it found:
- mmpose's DARK and UDP rescale each map by max(map) / max(blurred map): a map of zeros (a ReLU head's absent
  joint), or one holding NaN or ±inf, makes that 0 / 0, inf / inf or NaN, which mmpose (and onnxruntime) carry to a
  NaN keypoint while OpenVINO's Clip and Max on AVX2 drop the NaN and answer a finite one. ONNX leaves NaN through
  Clip and Max to the runtime, yet `verify` counted such a joint a real mismatch and FAILed a right patch on
  OpenVINO: the near-tie rules (a map's peak on the score ≤ 0 threshold) were skipped for a non-finite answer,
  and for UDP no heatmap grid was ever measured (its one-hot probe in a corner cell was refined off its cell), so
  every UDP mismatch was real.
- float16 heatmaps: the wobble's moved maps were cast back to float16, which rounded the move away; DARK and UDP
  of a right patch FAILed on onnxruntime alone.
- `topk` (k > 1) over logits holding a NaN: onnxruntime ranked the NaN first, OpenVINO on AVX2 second, the twin
  last; every later rank moved and a right patch FAILed. The graph now ranks NaN last.
- A wrong patch of a two-head SimCC model was an internal error (KeyError 'simcc_x'), not a FAIL.
- A detector that finds nothing on either side (a real one on random noise) PASSed any patch: empty sets agree.
- Integer outputs were compared through float64 (2^62 + 485 equalled 2^62 under an exact tolerance), and two
  agreeing infinities differed by NaN in the report ("|Δ| max nan", worst at an agreeing element).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphsurgery.compare import HeatmapGrid, compare_floats, compare_output
from graphsurgery.compare_detections import compare_detections
from graphsurgery.steps.base import Comparison
from graphsurgery.steps.detect import DetectionComparison
from graphsurgery.verification import verify

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
UDP = RECIPES / "mmpose_heatmap_udp.yaml"
DARK = RECIPES / "mmpose_heatmap_dark.yaml"
UNMAPPED = "coordinates could not be mapped to heatmap cells"
COORDINATES = Comparison("coordinates", rtol=0.0, atol=1e-3)
TIE = Comparison("float", rtol=1e-4, atol=1e-4)


def _odd_joints_model(path: Path) -> Path:
    """`pose_model` whose joint 3 map is all zeros (a ReLU head's absent joint) and joint 5 holds one NaN cell."""
    model = onnx.load(str(pose_model(path, dynamic_batch=True, output_name="raw")))
    zeros = np.zeros((1, 17, 64, 48), bool)
    zeros[0, 3] = True
    nan = np.zeros((1, 17, 64, 48), bool)
    nan[0, 5, 10, 10] = True
    model.graph.initializer.extend([numpy_helper.from_array(zeros, "zeros"), numpy_helper.from_array(nan, "nan"),
                                    numpy_helper.from_array(np.float32(0), "zero"),
                                    numpy_helper.from_array(np.float32(np.nan), "nan_value")])
    model.graph.node.extend([helper.make_node("Where", ["zeros", "zero", "raw"], ["cleared"]),
                             helper.make_node("Where", ["nan", "nan_value", "cleared"], ["heatmaps"])])
    model.graph.output[0].name = "heatmaps"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def odd_joints(tmp_path_factory) -> Path:
    return _odd_joints_model(tmp_path_factory.mktemp("round31") / "odd.onnx")


# --- the comparator: a map that decides nothing decides no mismatch ------------------------------------------------


def _one_joint(peak_map: np.ndarray, expected, actual):
    grid = HeatmapGrid(np.ones((1, 1, 2)), np.zeros((1, 1, 2)))
    return compare_output("keypoints", np.array([[actual]], np.float32), np.array([[expected]], np.float32),
                          COORDINATES, reference=peak_map[None, None], grid=grid, tie=TIE)


@pytest.mark.parametrize("fill", [0.0, np.nan, np.inf, -np.inf, -0.5],
                         ids=["zeros", "nan", "inf", "minus-inf", "invalid-joint"])
def test_a_nan_keypoint_from_a_map_that_decides_nothing_is_a_near_tie(fill):
    heatmap = np.full((8, 8), fill, np.float32)
    result = _one_joint(heatmap, [np.nan, np.nan], [3.0, 4.0])
    assert result and result.near_ties == 1 and result.mismatches == 0, result.summary()


def test_a_map_holding_one_nan_cell_decides_nothing():
    heatmap = np.random.default_rng(0).uniform(0.1, 1.0, (8, 8)).astype(np.float32)
    heatmap[2, 2] = np.nan
    result = _one_joint(heatmap, [np.nan, np.nan], [2.0, 2.0])
    assert result and result.near_ties == 1, result.summary()


def test_a_nan_keypoint_from_a_sound_map_is_still_a_real_mismatch():
    heatmap = np.random.default_rng(0).uniform(0.1, 1.0, (8, 8)).astype(np.float32)
    for expected, actual in (([np.nan, np.nan], [3.0, 4.0]), ([3.0, 4.0], [np.nan, np.nan])):
        result = _one_joint(heatmap, expected, actual)
        assert not result and result.mismatches == 1, result.summary()


# --- UDP gets a heatmap grid, and a right patch of odd maps passes ----------------------------------------------


def test_udp_keypoints_are_mapped_to_heatmap_cells(odd_joints):
    report = verify(UDP, odd_joints, random=1, backends=["onnxruntime"])
    assert not any(UNMAPPED in note for note in report.notes), report.notes
    assert report, report.failures()


@pytest.mark.parametrize("recipe", [UDP, DARK], ids=["udp", "dark"])
def test_a_right_patch_of_zero_and_nan_maps_passes_on_every_backend(odd_joints, recipe):
    report = verify(recipe, odd_joints, random=2)
    assert report, report.failures()


@pytest.mark.parametrize("recipe", [UDP, DARK], ids=["udp", "dark"])
def test_a_wrong_patch_of_zero_and_nan_maps_still_fails(odd_joints, recipe, tmp_path):
    from graphsurgery.api import apply

    wrong = tmp_path / "wrong.yaml"
    text = recipe.read_text()
    assert "std: [58.395, 57.12, 57.375]" in text
    wrong.write_text(text.replace("std: [58.395, 57.12, 57.375]", "std: [70.0, 70.0, 70.0]"))
    patched = apply(wrong, odd_joints, tmp_path / "wrong.onnx").output
    report = verify(recipe, odd_joints, patched=patched, random=2, backends=["onnxruntime"])
    assert not report
    keypoints = [r for pair in report.pairs for r in pair.results if r.output == "keypoints"]
    assert keypoints and all(r.mismatches > 0 for r in keypoints), [r.summary() for r in keypoints]


# --- float16 maps: the refinement's wobble is measured, not rounded away ---------------------------------------------


def _float16_plateaus(path: Path) -> Path:
    """`pose_model` → MaxPool 5×5 (plateaus, ties) → Cast to float16: float16 heatmaps behind a float32 network."""
    model = onnx.load(str(pose_model(path, dynamic_batch=True, output_name="raw")))
    model.graph.node.extend([helper.make_node("MaxPool", ["raw"], ["pooled"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
                             helper.make_node("Cast", ["pooled"], ["heatmaps"], to=onnx.TensorProto.FLOAT16)])
    model.graph.output[0].name = "heatmaps"
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("recipe", [UDP, DARK], ids=["udp", "dark"])
def test_a_right_refinement_of_float16_maps_passes(recipe, tmp_path):
    plain = _float16_plateaus(tmp_path / "half.onnx")
    report = verify(recipe, plain, random=2)  # onnxruntime alone: 0.002–0.003 px apart, wobble 0 (cast to float16)
    assert report, report.failures()


# --- SimCC: a wrong patch of a two-head model is a FAIL, not an internal error --------------------------------------


def test_a_wrong_simcc_patch_fails_cleanly(tmp_path):
    from graphsurgery.api import apply
    from test_simcc import RECIPE as SIMCC
    from test_simcc import two_head_model

    plain = two_head_model(tmp_path / "simcc.onnx")
    right, wrong = tmp_path / "right.yaml", tmp_path / "wrong.yaml"
    right.write_text(SIMCC.replace("KEEP", "false"))
    wrong.write_text(SIMCC.replace("KEEP", "false").replace("std: [58.395, 57.12, 57.375]", "std: [70.0, 70.0, 70.0]"))
    patched = apply(wrong, plain, tmp_path / "wrong.onnx").output
    report = verify(right, plain, patched=patched, random=2, backends=["onnxruntime"])  # KeyError 'simcc_x' (exit 3)
    assert not report and any("keypoints" in failure for failure in report.failures()), report.failures()


# --- top-k of logits holding a NaN: NaN ranks last on every runtime, as in the twin ------------------------------


def _nan_class_classifier(path: Path, opset: int = 17) -> Path:
    """[N, 3, 8, 8] → Flatten → MatMul → logits [N, 10] whose class 3 is NaN (a dead unit, a NaN weight row)."""
    rng = np.random.default_rng(4)
    mask = np.zeros((1, 10), bool)
    mask[0, 3] = True
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["raw"]),
             helper.make_node("Where", ["dead", "nan", "raw"], ["logits"])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (192, 10)).astype(np.float32), "w"),
             numpy_helper.from_array(mask, "dead"), numpy_helper.from_array(np.float32(np.nan), "nan")]
    graph = helper.make_graph(nodes, "nan-class",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_top_k_of_logits_with_a_nan_ranks_it_last_everywhere(tmp_path):
    from graphsurgery.api import apply

    text = (RECIPES / "imagenet_classifier.yaml").read_text()
    assert "    - softmax: {}\n" in text and "topk: {k: 5}" in text
    recipe = tmp_path / "logits.yaml"
    recipe.write_text(text.replace("    - softmax: {}\n", "").replace("topk: {k: 5}", "topk: {k: 5, source: output}"))
    plain = _nan_class_classifier(tmp_path / "nan.onnx")
    report = verify(recipe, plain, random=2)  # onnxruntime ranked the NaN first, OpenVINO (AVX2) second
    assert report, report.failures()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(recipe.read_text().replace("std: [0.229, 0.224, 0.225]", "std: [0.3, 0.3, 0.3]"))
    patched = apply(wrong, plain, tmp_path / "wrong.onnx").output
    assert not verify(recipe, plain, patched=patched, random=2, backends=["onnxruntime"])


# --- detections: nothing found on either side proves nothing -------------------------------------------------------


def _quiet_detector(path: Path) -> Path:
    """A 64×64 YOLOv8-shaped head [1, 5, 2] (one class) whose scores stay under nms's 0.25 whatever the image: a
    real detector on random noise. Its boxes move with the image, as a network's do."""
    head = np.zeros((1, 5, 2), np.float32)
    head[0, :, 0] = [20, 32, 20, 8, 0.1]
    head[0, :, 1] = [40, 20, 10, 10, 0.2]
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Add", ["head", "mean"], ["output0"])]
    graph = helper.make_graph(nodes, "quiet", [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT,
                                                                             [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, [1, 5, 2])],
                              [numpy_helper.from_array(head - np.float32(0.5) * (np.arange(5) == 4)[None, :, None]
                                                       .astype(np.float32), "head")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_a_detector_that_finds_nothing_proves_nothing(tmp_path):
    from graphsurgery.api import apply

    recipe = RECIPES / "yolov8_detector.yaml"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(recipe.read_text().replace("divide: 255", "divide: 300"))
    plain = _quiet_detector(tmp_path / "quiet.onnx")
    patched = apply(wrong, plain, tmp_path / "wrong.onnx").output  # other scores, none over 0.25 either
    for report in (verify(recipe, plain, patched=patched, random=2, backends=["onnxruntime"]),
                   verify(recipe, plain, random=2, backends=["onnxruntime"])):
        assert not report, "nothing detected on either side, and a PASS"
        assert any("proves nothing" in failure for failure in report.failures()), report.failures()


NAMES = {part: part for part in ("boxes", "scores", "classes", "count")}
RULES = DetectionComparison("detections", rtol=1e-4, atol=1e-4, score_threshold=0.25, iou_threshold=0.7,
                            max_detections=5)


def _detections(rows: list[tuple[int, float, tuple]], d: int = 5) -> dict[str, np.ndarray]:
    out = {"boxes": np.zeros((1, d, 4), np.float32), "scores": np.zeros((1, d), np.float32),
           "classes": np.full((1, d), -1, np.int64), "count": np.array([len(rows)], np.int64)}
    for slot, (label, score, box) in enumerate(rows):
        out["boxes"][0, slot], out["scores"][0, slot], out["classes"][0, slot] = box, score, label
    return out


def test_empty_sets_of_detections_prove_nothing():
    empty = compare_detections(NAMES, _detections([]), _detections([]), RULES)
    assert not empty and "proves nothing" in empty.summary(), empty.summary()
    extra = compare_detections(NAMES, _detections([(0, 0.9, (10, 10, 50, 80))]), _detections([]), RULES)
    assert not extra and extra.mismatches == 1 and extra.problem is None, extra.summary()
    found = compare_detections(NAMES, _detections([(0, 0.9, (10, 10, 50, 80))]),
                               _detections([(0, 0.9, (10, 10, 50, 80))]), RULES)
    assert found and found.matched == 1


# --- float outputs: an agreeing infinity is no difference; integers differ exactly --------------------------------


def test_agreeing_infinities_leave_the_differences_finite():
    result = compare_floats("heatmaps", np.array([np.inf, 1.0, -np.inf], np.float32),
                            np.array([np.inf, 2.0, -np.inf], np.float32), atol=1e-4, rtol=1e-4)
    assert not result and result.failed == 1
    assert result.max_abs == 1.0 and result.worst_index == [1], result.summary()  # it was nan, worst at [0]
    assert "nan" not in result.summary()


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integers_near_the_top_of_their_range_differ_exactly(dtype):
    top = np.iinfo(dtype).max
    result = compare_floats("label", np.array([top - 485, 7], dtype), np.array([top, 7], dtype), atol=0, rtol=0)
    assert not result and result.failed == 1 and result.max_abs == 485, result.summary()
    same = compare_floats("label", np.array([top, 7], dtype), np.array([top, 7], dtype), atol=0, rtol=0)
    assert same and same.max_abs == 0


def _labelled_model(path: Path, offset: int) -> Path:
    """`pose_model` with a second output `label` int64 [N]: the flat position of channel 0's maximum + offset."""
    model = onnx.load(str(pose_model(path, dynamic_batch=True)))
    model.graph.initializer.extend([numpy_helper.from_array(np.array(offset, np.int64), "offset"),
                                    numpy_helper.from_array(np.array(0, np.int64), "channel"),
                                    numpy_helper.from_array(np.array([0, -1], np.int64), "flat")])
    model.graph.node.extend([helper.make_node("Gather", ["input", "channel"], ["first"], axis=1),
                             helper.make_node("Reshape", ["first", "flat"], ["pixels"]),
                             helper.make_node("ArgMax", ["pixels"], ["brightest"], axis=1, keepdims=0),
                             helper.make_node("Add", ["brightest", "offset"], ["label"])])
    model.graph.output.append(helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N"]))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_an_exact_tolerance_on_a_large_integer_output_is_exact(tmp_path):
    from graphsurgery.api import apply

    recipe = tmp_path / "pose.yaml"
    text = (RECIPES / "hrnet_coco_pose.yaml").read_text()
    recipe.write_text(text.replace("output:\n", "output:\n  target: heatmaps\n", 1))
    plain = _labelled_model(tmp_path / "plain.onnx", 2**62)
    patched = apply(recipe, plain, tmp_path / "patched.onnx").output
    edited = onnx.load(str(patched))  # the label's offset one step of float64 off: 2^62 + 485
    offset = next(t for t in edited.graph.initializer if t.name == "offset")
    offset.CopyFrom(numpy_helper.from_array(np.array(2**62 + 485, np.int64), "offset"))
    onnx.save(edited, str(tmp_path / "edited.onnx"))
    right = verify(recipe, plain, patched=patched, random=1, backends=["onnxruntime"], tolerances={"label": (0, 0)})
    assert right, right.failures()
    wrong = verify(recipe, plain, patched=tmp_path / "edited.onnx", random=1, backends=["onnxruntime"],
                   tolerances={"label": (0, 0)})
    assert not wrong and any("label" in failure for failure in wrong.failures()), wrong.failures()
