"""Hostile round 58: mutants of right patches that verify PASSed on ordinary inputs.

Round 58 ran round 52's mutation harness again, on a new sample of mutants of all 14 configs. A letterbox whose left
padding was computed from a model width one too large PASSed: verify's sizes gave odd excesses to the height only
(wider images), so no image was padded on the left by a half. A box wholly in the letterbox padding that
boxes_to_image kept PASSed: the stand-in detector's boxes are all tens of pixels tall. And a flip-test recipe
(flip_average first) had no decoder probe at all, so a validity threshold of 1e-3 for 0 PASSed. A DARK patch refining
joints one cell in from the border PASSed: the probe drew 5 of its 7 Gaussians on 17 joints, none there. Each test here
failed before its fix; the right patches still pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_a_left_padding_from_a_width_one_too_large_fails(tmp_path):
    """Round 58's yolov8_detector m0101: the centred letterbox's top-left padding (model size − resized size) // 2
    with the model's width 161 for 160 moves every image padded on the left by a pixel where that side's excess is
    odd; verify's sizes for a 160 × 128 model gave the width's excess 0 and 2 modulo 4 only (the height's odd ones
    came from wider images), and it PASSed. `Resize.offset_sizes` now adds taller images for the width's."""
    plain = pose_model(tmp_path / "plain.onnx", input_hw=(128, 160))
    recipe = tmp_path / "letterbox.yaml"
    recipe.write_text(POSE_LETTERBOX)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    halves = [node for node in model.graph.node if node.name.startswith("graphsurgery/pre/resize/")
              and node.op_type == "Div" and constants.get(node.input[1]) is not None
              and numpy_helper.to_array(constants[node.input[1]]).tolist() == [2, 2]]
    [spare] = [node for node in model.graph.node if node.output[0] == halves[0].input[0]]
    target = constants[spare.input[0]]
    assert numpy_helper.to_array(target).tolist() == [128, 160]
    target.CopyFrom(numpy_helper.from_array(np.array([128, 161], np.int64), target.name))
    report = verify(recipe, plain, patched=_save(model, tmp_path / "wrong.onnx"), backends=["onnxruntime"])
    assert not report
    assert any("input steps" in line for line in report.failures()), report.failures()
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()


def test_a_box_wholly_in_the_top_padding_kept_fails_on_the_probe(tmp_path):
    """Round 58's yolov8_detector m0365: boxes_to_image drops a box wholly in the letterbox padding (its far corner
    at or before the image's first pixel, or its near one at or past the last); a patch testing the far corner's x
    only kept boxes wholly above the image. The stand-in detector's boxes are tens of pixels tall, none wholly in a
    padding, so it PASSed. The decoder probe now holds a thin box along each edge of the model's input
    (`detector_probe._edge_boxes`), which lies in the padding at the image sizes padded there."""
    from modelkit import zoo_model

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "yolov8_detector.yaml"
    plain = zoo_model(tmp_path / "yolov8.onnx", "yolov8-tiny", opset=17)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    constants = {tensor.name: numpy_helper.to_array(tensor).tolist() for tensor in model.graph.initializer}
    [far] = [node for node in model.graph.node if node.name.startswith("graphsurgery/post/boxes_to_image/")
             and node.op_type == "Slice" and [constants.get(name) for name in node.input[1:4]] == [[2], [4], [2]]]
    model.graph.initializer.append(numpy_helper.from_array(np.array([3], np.int64), "far_x_only"))
    far.input[2] = "far_x_only"
    report = verify(recipe, plain, patched=_save(model, tmp_path / "wrong.onnx"), backends=["onnxruntime"])
    assert not report
    assert all(report.pairs) and not all(report.probes), report.failures()
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()


def test_a_flip_test_recipe_is_probed(tmp_path):
    """Round 58's hrnet_coco_topdown mutants: heatmap_argmax calling a joint valid above 1e-3 for above 0 (or at 0,
    its Greater made GreaterOrEqual) PASSed: the decoder probe and its cell probes were made only where heatmap_argmax
    is the first output step, and a flip test's recipe starts with flip_average. Its probe now leaves the flipped half
    zero, so the average is the probe's maps halved, exactly (`decoder_probe._probed_heatmaps`)."""
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_topdown.yaml"
    plain = pose_model(tmp_path / "plain.onnx")
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    for mistake in ("threshold 1e-3", "at 0"):
        model = onnx.load(str(right))
        zeros = {t.name for t in model.graph.initializer if t.name.startswith("graphsurgery/post/heatmap_argmax/")
                 and numpy_helper.to_array(t).shape == () and numpy_helper.to_array(t) == 0}
        [valid] = [node for node in model.graph.node if node.name.startswith("graphsurgery/post/heatmap_argmax/")
                   and node.op_type == "Greater" and node.input[1] in zeros]
        if mistake == "at 0":
            valid.op_type = "GreaterOrEqual"
        else:
            model.graph.initializer.append(numpy_helper.from_array(np.array(1e-3, np.float32), "faint"))
            valid.input[1] = "faint"
        report = verify(recipe, plain, patched=_save(model, tmp_path / "wrong.onnx"), backends=["onnxruntime"])
        assert not report and all(report.pairs) and not all(report.probes), (mistake, report.failures())
    report = verify(recipe, plain, patched=right)
    assert report and [probe.name for probe in report.probes] == ["onnxruntime: output steps on a probe output"], (
        report.failures())


def test_a_dark_refinement_one_cell_further_in_fails(tmp_path):
    """Round 58's mmpose_heatmap_dark m0388: DARK refines a joint whose cell is more than one from each border
    (mmpose's 1 < x < W − 2); a patch comparing `<= 0` for `< 0` refined the second and the one before the last cell
    too, and read past the map there. The probe drew its Gaussians on every third joint, 5 of 17, and `LADDER`'s
    first five peak in the middle or the last cell; the samples' differences were as unstable as the reference's own.
    Now two of every three joints draw, and the ladder holds peaks in the second and the one before the last cell."""
    from modelkit import zoo_model

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "mmpose_heatmap_dark.yaml"
    plain = zoo_model(tmp_path / "simplebaseline.onnx", "simplebaseline-tiny", opset=17)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    reduced = {node.output[0] for node in model.graph.node if node.op_type == "ReduceMax"}
    [interior] = [node for node in model.graph.node if node.name.startswith("graphsurgery/post/dark_refine/")
                  and node.op_type == "Less" and node.input[0] in reduced]
    interior.op_type = "LessOrEqual"
    try:
        report = verify(recipe, plain, patched=_save(model, tmp_path / "wrong.onnx"), backends=["onnxruntime"])
    except GraphsurgeryError as exc:  # the read past the map's last cell
        assert "cannot run the model" in str(exc)
    else:
        assert not report and not all(report.probes), report.failures()
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()
