"""Comparisons and tolerance measurements work on large outputs part by part (`graphsurgery.parts`): the results
must be those of the whole arrays, which the tests here compute with parts larger than the arrays."""

from __future__ import annotations

import numpy as np
import pytest

from graphsurgery import parts
from graphsurgery.compare import compare_floats
from graphsurgery.parts import largest_finite, row_parts
from graphsurgery.steps.base import Comparison
from graphsurgery.tolerances import float16_exponentials, measured_floor, scaled_floor


def outputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two backends' outputs [7, 3, 5, 4] a little apart, with NaN and ±inf in places (one side, both sides)."""
    rng = np.random.default_rng(seed)
    expected = (rng.normal(size=(7, 3, 5, 4)) * 50).astype(np.float32)
    actual = expected + rng.normal(scale=1e-3, size=expected.shape).astype(np.float32)
    expected[1, 0, 0, 0] = actual[1, 0, 0, 0] = np.nan
    actual[2, 1, 1, 1] = np.nan
    expected[4, 2, 3, 2] = np.inf
    actual[5, 0, 4, 3] = -np.inf
    actual[6, 2, 2, 2] += 7  # the worst difference, in the last part
    return actual, expected


@pytest.fixture(params=[1, 13, 60, 61, 500])
def small_parts(request, monkeypatch):
    """Parts of one row (60 values), of one row for 13 values, of a row and a bit, and of more than the arrays."""
    monkeypatch.setattr(parts, "PART_VALUES", request.param)
    return request.param


def test_the_parts_joined_are_the_arrays(small_parts):
    actual, expected = outputs(0)
    cut = row_parts(actual, expected)
    assert len(cut) == (1 if small_parts >= actual.size else -(-7 // max(1, small_parts // 60)))
    for joined, array in zip(map(np.concatenate, zip(*cut)), (actual, expected)):
        np.testing.assert_array_equal(joined, array)


def test_a_comparison_in_parts_is_the_comparison_of_the_whole(monkeypatch, small_parts):
    actual, expected = outputs(1)
    agreeing = np.where(np.isfinite(actual) & np.isfinite(expected), actual, expected)  # non-finite alike
    in_parts = [compare_floats("x", a, expected, atol=1e-4, rtol=1e-4) for a in (actual, agreeing)]
    monkeypatch.setattr(parts, "PART_VALUES", 10**9)
    whole = [compare_floats("x", a, expected, atol=1e-4, rtol=1e-4) for a in (actual, agreeing)]
    assert in_parts == whole
    assert whole[0].worst_index == [2, 1, 1, 1] and whole[0].nan_mismatches == 1  # NaN on one side: infinitely off
    assert whole[1].worst_index == [6, 2, 2, 2] and whole[1].max_abs == pytest.approx(7, abs=0.01)
    assert whole[1].failed and not whole[1].nan_mismatches


def test_the_tolerances_measured_in_parts_are_those_of_the_whole(monkeypatch, small_parts):
    """The floor raised to the backends' rounding, the floor scaled to the outputs' size, and the float16 rtol: each
    reads the largest finite value or the largest difference where every side is finite."""
    actual, expected = outputs(2)
    actual[6, 2, 2, 2] -= 7  # rounding only: the floor is raised, not refused
    float_output = Comparison("float", atol=1e-6, rtol=1e-6)
    softmax = Comparison("float", atol=1e-6, rtol=1e-6, exponentiates=True)

    def measured():
        return (measured_floor({"x": float_output}, {}, {"a": {"x": actual}, "b": {"x": expected}}),
                scaled_floor({"x": float_output}, {"x": Comparison("float", atol=1e3, rtol=1e-6)}, {},
                             {"x": expected / 1e4}),
                float16_exponentials({"x": softmax}, {}, expected),
                largest_finite(expected))

    in_parts = measured()
    monkeypatch.setattr(parts, "PART_VALUES", 10**9)
    assert in_parts == measured()
    finite = np.isfinite(actual) & np.isfinite(expected)
    noise = float(np.abs(actual[finite].astype(np.float64) - expected[finite]).max())
    assert in_parts[0][0]["x"].atol == 2 * noise > float_output.atol
    assert in_parts[3] == float(np.abs(expected[np.isfinite(expected)]).max())
