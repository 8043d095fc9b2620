"""Round 98: verify's samples fed four at a time among companions (`batched`), red-teamed.

Found: a plain model's output of rows carrying a batch index (a NonZero over the batch, transposed: [2·N, 2]),
kept by a right patch, was cut two rows a sample among companions, their batch index 1.., and FAILed (it PASSed
before: one row a sample was all that was cut); a `--patched` model whose `center` and `scale` are declared of a
fixed row ([1, 2]) beside a dynamic image batch was fed four crops together, ONNX Runtime's "invalid dimensions",
an internal error; and a wrong patch answering one row to a call of several (a Slice of row 0), its output
declared [1, 1] as shape inference gives it or unnamed in an IR, was compared as answered to each sample alone
and PASSed. The plain model tells which of its outputs keep no sample's rows among others (`apart_in_plain`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import pose_model
from quirkykit import classifier

ROOT = Path(__file__).resolve().parent.parent
OCR_CLS = ROOT / "recipes" / "rapidocr_cls.yaml"
POSE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
POSE_IMAGE = ROOT / "recipes" / "hrnet_coco_pose_image.yaml"


def _constants(model: onnx.ModelProto, **values) -> None:
    """Initializers of `values`, by name."""
    model.graph.initializer.extend(onnx.numpy_helper.from_array(np.array(value), name)
                                   for name, value in values.items())


def test_a_kept_output_of_rows_with_a_batch_index_passes(tmp_path):
    """Was a FAIL of a right patch: the plain model's [2·N, 2] (NonZero over a [N, 2] of ones, transposed: each
    row's batch index, then a column) answers rows of index 1.. among companions and of index 0 alone; the patched
    model's were cut two a sample and compared with the twin's. The plain model answers so itself: compared as
    answered to each sample alone."""
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx", dynamic_batch=True)))
    _constants(model, start=[0], end=[2], axis=[1])
    model.graph.node.extend([
        helper.make_node("ReduceMax", ["heatmaps"], ["peaks"], axes=[2, 3], keepdims=0),
        helper.make_node("Shape", ["peaks"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                         value=helper.make_tensor("one", TensorProto.INT64, [1], [1])),
        helper.make_node("Slice", ["ones", "start", "end", "axis"], ["two"]),
        helper.make_node("NonZero", ["two"], ["where"]),
        helper.make_node("Transpose", ["where"], ["rows"], perm=[1, 0])])
    model.graph.output.append(helper.make_tensor_value_info("rows", TensorProto.INT64, ["K", 2]))
    onnx.save(model, str(tmp_path / "plain.onnx"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(POSE.read_text().replace("\noutput:\n", "\noutput:\n  target: heatmaps\n"))
    report = verify(recipe, tmp_path / "plain.onnx", backends=["onnxruntime"], random=4)
    assert report, report.failures()
    assert "rows" in {result.output for pair in report.pairs for result in pair.results}


def test_center_and_scale_of_a_fixed_row_are_fed_a_crop_a_call(tmp_path):
    """Was an internal error (exit 3): a right `hrnet_coco_pose_image` patch whose `center` and `scale` are
    declared [1, 2] (the image's batch dynamic) was fed four crops with four rows of each."""
    plain = pose_model(tmp_path / "plain.onnx", dynamic_batch=True)
    model = onnx.load(str(apply(POSE_IMAGE, plain, tmp_path / "right.onnx").output))
    for value in model.graph.input:
        if value.name in ("center", "scale"):
            value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    report = verify(POSE_IMAGE, plain, patched=tmp_path / "fixed.onnx", backends=["onnxruntime"], random=4)
    assert report, report.failures()


@pytest.fixture(scope="module")
def row_0(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The RapidOCR classifier stand-in, its right patch, and a wrong one whose `score` is its row 0 ([1, 1] to
    any batch, declared so)."""
    folder = tmp_path_factory.mktemp("row-0")
    plain = classifier(folder / "plain.onnx", opset=13, ir_version=7, hw=(48, 192), classes=2, seed=1)
    right = apply(OCR_CLS, plain, folder / "right.onnx").output
    model = onnx.load(str(right))
    for node in model.graph.node:
        node.output[:] = ["pre" if name == "score" else name for name in node.output]
        node.input[:] = ["pre" if name == "score" else name for name in node.input]
    model.graph.node.append(helper.make_node("Slice", ["pre", "start", "end", "axis"], ["score"]))
    _constants(model, start=[0], end=[1], axis=[0])
    score = next(value for value in model.graph.output if value.name == "score")
    score.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(folder / "row_0.onnx"))
    return plain, right, folder / "row_0.onnx"


def test_an_output_of_one_row_to_a_call_of_several_fails(row_0):
    """Was a PASS: the Slice of row 0 declared [1, 1] (a first dim of a number) was compared as answered to each
    sample alone. As many rows for the call as for one sample, where the plain model answers otherwise, FAIL."""
    plain, right, wrong = row_0
    report = verify(OCR_CLS, plain, patched=wrong, backends=["onnxruntime"], random=3)
    assert not report
    assert all("score: 1 row for the" in line and "follows no batch" in line for line in report.failures()), \
        report.failures()
    assert verify(OCR_CLS, plain, patched=right, backends=["onnxruntime"], random=3)


def test_an_ir_answering_one_row_to_a_call_of_several_fails(row_0, tmp_path):
    """Was a PASS: the same wrong patch as an OpenVINO IR given with `--patched` (its `score` of a first dim
    OpenVINO names not) was compared as answered to each sample alone."""
    from graphsurgery.irconvert import convert_ir

    plain, _, wrong = row_0
    model = onnx.load(str(wrong))
    next(value for value in model.graph.output if value.name == "score").type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(tmp_path / "named.onnx"))
    ir = convert_ir(tmp_path / "named.onnx", tmp_path / "wrong.xml").xml
    report = verify(OCR_CLS, plain, patched=ir, backends=["openvino"], random=3)
    assert not report
    assert all("score: 1 row for the" in line for line in report.failures()), report.failures()


def test_a_model_running_up_to_four_rows_is_fed_a_sample_a_call(tmp_path):
    """Was refused (exit 2, "cannot run the model") on a right patch: a plain model whose batch is dynamic but runs
    1 to 4 rows only (a constant of 4 rows broadcast, then cut to the batch) was fed four samples among companions
    (7 rows, then 5); round 95's four rows a sample ran. Where the group fails, each sample goes among companions."""
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx", dynamic_batch=True)))
    image = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["cut" if name == image else name for name in node.input]
    _constants(model, start=[0], one=[1])
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((4, 1, 1, 1), np.float32), "four"))
    nodes = [helper.make_node("Add", [image, "four"], ["added"]), helper.make_node("Shape", [image], ["shape"]),
             helper.make_node("Slice", ["shape", "start", "one"], ["batch"]),
             helper.make_node("Slice", ["added", "start", "batch", "start"], ["cut"]), *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(tmp_path / "plain.onnx"))
    report = verify(POSE, tmp_path / "plain.onnx", backends=["onnxruntime"], random=4)
    assert report, report.failures()


def test_a_plain_model_answering_row_0_to_any_batch_is_fed_a_sample_a_call(tmp_path):
    """In the round 98 merge: a plain model that answers row 0's heatmaps ([1, 17, 64, 48]) to any batch is right
    for a caller of one crop a call, as the unpatched pipeline feeds it; among companions its keypoints were one row
    for the call, "follows no batch", and a right patch FAILed. Where the output the steps read keeps no sample's
    rows among others, the samples go one a call."""
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx", dynamic_batch=True, output_name="raw")))
    _constants(model, row=np.array([0]))
    model.graph.node.append(helper.make_node("Gather", ["raw", "row"], ["heatmaps"], axis=0))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 17, 64, 48]))
    onnx.save(model, str(tmp_path / "plain.onnx"))
    report = verify(POSE, tmp_path / "plain.onnx", backends=["onnxruntime"], random=3)
    assert report, report.failures()
