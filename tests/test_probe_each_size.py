"""The decoder probe runs at every image size verify feeds, where the output steps map back through the caller's
image (boxes_to_image, to_image with mode image).

Round 52 left it open: the letterbox geometry that boxes_to_image reads, recorded with one constant off (the model's
size less one in the scaled side's numerator), was wrong for 8 of verify's 9 random sizes and right for the first.
The probe ran on the first sample only, and random images give a detector too few detections to show it (one in 8
images): it PASSed `verify` and `verify --random 4`.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model

ROOT = Path(__file__).resolve().parent.parent
DETECTOR = ROOT / "recipes" / "yolov8_detector.yaml"
#: The constant the geometry record scales the other side by (the model's W, H), as `Resize` names it
SCALED_BY = "graphsurgery/pre/geometry/bound_swapped"


@pytest.fixture(scope="module", params=["detector", "pose"])
def patched(request, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(recipe, plain model, right patch) of a recipe that maps back through a letterbox."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "detector":
        from modelkit import zoo_model

        recipe, plain = DETECTOR, zoo_model(folder / "yolov8.onnx", "yolov8-tiny", opset=17)
    else:
        recipe, plain = folder / "pose.yaml", pose_model(folder / "plain.onnx", input_hw=(128, 160))
        recipe.write_text(POSE_LETTERBOX)
    return recipe, plain, apply(recipe, plain, folder / "right.onnx").output


def test_a_geometry_record_off_at_other_sizes_fails(patched, tmp_path):
    recipe, plain, right = patched
    model = onnx.load(str(right))
    [scaled_by] = [tensor for tensor in model.graph.initializer if tensor.name == SCALED_BY]
    scaled_by.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scaled_by) - 1, SCALED_BY))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(model, str(wrong))
    report = verify(recipe, plain, patched=wrong, random=4, backends=["onnxruntime"])
    assert not report
    assert any("output steps on a probe output of a " in line for line in report.failures()), report.failures()


def _probed_sizes(report) -> list[str]:
    return [probe.name.rsplit(" of a ", 1)[1] for probe in report.probes[1:]]


@pytest.mark.parametrize("random", [None, 12])  # 12: verify's sizes again, each probed once
def test_the_right_patch_passes_a_probe_at_each_size(patched, random):
    recipe, plain, right = patched
    report = verify(recipe, plain, patched=right, random=random)
    assert report, report.failures()
    first, *others = [f"{w}×{h} image" for w, h in dict.fromkeys(report.sizes)]
    assert report.probes[0].name == "onnxruntime: output steps on a probe output"  # the first size's, as before
    assert _probed_sizes(report) == others and len(others) >= 7, [probe.name for probe in report.probes]


def test_a_recipe_that_does_not_map_back_keeps_one_probe(tmp_path):
    plain = pose_model(tmp_path / "plain.onnx", input_hw=(128, 160))
    recipe = tmp_path / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX.replace("to_image: {mode: image}", "quarter_offset: {}"))
    report = verify(recipe, plain, backends=["onnxruntime"])
    assert report, report.failures()
    assert [probe.name for probe in report.probes] == ["onnxruntime: output steps on a probe output"]


def test_a_last_column_off_by_one_fails_on_the_cell_probes_of_another_size(tmp_path):
    """Round 52's m0235: heatmap_argmax's last column numbered one less PASSed `--random 4` on a letterbox pose
    recipe: the cell probes (peaks on the edges) ran at the first size only, whose last column lies in the padding.
    They now run at every size, with the probe of that size."""
    plain, recipe = pose_model(tmp_path / "plain.onnx", input_hw=(128, 160)), tmp_path / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX)
    model = onnx.load(str(apply(recipe, plain, tmp_path / "right.onnx").output))
    name = "graphsurgery/post/heatmap_argmax/last_column"
    [last] = [tensor for tensor in model.graph.initializer if tensor.name == name]
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) - 1, name))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", random=4, backends=["onnxruntime"])
    assert not report
    assert all(probe for probe in report.probes[:1]) and not all(report.probes), report.failures()
