"""The bench chart: one horizontal bar per pipeline (matplotlib, headless)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from graphsurgery.errors import GraphsurgeryError
from graphsurgery.safeio import check_folder_writable, refuse_symlink_loop, write_atomically

if TYPE_CHECKING:
    from graphsurgery.benchmark import BenchResult


#: What matplotlib's Agg canvas writes, by file name suffix; any other suffix fails in savefig, after the timing.
CHART_FORMATS = ("png", "svg", "svgz", "pdf", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def check_chart_path(path: str | Path) -> Path:
    """Refuse, before minutes of timing, a chart path whose format matplotlib cannot write, or a folder."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in CHART_FORMATS:
        raise GraphsurgeryError(f"a chart cannot be written as {path.suffix or 'a file without a suffix'!r}", path=path,
                                fix="name the chart .png (or .svg, .pdf)")
    if path.is_dir():
        raise GraphsurgeryError("the chart path is a directory", path=path, fix="give a file name ending in .png")
    refuse_symlink_loop(path)  # as --json does: `--chart loop.png` replaced a link that leads back to itself
    if not path.parent.is_dir():
        raise GraphsurgeryError("the chart's folder does not exist", path=path, fix=f"create {path.parent} first")
    check_folder_writable(path)  # before the timing, not after it (round 53: a read-only file system)
    return path


def _pyplot():
    """matplotlib's pyplot on the Agg canvas. Its first import warns on stderr, in two long lines, when the home
    folder cannot hold its config and font cache (HOME unwritable or unset in a container): it then uses a temporary
    folder, which is all a chart needs, so the command stays quiet. MPLBACKEND is not read: the chart is drawn on
    Agg whatever it says, and a backend matplotlib does not know (`MPLBACKEND=junk`) failed its import, an internal
    error after the whole timing. Nor is the user's matplotlibrc (`_without_matplotlibrc`)."""
    log = logging.getLogger("matplotlib")
    level = log.level
    log.setLevel(logging.ERROR)
    backend = os.environ.pop("MPLBACKEND", None)
    try:
        with _without_matplotlibrc():
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
    finally:
        log.setLevel(level)
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    return plt


@contextmanager
def _without_matplotlibrc() -> Iterator[None]:
    """matplotlib, imported without reading a settings file: as it is imported it reads the first `matplotlibrc` in
    the current folder, $MATPLOTLIBRC or the user's config folder, and one in the folder `bench --chart` ran in
    ended the command after the whole timing (round 39): a FIFO so named waited for ever, a link to /dev/zero filled
    the memory, binary bytes or `text.usetex: True` without LaTeX were internal errors, `savefig.dpi: 100000` ran out
    of memory. It is imported from graphsurgery's own folder, with MATPLOTLIBRC naming an empty file; the chart is
    drawn in matplotlib's default style too (`write_chart`), for settings read before (a --torch module that
    imported matplotlib). The folders matplotlib keeps its config and font cache in are taken where the user's
    settings put them: a relative HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME or MPLCONFIGDIR (`HOME=relative`) is made
    absolute in the folder the command runs in, not read from graphsurgery's own (round 48: matplotlib wrote
    `relative/.cache/matplotlib/fontlist-v3.11.0.json` into the installed package)."""
    if "matplotlib" in sys.modules:
        yield
        return
    given = os.environ.get("MATPLOTLIBRC")
    relative = {name: value for name in _MATPLOTLIB_FOLDERS
                if (value := os.environ.get(name)) and not os.path.isabs(value)}
    os.environ["MATPLOTLIBRC"] = os.devnull
    try:
        here = os.open(".", os.O_PATH | os.O_DIRECTORY)
    except OSError:  # the current folder was deleted: it can hold no file
        here = None
    try:
        if here is not None:
            for name, value in relative.items():
                os.environ[name] = os.path.abspath(value)
            os.chdir(Path(__file__).parent)
        yield
    finally:
        if here is not None:
            os.fchdir(here)
            os.close(here)
        os.environ.update(relative)
        if given is None:
            del os.environ["MATPLOTLIBRC"]
        else:
            os.environ["MATPLOTLIBRC"] = given


#: the variables matplotlib finds its config and cache folders by (matplotlib._get_config_or_cache_dir)
_MATPLOTLIB_FOLDERS = ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HOME")


def write_chart(result: BenchResult, path: str | Path) -> Path:
    """A horizontal bar chart of the rows (latency: model-only and end-to-end medians, whiskers to p90)."""
    plt = _pyplot()

    path = Path(path)
    rows = result.pipelines
    labels = [row["label"] + ("" if row["precision"] == row["precision_requested"] else f" [ran {row['precision']}]")
              for row in rows]
    y = np.arange(len(rows))[::-1]
    settings = result.settings
    with plt.style.context("default"):  # matplotlib's settings, not the user's (`_without_matplotlibrc`)
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
        # names are shown as they are, not as mathtext: a model file named `m$\foo$.onnx` was a ParseFatalException
        # in savefig, an internal error after the whole timing
        axes.set_yticks(y, labels, fontsize=8, parse_math=False)
        axes.margins(x=0.12)
        load = result.load_average["after"][0]
        axes.set_title(f"{Path(result.model).name} · {result.recipe} · batch {settings['batch']} · "
                       f"{settings['threads']} threads · {settings['iterations']} interleaved rounds · load {load:.1f}",
                       fontsize=8, parse_math=False)
        figure.tight_layout()
        try:  # beside the target, then renamed over it: the chart appears whole or not at all
            write_atomically(path, lambda stream: figure.savefig(stream, format=path.suffix.lower().lstrip(".")),
                             "the chart")
        finally:
            plt.close(figure)
    return path
