"""Round 69: the hostile review of the newest features' inputs (chain --check's random boxes on odd photos, eval-coco's
differing-people proof, recipes that combine steps in unusual orders, odd images and numbers)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from clikit import invoke
from graphsurgery.samples import random_person_boxes


@pytest.fixture(scope="module")
def patched(chain_patched):
    return chain_patched


@pytest.mark.parametrize("size", [(1, 1), (65_535, 1), (5, 5), (19, 39), (2, 100), (100, 2)])
def test_random_person_boxes_fit_an_image_smaller_than_a_box(size):
    """Was (round 69): boxes were 20–W px wide and 40–H px tall, and numpy refused `uniform(20, 1)` ("high - low
    < 0"): chain --check on a 1 × 1 or 65,535 × 1 photo was an internal error. Each box now fits the image."""
    boxes = random_person_boxes(np.random.default_rng(66), size, 30)
    width, height = size
    assert boxes.shape == (30, 4) and np.isfinite(boxes).all()
    assert (boxes[:, 2] > 0).all() and (boxes[:, 3] > 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()


def test_random_person_boxes_are_unchanged_on_images_of_people_size():
    """The bound applies only below 20 × 40 px: verify's random images (and chain --check's photos) keep their
    boxes, the same numbers from the same seed."""
    rng = np.random.default_rng(3)
    expected = []
    for kind in range(30):
        kind %= 3
        w, h = (rng.uniform(2, 8), rng.uniform(2, 8)) if kind == 2 else (rng.uniform(20, 640), rng.uniform(40, 480))
        margin = 0.5 if kind == 1 else 0.0
        expected.append((rng.uniform(-margin * w, 640 - (1 - margin) * w),
                         rng.uniform(-margin * h, 480 - (1 - margin) * h), w, h))
    got = random_person_boxes(np.random.default_rng(3), (640, 480), 30)
    np.testing.assert_array_equal(got, np.array(expected, np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 4000, 3), (30, 3, 3)])
def test_chain_check_on_a_tiny_or_thin_photo_is_a_verdict_not_an_internal_error(patched, tmp_path, shape):
    """Was (round 69): `chain --check one_pixel.png` ended "internal error (ValueError: high - low < 0)", exit 3;
    the photo holds nobody, so the check now FAILs it as it FAILs any photo without people (exit 1)."""
    photo = tmp_path / "tiny.png"
    cv2.imwrite(str(photo), np.full(shape, 128, np.uint8))
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    result = invoke("chain", patched["detector"], patched["pose"], "-o", tmp_path / "c.onnx", "--check", photo)
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert "found nobody" in result.output
    assert hashlib.sha256(photo.read_bytes()).hexdigest() == digest


#: a right recipe for a caller that feeds each crop and then its mirror (recipe.flip_unpaired): no flip_test
FOLD_ONLY = """version: 1
name: fold-only
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - reverse_channels: {}
output:
  steps:
    - flip_average: {}
    - heatmap_argmax: {}
"""


@pytest.fixture(scope="module")
def fold_only(tmp_path_factory):
    from graphsurgery.api import apply

    from modelkit import pose_model

    folder = tmp_path_factory.mktemp("fold")
    (folder / "fold.yaml").write_text(FOLD_ONLY)
    plain = pose_model(folder / "pose.onnx", dynamic_batch=True)
    photo = folder / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (120, 90, 3), np.uint8))
    return apply(folder / "fold.yaml", plain, folder / "fold.onnx").output, photo


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_run_on_a_model_that_folds_mirrors_it_is_not_fed_says_so(fold_only, tmp_path, backend):
    """Was (round 69): run fed each crop once to a model with flip_average but no flip_test, its Split failed on
    the odd batch, and the line said "apply the recipe to the plain model again … report this" (a bug)."""
    from clikit import one_line_exit_2

    model, photo = fold_only
    digests = [hashlib.sha256(path.read_bytes()).hexdigest() for path in (model, photo)]
    result = invoke("run", model, photo, "-o", tmp_path / "out", "--backend", backend)
    one_line_exit_2(result, str(model), "mirrors none itself (no flip_test)", "add `flip_test: {}`")
    assert "report this" not in result.output
    assert digests == [hashlib.sha256(path.read_bytes()).hexdigest() for path in (model, photo)]


def test_convert_int8_of_a_model_that_folds_mirrors_it_is_not_fed_says_so(fold_only, tmp_path):
    """The same model calibrated on random crops, one at a time (convert --int8): the same line, no IR written."""
    model, _ = fold_only
    result = invoke("convert", model, "-o", tmp_path / "m.xml", "--int8", "--calibration-random", 2)
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert str(model) in last and "mirrors none itself (no flip_test)" in last and "report this" not in last
    assert "Traceback" not in result.output and not (tmp_path / "m.xml").exists()


def test_a_reference_pipeline_that_draws_on_its_input_does_not_change_what_the_patched_model_is_fed(tmp_path):
    """Was (round 69): verify handed `--reference-pipeline`'s function the very arrays it then fed the patched
    model; a pipeline with right answers that drew a debug box on the caller's image in place (cv2.rectangle) made
    a right patch FAIL, compared on images the pipeline never answered. It now gets copies."""
    import onnxruntime as ort

    from graphsurgery.api import apply
    from graphsurgery.verification import verify

    from modelkit import pose_model
    from paritykit import IMAGE_RECIPE

    plain = pose_model(tmp_path / "pose.onnx")
    patched = apply(IMAGE_RECIPE, plain, tmp_path / "pose.patched.onnx").output
    session = ort.InferenceSession(str(patched), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def draws_after_answering(inputs):
        rows = [session.run(None, {k: v[i:i + 1] for k, v in inputs.items()}) for i in range(len(inputs["input"]))]
        for image in inputs["input"]:
            cv2.rectangle(image, (0, 0), (image.shape[1] - 1, image.shape[0] - 1), (0, 255, 0), 3)
        return {name: np.concatenate([row[i] for row in rows]) for i, name in enumerate(names)}

    report = verify(IMAGE_RECIPE, plain, patched=patched, random=2, backends=("onnxruntime",),
                    reference_pipeline=draws_after_answering)
    assert report, report.failures()


#: a valid recipe whose input steps resize: the patched model takes whole images of any size
RESIZES = """version: 1
name: resizes
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - STEP
    - layout: {to: NCHW}
    - reverse_channels: {}
output:
  steps:
    - heatmap_argmax: {}
    - to_image: {mode: image}
"""


@pytest.mark.parametrize("step", ["resize: {fit: letterbox}", "center_crop: {}"])
def test_run_on_a_model_whose_recipe_resizes_names_a_recipe_it_can_run(tmp_path, step):
    """Was (round 69): run refused a model patched with a resize (or center_crop) step with "the crop size of input
    'input' is not fixed — fix: export the model with a fixed input size", of a plain model exported with one."""
    from clikit import one_line_exit_2
    from graphsurgery.api import apply

    from modelkit import pose_model

    recipe = tmp_path / "resizes.yaml"
    recipe.write_text(RESIZES.replace("STEP", step))
    patched = apply(recipe, pose_model(tmp_path / "pose.onnx"), tmp_path / "pose.patched.onnx").output
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.zeros((60, 40, 3), np.uint8))
    result = invoke("run", patched, photo, "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, str(patched), "takes images of any size", "hrnet_coco_topdown.yaml")
    assert "export the model with a fixed input size" not in result.output
