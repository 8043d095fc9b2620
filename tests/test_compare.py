"""The comparator: both-tolerance semantics, statistics, the tolerance that would pass, near-tie classification."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from graphsurgery.compare import (
    DEFAULT_TIE,
    HeatmapGrid,
    compare_float_parts,
    compare_floats,
    compare_output,
    compare_positions,
    missing_output,
)
from graphsurgery.steps.base import EXACT, Comparison

INDICES = Comparison("indices", rtol=0.0, atol=0.0)


def strict_json(result) -> dict:
    """The result as JSON, refusing NaN/Infinity (which are not JSON)."""
    return json.loads(json.dumps(result.to_dict(), allow_nan=False))


# --- floats --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actual, passes", [
    (10.05, True),    # |Δ| 0.05 exceeds atol 0.01 but not rtol·|b| = 0.1
    (0.005, True),    # reference 0: rtol covers nothing, |Δ| 0.005 within atol
    (10.2, False),    # exceeds both
])
def test_an_element_fails_only_when_it_exceeds_both_tolerances(actual, passes):
    expected = 10.0 if actual > 1 else 0.0
    result = compare_floats("x", np.array([actual]), np.array([expected]), atol=0.01, rtol=0.01)
    assert bool(result) is passes
    assert result.failed == (0 if passes else 1)


def test_statistics_match_an_independent_computation():
    rng = np.random.default_rng(1)
    expected = rng.normal(size=(3, 4, 5)).astype(np.float32)
    actual = expected + rng.normal(scale=1e-3, size=expected.shape).astype(np.float32)
    result = compare_floats("x", actual, expected, atol=1e-4, rtol=1e-4)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    rel = diff / np.abs(expected.astype(np.float64))
    assert result.max_abs == pytest.approx(diff.max())
    assert result.mean_abs == pytest.approx(diff.mean())
    assert result.median_abs == pytest.approx(np.median(diff))
    assert result.max_rel == pytest.approx(rel.max())
    assert result.median_rel == pytest.approx(np.median(rel))
    assert result.failed == int(((diff > 1e-4) & (diff > 1e-4 * np.abs(expected))).sum())
    assert result.worst_index == list(np.unravel_index(np.argmax(diff), diff.shape))
    assert "exceed atol 0.0001 and rtol 0.0001" in result.summary()


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=150, deadline=None)
@given(arrays(np.float32, st.integers(1, 12), elements=finite), arrays(np.float32, 12, elements=finite),
       st.sampled_from([0.0, 1e-6, 1e-3, 0.5]), st.sampled_from([0.0, 1e-5, 1e-2, 0.3]))
def test_the_tolerance_that_would_pass_is_the_smallest_that_passes(expected, noise, atol, rtol):
    actual = expected + noise[: expected.size]
    result = compare_floats("x", actual, expected, atol=atol, rtol=rtol)
    assert bool(compare_floats("x", actual, expected, atol=result.passing_atol, rtol=rtol))
    if result.passing_atol > 0:
        assert not compare_floats("x", actual, expected, atol=np.nextafter(result.passing_atol, 0), rtol=rtol)
    if np.isfinite(result.passing_rtol):
        assert bool(compare_floats("x", actual, expected, atol=atol, rtol=result.passing_rtol))
        if result.passing_rtol > 0:
            assert not compare_floats("x", actual, expected, atol=atol, rtol=np.nextafter(result.passing_rtol, 0))
    if result:
        assert result.passing_atol <= atol or result.passing_rtol <= rtol


def test_a_reference_of_zero_needs_an_infinite_rtol_and_the_report_stays_json():
    result = compare_floats("x", np.array([0.5, 1.0]), np.array([0.0, 1.0]), atol=0.1, rtol=0.1)
    assert not result
    assert result.passing_atol == 0.5 and result.passing_rtol == float("inf")
    assert strict_json(result)["passing_rtol"] == "inf"


def test_nan_equals_nan_and_nan_on_one_side_fails():
    both = compare_floats("x", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), atol=0, rtol=0)
    assert both and both.failed == 0
    one = compare_floats("x", np.array([np.nan, 1.0]), np.array([2.0, 1.0]), atol=1e9, rtol=1e9)
    assert not one and one.nan_mismatches == 1 and one.failed == 1
    assert strict_json(one)["max_abs"] == "inf"


def test_shapes_that_differ_fail_with_a_reason():
    result = compare_output("x", np.zeros((1, 2)), np.zeros((1, 3)), Comparison("float"))
    assert not result and "differs from the reference [1, 3]" in result.summary()
    assert not missing_output("y", EXACT, "the patched model has no such output")


# --- positions -----------------------------------------------------------------------------------------------


def heatmaps_with(values: dict[tuple[int, int, int, int], float], shape=(1, 2, 8, 6)) -> np.ndarray:
    """Heatmaps at a low background with the given values at (n, k, y, x)."""
    maps = np.full(shape, -1.0, np.float32)
    for index, value in values.items():
        maps[index] = value
    return maps


def test_exact_match_rate_and_max_pixel_distance():
    expected = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    actual = np.array([[[1.0, 2.0], [6.0, 8.0]]])
    result = compare_positions("kp", actual, expected, EXACT)
    assert result.positions == 2 and result.matches == 1 and result.match_rate == 0.5
    assert result.max_distance == pytest.approx(5.0)
    assert result.mismatches == 1 and not result  # no reference values: every mismatch is real
    assert result.details[0].index == [0, 1] and result.details[0].gap is None
    within = compare_positions("kp", actual, expected, Comparison("coordinates", atol=4.0))
    assert within and within.matches == 2


def test_a_mismatch_between_tied_heatmap_values_is_a_near_tie_and_passes():
    # joint 0: two cells within 1e-7 of each other (a tie under float rounding); joint 1: a clear winner
    maps = heatmaps_with({(0, 0, 2, 1): 0.9, (0, 0, 5, 4): 0.9 + 1e-7, (0, 1, 3, 3): 0.8, (0, 1, 6, 2): 0.3})
    expected = np.array([[[1.0, 2.0], [3.0, 3.0]]])
    actual = np.array([[[4.0, 5.0], [3.0, 3.0]]])
    result = compare_positions("kp", actual, expected, EXACT, reference=maps)
    assert result and result.near_ties == 1 and result.mismatches == 0
    assert result.details[0].near_tie and result.details[0].gap == float(maps[0, 0, 5, 4]) - float(maps[0, 0, 2, 1])
    assert "1 near tie" in result.summary()


def test_keypoints_that_all_differ_by_near_ties_prove_nothing():
    """Every keypoint a near tie between two values and none matched: a patch that moves every keypoint between tied
    cells would pass as well. It passed (detections that are all near ties do not, round 51's leftover); one match
    is enough. Maps that decide nothing are no such tie (tests/test_hostile_thirtyfirst.py)."""
    maps = heatmaps_with({(0, 0, 2, 1): 0.9, (0, 0, 5, 4): 0.9 + 1e-7, (0, 1, 3, 3): 0.8, (0, 1, 1, 1): 0.8})
    expected = np.array([[[1.0, 2.0], [3.0, 3.0]]])
    result = compare_positions("kp", np.array([[[4.0, 5.0], [1.0, 1.0]]]), expected, EXACT, reference=maps)
    assert not result and result.near_ties == 2 and result.mismatches == 0
    assert result.summary().startswith("no keypoint of the 2 matched: all are near ties (2) or unstable (0), so "
                                       "agreement proves nothing")
    assert compare_positions("kp", np.array([[[4.0, 5.0], [3.0, 3.0]]]), expected, EXACT, reference=maps)
    undecided = heatmaps_with({(0, 1, 3, 3): 0.8, (0, 1, 1, 1): 0.8}) - 2  # every map's peak below 0
    assert compare_positions("kp", np.array([[[4.0, 5.0], [1.0, 1.0]]]), expected, EXACT, reference=undecided)


def test_a_mismatch_between_clearly_different_values_is_real():
    maps = heatmaps_with({(0, 1, 3, 3): 0.8, (0, 1, 6, 2): 0.3})
    result = compare_positions("kp", np.array([[[0.0, 0.0], [2.0, 6.0]]]), np.array([[[0.0, 0.0], [3.0, 3.0]]]),
                               EXACT, reference=maps)
    assert not result and result.mismatches == 1 and result.near_ties == 0
    assert result.details[0].gap == pytest.approx(0.5)


def test_the_tie_tolerance_follows_both_tolerance_semantics():
    maps = heatmaps_with({(0, 0, 1, 1): 100.0, (0, 0, 2, 2): 100.0005})
    args = (np.array([[[2.0, 2.0], [0, 0]]]), np.array([[[1.0, 1.0], [0, 0]]]), EXACT)
    assert not compare_positions("kp", *args, reference=maps, tie=Comparison("float", atol=1e-5, rtol=0))
    assert compare_positions("kp", *args, reference=maps, tie=Comparison("float", atol=1e-5, rtol=1e-5))  # 1e-3 allowed


def test_coordinates_in_crop_pixels_are_mapped_to_heatmap_cells_by_the_grid():
    # crop pixels = 4 × cells: (8, 20) is cell (2, 5), (12, 4) is cell (3, 1)
    maps = heatmaps_with({(0, 0, 5, 2): 0.7, (0, 0, 1, 3): 0.7 - 1e-8})
    grid = HeatmapGrid(np.full((1, 2, 2), 4.0), np.zeros((1, 2, 2)))
    result = compare_positions("kp", np.array([[[12.0, 4.0], [0, 0]]]), np.array([[[8.0, 20.0], [0, 0]]]), EXACT,
                               reference=maps, grid=grid)
    assert result.near_ties == 1 and result.mismatches == 0
    without_grid = compare_positions("kp", np.array([[[12.0, 4.0], [0, 0]]]), np.array([[[8.0, 20.0], [0, 0]]]),
                                     EXACT, reference=maps)
    assert without_grid.mismatches == 1  # read as cells, (8, 20) is outside the 6×8 map: no tie can be judged


def test_a_sub_cell_refinement_on_tied_neighbours_is_a_near_tie():
    # same cell (3, 4); the quarter offset in x went opposite ways: the x neighbours tie within float tolerance
    tied = heatmaps_with({(0, 0, 4, 3): 0.9, (0, 0, 4, 4): 0.5, (0, 0, 4, 2): 0.5 + 1e-8})
    args = (np.array([[[3.25, 4.0], [0, 0]]]), np.array([[[2.75, 4.0], [0, 0]]]), EXACT)
    assert compare_positions("kp", *args, reference=tied).near_ties == 1
    clear = heatmaps_with({(0, 0, 4, 3): 0.9, (0, 0, 4, 4): 0.6, (0, 0, 4, 2): 0.2})
    assert compare_positions("kp", *args, reference=clear).mismatches == 1


def test_a_joint_whose_peak_is_at_zero_is_a_near_tie():
    # a peak on the "score ≤ 0 → (0, 0)" threshold: one side may decode (0, 0), the other the peak position
    maps = heatmaps_with({(0, 0, 3, 3): 1e-7})
    result = compare_positions("kp", np.array([[[3.0, 3.0], [0, 0]]]), np.array([[[0.0, 0.0], [0, 0]]]), EXACT,
                               reference=maps)
    assert result.near_ties == 1 and result


def test_index_mismatches_are_judged_on_the_class_scores():
    scores = np.array([[0.1, 0.4, 0.4 + 1e-9, 0.1], [0.7, 0.2, 0.05, 0.05]])
    expected = np.array([[1, 0], [0, 1]])
    actual = np.array([[2, 0], [1, 1]])
    result = compare_output("top", actual, expected, INDICES, reference=scores)
    assert result.positions == 4 and result.matches == 2
    assert result.near_ties == 1 and result.mismatches == 1 and not result
    argmax = compare_output("best", np.array([2, 1]), np.array([1, 1]), INDICES, reference=scores)
    assert argmax.near_ties == 1 and argmax


def test_position_results_are_json():
    result = compare_positions("kp", np.array([[[1.0, 2.0]]]), np.array([[[1.0, 3.0]]]), EXACT)
    data = strict_json(result)
    assert data["passed"] is False and data["match_rate"] == 0.0 and data["details"][0]["expected"] == [1.0, 3.0]
    assert data["tie_atol"] == DEFAULT_TIE.atol


def test_tolerances_that_let_an_output_of_zeros_pass_are_called_out():
    """--tolerance '*=1e30,0' PASSed any patch with no word that the comparison could not fail (round 34)."""
    reference = np.array([0.5, -2.0, 1.0], np.float32)
    loose = compare_floats("y", np.zeros(3, np.float32), reference, atol=1e30, rtol=0.0)
    assert loose and "output of zeros pass" in loose.summary() and loose.largest == 2.0
    assert "output of zeros" in compare_floats("y", reference, reference, atol=0.0, rtol=1.0).summary()
    usual = compare_floats("y", reference, reference, atol=1e-4, rtol=1e-4)
    assert usual and "zeros" not in usual.summary()
    assert "zeros" not in compare_floats("y", np.zeros(3), np.zeros(3), atol=1e-4, rtol=1e-4).summary()


def test_coordinates_far_out_are_allowed_their_float32_steps_and_exact_ones_none():
    """At y = −54,612 px one float32 step is 0.0039 px, twice the top-down recipe's 2e-3: a right patch FAILed on a
    65,535 × 1 image (round 34). x shares y's affine map, so it gets the steps of the larger of the two."""
    expected = np.array([[-8191.875, -54612.0]], np.float32)
    actual = np.array([[-8191.87109375, -54611.99609375]], np.float32)
    assert compare_positions("keypoints", actual, expected, Comparison("coordinates", atol=2e-3))
    moved = np.array([[-8191.875, -54611.9]], np.float32)  # 25 steps: a patch, not rounding
    assert not compare_positions("keypoints", moved, expected, Comparison("coordinates", atol=2e-3))
    near = np.array([[1.0, 2.0]], np.float32)
    assert not compare_positions("keypoints", np.nextafter(near, 3, dtype=np.float32), near, EXACT)


def test_floats_compared_in_parts_are_the_joined_comparison():
    """verify compares every sample's network input a batch at a time (`staged.input_result`): the result must be
    the one of the values joined, NaN and infinities included, the worst index counted along them."""
    rng = np.random.default_rng(7)
    parts = []
    for size in (5, 0, 40, 17):
        expected = rng.normal(0, 2, size).astype(np.float32)
        actual = expected + rng.normal(0, 3e-4, size).astype(np.float32)
        if size == 40:
            actual[[3, 9]], expected[[9, 11]] = np.nan, np.nan
            actual[20], expected[21] = np.inf, -np.inf
        parts.append((actual, expected))
    joined = compare_floats("x", np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts]),
                            atol=1e-4, rtol=1e-4)
    assert compare_float_parts("x", parts, atol=1e-4, rtol=1e-4) == joined
    assert joined.failed and joined.nan_mismatches == 2  # [3] and [11]: NaN on one side only
    worst = compare_float_parts("x", [(np.zeros(3), np.zeros(3)), (np.array([0.0, 2.0]), np.zeros(2))], atol=0.1,
                                rtol=0)
    assert worst.worst_index == [4] and worst.passing_atol == 2.0


def test_a_part_without_a_finite_value_is_no_problem_while_another_has_one():
    """'The reference holds no finite value' is a property of all the values, not of one batch."""
    nan = np.full(4, np.nan)
    assert compare_float_parts("x", [(nan, nan), (np.ones(2), np.ones(2))], atol=0, rtol=0)
    assert compare_float_parts("x", [(nan, nan), (nan[:2], nan[:2])], atol=0, rtol=0).problem
