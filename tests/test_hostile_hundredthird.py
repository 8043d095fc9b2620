"""Round 103: red team of rounds 100 and 102 — false refusals first.

Round 102's walk through reshapes took a learnt weight of one value a pixel, behind a Flatten, for a per-channel
normalization and refused the recipe's `normalize`. Round 100 measured the outputs of a model of free height and
width at the size the recipe feeds, but the model's facts kept its input size unknown: a DFL or YOLOX head (their
grids) and to_image in crop pixels were refused "export the model with a fixed input size" behind a sized resize or
a fixed caller shape. And round 102's refusal of a YOLOX head the model decodes itself missed YOLOX's in-place
decode (`y[..., 2:4] = torch.exp(…) * strides`, a ScatterND), which was decoded a second time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from detectorkit import yolo_head
from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent

IMAGENET_STEPS = """version: 1
name: flat-classifier
input:
  tensor: {dtype: float32, layout: NCHW, color: RGB, shape: [1, 3, 8, 8]}
  model: {layout: NCHW, color: RGB}
  steps:
    - scale: {divide: 255}
    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
output:
  steps:
    - softmax: {}
    - topk: {k: 3}
  names: {indices: indices, scores: scores}
"""


def _save(nodes, inits, inputs, outputs, path: Path) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _flat_mlp(path: Path, op: str, value: np.ndarray) -> Path:
    """[N, 3, 8, 8] → Reshape [N, 192] → `op` by the constant `value` → MatMul logits [N, 10]."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(np.array([-1, 192], np.int64), "shape"),
             numpy_helper.from_array(value.astype(np.float32), "constant"),
             numpy_helper.from_array(rng.normal(0, 0.3, (192, 10)).astype(np.float32), "w")]
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
             helper.make_node(op, ["flat", "constant"], ["prepared"], name="first"),
             helper.make_node("MatMul", ["prepared", "w"], ["logits"])]
    return _save(nodes, inits, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], path)


def test_a_learnt_weight_on_the_flattened_pixels_is_no_normalization(tmp_path):
    """x.flatten(1) * gate, one learnt value a pixel (some negative): "the model already prepares its input … the
    recipe's `normalize` step would do it again" (exit 2), where the walk stopped at the Reshape before round 102.
    Past a reshape the channel axis is unknown: only a constant of one value is read there, and a / 255 still is."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(IMAGENET_STEPS)
    rng = np.random.default_rng(0)
    for name, op, value in (("gate", "Mul", rng.normal(0, 1, 192)), ("mean", "Sub", rng.uniform(0.3, 0.6, 192))):
        plain = _flat_mlp(tmp_path / f"{name}.onnx", op, value)
        result = invoke("apply", recipe, plain, "-o", tmp_path / f"{name}.patched.onnx")
        assert result.exit_code == 0 and "prepares its input" not in result.output, result.output
    scaled = _flat_mlp(tmp_path / "scaled.onnx", "Div", np.array(255.0))
    one_line_exit_2(invoke("apply", recipe, scaled, "--dry-run"), "divides by 255 (Div node 'first')")


def _free_head(path: Path, rows: int, yolox: bool) -> Path:
    """A head of free batch, height and width, as `dynamic=True` exports write it: a stride-8 convolution flattened
    to [N, rows, A] (a DFL head), or transposed to [N, A, rows] (YOLOX's raw head)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.02, (rows, 3, 8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, rows, -1], np.int64), "flat")]
    nodes = [helper.make_node("Conv", ["images", "w"], ["conv"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Reshape", ["conv", "flat"], ["rows" if yolox else "output0"])]
    shape = ["batch", "anchors", rows] if yolox else ["batch", rows, "anchors"]
    if yolox:
        nodes.append(helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1]))
    return _save(nodes, inits,
                 [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                 [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)], path)


def _sized_recipe(folder: Path, decode: dict) -> Path:
    """The shipped YOLOv8 recipe, its letterbox at 64 × 64 (the model's size is free), decoding with `decode`."""
    recipe = yaml.safe_load((ROOT / "recipes" / "yolov8_detector.yaml").read_text())
    next(entry["resize"] for entry in recipe["input"]["steps"] if "resize" in entry)["size"] = [64, 64]
    steps = recipe["output"]["steps"]
    steps[next(i for i, entry in enumerate(steps) if "yolo_boxes" in entry)] = decode
    path = folder / f"{next(iter(decode))}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_grid_head_of_free_size_is_decoded_at_the_size_the_recipe_feeds(tmp_path):
    """Was "dfl_boxes needs the model's input size, which is not static — fix: export the model with a fixed input
    size" (and for format yolox), though the letterbox feeds the network 64 × 64 and nothing else: round 100 let a
    YOLOv8's decoded head through, not the heads whose grid needs the input size."""
    dfl = _sized_recipe(tmp_path, {"dfl_boxes": {"bins": 16, "strides": [8]}})
    plain = _free_head(tmp_path / "dfl.onnx", 64 + 2, yolox=False)
    patched = apply(dfl, plain, tmp_path / "dfl.patched.onnx").output
    report = verify(dfl, plain, patched=patched, random=3, backends=("onnxruntime",))
    assert report, report.failures()
    yolox = _sized_recipe(tmp_path, {"yolo_boxes": {"format": "yolox", "strides": [8]}})
    result = invoke("apply", yolox, _free_head(tmp_path / "yolox.onnx", 5 + 2, yolox=True), "--dry-run")
    assert result.exit_code == 0, result.output


def test_keypoints_in_crop_pixels_from_a_pose_model_of_free_size_and_a_fixed_caller_shape(tmp_path):
    """mmpose's UDP recipe with the caller's shape fixed ([1, 256, 192, 3]) on a heatmap model of free H × W: its
    heatmaps were measured at that size (round 100), but to_image said "needs the model's input size … give
    `input_size`"."""
    plain = pose_model(tmp_path / "pose.onnx", dynamic_batch=True)
    model = onnx.load(str(plain))
    for value, names in ((model.graph.input[0], ("H", "W")), (model.graph.output[0], ("h", "w"))):
        for dim, name in zip(value.type.tensor_type.shape.dim[2:], names):
            dim.Clear()
            dim.dim_param = name
    onnx.save(model, str(plain))
    recipe = yaml.safe_load((ROOT / "recipes" / "mmpose_heatmap_udp.yaml").read_text())
    recipe["input"]["tensor"]["shape"] = [1, 256, 192, 3]
    path = tmp_path / "udp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    report = verify(path, plain, random=2, backends=("onnxruntime",))
    assert report, report.failures()


def _yolox_decoded_in_place(path: Path) -> Path:
    """YOLOX before 0.2 decodes in place, `y[..., :2] = (y[..., :2] + grid) · stride; y[..., 2:4] = exp(y[..., 2:4])
    · stride`, which torch exports as two ScatterND (the updates Reshaped and Expanded): [1, 16, 5 + 1] on 32 × 32."""
    rng = np.random.default_rng(3)
    anchors, rows = 16, 6

    def slots(first: int) -> np.ndarray:  # ScatterND's indices of columns first, first + 1 of every anchor
        return np.array([[[[0, a, c] for c in (first, first + 1)] for a in range(anchors)]], np.int64)

    inits = [numpy_helper.from_array(rng.normal(0, 0.002, (48, anchors * rows)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, anchors, rows], np.int64), "head_shape"),
             numpy_helper.from_array(rng.uniform(0, 4, (1, anchors, 2)).astype(np.float32), "grid"),
             numpy_helper.from_array(np.float32(8), "stride"),
             numpy_helper.from_array(np.array([1, anchors, 2], np.int64), "update_shape"),
             numpy_helper.from_array(slots(0), "xy_slots"), numpy_helper.from_array(slots(2), "wh_slots"),
             *[numpy_helper.from_array(np.array([value], np.int64), name)
               for name, value in (("zero", 0), ("two", 2), ("four", 4), ("last", 2))]]
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
             helper.make_node("MatMul", ["features", "w"], ["flat"]),
             helper.make_node("Reshape", ["flat", "head_shape"], ["raw"]),
             helper.make_node("Slice", ["raw", "zero", "two", "last"], ["xy"]),
             helper.make_node("Add", ["xy", "grid"], ["cells"]),
             helper.make_node("Mul", ["cells", "stride"], ["centres"]),
             helper.make_node("ScatterND", ["raw", "xy_slots", "centres"], ["placed"]),
             helper.make_node("Slice", ["placed", "two", "four", "last"], ["wh"]),
             helper.make_node("Exp", ["wh"], ["sizes_in_cells"], name="exp_wh"),
             helper.make_node("Mul", ["sizes_in_cells", "stride"], ["sizes"]),
             helper.make_node("Expand", ["sizes", "update_shape"], ["expanded"]),
             helper.make_node("Reshape", ["expanded", "update_shape"], ["update"]),
             helper.make_node("ScatterND", ["placed", "wh_slots", "update"], ["output0"])]
    return _save(nodes, inits, [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                 [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, anchors, rows])], path)


def test_format_yolox_on_a_head_the_model_decodes_in_place_is_refused(tmp_path):
    """Round 102 read only `torch.cat` of the decoded parts: the in-place decode got the grid and exp again, and
    verify PASSed (its twin did the same)."""
    recipe = tmp_path / "yolox.yaml"
    recipe.write_text("""version: 1
name: yolox
output:
  steps:
    - yolo_boxes: {format: yolox, strides: [8]}
    - nms: {iou_threshold: 0.65, score_threshold: 0.25, max_detections: 30}
  names: {boxes: boxes, scores: scores, classes: classes, count: count}
""")
    plain = _yolox_decoded_in_place(tmp_path / "in_place.onnx")
    one_line_exit_2(invoke("apply", recipe, plain, "-o", tmp_path / "patched.onnx"),
                    "yolo_boxes: the model decodes its YOLOX head itself (exp(wh) · stride by Exp node 'exp_wh')",
                    "fix: set `format: v5`")
    assert not (tmp_path / "patched.onnx").exists()


def test_dfl_boxes_on_a_head_the_model_decodes_names_yolo_boxes(tmp_path):
    """dfl_boxes on an ultralytics export (decoded: 4 box rows, then 80 class scores a Sigmoid made) was refused
    with only "set `scores: none`", which then read the 4 box rows and 60 class rows as DFL bins without a word."""
    plain = yolo_head(tmp_path / "v8.onnx", h=64, w=64, classes=80, anchors=64, grid=4,
                      bounds=((8, 56), (8, 56), (4, 24), (4, 24)))
    recipe = tmp_path / "dfl.yaml"
    recipe.write_text(yaml.safe_dump({"version": 1, "name": "dfl", "output": {
        "steps": [{"dfl_boxes": {"bins": 16, "strides": [8]}}, {"nms": {}}],
        "names": {"boxes": "boxes", "scores": "scores", "classes": "classes", "count": "count"}}}))
    one_line_exit_2(invoke("apply", recipe, plain, "--dry-run"), "already made by a Sigmoid node",
                    "fix: set `scores: none`", "is read by `yolo_boxes: {format: v8}`")
