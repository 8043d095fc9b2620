"""Hostile round 61: mutation testing of verify on recipes earlier rounds did not cover (an NHWC classifier, top-k
of 1 and of every class, a static batch of 2, top-left and crop fits mapped back to the image, DFL, YOLOX and
float16 v5 heads, other flip pairs, SimCC at another split ratio). What passed: a letterbox keeps an image's
aspect-kept side at one pixel or more, and verify's images never scaled a side below one, so patches keeping it at
2, or recording 0 (or −1) for it in the geometry `to_image` maps keypoints back through, PASSed (keypoints up to
470 px off on a 1 × 385 image), and one resampling with pytorch_half_pixel for half_pixel (they part only where a
side of two pixels or more becomes one). Verify now feeds such thin images (`samples._thin_sizes`). And a crop
rounding its kept side half to even (covering 36 of a 32 model) had its halves only past the widths
`Resize._half_sizes` scanned, so a patch testing the quotient's parity with Div for Mod PASSed: the scan now reaches
four times the model's width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphsurgery.api import apply
from graphsurgery.samples import RESIZE_SIZES, resize_sizes
from graphsurgery.steps.resize import Resize
from graphsurgery.verification import verify

from modelkit import pose_model
from quirkykit import classifier

TOP_LEFT_CLASSIFIER = """version: 1
name: top-left-classifier
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - resize: {interpolation: linear, fit: letterbox, pad_anchor: top_left, side_rounding: ceil, pad_value: 0}
    - scale: {divide: 255}
output:
  steps:
    - softmax: {}
    - topk: {k: 10}
  names: {indices: indices, scores: scores}
"""
CROP_HALVES = """version: 1
name: nhwc-crop-halves
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NHWC, color: RGB}
  steps:
    - cast: {}
    - resize: {interpolation: linear, fit: crop, crop_fraction: 0.875, side_rounding: round}
    - scale: {divide: 255}
output:
  steps:
    - softmax: {}
    - topk: {k: 1}
  names: {indices: indices, scores: scores}
"""

TOP_LEFT = """version: 1
name: pose-top-left
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - resize: {interpolation: linear, fit: letterbox, pad_anchor: top_left, pad_value: 0}
    - layout: {to: NCHW}
    - scale: {divide: 255}
output:
  steps:
    - heatmap_argmax: {}
    - quarter_offset: {}
    - to_image: {mode: image}
  names: {keypoints: keypoints, scores: scores}
"""
#: the letterbox's floor of one pixel for the resized [h, w] (`Resize._fitted_hw`), and the geometry record's
RESIZE_ONE, GEOMETRY_ONE = "graphsurgery/pre/resize/one", "graphsurgery/pre/geometry/one"


@pytest.fixture(scope="module")
def top_left(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(recipe, plain model, right patch) of a top-left letterbox pose recipe mapped back to the image."""
    folder = tmp_path_factory.mktemp("thin")
    plain, recipe = pose_model(folder / "plain.onnx", input_hw=(64, 48)), folder / "pose.yaml"
    recipe.write_text(TOP_LEFT)
    return recipe, plain, apply(recipe, plain, folder / "right.onnx").output


def with_floor(right: Path, path: Path, name: str, floor: list[int]) -> Path:
    """The right patch with the one-pixel floor `name` of the resized [h, w] set to `floor`."""
    model = onnx.load(str(right))
    [one] = [tensor for tensor in model.graph.initializer if tensor.name == name]
    one.CopyFrom(numpy_helper.from_array(np.array(floor, np.int64), name))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("name", "floor"), [(RESIZE_ONE, [1, 2]), (RESIZE_ONE, [2, 1]), (GEOMETRY_ONE, [2, 2]),
                                             (GEOMETRY_ONE, [-1, -1])])
def test_a_side_kept_at_another_floor_fails(top_left, tmp_path, name, floor):
    """[1, 2] and [2, 1] resize a thin image's short side to 2 pixels (only a tall one, or a wide one, shows it);
    the geometry's [2, 2] maps keypoints back through a side of 2, and [−1, −1] through a side of 0 (a division by
    zero: keypoints hundreds of pixels off)."""
    recipe, plain, right = top_left
    wrong = with_floor(right, tmp_path / "wrong.onnx", name, floor)
    assert not verify(recipe, plain, patched=wrong, backends=["onnxruntime"])


def test_the_right_patch_passes(top_left):
    recipe, plain, right = top_left
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()
    assert {(193, 2), (2, 257)} <= set(report.sizes)


def test_thin_sizes_only_where_a_side_can_scale_below_a_pixel():
    """A letterbox gets both, fit height the tall one (its height is the model's), crop and stretch none (a crop
    covers the model, a stretch ignores the aspect), nor a 1 × 1 letterbox (every image's sides are 1 already)."""
    assert resize_sizes(Resize(size=(64, 48), fit="letterbox"))[-2:] == ((193, 2), (2, 257))
    assert resize_sizes(Resize(size=(48, 192), fit="height"))[-1] == (2, 193)
    assert not {(769, 2), (2, 193)} & set(resize_sizes(Resize(size=(48, 192), fit="crop")))
    assert resize_sizes(Resize(size=(64, 64))) == RESIZE_SIZES
    assert resize_sizes(Resize(size=(1, 1), fit="letterbox")) == RESIZE_SIZES


def test_a_resize_mapping_pixels_another_way_where_two_become_one_fails(tmp_path):
    """pytorch_half_pixel samples a side resized to one pixel at its first pixel, half_pixel between the two: a
    2 × 129 image's height, rounded up to 1 of 32."""
    plain = classifier(tmp_path / "plain.onnx", opset=13, ir_version=8, hw=(32, 32))
    recipe = tmp_path / "top_left.yaml"
    recipe.write_text(TOP_LEFT_CLASSIFIER)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    [resize] = [node for node in model.graph.node if node.op_type == "Resize"]
    [mode] = [attribute for attribute in resize.attribute if attribute.name == "coordinate_transformation_mode"]
    mode.s = b"pytorch_half_pixel"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    assert not verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    assert verify(recipe, plain, patched=right)


def test_a_crop_rounding_halves_by_another_parity_test_fails(tmp_path):
    """Half to even rounds the quotient q + ½ up where q is odd (`Resize._divide`: q mod 2 = 1); with Div for Mod
    (q / 2 = 1) only q of 2 or 3 count as odd, so an 88 × 64 image's side of 49.5 becomes 49, not 50."""
    plain = classifier(tmp_path / "plain.onnx", opset=13, ir_version=8, layout="NHWC", hw=(32, 32))
    recipe = tmp_path / "crop.yaml"
    recipe.write_text(CROP_HALVES)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    [parity] = [node for node in model.graph.node if node.name == "graphsurgery/pre/resize/Mod"]
    parity.op_type = "Div"
    del parity.attribute[:]
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    assert not verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()
    assert report.sizes[:2] == [(72, 64), (88, 64)]  # the two halves, 40.5 and 49.5, lead: `--random 2` feeds them


@pytest.fixture(scope="module")
def yolox(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(recipe, plain model, right patch) of a YOLOX head (the zoo YOLOv8's, re-encoded on its 8/16/32 grids)."""
    from test_hostile_fortythird import recipe_for, transposed_head

    from modelkit import zoo_model

    folder = tmp_path_factory.mktemp("yolox")
    plain = transposed_head(zoo_model(folder / "v8.onnx", "yolov8-tiny", opset=17), "yolox", folder / "yolox.onnx")
    recipe = recipe_for("yolox", folder)
    return recipe, plain, apply(recipe, plain, folder / "right.onnx").output


@pytest.mark.parametrize("anchor", [-1, 320])  # the last anchor, the first of the second level (10 × 8 cells)
@pytest.mark.parametrize("seed", [0, 3])
def test_a_yolox_grid_wrong_at_a_levels_end_fails(yolox, tmp_path, anchor, seed):
    """Round 61's leftover: a grid whose last cell had its column and row swapped FAILed only where the decoder
    probe's random draw scored that anchor (1 seed in 7), and then its box, decoded from a stand-in head, spanned
    the whole image on both sides. The probe now scores each level's first and last anchor on a box of its cell."""
    recipe, plain, right = yolox
    model = onnx.load(str(right))
    [cells] = [tensor for tensor in model.graph.initializer if tensor.name == "graphsurgery/post/yolo_boxes/cells"]
    grid = numpy_helper.to_array(cells).copy()
    flat = grid.reshape(-1, 2)
    flat[anchor] = flat[anchor, ::-1] if flat[anchor, 0] != flat[anchor, 1] else flat[anchor] + [1, 0]
    cells.CopyFrom(numpy_helper.from_array(grid, cells.name))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"], seed=seed)
    assert not report and any("probe output" in line for line in report.failures()), report.failures()


def test_the_right_yolox_patch_passes_the_probe_on_its_cells(yolox):
    recipe, plain, right = yolox
    report = verify(recipe, plain, patched=right)
    assert report and report.probes, report.failures()
