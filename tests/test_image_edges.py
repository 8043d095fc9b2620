"""Where `to_image: {mode: image}` tells the caller's image from the letterbox padding, verify looks.

Round 56 left it open: every random image verify fed was larger than a pose model, so a model pixel never came
within half a caller pixel of the image's edge, and the cell probes' peaks (corners, edge middles) never lay next to
it. A patch that took keypoints in the image's first half pixel for padding (`first_centre` 0 for −0.5), or the
padding's nearest 0.05 px for the image (×1.1), PASSed. verify now feeds one image ten times smaller than the model
(`samples._upscaled_size`) and puts peaks on the cells either side of each edge (`ToImage.edge_cells`).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.samples import RESIZE_SIZES, UPSCALED, _upscaled_size
from graphsurgery.steps.resize import Resize
from graphsurgery.steps.to_image import ToImage, _caller_pixels_twin
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model

FIRST_CENTRE = "graphsurgery/post/to_image/first_centre"
#: What `ToImage` reads of the model facts: the input size (W, H)
FACTS = SimpleNamespace(input_size=(160, 128))


@pytest.fixture(scope="module")
def letterbox_pose(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(recipe, plain model, right patch) of a pose model fed whole images through a letterbox."""
    folder = tmp_path_factory.mktemp("edges")
    plain, recipe = pose_model(folder / "plain.onnx", input_hw=(128, 160)), folder / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX)
    return recipe, plain, apply(recipe, plain, folder / "right.onnx").output


@pytest.mark.parametrize("factor", [0.0, 1.1, 0.9])
def test_a_boundary_moved_by_a_fraction_of_a_pixel_fails(letterbox_pose, tmp_path, factor):
    recipe, plain, right = letterbox_pose
    model = onnx.load(str(right))
    [first] = [tensor for tensor in model.graph.initializer if tensor.name == FIRST_CENTRE]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * np.float32(factor), FIRST_CENTRE))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    assert not report
    upscaled = [f"{w}×{h} image" for w, h in report.sizes if w * UPSCALED <= 160 and h * UPSCALED <= 128]
    assert upscaled and any(line.split(":")[1].endswith(f"probe output of a {upscaled[0]}")
                            for line in report.failures()), report.failures()


def test_a_boundary_moved_into_the_padding_fails_a_quarter_offset_recipe(tmp_path):
    """The edge cells' probe peaks lay among the network's own values: a quarter offset moved the keypoint a model
    pixel off the cell that ends half a model pixel past the image, and ×1.1 PASSed (256 × 192, where the same
    recipe without quarter_offset FAILed). The peak's neighbours are now level."""
    plain, recipe = pose_model(tmp_path / "plain.onnx"), tmp_path / "quarter.yaml"
    recipe.write_text(POSE_LETTERBOX.replace("    - heatmap_argmax: {}\n",
                                             "    - heatmap_argmax: {}\n    - quarter_offset: {}\n"))
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    assert verify(recipe, plain, patched=right, backends=["onnxruntime"])
    model = onnx.load(str(right))
    [first] = [tensor for tensor in model.graph.initializer if tensor.name == FIRST_CENTRE]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * np.float32(1.1), FIRST_CENTRE))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    upscaled = [f"{w}×{h} image" for w, h in report.sizes if w * UPSCALED <= 192 and h * UPSCALED <= 256]
    assert not report and any(f"probe output of a {upscaled[0]}:" in line for line in report.failures()), \
        report.failures()


def test_the_right_patch_passes_with_the_upscaled_image(letterbox_pose):
    recipe, plain, right = letterbox_pose
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()
    assert any(w * UPSCALED <= 160 and h * UPSCALED <= 128 for w, h in report.sizes), report.sizes


def test_the_default_samples_take_every_size_once(letterbox_pose):
    """Round 58's offset sizes made the letterbox pose recipe's sizes 12: the default 8 samples never fed the fixed
    ones, and more leading sizes would have pushed out the upscaled image. The default now takes each size once."""
    recipe, plain, right = letterbox_pose
    report = verify(recipe, plain, patched=right, backends=["onnxruntime"])
    sizes = list(dict.fromkeys(report.sizes))
    assert report and len(report.sizes) == len(sizes) > 8, report.sizes
    assert set(RESIZE_SIZES) <= set(sizes) and any(w * UPSCALED <= 160 and h * UPSCALED <= 128 for w, h in sizes)
    assert len(verify(recipe, plain, patched=right, random=4, backends=["onnxruntime"]).sizes) == 4  # as asked


def test_an_explicit_count_says_which_sizes_it_left_out(letterbox_pose):
    """Each size was added because a wrong patch PASSed without it, and the right-edge images come last: a PASS of
    `--random 4` proves nothing of the sizes it did not feed, and its report says which."""
    recipe, plain, right = letterbox_pose
    every = verify(recipe, plain, patched=right, backends=["onnxruntime"])
    assert not [note for note in every.notes if "not fed" in note], every.notes
    four = verify(recipe, plain, patched=right, random=4, backends=["onnxruntime"])
    [note] = [note for note in four.notes if "not fed" in note]
    left_out = [size for size in every.sizes if size not in four.sizes]
    assert left_out and note.endswith(f"W×H {', '.join(f'{w}×{h}' for w, h in left_out)} (no --random, or --random "
                                      f"{len(every.sizes)}, feeds each where they fit the memory)"), note


@pytest.mark.parametrize("hw", [(128, 160), (256, 192), (64, 48), (80, 60)])
def test_the_upscaled_image_pads_the_width_half_a_pixel_past_a_cell(hw):
    resize = Resize(size=hw, fit="letterbox", side_rounding="round")
    (w, h), *_ = _upscaled_size(resize, RESIZE_SIZES)  # then those ending the image on a cell (round 59)
    th, tw = hw
    rh, rw = resize.resized_hw(h, w)
    assert w * UPSCALED <= tw and h * UPSCALED <= th
    assert rh == th and rw < tw  # the width padded
    assert ((tw - rw) // 2) % 8 == 1, (w, h, rw)  # a pixel of a map of 1, 2, 4 or 8 pixels a cell ends half a pixel out


def test_udps_ratio_gets_an_image_with_a_cell_just_outside_its_left_edge():
    """UDP's ratio (160 / 39 model pixels a cell) puts the cells off whole pixels: the left pad of 1 modulo 8 had
    none within half a model pixel of the image, and a boundary moved 0.05 caller px into the padding PASSed. The
    size is chosen by the ratio's own cells there."""
    resize, spacing = Resize(size=(128, 160), fit="letterbox", side_rounding="round"), np.float32(160 / 39)
    (w, h), *_ = _upscaled_size(resize, RESIZE_SIZES, (float(spacing), float(np.float32(128 / 31))))
    pad = float(resize.forward_map((h, w))[1][0])
    cells = np.arange(40, dtype=np.float32) * spacing
    assert ((cells >= pad - 1) & (cells < pad - 0.5)).any(), (w, h, pad)
    assert _upscaled_size(resize, RESIZE_SIZES, (4.0, 4.0)) == _upscaled_size(resize, RESIZE_SIZES)  # whole: as 8's


@pytest.mark.parametrize(("hw", "to_image", "moved"), [((128, 160), "{mode: image, udp: true}", "first ×1.1"),
                                                       ((64, 48), "{mode: image}", "last −0.05")])
def test_a_boundary_moved_a_twentieth_of_a_pixel_fails_udp_and_small_models(tmp_path, hw, to_image, moved):
    """Both PASSed: UDP's cells missed the left edge's band; on a 48-pixel-wide model no size put a multiple of 8
    half a pixel short of the image's right end, where its own cells (every 4 pixels) find one."""
    plain, recipe = pose_model(tmp_path / "plain.onnx", input_hw=hw), tmp_path / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX.replace("to_image: {mode: image}", f"to_image: {to_image}"))
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    assert verify(recipe, plain, patched=right, backends=["onnxruntime"])
    model = onnx.load(str(right))
    if moved == "first ×1.1":
        [first] = [tensor for tensor in model.graph.initializer if tensor.name == FIRST_CENTRE]
        first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * np.float32(1.1), FIRST_CENTRE))
    else:  # the last centre 0.05 caller px into the image
        nodes = model.graph.node
        [at] = [i for i, node in enumerate(nodes) if node.name == "graphsurgery/post/to_image/Greater"]
        model.graph.initializer.append(numpy_helper.from_array(np.float32(-0.05), "moved"))
        nodes.insert(at, helper.make_node("Add", [nodes[at].input[1], "moved"], ["moved_last_centre"]))
        nodes[at + 1].input[1] = "moved_last_centre"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    assert not report and any("probe output of a" in line for line in report.failures()), report.failures()


def test_no_upscaled_image_where_one_is_fed_already_or_the_model_is_tiny():
    assert _upscaled_size(Resize(size=(128, 160), fit="letterbox"), [(8, 11), *RESIZE_SIZES]) == ()
    assert _upscaled_size(Resize(size=(9, 40), fit="letterbox"), RESIZE_SIZES) == ()
    # no pad of 1 mod 8; then (round 64) an image padded top and bottom, a cell just short of its bottom edge
    assert _upscaled_size(Resize(size=(33, 17), fit="letterbox"), RESIZE_SIZES) == ((1, 3), (1, 2), (1, 1))


@pytest.mark.parametrize("caller_wh", [(8, 11), (400, 300), (353, 481), (17, 3)])
def test_the_edge_cells_straddle_the_image_edges(caller_wh):
    """Each edge cell is in the image or next to one that is not, as the twin decides it."""
    resize = Resize(size=(128, 160), fit="letterbox", side_rounding="round")
    w, h = caller_wh
    scale, offset = resize.forward_map((h, w))
    geometry = np.concatenate([scale, offset, np.float32([w, h])]).astype(np.float32)
    step, hw = ToImage(mode="image"), (32, 40)
    cells = step.edge_cells(FACTS, hw, geometry)

    def inside(row: int, column: int) -> bool:
        pixels = np.float32([[[column * 4, row * 4]]])  # cell → model pixel, 160 / 40 = 128 / 32 = 4
        return bool((_caller_pixels_twin(pixels, geometry) != -1).all())

    assert cells
    for row, column in cells:
        neighbours = [(row, column - 1), (row, column + 1), (row - 1, column), (row + 1, column)]
        on_map = [(r, c) for r, c in neighbours if 0 <= r < hw[0] and 0 <= c < hw[1]]
        at_border = len(on_map) < 4
        assert at_border or any(inside(r, c) != inside(row, column) for r, c in on_map), (row, column)
    flips = sum(inside(r, c) != inside(r, c + 1) for r, c in cells if c + 1 < hw[1] and (r, c + 1) in cells)
    rw = resize.resized_hw(h, w)[1]
    assert flips == (2 if rw < 160 else 0), cells
