"""Small models built with onnx helpers, shaped like the ones users bring (HRNet-like pose, classifiers)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: A pose recipe that maps keypoints back through a centred letterbox (`to_image` mode image), for `pose_model`s of a
#: detector's size (input_hw=(128, 160)): where the geometry's roundings and offsets show
POSE_LETTERBOX = """version: 1
name: pose-letterbox
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - resize: {interpolation: linear, fit: letterbox, side_rounding: round, pad_value: 114}
    - layout: {to: NCHW}
    - reverse_channels: {}
    - scale: {divide: 255}
output:
  steps:
    - heatmap_argmax: {}
    - to_image: {mode: image}
  names: {keypoints: keypoints, scores: scores}
"""


def wheel_model(name: str) -> Path:
    """A trained model file inside the pinned rapidocr wheel (requirements-models.txt, installed without its code's
    dependencies: only its model files are used)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    assert spec is not None, "make installs requirements-models.txt"
    return Path(spec.submodule_search_locations[0]) / "models" / name


def pose_model(path: Path, *, opset: int = 17, dynamic_batch: bool = False, ir_version: int | None = None,
               input_hw: tuple[int, int] = (256, 192), stride: int = 4, joints: int = 17, seed: int = 0,
               input_name: str = "input", output_name: str = "heatmaps") -> Path:
    """An HRNet-shaped model: [N,3,H,W] float → Conv(stride) → Relu-free heatmaps [N,K,H/s,W/s]."""
    rng = np.random.default_rng(seed)
    h, w = input_hw
    batch = "N" if dynamic_batch else 1
    weight = numpy_helper.from_array(rng.normal(0, 0.05, (joints, 3, stride, stride)).astype(np.float32), "conv.weight")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, (joints,)).astype(np.float32), "conv.bias")
    node = helper.make_node("Conv", [input_name, "conv.weight", "conv.bias"], [output_name], name="conv",
                            kernel_shape=[stride, stride], strides=[stride, stride])
    graph = helper.make_graph(
        [node], "pose",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, joints, h // stride, w // stride])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="modelkit")
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def declared_batch(path: Path, batch: int, *, on: str = "input") -> Path:
    """The tiny pose model (batch N) whose image input (`on="input"`) or heatmaps (`"output"`) declare a batch of
    `batch`: the checker lets both by, however large."""
    model = onnx.load(str(pose_model(path, dynamic_batch=True)))
    dim = getattr(model.graph, on)[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = batch
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path

def saved(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    """`graph` as a model of `opset` (IR 8), checked in full and saved at `path`."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def unconvertible(model_path: Path, out: Path, tensor: str, *, name: str = "scaler") -> Path:
    """`model_path` with its tensor `tensor` made by an `ai.onnx.ml.Scaler` (× 1 + 0) of what made it before: ONNX
    Runtime runs it, OpenVINO has no conversion rule for it (a model-local function, which it had none for either,
    is read inlined now)."""
    model = onnx.load(str(model_path))
    for node in model.graph.node:
        node.output[:] = [f"{tensor}/unscaled" if output == tensor else output for output in node.output]
    model.graph.node.append(helper.make_node("Scaler", [f"{tensor}/unscaled"], [tensor], domain="ai.onnx.ml",
                                             name=name, offset=[0.0], scale=[1.0]))
    if not any(opset.domain == "ai.onnx.ml" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def pose_model_with_bias(path: Path, *, opset: int = 17) -> Path:
    """`pose_model` with a second real input, `bias` [1, 17, 1, 1], added to the heatmaps: a 4-D input that is not
    the image (the recipe must name its target)."""
    model = onnx.load(str(pose_model(path, opset=opset, output_name="raw")))
    model.graph.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, 17, 1, 1]))
    model.graph.node.append(helper.make_node("Add", ["raw", "bias"], ["heatmaps"], name="add_bias"))
    model.graph.output[0].name = "heatmaps"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def three_head_model(path: Path, *, opset: int = 17, dynamic_batch: bool = True) -> Path:
    """A pose model with three heads, as face and detector models have: `heatmaps` [N, 17, 64, 48], `peaks`
    [N, 17] (ReduceMax of the heatmaps) and `energy` [N, 17, 64, 48] (Relu). A recipe decodes one head; the
    other two must come through untouched."""
    model = onnx.load(str(pose_model(path, opset=opset, dynamic_batch=dynamic_batch)))
    batch = "N" if dynamic_batch else 1
    reduce = (helper.make_node("ReduceMax", ["heatmaps", "axes"], ["peaks"], keepdims=0) if opset >= 18 else
              helper.make_node("ReduceMax", ["heatmaps"], ["peaks"], axes=[2, 3], keepdims=0))
    if opset >= 18:
        model.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    model.graph.node.extend([reduce, helper.make_node("Relu", ["heatmaps"], ["energy"])])
    model.graph.output.insert(0, helper.make_tensor_value_info("peaks", TensorProto.FLOAT, [batch, 17]))
    model.graph.output.append(helper.make_tensor_value_info("energy", TensorProto.FLOAT, [batch, 17, 64, 48]))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def softmax_then(path: Path, ending: str, *, classes: int = 10, opset: int = 13) -> Path:
    """A classifier whose Softmax is followed by `ending` (Identity, as Paddle exports end; Reshape; Flatten):
    the model already outputs probabilities, though its last node is not a Softmax."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["softmax"], axis=-1)]
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (3 * 8 * 8, classes)).astype(np.float32), "w")]
    if ending == "Reshape":
        inits.append(numpy_helper.from_array(np.array([-1, classes], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["softmax", "shape"], ["prob"]))
    elif ending == "Flatten":
        nodes.append(helper.make_node("Flatten", ["softmax"], ["prob"], axis=1))
    else:
        nodes.append(helper.make_node(ending, ["softmax"], ["prob"]))
    graph = helper.make_graph(nodes, "softmax-then", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                    ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", classes])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="modelkit")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


_EXPORTED: dict[tuple, bytes] = {}


def _exported_once(path: Path, key: tuple, export: Callable[[], Path]) -> Path:
    """The file `export()` writes to `path`, exported once per test process for `key` (torch takes about a second
    per export, and the tests ask for the same few models dozens of times); later calls write the same bytes, as the
    exports are seeded (byte-identical)."""
    if key not in _EXPORTED:
        written = export()
        _EXPORTED[key] = written.read_bytes()
        return written
    with open(path, "xb") as file:  # a new file, as the exports refuse to replace one
        file.write(_EXPORTED[key])
    return path


def zoo_model(path: Path, name: str, opset: int = 17, dynamic_batch: bool = False) -> Path:
    """`examples.zoo.export.export_zoo`'s model at `path` (its own tests, test_zoo and test_detector_model, export)."""
    from examples.zoo.export import export_zoo

    return _exported_once(path, ("zoo", name, opset, dynamic_batch),
                          lambda: export_zoo(path, name, opset=opset, dynamic_batch=dynamic_batch))


def hrnet_model(path: Path, opset: int = 17, dynamic_batch: bool = False) -> Path:
    """`examples.hrnet.export.export_hrnet`'s tiny variant at `path` (test_hrnet_example exports it itself)."""
    from examples.hrnet.export import export_hrnet

    return _exported_once(path, ("hrnet-tiny", opset, dynamic_batch),
                          lambda: export_hrnet(path, variant="tiny", opset=opset, dynamic_batch=dynamic_batch))


def bgr_crops(n: int, hw: tuple[int, int] = (256, 192), seed: int = 0) -> np.ndarray:
    """Random uint8 NHWC BGR crops, as OpenCV would hand them over."""
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def damaged_patched(tmp_path: Path) -> tuple[Path, Path]:
    """A patched pose model (as apply wrote it) and a copy whose argmax Reshape reads a wrong shape: it loads,
    passes the checker and converts, and fails at run time."""
    from graphsurgery.api import apply

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "hrnet_coco_pose.yaml"
    patched = apply(recipe, pose_model(tmp_path / "plain.onnx", dynamic_batch=True), tmp_path / "p.onnx").output
    model = onnx.load(str(patched))
    shape = next(t for t in model.graph.initializer if t.name == "graphsurgery/post/heatmap_argmax/shape")
    shape.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(shape) // 3 * 2, shape.name))  # 3072 → 2048
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    return patched, damaged
