"""Timing statistics for benchmarks on a shared, noisy machine: ratios of paired samples, not of medians."""

from __future__ import annotations

import time
from collections.abc import Callable

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


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Milliseconds of each call, `rounds` times: every round runs every call once in a fresh (seeded) random order,
    after `warmup` untimed rounds, so that paired ratios compare calls made close together."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    order = np.random.default_rng(0)
    for index in range(warmup + rounds):
        for pick in order.permutation(len(names)):
            start = time.perf_counter()
            calls[names[pick]]()
            if index >= warmup:
                samples[names[pick]].append((time.perf_counter() - start) * 1000)
    return samples


def ratio_entry(numerator, denominator) -> dict:
    """`paired_ratio` and its 95 % interval, as the benchmark scripts record them."""
    return {"median": paired_ratio(numerator, denominator), "ci95": paired_ratio_ci(numerator, denominator)}
