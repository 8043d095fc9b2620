"""Hostile round 63: the Python API given hostile arguments, `run` and `eval-coco` as another user, two bad inputs
at once, recipes at their steps' bounds, models from the wild (If/Loop bodies, outputs that are inputs, opsets 7 to
24, unicode and path-like names) and output paths spelled every way. What broke:

- **`run`'s heatmap montage on kept outputs it could not draw**: a pose model whose heatmaps are float16 (OpenCV's
  resize has no float16 kernel: "func != 0"), one whose first kept 4-D output has an empty side (taken for the
  heatmaps: "!ssize.empty()") and one whose input is 1 pixel wide (a 0 × 0 tile: "inv_scale_x > 0") ended `run` in
  an internal error, exit 3, after the model had run (`draw.heatmap_montage`).
- **An image whose name leaves no room for its debug images' names** (243 to 255 bytes before the extension: a
  valid name, but `<stem>_heatmaps.jpg` is not) ran every image and then failed with "could not write the results
  (File name too long) — fix: free disk space or choose another folder", naming the output folder
  (`pose._debug_images` now refuses it first, naming the image and how long its name may be).
- **`--boxes` given a COCO annotation file of images of other sizes** (a folder of resized copies): `run`, `verify
  --images` and `convert --int8 --calibration` cut the crops at the annotation's pixels in silence, where eval-coco
  refuses the same file for its ground truth. The decoded image must have the width and height the file gives it
  (`Boxes.check_image`).
- **`to_image`'s `input_size` other than the model input's**: `[256, 192]` copied from `crop_boxes`' `[height,
  width]` into the top-down recipe's `to_image: {mode: boxes}` (whose `input_size` is width, height) mapped every
  keypoint back through a box of the other aspect (the astronaut's nose 120 px off), and `verify` PASSed, its twin
  mapping them the same wrong way. A given `input_size` must be the model input's where the model declares it
  (`ToImage._input_size`).
- **`simcc_decode`'s `split_ratio` (or its `x` and `y`) against the model's vectors**: a ratio of 3 (or 1) on
  RTMPose's 2 bins a pixel, or `x: simcc_y, y: simcc_x`, put every keypoint elsewhere in the crop and verify
  PASSed, its twin dividing the same way. Where the input size is static, the vectors must hold
  side × split_ratio bins, x the width's (`SimccDecode._check_lengths`).
- **A `--reference` file replaced by a FIFO after its checks** blocked `verify` for ever: the .npz was opened by its
  path three times (zipfile's check, the first bytes, np.load), none of them judged on the file opened
  (`reference.load_reference`, now one `safeio.open_regular`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
CROP = ROOT / "recipes" / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


def _float16_heatmaps(path: Path) -> Path:
    model = onnx.load(str(pose_model(path, dynamic_batch=True)))
    graph = model.graph
    graph.node[0].output[0] = "raw"
    graph.node.append(helper.make_node("Cast", ["raw"], ["heatmaps"], to=TensorProto.FLOAT16))
    graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(model, str(path))
    return path


def _empty_output_first(path: Path) -> Path:
    """The heatmaps, and before them among the outputs a slice of them with no columns (a 4-D output too)."""
    model = onnx.load(str(pose_model(path, dynamic_batch=True)))
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), name) for name in ("s0", "e0")])
    graph.initializer.append(numpy_helper.from_array(np.array([3], np.int64), "axis"))
    graph.node.append(helper.make_node("Slice", ["heatmaps", "s0", "e0", "axis"], ["empty"]))
    graph.output.insert(0, helper.make_tensor_value_info("empty", TensorProto.FLOAT, ["N", 17, 64, 0]))
    onnx.save(model, str(path))
    return path


def _one_pixel(path: Path) -> Path:
    return pose_model(path, input_hw=(1, 1), stride=1, dynamic_batch=True)


@pytest.mark.parametrize("build, recipe_change", [(_float16_heatmaps, None), (_empty_output_first, "target"),
                                                  (_one_pixel, None)], ids=["float16", "empty-side", "one-pixel"])
def test_run_draws_the_heatmaps_of_models_opencv_cannot_resize(tmp_path, build, recipe_change):
    """Was: internal error (OpenCV's assertion in heatmap_montage), exit 3, after every person was estimated."""
    import graphsurgery

    recipe = CROP
    if recipe_change == "target":  # two outputs: the recipe names the heatmaps
        recipe = tmp_path / "r.yaml"
        recipe.write_text(CROP.read_text().replace("output:\n", "output:\n  target: heatmaps\n", 1))
    plain = build(tmp_path / "plain.onnx")
    patched = graphsurgery.apply(recipe, plain, tmp_path / "patched.onnx").output
    summary = graphsurgery.run(patched, [PHOTO], tmp_path / "out", backend="onnxruntime")
    assert summary.images[0].persons == 1
    assert (tmp_path / "out" / "astronaut_heatmaps.jpg").stat().st_size > 0


def test_heatmap_montage_of_float16_and_empty_maps():
    """The montage itself: float16 maps, maps with an empty side and a 1-pixel crop each give a picture."""
    from graphsurgery.draw import heatmap_montage

    crop = np.full((256, 192, 3), 128, np.uint8)
    maps = np.random.default_rng(0).random((17, 64, 48)).astype(np.float16)
    assert heatmap_montage([crop], [maps]).dtype == np.uint8
    assert heatmap_montage([crop], [np.zeros((17, 64, 0), np.float32)]).shape[1] > 0
    assert heatmap_montage([crop[:1, :1]], [np.ones((17, 1, 1), np.float32)]).size > 0


@pytest.mark.parametrize("stem", ["a" * 243, "é" * 122], ids=["ascii", "two-byte"])
def test_an_image_name_too_long_for_its_debug_images_is_refused_first(tmp_path, patched, stem):
    """Was: every image ran, then "could not write the results (File name too long) — fix: free disk space"."""
    import graphsurgery

    image = tmp_path / f"{stem}.jpg"
    image.write_bytes(PHOTO.read_bytes())
    with pytest.raises(GraphsurgeryError, match="rename the image: at most 242 bytes") as caught:
        graphsurgery.run(patched, [image], tmp_path / "out", backend="onnxruntime")
    assert caught.value.path == str(image)
    assert not (tmp_path / "out").exists()


def _annotation(path: Path, width: int, height: int) -> Path:
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": PHOTO.name, "width": width, "height": height}],
                                "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 200, 300],
                                                 "category_id": 1}], "categories": []}))
    return path


@pytest.mark.parametrize("command", ["run", "verify"])
def test_boxes_of_an_annotation_file_must_be_of_images_of_its_sizes(tmp_path, plain, patched, command):
    """Was: a 512 × 512 photo given boxes from an annotation file that says 256 × 256 ran (exit 0, wrong pixels)."""
    import graphsurgery

    images = tmp_path / "images"
    images.mkdir()
    (images / PHOTO.name).write_bytes(PHOTO.read_bytes())
    boxes = _annotation(tmp_path / "ann.json", 256, 256)
    with pytest.raises(GraphsurgeryError, match=r"512 × 512 pixels, but the boxes file 'ann.json' gives it 256 × 256"):
        if command == "run":
            graphsurgery.run(patched, [images / PHOTO.name], tmp_path / "out", backend="onnxruntime", boxes=boxes)
        else:
            graphsurgery.verify(CROP, plain, images=images, boxes=boxes, backends=["onnxruntime"])
    assert not (tmp_path / "out").exists()
    right = _annotation(tmp_path / "right.json", 512, 512)  # the sizes it has: as before
    assert graphsurgery.run(patched, [images / PHOTO.name], tmp_path / "out", backend="onnxruntime",
                            boxes=right).images[0].persons == 1


@pytest.mark.parametrize("command", ["apply", "verify"])
@pytest.mark.parametrize("recipe, step, size", [("hrnet_coco_topdown.yaml", "{mode: boxes}", "[256, 192]"),
                                                ("hrnet_coco_pose.yaml", "{mode: crop}", "[200, 250]")],
                         ids=["topdown-swapped", "crop-other"])
def test_to_image_input_size_must_be_the_model_inputs(tmp_path, plain, command, recipe, step, size):
    """Was: applied, and verify PASSed a model whose keypoints were mapped through another size than its crops'."""
    import graphsurgery

    wrong = tmp_path / "r.yaml"
    text = (ROOT / "recipes" / recipe).read_text()
    wrong.write_text(text.replace(f"to_image: {step}", f"to_image: {step[:-1]}, input_size: {size}}}"))
    assert wrong.read_text() != text
    with pytest.raises(GraphsurgeryError, match=rf"input_size is \{size[:-1]}\] .* the model input is 192 × 256"):
        if command == "apply":
            graphsurgery.apply(wrong, plain, tmp_path / "p.onnx")
        else:
            graphsurgery.verify(wrong, plain, random=2, backends=["onnxruntime"])
    right = tmp_path / "right.yaml"  # the model's own size, spelt out: as before
    right.write_text(text.replace(f"to_image: {step}", f"to_image: {step[:-1]}, input_size: [192, 256]}}"))
    assert graphsurgery.apply(right, plain, tmp_path / "p.onnx").output.is_file()


@pytest.mark.parametrize("command", ["apply", "verify"])
@pytest.mark.parametrize("step, message", [("{split_ratio: 3.0}", "split_ratio 3 makes 576 and 768"),
                                           ("{split_ratio: 1.0}", "split_ratio 1 makes 192 and 256"),
                                           ("{split_ratio: 2.0, x: simcc_y, y: simcc_x}", "x and y are swapped")],
                         ids=["ratio-3", "ratio-1", "swapped"])
def test_simcc_split_ratio_and_axes_must_fit_the_models_vectors(tmp_path, command, step, message):
    """Was: applied, and verify PASSed keypoints divided by the wrong ratio (or read from the other axis)."""
    import graphsurgery
    from test_simcc import RECIPE, two_head_model

    plain = two_head_model(tmp_path / "simcc.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.replace("KEEP", "false").replace("simcc_decode: {split_ratio: 2.0}",
                                                              f"simcc_decode: {step}"))
    with pytest.raises(GraphsurgeryError, match=message):
        if command == "apply":
            graphsurgery.apply(recipe, plain, tmp_path / "p.onnx")
        else:
            graphsurgery.verify(recipe, plain, random=2, backends=["onnxruntime"])


def test_a_reference_replaced_by_a_fifo_after_its_checks_is_refused_at_once(tmp_path, fifo_after_the_checks):
    """Was: verify --reference blocked in zipfile.is_zipfile's open() of the FIFO (for ever, without a writer)."""
    from graphsurgery.reference import load_reference

    like = tmp_path / "good.npz"
    np.savez(like, input=np.zeros((1, 4), np.uint8))
    path = fifo_after_the_checks("ref.npz", like)
    started = time.monotonic()
    with pytest.raises(GraphsurgeryError, match="is not a regular file"):
        load_reference(path)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name, fix", [(".xml", "give the IR file a name before .xml, e.g. model.xml"),
                                       ("x.xml.", "use x.xml"), ("m.XML", "use m.xml")])
def test_convert_suggests_an_ir_name_that_is_one(tmp_path, monkeypatch, name, fix):
    """Was (round 63's leftover): `-o .xml` was told "use .xml.xml" and `-o x.xml.` "use x.xml..xml"."""
    plain = pose_model(tmp_path / "plain.onnx")
    monkeypatch.chdir(tmp_path)
    one_line_exit_2(invoke("convert", plain, "-o", name), "must end in .xml", f"fix: {fix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]
