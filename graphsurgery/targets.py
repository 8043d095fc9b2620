"""The goals `graphsurgery bench` checks, each a ratio of two pipelines measured side by side in one run (absolute
times drift on a shared machine; ratios hold): the patched model's overhead per runtime, the processing's share
end to end, and the speed-up over PyTorch (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from graphsurgery.ratios import paired_ratio, paired_ratio_ci


@dataclass(frozen=True)
class Target:
    """A goal stated as a ratio measured within one run (BENCHMARKS.md)."""

    name: str
    limit: float
    at_most: bool  # True: ratio ≤ limit; False: ratio ≥ limit


TARGETS = (
    Target("OpenVINO patched / plain, model-only", 1.01, True),
    Target("ONNX Runtime patched / plain, model-only", 1.02, True),
    Target("end-to-end / model-only, worst pipeline", 1.03, True),
    Target("PyTorch eager / OpenVINO patched f32, end-to-end", 2.2, False),
)


def check_targets(rows: list[dict]) -> list[dict]:
    """Each target's measured ratio, its 95 % confidence interval and whether it is met (None: not measured)."""
    by_key = {row["key"]: row for row in rows}

    def pair(numerator: str, denominator: str, kind: str, other_kind: str | None = None):
        if numerator not in by_key or denominator not in by_key:
            return None
        return by_key[numerator][kind]["samples"], by_key[denominator][other_kind or kind]["samples"]

    worst = max(rows, key=lambda row: row["end_to_end_over_model"])
    pairs = (
        (pair("openvino-patched-f32", "openvino-plain", "model_ms"), None),
        (pair("onnxruntime-patched", "onnxruntime-plain", "model_ms"), None),
        (pair(worst["key"], worst["key"], "end_to_end_ms", "model_ms"), worst["label"]),
        (pair("torch-eager", "openvino-patched-f32", "end_to_end_ms"), None),
    )
    results = []
    for target, (samples, where) in zip(TARGETS, pairs):
        value = None if samples is None else paired_ratio(*samples)
        met = None if value is None else (value <= target.limit if target.at_most else value >= target.limit)
        results.append({"name": target.name, "ratio": value, "ci95": None if samples is None else
                        paired_ratio_ci(*samples), "limit": target.limit, "at_most": target.at_most, "met": met,
                        "where": where})
    return results
