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

Every other recipe with input steps gets stage 1 alone, as a check of its own: the network input the graph computes
against the input twins' (where no step rounds, the least and greatest allowed are the twin's one answer). Outputs
alone let an input step slightly off pass: a trained network answers a mean 0.1 % off, or a pad of 127 for 127.5,
within the float tolerance of its outputs (round 45's survivors), and one that answers noise with a near-constant
map hides more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.compare import FloatResult, compare_float_parts
from graphsurgery.model import ModelFacts, node_reads
from graphsurgery.modelio import LoadedModel, made_here, save_model
from graphsurgery.recipe import Recipe
from graphsurgery.runners import open_runner
from graphsurgery.samples import Samples, chunks
from graphsurgery.scopes import INPUT_SCOPE, SPLICED
from graphsurgery.steps.base import InputStep
from graphsurgery.tolerances import MODEL_FLOAT_FLOOR
from graphsurgery.twins import preprocess, preprocess_bounds

SPLICED_INPUT = f"{INPUT_SCOPE}/"

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
    """Per batch, the least and greatest network input the input twins allow, computed once for every backend: the
    twin's own input (both ends the same array) where no step rounds halves, else `twins.preprocess_bounds`. None
    without input steps, or where a step after a rounding one cannot carry bounds."""
    if not steps:
        return None
    rounding = rounding_step(steps) is not None
    bounds = []
    for x, extras in chunks(samples, batch):
        if not rounding:
            twin = preprocess(recipe, x, facts, extras)
            bounds.append((twin, twin))
        elif (pair := preprocess_bounds(recipe, x, facts, extras)) is not None:
            bounds.append(pair)
        else:
            return None
    return bounds


def exposed_copy(patched: LoadedModel, network_input: onnx.ValueInfoProto, folder: Path,
                 plain: onnx.GraphProto) -> Exposed | None:
    """The copy, when the `patched` ONNX model's network reads its input through one tensor (declared with the
    element type and rank of the plain model's input `network_input`); None otherwise (verify then compares
    outputs directly)."""
    graph = patched.proto.graph
    tensor = _network_read(graph, plain, network_input.name)
    if tensor is None:
        return None
    proto = onnx.ModelProto()
    proto.CopyFrom(patched.proto)
    _keep_only_what_computes(proto.graph, tensor)
    # its element type and rank only: its batch may be the crops' (crop_boxes, flip_test), not the plain model's
    kind = network_input.type.tensor_type
    proto.graph.output.append(onnx.helper.make_tensor_value_info(tensor, _element_type(proto, tensor, kind.elem_type),
                                                                 [None] * len(kind.shape.dim)))
    out = folder / "exposed.onnx"
    # round 56: a node of a `--patched` file the user edited, failing in this copy, was "a graphsurgery bug" (exit 3)
    save_model(proto, out, external_base=patched.base_dir, check=False, made=made_here(patched.path))
    return Exposed(out, tensor)


def _network_read(graph: onnx.GraphProto, plain: onnx.GraphProto, name: str) -> str | None:
    """The tensor the patched `graph` feeds its network in place of the plain model's input `name`: the one read
    where the plain network's nodes read `name` (each found by the tensors it writes, which the splice keeps, and
    its op type). The spliced input chain's last tensor alone was trusted: a node put between it and the network
    (an Add of 4e-4 named like none of ours) left the chain's right tensor compared and the network fed another,
    and a wrong model passed on its outputs (round 51). Where a plain node reading `name` is not found so (or
    reads it inside a subgraph), the one tensor the spliced chain makes that the network reads."""
    readers = [node for node in plain.node if name in node_reads(node)]
    writers = {out: node for node in graph.node for out in node.output if out}
    found = set()
    for node in readers:
        other = writers.get(node.output[0]) if node.output and name in node.input else None
        if other is None or other.op_type != node.op_type or list(other.output) != list(node.output) \
                or len(other.input) != len(node.input):
            break
        found |= {other.input[slot] for slot, read in enumerate(node.input) if read == name}
    else:
        if found:
            return found.pop() if len(found) == 1 else None
    made = {out for node in graph.node if node.name.startswith(SPLICED_INPUT) for out in node.output}
    read = {put for node in graph.node if not node.name.startswith(f"{SPLICED}/") for put in node.input}
    candidates = made & read
    return candidates.pop() if len(candidates) == 1 else None


def _element_type(proto: onnx.ModelProto, tensor: str, expected: int) -> int:
    """The element type the input steps give `tensor`, as shape inference finds it; `expected` (the plain model's
    input's) where it finds none. Declared as the plain model's, a patched graph whose steps end in another type
    (a float16 Cast, then one back inside the network) was "onnxruntime cannot load" the copy, which the user never
    gave: now the values are compared, and a float16 rounding fails as such."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except (onnx.shape_inference.InferenceError, ValueError):
        return expected
    found = next((value.type.tensor_type.elem_type for value in inferred.graph.value_info if value.name == tensor),
                 0)
    return found or expected


def unexposed_note(patched: Path, bounded: bool) -> str:
    """Why the network input was not compared (no `exposed_copy`, or no `input_bounds` for it): a PASS then rests on
    the outputs alone."""
    why = ("a patched IR cannot output it" if patched.suffix.lower() != ".onnx"
           else "a step after the rounding resize cannot carry its bounds" if not bounded
           else "the patched graph does not feed the network through one tensor its input steps make")
    return f"the network input was not compared with the input steps' twins ({why}): only the outputs were"


def _keep_only_what_computes(graph: onnx.GraphProto, tensor: str) -> None:
    """`graph` cut to the nodes and weights `tensor` needs, with no outputs: each backend then runs the input steps
    alone, not the network a second time. Every caller input stays (a runtime refuses a feed the model does not
    declare), except a weight a model of an old IR version also lists as an input."""
    needed, kept = {tensor}, []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node_reads(node) - {""})
    weights = [init for init in graph.initializer if init.name in needed]
    dropped = {init.name for init in graph.initializer} - needed
    inputs = [value for value in graph.input if value.name not in dropped]
    del graph.node[:], graph.initializer[:], graph.input[:], graph.output[:], graph.value_info[:]
    graph.node.extend(reversed(kept))
    graph.initializer.extend(weights)
    graph.input.extend(inputs)


def graph_inputs(exposed: Exposed, backend: str, input_name: str, other: dict[str, np.ndarray], samples: Samples,
                 batch: int) -> list[np.ndarray]:
    """Per batch, the network input the patched graph computes on `backend` (always f32: this is the reference's
    input)."""
    with open_runner(backend, exposed.model) as run:
        return [run({input_name: x, **other, **extras})[exposed.tensor] for x, extras in chunks(samples, batch)]


def input_result(bounds: Bounds, computed: Sequence[np.ndarray], name: str) -> FloatResult:
    """Stage 1 on one backend: the graph's network input against the nearest value the input twins allow, at the
    float floor, batch by batch (`compare_float_parts`)."""
    parts = []
    for got, (lo, hi) in zip(computed, bounds):
        if got.shape != lo.shape:
            result = FloatResult(name, atol=MODEL_FLOAT_FLOOR.atol, rtol=MODEL_FLOAT_FLOOR.rtol)
            result.problem = f"the graph computes it {list(got.shape)}, the input twins {list(lo.shape)}"
            return result
        # where no step rounds, the twin's one answer (lo is hi); NaN is never allowed
        parts.append((got, lo if lo is hi else np.where(np.isnan(got), lo, np.clip(got, lo, hi))))
    return compare_float_parts(name, parts, atol=MODEL_FLOAT_FLOOR.atol, rtol=MODEL_FLOAT_FLOOR.rtol)
