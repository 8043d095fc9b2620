"""`to_image: {mode: image}`: keypoints of a heatmap model fed whole images (resized, letterboxed in the graph) come
back in the caller's pixels. verify on the zoo's pose model on both runtimes; the mapping checked independently on a
synthetic model whose heatmap peaks where a bright square is; keypoints in the letterbox padding; the step against its
twin on both runtimes; the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.emit import Emitter
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.heatmap_grid import heatmap_grid
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import parse_recipe
from graphsurgery.runners import BACKENDS, open_runner
from graphsurgery.steps.base import GEOMETRY
from graphsurgery.steps.to_image import IMAGE_COMPARISON, ToImage
from graphsurgery.twins import comparisons, postprocess, preprocess, run_unpatched, unpatched_outputs, with_geometry
from graphsurgery.verification import verify

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "examples" / "images"



def pose_recipe(geometry: str = "- resize: {fit: letterbox, pad_value: 0}", to_image: str = "{mode: image}"):
    return parse_recipe(f"""
version: 1
name: pose-whole-image
input:
  name: image
  tensor: {{dtype: uint8, layout: NHWC, color: BGR}}
  model: {{layout: NCHW, color: RGB}}
  steps:
    - cast: {{}}
    - layout: {{to: NCHW}}
    {geometry}
    - reverse_channels: {{}}
    - scale: {{divide: 255}}
    - normalize: {{mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
output:
  steps:
    - heatmap_argmax: {{}}
    - quarter_offset: {{}}
    - to_image: {to_image}
  names: {{keypoints: keypoints, scores: scores}}
  keep_original: false
""")


POSE_RECIPE = pose_recipe()


@pytest.fixture(scope="module")
def pose_model(tmp_path_factory) -> Path:
    from modelkit import zoo_model

    return zoo_model(tmp_path_factory.mktemp("pose") / "simplebaseline.onnx", "simplebaseline-tiny", opset=17)


def keypoint_results(report) -> list:
    return [result for pair in report.pairs for result in pair.results if result.output == "keypoints"]


@pytest.mark.parametrize("samples", [{"random": 2}, {"images": IMAGES}], ids=["random", "images"])
def test_verify_passes_on_both_runtimes_with_keypoints_mapped_to_heatmap_cells(pose_model, samples):
    report = verify(POSE_RECIPE, pose_model, **samples)
    assert report, report.failures()
    assert report.backends == list(BACKENDS)
    results = keypoint_results(report)
    assert len(results) == 2 * len(BACKENDS) - 1  # unpatched → patched on each backend, and across backends
    assert all(r.positions == 17 * report.samples and r.atol == IMAGE_COMPARISON.atol for r in results)
    # the probes found cells inside the letterboxed image: near ties can be told from real mismatches
    assert not any("could not be mapped to heatmap cells" in note for note in report.notes), report.notes


OTHER_GEOMETRIES = {
    "crop": ("- resize: {fit: crop, crop_fraction: 0.875}", "{mode: image}"),
    "top-left letterbox": ("- resize: {fit: letterbox, pad_anchor: top_left}", "{mode: image}"),
    "stretch + center_crop": ("- resize: {size: [400, 300]}\n    - center_crop: {}", "{mode: image}"),
    "letterbox, udp": ("- resize: {fit: letterbox}", "{mode: image, udp: true}"),
}


@pytest.mark.parametrize("geometry", OTHER_GEOMETRIES)
def test_other_geometries_verify_too(pose_model, geometry):
    report = verify(pose_recipe(*OTHER_GEOMETRIES[geometry]), pose_model, random=2)
    assert report, report.failures()
    assert not any("could not be mapped to heatmap cells" in note for note in report.notes), report.notes


def test_the_pose_model_gives_keypoints_inside_the_image_or_minus_one(pose_model, tmp_path):
    patched = apply(POSE_RECIPE, pose_model, tmp_path / "patched.onnx").output
    rng = np.random.default_rng(0)
    inside = padding = 0
    with open_runner("onnxruntime", patched) as run:
        for h, w in ((300, 400), (100, 600), (481, 353)):
            keypoints = run({"image": rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)})["keypoints"][0]
            invalid = (keypoints == -1).all(axis=1)
            assert ((keypoints[~invalid] >= -0.5) & (keypoints[~invalid] <= [w - 0.5, h - 0.5])).all()
            inside, padding = inside + int((~invalid).sum()), padding + int(invalid.sum())
    assert inside > 20 and padding > 0  # the seeded model's peaks land in the image and in the padding


# --- a synthetic model: the heatmap is the image's first channel, average-pooled by 4 ------------------------------


def synthetic_model(path: Path, input_hw: tuple = (64, 96)) -> Path:
    """input [1, 3, H, W] float → heatmaps [1, 1, 16, 24]: channel 0 average-pooled over 4×4 pixels, so the peak sits
    where the image is brightest. `input_hw` may be symbolic (the heatmap shape stays declared)."""
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, *input_hw])
    heatmaps = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 1, 16, 24])
    nodes = [helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Slice", ["pooled", "zero", "one", "one"], ["heatmaps"])]
    constants = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
                 numpy_helper.from_array(np.array([1], np.int64), "one")]
    model = helper.make_model(helper.make_graph(nodes, "synthetic", [image], [heatmaps], constants),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def synthetic_recipe(resize: str = "{fit: letterbox, pad_value: 0}", to_image: str = "{mode: image}",
                     with_input: bool = True):
    section = f"""
input:
  name: image
  tensor: {{dtype: uint8, layout: NHWC, color: RGB}}
  model: {{layout: NCHW, color: RGB}}
  steps: [{{cast: {{}}}}, {{layout: {{to: NCHW}}}}, {{resize: {resize}}}]""" if with_input else ""
    return parse_recipe(f"""
version: 1
name: synthetic-geometry{section}
output:
  steps: [{{heatmap_argmax: {{}}}}, {{quarter_offset: {{}}}}, {{to_image: {to_image}}}]
  names: {{keypoints: keypoints, scores: scores}}
  keep_original: false
""")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return synthetic_model(tmp_path_factory.mktemp("synthetic") / "synthetic.onnx")


def letterbox_scale(hw: tuple[int, int]) -> float:
    return min(96 / hw[1], 64 / hw[0])


def bright_square(hw: tuple[int, int], x0: int, y0: int, side: int) -> np.ndarray:
    image = np.zeros((1, *hw, 3), np.uint8)
    image[0, y0:y0 + side, x0:x0 + side] = 255
    return image


GEOMETRIES = {"letterbox": "{fit: letterbox, pad_value: 0}",
              "top-left letterbox": "{fit: letterbox, pad_anchor: top_left, pad_value: 0}"}


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hw", [(50, 200), (300, 100)], ids=["wide", "tall"])
def test_a_bright_square_comes_back_within_one_cell_of_where_it_is(synthetic, tmp_path, geometry, backend, hw):
    patched = apply(synthetic_recipe(GEOMETRIES[geometry]), synthetic, tmp_path / "patched.onnx").output
    cell = 4 / letterbox_scale(hw)  # one heatmap cell (4 model pixels) in the caller's pixels
    side = int(np.ceil(cell))  # a square about one cell wide
    h, w = hw
    errors = []
    with open_runner(backend, patched) as run:
        for y0 in range(0, h - side + 1, 5):
            for x0 in range(0, w - side + 1, 5):
                centre = np.array([x0 + (side - 1) / 2, y0 + (side - 1) / 2])
                if (centre < cell).any() or (centre > [w - 1 - cell, h - 1 - cell]).any():
                    continue  # within a cell of the edge, the peak's cell may straddle the padding
                errors.append(run({"image": bright_square(hw, x0, y0, side)})["keypoints"][0, 0] - centre)
    errors = np.abs(np.array(errors))
    assert len(errors) > 100
    # measured: max 0.86 (wide) and 0.95 (tall) cells, mean about 0.4 cells, both runtimes
    assert errors.max() <= cell, (errors.max(axis=0) / cell, errors.mean(axis=0) / cell)


@pytest.mark.parametrize("hw", [(50, 200), (300, 100)], ids=["wide", "tall"])
def test_a_peak_in_the_padding_comes_back_minus_one_in_graph_and_twin(synthetic, tmp_path, hw):
    recipe = synthetic_recipe("{fit: letterbox, pad_value: 255}")  # a black image in bright padding
    patched = apply(recipe, synthetic, tmp_path / "patched.onnx").output
    image = np.zeros((1, *hw, 3), np.uint8)
    facts = ModelFacts.of(onnx.load(synthetic), recipe)
    for backend in BACKENDS:
        with open_runner(backend, patched) as run, open_runner(backend, synthetic) as plain:
            got = run({"image": image})
            twin = run_unpatched(recipe, facts, lambda x: plain({"input": x}), image)
        assert got["scores"][0, 0, 0] == twin["scores"][0, 0, 0] == 255  # a strong peak, kept by heatmap_argmax
        np.testing.assert_array_equal(got["keypoints"], [[[-1, -1]]])
        np.testing.assert_array_equal(twin["keypoints"], [[[-1, -1]]])


def test_verify_maps_caller_pixels_to_the_heatmap_cells_of_each_image_size(synthetic):
    recipe = synthetic_recipe()
    facts = ModelFacts.of(onnx.load(synthetic), recipe)
    parts, keypoints, peaks = [], [], []
    with open_runner("onnxruntime", synthetic) as plain:
        for hw, (x0, y0) in (((50, 200), (120, 20)), ((300, 100), (40, 200))):
            image = bright_square(hw, x0, y0, 20)
            heatmaps = plain({"input": preprocess(recipe, image, facts)})["heatmaps"]
            extras = with_geometry(recipe, facts, {}, image.shape)
            parts.append((heatmaps, extras))
            keypoints.append(postprocess(recipe, heatmaps, facts, extras)["keypoints"])
            y, x = np.unravel_index(heatmaps[0, 0].argmax(), heatmaps.shape[2:])
            peaks.append([x, y])
    grid = heatmap_grid(recipe, facts, parts, comparisons(recipe, facts))["keypoints"]
    assert grid.scale.shape == (2, 1, 2) and not np.allclose(grid.scale[0], grid.scale[1])  # one map per size
    np.testing.assert_array_equal(grid.cells(np.concatenate(keypoints))[:, 0], peaks)


# --- the step against its twin, on both runtimes ------------------------------------------------------------------


def step_model(path: Path, step: ToImage, joints: int) -> Path:
    """A model that is nothing but `step`, fed keypoints in model-input pixels (units crop) and the geometry."""
    graph = gs.Graph(opset=17)
    keypoints = gs.Variable("keypoints", dtype=np.float32, shape=[1, joints, 2])
    geometry = gs.Variable(GEOMETRY, dtype=np.float32, shape=[6])
    graph.inputs = [keypoints, geometry]
    em = Emitter(graph, 17, "graphsurgery/post", {"keypoints", GEOMETRY}).scoped(step.step_name)
    mapped = step.build(em, {"keypoints": keypoints, GEOMETRY: geometry})["keypoints"]
    result = gs.Variable("result", dtype=np.float32, shape=[1, joints, 2])
    graph.nodes.append(gs.Node("Identity", name="result", inputs=[mapped], outputs=[result]))
    graph.outputs = [result]
    model = gs.export_onnx(graph.cleanup().toposort(), do_type_check=True)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


IN_CROP_PIXELS = ToImage(mode="image", units="crop")
#: a 192×50 image letterboxed into 96×64: scale 0.5, 25 rows, padded by 19 above (values exact in binary)
LETTERBOX = np.array([0.5, 0.5, 0, 19, 192, 50], np.float32)
CASES = {  # model-input pixel → caller pixel
    "pixel centre": ((10, 30), (20.5, 22.5)),  # caller pixels 20 and 21 (rows 22, 23) made model pixel 10 (30)
    "first pixel's outer edge": ((-0.5, 18.5), (-0.5, -0.5)),
    "last pixel's outer edge": ((95.5, 43.5), (191.5, 49.5)),
    "left of the image": ((-0.75, 30), (-1, -1)),
    "padding above": ((40, 18.25), (-1, -1)),
    "right of the image": ((95.75, 30), (-1, -1)),
    "padding below": ((40, 43.75), (-1, -1)),
    "NaN x": ((np.nan, 30), (np.nan, 22.5)),
    "NaN x, y in the padding": ((np.nan, 18.25), (-1, -1)),
    "NaN": ((np.nan, np.nan), (np.nan, np.nan)),
}


def test_the_step_maps_pixel_centres_and_marks_the_padding_as_its_twin_does(tmp_path):
    path = step_model(tmp_path / "step.onnx", IN_CROP_PIXELS, len(CASES))
    pixels = np.array([[model for model, _ in CASES.values()]], np.float32)
    want = np.array([[caller for _, caller in CASES.values()]], np.float32)
    twin = IN_CROP_PIXELS.reference({"keypoints": pixels, GEOMETRY: LETTERBOX})["keypoints"]
    np.testing.assert_array_equal(twin, want)
    for backend in BACKENDS:
        with open_runner(backend, path) as run:
            np.testing.assert_array_equal(run({"keypoints": pixels, GEOMETRY: LETTERBOX})["result"], want)


def test_graph_and_twin_agree_within_the_declared_tolerance_on_both_runtimes(tmp_path):
    joints = 4096
    path = step_model(tmp_path / "step.onnx", IN_CROP_PIXELS, joints)
    rng = np.random.default_rng(1)
    with open_runner("onnxruntime", path) as ort, open_runner("openvino", path) as ov:
        for _ in range(20):
            width, height = rng.integers(20, 16384, 2)
            geometry = np.array([*rng.uniform(0.01, 10, 2), *rng.integers(0, 300, 2), width, height], np.float32)
            caller = rng.uniform(-20, max(width, height) + 20, (1, joints, 2))
            pixels = np.round(((caller + 0.5) * geometry[:2] + geometry[2:4] - 0.5) * 4).astype(np.float32) / 4
            feeds = {"keypoints": pixels, GEOMETRY: geometry}
            twin = IN_CROP_PIXELS.reference(feeds)["keypoints"]
            assert 0 < (twin == -1).all(axis=2).sum() < joints  # both kinds of keypoint
            np.testing.assert_array_equal(ort(feeds)["result"], twin)  # measured: bit for bit
            got = ov(feeds)["result"]  # its division is not numpy's: up to 9.8e-4 px apart, measured
            np.testing.assert_array_equal(got == -1, twin == -1)
            np.testing.assert_allclose(got, twin, rtol=0, atol=IMAGE_COMPARISON.atol)


def test_udp_maps_to_model_pixels_as_mode_crop_does_then_back_to_the_image():
    heatmaps = np.zeros((1, 3, 16, 24), np.float32)
    env = {"keypoints": np.array([[[0, 0], [23, 15], [11.25, 7.75]]], np.float32), "heatmaps": heatmaps,
           GEOMETRY: LETTERBOX}
    facts = ModelFacts(input_size=(96, 64), output_producer=None, output_name="heatmaps")
    crop = ToImage(mode="crop", udp=True).reference(env, facts)["keypoints"]
    image = ToImage(mode="image", udp=True).reference(env, facts)["keypoints"]
    np.testing.assert_array_equal(image, IN_CROP_PIXELS.reference({**env, "keypoints": crop})["keypoints"])
    assert ToImage(mode="image").reads == ("keypoints", "heatmaps", GEOMETRY)
    assert ToImage(mode="image").writes() == {"keypoints": IMAGE_COMPARISON}


# --- refusals ----------------------------------------------------------------------------------------------------


def test_mode_image_without_input_steps_is_refused(synthetic, tmp_path):
    with pytest.raises(GraphsurgeryError, match=r"to_image maps results back through the input steps, and the "
                                                r"recipe has none — fix: add the input section"):
        apply(synthetic_recipe(with_input=False), synthetic, tmp_path / "refused.onnx")
    assert not (tmp_path / "refused.onnx").exists()


def test_mode_image_on_a_model_of_free_size_maps_through_the_size_the_resize_feeds(tmp_path):
    """Was refused ("needs the model's input size … give `input_size`") though the resize feeds the network its
    64 × 96 and nothing else (round 103: the model's facts read that size); a given input_size still maps alike."""
    dynamic = synthetic_model(tmp_path / "dynamic.onnx", ("H", "W"))
    resize = "{size: [64, 96], fit: letterbox, pad_value: 0}"
    for name, to_image in (("read", "{mode: image}"), ("given", "{mode: image, input_size: [96, 64]}")):
        patched = apply(synthetic_recipe(resize, to_image), dynamic, tmp_path / f"{name}.onnx").output
        with open_runner("onnxruntime", patched) as run:
            keypoint = run({"image": bright_square((50, 200), 120, 20, 9)})["keypoints"][0, 0]
        assert np.abs(keypoint - [124, 24]).max() <= 4 / letterbox_scale((50, 200)), name


def test_udp_with_keypoints_in_crop_pixels_is_refused():
    with pytest.raises(ValueError, match="keypoints in heatmap cells"):
        ToImage(mode="image", units="crop", udp=True)


def test_the_twin_without_the_callers_shape_is_refused(synthetic):
    recipe = synthetic_recipe()
    facts = ModelFacts.of(onnx.load(synthetic), recipe)
    with pytest.raises(GraphsurgeryError, match="its size is unknown here"):
        unpatched_outputs(recipe, facts, {"heatmaps": np.zeros((1, 1, 16, 24), np.float32)})
