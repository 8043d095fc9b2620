"""The one graph editor: splices a recipe's steps into a model.

The original input is replaced by a new input with the recipe's dtype, layout and dims, feeding the input-step
chain whose last node produces the tensor the model consumed. The output steps read the chosen model output and
their results become new graph outputs. Every new node lives under `graphsurgery/pre/…` or `graphsurgery/post/…`
with names that cannot collide with the model's; provenance is recorded in `metadata_props`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.inliner
import onnx_graphsurgeon as gs
from onnx.external_data_helper import uses_external_data
from onnx_graphsurgeon.logger import G_LOGGER

from graphsurgery import __version__
from graphsurgery.binding import (
    bind_input_steps,
    check_model_layout,
    check_reaches_model,
    merge_declared,
    step_error,
)
from graphsurgery.emit import Emitter
from graphsurgery.errors import ModelError, listed, node_named
from graphsurgery.model import (
    PROVENANCE_KEY,
    ModelFacts,
    all_nodes,
    applied_before,
    model_opset,
    names_in_use,
    nested_graphs,
    openvino_caveats,
    provenance,
    real_inputs,
    shapes_only,
)
from graphsurgery.modelio import check_work
from graphsurgery.own_input_steps import refuse_doubled
from graphsurgery.recipe import InputSection, OutputSection, Recipe
from graphsurgery.registry import producers
from graphsurgery.scopes import INPUT_SCOPE, OUTPUT_SCOPE
from graphsurgery.steps.base import GEOMETRY, Dim, ExtraInput, StepError, TensorSpec, hw_axes

#: the environment keys the output steps write or read besides the model outputs: a model output listed in
#: output.target cannot take one of these names
RESERVED_KEYS = {"output", "keypoints", "scores", "heatmaps", "indices", "probabilities", "boxes", "center", "scale",
                 "candidates", "class_scores", "classes", "count", GEOMETRY}
DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16", np.dtype(np.uint8): "uint8"}
#: The most values a patched input may declare: shape arithmetic counts in int64, and the steps may double the batch
#: (a flip test). An input of 2^48 × 3 × 256 × 192 overflowed it in shape inference: the patched model failed the
#: checker, "a graphsurgery bug" (round 93); one of 2^40 × 3 × 256 × 192 is patched, and `run` refuses to feed it
MAX_INPUT_VALUES = 2**62


@dataclass(frozen=True)
class Signature:
    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    def __str__(self) -> str:
        dims = "?" if self.shape is None else "×".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass
class SplicePlan:
    """What a splice does: the tensors it patches, the nodes it adds and the new signature."""

    recipe: str
    opset: int
    input_target: str | None = None
    output_target: str | None = None
    inputs: list[Signature] = field(default_factory=list)
    outputs: list[Signature] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    outputs_added: list[str] = field(default_factory=list)  # the output steps' results
    outputs_kept: list[str] = field(default_factory=list)  # the model's outputs, passed through unchanged
    outputs_removed: list[str] = field(default_factory=list)  # the patched output, when keep_original is false
    notes: list[str] = field(default_factory=list)  # what a runtime computes differently in the patched model

    def to_dict(self) -> dict:
        return {
            "recipe": self.recipe, "opset": self.opset, "input_target": self.input_target,
            "output_target": self.output_target, "inputs": [str(s) for s in self.inputs],
            "outputs": [str(s) for s in self.outputs], "nodes": self.nodes, "outputs_added": self.outputs_added,
            "outputs_kept": self.outputs_kept, "outputs_removed": self.outputs_removed, "notes": self.notes,
        }


def required_opset(recipe: Recipe) -> int:
    steps = [*(recipe.input.steps if recipe.input else ()), *(recipe.output.steps if recipe.output else ())]
    return max([9, *(s.opset_needed() for s in steps)])


def splice(recipe: Recipe, proto: onnx.ModelProto, *, model_name: str = "model", force: bool = False,
           upgrade_opset: bool = False, network_sha256: str | None = None) -> tuple[onnx.ModelProto, SplicePlan]:
    """Return the patched model and its plan; `proto` itself is not modified. `network_sha256`, the plain model's
    (`modelio.network_sha256`), goes into the provenance entry."""
    original = proto
    opset = model_opset(proto)
    needed = required_opset(recipe)
    if needed > opset:
        if not upgrade_opset:
            raise ModelError(f"recipe {recipe.name!r} needs opset {needed}, the model has opset {opset}",
                             path=model_name, fix=f"pass upgrade_opset=True (--upgrade-opset) to convert "
                                                    f"the model to opset {needed}")
        if proto.functions:  # the converter drops them, leaving their calls to no op: their nodes go in first (not
            # those named like an ONNX op, which the runtimes ignore and run the op: inlined, they would replace it)
            ops = [(f.domain, f.name) for f in proto.functions if onnx.defs.has(f.name, f.domain)]
            proto = onnx.inliner.inline_selected_functions(proto, ops, exclude=True)
        proto = onnx.version_converter.convert_version(proto, needed)
        # the converter leaves the IR version alone: an opset needs at least the IR version it came with
        proto.ir_version = max(proto.ir_version, onnx.helper.find_min_ir_version_for(list(proto.opset_import),
                                                                                     ignore_unknown=True))
        opset = needed
    applied = provenance(proto)
    if not force:
        refuse_applied(recipe, proto, model_name)

    _refuse_sparse_constants(proto, model_name)
    graph = _import_quietly(_overloads_tagged(proto))
    tensors, nodes = names_in_use(proto)  # the subgraphs' too: a new tensor must shadow none of them
    in_use = frozenset(tensors)
    # and the new input's name, which no spliced tensor may take (input.name `graphsurgery/pre/cast/Cast_output_0`
    # made a graph that failed the checker, reported as a graphsurgery bug: round 50)
    taken = tensors | nodes | ({recipe.input.name} if recipe.input and recipe.input.name else set())
    plan = SplicePlan(recipe=recipe.name, opset=opset)
    facts = ModelFacts.of(proto, recipe)
    extras: dict[str, gs.Variable] = {}
    if recipe.input:
        extras = _splice_input(recipe.input, proto, graph, Emitter(graph, opset, INPUT_SCOPE, taken), plan,
                               model_name, in_use, wants_geometry=reads_geometry(recipe), force=force)
    if recipe.output:
        _splice_output(recipe.output, graph, Emitter(graph, opset, OUTPUT_SCOPE, taken), plan, model_name,
                       facts, extras, in_use)
    plan.inputs = [_signature(v) for v in graph.inputs]
    graph.toposort()
    patched = _export(graph, proto, recipe, applied, network_sha256)
    check_work(patched, model_name, "the patched model")  # the recipe's nodes may take it past MAX_NODES
    _fill_output_shapes(patched, plan)
    plan.notes = [*plan.notes, *openvino_caveats(patched), *_carry_training_info(original, patched)]
    return patched, plan


def _carry_training_info(original: onnx.ModelProto, patched: onnx.ModelProto) -> list[str]:
    """The model's training_info kept as it is (round 41: apply dropped it in silence, onnx-graphsurgeon exporting
    the graph alone): it trains the network, which the patch leaves whole. A note says so, as its graphs read
    tensors by name that nothing checks against the patched graph; training graphs holding external data are left
    out, noted (their files are neither checked nor copied beside the output)."""
    if not original.training_info:
        return []
    count = f"{len(original.training_info)} training_info entr{'y' if len(original.training_info) == 1 else 'ies'}"
    graphs = [g for info in original.training_info for top in (info.initialization, info.algorithm)
              for g in nested_graphs(top)]
    tensors = [*(t for g in graphs for t in g.initializer),
               *(t for g in graphs for n in g.node for a in n.attribute for t in (*([a.t] if a.HasField("t") else ()),
                                                                                 *a.tensors))]
    if any(uses_external_data(tensor) for tensor in tensors):
        return [f"the model's {count} (training graphs) left out: they hold external data, which apply does not copy"]
    patched.training_info.extend(original.training_info)
    return [f"the model's {count} (training graphs) kept unchanged: they read the plain model's tensors by name, "
            "not checked against the patched graph"]


def _refuse_sparse_constants(proto: onnx.ModelProto, model_name: str) -> None:
    """onnx-graphsurgeon writes a Constant holding a sparse tensor back with both a dense and a sparse value, which
    the checker refuses: the input passed it, so "the patched model fails the checker" blamed graphsurgery."""
    for node in all_nodes(proto):
        if node.op_type == "Constant" and any(attr.name == "sparse_value" for attr in node.attribute):
            raise ModelError(f"{node_named(node)} holds a sparse tensor, which the splice cannot "
                             "carry into the patched model", path=model_name,
                             fix="re-export the model with that constant dense (a Constant with `value`)")


#: A node attribute carrying a call's overload through onnx-graphsurgeon, which drops `NodeProto.overload`
OVERLOAD_TAG = "graphsurgery_overload"


def _overloads_tagged(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto`, or a copy where each call of an overloaded local function (IR 10) carries its overload as an
    attribute: onnx-graphsurgeon keeps attributes but not `overload`, and the patched model's calls all called
    one overload (round 97: Relu then Neg became Neg twice, written without a word; verify FAILed it)."""
    if not any(node.overload for node in all_nodes(proto)):
        return proto
    tagged = onnx.ModelProto()
    tagged.CopyFrom(proto)
    for node in all_nodes(tagged):
        if node.overload:
            node.attribute.append(onnx.helper.make_attribute(OVERLOAD_TAG, node.overload))
    return tagged


def _overloads_restored(patched: onnx.ModelProto) -> None:
    """Each tagged call's overload back in its place (`_overloads_tagged`)."""
    for node in all_nodes(patched):
        tag = next((attribute for attribute in node.attribute if attribute.name == OVERLOAD_TAG), None)
        if tag is not None:
            node.overload = tag.s.decode()
            node.attribute.remove(tag)


def _import_quietly(proto: onnx.ModelProto) -> gs.Graph:
    """onnx-graphsurgeon warns on standard output about element types numpy lacks (bfloat16): two lines before
    the one-line refusal (`_numpy_dtype`) the caller should get alone."""
    severity = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR
    try:
        return gs.import_onnx(proto)
    finally:
        G_LOGGER.severity = severity


def refuse_applied(recipe: Recipe, proto: onnx.ModelProto, model_name: str) -> None:
    """Refuse a model `recipe` was applied to already (its provenance says so). Also asked by verify before it binds
    the input steps: its line was the binding's ("resize does not know its size")."""
    if applied_before(recipe, proto):
        raise ModelError(f"recipe {recipe.name!r} was already applied to this model", path=model_name,
                         fix="use the unpatched model (to apply the recipe again on purpose: `graphsurgery apply "
                             "--force`, or force=True in Python)")


def check_image_input(name: str, element: np.dtype | None, shape, model_name: str) -> str:
    """The dtype name of a patched input, refused where input steps cannot feed it: not a 4-D float32 or float16
    tensor. Also asked by verify before it binds the steps (`samples.check_plain_input`; round 58: a model of a
    1-D input was "internal error (IndexError)" there, where apply names the input)."""
    dtype = DTYPE_NAMES.get(element) if element is not None else None
    if element is not None and element.kind == "f" and dtype is None and shape is not None and len(
            shape) == 4:  # float64: "need a float tensor, patch another input" named neither the cause nor a fix
        raise ModelError(f"input {name!r} is {element}; the input steps compute in float32 (float16 is fed "
                         "as it is)", path=model_name, fix=f"export the model with a float32 input {name!r}")
    if dtype is None or shape is None or len(shape) != 4:
        raise ModelError(f"input {name!r} is {element if element is not None else 'of no known type'}"
                         f"{list(shape or [])}; input steps need a 4-D float image tensor", path=model_name,
                         fix="patch another input with input.target")
    values = math.prod(d for d in shape if isinstance(d, int) and d > 0)
    if values > MAX_INPUT_VALUES:
        raise ModelError(f"input {name!r} is declared {list(shape)}: {values:.3g} values, more than the "
                         f"{MAX_INPUT_VALUES:.3g} the steps' shapes can count (int64)", path=model_name,
                         fix=f"export the model with a dynamic batch (or the real one) for {name!r}")
    return dtype


def _numpy_dtype(var: gs.Variable, kind: str, model_name: str) -> np.dtype | None:
    """The element type of a patched input or output as numpy knows it. bfloat16 (and the float8 types) have no
    numpy type: onnx-graphsurgeon keeps the ONNX enum, on which the steps failed as an internal error, and
    ONNX Runtime's Python API can neither feed nor return them, so the twins could never check the patch."""
    if var.dtype is None:
        return None
    try:
        return np.dtype(var.dtype)
    except TypeError:
        type_name = onnx.TensorProto.DataType.Name(var.dtype).lower() if isinstance(var.dtype, int) else var.dtype
        raise ModelError(f"{kind} {var.name!r} is {type_name}, which numpy and ONNX Runtime's Python API cannot "
                         "hold, so the patch could not be computed or verified", path=model_name,
                         fix=f"export {var.name!r} as float32 (e.g. a Cast to float at the model's {kind})") from None


def pick_input(proto: onnx.ModelProto, wanted: str | None, model_name: str, model: str = "model") -> str:
    """The model input a recipe's input section patches (`pick` of the inputs fed at run time). An input with a
    value of its own (an initializer of its name: a default, IR 4 on) is not counted; refused naming it (round 97:
    "has no input named 'input'; its inputs: " of a model whose inputs listed it)."""
    feeds = real_inputs(proto)
    defaulted = [i.name for i in proto.graph.input if i.name not in feeds]
    if wanted in defaulted or (wanted is None and not feeds and defaulted):
        name = wanted or defaulted[0]
        raise ModelError(f"the {model}'s input {name!r} has a value of its own (an initializer of that name), so it "
                         f"is no input the caller feeds; the inputs fed: {listed(feeds) or 'none'}", path=model_name,
                         fix=f"remove the initializer {name!r} from the model if the image is fed to {name!r}, or "
                             "set input.target to an input fed")
    return pick(feeds, wanted, "input", "input.target", model_name, model)


def pick(candidates: list[str], wanted: str | None, kind: str, key: str, model_name: str, model: str = "model"
         ) -> str:
    """The model's input or output (`kind`) a recipe section patches: `wanted` (its `key`, e.g. input.target), else
    the only one of `candidates`; refused in one line naming them. `model`: what the line calls the model (verify
    says "plain model", with the same words as apply: round 44's leftover, "has 0 inputs — fix: name the one")."""
    if wanted is not None:
        if wanted not in candidates:
            raise ModelError(
                f"the {model} has no {kind} named {wanted!r}; its {kind}s: {listed(candidates)}",
                path=model_name,
                fix=f"set {key} to one of them",
            )
        return wanted
    if not candidates:
        raise ModelError(
            f"the {model} has no {kind}s to patch (initializers listed as inputs do not count)",
            path=model_name,
            fix=f"give the model that takes the image, or remove the recipe's {kind} section",
        )
    if len(candidates) != 1:
        raise ModelError(f"the {model} has {len(candidates)} {kind}s ({listed(candidates)}) and the recipe "
                         f"names none", path=model_name, fix=f"set {key} to one of them")
    return candidates[0]


def _add_input(graph: gs.Graph, extra: ExtraInput, where: str, model_name: str, in_use: frozenset[str]
               ) -> gs.Variable:
    """A graph input a step declares (`boxes`, `center`): its name is fixed, so a model tensor of that name (`in_use`:
    the model's tensor names, in any subgraph) is a clash the user must resolve."""
    if extra.name in in_use or extra.name in graph.tensors():
        raise ModelError(f"{where} adds an input {extra.name!r} but the model already has a tensor of that name",
                         path=model_name, fix="rename the model's tensor (this step's input name is fixed)")
    var = gs.Variable(extra.name, dtype=np.dtype(extra.dtype), shape=list(extra.shape))
    graph.inputs.append(var)
    return var


def reads_geometry(recipe: Recipe) -> bool:
    """True when an output step maps its results back through the input steps' geometry (boxes_to_image)."""
    return recipe.output is not None and any(GEOMETRY in step.reads for step in recipe.output.steps)


def _splice_input(section: InputSection, proto, graph: gs.Graph, em: Emitter, plan: SplicePlan, model_name: str,
                  in_use: frozenset[str], wants_geometry: bool = False, force: bool = False
                  ) -> dict[str, gs.Variable]:
    """Splice the input steps; returns the graph inputs they added (for the output steps), and with
    `wants_geometry` the input geometry they make (`GEOMETRY`). `in_use`: every tensor name of the model; `force`
    keeps steps that do again what the model does itself (`refuse_doubled`), noted in the plan."""
    target_name = pick_input(proto, section.target, model_name)
    target = next(v for v in graph.inputs if v.name == target_name)
    plan.input_target = target_name
    if target in graph.outputs:  # the model-side tensor would come out under an internal name, not the input's
        raise ModelError(f"input {target_name!r} is also an output of the model (passed through as it is), so the "
                         "patched model could not keep that output", path=model_name,
                         fix=f"remove {target_name!r} from the model's outputs before patching its input")
    dtype = check_image_input(target_name, _numpy_dtype(target, "input", model_name), target.shape, model_name)
    model_shape = tuple(d if isinstance(d, int) and d > 0 else (d or None) for d in target.shape)
    check_model_layout(model_shape, section.model.layout, target_name, model_name)
    plan.notes += refuse_doubled(section, proto, target_name, model_name, force)
    steps, shape = bind_input_steps(section, model_shape, model_name)
    shape = merge_declared(shape, section.tensor.shape, model_name)
    if section.name not in (None, target_name) and section.name in in_use:
        raise ModelError(f"input.name {section.name!r} is already a tensor in the model", path=model_name,
                         fix="choose another name for the new input")

    if any(step.sets_batch for step in steps):
        _free_batch(graph, target, model_name)
    # The model-side tensor takes an internal name before the new input takes its name: two tensors of one name
    # made onnx-graphsurgeon print eight warning lines to standard output (crop_boxes with input.name unset).
    target.name = em.unique(f"{target_name}")
    new_input = gs.Variable(section.name or target_name, dtype=np.dtype(section.tensor.dtype), shape=list(shape))
    spec = TensorSpec(section.tensor.dtype, section.tensor.layout, section.tensor.color, shape)
    x, extras, forward = new_input, {}, None
    for index, step in enumerate(steps):
        where = f"input.steps[{index}].{step.step_name}"
        for extra in step.extra_inputs():
            if extra.name == new_input.name:
                raise ModelError(f"{where} adds an input {extra.name!r}, the name of the patched input",
                                 path=model_name, fix="set input.name to another name (this step's input name "
                                                      "is fixed)")
            if extra.name not in extras:
                extras[extra.name] = _add_input(graph, extra, where, model_name, in_use)
        try:
            if wants_geometry:
                forward = _compose(em.scoped("geometry"), forward, step.build_forward_map(em.scoped("geometry"), x,
                                                                                         spec))
            after = step.spec_after(spec)
            x = step.build(em.scoped(step.step_name), x, spec, **{e.name: extras[e.name] for e in step.extra_inputs()})
        except StepError as exc:
            raise step_error(exc, where, model_name) from None
        spec = after
    check_reaches_model(spec, section, dtype, model_name)

    # The chain's last node now produces the tensor the model consumed; the new input takes the old name.
    if x is new_input:  # no steps: the section only renames the input or fixes its dims
        x = em.op("Identity", [x], dtype=x.dtype)
    producer = x.inputs[0]
    producer.outputs = [target]
    graph.inputs = [new_input if v is target else v for v in graph.inputs]
    if wants_geometry:
        extras[GEOMETRY] = _geometry(em.scoped("geometry"), new_input, section.tensor.layout, forward)
    plan.nodes += [n.name for n in graph.nodes if n.name.startswith(em.prefix + "/")]
    return extras


def _compose(em: Emitter, first: tuple[gs.Variable, gs.Variable] | None,
             then: tuple[gs.Variable, gs.Variable] | None) -> tuple[gs.Variable, gs.Variable] | None:
    """Two forward maps (scale, offset) one after the other: scale · s', offset · s' + o'."""
    if first is None or then is None:
        return first or then
    f32 = np.float32
    scale = em.op("Mul", [first[0], then[0]], dtype=f32, shape=[2])
    offset = em.op("Add", [em.op("Mul", [first[1], then[0]], dtype=f32), then[1]], dtype=f32, shape=[2])
    return scale, offset


def _geometry(em: Emitter, caller: gs.Variable, layout: str, forward: tuple[gs.Variable, gs.Variable] | None
              ) -> gs.Variable:
    """[scale x, scale y, offset x, offset y, width, height] float32: the input steps' forward map and the caller
    image's size (`GEOMETRY`)."""
    f32, i64 = np.float32, np.int64
    scale, offset = forward or (em.const("unit_scale", np.ones(2, f32)), em.const("no_offset", np.zeros(2, f32)))
    h_axis, w_axis = hw_axes(layout)
    wh = em.op("Gather", [em.op("Shape", [caller], dtype=i64, shape=[4]), em.const("wh_axes", [w_axis, h_axis], i64)],
               {"axis": 0}, dtype=i64, shape=[2])
    size = em.op("Cast", [wh], {"to": onnx.TensorProto.FLOAT}, dtype=f32, shape=[2])
    return em.op("Concat", [scale, offset, size], {"axis": 0}, dtype=f32, shape=[6])


def _free_batch(graph: gs.Graph, patched: gs.Variable, model_name: str) -> None:
    """Let the model run on the batch the input steps make (a crop per box, twice with the flip test) although it
    was exported for a static batch: every shape the export recorded is dropped (shape inference finds them
    again) and the outputs' first dim becomes symbolic. If, Loop and Scan bodies lose their sizes too, keeping
    their ranks (a branch's output declared [1, 17, 64, 48] made the If's output batch 1 again: the flip average's
    Split of 1 failed the checker). A Reshape that writes the batch into the model (in a body or a model-local
    function too) cannot be freed: refused, naming it."""
    subgraphs = list(graph.subgraphs(recursive=True))
    for node in (*graph.nodes, *(node for body in (*subgraphs, *graph.functions) for node in body.nodes)):
        target = _constant_values(node.inputs[1]) if node.op == "Reshape" else None
        if target is not None and target.size and target.flat[0] > 0 and _constant_values(node.inputs[0]) is None:
            named = repr(node.name) if node.name else f"(unnamed, output {node.outputs[0].name!r})"
            raise ModelError(f"Reshape {named} writes a batch of {target.flat[0]} into the model "
                             f"(shape {target.tolist()}), so it cannot run on one crop per box",
                             path=model_name, fix="export the model with a dynamic batch (torch.onnx.export "
                                                  "dynamic_axes={input: {0: 'N'}}), or drop crop_boxes/flip_test")
    inputs = {id(v) for v in graph.inputs if v is not patched}
    outputs = set(map(id, graph.outputs))
    main = graph.tensors()
    for tensor in main.values():
        if isinstance(tensor, gs.Constant) or id(tensor) in inputs or not tensor.shape:
            continue
        tensor.shape = ["crops", *tensor.shape[1:]] if id(tensor) in outputs else None
    for subgraph in subgraphs:  # a body's inputs and outputs must keep a rank; the main graph's tensors are done
        for name, tensor in subgraph.tensors().items():
            if not isinstance(tensor, gs.Constant) and tensor.shape and name not in main:
                tensor.shape = [None] * len(tensor.shape)


def _constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The values of an initializer or a Constant node's output; None for a computed tensor."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if producer is not None and producer.op == "Constant" and isinstance(producer.attrs.get("value"), gs.Constant):
        return np.asarray(producer.attrs["value"].values)
    return None


def _splice_output(section: OutputSection, graph: gs.Graph, em: Emitter, plan: SplicePlan, model_name: str,
                   facts: ModelFacts, extras: dict[str, gs.Variable], in_use: frozenset[str]):
    names = [v.name for v in graph.outputs]
    wanted = section.targets() or (None,)
    target_names = [pick(names, name, "output", "output.target", model_name) for name in wanted]
    targets = [next(v for v in graph.outputs if v.name == name) for name in target_names]
    for output in targets:
        _numpy_dtype(output, "output", model_name)
    target = targets[0]
    plan.output_target = ", ".join(target_names)
    env: dict = {"output": target, **extras}
    if len(targets) > 1:  # each readable by its name too (simcc_decode reads simcc_x and simcc_y)
        taken = [name for name in target_names if name in RESERVED_KEYS or name in env]
        if taken:
            raise ModelError(f"output.target names {taken}, which the steps use for their own tensors",
                             path=model_name, fix="rename the model output(s) before patching")
        env.update(zip(target_names, targets))
    for index, step in enumerate(section.steps):
        where = f"output.steps[{index}].{step.step_name}"
        # the batch of what the step reads: after flip_average, the crops' (the maps' was twice that, and a crop's
        # `center` declared under its name made the keypoints' batch unknown)
        batch = env["output"].shape[0] if env["output"].shape else None
        for extra in step.extra_inputs(batch):
            if extra.name not in env:
                env[extra.name] = _add_input(graph, extra, where, model_name, in_use)
        missing = [key for key in step.reads if key not in env]
        if GEOMETRY in missing:
            raise ModelError(f"{where} maps results back through the input steps, and the recipe has none",
                             path=model_name, fix="add the input section that feeds the model (resize, ...)")
        if missing:
            example = " or ".join(producers(missing)) or "heatmap_argmax"
            raise ModelError(f"{where} needs {', '.join(missing)}, which no earlier step produces", path=model_name,
                             fix=f"add the step that produces it earlier (e.g. {example})")
        try:
            env.update(step.build(em.scoped(step.step_name), env, facts))
        except StepError as exc:
            raise step_error(exc, where, model_name) from None
        plan.notes += [f"{where}: {note}" for note in step.notes(facts)]
    existing = in_use | set(graph.tensors())
    new_outputs = []
    for key, name in section.output_names().items():
        var = env[key]
        if name != var.name and name in existing:
            raise ModelError(f"output name {name!r} is already a tensor in the model", path=model_name,
                             fix=f"choose another name under output.names.{key}")
        var.name = name
        new_outputs.append(var)
    # the results take the (first) patched output's place; every other model output passes through unchanged
    patched = {id(t) for t in targets}
    others = [v for v in graph.outputs if id(v) not in patched]
    position = graph.outputs.index(target)
    kept = [v for v in graph.outputs if id(v) in patched] if section.keep_original else []
    graph.outputs = [v for v in graph.outputs[:position] if id(v) not in patched] + new_outputs + kept + [
        v for v in graph.outputs[position + 1:] if id(v) not in patched]
    plan.outputs_added = [v.name for v in new_outputs]
    plan.outputs_kept = [v.name for v in others] + [v.name for v in kept]
    plan.outputs_removed = [] if section.keep_original else [t.name for t in targets]
    plan.nodes += [n.name for n in graph.nodes if n.name.startswith(em.prefix + "/")]


def _signature(var: gs.Variable) -> Signature:
    dtype = np.dtype(var.dtype).name if var.dtype is not None else "?"
    shape = None if var.shape is None else tuple(d if isinstance(d, int) and d > 0 else (d or None) for d in var.shape)
    return Signature(var.name, dtype, shape)


def _export(graph: gs.Graph, original: onnx.ModelProto, recipe: Recipe, applied: list[dict],
            network_sha256: str | None) -> onnx.ModelProto:
    patched = gs.export_onnx(graph, do_type_check=True)
    patched.ir_version = original.ir_version
    del patched.opset_import[:]
    patched.opset_import.extend(original.opset_import)
    for key in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(patched, key, getattr(original, key))
    _overloads_restored(patched)  # and the functions as they were: the splice changes none of them, and
    del patched.functions[:]  # onnx-graphsurgeon writes each overload under one name (round 97)
    patched.functions.extend(original.functions)
    if original.ir_version < 4:  # IR 3 requires every initializer to be listed as a graph input
        listed = {i.name for i in patched.graph.input}
        patched.graph.input.extend(
            onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            for t in patched.graph.initializer if t.name not in listed
        )
    del patched.metadata_props[:]
    for prop in original.metadata_props:
        if prop.key != PROVENANCE_KEY:
            patched.metadata_props.add(key=prop.key, value=prop.value)
    entry = {"recipe": recipe.name, "recipe_sha256": recipe.sha256, "tool": f"graphsurgery {__version__}"}
    if recipe.file_sha256:
        entry["recipe_file_sha256"] = recipe.file_sha256
    if network_sha256:
        entry["model_sha256"] = network_sha256
    patched.metadata_props.add(key=PROVENANCE_KEY, value=json.dumps([*applied, entry]))
    return patched


def _fill_output_shapes(patched: onnx.ModelProto, plan: SplicePlan) -> None:
    """Give the new outputs the shapes shape inference finds (dims the model had stay concrete)."""
    inferred = onnx.shape_inference.infer_shapes(shapes_only(patched), strict_mode=False)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for output in patched.graph.output:
        if output.name in known and not output.type.tensor_type.HasField("shape"):
            output.type.CopyFrom(known[output.name].type)
    plan.outputs = [Signature(o.name, onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name,
                              tuple(d.dim_value or d.dim_param or None for d in o.type.tensor_type.shape.dim)
                              if o.type.tensor_type.HasField("shape") else None)
                    for o in patched.graph.output]
