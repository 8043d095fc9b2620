"""Verify in two stages where the graph may round a half the other way than the twins (resize `round: true`).

A rounded resize pass sums in float32 in the graph and in float64 in the twin; where the sum lies within rounding
of a half the two land a level apart, and a network spreads a few such pixels over all its outputs (HRNet-tiny:
3e-3 on its maps), so comparing outputs failed right patches. Both answers are right, so verify proves the two
halves apart instead of loosening any tolerance:

1. the network input the patched graph computes (exposed as an extra output of a copy of the patched model) lies,
   value by value, between the least and the greatest the input twins allow (`twins.preprocess_bounds`: the same
   as the twin's, except where a pass's sum may round either way), within the float floor;
2. the patched model's outputs are compared with the plain model fed that same tensor, then the output twins: the
   unpatched pipeline from the graph's own (proven) input.

Across backends each graph computes its own input, so the patched model on the second backend is compared with the
plain model on the first fed the second backend's input: the same model input on two runtimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.compare import FloatResult, compare_floats
from graphsurgery.model import ModelFacts
from graphsurgery.modelio import load_model, save_model
from graphsurgery.recipe import Recipe
from graphsurgery.runners import open_runner
from graphsurgery.samples import Samples, chunks
from graphsurgery.steps.base import InputStep
from graphsurgery.tolerances import MODEL_FLOAT_FLOOR
from graphsurgery.twins import preprocess_bounds

SPLICED_INPUT = "graphsurgery/pre/"

Bounds = list[tuple[np.ndarray, np.ndarray]]  # per batch (`chunks`): the least and greatest network input


@dataclass(frozen=True)
class Exposed:
    """A copy of the patched model that also outputs the network's input, under `tensor`."""

    model: Path
    tensor: str


def rounding_step(steps: Sequence[InputStep]) -> str | None:
    """`input.steps[i].name` of the first input step that may round a half the other way than its twin."""
    return next((f"input.steps[{index}].{step.step_name}" for index, step in enumerate(steps) if step.rounds_halves),
                None)


def input_bounds(recipe: Recipe, facts: ModelFacts, steps: Sequence[InputStep], samples: Samples, batch: int
                 ) -> Bounds | None:
    """Per batch, the least and greatest network input the input twins allow (`twins.preprocess_bounds`), computed
    once for every backend; None where no step rounds halves (most recipes: nothing is computed) or a step after
    one cannot carry bounds."""
    if rounding_step(steps) is None:
        return None
    bounds = []
    for x, extras in chunks(samples, batch):
        pair = preprocess_bounds(recipe, x, facts, extras)
        if pair is None:
            return None
        bounds.append(pair)
    return bounds


def exposed_copy(patched: Path, network_input: onnx.ValueInfoProto, folder: Path) -> Exposed | None:
    """The copy, when `patched` is an ONNX model whose spliced input chain feeds the network through one tensor
    (declared with the element type and rank of the plain model's input `network_input`); None otherwise (verify
    then compares outputs directly)."""
    if patched.suffix.lower() != ".onnx":
        return None
    loaded = load_model(patched)
    graph = loaded.proto.graph
    made = {name for node in graph.node if node.name.startswith(SPLICED_INPUT) for name in node.output}
    read = {name for node in graph.node if not node.name.startswith("graphsurgery/") for name in node.input}
    candidates = made & read
    if len(candidates) != 1:
        return None
    tensor = candidates.pop()
    proto = onnx.ModelProto()
    proto.CopyFrom(loaded.proto)
    # its element type and rank only: its batch may be the crops' (crop_boxes, flip_test), not the plain model's
    kind = network_input.type.tensor_type
    proto.graph.output.append(onnx.helper.make_tensor_value_info(tensor, kind.elem_type, [None] * len(kind.shape.dim)))
    out = folder / "exposed.onnx"
    save_model(proto, out, external_base=loaded.base_dir, check=False)
    return Exposed(out, tensor)


def graph_inputs(exposed: Exposed, backend: str, input_name: str, other: dict[str, np.ndarray], samples: Samples,
                 batch: int) -> list[np.ndarray]:
    """Per batch, the network input the patched graph computes on `backend` (always f32: this is the reference's
    input)."""
    with open_runner(backend, exposed.model) as run:
        return [run({input_name: x, **other, **extras})[exposed.tensor] for x, extras in chunks(samples, batch)]


def input_result(bounds: Bounds, computed: Sequence[np.ndarray], name: str) -> FloatResult:
    """Stage 1 on one backend: the graph's network input against the nearest value the input twins allow, at the
    float floor."""
    actual, allowed = [], []
    for got, (lo, hi) in zip(computed, bounds):
        if got.shape != lo.shape:
            result = FloatResult(name, atol=MODEL_FLOAT_FLOOR.atol, rtol=MODEL_FLOAT_FLOOR.rtol)
            result.problem = f"the graph computes it {list(got.shape)}, the input twins {list(lo.shape)}"
            return result
        actual.append(got.ravel())
        allowed.append(np.where(np.isnan(got), lo, np.clip(got, lo, hi)).ravel())  # NaN is never allowed
    return compare_floats(name, np.concatenate(actual), np.concatenate(allowed), atol=MODEL_FLOAT_FLOOR.atol,
                          rtol=MODEL_FLOAT_FLOOR.rtol)
