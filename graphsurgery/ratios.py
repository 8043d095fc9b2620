"""Timing statistics for benchmarks on a shared, noisy machine: ratios of paired samples, not of medians."""

from __future__ import annotations

import numpy as np


def paired_ratio(numerator, denominator) -> float:
    """The median over rounds of the ratio within each round: both were timed in the same round, close together,
    so load that changes from round to round cancels (a ratio of medians would mix different moments)."""
    return float(np.median(np.asarray(numerator) / np.asarray(denominator)))


def paired_ratio_ci(numerator, denominator, resamples: int = 2000) -> list[float]:
    """95 % bootstrap interval of `paired_ratio`: whether a miss (or a pass) is more than this machine's noise."""
    ratios = np.asarray(numerator) / np.asarray(denominator)
    picks = np.random.default_rng(0).integers(0, len(ratios), (resamples, len(ratios)))
    return [float(v) for v in np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])]


def timing_stats(ms: np.ndarray) -> dict:
    """Median, 90th percentile and minimum of one pipeline's times, with every sample (for paired ratios)."""
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "min": float(ms.min()),
            "samples": [round(float(v), 4) for v in ms]}
