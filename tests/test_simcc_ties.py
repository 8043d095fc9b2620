"""SimCC keypoints judged for near ties on their two vectors, bin by bin (`compare.AxisVectors`).

A right patch of a model whose SimCC heads are float16 FAILed `verify --random 8` on OpenVINO, 96 px off on one
joint: the plain model's float16 vector ties two far bins exactly, the twin takes the first, and OpenVINO, which
computes the Cast to float16 inside the graph as no rounding, still tells them apart (round 88's leftover). The
comparator now reads the values at the two bins of each axis that differs; a wrong patch still fails wherever they
do not tie.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from graphsurgery.api import apply
from graphsurgery.compare import AxisVectors, HeatmapGrid, compare_output
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.heatmap_grid import heatmap_grid
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import load_recipe
from graphsurgery.runners import open_runner
from graphsurgery.steps.base import Comparison
from graphsurgery.steps.simcc import SimccDecode
from graphsurgery.twins import comparisons, decoded_output, output_extras
from graphsurgery.verification import verify
from test_hostile_eightyeighth import SIMCC, _heads_cast
from test_simcc import RECIPE, WX, WY, K, two_head_model

EXACT = Comparison("coordinates", rtol=0.0, atol=0.0, per_axis=("simcc_x", "simcc_y"))
TIE = Comparison("float", rtol=1e-4, atol=1e-4)
HALF = HeatmapGrid(np.full((1, 1, 2), 0.5), np.zeros((1, 1, 2)))  # split_ratio 2: a bin is half a pixel


def _vectors(x_values: dict[int, float], y_values: dict[int, float]) -> AxisVectors:
    """One joint's vectors of 8 bins each, 0.1 everywhere but at the bins given."""
    x, y = np.full((1, 1, 8), 0.1, np.float32), np.full((1, 1, 8), 0.1, np.float32)
    for vector, values in ((x, x_values), (y, y_values)):
        for at, value in values.items():
            vector[0, 0, at] = value
    return AxisVectors(x, y)


def _judge(vectors: AxisVectors, expected_bins, actual_bins, exact: bool = False):
    """One joint compared: keypoints at the given bins (x, y), in pixels of split_ratio 2."""
    expected, actual = (np.array([[bins]], np.float32) / 2 for bins in (expected_bins, actual_bins))
    return compare_output("keypoints", actual, expected, EXACT, reference=vectors, grid=HALF, tie=TIE, exact=exact)


@pytest.mark.parametrize("axis", ["x", "y", "both"])
def test_two_bins_of_equal_value_are_a_near_tie(axis):
    """The joint's vectors tie at bins 1 and 6 on the axis that differs; a second joint, a copy of the first whose
    answers agree, makes the agreement prove something."""
    moved = [6 if axis in (name, "both") else 1 for name in ("x", "y")]
    one = _vectors({1: 0.8, 6: 0.8}, {1: 0.8, 6: 0.8})
    vectors = AxisVectors(np.concatenate([one.x, one.x], 1), np.concatenate([one.y, one.y], 1))
    grid = HeatmapGrid(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2)))
    expected = np.array([[[1, 1], moved]], np.float32) / 2
    actual = np.array([[moved, moved]], np.float32) / 2
    result = compare_output("keypoints", actual, expected, EXACT, reference=vectors, grid=grid, tie=TIE)
    assert result, result
    assert (result.near_ties, result.mismatches, result.matches) == (1, 0, 1)
    assert result.details[0].gap == 0.0


def test_two_bins_apart_by_more_than_the_tolerance_are_a_real_mismatch():
    result = _judge(_vectors({1: 0.8, 6: 0.7}, {1: 0.8}), (1, 1), (6, 1))
    assert not result
    assert (result.near_ties, result.mismatches) == (0, 1)
    assert result.details[0].gap == pytest.approx(0.1)


def test_a_tie_on_one_axis_does_not_excuse_the_other():
    """x ties at bins 1 and 6, y does not at bins 1 and 3: the answer (6, 3) is wrong."""
    result = _judge(_vectors({1: 0.8, 6: 0.8}, {1: 0.8, 3: 0.5}), (1, 1), (6, 3))
    assert not result
    assert result.mismatches == 1


def test_two_answers_in_one_bin_are_a_real_mismatch():
    """A bin has no refinement: a keypoint a quarter bin off is wrong however the vectors tie."""
    result = _judge(_vectors({1: 0.8, 2: 0.8}, {1: 0.8}), (1, 1), (1.25, 1))
    assert not result
    assert result.mismatches == 1


@pytest.mark.parametrize("y_values", [{1: 0.8}, {1: 0.8, 4: np.nan}, {i: -np.inf for i in range(8)}],
                         ids=["finite", "nan", "minus-inf"])
def test_the_decoder_probe_judges_exactly(y_values):
    """On the probe (`exact`), tied bins decided by the graph and the twin on one float32 input are no excuse: a
    patch taking the last of tied maxima must fail there; so must one that places a joint whose vector holds NaN
    or only −inf elsewhere than mmpose's rule (simcc_decode finds those by rule, not by a runtime's choice)."""
    result = _judge(_vectors({1: 0.8, 6: 0.8}, y_values), (1, 1), (6, 1), exact=True)
    assert not result
    assert result.mismatches == 1


@pytest.mark.parametrize("fill", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_vector_holding_nan_or_inf_decides_nothing(fill):
    """As a heatmap holding one: which answer a runtime gives there, ONNX leaves to it. Counted apart from value
    ties, so such joints alone fail for proving nothing (see the next test) only when values tie."""
    result = _judge(_vectors({1: 0.8}, {1: 0.8, 4: fill}), (1, 4), (6, 2))
    assert result.near_ties == 1 and result.mismatches == 0


def test_every_joint_a_tie_proves_nothing():
    result = _judge(_vectors({1: 0.8, 6: 0.8}, {1: 0.8}), (1, 1), (6, 1))
    assert not result
    assert "agreement proves nothing" in result.problem


def test_a_score_on_the_threshold_is_a_near_tie():
    """The smaller maximum is the score: at 0 the joint sits on mmpose's "≤ 0 → −1" rule."""
    result = _judge(_vectors({1: 0.8}, {i: 0.0 for i in range(8)}), (1, 0), (-1, -1))
    assert result.near_ties == 1 and result.mismatches == 0


# --- verify on a model whose heads are float16 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def half_heads(tmp_path_factory) -> tuple[Path, Path]:
    """(plain, right patch) of the two-head SimCC model with float16 heads."""
    folder = tmp_path_factory.mktemp("simcc_half")
    plain = _heads_cast(two_head_model(folder / "wide.onnx"), folder / "plain.onnx", TensorProto.FLOAT16)
    return plain, apply(SIMCC, plain, folder / "right.onnx").output


def test_the_grid_maps_simcc_keypoints_to_their_bins(half_heads):
    """split_ratio 2: keypoint = bin / 2 on each axis, measured with one-hot vectors through the twins."""
    plain, _ = half_heads
    recipe = load_recipe(SIMCC)
    facts = ModelFacts.of(onnx.load(plain), recipe)
    rng = np.random.default_rng(0)
    outputs = {"simcc_x": rng.random((2, K, WX), np.float32), "simcc_y": rng.random((2, K, WY), np.float32)}
    extras = output_extras(recipe, facts, None, (2, 256, 192, 3), outputs)
    grids = heatmap_grid(recipe, facts, [(decoded_output(recipe, outputs["simcc_x"], facts, extras), extras)],
                         comparisons(recipe, facts))
    assert set(grids) == {"keypoints"}
    assert np.array_equal(grids["keypoints"].scale, np.full((2, K, 2), 0.5))
    assert np.array_equal(grids["keypoints"].offset, np.zeros((2, K, 2)))


@pytest.mark.parametrize("random", [8, 32])
def test_the_right_patch_of_float16_heads_passes_on_openvino(half_heads, random):
    """It FAILed at 8 and 32 random crops (one and two joints 96 px off, each a tie of exactly 0 in float16)."""
    plain, right = half_heads
    report = verify(SIMCC, plain, patched=right, random=random, backends=["openvino"])
    assert report, report.failures()
    results = [r for pair in report.pairs for r in pair.results if r.output == "keypoints"]
    assert all(detail.gap == 0.0 for result in results for detail in result.details)


def test_a_wrong_patch_of_float16_heads_still_fails_on_its_samples(half_heads, tmp_path):
    """split_ratio 2.1 in the graph: every keypoint a few bins off, between values that do not tie."""
    plain, right = half_heads
    model = onnx.load(str(right))
    [tensor] = [t for t in model.graph.initializer if t.name.startswith("graphsurgery/post/simcc_decode/")
                and numpy_helper.to_array(t).shape == () and numpy_helper.to_array(t) == 2.0]
    tensor.CopyFrom(numpy_helper.from_array(np.array(2.1, np.float32), tensor.name))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(SIMCC, plain, patched=tmp_path / "wrong.onnx", random=8, backends=["openvino"])
    assert not report
    [samples] = [r for r in report.pairs[0].results if r.output == "keypoints"]
    assert samples.mismatches > samples.positions // 2, samples


@pytest.fixture(scope="module")
def your_pipeline(half_heads) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """64 crops and your pipeline's answers to them: the plain model on ONNX Runtime, mmpose's decode."""
    plain, _ = half_heads
    crops = np.random.default_rng(1).integers(0, 256, (64, 256, 192, 3), dtype=np.uint8)
    normalized = (crops[..., ::-1] - np.float32([123.675, 116.28, 103.53])) / np.float32([58.395, 57.12, 57.375])
    with open_runner("onnxruntime", plain) as run:
        heads = run({"input": normalized.transpose(0, 3, 1, 2).astype(np.float32)})
    return crops, {"simcc_x": heads["simcc_x"], "simcc_y": heads["simcc_y"],
                   **SimccDecode(split_ratio=2.0).reference(heads)}


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "not-kept"])
def test_a_reference_that_records_both_float16_heads_is_judged_on_them(half_heads, your_pipeline, tmp_path, keep):
    """verify --reference: your pipeline's recorded heads decide its near ties, as the plain model's do in verify,
    whether the recipe keeps them or not (the shipped one does not: they were set aside as "not compared"). It
    FAILed on OpenVINO: 2 of 64 crops' joints 100 px off, each an exact float16 tie."""
    plain, right = half_heads
    recipe = SIMCC
    if keep:
        recipe = tmp_path / "keep.yaml"
        recipe.write_text(RECIPE.replace("KEEP", "true"))
        right = apply(recipe, plain, tmp_path / "right.onnx").output
    crops, answers = your_pipeline
    np.savez(tmp_path / "yours.npz", input=crops, **answers)
    report = verify(recipe, plain, patched=right, reference=tmp_path / "yours.npz", backends=["openvino"])
    assert report, report.failures()
    [keypoints] = [r for r in report.pairs[0].results if r.output == "keypoints"]
    assert keypoints.positions == 64 * K
    assert any("judged on the reference's own 'simcc_x'" in note for note in report.notes), report.notes
    assert not any("'simcc_x'" in note and "not compared" in note for note in report.notes), report.notes


@pytest.mark.parametrize("heads", ["shorter", "fewer rows"])
def test_recorded_heads_that_do_not_fit_the_model_judge_nothing(half_heads, your_pipeline, tmp_path, heads):
    """Heads of another length than the plain model declares, or of another count of rows than the samples, are
    not the model's: set aside, with the note, every mismatch real (no index read past their end)."""
    plain, right = half_heads
    crops, answers = your_pipeline
    cut = {"shorter": (slice(None), slice(None), slice(0, WX - 8)), "fewer rows": slice(0, -1)}[heads]
    np.savez(tmp_path / "odd.npz", input=crops, **{**answers, "simcc_x": answers["simcc_x"][cut]})
    report = verify(SIMCC, plain, patched=right, reference=tmp_path / "odd.npz", backends=["onnxruntime"])
    assert report, report.failures()
    assert any("holds not both of 'simcc_x' and 'simcc_y'" in note for note in report.notes), report.notes
    assert any("'simcc_x', 'simcc_y' are not outputs of the patched model" in note for note in report.notes)


def test_a_patch_taking_the_last_of_tied_maxima_still_fails_on_the_probe(tmp_path, monkeypatch):
    """Ties are excused on the samples only: the decoder probe's flat and tied vectors, decided exactly by the
    graph and the twin on one input, still catch a decode that breaks ties the other way (a float32 model's samples
    hold no tie, so they PASS it)."""
    from dataclasses import replace

    from graphsurgery.steps import maxima, simcc

    def last_maximum(em, x, rank, length):
        i32 = np.int32
        mirrored = em.op("Slice", [x, em.const("start", [-1], np.int64), em.const("end", [-2**62], np.int64),
                                   em.const("axis", [rank - 1], np.int64), em.const("step", [-1], np.int64)],
                         dtype=np.float32)
        found = maxima.first_maximum(em, mirrored, rank, length)
        return replace(found, first=em.op("Sub", [em.const("last", length - 1, i32), found.first], dtype=i32))

    plain = two_head_model(tmp_path / "plain.onnx")
    monkeypatch.setattr(simcc, "first_maximum", last_maximum)
    wrong = apply(SIMCC, plain, tmp_path / "wrong.onnx").output
    monkeypatch.undo()
    report = verify(SIMCC, plain, patched=wrong, random=2, backends=["onnxruntime"])
    assert not report
    assert all(report.pairs), report.failures()  # the samples hold no tie
    assert any("output steps on a probe output" in line for line in report.failures()), report.failures()


@pytest.mark.parametrize("shift", [0.0, 5.0])
def test_a_reference_of_the_heads_alone_checks_the_keypoints_on_them_where_the_recipe_does_not_keep_them(
        half_heads, your_pipeline, tmp_path, shift):
    """Only the two heads recorded, the shipped recipe dropping them: refused as "none of the reference's arrays is
    an output of the patched model", where the recipe that keeps them had its keypoints decoded from them by the
    twins. Now both do: a patch whose keypoints are 5 px off FAILs."""
    from test_reference import moved_keypoints

    plain, right = half_heads
    crops, answers = your_pipeline
    np.savez(tmp_path / "heads.npz", input=crops, simcc_x=answers["simcc_x"], simcc_y=answers["simcc_y"])
    moved_keypoints(right, tmp_path / "patched.onnx", shift)
    report = verify(SIMCC, plain, patched=tmp_path / "patched.onnx", reference=tmp_path / "heads.npz",
                    backends=["onnxruntime"])
    [keypoints] = [r for r in report.pairs[0].results if r.output == "keypoints"]
    assert keypoints.positions == 64 * K
    if shift:
        assert not report and keypoints.mismatches == 64 * K, report.failures()
    else:
        assert report and keypoints.matches == 64 * K, report.failures()


def test_heads_alone_that_do_not_fit_the_model_are_refused(half_heads, your_pipeline, tmp_path):
    """Nothing would be compared: refused, not a PASS of nothing."""
    plain, right = half_heads
    crops, answers = your_pipeline
    np.savez(tmp_path / "heads.npz", input=crops, simcc_x=answers["simcc_x"][:, :, :-8], simcc_y=answers["simcc_y"])
    with pytest.raises(GraphsurgeryError, match="none of the reference's arrays .* or a model output its steps decode"):
        verify(SIMCC, plain, patched=right, reference=tmp_path / "heads.npz", backends=["onnxruntime"])


def test_verify_int8_of_the_shipped_recipe_checks_the_int8_models_own_decode(tmp_path):
    """The recipe drops the heads; verify keeps them in the model it quantizes, to decode them: it FAILed, "the
    int8 model keeps no network output", on every SimCC model."""
    plain = two_head_model(tmp_path / "plain.onnx")
    report = verify(SIMCC, plain, random=2, precision="int8", backends=["openvino"])
    assert report, report.failures()
    [keypoints] = [r for r in report.pairs[1].results if r.output == "keypoints"]
    assert keypoints.positions == 2 * K and keypoints.matches == 2 * K
    assert any("within one SimCC bin of f32's" in note for note in report.notes), report.notes
