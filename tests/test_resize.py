"""The resize step: its numpy twin against onnxruntime and OpenVINO for every mode, its geometry against
torchvision's arithmetic, its distance to OpenCV, and its errors.

Each case splices a recipe whose only input step is the resize into a model that is nothing but an Identity of
the model's size, through the product's own path (recipe → splice → runners); the twin is
`twins.preprocess(recipe, x, facts)`. Values are random in [0, 1), so "within 1e-5" is absolute.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.errors import ModelError, RecipeError
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import parse_recipe
from graphsurgery.runners import open_runner
from graphsurgery.splice import splice
from graphsurgery.steps.libraries import resize_vs_opencv
from graphsurgery.steps.resize import Resize
from graphsurgery.twins import preprocess

TARGET = (24, 20)
CALLER_SIZES = [(31, 17), (24, 20), (13, 50), (100, 80), (7, 7)]  # shrink, same, mixed, shrink, grow
COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = [
    *({"interpolation": "nearest", "coordinate_transformation_mode": c, "nearest_mode": n}
      for c in COORDINATES for n in NEAREST),
    *({"interpolation": "linear", "coordinate_transformation_mode": c} for c in COORDINATES),
    *({"interpolation": "cubic", "coordinate_transformation_mode": c} for c in COORDINATES),
    {"interpolation": "cubic", "cubic_coeff_a": -0.5},
]
BACKENDS = ("onnxruntime", "openvino")


def _id(params) -> str:
    return "-".join(str(v) for v in params.values()) if isinstance(params, dict) else None


def identity_model(path: Path, *, opset: int, layout: str = "NCHW", hw: tuple = TARGET) -> Path:
    """A model that returns its input: what the model sees is exactly what the input steps produce."""
    shape = ["N", 3, *hw] if layout == "NCHW" else ["N", *hw, 3]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="identity")], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def resize_recipe(params: dict, layout: str = "NCHW"):
    return parse_recipe(resize_recipe_text(params, layout))


def resize_recipe_text(params: dict, layout: str = "NCHW") -> str:
    inline = ", ".join(f"{k}: {v}" for k, v in params.items())
    return f"""
version: 1
name: resize-only
input:
  tensor: {{dtype: float32, layout: {layout}}}
  model: {{layout: {layout}}}
  steps:
    - resize: {{{inline}}}
"""


@functools.cache
def _spliced(params: tuple, layout: str, opset: int, folder: Path) -> tuple[Path, Path]:
    recipe = resize_recipe(dict(params), layout)
    name = f"{layout}-{opset}-{abs(hash(params))}"
    plain = identity_model(folder / f"{name}.plain.onnx", opset=opset, layout=layout)
    apply(recipe, plain, folder / f"{name}.patched.onnx")
    return plain, folder / f"{name}.patched.onnx"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resize")


def run_both(params: dict, backend: str, folder: Path, *, layout: str = "NCHW", opset: int = 13,
             sizes=CALLER_SIZES, twin_params: dict | None = None) -> list[float]:
    """Max |patched − twin| for each caller size (the twin may use other parameters, for known deviations)."""
    plain, patched = _spliced(tuple(params.items()), layout, opset, folder)
    twin_recipe = resize_recipe(twin_params or params, layout)
    facts = ModelFacts.of(onnx.load(str(plain)), twin_recipe)
    rng = np.random.default_rng(0)
    worst = []
    with open_runner(backend, patched) as run:
        for h, w in sizes:
            x = rng.random((2, 3, h, w) if layout == "NCHW" else (2, h, w, 3), dtype=np.float32)
            got = run({"x": x})["y"]
            want = preprocess(twin_recipe, x, facts)
            assert got.shape == want.shape == ((2, 3, *TARGET) if layout == "NCHW" else (2, *TARGET, 3))
            worst.append(float(np.abs(got - want).max()))
    return worst


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("params", MODES, ids=_id)
def test_twin_matches_runtimes_for_every_mode(params, backend, folder):
    assert max(run_both(params, backend, folder)) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("params", [
    {"fit": "crop", "crop_fraction": 0.875},
    {"fit": "crop", "interpolation": "nearest"},
    {"fit": "letterbox", "pad_value": 0.5},
    {"fit": "letterbox", "interpolation": "nearest", "pad_value": -1.0},
], ids=_id)
def test_crop_and_letterbox_in_both_layouts(params, layout, opset, backend, folder):
    assert max(run_both(params, backend, folder, layout=layout, opset=opset)) <= 1e-5


FILTERED = [
    {"interpolation": "linear", "antialias": "true"},
    {"interpolation": "cubic", "antialias": "true", "cubic_coeff_a": -0.5},
    {"interpolation": "area"},
    {"interpolation": "lanczos"},
    {"interpolation": "lanczos", "clamp": "[0.2, 0.8]"},
    {"interpolation": "area", "fit": "letterbox", "pad_value": 0.5},
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("params", FILTERED, ids=_id)
def test_filtered_modes_are_the_twin_on_every_runtime(params, layout, backend, folder):
    """antialias, area and lanczos are built from MatMuls, not Resize's attribute: OpenVINO computes them too."""
    assert max(run_both(params, backend, folder, layout=layout, opset=11)) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_rounded_passes_are_the_twin_but_where_a_sum_lands_on_a_half(layout, backend, folder):
    """PIL's uint8 passes (clip, round) on integer images: the graph equals the twin, both pass orders (31×17 runs
    the rows first, the others the columns), except where a float32 sum falls within rounding error of a half and
    the two round apart: a level at a handful of values."""
    params = {"interpolation": "lanczos", "clamp": "[0, 255]", "round": "true"}
    plain, patched = _spliced(tuple(params.items()), layout, 11, folder)
    recipe = resize_recipe(params, layout)
    facts = ModelFacts.of(onnx.load(str(plain)), recipe)
    step = recipe.input.steps[0]
    assert [step.rows_first(hw, TARGET) for hw in CALLER_SIZES] == [True, False, False, False, False]
    rng = np.random.default_rng(1)
    apart = total = 0
    with open_runner(backend, patched) as run:
        for h, w in CALLER_SIZES:
            x = rng.integers(0, 256, (2, 3, h, w) if layout == "NCHW" else (2, h, w, 3)).astype(np.float32)
            got, want = run({"x": x})["y"], preprocess(recipe, x, facts)
            assert np.array_equal(got, np.round(got)) and got.min() >= 0 and got.max() <= 255
            assert np.abs(got - want).max() <= 1.0
            apart, total = apart + int((got != want).sum()), total + got.size
    assert apart <= total * 1e-3, (apart, total)


def test_openvino_ignores_resizes_own_antialias(tmp_path):
    """Why the filtered modes do not use Resize's `antialias` (opset 18): OpenVINO 2026.4 drops it and resizes as
    without it. When this fails, OpenVINO has learned antialiasing: the plain Resize could be used again."""
    def model(antialias: int) -> Path:
        node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", antialias=antialias)
        sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 3, *TARGET])
        graph = helper.make_graph([node], "aa", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                [1, 3, 100, 80])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, *TARGET])], [sizes])
        path = tmp_path / f"aa{antialias}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return path

    x = np.random.default_rng(0).random((1, 3, 100, 80), dtype=np.float32)
    results = {}
    for backend in BACKENDS:
        for antialias in (0, 1):
            with open_runner(backend, model(antialias)) as run:
                results[backend, antialias] = run({"x": x})["y"]
    assert np.abs(results["onnxruntime", 1] - results["onnxruntime", 0]).max() > 0.05  # ORT antialiases
    np.testing.assert_allclose(results["openvino", 1], results["onnxruntime", 0], atol=1e-5)  # OpenVINO does not


#: area (OpenCV's INTER_AREA) at sizes where float32 weights went wrong: model (H, W), caller (H, W). Where a side
#: grows, OpenCV's two taps start at sx = floor(i · n_in / n_out), a whole number at some i, where the float32 i ·
#: scale landed a hair below on onnxruntime (224 → 192, i = 54: 54 × 1.1666666 = 62.999996, sx 62 not 63) and the
#: taps moved a pixel; where both shrink, the spans' float32 ends put the weights 1.7e-5 off on OpenVINO
AREA_TIES = [
    ((256, 192), (224, 224)),  # width shrinks (the HRNet recipe's 224 × 224 crop), height grows
    ((224, 192), (100, 112)),  # width grows
    ((224, 192), (100, 224)),  # width shrinks
    ((224, 192), (152, 150)),  # height grows
    ((224, 192), (248, 150)),  # height shrinks
    ((256, 192), (300, 400)),  # both shrink: the spans' overlap
    ((256, 192), (150, 416)),  # width shrinks, height grows: 54 · 416 / 192 = 117 was 116.99999999999999 in the
    ((256, 192), (150, 208)),  # twin's float64 (and 108 · 208 / 192 = 117 likewise)
]


@pytest.mark.parametrize(("n_in", "n_out", "shrinks"), [(416, 192, False), (208, 192, False), (224, 192, False),
                                                        (100, 256, False), (400, 192, True), (301, 97, True)])
def test_area_twin_weights_are_opencv_s_in_exact_fractions(n_in, n_out, shrinks):
    """The twin's INTER_AREA weights against OpenCV's definition in exact rational arithmetic (a float64 product
    that should be a whole number fell below it: 54 · 416 / 192)."""
    from fractions import Fraction

    from graphsurgery.steps.resampling import filter_weights

    weights = filter_weights("area", -0.75, n_in, n_out, shrinks)
    scale = Fraction(n_in, n_out)
    for i in range(n_out):
        want = np.zeros(n_in)
        if shrinks:  # each source pixel's share of [i · scale, (i + 1) · scale)
            for j in range(n_in):
                want[j] = max(min(Fraction(j + 1), (i + 1) * scale) - max(Fraction(j), i * scale), 0) / scale
        else:
            source = (i * scale).__floor__()
            fx = (i + 1) - (source + 1) / scale
            fx = fx - fx.__floor__() if fx > 0 else Fraction(0)
            if source >= n_in - 1:
                source, fx = n_in - 1, Fraction(0)
            want[source] += float(1 - fx)
            want[min(source + 1, n_in - 1)] += float(fx)
        np.testing.assert_allclose(weights[i], want, rtol=0, atol=1e-12, err_msg=f"row {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("model_hw, caller_hw", AREA_TIES, ids=lambda hw: "x".join(map(str, hw)))
def test_area_weights_are_whole_number_arithmetic(model_hw, caller_hw, layout, backend, tmp_path):
    """INTER_AREA's weights are worked out in int64 in the graph, rounded to float32 once: the twin's taps and
    weights on every runtime."""
    recipe = resize_recipe({"interpolation": "area"}, layout)
    plain = identity_model(tmp_path / "plain.onnx", opset=11, layout=layout, hw=model_hw)
    patched = apply(recipe, plain, tmp_path / "patched.onnx").output
    x = np.random.default_rng(0).random((1, 3, *caller_hw) if layout == "NCHW" else (1, *caller_hw, 3),
                                        dtype=np.float32)
    want = preprocess(recipe, x, ModelFacts.of(onnx.load(str(plain)), recipe))
    with open_runner(backend, patched) as run:
        np.testing.assert_allclose(run({"x": x})["y"], want, atol=1e-5, rtol=0)


def test_float32_coordinates_decide_exact_ties(folder):
    """26 → 61 rows, round_prefer_floor: row 30 maps to 12.5 exactly, 12.500001 in float32 (what the twin and
    OpenVINO compute: row 13); onnxruntime takes row 12 there (documented in the step's module)."""
    recipe = resize_recipe({"interpolation": "nearest", "size": [61, 4]})
    plain = identity_model(folder / "tie.plain.onnx", opset=13, hw=(61, 4))
    patched = apply(recipe, plain, folder / "tie.patched.onnx").output
    x = np.broadcast_to(np.arange(26, dtype=np.float32)[None, None, :, None], (1, 3, 26, 4)).copy()
    want = preprocess(recipe, x, ModelFacts.of(onnx.load(str(plain)), recipe))
    assert want[0, 0, 30, 0] == 13.0
    with open_runner("openvino", patched) as run:
        np.testing.assert_array_equal(run({"x": x})["y"], want)


# --- geometry ------------------------------------------------------------------------------------------------


def torchvision_resize_centre_crop(h: int, w: int, resize: int, crop: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """torchvision's Resize(int) + CenterCrop(int) arithmetic, written out: resized (h, w) and crop (top, left)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return (new_h, new_w), (int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0)))


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (375, 500), (224, 224), (300, 301), (100, 1000), (257, 255)])
def test_crop_fraction_0875_is_torchvision_evaluation(hw):
    step = Resize(size=(224, 224), fit="crop", crop_fraction=0.875)
    (new_h, new_w), (top, left) = torchvision_resize_centre_crop(*hw, resize=256, crop=224)
    assert step.resized_hw(*hw) == (new_h, new_w)
    code = np.arange(new_h * new_w, dtype=np.float64).reshape(1, new_h, new_w, 1)
    placed = step.place(code, (new_h, new_w), (1, 2))
    assert placed.shape == (1, 224, 224, 1) and placed[0, 0, 0, 0] == top * new_w + left


@pytest.mark.parametrize("hw", [(48, 10), (10, 48), (24, 20), (1, 1000)])
def test_letterbox_keeps_the_aspect_ratio_and_pads(hw):
    step = Resize(size=TARGET, fit="letterbox", pad_value=7.0)
    rh, rw = step.resized_hw(*hw)
    assert (rh == TARGET[0] or rw == TARGET[1]) and 1 <= rh <= TARGET[0] and 1 <= rw <= TARGET[1]
    assert abs(rh / rw - hw[0] / hw[1]) <= max(1 / rw, 1 / rh) * hw[0] / hw[1] + 1 / rw or min(rh, rw) == 1
    placed = step.place(np.ones((1, rh, rw, 1)), (rh, rw), (1, 2))
    assert placed.shape == (1, *TARGET, 1)
    assert (placed == 1.0).sum() == rh * rw and (placed == 7.0).sum() == TARGET[0] * TARGET[1] - rh * rw


# --- against OpenCV ------------------------------------------------------------------------------------------


def test_opencv_distance_reports_the_closest_flag():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    as_float = image.astype(np.float32)
    linear = resize_vs_opencv(Resize(size=TARGET), as_float)
    assert linear["equivalent"] == "INTER_LINEAR" and linear["max_abs_diff"] < 1e-3  # same formula, float
    assert resize_vs_opencv(Resize(size=TARGET, interpolation="cubic"), as_float)["max_abs_diff"] < 2e-3
    nearest = Resize(size=TARGET, interpolation="nearest", coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")
    assert resize_vs_opencv(nearest, image) | {"library_call": None} == {
        "library_call": None, "equivalent": "INTER_NEAREST", "image_dtype": "uint8", "max_abs_diff": 0.0,
        "mean_abs_diff": 0.0}
    rounded = resize_vs_opencv(Resize(size=TARGET), image)  # OpenCV rounds uint8 results, the graph does not
    assert 0.0 < rounded["max_abs_diff"] <= 1.0
    triangle = resize_vs_opencv(Resize(size=TARGET, antialias=True), image)
    assert triangle["equivalent"] == "INTER_AREA" and triangle["max_abs_diff"] > 1.0  # different filters
    area = resize_vs_opencv(Resize(size=TARGET, interpolation="area"), image)
    assert area["equivalent"] == "INTER_AREA" and 0 < area["max_abs_diff"] <= 1.0  # the same, OpenCV rounds


def test_modes_that_imitate_pil_are_compared_with_pil():
    """verify's informational table: lanczos and the antialiased modes against PIL's Image.resize on uint8 images
    (as PIL, within a level once the passes are clipped and rounded), the others and float images against OpenCV."""
    image = (np.random.default_rng(2).random((150, 40, 3)) > 0.5).astype(np.uint8) * 255  # hard edges; 126 rows go
    pil_like = Resize(size=TARGET, interpolation="lanczos", clamp=(0, 255), round=True)
    assert pil_like.rows_first((150, 40), TARGET)  # PIL runs the rows first
    compared = pil_like.against_library(image)
    assert compared["equivalent"] == "PIL LANCZOS" and compared["max_abs_diff"] <= 1.0
    assert compared["library_call"] == "PIL.Image.fromarray(image).resize((20, 24), Image.Resampling.LANCZOS)"
    float_passes = Resize(size=TARGET, interpolation="lanczos").against_library(image)  # overshoot kept
    assert float_passes["equivalent"] == "PIL LANCZOS" and float_passes["max_abs_diff"] > 1.0
    assert Resize(size=TARGET, antialias=True).against_library(image)["equivalent"] == "PIL BILINEAR"
    assert Resize(size=TARGET, antialias=True).against_library(image.astype(np.float32))["equivalent"] == "INTER_AREA"
    assert Resize(size=TARGET).against_library(image)["equivalent"] == "INTER_LINEAR"


# --- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, message", [
    ({"interpolation": "linear", "nearest_mode": "floor"}, "nearest_mode applies only with interpolation nearest"),
    ({"crop_fraction": 0.875}, "crop_fraction applies only with fit crop"),
    ({"fit": "crop", "pad_value": 3}, "pad_value applies only with fit letterbox"),
    ({"interpolation": "nearest", "antialias": "true"}, "antialias applies only with interpolation linear or cubic"),
    ({"size": [0, 10]}, "between 1 and 65536"),
    ({"coordinate_transformation_mode": "tf_crop_and_resize"}, "coordinate_transformation_mode"),
    ({"clamp": [0, 255]}, "clamp acts on the passes of the filtered modes"),
    ({"round": "true"}, "round acts on the passes of the filtered modes"),
    ({"interpolation": "lanczos", "clamp": [255, 0]}, "low < high"),
    ({"antialias": "true", "coordinate_transformation_mode": "align_corners"}, "goes with coordinate_transformation"),
    ({"interpolation": "area", "coordinate_transformation_mode": "asymmetric"},
     "coordinate_transformation_mode applies only with interpolation"),
])
def test_recipe_refuses_meaningless_parameters(params, message):
    with pytest.raises(RecipeError, match=message):
        resize_recipe(params)


def test_model_errors_name_the_fix(tmp_path):
    dynamic = identity_model(tmp_path / "dynamic.onnx", opset=13, hw=("h", "w"))
    with pytest.raises(ModelError, match=r"not fixed.*give it: `resize: \{size: \[height, width\]\}`"):
        splice(resize_recipe({}), onnx.load(str(dynamic)))
    assert splice(resize_recipe({"size": [24, 20]}), onnx.load(str(dynamic)))[1].inputs[0].shape == ("N", 3, "H", "W")
    fixed = onnx.load(str(identity_model(tmp_path / "fixed.onnx", opset=13)))
    with pytest.raises(ModelError, match=r"size is \[30, 20\] but the model wants \[24, 20\]"):
        splice(resize_recipe({"size": [30, 20]}), fixed)
    assert splice(resize_recipe({"antialias": "true"}), fixed)[1].opset == 13  # no opset 18 needed
    old = onnx.load(str(identity_model(tmp_path / "old.onnx", opset=10)))
    with pytest.raises(ModelError, match="needs opset 11, the model has opset 10 .*--upgrade-opset"):
        splice(resize_recipe({}), old)
    nhwc = onnx.load(str(identity_model(tmp_path / "nhwc.onnx", opset=13, layout="NHWC")))
    with pytest.raises(ModelError, match=r"cubic resize needs an NCHW tensor.*layout: \{to: NCHW\}"):
        splice(resize_recipe({"interpolation": "cubic"}, layout="NHWC"), nhwc)


def test_cli_error_is_one_line_and_writes_nothing(tmp_path):
    model = identity_model(tmp_path / "dynamic.onnx", opset=13, hw=("h", "w"))
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "imagenet_classifier.yaml"
    result = CliRunner().invoke(cli, ["apply", str(recipe), str(model), "-o", str(tmp_path / "out.onnx")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output and "size: [height, width]" in lines[0]
    assert not (tmp_path / "out.onnx").exists()


def test_openvino_ignoring_antialias_is_said_where_it_matters(tmp_path):
    """A model that brings its own antialiased Resize: apply, convert and verify (with OpenVINO among the backends)
    each say in one line that OpenVINO will not antialias it; the step's own antialias needs no such note."""
    from graphsurgery.verification import verify

    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="their_resize", mode="linear", antialias=1)
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 3, 12, 10])
    graph = helper.make_graph([node], "theirs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 24, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 12, 10])], [sizes])
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(plain))
    recipe = tmp_path / "scale.yaml"
    recipe.write_text("""version: 1
name: scale-only
input:
  tensor: {dtype: float32, layout: NCHW}
  steps:
    - scale: {divide: 255}
""")
    applied = CliRunner().invoke(cli, ["apply", str(recipe), str(plain), "-o", str(tmp_path / "p.onnx")])
    assert applied.exit_code == 0 and "OpenVINO ignores antialias" in " ".join(applied.output.split())
    converted = CliRunner().invoke(cli, ["convert", str(tmp_path / "p.onnx")])
    assert converted.exit_code == 0 and "OpenVINO ignores antialias" in " ".join(converted.output.split())
    assert any("OpenVINO ignores antialias" in note for note in verify(recipe, plain, random=2).notes)
    assert not any("antialias" in note for note in verify(recipe, plain, random=2, backends=("onnxruntime",)).notes)
    ours = tmp_path / "ours.yaml"
    ours.write_text(resize_recipe_text({"antialias": "true"}))
    quiet = CliRunner().invoke(cli, ["apply", str(ours), str(identity_model(tmp_path / "id.onnx", opset=13)), "-o",
                                     str(tmp_path / "q.onnx")])
    assert quiet.exit_code == 0 and "antialias" not in quiet.output
