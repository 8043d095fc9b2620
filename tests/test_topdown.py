"""The top-down graph (recipes/hrnet_coco_topdown.yaml): image + person boxes in, keypoints in image pixels out.

Each new step against its numpy twin (graph on ONNX Runtime and OpenVINO f32), the crop against cv2.warpAffine,
the flip fold against the authors' flip_back, and the whole patched HRNet (opsets 9 and 17, static batch 1 as the
authors export it) against the authors' own pipeline (`authorskit`: cv2 crops, model per crop, flip test,
get_final_preds).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import authorskit
from graphsurgery.api import apply
from graphsurgery.emit import Emitter
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.recipe import load_recipe
from graphsurgery.steps import affine_crop
from graphsurgery.steps.base import StepError, TensorSpec
from graphsurgery.steps.topdown import CropBoxes, FlipAverage, FlipTest, box_center_scale

from stepkit import Chain, build_input_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "hrnet_coco_topdown.yaml"
IMAGES = ROOT / "examples" / "images"
CROP = (256, 192)  # (h, w) of the HRNet crops


def _ov(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(feeds)
    return [result[output] for output in compiled.outputs]


def _ort(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def _boxes(rng: np.random.Generator, image_hw: tuple[int, int], n: int) -> np.ndarray:
    """Random person boxes, some partly outside the image, some tiny."""
    h, w = image_hw
    boxes = [[rng.uniform(-0.3 * w, w), rng.uniform(-0.3 * h, h), rng.uniform(1, w), rng.uniform(1, h)]
             for _ in range(n)]
    return np.array(boxes, np.float32).reshape(n, 4)


# --- crop_boxes -------------------------------------------------------------------------------------------------

EDGE_BOXES = np.array([
    [10, 12, 20, 30],          # inside
    [-15, -20, 30, 25],        # over the top-left corner
    [40, 30, 100, 80],         # beyond the bottom-right
    [5, 5, 0, 0],              # empty: every crop pixel samples the centre
    [20.5, 17.25, 1.5, 2.0],   # tiny, off-grid
    [-1e4, -1e4, 10, 10],      # far outside: zeros
    [0, 0, 3e4, 2e4],          # huge
], np.float32)


@pytest.mark.parametrize("opset", [9, 11, 17])
@pytest.mark.parametrize("rounding", [True, False])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_crop_boxes_graph_equals_twin(opset, rounding, layout):
    rng = np.random.default_rng(opset)
    image = rng.integers(0, 256, (1, 37, 53, 3)).astype(np.float32)
    step = CropBoxes(size=(16, 12), round=rounding)
    if layout == "NCHW":
        image = np.ascontiguousarray(image.transpose(0, 3, 1, 2))
    spec = TensorSpec("float32", layout, "BGR", (1, 3, "H", "W") if layout == "NCHW" else (1, "H", "W", 3))
    model = build_input_model([step], spec, opset)
    boxes = np.concatenate([EDGE_BOXES, _boxes(rng, (37, 53), 20)])
    expected = step.reference(image, spec, boxes=boxes)
    assert expected.shape == ((len(boxes), 3, 16, 12) if layout == "NCHW" else (len(boxes), 16, 12, 3))
    assert np.all(expected[5] == 0)  # far outside the image: the zero border
    if layout == "NCHW":  # the same crops as from the channel-last image
        other = step.reference(image.transpose(0, 2, 3, 1), TensorSpec("float32", "NHWC", "BGR", ()), boxes=boxes)
        np.testing.assert_array_equal(expected, other.transpose(0, 3, 1, 2))
    for got in (_ort(model, {"image": image, "boxes": boxes})[0], _ov(model, {"image": image, "boxes": boxes})[0]):
        # every product is exact and every rounding an Add: OpenVINO's fused multiply-adds change nothing
        np.testing.assert_array_equal(got, expected)


def test_crop_boxes_twin_equals_cv2_warpaffine():
    """The authors crop with get_affine_transform + cv2.warpAffine (INTER_LINEAR, zero border) on the uint8
    image; the twin (which the graph equals) repeats OpenCV 5's arithmetic: the same crops, bit for bit."""
    rng = np.random.default_rng(0)
    step = CropBoxes(size=CROP)
    for name in ("astronaut.jpg", "cameraman.jpg"):
        image = cv2.imread(str(IMAGES / name))
        boxes = np.concatenate([_boxes(rng, image.shape[:2], 12), [[0, 0, image.shape[1], image.shape[0]]]])
        ours = step.reference(image[None].astype(np.float32), TensorSpec("float32", "NHWC", "BGR", (1, *image.shape)),
                              boxes=boxes.astype(np.float32))
        for box, crop in zip(boxes.tolist(), ours):
            center, scale = authorskit.xywh2cs(*box)
            trans = authorskit.get_affine_transform(center, scale, 0, authorskit.IMAGE_SIZE)
            np.testing.assert_array_equal(crop, cv2.warpAffine(image, trans, authorskit.IMAGE_SIZE,
                                                               flags=cv2.INTER_LINEAR))


def test_crop_matrix_is_the_one_cv2_samples_with():
    """M0, M2, M4, M5 in float32, as warpAffine rounds its inverted double matrix: equal for integer boxes; for
    float boxes equal but where the exact value is a float32 tie, which OpenCV's double errors break either way."""
    o = affine_crop.NumpyOps()
    rng = np.random.default_rng(4)
    for boxes, most in ((np.round(rng.uniform([-50, -50, 1, 1], [640, 480, 400, 400], (500, 4))), 1.0),
                        (rng.uniform([-100, -100, 0.5, 0.5], [640, 480, 400, 400], (500, 4)), 0.99)):
        boxes = boxes.astype(np.float32)
        ours = np.concatenate(affine_crop.matrix(o, *(boxes[:, k:k + 1] for k in range(4)), *CROP), axis=1)
        theirs = []
        for box in boxes.tolist():
            center, scale = authorskit.xywh2cs(*box)
            forward = authorskit.get_affine_transform(center, scale, 0, authorskit.IMAGE_SIZE)
            theirs.append(cv2.invertAffineTransform(forward).ravel()[[0, 2, 4, 5]].astype(np.float32))
        same = np.all(ours == np.array(theirs), axis=1)
        assert same.mean() >= most
        np.testing.assert_allclose(ours, theirs, rtol=2 ** -23)  # the others one float32 step apart


def test_crop_boxes_refuses_a_size_it_cannot_reproduce():
    spec = TensorSpec("float32", "NHWC", "BGR", ())
    with pytest.raises(StepError, match="crop_boxes reproduces cv2.warpAffine"):
        CropBoxes(size=(100, 70)).reference(np.zeros((1, 8, 8, 3), np.float32), spec, boxes=np.zeros((1, 4)))


def test_box_center_scale_equals_the_authors():
    """`to_image mode: boxes` maps back through the center and scale the graph makes from each box
    (`box_center_scale`): the authors' `_xywh2cs`, up to float32, on both runtimes."""
    rng = np.random.default_rng(3)
    boxes = np.concatenate([EDGE_BOXES[:5], _boxes(rng, (480, 640), 50)]).astype(np.float32)
    graph = gs.Graph(opset=17)
    x = gs.Variable("boxes", dtype=np.float32, shape=["N", 4])
    center, scale = box_center_scale(Emitter(graph, 17, "t", {"boxes"}), x, 192 / 256)
    graph.inputs, graph.outputs = [x], [center, scale]
    model = gs.export_onnx(graph)
    for got_center, got_scale in (_ort(model, {"boxes": boxes}), _ov(model, {"boxes": boxes})):
        for box, c, s in zip(boxes.tolist(), got_center, got_scale):
            theirs = authorskit.xywh2cs(*box)
            np.testing.assert_allclose(c, theirs[0], rtol=1e-6, atol=1e-5)
            np.testing.assert_allclose(s, theirs[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("opset", [9, 10, 11])
def test_round_half_to_even_at_every_opset(opset):
    values = np.array([0.5, 1.5, 2.5, 3.5, 254.5, 255.0, 0.49999997, 1.4999999, 2.5000002, 17.3, 0.0, 128.75],
                      np.float32)
    graph = gs.Graph(opset=opset)
    x = gs.Variable("x", dtype=np.float32, shape=[len(values)])
    em = Emitter(graph, opset, "t", {"x"})
    y = em.round(x, dtype=np.float32, shape=[len(values)])
    graph.inputs, graph.outputs = [x], [y]
    model = gs.export_onnx(graph)
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", opset))
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    for got in (_ort(model, {"x": values})[0], _ov(model, {"x": values})[0]):
        np.testing.assert_array_equal(got, np.round(values))


# --- flip_test / flip_average -------------------------------------------------------------------------------------


def test_flip_test_mirrors_after_the_originals():
    x = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)
    spec = TensorSpec("float32", "NCHW", "RGB", ("N", 3, 4, 5))
    model = build_input_model([FlipTest()], spec, 9)
    expected = FlipTest().reference(x, spec)
    np.testing.assert_array_equal(expected, np.concatenate([x, x[..., ::-1]]))
    for got in (_ort(model, {"image": x})[0], _ov(model, {"image": x})[0]):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("opset", [9, 13, 18])
@pytest.mark.parametrize("shift", [True, False])
def test_flip_average_equals_the_authors(opset, shift):
    rng = np.random.default_rng(opset)
    heatmaps = rng.standard_normal((6, 17, 8, 6)).astype(np.float32)
    step = FlipAverage(shift=shift)
    chain = Chain([step], (np.float32, ("M", 17, 8, 6)), opset, ("output",))
    original, flipped = heatmaps[:3], authorskit.flip_back(heatmaps[3:].copy(), authorskit.FLIP_PAIRS).copy()
    if shift:
        flipped[:, :, :, 1:] = flipped.copy()[:, :, :, 0:-1]
    authors = (original + flipped) * 0.5
    twin = step.reference({"output": heatmaps.copy()})["output"]
    np.testing.assert_array_equal(twin, authors)
    for got in (chain.ort({"output": heatmaps})[0], chain.openvino({"output": heatmaps})[0]):
        np.testing.assert_array_equal(got, twin)
    assert chain.ort({"output": heatmaps[:0]})[0].shape == (0, 17, 8, 6)  # no boxes: no heatmaps


def test_flip_average_refuses_bad_pairs():
    with pytest.raises(ValueError, match="each joint in at most one pair"):
        FlipAverage(pairs=((1, 2), (2, 3)))


# --- the whole top-down model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topdown_models(tmp_path_factory) -> dict[int, tuple[Path, Path]]:
    """(plain, patched) tiny HRNet exports, static batch 1 as the authors export them, at opsets 9 and 17."""
    from modelkit import hrnet_model

    folder = tmp_path_factory.mktemp("topdown")
    models = {}
    for opset in (9, 17):
        plain = hrnet_model(folder / f"hrnet{opset}.onnx", opset=opset)
        models[opset] = plain, apply(RECIPE, plain, folder / f"topdown{opset}.onnx").output
    return models


def _authors(plain: Path, image: np.ndarray, boxes: np.ndarray):
    session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    return authorskit.top_down(image, boxes, lambda x: session.run(None, {"input": x})[0])


@pytest.mark.parametrize("opset", [9, 17])
def test_topdown_equals_the_authors_pipeline(topdown_models, opset):
    plain, patched = topdown_models[opset]
    model = onnx.load(str(patched))
    rng = np.random.default_rng(opset)
    joints = within = 0
    worst_score = 0.0
    for name in ("astronaut.jpg", "cameraman.jpg"):
        image = cv2.imread(str(IMAGES / name))
        for n in (1, 2, 4):
            boxes = _boxes(rng, image.shape[:2], n)
            keypoints, scores, _ = _authors(plain, image, boxes)
            cell = np.array([authorskit.xywh2cs(*b)[1][0] * 200 / 48 for b in boxes.tolist()])[:, None]
            for got in (_ort(str(patched), {"image": image[None], "boxes": boxes}),
                        _ov(model, {"image": image[None], "boxes": boxes})):
                assert got[0].shape == (n, 17, 2) and got[1].shape == (n, 17, 1)
                cells = np.abs(got[0] - keypoints).max(-1) / cell
                joints, within = joints + cells.size, within + int(np.sum(cells <= 1e-3))
                worst_score = max(worst_score, float(np.abs(got[1] - scores).max()))
    assert within / joints >= 0.99
    assert worst_score <= 2e-3


def test_topdown_takes_no_boxes_and_any_image_size(topdown_models):
    _, patched = topdown_models[17]
    model = onnx.load(str(patched))
    rng = np.random.default_rng(1)
    for h, w in ((120, 90), (333, 517)):
        image = rng.integers(0, 256, (1, h, w, 3)).astype(np.uint8)
        for boxes in (np.zeros((0, 4), np.float32), _boxes(rng, (h, w), 3)):
            feeds = {"image": image, "boxes": boxes}
            for got in (_ort(str(patched), feeds), _ov(model, feeds)):
                assert got[0].shape == (len(boxes), 17, 2) and got[1].shape == (len(boxes), 17, 1)


def test_signature_names_image_and_boxes(topdown_models):
    _, patched = topdown_models[9]
    model = onnx.load(str(patched))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert dims["image"] == [1, "H", "W", 3]
    assert dims["boxes"] == ["N", 4]
    assert [o.name for o in model.graph.output] == ["keypoints", "scores"]


def test_hard_coded_batch_is_refused_naming_the_reshape(tmp_path):
    """A model whose Reshape writes the batch in cannot run on one crop per box: refused, naming the node."""
    weight = numpy_helper.from_array(np.full((17, 3, 4, 4), 0.01, np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 17, 64, 48], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["conv"], strides=[4, 4], name="conv"),
         helper.make_node("Reshape", ["conv", "shape"], ["heatmaps"], name="fixed_batch")],
        "pose", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 192])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 17, 64, 48])], [weight, shape])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(GraphsurgeryError, match="Reshape 'fixed_batch' writes a batch of 1"):
        apply(RECIPE, path, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_recipe_reads_as_documented():
    recipe = load_recipe(RECIPE)
    assert [s.step_name for s in recipe.input.steps] == [
        "cast", "layout", "crop_boxes", "reverse_channels", "scale", "normalize", "flip_test"]
    assert [s.step_name for s in recipe.output.steps] == [
        "flip_average", "heatmap_argmax", "quarter_offset", "to_image"]


# --- verify -------------------------------------------------------------------------------------------------------


def test_verify_passes_the_topdown_model_on_random_images_and_boxes(topdown_models):
    from graphsurgery.verification import verify

    plain, patched = topdown_models[17]
    report = verify(RECIPE, plain, patched=patched, random=4)
    assert report, report.failures()
    assert report.unit == "images" and len(report.sizes) == 4
    assert "random person boxes" in report.inputs
    entry = report.vs_library[0]
    assert entry["step"] == "input.steps[2].crop_boxes" and entry["max_abs_diff"] <= 1


def test_verify_fails_a_topdown_model_without_the_shift(topdown_models, tmp_path):
    """A patch that drops the authors' one-pixel shift of the flipped heatmaps is caught."""
    from graphsurgery.verification import verify

    plain, _ = topdown_models[17]
    wrong = tmp_path / "noshift.yaml"
    wrong.write_text(RECIPE.read_text().replace("- flip_average: {}", "- flip_average: {shift: false}"))
    patched = apply(wrong, plain, tmp_path / "noshift.onnx").output
    report = verify(RECIPE, plain, patched=patched, random=4, backends=["onnxruntime"])
    assert not report
    assert any("keypoints" in line or "scores" in line for line in report.failures())


def test_verify_feeds_images_with_their_boxes(topdown_models, tmp_path):
    import json

    from graphsurgery.verification import verify

    plain, patched = topdown_models[9]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"astronaut.jpg": [[100, 40, 220, 380], [-40, 300, 200, 300]]}))
    report = verify(RECIPE, plain, patched=patched, images=IMAGES, boxes=boxes, backends=["onnxruntime"])
    assert report, report.failures()
    assert report.samples == 1 and "2 person boxes" in report.inputs


# --- run ----------------------------------------------------------------------------------------------------------


def test_run_feeds_the_image_and_boxes_to_the_graph(topdown_models, tmp_path):
    """`run` on the top-down model cuts no crop itself: its keypoints are the authors' pipeline's."""
    import json

    from graphsurgery.pose import run_pose

    plain, patched = topdown_models[17]
    boxes = [[100, 40, 220, 380], [-40, 300, 200, 300], [300, 10, 60, 90]]
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps({"astronaut.jpg": boxes}))
    summary = run_pose(patched, [IMAGES / "astronaut.jpg"], tmp_path / "out", backend="onnxruntime",
                       boxes=boxes_file, batch=2)
    assert summary.images[0].persons == 3
    results = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    got = np.array([r["keypoints"] for r in results], np.float32).reshape(3, 17, 3)[..., :2]
    keypoints, _, _ = _authors(plain, cv2.imread(str(IMAGES / "astronaut.jpg")), np.array(boxes, np.float32))
    cell = np.array([authorskit.xywh2cs(*b)[1][0] * 200 / 48 for b in boxes])[:, None]
    assert np.mean(np.abs(got - keypoints).max(-1) / cell <= 1e-3) >= 0.99


def test_the_ir_runs_with_free_image_size_and_box_count(topdown_models, tmp_path):
    import openvino as ov

    from graphsurgery.irconvert import convert

    _, patched = topdown_models[17]
    convert(patched, tmp_path / "topdown.xml")
    compiled = ov.Core().compile_model(str(tmp_path / "topdown.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert [str(port.get_partial_shape()) for port in compiled.inputs] == ["[1,?,?,3]", "[?,4]"]
    rng = np.random.default_rng(2)
    for h, w, n in ((480, 640, 4), (300, 200, 0), (701, 333, 2)):
        feeds = {"image": rng.integers(0, 256, (1, h, w, 3)).astype(np.uint8), "boxes": _boxes(rng, (h, w), n)}
        got, expected = compiled(feeds), _ort(str(patched), feeds)
        assert got[0].shape == (n, 17, 2)
        np.testing.assert_allclose(got[0], expected[0], atol=2e-3)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-4)


# --- refusals ---------------------------------------------------------------------------------------------------


def test_crop_boxes_before_cast_is_refused_in_one_line(tmp_path):
    from click.testing import CliRunner

    from graphsurgery.cli import cli

    from modelkit import pose_model

    wrong = tmp_path / "uint8_crop.yaml"
    wrong.write_text(RECIPE.read_text().replace("    - cast: {}\n    - layout: {to: NCHW}\n    - crop_boxes: {}\n",
                                                "    - crop_boxes: {}\n    - cast: {}\n    - layout: {to: NCHW}\n"))
    result = CliRunner().invoke(cli, ["apply", str(wrong), str(pose_model(tmp_path / "pose.onnx")), "-o",
                                      str(tmp_path / "out.onnx")])
    assert result.exit_code == 2 and "crop_boxes cuts from a float32 image" in result.output
    assert not (tmp_path / "out.onnx").exists()


def test_flip_average_refuses_an_odd_batch_and_bench_refuses_throughput(tmp_path):
    from click.testing import CliRunner

    from graphsurgery.cli import cli
    from graphsurgery.steps.base import StepError

    from modelkit import pose_model

    with pytest.raises(StepError, match="even batch"):
        FlipAverage().reference({"output": np.zeros((3, 17, 8, 6), np.float32)})
    result = CliRunner().invoke(cli, ["bench", str(RECIPE), str(pose_model(tmp_path / "pose.onnx")), "--throughput",
                                      "--iterations", "1"])
    assert result.exit_code == 2 and "makes its own batch of crops" in result.output


def test_to_image_units_crop_goes_with_image_pixels():
    from graphsurgery.steps.to_image import ToImage

    with pytest.raises(ValueError, match="goes with mode original or boxes"):
        ToImage(mode="crop", units="crop")
