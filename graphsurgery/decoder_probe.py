"""Verify's decoder probe: the patched graph's output steps fed a network output made to reach their decisions.

Samples through a plain network rarely reach the decisions an output step makes (round 42): a stand-in pose network
never gave a map whose maximum is <= 0, where the HRNet authors' (0, 0) and mmpose's (−1, −1) differ, and a
detector fed noise found 5 objects in 8 images, none near a threshold, so an nms patched with a score threshold of
0.3 or an IoU threshold of 0.75 for 0.25 and 0.7, or without best_class_only or per_class, passed. So the patched
graph is cut after the network (`cutting.cut_between`, from the caller's input and the network's output), and its
output steps run on one sample's network output rewritten to meet those decisions (`probe_output`; a detector
head's rewrite is `detector_probe`'s), next to the output twins on the same tensor. On the first backend only: the
probe proves what the recipe's parameters decide, and the backends' agreement is proven on the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.cutting import cut_between, declared_type
from graphsurgery.detector_probe import crowded_head
from graphsurgery.heatmap_grid import heatmap_grid
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import Recipe
from graphsurgery.runners import Runner, open_runner
from graphsurgery.stability import Wobbles
from graphsurgery.steps.base import GEOMETRY, Comparison
from graphsurgery.steps.classify import Softmax, TopK
from graphsurgery.steps.dark import DarkRefine, UdpRefine
from graphsurgery.steps.detect import DflBoxes, YoloBoxes
from graphsurgery.steps.nms import Nms
from graphsurgery.steps.output import HeatmapArgmax, QuarterOffset
from graphsurgery.steps.to_image import ToImage
from graphsurgery.steps.topdown import FlipAverage
from graphsurgery.twins import (
    FLOAT_QUIET,
    comparisons,
    concat,
    decision_inputs,
    decoded_output,
    output_extras,
    postprocess,
    with_geometry,
)

#: Steps after heatmap_argmax whose answers on maps of maximum <= 0 are defined
EXACT_ON_INVALID = (HeatmapArgmax, QuarterOffset, ToImage)
#: Refinements that rescale each map by its maximum: a map lowered to a maximum of exactly 0 and flat there is
#: 0 / 0, each runtime's own; lowered to −0.5 every map is defined (blurred, rescaled and clamped, its log is one
#: constant: the joint does not move). Unprobed, a UDP patch marking invalid joints (0, 0) for mmpose's (−1, −1)
#: passed (round 47). Their valid joints are drawn (`LADDER`), not the network's: a valid joint's refinement on a
#: network's map differs between the graph and the twin by float rounding (0.0011 px, UDP on a SimpleBaseline); on a
#: Gaussian it is well conditioned. What rounding moves is allowed on the probe as on the samples (`Probe.wobbles`).
RESCALING = (DarkRefine, UdpRefine)
#: The Gaussians drawn for a refinement's valid joints (two of every three joints, all but every third from the
#: second, in this order, repeated): their peaks and where they lie. Just above UDP's upper clip (50) with the cells
#: around it below it, just below it, just above UDP's lower clip (1e-3), an ordinary peak in the last row and column,
#: just above DARK's floor (1e-10), one whose every cell is clipped, one in the first row and column, and one in the
#: second and in the one before the last (the first cells a refinement reaches). Random crops never reach a bound:
#: UDP's clip moved from 50 to 55 passed `verify --random 4` (round 51); nor a peak in the last rows: a heatmap_argmax
#: whose last two row numbers were swapped passed a UDP recipe's verify (round 52). Round 58: every third joint of 17
#: drew the first five only, and a DARK patch refining the second and the one before the last column too PASSed.
LADDER = ((51.0, "middle"), (47.0, "middle"), (1.1e-3, "middle"), (1.0, "last"), (1.1e-10, "middle"),
          (1e4, "middle"), (1.0, "first"), (1.0, "second"), (1.0, "second last"))
#: Where each Gaussian's centre lies from its cell, in cells (x, y): off the grid (and towards the middle of the map
#: from a corner), so that the refinement moves every joint and a wrong one moves it elsewhere
OFF_GRID = (0.3, -0.2)


@dataclass
class Probe:
    """The probe network output as the decoding steps read it (`twins.decoded_output`), the extra inputs its twins
    read, their answers and the cut graph's on `backend` (by output name)."""

    output: np.ndarray
    extras: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    backend: str
    answers: dict[str, np.ndarray]

    def grids(self, recipe: Recipe, facts: ModelFacts, wanted: dict[str, Comparison]) -> dict:
        return heatmap_grid(recipe, facts, [(self.output, self.extras)], wanted)

    def decided(self, recipe: Recipe, facts: ModelFacts) -> dict[str, dict[str, np.ndarray]]:
        return decision_inputs(recipe, self.output, facts, self.extras)

    def wobbles(self, recipe: Recipe, facts: ModelFacts, wanted: dict[str, Comparison], tie: Comparison
                ) -> dict[str, Callable[[], np.ndarray | None]] | None:
        """For a refinement (`RESCALING`), how far float rounding moves each position of the twins' answer
        (`stability.Wobbles`, as the samples allow): an invalid joint after a drawn one reads that map's bottom
        corners (UDP's wrapped index), and where a drawn peak lies there its step is ill-conditioned (graph and twin
        0.69 cells apart on 64 × 48 maps). None for the other steps, whose probe is compared as it is."""
        steps = recipe.output.steps if recipe.output else ()
        if not any(isinstance(step, RESCALING) for step in steps):
            return None
        positions = {name: c.kind for name, c in wanted.items() if c.kind in ("coordinates", "indices")}
        return Wobbles(recipe, facts, {"probe": [(self.output, self.extras)]}, positions, tie).of("probe", False)


def probe_output(recipe: Recipe, facts: ModelFacts, output: np.ndarray, seed: int
                 ) -> tuple[np.ndarray | None, list[str]]:
    """`output` (one sample's network output) rewritten to reach the first output step's decisions, or None when
    no rewrite is known for the recipe's output steps or none can be made; and the notes on what the rewrite left
    out (`detector_probe`). Written in float32 and given in the output's own float type: round 56, a float16 or
    float64 head (exported half, or ending in a Cast) had no probe at all, and a patch whose nms kept boxes below
    its score threshold or suppressed at another IoU PASSed."""
    if output.dtype.kind != "f":
        return None, []
    probe, notes = _rewritten(recipe, facts, output.astype(np.float32), seed)
    return (None if probe is None else probe.astype(output.dtype)), notes


def _rewritten(recipe: Recipe, facts: ModelFacts, output: np.ndarray, seed: int
               ) -> tuple[np.ndarray | None, list[str]]:
    """`probe_output` of a float32 `output`."""
    steps = recipe.output.steps if recipe.output else ()
    if not steps:
        return None, []
    if isinstance(steps[0], FlipAverage) and output.ndim == 4:  # `output`: the averaged maps (`decoded_output`)
        maps = _probed_heatmaps(steps[1:], output)
        return (None if maps is None else np.concatenate([maps, np.zeros_like(maps)])), []
    if (maps := _probed_heatmaps(steps, output)) is not None:
        return maps, []
    if isinstance(steps[0], (Softmax, TopK)):
        return _ranked_rows(output, steps), []
    nms = next((step for step in steps if isinstance(step, Nms)), None)
    if isinstance(steps[0], (YoloBoxes, DflBoxes)) and nms and output.ndim == 3:
        return crowded_head(steps[0], nms, facts, output, np.random.default_rng(seed))
    return None, []


def _probed_heatmaps(steps, maps: np.ndarray) -> np.ndarray | None:
    """`_probed_joints` of `maps` where the `steps` start with heatmap_argmax and decide exactly (or refine); None
    otherwise. After a flip_average its flipped half is zero, so the maps it averages are these halved, exactly: the
    same argmax, signs and ties. Round 58: a flip-test recipe had no probe at all, and a patch calling a joint valid
    above 1e-3 for above 0 PASSed."""
    if steps and isinstance(steps[0], HeatmapArgmax) and maps.ndim == 4 and all(
            isinstance(s, EXACT_ON_INVALID + RESCALING) for s in steps):
        return _probed_joints(maps, refined=any(isinstance(s, RESCALING) for s in steps))
    return None


def read_steps(recipe: Recipe) -> tuple:
    """The output steps that decide on the maps: those after a leading flip_average (on a probe its flipped half is
    zero: `_probed_heatmaps`)."""
    steps = tuple(recipe.output.steps) if recipe.output else ()
    return steps[1:] if steps and isinstance(steps[0], FlipAverage) else steps


def _ranked_rows(output: np.ndarray, steps) -> np.ndarray | None:
    """A classifier's output rewritten row by row (each vector of class scores) to a background of −1 and the
    top-k's peaks (k = 1 without topk) at heights k + 3, k + 2, …, 4 on classes that differ from row to row: the
    last, the first, the second, the one before the last, then spread over the rest. Random samples give a trained text
    recogniser's blank (class 0) at every timestep: a rapidocr_rec patch whose top-k position table was zeroed passed
    (round 52). None where the classes do not lie along the last axis (nor [N, C, 1, …, 1])."""
    singleton_tail = output.ndim > 2 and all(d == 1 for d in output.shape[2:])
    axis = 1 if singleton_tail else output.ndim - 1
    if output.ndim < 2 or any(isinstance(step, Softmax) and step.axis % output.ndim != axis for step in steps):
        return None
    classes = output.shape[axis]
    k = min(next((step.k for step in steps if isinstance(step, TopK)), 1), classes)
    picks = [classes - 1, 0, 1, classes - 2, *(classes * i // 8 for i in range(1, 8)), *range(classes)]
    order = list(dict.fromkeys(pick % classes for pick in picks))  # of one class, 1 and −1 are class 0 (round 54:
    # an IndexError, exit 3, where its second row read class 1)
    rows = np.moveaxis(np.full(output.shape, -1.0, np.float32), axis, -1)
    flat = rows.reshape(-1, classes)
    for row in range(len(flat)):
        for rank in range(k):
            flat[row, order[(row * k + rank) % len(order)]] = float(k + 3 - rank)
    return np.ascontiguousarray(np.moveaxis(flat.reshape(rows.shape), -1, axis))


def _probed_joints(maps: np.ndarray, refined: bool = False) -> np.ndarray:
    """Every third joint's maps lowered to a maximum of exactly 0, every third from the second to −0.5: the joints
    heatmap_argmax marks invalid (the authors' (0, 0), mmpose's (−1, −1)). When `refined` (`RESCALING`) every third
    joint from the second is lowered to −0.5, and the others' maps are Gaussians peaking at `LADDER`'s values. An
    invalid joint reads the cells of the joint before it (UDP, as mmpose's index does): a drawn one. A map holding
    inf becomes NaN there, as the twins compute it: numpy's "invalid value" warning was noise on stderr of a verify
    that passed (round 47)."""
    probe = maps.copy()
    peaks = probe.max(axis=(2, 3), keepdims=True)
    with np.errstate(**FLOAT_QUIET):
        if refined:
            probe -= peaks + np.float32(0.5)
            drawn = (np.arange(probe.shape[0] * probe.shape[1]) % 3 != 1).reshape(probe.shape[:2])
            for index, (n, k) in enumerate(zip(*np.nonzero(drawn))):
                peak, where = LADDER[index % len(LADDER)]
                probe[n, k] = np.float32(peak) * _gaussian(*probe.shape[2:], where)
        else:
            probe[:, 1::3] -= peaks[:, 1::3]
            probe[:, 2::3] -= peaks[:, 2::3] + np.float32(0.5)
    return probe


def _gaussian(height: int, width: int, where: str) -> np.ndarray:
    """A map of σ 2 (the authors' targets) peaking at the middle cell, the last (bottom right), the first (top
    left), the second or the one before the last, its centre `OFF_GRID` from it towards the map's middle; its largest
    cell exactly 1."""
    y, x = np.mgrid[0:height, 0:width]
    away_x, away_y = abs(OFF_GRID[0]), abs(OFF_GRID[1])
    centre_x, centre_y = {"middle": (width // 2 + OFF_GRID[0], height // 2 + OFF_GRID[1]),
                          "last": (width - 1 - away_x, height - 1 - away_y), "first": (away_x, away_y),
                          "second": (1 + away_x, 1 + away_y),
                          "second last": (width - 2 - away_x, height - 2 - away_y)}[where]
    drawn = np.exp(-((x - centre_x) ** 2 + (y - centre_y) ** 2) / 8.0)
    return (drawn / drawn.max()).astype(np.float32)


class ProbeCuts:
    """The patched graph as one verify's probes run it: cut after the network (`cut_between`, from the caller's
    inputs and the network outputs to the recipe's outputs) and opened on the probing backend once per way of
    cutting it, until the verify ends. The decoder probe, its cell probes and those of each other caller size cut
    the same graph, and each cut, saved and opened its own: 93 cuts and ONNX Runtime sessions in one verify of a
    letterbox recipe, half its time, and an OpenVINO compile each where OpenVINO probed."""

    def __init__(self, recipe: Recipe, proto: onnx.ModelProto | None, backend: str, folder: Path):
        self.recipe, self.proto, self.backend, self.folder = recipe, proto, backend, folder
        self._cuts: dict[tuple, tuple[list[str], Path] | None] = {}
        self._runners: dict[Path, Runner] = {}
        self._opened = ExitStack()

    def __enter__(self) -> ProbeCuts:
        return self

    def __exit__(self, *exc_info) -> None:
        self._opened.close()

    def cut(self, feeds: dict[str, np.ndarray], starts: dict[str, np.ndarray]) -> tuple[list[str], Path] | None:
        """(the caller's inputs it reads, its path) of the graph cut from `feeds` (those the patched model takes)
        and the network outputs `starts` (by name, the values they will be fed: a start the model declares nowhere
        takes their type and shape); None when it cannot be cut so: an IR, an answer or a start the patched model
        does not make (the comparison of the samples fails on it), or output steps' constants in external data (a
        model over 2 GB saves them beside it too: the cut, saved elsewhere, would not find them)."""
        key = (tuple(sorted(feeds)), tuple((name, value.dtype.str, value.shape) for name, value in starts.items()))
        if key not in self._cuts:
            self._cuts[key] = self._cut(feeds, starts)
        return self._cuts[key]

    def _cut(self, feeds: dict[str, np.ndarray], starts: dict[str, np.ndarray]) -> tuple[list[str], Path] | None:
        if self.proto is None:  # an IR's: read by OpenVINO alone
            return None
        names = self.recipe.output.output_names().values()
        made = {name for node in self.proto.graph.node for name in node.output}
        declared = {value.name for value in self.proto.graph.output}
        if not all(name in made for name in starts) or not all(name in made and name in declared for name in names):
            return None
        inputs = [value.name for value in self.proto.graph.input if value.name in feeds]
        folder = self.folder / f"probe_cut_{len(self._cuts)}"  # a folder each: a runner refuses a model file
        folder.mkdir()  # rewritten in place after it read it
        path = folder / "decoder_probe.onnx"
        return (inputs, path) if cut_between(self.proto, inputs, starts, list(names), path) else None

    def unprobed(self) -> str:
        """The note where `cut` gave None: said (round 70: a graph that could not be cut left no probe, in silence;
        round 88: a patched IR's and a SimCC graph's still did, and wrong patches PASSed on them)."""
        why = ("a patched IR cannot be cut: verify the .onnx it was converted from to probe them" if self.proto is None
               else "the patched graph cannot be cut at the network output: an answer it does not make or that has no "
                    "type, constants in external data, or a step that reads more than the caller's inputs and the "
                    "network output")
        return f"the output steps were not probed ({why}): only the samples were compared"

    def run(self, path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The answers of the cut at `path` to `feeds`, on the runner opened for it the first time."""
        if path not in self._runners:
            self._runners[path] = self._opened.enter_context(open_runner(self.backend, path))
        return self._runners[path](feeds)


def joined(probes: list[Probe]) -> Probe:
    """Probes of one backend and one caller size as one, sample after sample (the decoder probe and its cell probes,
    SimCC's pairs). The input geometry is one per caller size, not per sample: it is kept once, not joined."""
    if len(probes) == 1:
        return probes[0]
    extras = concat([probe.extras for probe in probes])
    if GEOMETRY in extras:
        extras[GEOMETRY] = probes[0].extras[GEOMETRY]
    return Probe(np.concatenate([probe.output for probe in probes]), extras,
                 concat([probe.expected for probe in probes]), probes[0].backend,
                 concat([probe.answers for probe in probes]))


def run_probe(recipe: Recipe, facts: ModelFacts, cuts: ProbeCuts, output: np.ndarray, caller: str,
              feeds: dict[str, np.ndarray], seed: int) -> tuple[Probe | None, list[str]]:
    """The probe of one batch, run on `cuts` (the patched model as verify read it): `output` its network output
    (one sample, or a model's static batch), `feeds` the caller's input (`caller`) and extra inputs for it, by the
    patched model's input names. None when the recipe has no probe, or the patched graph cannot be cut at the
    network's output (an IR, a graph without a tensor of that name, output steps whose constants are external data);
    with the notes on what the probe left out (`probe_output`)."""
    probe, notes = probe_output(recipe, facts, output, seed)
    if probe is None:
        return None, notes
    cut = cuts.cut(feeds, {facts.output_name: probe})
    if cut is None:
        return None, [*notes, cuts.unprobed()]
    inputs, path = cut
    probe = probe.astype(declared_type(path, facts.output_name))  # the head's own type: after flip_average the
    # maps it reads are float32
    shape = feeds[caller].shape
    extras = {name: value for name, value in feeds.items() if name != caller}
    extras = output_extras(recipe, facts, extras, shape, {facts.output_name: probe})
    expected = postprocess(recipe, probe, facts, extras)
    if not _holds_detections(recipe, facts, expected):
        return None, [*notes, "decoder probe skipped: the twins find no detection on it (the head has too few "
                              "anchors for its pairs, or their boxes lie in the letterbox padding), so it could prove "
                              "nothing"]
    answers = cuts.run(path, {**{name: feeds[name] for name in inputs}, facts.output_name: probe})
    return Probe(decoded_output(recipe, probe, facts, extras), extras, expected, cuts.backend, answers), notes


def _holds_detections(recipe: Recipe, facts: ModelFacts, expected: dict[str, np.ndarray]) -> bool:
    """Whether the twins' answers on a probe hold a detection, where the recipe outputs detections. Round 54: a head
    of 1 anchor (no pair), or of 3 whose one pair lay in the letterbox padding of the sample's image, made a probe of
    none, which proves nothing (`compare_detections`), and a right patch failed on it."""
    classes = [name for name, comparison in comparisons(recipe, facts).items()
               if comparison.kind == "detections" and comparison.part == "classes" and name in expected]
    return all((np.asarray(expected[name]) >= 0).any() for name in classes)


#: What the cell probes put on the joints `_probed_joints` leaves as they are (every third from the first), in
#: the map's own (row, column) cells or as a peak value: the first maximum of a flat map, of two tied in a row and of
#: two tied in a column; a clear peak in each corner, next to them and on each edge's middle; clear peaks just
#: above 0, which decide a joint valid; and two tied in the last two columns of the middle row (round 58: a table of
#: positions whose last two columns were swapped finds the peak through the same table, and differs on that tie
#: alone); a map holding one NaN, whose score is NaN (round 90: a patch scoring it 0 passed; heatmap_argmax finds NaN
#: with IsNaN, which no runtime chooses).
CELL_CASES: tuple[tuple[str, object], ...] = (
    ("flat", None), ("tied in a row", ((2, 3), (2, -2))), ("tied in a column", ((-3, 1), (1, 4))),
    ("cell", (0, 0)), ("cell", (0, -1)), ("cell", (-1, 0)), ("cell", (-1, -1)), ("cell", (1, 1)), ("cell", (-2, -2)),
    ("cell", (-1, -2)), ("cell", (0, "middle")), ("cell", ("middle", -1)),
    ("peak", 1e-6), ("peak", 1e-3), ("peak", 0.05), ("peak", 0.5),
    ("tied in a row", (("middle", -2), ("middle", -1))), ("peak", np.nan))
#: At most this many cell probes (one cut-graph run each): a model of few joints reaches fewer cases
CELL_PROBES = 4


def cell_probes(maps: np.ndarray, edges: Sequence[tuple[int, int]] = ()) -> list[np.ndarray]:
    """Probe outputs for output steps that decide exactly (round 52): one sample's maps [1|B, K, H, W] where each
    joint `_probed_joints` leaves alone gets a case of `CELL_CASES` (the others are lowered there as in the first
    probe), then a clear peak on each cell of `edges` (`image_edge_cells`), in probes of their own, its four
    neighbours level (a quarter offset moved a keypoint off the edge cell, so a boundary moved 0.05 caller px PASSed
    a quarter_offset recipe where the same recipe without it FAILed). Samples through
    a network rarely reach them: a patch whose validity threshold was 1e-3 or 0.5 for 0, whose table of flat
    positions had two cells swapped, or which took the last of tied maxima, passed. Every other value lies at least
    1 below the case's peak. Written in float32 and given in the maps' own float type, as `probe_output`'s: round 90,
    float16 and float64 maps had none, and a patch calling a joint valid above 1e-3 for above 0 PASSed."""
    if maps.ndim != 4 or maps.dtype.kind != "f" or 0 in maps.shape:
        return []
    own, maps = maps.dtype, maps.astype(np.float32)
    _, joints, h, w = maps.shape
    free = list(range(0, joints, 3))
    cases = (*CELL_CASES[:CELL_PROBES * len(free)], *(("edge", cell) for cell in edges))
    probes = []
    for start in range(0, len(cases), len(free)):
        probe = _lowered(maps, (2, 3))
        for joint, (kind, where) in zip(free, cases[start:start + len(free)]):
            if kind == "flat":
                probe[:, joint] = 1.0
            elif kind == "peak":
                probe[:, joint, h // 2, w // 3] = where
            else:
                for row, column in (where if kind not in ("cell", "edge") else (where,)):
                    probe[:, joint, h // 2 if row == "middle" else row % h,
                          w // 2 if column == "middle" else column % w] = 2.0
            if kind == "edge":  # its neighbours level: a refinement (quarter_offset) leaves the keypoint on the cell
                row, column = where
                probe[:, joint, max(row - 1, 0):row + 2, column] = 1.0
                probe[:, joint, row, max(column - 1, 0):column + 2] = 1.0
                probe[:, joint, row, column] = 2.0
        probes.append(probe.astype(own))
    return probes


def image_edge_cells(recipe: Recipe, facts: ModelFacts, caller_shape: tuple[int, ...], maps: np.ndarray
                     ) -> list[tuple[int, int]]:
    """The cells of `maps` [.., H, W] next to the edges of a caller image of `caller_shape`, where the output steps
    map keypoints back through it (`ToImage.edge_cells`); none for other recipes."""
    steps = [step for step in (recipe.output.steps if recipe.output else ()) if isinstance(step, ToImage)]
    if not steps or maps.ndim != 4:
        return []
    geometry = with_geometry(recipe, facts, {}, caller_shape).get(GEOMETRY)
    return [] if geometry is None else steps[-1].edge_cells(facts, maps.shape[2:], geometry)


def _lowered(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """`values` (float32) less their finite maximum along `axes`, bounded to [−1001, −1]: every value at least 1
    below a case's peak, NaN and +inf at −1, −inf at −2. In numpy's quiet mode and without nanmax, whose all-NaN
    warning was noise on stderr (round 47's rule)."""
    with np.errstate(**FLOAT_QUIET):
        peak = np.where(np.isnan(values), -np.inf, values).max(axis=axes, keepdims=True)
        return (np.nan_to_num(values - peak, nan=0.0, neginf=-1.0, posinf=0.0).clip(-1e3, 0)
                - np.float32(1)).astype(np.float32)


#: What the SimCC probe puts on a joint (cycled over the joints, `SIMCC_PROBES` vector pairs at most): where x's and
#: y's peaks lie (a position, "flat" for a vector of one value, "tied" for two maxima) and their heights. Every other
#: value lies at least 1 below. Peaks at either end and next to them, flat and tied vectors (numpy's first maximum),
#: maxima of exactly 0 and below (mmpose's (−1, −1)), just above 0, and x's above, below and equal to y's (the score
#: is the smaller), and an x of NaN (its score NaN: round 90, a patch scoring it 0 passed).
SIMCC_CASES: tuple[tuple[object, object, float, float], ...] = (
    (0, -1, 2.0, 2.0), (-1, 0, 2.0, 2.0), (1, -2, 2.0, 2.0), ("flat", "flat", 1.0, 1.0), ("tied", "tied", 2.0, 2.0),
    ("middle", "middle", 0.0, 0.0), ("middle", "middle", -0.5, 0.5), ("middle", "middle", 0.5, 0.0),
    ("middle", "middle", 0.3, 0.2), ("middle", "middle", 0.2, 0.3), ("middle", "middle", 0.4, 0.4),
    ("middle", "middle", 1e-6, 1.0), ("middle", "middle", 1e-3, 1.0), ("middle", "middle", 0.05, 1.0),
    ("middle", "middle", 1.0, 0.5), (2, 3, 2.0, 2.0), ("middle", "middle", np.nan, 1.0))
SIMCC_PROBES = 4


def simcc_vectors(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """One sample's SimCC vectors [B, K, Lx] and [B, K, Ly] rewritten, joint by joint, to the cases of
    `SIMCC_CASES` (round 52: SimCC had no probe; a patch calling a joint valid above 1 for above 0, or whose
    table of positions had its first two swapped, passed)."""
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2] or 0 in x.shape or 0 in y.shape:
        return []

    def put(v: np.ndarray, joint: int, where: object, peak: float) -> None:
        length = v.shape[2]
        if where == "flat":
            v[:, joint] = peak
            return
        v[:, joint] = np.minimum(v[:, joint], peak - 1)
        spots = ((length // 3, 2 * length // 3) if where == "tied" else
                 (length // 2,) if where == "middle" else (int(where) % length,))
        v[:, joint, list(spots)] = peak

    joints = x.shape[1]
    pairs = []
    for start in range(0, min(len(SIMCC_CASES), SIMCC_PROBES * joints), joints):
        px, py = _lowered(x, (2,)), _lowered(y, (2,))
        for joint, (at_x, at_y, peak_x, peak_y) in zip(range(joints), SIMCC_CASES[start:start + joints]):
            put(px, joint, at_x, peak_x)
            put(py, joint, at_y, peak_y)
        pairs.append((px, py))
    return pairs


def run_simcc_probe(recipe: Recipe, facts: ModelFacts, cuts: ProbeCuts, outputs: dict[str, np.ndarray], caller: str,
                    feeds: dict[str, np.ndarray]) -> tuple[Probe | None, list[str]]:
    """The decoder probe of a `simcc_decode` recipe: the patched graph cut at the network's two SimCC outputs
    (`cuts`), run on `simcc_vectors` of one batch's (`outputs`, by name) next to the output twins; the probes joined
    as one (its `output`: the x vectors). None when the recipe does not start with simcc_decode or the graph cannot
    be cut (as `run_probe`, with its note). The vectors are written in float32 and given in the heads' own float
    type (round 88: float16 and float64 heads had no probe, in silence, and wrong patches PASSed; as `probe_output`)."""
    from graphsurgery.steps.simcc import SimccDecode

    steps = recipe.output.steps if recipe.output else ()
    if not steps or not isinstance(steps[0], SimccDecode):
        return None, []
    step, batch = steps[0], feeds[caller].shape[0]
    if not all(name in outputs and outputs[name].dtype.kind == "f" for name in step.reads):
        return None, []
    pairs = [(px.astype(outputs[step.x].dtype), py.astype(outputs[step.y].dtype)) for px, py in simcc_vectors(
        outputs[step.x][:batch].astype(np.float32), outputs[step.y][:batch].astype(np.float32))]
    if not pairs:
        return None, []
    cut = cuts.cut(feeds, {step.x: pairs[0][0], step.y: pairs[0][1]})
    if cut is None:
        return None, [cuts.unprobed()]
    inputs, path = cut
    shape = feeds[caller].shape
    extras = {name: value for name, value in feeds.items() if name != caller}
    types, probes = {name: declared_type(path, name) for name in (step.x, step.y)}, []
    for px, py in pairs:
        vectors = {step.x: px.astype(types[step.x]), step.y: py.astype(types[step.y])}
        twin_extras = output_extras(recipe, facts, extras, shape, vectors)
        answers = cuts.run(path, {**{name: feeds[name] for name in inputs}, **vectors})
        probes.append(Probe(vectors[facts.output_name], twin_extras,
                            postprocess(recipe, vectors[facts.output_name], facts, twin_extras), cuts.backend, answers))
    return joined(probes), []
