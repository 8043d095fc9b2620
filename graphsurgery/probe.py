"""The sizes of the outputs the output steps read, as the model computes them, not as it declares them.

Exporters often write an output's dims as names (`[n, k, h, w]`) when a Reshape computes its shape from Shape():
onnx's shape inference, even data-propagating, does not follow that, yet the heatmap decoders need the height and
width as constants; and a declared size can simply be wrong. So the declared sizes are checked against shape
inference (run without them), and where inference cannot tell, against one ONNX Runtime run of the plain model on
zeros (when every input's size is static but for the batch). Sizes that differ are replaced in the loaded model, in
memory, with a note; the model file is not touched. An image input with free height or width is run at the size the
recipe's input steps feed it (a `resize` or `center_crop` of a given `size`, or the caller's `tensor.shape`), the only
size the patched model gives it; where the recipe fixes none the sizes stay unknown, and the step that needs them says
so.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from graphsurgery.errors import GraphsurgeryError, ModelError
from graphsurgery.model import fed_dims, image_input_name, real_inputs, shapes_only
from graphsurgery.modelio import LoadedModel
from graphsurgery.recipe import Recipe
from graphsurgery.runners import open_runner
from graphsurgery.steps.base import SizedStep

#: The largest input the probe feeds (zeros): beyond it the sizes stay unknown rather than the memory run out
MAX_PROBE_BYTES = 1 << 30


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim]


def settle_output_sizes(loaded: LoadedModel, recipe: Recipe) -> list[str]:
    """Make the declared sizes (all dims but the batch, which is freed where it is a number the model does not
    compute) of the outputs the recipe's output steps read what the model computes, in `loaded.proto` (in memory):
    from shape inference where it knows them, else from one run on zeros; returns the notes saying what changed.
    Nothing happens where the declared sizes are right, or where neither way can tell (an input whose size is not
    static but for its batch); an output declared with another number of dims than it has is refused."""
    if recipe.output is None:
        return []
    graph = loaded.proto.graph
    targets = recipe.output.targets() or (graph.output[0].name,)
    outputs = [o for o in graph.output if o.name in targets and o.type.tensor_type.HasField("shape")]
    inferred = _inferred(loaded.proto, [o.name for o in outputs])
    unsure = [o.name for o in outputs if not _static(inferred.get(o.name))]
    measured, fed = _one_run(loaded, unsure, recipe) if unsure else ({}, "its inputs fix them")
    notes = []
    for value in outputs:
        declared = _dims(value)
        truth, how = ((inferred[value.name], "shape inference") if value.name not in unsure
                      else (measured.get(value.name), f"one ONNX Runtime run on zeros ({fed})"))
        if truth is None:
            continue
        if len(truth) != len(declared):  # round 97: the steps were built for the declared rank and failed in the
            # runtime ("Invalid rank for input: heatmaps", an internal error) or refused the recipe for it
            raise ModelError(f"output {value.name!r} is declared {declared}, {len(declared)} dims; the model computes "
                             f"{len(truth)} ({list(truth)}, {how})", path=loaded.path,
                             fix=f"export the model with the shape of {value.name!r} it computes (or correct the "
                                 "declaration)")
        # a batch declared as a number the model does not compute (2^62, or 2 beside an output of batch 1) made the
        # steps' shapes fail: the patched model failed the checker, "a graphsurgery bug" (round 47); it is freed
        wrong_batch = bool(declared) and isinstance(declared[0], int) and truth[0] not in (None, declared[0])
        if not wrong_batch and declared[1:] == list(truth[1:]):
            continue
        dims = list(value.type.tensor_type.shape.dim)
        if wrong_batch:
            dims[0].Clear()
        for dim, size in zip(dims[1:], truth[1:]):
            dim.Clear()
            dim.dim_value = int(size)
        for info in graph.value_info:  # an exporter's value_info of the output (ultralytics writes one) is what the
            if info.name == value.name:  # graph editor reads: it kept the declared sizes (round 100)
                info.type.CopyFrom(value.type)
        batch = f", and not a batch of {declared[0]:,}" if wrong_batch else ""
        notes.append(f"output {value.name!r} is declared {declared}; the model computes {list(truth[1:])} after "
                     f"the batch{batch} ({how}): the steps use those sizes")
    return notes


def _static(dims) -> bool:
    return dims is not None and all(isinstance(d, int) and d > 0 for d in dims[1:])


def _inferred(proto: onnx.ModelProto, names: list[str]) -> dict[str, list]:
    """What onnx's shape inference finds for these outputs, their declared shapes left out."""
    light = shapes_only(proto)
    for value in light.graph.output:
        if value.name in names:
            value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except onnx.shape_inference.InferenceError:
        return {}
    return {v.name: _dims(v) for v in inferred.graph.output
            if v.name in names and v.type.tensor_type.HasField("shape")}


def _one_run(loaded: LoadedModel, names: list[str], recipe: Recipe) -> tuple[dict[str, tuple[int, ...]], str]:
    """These outputs' shapes from one ONNX Runtime run on zeros (batch 1 where it is free), and what fixed the
    inputs' sizes; no shapes when an input's size is not static but for its batch (nor made so by the recipe:
    `fed_dims`), or the model does not run here. A run on ones must give the same: an output whose size follows the
    input's values (an If choosing between branches of other sizes) has no size the steps could be built for (they
    failed in verify's run, "a graphsurgery bug")."""
    feeds, inputs, fed = {}, real_inputs(loaded.proto), "its inputs fix them"
    image = image_input_name(recipe, inputs, [v.name for v in loaded.proto.graph.input if len(_dims(v)) == 4])
    for value in loaded.proto.graph.input:
        if value.name not in inputs:
            continue
        declared = _dims(value)
        dims = fed_dims(recipe, declared) if value.name == image else declared
        if dims != declared:
            # what fixed the size (round 103: "the recipe's input steps" was said of a tensor.shape too)
            sized = [step.step_name for step in recipe.input.steps if isinstance(step, SizedStep)]
            by = f"the recipe's {sized[-1]} step" if sized else "the recipe's input.tensor.shape"
            fed = f"at the {dims[1:]} after the batch {by} feeds {value.name!r}"
        if not value.type.tensor_type.HasField("shape") or not _static(dims):
            return {}, fed
        batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else 1
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = [batch, *dims[1:]] if dims else []
        if math.prod(shape) * dtype.itemsize > MAX_PROBE_BYTES:  # a huge static input: not worth (or able) to run
            return {}, fed
        feeds[value.name] = np.zeros(shape, dtype)
    try:
        with open_runner("onnxruntime", loaded.path) as run:
            outputs = run(feeds)
            other = _ran(run, {name: np.ones_like(value) for name, value in feeds.items()}) or outputs
    except (GraphsurgeryError, RuntimeError, ValueError):  # it does not run here: the sizes stay unknown
        return {}, fed
    for name in names:
        if name in outputs and outputs[name].shape[1:] != other[name].shape[1:]:
            raise ModelError(f"output {name!r} is {list(outputs[name].shape[1:])} after the batch for an input of "
                             f"zeros and {list(other[name].shape[1:])} for ones: its size follows the input's "
                             "values, and the output steps are built for one size", path=loaded.path,
                             fix=f"export the model so that the size of {name!r} follows only the input's size")
    return {name: outputs[name].shape for name in names if name in outputs}, fed


def _ran(run, feeds: dict) -> dict | None:
    """The outputs of one run, or None where the model does not run on these values (ones may index past a dim)."""
    try:
        return run(feeds)
    except (GraphsurgeryError, RuntimeError, ValueError):
        return None
