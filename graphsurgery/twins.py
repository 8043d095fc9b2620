"""The unpatched pipeline: the plain model between the recipe's numpy twins.

This is what every patched model is compared against. It shares nothing with the emitted graph except the
recipe: each step's `reference` is an independent numpy implementation of what its `build` emits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from graphsurgery.recipe import Recipe
from graphsurgery.splice import real_inputs
from graphsurgery.steps.base import Comparison, TensorSpec

DEFAULT_FLOAT = Comparison("float", rtol=1e-5, atol=1e-5)


@dataclass(frozen=True)
class ModelFacts:
    """What the output twins need to know about the plain model (the same facts the splice gives the steps)."""

    input_size: tuple[int, int] | None
    output_producer: str | None
    output_name: str

    @classmethod
    def of(cls, proto: onnx.ModelProto, recipe: Recipe) -> ModelFacts:
        graph = proto.graph
        images = [i for i in graph.input if i.name in real_inputs(proto) and len(i.type.tensor_type.shape.dim) == 4]
        size = None
        if len(images) == 1:
            h, w = (d.dim_value for d in images[0].type.tensor_type.shape.dim[2:])
            size = (w, h) if w and h else None
        target = (recipe.output.target if recipe.output else None) or graph.output[0].name
        producer = next((n.op_type for n in graph.node if target in n.output), None)
        return cls(size, producer, target)


def preprocess(recipe: Recipe, x: np.ndarray) -> np.ndarray:
    """Run the input steps' numpy twins on a caller-side array."""
    if recipe.input is None:
        return x
    section = recipe.input
    spec = TensorSpec(section.tensor.dtype, section.tensor.layout, section.tensor.color, tuple(x.shape))
    for step in section.steps:
        after = step.spec_after(spec)
        x = step.reference(x, spec)
        spec = after.with_(shape=tuple(x.shape))
    return x


def postprocess(recipe: Recipe, output: np.ndarray, facts: ModelFacts, extras: dict[str, np.ndarray] | None = None
                ) -> dict[str, np.ndarray]:
    """Run the output steps' numpy twins on the model's output; returns arrays by graph output name."""
    if recipe.output is None:
        return {facts.output_name: output}
    env: dict = {"output": output, "input_size": facts.input_size, "output_producer": facts.output_producer,
                 **(extras or {})}
    for step in recipe.output.steps:
        env.update(step.reference(env))
    results = {name: env[key] for key, name in recipe.output.output_names().items()}
    if recipe.output.keep_original:
        results[facts.output_name] = output
    return results


def run_unpatched(recipe: Recipe, facts: ModelFacts, run_plain: Callable[[np.ndarray], np.ndarray],
                  x: np.ndarray, extras: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Caller input → input twins → plain model (`run_plain`) → output twins."""
    return postprocess(recipe, run_plain(preprocess(recipe, x)), facts, extras)


def comparisons(recipe: Recipe, facts: ModelFacts) -> dict[str, Comparison]:
    """How each patched-model output is compared: as declared by the last step that wrote it."""
    result: dict[str, Comparison] = {}
    if recipe.output is None:
        return {facts.output_name: DEFAULT_FLOAT}
    declared: dict[str, Comparison] = {}
    for step in recipe.output.steps:
        declared.update(step.writes())
    for key, name in recipe.output.output_names().items():
        result[name] = declared[key]
    if recipe.output.keep_original:
        result[facts.output_name] = DEFAULT_FLOAT
    return result


def extra_input_names(recipe: Recipe) -> list[str]:
    """Graph inputs the output steps add (e.g. `center`, `scale`)."""
    if recipe.output is None:
        return []
    return [extra.name for step in recipe.output.steps for extra in step.extra_inputs(None)]
