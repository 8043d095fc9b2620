"""verify FAILs what it cannot prove: when the unpatched pipeline gives every sample the same answers (a model of
constants, or one saturated for every input), a wrong std or colour order gives them too and PASSed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke
from graphsurgery.api import apply
from graphsurgery.verification import verify

SHAPE = [1, 3, 8, 8]
RECIPE = "version: 1\nname: r\ninput:\n  tensor: {dtype: uint8}\n  steps:\n    - cast: {}\n    - scale: {divide: %s}\n"


def model(path, weight: float):
    """y = x · weight + 0.5: a model of constants when weight is 0."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "c"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
                              [numpy_helper.from_array(np.float32(weight), "w"),
                               numpy_helper.from_array(np.full(SHAPE, 0.5, np.float32), "c")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_model_whose_answers_ignore_its_input_proves_nothing_about_the_input_steps(tmp_path):
    right, wrong = tmp_path / "right.yaml", tmp_path / "wrong.yaml"
    right.write_text(RECIPE % 255)
    wrong.write_text(RECIPE % 1)
    constant = model(tmp_path / "constant.onnx", 0.0)
    patched = apply(wrong, constant, tmp_path / "wrong.onnx").output
    report = verify(right, constant, patched=patched, random=4, backends=("onnxruntime",))
    assert not report and "same answers" in report.problem and report.failures()[0] == report.problem
    assert all(pair for pair in report.pairs)  # every comparison agrees: only the problem fails it
    result = invoke("verify", right, constant, "--patched", patched, "--random", "4", "--backends", "onnxruntime")
    assert result.exit_code == 1 and "FAIL: the unpatched pipeline gave all 4 samples the same answers" in \
        " ".join(result.output.split())
    live = model(tmp_path / "live.onnx", 1.0)  # the same wrong patch of a model that reads its input: a FAIL
    wrong_live = verify(right, live, patched=apply(wrong, live, tmp_path / "w2.onnx").output, random=4,
                        backends=("onnxruntime",))
    assert not wrong_live and wrong_live.problem is None
    assert verify(right, live, random=4, backends=("onnxruntime",))  # and a right one passes


def test_eval_coco_parity_of_zero_scores_proves_nothing():
    """A NaN model, or another network's int8 IR, scored AP 0 as the unpatched pipeline did: "PARITY", exit 0."""
    from graphsurgery.coco import CocoReport, PipelineResult

    def report(stats):
        return CocoReport("ann.json", 2, 3, "ground truth", [PipelineResult(kind, "onnxruntime", "f32", list(stats))
                                                            for kind in ("unpatched", "patched")])

    nothing = report([0.0] * 5 + [-1.0] * 5)
    assert not nothing and "scores AP and AR 0" in nothing.problem and nothing.to_dict()["parity"] is False
    found = report([0.5] + [0.0] * 9)
    assert found.problem is None and found.same_scores
    assert not found  # equal scores without the proof per keypoint (`per_keypoint`, verify's) are no parity
