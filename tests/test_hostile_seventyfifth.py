"""Round 75: a fresh hostile set (~260 cases), the first on the real AVX2-only CPU (AMD EPYC Zen 1). `verify` of a
recipe that fixes the caller's image size said it fed images of sizes it never fed; `run` of a top-down model
whose `boxes` input is not float32 [N, 4] was an internal error; `to_image: {mode: original}` after `crop_boxes`
was applied and then an internal error in verify; photos of another size than a recipe fixing the caller's
size takes were an internal error in `verify --images` and `run`; a detector patched to answer boxes of infinite
corners printed numpy's RuntimeWarnings under verify's verdict."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
TOPDOWN = ROOT / "recipes" / "hrnet_coco_topdown.yaml"


def test_boxes_of_infinite_corners_are_compared_without_numpy_warnings():
    """Was: verify of a detector patched to answer boxes × inf (exit 1, FAIL, rightly) printed three "RuntimeWarning:
    invalid value encountered in subtract" lines with their source lines (`steps.nms.iou`,
    `compare_detections._all_but_dropped`)."""
    from graphsurgery.compare_detections import _all_but_dropped
    from graphsurgery.steps.nms import iou

    infinite = np.array([0.0, 0.0, np.inf, np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        overlaps = iou(infinite, np.array([[0.0, 0.0, 1.0, 1.0], infinite, [np.inf] * 4]))
        dropped = _all_but_dropped(np.array([np.inf] * 4), None, SimpleNamespace(box_resolution=1e-4))
    assert overlaps.tolist() == [0.0, 0.0, 0.0] and dropped is False
    assert iou(np.array([0.0, 0.0, 2.0, 2.0]), np.array([[1.0, 1.0, 3.0, 3.0]])).tolist() == [1 / 7]  # a finite one


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_random_images_are_described_at_the_sizes_fed(layout):
    """Was: a recipe fixing the caller's image at 640 × 480 (`tensor: {shape: [1, 480, 640, 3]}`, top-down or
    detector) was fed 640 × 480 images only, and verify said "8 random images of W×H 400×300, 353×481, 224×224,
    640×480" (a hostile model declaring [1, 3, H, W] at an NHWC input got images 3 px tall, said the same)."""
    from graphsurgery.runners import Port
    from graphsurgery.samples import random_box_samples, random_samples

    fixed = Port("image", "uint8", (1, 480, 640, 3) if layout == "NHWC" else (1, 3, 480, 640))
    whole = random_box_samples(4, fixed, layout)
    assert "W×H 640×480 with" in whole.description and "400×300" not in whole.description
    crops = random_samples(4, fixed, [(400, 300), (640, 480), (353, 481)], layout, [], (192, 256))
    assert {group[0].shape[1:] for group in crops.groups} == {fixed.shape[1:]}
    assert "400×300" not in crops.description and crops.note is None
    free = Port("image", "uint8", (1, None, None, 3) if layout == "NHWC" else (1, 3, None, None))
    assert "W×H 400×300, 353×481, 224×224, 640×480 with" in random_box_samples(4, free, layout).description


def _boxes_dims(model: onnx.ModelProto, dims: list) -> None:
    value = next(value for value in model.graph.input if value.name == "boxes")
    value.type.tensor_type.shape.ClearField("dim")
    for dim in dims:
        value.type.tensor_type.shape.dim.add().CopyFrom(onnx.TensorShapeProto.Dimension(
            **({"dim_value": dim} if isinstance(dim, int) else {"dim_param": dim})))


@pytest.mark.parametrize(("dims", "taken"), [(["N", 5], "float32 [?, 5]"), ([1, 4], "float32 [1, 4]")],
                         ids=["five values", "one box"])
def test_run_refuses_a_top_down_model_taking_boxes_otherwise(plain, tmp_path, dims, taken):
    """Was: exit 3, "internal error (RuntimeError: … Descriptor's shape: {0 - ?, 5} is incompatible …)" or "… got
    [2,4] expecting [1,4]" — "this is a graphsurgery bug" (verify refuses such a model since round 73; run did not
    look at its boxes input)."""
    from graphsurgery.api import apply

    model = onnx.load(str(apply(TOPDOWN, plain, tmp_path / "right.onnx").output))
    _boxes_dims(model, dims)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({PHOTO.name: [[10, 10, 100, 200], [0, 0, 50, 90]]}))
    one_line_exit_2(invoke("run", tmp_path / "edited.onnx", PHOTO, "--boxes", boxes, "-o", tmp_path / "out",
                           "--backend", "onnxruntime"),
                    "edited.onnx", f"input 'boxes' is {taken}", "as float32 [N, 4]")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ending", ["- to_image: {mode: original}",
                                    "- to_image: {mode: crop}\n    - to_image: {mode: original, units: crop}"],
                         ids=["cells", "crop pixels"])
def test_to_image_original_after_crop_boxes_is_refused(ending):
    """Was: apply wrote a model taking `boxes`, `center` and `scale`, and verify of the recipe ended in exit 3,
    "internal error (ValueError: Required inputs (['center', 'scale']) are missing from input feed (['image',
    'boxes']))": the crops' boxes are what maps their keypoints back (mode boxes)."""
    from graphsurgery.recipe import parse_recipe

    text = TOPDOWN.read_text().replace("- to_image: {mode: boxes}", ending)
    with pytest.raises(GraphsurgeryError, match=r"to_image mode original maps keypoints back through a center and "
                                                r"scale the caller feeds, but crop_boxes cuts") as caught:
        parse_recipe(text)
    assert "mode: boxes" in caught.value.fix
    parse_recipe(text.replace("mode: original", "mode: boxes"))  # the right one is taken


def test_whole_images_of_another_size_than_a_fixed_input_takes_are_refused(plain, tmp_path):
    """Was: a top-down recipe fixing the caller's image at 640 × 480 (`tensor: {shape: [1, 480, 640, 3]}`), given a
    512 × 512 photo, ended in exit 3 in `verify --images` ("internal error (InvalidArgument: … Got invalid
    dimensions for input: image … Got: 512 Expected: 480 …)") and in `run` (its warm-up fed a 64 × 48 blank
    image, "… got [1,64,48,3] expecting [1,480,640,3]"); an image of the size it takes is run."""
    from graphsurgery.api import apply

    recipe = tmp_path / "fixed.yaml"
    recipe.write_text(TOPDOWN.read_text().replace("color: BGR}", "color: BGR, shape: [1, 480, 640, 3]}", 1))
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / PHOTO.name).write_bytes(PHOTO.read_bytes())
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({PHOTO.name: [[10, 10, 100, 200]], "vga.png": [[10, 10, 100, 200]]}))
    model = apply(recipe, plain, tmp_path / "fixed.onnx").output
    for result in (invoke("verify", recipe, plain, "--images", folder, "--backends", "onnxruntime"),
                   invoke("run", model, PHOTO, "--boxes", boxes, "-o", tmp_path / "out", "--backend", "onnxruntime")):
        one_line_exit_2(result, PHOTO.name, "the image is 512 × 512 pixels; the patched model's input 'image' takes "
                                            "640 × 480 only")
    cv2.imwrite(str(tmp_path / "vga.png"), np.zeros((480, 640, 3), np.uint8))
    result = invoke("run", model, tmp_path / "vga.png", "--boxes", boxes, "-o", tmp_path / "out", "--backend",
                    "onnxruntime")
    assert result.exit_code == 0, result.output
