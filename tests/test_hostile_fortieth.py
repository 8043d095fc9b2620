"""Round 40: the steps at the edges of their legal parameters. Each step's output is held to a few lines of numpy
written here from its documentation (not its twin), on ONNX Runtime and OpenVINO."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.steps.classify import Softmax
from graphsurgery.steps.detect import YoloBoxes
from graphsurgery.steps.nms import Nms
from graphsurgery.steps.output import HeatmapArgmax, QuarterOffset
from graphsurgery.steps.simcc import SimccDecode

from stepkit import chain

PARTS = ("boxes", "scores", "classes", "count")
RUNTIMES = ("ort", "openvino")


def classifier(path: Path, hw: tuple[int, int], classes: int = 10) -> Path:
    """[N, 3, H, W] float → Flatten → MatMul → logits [N, classes]."""
    rng = np.random.default_rng(4)
    weights = rng.normal(0, 0.3, (3 * hw[0] * hw[1], classes)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["flat"], axis=1),
                               helper.make_node("MatMul", ["flat", "w"], ["logits"])], "classifier",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, *hw])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


CLASSIFIER_RECIPE = """version: 1
name: edge-classifier
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NCHW, color: RGB}
  steps: [cast: {}, layout: {to: NCHW}, INPUT_STEP, scale: {divide: 255}]
output:
  steps:
    - SOFTMAX
    - topk: {k: 3}
  names: {indices: indices, scores: scores}
"""


def classifier_recipe(folder: Path, input_step: str, softmax: str = "softmax: {}") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(CLASSIFIER_RECIPE.replace("INPUT_STEP", input_step).replace("SOFTMAX", softmax))
    return path


# --- nms: ONNX's rule (suppress where IoU > iou_threshold) on every runtime ----------------------------------------

#: one class; (x1, y1, x2, y2) corners and distinct scores, best first: disjoint, touching (IoU 0), half overlapping
#: (IoU exactly 1/2) and identical (IoU 1) boxes
EDGE_BOXES = [(0, 0, 2, 2), (10, 0, 12, 2), (2, 0, 4, 2), (20, 0, 24, 2), (20, 0, 22, 2), (30, 0, 32, 2),
              (30, 0, 32, 2)]
EDGE_SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35]


def exact_iou(a, b) -> Fraction:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return Fraction(inter, union)


def kept_by_the_docs(iou_threshold: float) -> list[int]:
    """Greedy, best first: a box survives when its IoU with every box kept before is <= the threshold."""
    kept: list[int] = []
    for index, box in enumerate(EDGE_BOXES):
        if all(exact_iou(box, EDGE_BOXES[k]) <= Fraction(iou_threshold) for k in kept):
            kept.append(index)
    return kept


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("iou_threshold", [0.0, 0.5, 1.0])
def test_nms_keeps_what_the_iou_rule_keeps_on_every_runtime(iou_threshold, opset):
    """OpenVINO's NonMaxSuppression suppresses from the threshold (IoU ≥ t), ONNX Runtime above it: at
    `iou_threshold: 0` OpenVINO kept one box, dropping disjoint ones, at 0.5 a box overlapping by exactly half, at 1
    an identical one; verify called those near ties and passed."""
    corners = np.array(EDGE_BOXES, np.float32)
    centre, size = (corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]
    head = np.concatenate([centre, size, np.array(EDGE_SCORES, np.float32)[:, None]], 1).T[None]   # [1, 5, A]
    steps = (YoloBoxes(format="v8"), Nms(iou_threshold=iou_threshold, score_threshold=0.1, max_detections=10))
    run = chain(steps, (np.float32, (1, 5, len(EDGE_BOXES))), opset, PARTS)
    want = kept_by_the_docs(iou_threshold)
    assert 0 < len(want) < len(EDGE_BOXES) or iou_threshold == 1.0
    for runtime in RUNTIMES:
        got = dict(zip(PARTS, getattr(run, runtime)({"output": head})))
        count = int(got["count"][0])
        assert count == len(want), (runtime, got["scores"][0])
        assert sorted(got["scores"][0, :count].tolist()) == sorted(np.float32(EDGE_SCORES)[want].tolist()), runtime
        np.testing.assert_array_equal(got["boxes"][0, :count], corners[want])  # best first: the scores are distinct


# --- simcc_decode's split_ratio --------------------------------------------------------------------------------


def test_a_split_ratio_that_is_zero_in_float32_is_refused(tmp_path):
    """split_ratio 1e-300 passed `gt=0`, was 0 as the graph's float32 constant, and every keypoint was divided by
    zero (NaN, ±inf): a patch with 1e-200 passed verify, with numpy's warnings on stderr."""
    from test_simcc import RECIPE, two_head_model

    model = two_head_model(tmp_path / "simcc.onnx")
    recipe = tmp_path / "simcc.yaml"
    recipe.write_text(RECIPE.replace("KEEP", "false").replace("split_ratio: 2.0", "split_ratio: 1e-300"))
    one_line_exit_2(invoke("apply", recipe, model, "-o", tmp_path / "patched.onnx"), "split_ratio")
    assert not (tmp_path / "patched.onnx").exists()


def run_on(runtime: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs on ONNX Runtime ("ort") or OpenVINO, in the model's order."""
    if runtime == "ort":
        import onnxruntime as ort

        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    import openvino as ov

    compiled = ov.Core().compile_model(ov.Core().read_model(model.SerializeToString(), b""), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(feeds)
    return [results[output] for output in compiled.outputs]


def test_the_smallest_split_ratio_divides_as_documented():
    """Guard: at 1/64 the keypoints are numpy's first argmax times 64, −64 where the smaller maximum is <= 0."""
    from test_simcc import WX, WY, K, decode_model

    rng = np.random.default_rng(40)
    x, y = rng.normal(0, 1, (2, K, WX)).astype(np.float32), rng.normal(0, 1, (2, K, WY)).astype(np.float32)
    x[0, 0, 3] = x[0, 0, 7] = 9.0  # a tie: the first
    y[1, 2] = -1.0                 # a joint whose smaller maximum is below 0
    model = decode_model(SimccDecode(split_ratio=1 / 64), 17)
    score = np.minimum(x.max(-1), y.max(-1))
    want = np.where((score > 0)[..., None], np.stack([x.argmax(-1), y.argmax(-1)], -1), -1) * 64.0
    assert want[0, 0, 0] == 3 * 64 and (want[1, 2] == -64).all()
    for runtime in RUNTIMES:
        keypoints, _ = run_on(runtime, model, {"simcc_x": x, "simcc_y": y})
        np.testing.assert_array_equal(keypoints, want)


# --- resize: cubic to a side of 1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(1, 7), (1, 1)])
def test_a_cubic_resize_to_a_side_of_one_is_refused(tmp_path, hw):
    """ONNX Runtime's layout optimizer runs such a Resize channel-last, where it cannot shrink cubically: the
    patched model failed on most image sizes and verify ended in an internal error (exit 3)."""
    model = classifier(tmp_path / "classifier.onnx", hw)
    recipe = classifier_recipe(tmp_path, "resize: {interpolation: cubic}")
    one_line_exit_2(invoke("apply", recipe, model, "-o", tmp_path / "patched.onnx"), "cubic", "linear")
    assert not (tmp_path / "patched.onnx").exists()
    one_line_exit_2(invoke("verify", recipe, model, "--random", "2", "--backends", "onnxruntime"), "cubic")


def test_a_cubic_resize_to_two_rows_still_runs(tmp_path):
    """Guard: a side of 2 is not refused and verifies."""
    model = classifier(tmp_path / "classifier.onnx", (2, 7))
    recipe = classifier_recipe(tmp_path, "resize: {interpolation: cubic}")
    result = invoke("verify", recipe, model, "--random", "3", "--backends", "onnxruntime")
    assert result.exit_code == 0, result.output


# --- softmax over the batch axis ------------------------------------------------------------------------------


def test_softmax_over_the_batch_axis_is_refused(tmp_path):
    """`softmax: {axis: 0}` of [N, C] logits made every sample's probabilities depend on its batch (one sample:
    all 1.0), and verify failed every patch, right or wrong, as "the same answers"."""
    model = classifier(tmp_path / "classifier.onnx", (8, 8))
    recipe = classifier_recipe(tmp_path, "resize: {}", softmax="softmax: {axis: 0}")
    one_line_exit_2(invoke("apply", recipe, model, "-o", tmp_path / "patched.onnx"), "batch axis")
    assert not (tmp_path / "patched.onnx").exists()


def test_softmax_of_a_vector_keeps_axis_0():
    """Guard: the only axis of a 1-D output is its class axis."""
    logits = np.array([1.0, 2.0, 0.5], np.float32)
    got = Softmax(axis=0).reference({"output": logits})["probabilities"]
    np.testing.assert_allclose(got, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)


# --- verify names the recipe when a step does not fit the model -------------------------------------------------


def test_verify_names_the_recipe_when_a_step_does_not_fit_the_model(tmp_path):
    """verify bound the twins' steps under the name "model": `error: model: input.steps[2]…` named no file."""
    model = classifier(tmp_path / "classifier.onnx", (8, 8))
    recipe = classifier_recipe(tmp_path, "center_crop: {size: [5, 5]}")
    result = invoke("verify", recipe, model, "--random", "2", "--backends", "onnxruntime")
    one_line_exit_2(result, "center_crop", "[8, 8]")
    assert result.output.startswith(f"error: {recipe}: "), result.output


# --- heatmap decoding at the borders of tiny maps ---------------------------------------------------------------


def get_max_preds_then_post_process(maps: np.ndarray) -> np.ndarray:
    """The HRNet authors' get_max_preds and POST_PROCESS quarter offset, written from their description."""
    n, k, h, w = maps.shape
    flat = maps.reshape(n, k, -1)
    index, peak = flat.argmax(-1), flat.max(-1)
    coords = np.stack([index % w, index // w], -1).astype(np.float32) * (peak > 0)[..., None]
    for i in range(n):
        for j in range(k):
            px, py = int(np.floor(coords[i, j, 0] + 0.5)), int(np.floor(coords[i, j, 1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                hm = maps[i, j]
                coords[i, j] += 0.25 * np.sign([hm[py, px + 1] - hm[py, px - 1], hm[py + 1, px] - hm[py - 1, px]])
    return coords


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (4, 4), (5, 4)])
def test_argmax_and_quarter_offset_on_tiny_maps_are_the_authors(hw):
    """Guard: ties (the first), peaks on every border, all-negative maps ((0, 0)) and ties of the neighbours (no
    offset), on maps down to 1 × 1."""
    rng = np.random.default_rng(hw[0] * 10 + hw[1])
    maps = rng.integers(-3, 4, (3, 6, *hw)).astype(np.float32)  # small integers: many ties
    maps[0, 0] = -1.0
    run = chain((HeatmapArgmax(), QuarterOffset()), (np.float32, ("N", 6, *hw)), 17, ("keypoints",))
    want = get_max_preds_then_post_process(maps)
    for runtime in RUNTIMES:
        (got,) = getattr(run, runtime)({"output": maps})
        np.testing.assert_array_equal(got, want)


# --- softmax of float16 logits ----------------------------------------------------------------------------------


def test_the_softmax_twin_of_float16_logits_rounds_once_as_the_runtimes_do():
    """The twin computed a float16 model's softmax in float16, rounding the exponentials and their sum at every
    step: up to 4.5 float16 steps from the exact answer, which ONNX Runtime and OpenVINO give to half a step, and
    a float16 classifier's right patch FAILed (top-10 scores 5 steps apart)."""
    logits = np.random.default_rng(40).normal(0, 5, (500, 10)).astype(np.float16)
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    exact = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    step = np.spacing(exact.astype(np.float16)).astype(np.float64)
    run = chain((Softmax(),), (np.float16, ("N", 10)), 13, ("probabilities",))
    for runtime in (*RUNTIMES, "twin"):
        (got,) = getattr(run, runtime)({"output": logits})
        assert got.dtype == np.float16
        assert (np.abs(got.astype(np.float64) - exact) <= step / 2).all(), runtime


# --- boxes_to_image through letterboxes of extreme aspect ratios --------------------------------------------------

#: model-input corners (x1, y1, x2, y2) of a 160 × 128 detector whose boxes do not depend on the image: on the pad
#: edge, across it, inside, wholly in the padding
FIXED_BOXES = np.array([[0, 63, 160, 65], [10, 0, 50, 60], [10, 0, 50, 63], [10, 0, 50, 64], [20, 64, 30, 64.5],
                        [100, 60, 159, 70], [0, 100, 160, 128]], np.float32)


def fixed_box_detector(path: Path) -> Path:
    """images [1, 3, 128, 160] → output0 [1, 5, A]: FIXED_BOXES as cx, cy, w, h and one class of distinct scores
    (plus 0 · the image's mean, so that the image is read)."""
    centre, size = (FIXED_BOXES[:, :2] + FIXED_BOXES[:, 2:]) / 2, FIXED_BOXES[:, 2:] - FIXED_BOXES[:, :2]
    scores = np.linspace(0.9, 0.5, len(FIXED_BOXES), dtype=np.float32)[:, None]
    head = np.concatenate([centre, size, scores], 1).T[None].astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
         helper.make_node("Add", ["head", "nothing"], ["output0"])],
        "fixed", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 128, 160])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head.shape))],
        [numpy_helper.from_array(head, "head"), numpy_helper.from_array(np.array(0, np.float32), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def letterboxed_back(height: int, width: int) -> list[np.ndarray]:
    """FIXED_BOXES in a height × width image, as the docs say: ultralytics' letterbox (scale min(128 / H, 160 / W),
    sides rounded, centred), each corner (x − offset) / scale per axis, boxes wholly in the padding dropped, clipped
    to the image; best first."""
    r = min(128 / height, 160 / width)
    new_w, new_h = max(1, round(width * r)), max(1, round(height * r))
    scale = np.array([new_w / width, new_h / height] * 2)
    offset = np.array([(160 - new_w) // 2, (128 - new_h) // 2] * 2)
    back = (FIXED_BOXES.astype(np.float64) - offset) / scale
    inside = (back[:, 2] > 0) & (back[:, 3] > 0) & (back[:, 0] < width) & (back[:, 1] < height)
    return list(np.clip(back[inside], 0, [width, height, width, height]))


def test_boxes_come_back_through_letterboxes_of_extreme_aspect(tmp_path):
    """Guard: a 10 × 1000 image letterboxed to 2 rows of 160 (and the like) maps each box back as documented."""
    from graphsurgery.api import apply

    recipe = tmp_path / "detector.yaml"
    recipe.write_text((Path(__file__).resolve().parent.parent / "recipes" / "yolov8_detector.yaml").read_text().replace(
        "iou_threshold: 0.7, score_threshold: 0.25, max_detections: 300, best_class_only: true",
        "iou_threshold: 1.0, score_threshold: 0.1, max_detections: 10"))
    patched = onnx.load(str(apply(recipe, fixed_box_detector(tmp_path / "fixed.onnx"), tmp_path / "p.onnx").output))
    names = [output.name for output in patched.graph.output]
    for height, width in [(10, 1000), (1000, 10), (1, 1), (3, 2000), (257, 320)]:
        want = letterboxed_back(height, width)
        for runtime in RUNTIMES:
            got = dict(zip(names, run_on(runtime, patched, {"image": np.zeros((1, height, width, 3), np.uint8)})))
            count = int(got["count"][0])
            assert count == len(want), (height, width, runtime)
            np.testing.assert_allclose(got["boxes"][0, :count], want, rtol=1e-5, atol=1e-3)


# --- keypoints at ±inf in the comparison --------------------------------------------------------------------------


def test_an_infinite_keypoint_is_a_mismatch_without_numpy_warnings():
    """A keypoint at ±inf (divided by zero) was cast to an int64 cell from ±1.8e308: numpy's "invalid value
    encountered in cast" on stderr around verify's table, an internal error under PYTHONWARNINGS=error."""
    import warnings

    from graphsurgery.compare import HeatmapGrid, compare_positions
    from graphsurgery.steps.base import Comparison

    expected = np.array([[[np.inf, 1.0], [2.0, 3.0], [-np.inf, np.nan]]], np.float32)
    actual = expected.copy()
    actual[0, 1, 0] = 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare_positions("keypoints", actual, expected, Comparison("coordinates", rtol=0.0, atol=0.0))
        cells = HeatmapGrid(np.ones(2), np.zeros(2)).cells(expected)
    assert (result.matches, result.positions) == (2, 3)
    assert cells[0, 0, 0] > 2**40 and cells[0, 2, 0] < -2**40 and cells[0, 2, 1] == 0
