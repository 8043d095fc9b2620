"""Round 47: what a seeded fuzz campaign found (2,100 mutated models through inspect, apply, verify and convert;
1,200 schema-valid but odd recipes through apply and verify; /tmp/r47).

- A model output whose batch is declared as a number the network does not compute (3, 2^40 or 2^62 where it
  computes the caller's N) passed apply; verify's decoder probe then fed its cut graph one sample against that
  declared batch, and ONNX Runtime's refusal was an internal error (exit 3); at 2^62 the steps' Reshape overflowed
  and apply's patched model failed the checker, "a graphsurgery bug". `probe.settle_output_sizes` frees such a batch.
- `softmax` on an integer model output (a classifier ending in a Cast to int32) made a Softmax of int32, and the
  patched model failed the checker, "a graphsurgery bug": refused in one line, as heatmap_argmax refuses one.
- `flip_average` without `flip_test`, on a model exported at batch 1 (a recipe without an input section, whose
  caller would feed crops and mirrors), split 1 in two: the patched model failed the checker, "a graphsurgery bug".
- A network output holding inf (an inf weight or bias) made the decoder probe's `inf - inf`: numpy's "invalid
  value" warning, four lines on stderr of a verify that passed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2

from modelkit import declared_batch, pose_model, softmax_then

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
POSE_RECIPE = RECIPES / "hrnet_coco_pose.yaml"


@pytest.mark.parametrize("batch", [3, 2**40])
def test_a_declared_output_batch_does_not_end_the_decoder_probe_in_an_internal_error(tmp_path, batch):
    """Was `internal error (InvalidArgument: … Got invalid dimensions for input: heatmaps … Expected: 3)`."""
    model = declared_batch(tmp_path / "declared.onnx", batch, on="output")
    result = invoke("verify", POSE_RECIPE, model, "--random", "2", "--backends", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "internal error" not in result.output


def test_an_output_batch_declared_past_int64_products_is_freed_not_a_checker_failure(tmp_path):
    """Was `the patched model fails the ONNX checker: Field 'shape' of 'type' is required but missing — fix: report
    this … (a graphsurgery bug)`: the argmax's Reshape of 2^62 × 17 × 3,072 overflowed in shape inference."""
    model = declared_batch(tmp_path / "huge.onnx", 2**62, on="output")
    out = tmp_path / "patched.onnx"
    result = invoke("apply", POSE_RECIPE, model, "-o", out)
    assert result.exit_code == 0, result.output
    assert "not a batch of 4,611,686,018,427,387,904" in result.output
    onnx.checker.check_model(str(out), full_check=True)
    scores = next(value for value in onnx.load(str(out)).graph.output if value.name == "scores")
    assert scores.type.tensor_type.HasField("shape")


def test_softmax_of_an_integer_output_is_refused_in_one_line(tmp_path):
    """Was `the patched model fails the ONNX checker: … Softmax … unsupported type: tensor(int32) — fix: report
    this … (a graphsurgery bug)`."""
    model = onnx.load(str(softmax_then(tmp_path / "cls.onnx", "Identity")))
    model.graph.node[-1].output[0] = "prob_float"
    model.graph.node.append(helper.make_node("Cast", ["prob_float"], ["prob"], to=TensorProto.INT32))
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT32
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "int_out.onnx"))
    result = invoke("apply", RECIPES / "imagenet_classifier.yaml", tmp_path / "int_out.onnx", "-o",
                    tmp_path / "out.onnx")
    one_line_exit_2(result, "int_out.onnx", "output.steps[0].softmax", "int32, not floating point",
                    "set output.target to the logits output")
    assert not (tmp_path / "out.onnx").exists()


def test_flip_average_on_an_output_fixed_at_batch_one_is_refused_in_one_line(tmp_path):
    """Was `the patched model fails the ONNX checker: … (op_type:Split, node name: graphsurgery/post/flip_average/
    Split): … not evenly splittable — fix: report this … (a graphsurgery bug)`."""
    recipe = yaml.safe_load((RECIPES / "hrnet_coco_topdown.yaml").read_text())
    del recipe["input"]
    recipe["output"]["steps"][-1] = {"to_image": {"mode": "crop"}}
    del recipe["output"]["steps"][2]  # quarter_offset: kept simple
    path = tmp_path / "no_input.yaml"
    path.write_text(yaml.safe_dump(recipe))
    model = pose_model(tmp_path / "static.onnx")  # exported at batch 1
    result = invoke("apply", path, model, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "static.onnx", "output.steps[0].flip_average", "batch is fixed at 1",
                    "add `flip_test: {}`")
    assert not (tmp_path / "out.onnx").exists()


def test_a_network_output_holding_inf_verifies_without_numpy_warnings(tmp_path):
    """Was `RuntimeWarning: invalid value encountered in subtract` (decoder_probe.py) on stderr before the PASS."""
    model = onnx.load(str(pose_model(tmp_path / "inf.onnx", dynamic_batch=True)))
    bias = next(tensor for tensor in model.graph.initializer if tensor.name == "conv.bias")
    values = numpy_helper.to_array(bias).copy()
    values[1] = np.inf
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "inf.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = invoke("verify", POSE_RECIPE, tmp_path / "inf.onnx", "--random", "2", "--backends", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "RuntimeWarning" not in result.output


# --- what round 47 found and left to verification.py and the decoder probe ---------------------------------------


def test_a_refusal_while_verify_makes_its_samples_names_the_model_and_the_recipe(tmp_path):
    """Was `error: the model takes batches of 1000000; 2 crops do not divide into them — fix: …`: samples.py knows
    no file, and the line named none."""
    recipe = yaml.safe_load(POSE_RECIPE.read_text())
    recipe["input"]["tensor"]["shape"] = [1_000_000, 256, 192, 3]
    path = tmp_path / "million.yaml"
    path.write_text(yaml.safe_dump(recipe))
    model = pose_model(tmp_path / "pose.onnx", dynamic_batch=True)
    result = invoke("verify", path, model, "--random", "2", "--backends", "onnxruntime")
    one_line_exit_2(result, "pose.onnx (patched by", "million.yaml", "2 crops do not divide")


def test_a_refusal_about_the_samples_of_a_given_patched_model_names_that_model(tmp_path):
    """Was `error: verify cannot make values for the extra input(s) 'boxes' — fix: …` (to_image in boxes mode without
    crop_boxes): the patched model the user gave is the file to name."""
    recipe = yaml.safe_load((RECIPES / "hrnet_coco_topdown.yaml").read_text())
    recipe["input"]["steps"] = [step for step in recipe["input"]["steps"] if "crop_boxes" not in step]
    path = tmp_path / "boxes_without_crops.yaml"
    path.write_text(yaml.safe_dump(recipe))
    model = pose_model(tmp_path / "pose.onnx", dynamic_batch=True)
    assert invoke("apply", path, model, "-o", tmp_path / "patched.onnx").exit_code == 0
    result = invoke("verify", path, model, "--patched", tmp_path / "patched.onnx", "--random", "2", "--backends",
                    "onnxruntime")
    one_line_exit_2(result, "patched.onnx", "extra input(s) 'boxes'")


@pytest.mark.parametrize("recipe", ["mmpose_heatmap_udp.yaml", "mmpose_heatmap_dark.yaml"])
def test_dark_and_udp_recipes_probe_how_invalid_joints_are_marked(tmp_path, recipe):
    """Was a PASS: a UDP patch made with `heatmap_argmax: {invalid: zero}` against the shipped `minus_one`, even at
    --random 8 (random crops never give a map of maximum ≤ 0, and DARK and UDP recipes had no probe)."""
    model = pose_model(tmp_path / "pose.onnx", dynamic_batch=True)
    wrong = tmp_path / "zero.yaml"
    text = (RECIPES / recipe).read_text()
    assert text.count("invalid: minus_one") == 1
    wrong.write_text(text.replace("invalid: minus_one", "invalid: zero"))
    assert invoke("apply", wrong, model, "-o", tmp_path / "zero.onnx").exit_code == 0
    result = invoke("verify", RECIPES / recipe, model, "--patched", tmp_path / "zero.onnx", "--random", "8",
                    "--backends", "onnxruntime")
    assert result.exit_code == 1, result.output
    assert "output steps on a probe output: keypoints" in " ".join(result.output.split())
    right = invoke("verify", RECIPES / recipe, model, "--random", "4")  # both backends: every joint's maps ≤ −0.5
    assert right.exit_code == 0, right.output
    assert "output steps on a probe output" in right.output


@pytest.mark.parametrize("recipe, bound, wrong", [("mmpose_heatmap_udp.yaml", 50.0, 55.0),
                                                  ("mmpose_heatmap_udp.yaml", 1e-3, 1e-2),
                                                  ("mmpose_heatmap_dark.yaml", 1e-10, 1e-3)])
def test_a_refinement_clipping_at_another_bound_fails_a_short_verify(tmp_path, recipe, bound, wrong):
    """Was a PASS at --random 4 (round 51's leftover): UDP's clip moved from 50 to 55 (its 1e-3 to 1e-2, DARK's
    floor from 1e-10 to 1e-3) changes no keypoint of random crops, whose maps reach no bound; the probe lowered every
    joint. Its valid joints are now Gaussians peaking on either side of the bounds."""
    model = pose_model(tmp_path / "pose.onnx", dynamic_batch=True)
    patched = tmp_path / "patched.onnx"
    assert invoke("apply", RECIPES / recipe, model, "-o", patched).exit_code == 0
    proto = onnx.load(str(patched))
    bounds = [tensor for tensor in proto.graph.initializer
              if tensor.name.startswith("graphsurgery/post/") and numpy_helper.to_array(tensor).size == 1
              and np.isclose(numpy_helper.to_array(tensor).item(), bound, rtol=1e-6, atol=0)]
    assert len(bounds) == 1, [tensor.name for tensor in bounds]
    bounds[0].CopyFrom(numpy_helper.from_array(np.array(wrong, np.float32), bounds[0].name))
    onnx.save(proto, str(tmp_path / "wrong.onnx"))
    result = invoke("verify", RECIPES / recipe, model, "--patched", tmp_path / "wrong.onnx", "--random", "4",
                    "--backends", "onnxruntime")
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "output steps on a probe output: keypoints" in " ".join(result.output.split())


@pytest.mark.parametrize("axis", [0, 1], ids=["columns", "rows"])
def test_a_refined_recipe_whose_last_two_rows_or_columns_are_swapped_fails(tmp_path, axis):
    """Was a PASS (round 52): a UDP recipe whose heatmap_argmax answered row H − 2 for H − 1 and the reverse (or so
    for the last two columns): no sample, and no joint of the probe, peaked there. The probe's Gaussians now include
    peaks in the last (and first) row and column."""
    model = pose_model(tmp_path / "pose.onnx", dynamic_batch=True)
    patched = tmp_path / "patched.onnx"
    assert invoke("apply", RECIPES / "mmpose_heatmap_udp.yaml", model, "-o", patched).exit_code == 0
    proto = onnx.load(str(patched))
    table = next(t for t in proto.graph.initializer if t.name.endswith("heatmap_argmax/coordinates"))
    values = numpy_helper.to_array(table).copy()
    column = values[:-1, axis]  # the table's last entry is its "none"
    last = column.max()
    values[:-1, axis] = np.where(column == last, last - 1, np.where(column == last - 1, last, column))
    table.CopyFrom(numpy_helper.from_array(values, table.name))
    onnx.save(proto, str(tmp_path / "swapped.onnx"))
    result = invoke("verify", RECIPES / "mmpose_heatmap_udp.yaml", model, "--patched", tmp_path / "swapped.onnx",
                    "--random", "4", "--backends", "onnxruntime")
    assert result.exit_code == 1, result.output
    assert "output steps on a probe output: keypoints" in " ".join(result.output.split())


@pytest.mark.parametrize("recipe", ["mmpose_heatmap_udp.yaml", "mmpose_heatmap_dark.yaml"])
def test_right_refined_patches_pass_a_probe_of_every_drawn_peak(tmp_path, recipe):
    """133 joints and a batch of 2 reach every Gaussian of the ladder, corners included: an invalid joint after a
    corner's peak reads it (UDP's wrapped index), its step ill-conditioned, and graph and twin were 0.69 cells apart
    there; the probe allows what float rounding moves (`Probe.wobbles`), as the samples do."""
    model = pose_model(tmp_path / "pose.onnx", dynamic_batch=True, joints=133)
    result = invoke("verify", RECIPES / recipe, model, "--random", "2")
    assert result.exit_code == 0, result.output
    assert "output steps on a probe output" in result.output
