"""The geometry of real packages' pipelines: `center_crop` (torchvision's CenterCrop), and `resize`'s
`side_rounding`, `pad_anchor` and `fit: height`.

Each is run in the graph (ONNX Runtime and OpenVINO f32) and compared with its numpy twin, and with the library it
imitates, on images of several sizes and aspect ratios: PIL's `Image.crop` (which fills outside the image with
zeros, as torchvision pads) for the centre crop, `cv2.resize` + `np.pad` for the resize variants (within one
intensity level: OpenCV rounds its fixed-point bilinear result); the sizes themselves against exact fractions.
"""

from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from graphsurgery.steps.base import TensorSpec
from graphsurgery.steps.crop import CenterCrop
from graphsurgery.steps.resize import Resize

from stepkit import build_input_model

SIZES = [(300, 400), (481, 353), (224, 224), (100, 90), (37, 500), (500, 37)]  # (H, W)
NHWC = TensorSpec("float32", "NHWC", "RGB", (1, "H", "W", 3))


def _run(model: onnx.ModelProto, image: np.ndarray) -> list[np.ndarray]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, {"image": image})[0], compiled({"image": image})[compiled.outputs[0]]]


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth test image (gradients and a disc) with some noise: uint8 HWC."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    disc = ((x - w / 3) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 4) ** 2) * 90
    base = np.stack([x * 200 / w, y * 200 / h, disc + 40], axis=-1) + rng.uniform(0, 15, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


# --- center_crop --------------------------------------------------------------------------------------------------


def _pil_center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torchvision's CenterCrop through PIL: the cut at round((size − crop) / 2) (half to even); where the crop is
    larger, PIL fills with zeros, the odd pixel to the right / bottom as torchvision pads."""
    h, w = image.shape[:2]
    ch, cw = size
    top = round((h - ch) / 2) if h >= ch else -((ch - h) // 2)
    left = round((w - cw) / 2) if w >= cw else -((cw - w) // 2)
    return np.asarray(Image.fromarray(image).crop((left, top, left + cw, top + ch)))


@pytest.mark.parametrize("opset", [11, 17])
def test_center_crop_equals_torchvisions_through_pil(opset):
    step = CenterCrop(size=(224, 160))
    model = build_input_model([step], NHWC, opset)
    for h, w in [*SIZES, (225, 161), (226, 163), (223, 159)]:  # odd and even excess: the half-to-even cases
        image = _photo(h, w)
        expected = _pil_center_crop(image, (224, 160)).astype(np.float32)
        twin = step.reference(image[None].astype(np.float32), NHWC)[0]
        np.testing.assert_array_equal(twin, expected, err_msg=f"{h}×{w}")
        for got in _run(model, image[None].astype(np.float32)):
            np.testing.assert_array_equal(got[0], expected, err_msg=f"{h}×{w}")


def test_center_crop_in_nchw():
    step = CenterCrop(size=(8, 6))
    spec = TensorSpec("float32", "NCHW", "RGB", (1, 3, "H", "W"))
    image = np.random.default_rng(1).uniform(0, 255, (1, 3, 13, 4)).astype(np.float32)
    expected = step.reference(image, spec)
    assert expected.shape == (1, 3, 8, 6)
    for got in _run(build_input_model([step], spec, 17), image):
        np.testing.assert_array_equal(got, expected)


def test_resize_then_center_crop_is_torchvisions_resize_and_crop():
    """Resize((256, 256)) + CenterCrop(224): against cv2.resize to 256 × 256 and the centre cut."""
    steps = [Resize(size=(256, 256)), CenterCrop(size=(224, 224))]
    model = build_input_model(steps, NHWC, 17)
    for h, w in SIZES:
        image = _photo(h, w)
        theirs = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR)[16:240, 16:240].astype(np.float32)
        for got in _run(model, image[None].astype(np.float32)):
            assert np.abs(got[0] - theirs).max() <= 1.0, (h, w)


# --- resize: side_rounding, pad_anchor, fit height ----------------------------------------------------------------


def _expected_size(step: Resize, h: int, w: int) -> tuple[int, int]:
    """The resampled size from exact fractions, as each convention writes it."""
    th, tw = step.size
    rounding = {"floor": math.floor, "ceil": math.ceil, "round": round}[step.side_rounding]
    if step.fit == "height":
        return th, max(1, min(tw, rounding(Fraction(w * th, h))))
    scale = min(Fraction(th, h), Fraction(tw, w))
    return max(1, min(th, rounding(h * scale))), max(1, min(tw, rounding(w * scale)))


def _opencv(step: Resize, image: np.ndarray) -> np.ndarray:
    """cv2.resize to the expected size, then the padding where `pad_anchor` puts it."""
    th, tw = step.size
    rh, rw = _expected_size(step, *image.shape[:2])
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    top, left = ((th - rh) // 2, (tw - rw) // 2) if step.pad_anchor == "center" else (0, 0)
    return np.pad(resized, ((top, th - rh - top), (left, tw - rw - left), (0, 0)), constant_values=step.pad_value)


CASES = [
    {"fit": "letterbox", "side_rounding": "round"},
    {"fit": "letterbox", "side_rounding": "ceil", "pad_anchor": "top_left", "pad_value": 114.0},  # YOLO-style
    {"fit": "height", "side_rounding": "ceil", "pad_anchor": "top_left"},                          # PaddleOCR rec
    {"fit": "height", "side_rounding": "round"},
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_resize_variants_match_opencv(params):
    size = (48, 320) if params["fit"] == "height" else (256, 192)
    step = Resize(size=size, **params)
    model = build_input_model([step], NHWC, 17)
    for h, w in [*SIZES, (32, 100), (48, 1000), (61, 99)]:
        image = _photo(h, w, seed=h + w)
        assert step.resized_hw(h, w) == _expected_size(step, h, w), (h, w)
        theirs = _opencv(step, image)
        twin = step.reference(image[None].astype(np.float32), NHWC)[0]
        assert np.abs(twin - theirs).max() <= 1.0, (h, w)
        for got in _run(model, image[None].astype(np.float32)):
            assert np.abs(got[0] - twin).max() <= 1e-3, (h, w)


def test_side_rounding_changes_the_size_where_the_conventions_part():
    """A 107.5 px side: floor 107, round (half to even) 108, ceil 108; 106.5: round gives 106."""
    for rounding, want in (("floor", (107, 106)), ("round", (108, 106)), ("ceil", (108, 107))):
        step = Resize(size=(200, 215), fit="letterbox", side_rounding=rounding)
        assert step.resized_hw(400, 215)[1] == want[0]  # 215 · 200 / 400 = 107.5
        assert step.resized_hw(400, 213)[1] == want[1]  # 213 · 200 / 400 = 106.5


def test_the_new_parameters_need_their_fit():
    with pytest.raises(ValueError, match="pad_anchor applies only with fit letterbox or height"):
        Resize(size=(10, 10), pad_anchor="top_left")
    with pytest.raises(ValueError, match="side_rounding applies only with fit crop or letterbox or height"):
        Resize(size=(10, 10), side_rounding="round")
