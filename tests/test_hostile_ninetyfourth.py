"""Round 94: graph-mutation fuzzing of patched models, judged by `verify --patched`.

~2,900 mutants of the spliced nodes (`graphsurgery/…`) of right patches of every shipped recipe and four variants
(constants moved by 1e-6, 1e-4, 1e-2 relative or 0.5, inputs of non-commutative ops and Where's branches swapped,
Cast targets, axis/keepdims/largest/sorted, Floor/Round/Ceil, Div/Mul, Add/Sub, Greater/GreaterOrEqual, Resize
modes, Concat order, integer constants ± 1, three-channel constants reversed), each run against the right patch on
ONNX Runtime (random images, batches of 2 where the batch is dynamic, and all-0, all-255, grey, low-contrast and
gradient images).

Found: verify fed a model whose batch is dynamic one sample a call, so a top-k of k = 1 whose ReduceMin or
ReduceMax kept no dim PASSed, though two images at once got `label` and `score` of shape [2, 2] for [2, 1] (its
declared shape): each call now feeds the sample with a companion of its size (`batched`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from graphsurgery.api import apply
from graphsurgery.batched import batch_rows
from graphsurgery.verification import verify

ROOT = Path(__file__).resolve().parent.parent
OCR_CLS = ROOT / "recipes" / "rapidocr_cls.yaml"


@pytest.mark.parametrize("node", ["ReduceMin", "ReduceMax", "ReduceMin_1", "ReduceMax_1"])
def test_a_top_1_whose_reduction_keeps_no_dim_fails_on_a_batch_of_two(ocr_cls, tmp_path, node):
    """Was a PASS on both backends: `keepdims: 0` on one of topk's (k = 1) reductions is the right answer at a batch
    of 1 (its [1] broadcasts back to [1, 1]) and [2, 2] at a batch of 2 (a Gather then reads the other row's
    answer); verify never fed two samples at once."""
    plain, right = ocr_cls
    model = onnx.load(str(right))
    reduction = next(n for n in model.graph.node if n.name == f"graphsurgery/post/topk/{node}")
    next(a for a in reduction.attribute if a.name == "keepdims").i = 0
    onnx.checker.check_model(model, full_check=True)
    mutant = tmp_path / "mutant.onnx"
    onnx.save(model, str(mutant))
    report = verify(OCR_CLS, plain, patched=mutant, backends=["onnxruntime"], random=4)
    assert not report
    failures = report.failures()
    assert all(": label: " in line or ": score: " in line for line in failures), failures  # a shape, or row 0
    # reading row 1


def test_an_output_whose_rows_are_not_the_batch_s_is_fed_one_sample_at_a_time(ocr_cls, tmp_path):
    """The companion's rows are left out of the outputs declared to follow the batch; an output of another dynamic
    first dim (a third-party model's detections, rows of the images together) cannot be cut so, and the pair's
    answer to it would be compared with the one sample's twin: a right patch of such a model FAILed. Such a model
    is fed one sample a call, as before."""
    plain, _ = ocr_cls
    model = onnx.load(str(plain))
    logits = model.graph.output[0].name
    model.graph.node.append(onnx.helper.make_node("Reshape", [logits, "flat_shape"], ["flat"]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, 1], np.int64), "flat_shape"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("flat", onnx.TensorProto.FLOAT, ["rows", 1]))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "plain.onnx"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(OCR_CLS.read_text().replace("  steps:\n    - softmax",
                                                  f"  target: {logits}\n  steps:\n    - softmax"))
    right = apply(recipe, tmp_path / "plain.onnx", tmp_path / "right.onnx").output
    assert "flat" in [value.name for value in onnx.load(str(right)).graph.output]
    assert "flat" in batch_rows(onnx.load(str(right)), "image:0").unsure  # judged by its rows (round 95)
    report = verify(recipe, tmp_path / "plain.onnx", patched=right, backends=["onnxruntime"], random=4)
    assert report, report.failures()
