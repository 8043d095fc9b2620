"""The Python API behind `apply` and `inspect`: paths in, results out; the CLI is a thin shell over it."""

from __future__ import annotations

import gc
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from graphsurgery.errors import check_flags
from graphsurgery.model import model_opset, provenance, real_inputs
from graphsurgery.modelio import (
    ELEMENT_BYTES,
    LoadedModel,
    check_output_path,
    command,
    external_tensors,
    load_model,
    model_files,
    network_sha256,
    save_model,
)
from graphsurgery.own_input_steps import own_input_steps
from graphsurgery.probe import settle_output_sizes
from graphsurgery.recipe import Recipe, as_recipe
from graphsurgery.safeio import input_path, output_path
from graphsurgery.splice import SplicePlan, splice


@dataclass
class ApplyResult:
    plan: SplicePlan
    output: Path | None
    written: list[Path] = field(default_factory=list)


def default_output(model: Path) -> Path:
    """`<model>.patched.onnx` beside the input."""
    return model.with_name(f"{model.stem}.patched.onnx")


@command
def apply(recipe: str | Path | Recipe, model: str | Path, out: str | Path | None = None, *, force: bool = False,
          dry_run: bool = False, upgrade_opset: bool = False) -> ApplyResult:
    """Splice `recipe` into the model at `model` and write it to `out` (atomically; the input is never modified).
    `force` replaces an existing `out`, applies a recipe again and applies input steps the model already does itself
    (the plan's notes say so), as `apply --force` does."""
    check_flags(force=force, dry_run=dry_run, upgrade_opset=upgrade_opset)
    model = input_path(model, "model file")
    recipe = as_recipe(recipe)
    out = output_path(out) if out is not None else default_output(model)
    return apply_loaded(recipe, load_model(model), out, force=force, dry_run=dry_run, upgrade_opset=upgrade_opset)


def apply_loaded(recipe: Recipe, loaded: LoadedModel, out: Path, *, force: bool = False, dry_run: bool = False,
                 upgrade_opset: bool = False) -> ApplyResult:
    """`apply` of a model read already: verify's plain model, which apply read a second time (0.3 s for HRNet-W32).
    The splice changes `loaded.proto`: a caller that keeps the model gives a copy."""
    model = loaded.path
    if not dry_run:  # the model, its external data files and the recipe file are never written
        check_output_path(out, [*model_files(loaded), Path(recipe.source) if recipe.file_sha256 else None], force)
    base_dir = loaded.base_dir
    network = None if dry_run else network_sha256(loaded)  # of the model as read, before anything settles in it
    settled = settle_output_sizes(loaded, recipe)
    patched, plan = splice(recipe, loaded.proto, model_name=str(model), force=force, upgrade_opset=upgrade_opset,
                           network_sha256=network)
    plan.notes = [*settled, *plan.notes]
    if dry_run:
        return ApplyResult(plan, None)
    # Free the original's weights before saving (which briefly needs twice the model again): graph-surgeon's
    # reference cycles keep them alive until a collection. On HRNet-W32 this lowers the peak RSS by ~90 MB.
    large = _weights_in_memory(loaded.proto) >= COLLECT_FROM_BYTES
    del loaded
    if large:
        gc.collect()
    written = save_model(patched, out, external_base=base_dir, replace=force, patched_from=(recipe.source, str(model)))
    return ApplyResult(plan, out, written)


#: the in-memory weights from which `apply` collects the garbage before saving. A full collection takes time in
#: proportion to every object the process holds (in the test suite's processes it was 9 % of the suite's CPU, on
#: models of a few kB) and frees at most the original's weights: worth it for a model like HRNet-W32 (109 MiB).
COLLECT_FROM_BYTES = 16 * 2**20


def _weights_in_memory(proto: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers held in the proto (not those in external data), from their dims."""
    return sum(math.prod(tensor.dims) * ELEMENT_BYTES.get(tensor.data_type, 1) for tensor in proto.graph.initializer
               if tensor.data_location != onnx.TensorProto.EXTERNAL)


@dataclass(frozen=True)
class ModelInfo:
    """What `inspect` reports of a model; `to_dict()` is its JSON. Inputs and outputs are {name, dtype, shape}
    (a dim is its size, its name, or None when the model leaves it unnamed)."""

    path: str
    ir_version: int
    opset: int
    opset_imports: dict[str, int]
    producer: str
    inputs: list[dict]
    outputs: list[dict]
    nodes: int
    op_types: dict[str, int]
    initializers: int
    external_data: int
    provenance: list[dict]
    #: what the model does to each input itself before its network reads it (`own_input_steps`), in words
    own_input_steps: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@command
def inspect_model(model: str | Path) -> ModelInfo:
    """Signature, opset, IR version, node counts by op type, provenance and what the model does to its own input
    (`own_input_steps`) of a model."""
    loaded = load_model(model)
    proto = loaded.proto
    graph = proto.graph
    feeds = set(real_inputs(proto))

    def describe(value: onnx.ValueInfoProto) -> dict:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
        shape = [d.dim_value or d.dim_param or None for d in tensor.shape.dim] if tensor.HasField("shape") else None
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return ModelInfo(
        path=str(loaded.path),
        ir_version=proto.ir_version,
        opset=model_opset(proto),
        opset_imports={e.domain or "ai.onnx": e.version for e in proto.opset_import},
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        inputs=[describe(v) for v in graph.input if v.name in feeds],
        outputs=[describe(v) for v in graph.output],
        nodes=len(graph.node),
        op_types=dict(Counter(n.op_type for n in graph.node).most_common()),
        initializers=len(graph.initializer),
        external_data=len(external_tensors(proto)),
        provenance=provenance(proto),
        own_input_steps={name: list(map(str, own)) for name in real_inputs(proto)[:INSPECT_WALKS]
                         if (own := own_input_steps(proto, name))},
    )


#: The inputs whose own preparation `inspect` reads (each walk reads every node once, to find their readers)
INSPECT_WALKS = 16
