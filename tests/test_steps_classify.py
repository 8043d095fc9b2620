"""Classifier output steps: softmax, topk.

Every opset in `stepkit.OPSETS` on onnxruntime (1.32 runs opset 28), against the twins and against independent
numpy written here (float64 softmax; top-k by a lexicographic sort on (−value, index)). OpenVINO (f32) at 9 and
17: exact without ties; with ties and k > 1 the order of equal values is OpenVINO's own (not asserted: the spec
leaves it open). k = 1 is built to agree everywhere: crafted rows with ties, NaN, ±inf and subnormal values give the
same index and score on onnxruntime, OpenVINO and the twin at every opset.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphsurgery.errors import StepParameterError
from graphsurgery.registry import STEPS
from graphsurgery.steps.base import StepError
from graphsurgery.steps.classify import Softmax, TopK

from stepkit import OPSETS, chain, op_types

C = 1000
LOGITS = (np.float32, ("N", C))
RTOL, ATOL = 1e-5, 1e-6


def softmax64(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def topk_lexsort(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best first, equal values by lower index: sort rows on (−value, index) with np.lexsort."""
    idx = np.empty(x.shape[:-1] + (k,), dtype=np.int64)
    for row in np.ndindex(x.shape[:-1]):
        v = x[row]
        idx[row] = np.lexsort((np.arange(v.size), -v))[:k]
    return idx, np.take_along_axis(x, idx, axis=-1)


def logits(seed: int, n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, C)) * 4).astype(np.float32)
    x[0] *= 30            # large spread: most probabilities underflow to 0 (ties among them)
    x[1] = 0.0            # all equal: uniform probabilities, every class tied
    x[2, ::7] = x[2].max() + 1  # many equal maxima
    return x


def tied_logits(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size=(64, C)).astype(np.float32)


# --- softmax ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
def test_softmax(opset):
    x = logits(opset)
    run = chain((Softmax(),), LOGITS, opset, ("probabilities",))
    (p,), (twin,) = run.ort({"output": x}), run.twin({"output": x})
    assert p.dtype == np.float32 and op_types(run.model) == ["Softmax"]
    want = softmax64(x)
    np.testing.assert_allclose(p, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(twin, want, rtol=RTOL, atol=ATOL)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("opset", OPSETS)
def test_softmax_inner_axis(opset):
    """axis 1 of a [N, C, 3] tensor: below opset 13 Softmax would flatten, so it is spelled out."""
    x = np.random.default_rng(5).standard_normal((4, 10, 3)).astype(np.float32) * 5
    run = chain((Softmax(axis=1),), (np.float32, ("N", 10, 3)), opset, ("probabilities",))
    (p,), (twin,) = run.ort({"output": x}), run.twin({"output": x})
    np.testing.assert_allclose(p, softmax64(x, axis=1), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(twin, softmax64(x, axis=1), rtol=RTOL, atol=ATOL)
    assert ("Softmax" in op_types(run.model)) == (opset >= 13)


@pytest.mark.parametrize("opset", [9, 17])
def test_softmax_openvino(opset):
    x = logits(opset)
    (p,) = chain((Softmax(),), LOGITS, opset, ("probabilities",)).openvino({"output": x})
    np.testing.assert_allclose(p, softmax64(x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("opset", [9, 13, 28])
def test_softmax_skipped_after_a_softmax(opset):
    x = softmax64(logits(1)).astype(np.float32)
    facts = (("output_producer", "Softmax"),)
    run = chain((Softmax(),), LOGITS, opset, ("probabilities",), facts)
    assert op_types(run.model) == ["Identity"]
    (p,), (twin,) = run.ort({"output": x}), run.twin({"output": x})
    assert np.array_equal(p, x) and np.array_equal(twin, x)
    again = chain((Softmax(skip_if_present=False),), LOGITS, opset, ("probabilities",), facts)
    assert op_types(again.model) == ["Softmax"]
    np.testing.assert_allclose(again.twin({"output": x})[0], softmax64(x), rtol=RTOL, atol=ATOL)
    # another producer is not a reason to skip
    assert op_types(chain((Softmax(),), LOGITS, opset, ("probabilities",), (("output_producer", "Gemm"),)).model) \
        == ["Softmax"]


def test_softmax_axis_out_of_range():
    with pytest.raises(StepError, match="out of range") as info:
        Softmax(axis=2).reference({"output": np.zeros((2, 3), np.float32)})
    assert "between -2 and 1" in info.value.fix


# --- topk -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("k", [1, 5, C])
def test_topk_after_softmax(opset, k):
    x = logits(opset + k)
    run = chain((Softmax(), TopK(k=k)), LOGITS, opset, ("indices", "scores"))
    (idx, scores), (twin_idx, twin_scores) = run.ort({"output": x}), run.twin({"output": x})
    assert idx.dtype == np.int64 and idx.shape == (x.shape[0], k)
    probs = Softmax().reference({"output": x})["probabilities"]
    want_idx, want_scores = topk_lexsort(probs, k)
    assert np.array_equal(twin_idx, want_idx) and np.array_equal(twin_scores, want_scores)
    # onnxruntime's probabilities may differ from numpy's in the last bits, which can reorder near-equal
    # classes: compare the ranking of onnxruntime's own probabilities, and the scores as floats
    (p,) = chain((Softmax(),), LOGITS, opset, ("probabilities",)).ort({"output": x})
    own_idx, own_scores = topk_lexsort(p, k)
    assert np.array_equal(idx, own_idx) and np.array_equal(scores, own_scores)
    np.testing.assert_allclose(scores, want_scores, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("k", [1, 5, 50])
def test_topk_ties_on_logits(opset, k):
    """Hundreds of equal values per row: lower index first, in onnxruntime (TopK's spec rule from opset 11; k = 1
    by construction at every opset) and in the twin."""
    if k > 1 and opset < 11:
        pytest.skip("TopK's tie rule (lower index first) is in the spec from opset 11")
    x = tied_logits(opset * 100 + k)
    run = chain((TopK(source="output", k=k),), LOGITS, opset, ("indices", "scores"))
    (idx, scores), (twin_idx, twin_scores) = run.ort({"output": x}), run.twin({"output": x})
    want_idx, want_scores = topk_lexsort(x, k)
    assert np.array_equal(idx, want_idx) and np.array_equal(twin_idx, want_idx)
    assert np.array_equal(scores, want_scores) and np.array_equal(twin_scores, want_scores)
    if k > 1:
        assert (want_scores[:, :-1] == want_scores[:, 1:]).any()  # the case really has ties inside the top k


@pytest.mark.parametrize("opset", [9, 17])
def test_topk_openvino(opset):
    x = np.random.default_rng(opset).permuted(np.tile(np.arange(C, dtype=np.float32), (16, 1)), axis=1)  # no ties
    run = chain((TopK(source="output", k=5),), LOGITS, opset, ("indices", "scores"))
    idx, scores = run.openvino({"output": x})
    want_idx, want_scores = topk_lexsort(x, 5)
    assert np.array_equal(idx, want_idx) and np.array_equal(scores, want_scores)

    tied = tied_logits(opset)
    idx, scores = run.openvino({"output": tied})
    want_idx, want_scores = topk_lexsort(tied, 5)
    # the values agree and every index points at its value; the order among equal values is OpenVINO's own
    # (seen with OpenVINO 2026.4 on AMD EPYC AVX2 and AVX-512 CPUs: not onnxruntime's; not asserted either way)
    assert np.array_equal(scores, want_scores)
    assert np.array_equal(np.take_along_axis(tied, idx, axis=1), want_scores)


def crafted_rows() -> np.ndarray:
    """Rows whose first maximum runtimes could disagree on: ties, NaN, ±inf, all −inf, subnormal values."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 4, size=(12, C)).astype(np.float32)            # hundreds of ties at the maximum
    x[1, 500] = np.nan                                                 # NaN after the first maximum
    x[2, [7, 900]] = np.nan                                            # two NaN: the first one
    x[3] = np.nan                                                      # all NaN
    x[4, 10], x[4, 20] = np.inf, np.nan                                # +inf before a NaN
    x[5, [3, 9]] = np.inf                                              # two +inf
    x[6] = -np.inf                                                     # all −inf
    x[7] = -np.inf
    x[7, 600] = -np.float32(3.4e38)                                    # −inf around the lowest float
    x[8] = 0.0
    x[8, [40, 41]] = np.float32(1e-40)                                 # subnormal maximum, tied
    x[9] = -1e-40                                                      # all the same negative subnormal
    x[10, C - 1] = 100.0                                               # at the last position
    x[11] = -x[11]
    return x


def first_maximum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy's argmax rule, written out: the first NaN if the row holds one, else the first maximum."""
    nan = np.isnan(x)
    idx = np.where(nan.any(axis=-1), nan.argmax(axis=-1), np.where(nan, -np.inf, x).argmax(axis=-1))[:, None]
    return idx.astype(np.int64), np.take_along_axis(x, idx, axis=-1)


@pytest.mark.parametrize("opset", OPSETS)
def test_top1_crafted_onnxruntime_and_twin(opset):
    x = crafted_rows()
    run = chain((TopK(source="output", k=1),), LOGITS, opset, ("indices", "scores"))
    want_idx, want_scores = first_maximum(x)
    for idx, scores in (run.ort({"output": x}), run.twin({"output": x})):
        assert np.array_equal(idx, want_idx) and np.array_equal(scores, want_scores, equal_nan=True)


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 18])
def test_top1_crafted_openvino(opset):
    x = crafted_rows()
    idx, scores = chain((TopK(source="output", k=1),), LOGITS, opset, ("indices", "scores")).openvino({"output": x})
    want_idx, want_scores = first_maximum(x)
    assert np.array_equal(idx, want_idx) and np.array_equal(scores, want_scores, equal_nan=True)


def test_top1_float16_and_nodes():
    with np.errstate(over="ignore"):  # −3.4e38 becomes −inf in float16, as intended
        x = crafted_rows().astype(np.float16)
    run = chain((TopK(source="output", k=1),), (np.float16, ("N", C)), 13, ("indices", "scores"))
    idx, scores = run.ort({"output": x})
    want_idx, want_scores = first_maximum(x)
    assert scores.dtype == np.float16
    assert np.array_equal(idx, want_idx) and np.array_equal(scores, want_scores, equal_nan=True)
    assert "TopK" not in op_types(run.model)
    assert "TopK" in op_types(chain((TopK(source="output", k=2),), LOGITS, 13, ("indices",)).model)


def test_topk_nodes_per_opset():
    at9 = chain((TopK(source="output"),), LOGITS, 9, ("indices",)).model
    at11 = chain((TopK(source="output"),), LOGITS, 11, ("indices",)).model
    node9 = next(n for n in at9.graph.node if n.op_type == "TopK")
    node11 = next(n for n in at11.graph.node if n.op_type == "TopK")
    assert len(node9.input) == 1 and {a.name for a in node9.attribute} == {"axis", "k"}
    assert len(node11.input) == 2 and {a.name for a in node11.attribute} == {"axis", "largest", "sorted"}


def test_topk_errors():
    with pytest.raises(StepError, match="probabilities") as info:
        TopK().reference({"output": np.zeros((1, 10), np.float32)})
    assert "softmax" in info.value.fix and "source: output" in info.value.fix
    with pytest.raises(StepError, match="only 10 classes") as info:
        TopK(k=11, source="output").reference({"output": np.zeros((1, 10), np.float32)})
    assert "at most 10" in info.value.fix
    with pytest.raises(StepError, match="only 10 classes"):
        chain((TopK(k=11, source="output"),), (np.float32, ("N", 10)), 13, ("indices",))
    with pytest.raises(StepParameterError, match=r"TopK\(k=…\): Input should be greater than or equal to 1"):
        TopK(k=0)
    assert TopK(source="logits").reads == ("logits",)


def test_registered_with_docs():
    for name, cls in [("softmax", Softmax), ("topk", TopK)]:
        assert STEPS[name] is cls
        doc = cls.__doc__.strip().splitlines()
        assert doc[0] and not doc[1] and len(doc) > 3, name
    assert Softmax().writes()["probabilities"].kind == "float"
    assert TopK().writes()["indices"].kind == "indices" and TopK().writes()["scores"].kind == "float"


def test_caffe2_style_class_outputs_are_ranked_as_n_by_c(tmp_path):
    """[N, C, 1, 1] class outputs (the caffe2-era zoo models end that way): topk saw 1 class; now N × C."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from graphsurgery.api import apply
    from graphsurgery.recipe import parse_recipe
    from graphsurgery.runners import open_runner
    from graphsurgery.verification import verify

    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array(rng.normal(0, 1, (10, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["conv"]),
         helper.make_node("GlobalAveragePool", ["conv"], ["logits"])],
        "caffe2ish", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10, 1, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    recipe = parse_recipe("version: 1\nname: top3\noutput:\n  steps:\n    - softmax: {}\n    - topk: {k: 3}\n")
    patched = apply(recipe, plain, tmp_path / "p.onnx").output
    x = rng.normal(0, 2, (4, 3, 8, 8)).astype(np.float32)
    with open_runner("onnxruntime", patched) as run, open_runner("onnxruntime", plain) as run_plain:
        got, logits = run({"input": x}), run_plain({"input": x})["logits"]
    probabilities = softmax64(logits.reshape(4, 10))
    want_idx, _ = topk_lexsort(probabilities, 3)
    assert got["indices"].shape == (4, 3) and got["probabilities"].shape == (4, 10)
    assert np.array_equal(got["indices"], want_idx)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=RTOL, atol=ATOL)
    # verify's random inputs are 0–255: most probabilities underflow to 0, and OpenVINO orders those ties its own
    # way (k > 1, see test_topk_openvino); onnxruntime follows the spec's order
    report = verify(recipe, plain, random=2, backends=("onnxruntime",))
    assert report, report.failures()
