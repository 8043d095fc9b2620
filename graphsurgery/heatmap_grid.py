"""How each coordinate output maps to heatmap cells (or SimCC bins), measured with the recipe's own numpy twins.

A keypoint mismatch is judged on the heatmap cells its two answers fall in (`compare.HeatmapGrid`), but keypoints
may be in crop or image pixels after any chain of output steps. Decoding one-hot heatmaps with the output twins
gives that map without knowing any step, so verify measures it here, once per batch, and the comparator only
applies it. Positions chosen per axis from two vectors (SimCC, `Comparison.per_axis`) get the map to their bins,
measured with one-hot vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphsurgery.compare import HeatmapGrid
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import Recipe
from graphsurgery.steps.base import GEOMETRY, Comparison
from graphsurgery.twins import postprocess

#: A shape [N, K, H, W] of cells and the probe with one cell (x, y) set in each map: the decoded output and the
#: extra inputs it changes
OneHot = tuple[tuple[int, ...], Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]]


def heatmap_grid(recipe: Recipe, facts: ModelFacts, parts: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]],
                 wanted: dict[str, Comparison]) -> dict[str, HeatmapGrid]:
    """How each coordinate output maps to heatmap cells, measured with the recipe's own numpy twins.

    Per batch (`parts`: the decoded output, `decoded_output`, and the extra inputs its twins got, the input geometry
    among them: each batch may have its own), one-hot heatmaps of its shape with the peak in a low cell, a high
    cell and the one between (`_probe_cells`) are decoded by the output twins; two answers give the per-axis scale
    and offset, the third must agree (within 1e-4) and the scale must not vanish, else that output gets no grid.
    Single-peak maps are decoded without refinement (the neighbours tie), so no knowledge of any particular step is
    needed here. Coordinates chosen per axis get one-hot vectors in the two they name instead (`_one_hot_vectors`).
    """
    names = [name for name, c in wanted.items() if c.kind == "coordinates"]
    if not names or not parts:
        return {}
    found = [_batch_grids(recipe, facts, output, extras, names, wanted) for output, extras in parts]
    return {name: HeatmapGrid(np.concatenate([grids[name].scale for grids in found]),
                              np.concatenate([grids[name].offset for grids in found]))
            for name in names if all(name in grids for grids in found)}


def _batch_grids(recipe: Recipe, facts: ModelFacts, output: np.ndarray, extras: dict[str, np.ndarray],
                 names: list[str], wanted: dict[str, Comparison]) -> dict[str, HeatmapGrid]:
    """`heatmap_grid` for one batch: its decoded output (heatmaps [N, K, H, W]) and extra inputs."""
    axes = {wanted[name].per_axis for name in names}
    if len(axes) != 1:  # heatmap and per-axis coordinates in one recipe: no such decoder
        return {}
    [per_axis] = axes
    one_hot = _one_hot_maps(output) if per_axis is None else _one_hot_vectors(output, extras, per_axis)
    if one_hot is None:
        return {}
    shape, probe = one_hot
    n, k = shape[:2]
    low, high = _probe_cells(shape, extras.get(GEOMETRY), facts.input_size)
    cells = {"low": low, "high": high, "middle": (low + high + 1) // 2}
    decoded = {}
    for label, cell in cells.items():
        probed, changed = probe(cell)
        decoded[label] = postprocess(recipe, probed, facts, {**extras, **changed}, decoded=True)
    span = high - low
    grids = {}
    for name in names:
        first, last, middle = (np.asarray(decoded[label].get(name), np.float64) for label in cells)
        if first.shape != (n, k, 2) or last.shape != first.shape or middle.shape != first.shape:
            continue
        scale = (last - first) / np.maximum(span, 1)
        offset = first - scale * low
        if ((scale == 0) & (span > 0)).any() or not np.allclose(offset + scale * cells["middle"], middle, rtol=1e-6,
                                                                atol=1e-4):
            continue
        grids[name] = HeatmapGrid(scale, offset)
    return grids


def _one_hot_maps(output: np.ndarray) -> OneHot | None:
    """One-hot heatmaps of `output`'s shape; None for an output that holds no heatmaps."""
    if output.ndim != 4:
        return None

    def probe(cell: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        maps = np.zeros(output.shape, np.float32)
        maps[:, :, cell[1], cell[0]] = 1.0
        return maps, {}

    return output.shape, probe


def _one_hot_vectors(output: np.ndarray, extras: dict[str, np.ndarray], per_axis: tuple[str, str]) -> OneHot | None:
    """One-hot vectors in the two [N, K, L] that `per_axis` names (x, y; the output twins read them by name), as
    one map [N, K, Ly, Lx] of bins; None where they are not there."""
    x, y = (extras.get(name) for name in per_axis)
    if x is None or y is None or x.ndim != 3 or y.shape[:2] != x.shape[:2] or y.ndim != 3:
        return None

    def probe(cell: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        vectors = {}
        for name, vector, at in ((per_axis[0], x, cell[0]), (per_axis[1], y, cell[1])):
            vectors[name] = np.zeros(vector.shape, np.float32)
            vectors[name][:, :, at] = 1.0
        return output, vectors

    return (*x.shape[:2], y.shape[2], x.shape[2]), probe


def _probe_cells(shape: tuple[int, ...], geometry: np.ndarray | None, input_size: tuple[int, int] | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest heatmap cells (x, y) to probe: the corners of the map, or, with the input geometry,
    of the cells that see the caller's image (its place in the model input read as the same fraction of the map;
    two cells in from its far edge, which UDP's wider cells reach sooner): a step that maps back to the caller's
    pixels marks the letterbox padding invalid (to_image mode image), which no affine map of the cells fits. The
    corners when fewer than three cells on an axis see the image. Without the geometry, two cells in from each edge
    (round 31): UDP reads a border cell's missing neighbour as the cell itself (edge padding), so a one-hot peak in
    a corner was refined off its cell, no grid fitted, and every UDP mismatch counted as real — an all-zero or NaN
    map, whose refinement ONNX leaves to the runtime, failed a right patch on OpenVINO."""
    h, w = shape[2:]
    corner = np.array([w - 1, h - 1])
    if geometry is None or input_size is None:
        inside = np.array([2, 2]), corner - 2
        return inside if (inside[1] - inside[0] >= 2).all() else (np.zeros(2, np.int64), corner)
    scale, offset, size = (np.asarray(geometry[start:start + 2], np.float64) for start in (0, 2, 4))
    cells_per_pixel = np.array([w, h]) / np.array(input_size)
    low = np.clip(np.ceil(offset * cells_per_pixel), 0, corner).astype(np.int64)
    high = np.clip(np.floor((offset + scale * size) * cells_per_pixel) - 2, 0, corner).astype(np.int64)
    return (low, high) if (high - low >= 2).all() else (np.zeros(2, np.int64), corner)
