"""The filtered resize modes against the libraries they imitate, through the patched graph on both runtimes: photos
of several sizes and aspect ratios, shrunk and enlarged, compared in intensity levels (0–255) with PIL's resize
(antialiased bilinear, bicubic, Lanczos) and OpenCV's INTER_AREA, which round to uint8 where the graph does not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from graphsurgery.api import apply
from graphsurgery.images import read_image
from graphsurgery.recipe import parse_recipe
from graphsurgery.runners import open_runner

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("onnxruntime", "openvino")
MODEL_SIZES = [(224, 224), (64, 96), (400, 300)]  # (H, W): shrink, shrink more, enlarge one side of the small ones


def photos() -> dict[str, np.ndarray]:
    """RGB photos: the two examples, and the astronaut at other sizes and aspect ratios."""
    astronaut = np.ascontiguousarray(read_image(ROOT / "examples" / "images" / "astronaut.jpg")[..., ::-1])
    cameraman = np.ascontiguousarray(read_image(ROOT / "examples" / "images" / "cameraman.jpg")[..., ::-1])
    return {"astronaut 512×512": astronaut,
            "cameraman 451×300": cv2.resize(cameraman, (451, 300), interpolation=cv2.INTER_AREA),
            "astronaut 1000×700": cv2.resize(astronaut, (1000, 700), interpolation=cv2.INTER_CUBIC),
            "astronaut 97×150": cv2.resize(astronaut, (97, 150), interpolation=cv2.INTER_AREA)}  # 64×96: rows first


LIBRARIES = {  # step parameters → what the library computes
    "antialiased bilinear": ("{interpolation: linear, antialias: true}",
                             lambda image, w, h: Image.fromarray(image).resize((w, h), Image.BILINEAR)),
    "antialiased bicubic": ("{interpolation: cubic, antialias: true, cubic_coeff_a: -0.5, clamp: [0, 255], "
                            "round: true}",
                            lambda image, w, h: Image.fromarray(image).resize((w, h), Image.BICUBIC)),
    "lanczos": ("{interpolation: lanczos, clamp: [0, 255], round: true}",
                lambda image, w, h: Image.fromarray(image).resize((w, h), Image.LANCZOS)),
    "area": ("{interpolation: area}", lambda image, w, h: cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)),
}


@pytest.fixture(scope="module")
def patched(tmp_path_factory) -> dict[tuple[str, tuple[int, int]], Path]:
    """One patched identity model per mode and model size: what it outputs is the resized image."""
    folder = tmp_path_factory.mktemp("libraries")
    models = {}
    for (h, w) in MODEL_SIZES:
        shape = [1, h, w, 3]
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        plain = folder / f"identity_{h}x{w}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(plain))
        for mode, (params, _) in LIBRARIES.items():
            recipe = parse_recipe(f"""
version: 1
name: resize-like-a-library
input:
  tensor: {{dtype: uint8, layout: NHWC, color: RGB}}
  model: {{layout: NHWC, color: RGB}}
  steps:
    - cast: {{}}
    - resize: {params}
""")
            models[mode, (h, w)] = apply(recipe, plain, folder / f"{mode.replace(' ', '_')}_{h}x{w}.onnx").output
    return models


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", LIBRARIES)
def test_filtered_modes_match_the_library_they_imitate(patched, mode, backend):
    """Each model is loaded once and fed every photo, as `run` feeds a folder (a compilation per photo tripled the
    test's time on OpenVINO)."""
    worst, beyond_one, total = 0.0, 0, 0
    images = photos().values()
    for h, w in MODEL_SIZES:
        with open_runner(backend, patched[mode, (h, w)]) as run:
            for image in images:
                ours = run({"x": image[None]})["y"][0].astype(np.float64)
                theirs = np.asarray(LIBRARIES[mode][1](image, w, h), np.float64)
                difference = np.abs(ours - theirs)
                worst = max(worst, float(difference.max()))
                beyond_one += int((difference > 1.0).sum())
                total += difference.size
    assert worst <= 1.0 + 1e-3, (worst, beyond_one / total)  # the libraries round to uint8
