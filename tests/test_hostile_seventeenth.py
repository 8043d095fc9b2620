"""A seventeenth round of hostile inputs: models valid for onnx's full checker whose edge values kill ONNX Runtime or
OpenVINO by a signal. A generator (/tmp/hostile17/gen.py in the round's report) built ~1,250 cases over 130 standard
ops (indexing, slicing, padding, resizing, pooling and convolution attributes, reductions, integer arithmetic,
quantization, signal ops; empty tensors, out-of-range and extreme indices and axes, INT_MIN/INT_MAX, zero steps and
scales, NaN/inf), each with the values as constants (folded while the runtimes load the model) and fed as inputs,
and ran each on both runtimes in a child process. Found, with constants (every command that loads the model died):
OpenVINO folding an integer Mod by zero (fmod=1, any integer type; fmod=0, unsigned) or of the smallest
int32/int64 by −1 (fmod=1): SIGFPE in `convert`; a CumSum of an empty float tensor or along an axis out of its
rank, a Unique with an axis of an empty tensor: SIGSEGV in `convert`; a GatherND index beyond ±2^31 of its dim,
a DFT of length zero: SIGSEGV or SIGFPE compiling (`verify`, `run`, `bench` on OpenVINO); ONNX Runtime opening a
session on a RoiAlign (with boxes) or InstanceNormalization of a tensor with an empty spatial dim (SIGSEGV) or an
STFT with frames or a window of length zero (SIGFPE); and, whatever the values, ONNX Runtime running a
RandomUniform with low above high (or NaN) or a RandomNormal with a scale not positive (SIGABRT), or a Conv of
group 0 over no channels (SIGFPE). Each is now one
line naming the model and the node, exit 2, before any runtime sees the model; so are the same constants in If,
Loop and Scan bodies (even an If on the input's values) and in model-local functions, which both runtimes fold too
(the smallest integer divided by −1 there had gone by the thirteenth round's check). Left (values computed from the
input, which no static check can see; listed in SECURITY.md): OpenVINO's GatherND and ScatterElements with indices
beyond ±2^31, Range with a zero or smallest step, TopK of an empty tensor, Tile by −1, Pad cutting more than a dim
and DFT of length zero at run time; ONNX Runtime's STFT of zero-length frames and Unique along an axis of a tensor
with another dim empty."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke
from test_hostile_thirteenth import pose_with, save

from conftest import RECIPES

POSE = RECIPES / "hrnet_coco_pose.yaml"
F = TensorProto.FLOAT
SMALLEST64 = int(np.iinfo(np.int64).min)


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.array(value, dtype), name)


def with_node(op, inputs, *, outputs=1, **attrs):
    """The pose model whose heatmaps also add the sum of node 'victim' of `op` over the constants `inputs`."""
    names = [f"c{k}" if value is not None else "" for k, value in enumerate(inputs)]
    initializers = [value if isinstance(value, onnx.TensorProto) else numpy_helper.from_array(value, name)
                    for name, value in zip(names, inputs) if value is not None]
    for tensor, name in zip(initializers, [n for n in names if n]):
        tensor.name = name
    node = helper.make_node(op, names, ["out"] + [f"out{k}" for k in range(1, outputs)], name="victim", **attrs)
    return pose_with([node], "out", initializers)


def ints(value, dtype=np.int64):
    return numpy_helper.from_array(np.array(value, dtype))


def random_crop(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


KILLERS = [
    # OpenVINO folding while converting
    pytest.param(lambda: with_node("Mod", [ints([3, 4], np.int32), ints([0, 1], np.int32)], fmod=1), "convert",
                 "takes an integer modulo zero", "SIGFPE", id="mod-by-zero-fmod"),
    pytest.param(lambda: with_node("Mod", [ints([3, 4], np.uint8), ints([0, 1], np.uint8)]), "convert",
                 "takes an integer modulo zero", "SIGFPE", id="mod-by-zero-unsigned"),
    pytest.param(lambda: with_node("Mod", [ints([SMALLEST64, 4]), ints([-1, 1])], fmod=1), "convert",
                 "takes the smallest integer modulo −1", "SIGFPE", id="mod-smallest-by-minus-one"),
    pytest.param(lambda: with_node("CumSum", [random_crop((3, 4)), ints(100)]), "convert",
                 "cumulates along axis 100 of a tensor of rank 2", "SIGSEGV", id="cumsum-axis-out-of-rank"),
    pytest.param(lambda: with_node("CumSum", [random_crop((0, 3)), ints(0)]), "convert",
                 "cumulates an empty tensor", "SIGSEGV", id="cumsum-empty"),
    pytest.param(lambda: with_node("Unique", [random_crop((0, 3))], outputs=4, axis=0), "convert",
                 "unique slices of a tensor with an empty dim", "SIGSEGV", id="unique-empty-axis"),
    # OpenVINO folding while compiling (ONNX Runtime refuses both at run time: verify on OpenVINO alone)
    pytest.param(lambda: with_node("GatherND", [random_crop((3, 4)), ints([[2**31, 0]])]), "verify-openvino",
                 "gathers an index out of range of dim 0 (size 3)", "SIGSEGV", id="gathernd-index-2^31"),
    pytest.param(lambda: with_node("DFT", [random_crop((1, 16, 1)), ints(0)], onesided=1), "verify-openvino",
                 "transforms zero points", "SIGFPE", id="dft-length-zero"),
    # ONNX Runtime folding while it opens a session, or running
    pytest.param(lambda: with_node("RoiAlign", [random_crop((1, 1, 0, 4)), const("r", [[0, 0, 2, 2]]), ints([0])]),
                 "verify", "computes over a tensor with an empty spatial dim", "SIGSEGV", id="roialign-empty"),
    pytest.param(lambda: with_node("InstanceNormalization", [random_crop((1, 2, 0)), random_crop(2),
                                                             random_crop(2)]),
                 "verify", "computes over a tensor with an empty spatial dim", "SIGSEGV", id="instancenorm-empty"),
    pytest.param(lambda: with_node("STFT", [random_crop((1, 16, 1)), ints(2), None, ints(0)]), "verify",
                 "cuts frames of length zero", "SIGFPE", id="stft-frame-length-zero"),
    pytest.param(lambda: pose_with([helper.make_node("RandomUniform", [], ["out"], name="victim", shape=[3],
                                                     low=1.0, high=0.0)], "out"), "verify",
                 "draws between low 1.0 and high 0.0", "SIGABRT", id="random-uniform-low-above-high"),
    pytest.param(lambda: with_node("Conv", [random_crop((1, 0, 3, 3)), random_crop((4, 0, 2, 2))], group=0), "verify",
                 "has group 0", "SIGFPE", id="conv-group-zero"),
    pytest.param(lambda: pose_with([helper.make_node("RandomNormal", [], ["out"], name="victim", shape=[3],
                                                     scale=float("nan"))], "out"), "verify",
                 "draws with scale nan", "SIGABRT", id="random-normal-nan-scale"),
]


def constant_nodes(prefix, tensors):
    return [helper.make_node("Constant", [], [prefix + name], value=numpy_helper.from_array(np.asarray(value)))
            for name, value in tensors.items()]


def in_if_body():
    """A RoiAlign over an empty tensor inside an If on the input's values: ONNX Runtime folds the body anyway."""
    then = helper.make_graph(
        [*constant_nodes("t_", {"x": np.zeros((1, 1, 0, 4), np.float32), "r": np.array([[0, 0, 2, 2]], np.float32),
                                "i": np.array([0], np.int64), "one": np.array([1], np.int64)}),
         helper.make_node("RoiAlign", ["t_x", "t_r", "t_i"], ["t_m"], name="victim"),
         helper.make_node("ReduceSum", ["t_m"], ["t_s"], keepdims=0),
         helper.make_node("Reshape", ["t_s", "t_one"], ["t_out"])],
        "then", [], [helper.make_tensor_value_info("t_out", F, [1])])
    other = helper.make_graph(constant_nodes("e_", {"out": np.zeros(1, np.float32)}), "else", [],
                              [helper.make_tensor_value_info("e_out", F, [1])])
    nodes = [helper.make_node("ReduceSum", ["conv"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "low"], ["positive"]),
             helper.make_node("If", ["positive"], ["out"], then_branch=then, else_branch=other)]
    return pose_with(nodes, "out", [const("low", -1e30)])


def in_function():
    """The smallest int32 divided by −1 inside a model-local function: ONNX Runtime folds it once inlined."""
    body = [*constant_nodes("f_", {"a": np.array([-2**31], np.int32), "b": np.array([-1], np.int32)}),
            helper.make_node("Div", ["f_a", "f_b"], ["f_q"], name="victim"),
            helper.make_node("Cast", ["f_q"], ["f_c"], to=TensorProto.INT64),
            helper.make_node("Add", ["fx", "f_c"], ["fy"])]
    function = helper.make_function("local", "Halve", ["fx"], ["fy"], body, [helper.make_opsetid("", 17)])
    return pose_with([helper.make_node("Halve", ["ones4"], ["out"], domain="local")], "out", functions=[function],
                     opsets=[helper.make_opsetid("local", 1)])


KILLERS += [
    pytest.param(in_if_body, "verify", "computes over a tensor with an empty spatial dim", "SIGSEGV",
                 id="roialign-in-if-body"),
    pytest.param(in_function, "verify", "divides the smallest integer by −1", "SIGFPE", id="division-in-function"),
    pytest.param(lambda: pose_with([helper.make_node("Constant", [], ["a"], value_ints=[3, 4]),
                                    helper.make_node("Constant", [], ["b"], value_ints=[0, 1]),
                                    helper.make_node("Mod", ["a", "b"], ["out"], fmod=1, name="victim")], "out"),
                 "convert", "takes an integer modulo zero", "SIGFPE", id="mod-by-zero-of-value-ints"),
]


@pytest.mark.parametrize("build, command, needle, signal", KILLERS)
def test_a_model_whose_values_kill_a_runtime_is_refused(tmp_path, build, command, needle, signal):
    """Each model passes onnx's full checker and killed `command` by `signal` (OpenVINO or ONNX Runtime computing
    the node while loading, compiling or running the model). Run in a child process: the code before the fix died."""
    model = build()
    onnx.checker.check_model(model, full_check=True)
    path = save(model, tmp_path / "m.onnx")
    before = path.read_bytes()
    args = {"convert": [path, "-o", tmp_path / "m.xml"], "verify": [POSE, path, "--random", 1],
            "verify-openvino": [POSE, path, "--random", 1, "--backends", "openvino"]}[command]
    done = subprocess.run([sys.executable, "-m", "graphsurgery", command.split("-")[0], *map(str, args)],
                          capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "node 'victim'" in lines[0] and needle in lines[0] and signal in lines[0], lines
    assert str(path) in lines[0] and "fix:" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and path.read_bytes() == before


NEIGHBOURS = [
    pytest.param(lambda: with_node("Mod", [ints([-7, 9], np.int32), ints([2, -4], np.int32)], fmod=1), id="mod"),
    pytest.param(lambda: with_node("Mod", [ints([SMALLEST64, 4]), ints([-1, 3])]), id="mod-floor-smallest"),
    pytest.param(lambda: with_node("CumSum", [random_crop((3, 4)), ints(-2)]), id="cumsum"),
    pytest.param(lambda: with_node("CumSum", [np.zeros((0, 3), np.int64), ints(0)]), id="cumsum-empty-integers"),
    pytest.param(lambda: with_node("Unique", [random_crop((2, 3))], outputs=4, axis=0), id="unique"),
    pytest.param(lambda: with_node("GatherND", [random_crop((3, 4)), ints([[-3, 3], [2, 0]])]), id="gathernd"),
    pytest.param(lambda: with_node("RoiAlign", [random_crop((1, 1, 4, 4)), const("r", [[0, 0, 2, 2]]), ints([0])]),
                 id="roialign"),
    pytest.param(lambda: with_node("InstanceNormalization", [random_crop((1, 2, 3)), random_crop(2),
                                                             random_crop(2)]), id="instancenorm"),
    pytest.param(lambda: pose_with([helper.make_node("RandomUniform", [], ["out"], shape=[3], low=-1.0, high=2.0)],
                                   "out"), id="random-uniform"),
]


@pytest.mark.parametrize("build", NEIGHBOURS)
def test_the_same_ops_with_sound_values_still_convert(tmp_path, build):
    path = save(build(), tmp_path / "m.onnx")
    result = invoke("convert", path, "-o", tmp_path / "m.xml")
    assert result.exit_code == 0, result.output
