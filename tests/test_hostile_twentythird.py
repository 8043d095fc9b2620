"""Hostile round 23: eval-coco, bench, chain, convert --int8 and OpenVINO IR inputs, done unkindly.

`bench --torch net:build --json net.py` (and `verify --reference-pipeline m:f --json m.py`) wrote the report over
the user's own module; `chain --check` passed where the chained model answered NaN (NaN > tolerance is false) and
compared NaN with NaN for a detector of NaN boxes; `run` on such a chained model was an internal error, as were
boxes of ±1e30; an allocation failing under `ulimit -v` in onnxruntime's arena was an internal error (OpenVINO's
blamed the model); `bench` on a model of a second a call ran for minutes without a word.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2

ROOT = Path(__file__).resolve().parent.parent
POSE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
IMAGES = ROOT / "examples" / "images"


def _save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _image_input():
    return helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "H", "W", 3])


def _constants(path: Path, outputs: dict[str, np.ndarray]) -> Path:
    """A model of `image` whose outputs are these constants (+ 0 × the image, so they depend on it)."""
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMax", ["f"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Cast", ["z"], ["zi"], to=TensorProto.INT64)]
    initializers = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    values = []
    for name, value in outputs.items():
        initializers.append(numpy_helper.from_array(value, f"c_{name}"))
        nodes.append(helper.make_node("Add", [f"c_{name}", "zi" if value.dtype == np.int64 else "z"], [name]))
        elem = TensorProto.INT64 if value.dtype == np.int64 else TensorProto.FLOAT
        values.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
    return _save(path, nodes, [_image_input()], values, initializers)


def _detector(path: Path, corners) -> Path:
    corners = np.array([[corners]], np.float32)  # [1, D = 1, 4]
    return _constants(path, {"boxes": corners, "scores": np.full((1, 1), 0.9, np.float32),
                             "classes": np.zeros((1, 1), np.int64), "count": np.ones(1, np.int64)})


def _pose(path: Path) -> Path:
    """image + boxes [N, 4] → keypoints [N, 1, 2] (each box's x, y), scores [N, 1, 1] (its width)."""
    ints = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
            (("s0", [0]), ("s2", [2]), ("s3", [3]), ("ax", [1]))]
    nodes = [helper.make_node("Slice", ["boxes", "s0", "s2", "ax"], ["xy"]),
             helper.make_node("Unsqueeze", ["xy", "ax"], ["keypoints"]),
             helper.make_node("Slice", ["boxes", "s2", "s3", "ax"], ["w"]),
             helper.make_node("Unsqueeze", ["w", "ax"], ["scores"])]
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4])
    return _save(path, nodes, [_image_input(), boxes],
                 [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["N", 1, 2]),
                  helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1, 1])], ints)


def _chained(path: Path, box, keypoints) -> Path:
    """What `chain` makes, by hand: one person with this box (corners) and these keypoints [1, K, 2]."""
    keypoints = np.array([keypoints], np.float32)
    return _constants(path, {"person_boxes": np.array([box], np.float32),
                             "person_scores": np.full(1, 0.9, np.float32), "keypoints": keypoints,
                             "keypoint_scores": np.full((1, keypoints.shape[1], 1), 50.0, np.float32)})


def _plain_pose(path: Path) -> Path:
    """A 64×48 heatmap model (one strided convolution)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.05, (17, 3, 4, 4)).astype(np.float32), "w")]
    return _save(path, [helper.make_node("Conv", ["input", "w"], ["heatmaps"], kernel_shape=[4, 4], strides=[4, 4])],
                 [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 48])],
                 [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 17, 16, 12])], weights)


# --- input modified ----------------------------------------------------------------------------------------------


def test_bench_never_writes_its_report_over_the_torch_module(tmp_path, monkeypatch):
    """`--torch net:build --json net.py`: the module is read by the command, so it is an input like the model."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "net23.py"
    module.write_text("import torch\n\n\ndef build():\n    return torch.nn.Conv2d(3, 17, 4, stride=4)\n")
    before = module.read_bytes()
    model = _plain_pose(tmp_path / "plain.onnx")
    for option in ("--json", "--chart"):
        target = "net23.py" if option == "--json" else "net23.png"
        if option == "--chart":
            (tmp_path / "net23.png").hardlink_to(module)
        result = invoke("bench", POSE, model, "--iterations", "1", "--warmup", "0", "--torch", "net23:build",
                        option, target)
        one_line_exit_2(result, "would overwrite an input")
        assert module.read_bytes() == before


def test_verify_never_writes_its_report_over_the_reference_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "pipeline23.py"
    module.write_text("import numpy as np\n\n\ndef answers(inputs):\n"
                      "    return {'scores': np.zeros((len(inputs['input']), 17, 1), np.float32)}\n")
    before = module.read_bytes()
    result = invoke("verify", POSE, _plain_pose(tmp_path / "plain.onnx"), "--reference-pipeline",
                    "pipeline23:answers", "--random", "1", "--backends", "onnxruntime", "--json", "pipeline23.py")
    one_line_exit_2(result, "would overwrite an input")
    assert module.read_bytes() == before


# --- wrong PASS --------------------------------------------------------------------------------------------------


def test_chain_check_counts_a_nan_on_one_side_as_a_difference(tmp_path):
    """The chained model answers NaN where the two models answer (10, 10): `NaN > 1e-4` is false, and the table
    said PASS."""
    from graphsurgery.chaining import verify_chain

    detector = _detector(tmp_path / "detector.onnx", [10, 10, 60, 90])
    chained = _chained(tmp_path / "chained.onnx", [10, 10, 60, 90], [[math.nan, math.nan]])
    image = np.zeros((1, 120, 100, 3), np.uint8)
    (row,) = verify_chain(chained, detector, _pose(tmp_path / "pose.onnx"), [image], backends=("onnxruntime",))
    assert row["people"] == 1 and row["boxes"] == 0 and row["scores"] == 0 and row["keypoint_scores"] == 0
    assert row["keypoints"] == math.inf


def test_chain_check_refuses_a_detector_of_nan_boxes(tmp_path):
    """NaN against NaN compared nothing, and printed PASS."""
    from graphsurgery.chaining import verify_chain
    from graphsurgery.errors import GraphsurgeryError

    detector = _detector(tmp_path / "detector.onnx", [math.nan] * 4)
    chained = _chained(tmp_path / "chained.onnx", [math.nan] * 4, [[math.nan, math.nan]])
    with pytest.raises(GraphsurgeryError, match="not finite"):
        verify_chain(chained, detector, _pose(tmp_path / "pose.onnx"), [np.zeros((1, 120, 100, 3), np.uint8)],
                     backends=("onnxruntime",))


# --- internal errors ---------------------------------------------------------------------------------------------


def test_run_refuses_people_of_nan_found_by_a_chained_model(tmp_path):
    model = _chained(tmp_path / "people.onnx", [math.nan] * 4, [[math.nan, math.nan]] * 17)
    result = invoke("run", model, IMAGES / "astronaut.jpg", "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, "people.onnx", "not finite")


def test_run_draws_far_boxes_of_a_chained_model(tmp_path):
    """A box of ±1e30 (finite) is written as found; drawing it was an internal error ("Can't parse 'pt1'")."""
    model = _chained(tmp_path / "people.onnx", [-1e30, -1e30, 1e30, 1e30], [[1e30, -1e30]] * 17)
    result = invoke("run", model, IMAGES / "astronaut.jpg", "-o", tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    (person,) = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert person["keypoints"][:2] == [pytest.approx(1e30), pytest.approx(-1e30)]


@pytest.mark.parametrize("said", ["[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Gather "
                                  "node. Name:'pose/graphsurgery/pre/crop_boxes/Gather_9' Status Message: "
                                  "bfc_arena.cc:360 Failed to allocate memory for requested buffer of size 47185920",
                                  "Exception from src/plugins/intel_cpu: Failed to allocate 786432000 bytes of memory",
                                  "can't alloc"])
def test_allocations_failing_under_a_memory_limit_are_said_as_such(monkeypatch, said):
    from graphsurgery import limits

    monkeypatch.setattr(limits, "memory_limit", lambda: "7,812 MiB (ulimit -v)")
    error = limits.limit_error(RuntimeError(said), "onnxruntime")
    assert error is not None and "ran out of memory under the process's memory limit" in str(error)
    # OpenVINO's JIT runs out of registers, not memory
    assert limits.limit_error(RuntimeError("Failed to allocate required number of vector registers")) is None


def test_an_ir_xml_that_is_a_fifo_is_named_as_such(tmp_path):
    """It was "no such IR" of a path that is there."""
    import os

    xml = tmp_path / "m.xml"
    os.mkfifo(xml)
    (tmp_path / "m.bin").write_bytes(b"\0" * 8)
    result = invoke("run", xml, IMAGES / "astronaut.jpg", "-o", tmp_path / "out")
    one_line_exit_2(result, "m.xml", "not a regular file")


# --- out of memory, time -----------------------------------------------------------------------------------------


def test_eval_coco_feeds_a_crowded_image_in_parts(monkeypatch):
    """A model that crops in the graph got every box of an image in one call: 2,000 annotated people in one image
    (4,000 crops with the flip test) ran out of memory after 46 s. The parts hold each box once, in order."""
    from graphsurgery import coco, crops
    from graphsurgery.quantize import CALLER

    monkeypatch.setattr(crops, "BOXES_PER_CALL", 2)
    people = [coco.PersonBox(1, "astronaut.jpg", (10.0 + i, 20.0, 50.0, 80.0), 1.0, (512, 512)) for i in range(5)]
    people.append(coco.PersonBox(2, "cameraman.jpg", (1.0, 2.0, 30.0, 40.0), 1.0, (512, 512)))
    parts = list(coco.WholeImages(IMAGES, CALLER, "uint8", IMAGES / "ann.json")(people))
    assert [len(boxes) for _, boxes in parts] == [2, 2, 1, 1]
    assert all(image.shape == (1, 512, 512, 3) for image, _ in parts)
    np.testing.assert_array_equal(np.concatenate([boxes for _, boxes in parts]), [p.box for p in people])


def test_bench_refuses_more_crops_in_the_graph_than_fit(tmp_path):
    """`--batch` of a recipe that crops in the graph is boxes per image: the input (one image, N boxes) is small,
    the crops are not; 10^6 boxes ran out of memory after a minute."""
    from graphsurgery.benchmark import Settings, run_bench
    from graphsurgery.errors import GraphsurgeryError

    with pytest.raises(GraphsurgeryError, match="makes 2,000,000 crops of"):
        run_bench(ROOT / "recipes" / "hrnet_coco_topdown.yaml", _plain_pose(tmp_path / "plain.onnx"),
                  Settings(iterations=1, warmup=0, batch=10**6))


def test_bench_tells_each_round_and_says_how_long_a_long_run_takes(tmp_path, monkeypatch):
    from graphsurgery import longrun
    from graphsurgery.benchmark import Settings, run_bench

    model = _plain_pose(tmp_path / "plain.onnx")
    told = []
    run_bench(POSE, model, Settings(iterations=2, warmup=1), lambda done, total: told.append((done, total)))
    assert told == [(0, 3), (1, 3), (2, 3), (3, 3)]
    monkeypatch.setattr(longrun, "LONG_RUN_SECONDS", 0)  # every run is long: the line is said after the first round
    result = invoke("bench", POSE, model, "--iterations", "2", "--warmup", "1")
    assert result.exit_code == 0, result.output
    assert "3 rounds (--iterations 2, --warmup 1) to time: about" in result.output  # wording shared (round 29)


def test_bench_refuses_a_progress_that_is_no_function(tmp_path):
    """Refused before any work, as eval-coco's and run's callbacks are (errors.check_callback)."""
    from graphsurgery.benchmark import run_bench

    with pytest.raises(TypeError, match="progress is a function \\(done, total\\), not str"):
        run_bench(ROOT / "recipes" / "hrnet_coco_pose.yaml", _plain_pose(tmp_path / "plain.onnx"), progress="x")
