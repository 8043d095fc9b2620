"""Verify's decoder probe: the patched graph's output steps fed a network output made to reach their decisions.

Samples through a plain network rarely reach the decisions an output step makes (round 42): a stand-in pose network
never gave a map whose maximum is <= 0, where the HRNet authors' (0, 0) and mmpose's (−1, −1) differ, and a
detector fed noise found 5 objects in 8 images, none near a threshold, so an nms patched with a score threshold of
0.3 or an IoU threshold of 0.75 for 0.25 and 0.7, or without best_class_only or per_class, passed. So the patched
graph is cut after the network (`onnx.utils.Extractor`, from the caller's input and the network's output), and its
output steps run on one sample's network output rewritten to meet those decisions (`probe_output`; a detector
head's rewrite is `detector_probe`'s), next to the output twins on the same tensor. On the first backend only: the
probe proves what the recipe's parameters decide, and the backends' agreement is proven on the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data
from onnx.utils import Extractor

from graphsurgery.detector_probe import crowded_head
from graphsurgery.heatmap_grid import heatmap_grid
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import Recipe
from graphsurgery.runners import open_runner
from graphsurgery.steps.base import Comparison
from graphsurgery.steps.dark import DarkRefine, UdpRefine
from graphsurgery.steps.detect import DflBoxes, YoloBoxes
from graphsurgery.steps.nms import Nms
from graphsurgery.steps.output import HeatmapArgmax, QuarterOffset
from graphsurgery.steps.to_image import ToImage
from graphsurgery.twins import FLOAT_QUIET, decision_inputs, output_extras, postprocess

#: Steps after heatmap_argmax whose answers on maps of maximum <= 0 are defined
EXACT_ON_INVALID = (HeatmapArgmax, QuarterOffset, ToImage)
#: Refinements that rescale each map by its maximum: a map lowered to a maximum of exactly 0 and flat there is
#: 0 / 0, each runtime's own; lowered to −0.5 every map is defined (blurred, rescaled and clamped, its log is one
#: constant: the joint does not move). Unprobed, a UDP patch marking invalid joints (0, 0) for mmpose's (−1, −1)
#: passed (round 47). Their valid joints are drawn (`LADDER`), not the network's: a valid joint's refinement on a
#: network's map differs between the graph and the twin by float rounding (0.0011 px, UDP on a SimpleBaseline), which
#: the samples allow for (`Wobbles`); on a Gaussian it is well conditioned.
RESCALING = (DarkRefine, UdpRefine)
#: Peaks of the Gaussians drawn for a refinement's valid joints (every third joint from the third, in this order,
#: repeated): just above UDP's upper clip (50) with the cells around it below it, just below it, just above UDP's
#: lower clip (1e-3) and DARK's floor (1e-10), an ordinary peak, and one whose every cell is clipped. Random crops
#: never reach a bound: UDP's clip moved from 50 to 55 passed `verify --random 4` (round 51).
LADDER = (51.0, 47.0, 1.1e-3, 1.1e-10, 1.0, 1e4)
#: Where each Gaussian's centre lies from its map's middle cell, in cells (x, y): off the grid, so that the
#: refinement moves every joint and a wrong one moves it elsewhere
OFF_GRID = (0.3, -0.2)


@dataclass
class Probe:
    """The probe network output, the extra inputs its twins read, their answers and the cut graph's on `backend`
    (by output name)."""

    output: np.ndarray
    extras: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    backend: str
    answers: dict[str, np.ndarray]

    def grids(self, recipe: Recipe, facts: ModelFacts, wanted: dict[str, Comparison]) -> dict:
        return heatmap_grid(recipe, facts, [(self.output, self.extras)], wanted)

    def decided(self, recipe: Recipe, facts: ModelFacts) -> dict[str, dict[str, np.ndarray]]:
        return decision_inputs(recipe, self.output, facts, self.extras)


def probe_output(recipe: Recipe, facts: ModelFacts, output: np.ndarray, seed: int
                 ) -> tuple[np.ndarray | None, list[str]]:
    """`output` (one sample's network output) rewritten to reach the first output step's decisions, or None when
    no rewrite is known for the recipe's output steps or none can be made; and the notes on what the rewrite left
    out (`detector_probe`)."""
    steps = recipe.output.steps if recipe.output else ()
    if not steps or output.dtype != np.float32:
        return None, []
    if isinstance(steps[0], HeatmapArgmax) and output.ndim == 4 and all(isinstance(s, EXACT_ON_INVALID + RESCALING)
                                                                         for s in steps):
        return _probed_joints(output, refined=any(isinstance(s, RESCALING) for s in steps)), []
    nms = next((step for step in steps if isinstance(step, Nms)), None)
    if isinstance(steps[0], (YoloBoxes, DflBoxes)) and nms and output.ndim == 3:
        return crowded_head(steps[0], nms, facts, output, np.random.default_rng(seed))
    return None, []


def _declared_as(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    """The cut graph's input for the network output, where the patched model declares it nowhere: a model re-saved
    by a tool that drops value_info (or whose network output is no longer a graph output) was an internal error,
    "names were not found in value_infos" (round 49). Its type and size are the probe's, which is fed to it."""
    return onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype),
                                              list(value.shape))


def _probed_joints(maps: np.ndarray, refined: bool = False) -> np.ndarray:
    """Every third joint's maps lowered to a maximum of exactly 0, every third from the second to −0.5: the joints
    heatmap_argmax marks invalid (the authors' (0, 0), mmpose's (−1, −1)). When `refined` (`RESCALING`) every joint
    is lowered to −0.5 but every third from the third, whose maps are Gaussians peaking at `LADDER`'s values. An
    invalid joint reads the cells of the joint before it (UDP, as mmpose's index does): two of every three read a
    lowered map. A map holding inf becomes NaN there, as the twins compute it: numpy's "invalid value" warning was
    noise on stderr of a verify that passed (round 47)."""
    probe = maps.copy()
    peaks = probe.max(axis=(2, 3), keepdims=True)
    with np.errstate(**FLOAT_QUIET):
        if refined:
            probe -= peaks + np.float32(0.5)
            drawn = (np.arange(probe.shape[0] * probe.shape[1]) % 3 == 2).reshape(probe.shape[:2])
            heights = np.resize(np.array(LADDER, np.float32), int(drawn.sum()))
            probe[drawn] = heights[:, None, None] * _gaussian(*probe.shape[2:])
        else:
            probe[:, 1::3] -= peaks[:, 1::3]
            probe[:, 2::3] -= peaks[:, 2::3] + np.float32(0.5)
    return probe


def _gaussian(height: int, width: int) -> np.ndarray:
    """A map of σ 2 (the authors' targets) centred `OFF_GRID` from the middle cell, its largest cell exactly 1."""
    y, x = np.mgrid[0:height, 0:width]
    centre_x, centre_y = width // 2 + OFF_GRID[0], height // 2 + OFF_GRID[1]
    drawn = np.exp(-((x - centre_x) ** 2 + (y - centre_y) ** 2) / 8.0)
    return (drawn / drawn.max()).astype(np.float32)


def run_probe(recipe: Recipe, facts: ModelFacts, proto: onnx.ModelProto | None, backend: str, output: np.ndarray,
              caller: str, feeds: dict[str, np.ndarray], folder: Path, seed: int) -> tuple[Probe | None, list[str]]:
    """The probe of one batch: `proto` the patched model as verify read it (None for an IR), `output` its network
    output (one sample, or a model's static batch), `feeds` the caller's input (`caller`) and extra inputs for it,
    by the patched model's input names. None when the recipe has no probe, or the patched
    graph cannot be cut at the network's output (an IR, a graph without a tensor of that name, output steps whose
    constants are external data); with the notes on what the probe left out (`probe_output`)."""
    probe, notes = probe_output(recipe, facts, output, seed)
    if probe is None or proto is None:
        return None, notes
    names = recipe.output.output_names().values()
    made = {name for node in proto.graph.node for name in node.output}
    declared = {value.name for value in proto.graph.output}
    if facts.output_name not in made or not all(name in made and name in declared for name in names):
        return None, notes  # an answer the patched model does not give: the comparison of the samples fails on it
    inputs = [value.name for value in proto.graph.input if value.name in feeds]
    extractor = Extractor(proto)
    extractor.value_infos.setdefault(facts.output_name, _declared_as(facts.output_name, probe))
    cut = extractor.extract_model([*inputs, facts.output_name], list(names))
    if any(uses_external_data(tensor) for tensor in cut.graph.initializer):  # a model over 2 GB saves the output
        return None, notes  # steps' constants beside it too: the cut, saved elsewhere, would not find them
    path = folder / "decoder_probe.onnx"
    onnx.save(cut, str(path))
    shape = feeds[caller].shape
    extras = {name: value for name, value in feeds.items() if name != caller}
    extras = output_extras(recipe, facts, extras, shape, {facts.output_name: probe})
    feed = {**{name: feeds[name] for name in inputs}, facts.output_name: probe}
    with open_runner(backend, path) as run:
        answers = run(feed)
    return Probe(probe, extras, postprocess(recipe, probe, facts, extras), backend, answers), notes
