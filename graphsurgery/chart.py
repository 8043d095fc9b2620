"""The bench chart: one horizontal bar per pipeline (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from graphsurgery.benchmark import BenchResult


def write_chart(result: BenchResult, path: str | Path) -> Path:
    """A horizontal bar chart of the rows (latency: model-only and end-to-end medians, whiskers to p90)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    rows = result.pipelines
    labels = [row["label"] + ("" if row["precision"] == row["precision_requested"] else f" [ran {row['precision']}]")
              for row in rows]
    y = np.arange(len(rows))[::-1]
    settings = result.settings
    figure, axes = plt.subplots(figsize=(9, 1.0 + 0.55 * len(rows)), dpi=110)
    if result.mode == "latency":
        height = 0.38
        for offset, kind, name, colour in ((height / 2, "model_ms", "model only", "#4C72B0"),
                                           (-height / 2, "end_to_end_ms", "end to end", "#DD8452")):
            medians = np.array([row[kind]["median"] for row in rows])
            p90 = np.array([row[kind]["p90"] for row in rows])
            bars = axes.barh(y + offset, medians, height, xerr=[np.zeros_like(p90), p90 - medians], label=name,
                             color=colour, error_kw={"elinewidth": 0.8, "capsize": 2})
            axes.bar_label(bars, labels=[f"{m:.1f}" for m in medians], padding=3, fontsize=7)
        axes.set_xlabel("milliseconds per batch (median; whisker to p90)")
        axes.legend(loc="lower right", fontsize=8)
    else:
        fps = np.array([row["frames_per_second"]["median"] for row in rows])
        bars = axes.barh(y, fps, 0.6, color="#55A868")
        axes.bar_label(bars, labels=[f"{v:.1f}" for v in fps], padding=3, fontsize=7)
        axes.set_xlabel("frames per second (median round)")
    axes.set_yticks(y, labels, fontsize=8)
    axes.margins(x=0.12)
    load = result.load_average["after"][0]
    axes.set_title(f"{Path(result.model).name} · {result.recipe} · batch {settings['batch']} · "
                   f"{settings['threads']} threads · {settings['iterations']} interleaved rounds · load {load:.1f}",
                   fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
