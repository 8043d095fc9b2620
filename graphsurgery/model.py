"""Questions asked of a loaded ONNX model, answered in one place: its opset, the inputs fed at run time, the
recipes applied to it, and the typed facts the steps need (`ModelFacts`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from graphsurgery.errors import ModelError, node_named, quoted
from graphsurgery.recipe import Recipe
from graphsurgery.steps.base import Dim, SizedStep, hw_axes, with_hw

PROVENANCE_KEY = "graphsurgery.provenance"
#: Ops that only reshape or rename: a model ending in Softmax → one of these still ends in a Softmax
PASS_THROUGH_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Dropout"}
#: Ops that move or keep some of the values they read and compute none: a Softmax → Transpose (or → Slice of some
#: classes) still ends in a Softmax; its values are probabilities (round 104: a second softmax was given to them)
REARRANGING_OPS = {"Transpose", "Slice"}
#: An elementwise op that leaves the tensor as it is, by the constant that does so (× 1, ÷ 1, + 0, − 0)
NEUTRAL = {"Mul": 1.0, "Div": 1.0, "Add": 0.0, "Sub": 0.0}
#: If nodes at most whose branches `output_producer` walks one inside another's walk (each a recursion)
MOST_BRANCH_WALKS = 64
#: A Cast to one of these keeps what made its input (a float16 model converted with keep_io_types ends in Softmax →
#: Cast to float32)
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.BFLOAT16})


def model_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelError("the model imports no default-domain (ai.onnx) opset", fix="re-export the model")


def real_inputs(proto: onnx.ModelProto) -> list[str]:
    """Graph inputs that are fed at run time (initializers listed as inputs do not count)."""
    initializers = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in initializers]


def provenance(proto: onnx.ModelProto) -> list[dict]:
    """The recipes applied to this model so far, oldest first (`provenance_entries` of its metadata)."""
    for prop in proto.metadata_props:
        if prop.key == PROVENANCE_KEY:
            return provenance_entries(prop.value)
    return []


def provenance_entries(text: str) -> list[dict]:
    """The entries of a recorded provenance that are objects (an ONNX model's metadata or an IR's rt_info, written
    by hand or by another tool, may hold anything: numbers, nulls, nesting deep enough to overflow the parser)."""
    try:  # NaN and Infinity are no JSON: Python's parser takes them, and `inspect --json` printed them
        entries = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return []
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def applied_before(recipe, proto: onnx.ModelProto) -> bool:
    """Whether `recipe` (a Recipe) was applied to this model already: its provenance names it."""
    return any(recipe.made(entry) for entry in provenance(proto))


def _not_json(constant: str):
    """`json.loads`' hook for NaN, Infinity and -Infinity: refused, as strict JSON refuses them."""
    raise ValueError(f"{constant} is not JSON")


def openvino_caveats(proto: onnx.ModelProto) -> list[str]:
    """What OpenVINO computes differently from the ONNX spec in this model, one line each with the way out.
    Measured with OpenVINO 2026.4: its ONNX reader drops Resize's `antialias` (an antialiased downscale then
    differs by up to 1.69 in a classifier's logits), and reads a bfloat16 tensor held in `int32_data` (as the spec
    allows) as integers, 1.5 as 16320 (round 57: `convert` wrote that IR, exit 0); and answers an If whose branches
    read an output of the model with that output (round 97: a `peak` beside the heatmaps came out as the heatmaps;
    read through an Identity, it is right)."""
    from onnx.external_data_helper import _get_all_tensors

    caveats = []
    for node in proto.graph.node:
        if node.op_type == "Resize" and any(a.name == "antialias" and a.i for a in node.attribute):
            caveats.append(f"OpenVINO ignores antialias on {node_named(node)}: it resizes as without it, so its "
                           "answers differ from ONNX Runtime's; run this model on ONNX Runtime, or drop antialias")
    outputs = {value.name for value in proto.graph.output}
    for graph in nested_graphs(proto.graph):
        for node in graph.node:
            read = sorted(outputs & (node_reads(node) - set(node.input))) if node.op_type == "If" else []
            if read and onnx_op(node):
                caveats.append(f"OpenVINO answers {node_named(node)} with the model output {quoted(read[0])} that "
                               "its branches read, not with what they compute, so its answers differ from ONNX "
                               "Runtime's; run this model on ONNX Runtime, or have the branches read a copy of "
                               f"{quoted(read[0])} (an Identity)")
    typed = [tensor.name for tensor in _get_all_tensors(proto)
             if tensor.data_type == onnx.TensorProto.BFLOAT16 and len(tensor.int32_data)]
    if typed:
        caveats.append(f"OpenVINO reads the bfloat16 tensor {quoted(typed[0])}"
                       f"{f' and {len(typed) - 1} more' if len(typed) > 1 else ''}, held in int32_data, as integers "
                       "(1.5 as 16320), so its answers differ from ONNX Runtime's; re-save such tensors as raw_data "
                       "(onnx.numpy_helper.from_array)")
    return caveats


def all_nodes(proto: onnx.ModelProto):
    """Every node: the graph's, its subgraphs' (If, Loop, Scan bodies) and the model's functions'."""
    pending = [list(proto.graph.node), *(list(f.node) for f in proto.functions)]
    while pending:
        for node in pending.pop():
            yield node
            for attr in node.attribute:
                pending += [list(g.node) for g in (*([attr.g] if attr.HasField("g") else ()), *attr.graphs)]


def function_key(function: onnx.FunctionProto, rename: Callable[[str], str] = str) -> tuple[str, str, str]:
    """A local function as its calls name it: domain, name (as `rename` makes it) and overload. Two overloads of one
    name (IR 10) are two functions: known by name alone, the last one stood for both (round 82: verify's cut kept
    what the other called, and the size of a call was that of the other's body, so one expanding to millions of
    nodes went to the checker, which ran on until killed at 2 minutes)."""
    return function.domain, rename(function.name), function.overload


def call_key(node: onnx.NodeProto) -> tuple[str, str, str]:
    """The `function_key` of the local function `node` calls, if it calls one."""
    return node.domain, node.op_type, node.overload


def node_reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads: its inputs, and those its subgraphs (If, Loop, Scan) read from outside."""
    names = set(node.input)
    for attribute in node.attribute:
        for graph in [attribute.g, *attribute.graphs]:
            names |= outer_reads(graph)
    return names


def outer_reads(graph: onnx.GraphProto) -> set[str]:
    """The names `graph`'s nodes read (their subgraphs' too) that it neither takes, holds nor makes: an If, Loop or
    Scan body's reads from the graph around it, or a cut graph's reads from nowhere (round 70: onnx's Extractor
    follows node inputs only, and a cut missed what a body read, or the caller's image a step read)."""
    made = {name for node in graph.node for name in node.output}
    held = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer} | {
        tensor.values.name for tensor in graph.sparse_initializer}
    return {name for node in graph.node for name in node_reads(node)} - made - held - {""}


def nested_graphs(graph: onnx.GraphProto):
    """`graph` and every If, Loop and Scan body in it, however deep (not the model's functions: their own scope)."""
    pending = [graph]
    while pending:
        graph = pending.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                pending += [*([attr.g] if attr.HasField("g") else ()), *attr.graphs]


def names_in_use(proto: onnx.ModelProto) -> tuple[set[str], set[str]]:
    """The tensor names and the node names of the main graph and its subgraphs. The tensors share one namespace: a
    subgraph's tensor named like one of the main graph makes ONNX Runtime refuse the model ("Graph must be in single
    static assignment form"), so a tensor the splice adds must be named like none of them."""
    tensors, nodes = set(), set()
    for graph in nested_graphs(proto.graph):
        tensors.update(value.name for value in (*graph.input, *graph.output, *graph.initializer))
        for node in graph.node:
            tensors.update((*node.input, *node.output))
            nodes.add(node.name)
    return tensors, nodes


def shapes_only(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model for shape inference: large initializers lose their data (weights are not shapes, and
    inference on HRNet-W32's 114 MB would serialise them all)."""
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    for tensor in light.graph.initializer:
        if tensor.ByteSize() > 4096:
            tensor.ClearField("raw_data")
    return light


def output_producer(proto: onnx.ModelProto, name: str) -> str | None:
    """The op type that computes output `name`, looking through ops that only reshape or rename (a Paddle export
    ends in Softmax → Identity; a caffe2 one in Softmax → Reshape; a float16 one in Softmax → Cast to float32):
    what `softmax: {skip_if_present}` asks.
    Calls of model-local functions are looked into, and out of to their arguments (round 97: torch's
    `export_modules_as_functions` ends a classifier in a call whose body ends in Softmax, which was given a second
    one), and so are an If's branches (their op where both agree, else "If"); an op of another domain is named with
    its domain: a function `local.Softmax` is not ONNX's (its body may be a LogSoftmax).
    Looked through too: a Transpose, a Slice, and a Mul, Div, Add or Sub that changes nothing (`_kept`); a softmax
    written out (Exp → ReduceSum → Div, LogSoftmax → Exp) is named "Softmax" (`_written_softmax`)."""
    return _output_walk(proto, name)[0]


def _output_walk(proto: onnx.ModelProto, name: str) -> tuple[str | None, list]:
    """`output_producer`'s answer and the nodes it walked, the output's first: (node, its graph's producers), the
    last the node that made it; (None, None) for an If."""
    functions = {function_key(function): function for function in proto.functions}
    # each step walks one node back: a chain is no longer than the nodes, each function's expanded at each call
    budget = [sum(1 for _ in all_nodes(proto)) * (len(functions) + 1) + 1]
    initializers = {tensor.name: tensor for tensor in proto.graph.initializer}
    path: list = []
    made = _made_by(name, [(_producers(proto.graph.node), None, None)], functions, budget, initializers, path)
    return made, path


def softmax_axes(proto: onnx.ModelProto, path: list, shape: tuple[Dim, ...] | None) -> frozenset[int] | None:
    """The axes of the model output (of declared `shape`) the softmax that made it normalizes over, its axes of size
    1 left out, from `_output_walk`'s `path`; None where that is not known (a Reshape on the way, an If, no declared
    rank). Round 107: a Softmax over another axis than the recipe's (a torch `dim=1` on [N, 2, 5], a Softmax over 5
    then a Transpose, a ReduceSum over the batch) was taken for the recipe's softmax and skipped, and verify's twin
    skipped it too."""
    if shape is None or not path or any(node is None for node, _ in path):
        return None
    rank, opset = len(shape), model_opset(proto)
    initializers = {tensor.name: tensor for tensor in proto.graph.initializer}
    made, producers = path[-1]
    if made.op_type == "Div":
        axes = _summed_axes(producers[made.input[1]], rank, opset, producers, initializers)
    else:
        axes = _softmax_op_axes(producers[made.input[0]] if made.op_type == "Exp" else made, rank, opset)
    for node, _ in reversed(path[:-1]):
        if axes is None or node.op_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            return None
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), list(range(rank))[::-1])
            axes = {perm.index(axis) for axis in axes} if sorted(perm) == list(range(rank)) else None
    return None if axes is None else frozenset(axis for axis in axes if shape[axis] != 1)


def _softmax_op_axes(node: onnx.NodeProto, rank: int, opset: int) -> set[int] | None:
    """The axes a Softmax or LogSoftmax node normalizes over: its `axis`, and below opset 13 every axis after it
    too (it flattens its input to 2-D there)."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        return None
    return {axis} if opset >= 13 else set(range(axis, rank))


def _summed_axes(node: onnx.NodeProto, rank: int, opset: int, producers: dict, initializers: dict) -> set[int] | None:
    """The axes a written-out softmax's ReduceSum adds up: its `axes` (an input from opset 13), every axis when
    it names none."""
    if opset >= 13:
        axes = _constant(node.input[1], producers, initializers) if len(node.input) > 1 and node.input[1] else ()
    else:
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), ())
    if axes is None:
        return None
    axes = {int(axis) + rank if axis < 0 else int(axis) for axis in np.ravel(axes)}
    if not axes:
        empty_is_noop = any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute)
        return None if empty_is_noop else set(range(rank))
    return axes if all(0 <= axis < rank for axis in axes) else None


def _float_cast(node: onnx.NodeProto) -> bool:
    """A Cast to a float type: its output is what made its input, in other precision (round 102: a float16
    classifier's Softmax → Cast to float32 was given a second softmax, and verify PASSed it)."""
    return node.op_type == "Cast" and any(a.name == "to" and a.i in FLOAT_TYPES for a in node.attribute)


def _training(node: onnx.NodeProto, producers: dict, initializers: dict | None) -> bool:
    """A Dropout whose `training_mode` may be true (not a constant false): it drops values at random and scales
    the rest up, so its output is not what made its input (round 107, round 103's leftover: looked through, a
    Softmax → Dropout in training mode skipped the recipe's softmax)."""
    if node.op_type != "Dropout" or len(node.input) < 3 or not node.input[2]:
        return False
    mode = _constant(node.input[2], producers, initializers)
    return mode is None or bool(np.any(mode))


def _kept(node: onnx.NodeProto, producers: dict, initializers: dict) -> str | None:
    """The input whose values `node` passes on unchanged, or only rearranged (`REARRANGING_OPS`, a `NEUTRAL` op
    by a constant of that value: a Mul by 1 an exporter left); None for any other node. `initializers` are the main
    graph's (None inside a function body, whose names are its own)."""
    if node.op_type in REARRANGING_OPS and node.input:
        return node.input[0]
    if node.op_type not in NEUTRAL or len(node.input) != 2:
        return None
    for kept, other in ((0, 1), (1, 0)) if node.op_type in ("Mul", "Add") else ((0, 1),):
        value = _constant(node.input[other], producers, initializers)
        if value is not None and value.dtype.kind == "f" and value.size and (value == NEUTRAL[node.op_type]).all():
            return node.input[kept]
    return None


def _written_softmax(node: onnx.NodeProto, producers: dict) -> bool:
    """Whether `node` ends a softmax written out: exp(x) / ReduceSum(exp(x)) (a torch export of a hand-written
    softmax, with or without a ReduceMax taken off first), or exp(LogSoftmax(x)) (round 104: both got a second
    softmax, and verify's twin did the same)."""
    made = [producers.get(name) for name in node.input]
    if node.op_type == "Exp" and made and made[0] is not None:
        return onnx_op(made[0]) and made[0].op_type == "LogSoftmax"
    if node.op_type != "Div" or len(made) != 2 or None in made:
        return False
    exp, total = made
    # a sum kept with keepdims 0 lines up with the last axes, not the summed one: no softmax (round 107)
    kept_dims = all(a.i for a in total.attribute if a.name == "keepdims")
    return (onnx_op(exp) and exp.op_type == "Exp" and onnx_op(total) and total.op_type == "ReduceSum"
            and total.input[:1] == node.input[:1] and kept_dims)


def _constant(name: str, producers: dict, initializers: dict | None) -> np.ndarray | None:
    """The values of `name` where a Constant node or (outside a function) an initializer holds them, else None."""
    from graphsurgery.folding import plain_constants, small_value  # folding imports this module

    made = producers.get(name)
    return small_value(plain_constants([], [made]) if made is not None else initializers or {}, name)


def _made_by(name: str, frames: list, functions: dict, budget: list[int], initializers: dict, path: list,
             depth: int = 0) -> str | None:
    """`output_producer`'s walk from `name` in the innermost of `frames`: (producers, call, function) for the graph
    and each function body entered, (producers, None, None) for an If branch, whose other names are its graph's.
    Each node walked through or ending the walk is added to `path` with its graph's producers. `depth`: the If nodes
    whose branches this walk is in (each walked on past its If, out of the branch)."""
    while budget[0] > 0:
        budget[0] -= 1
        producers, call, function = frames[-1]
        node = producers.get(name)
        if node is None:  # a graph input; a name from around a branch; a function's argument: the call's input
            if len(frames) == 1:
                return None
            if function is not None:
                inputs = list(function.input)
                if name not in inputs or inputs.index(name) >= len(call.input):
                    return None
                name = call.input[inputs.index(name)]
            frames = frames[:-1]
        elif (onnx_op(node) and node.input and (node.op_type in PASS_THROUGH_OPS or _float_cast(node))
              and not _training(node, producers, None if _in_function(frames) else initializers)):
            path.append((node, producers))
            name = node.input[0]
        elif onnx_op(node) and (kept := _kept(node, producers, None if _in_function(frames) else initializers)):
            path.append((node, producers))
            name = kept
        elif onnx_op(node) and _written_softmax(node, producers):
            path.append((node, producers))
            return "Softmax"
        elif onnx_op(node) and node.op_type == "If":
            if depth >= MOST_BRANCH_WALKS:  # round 106: 500 If nodes one after another, each branch an Identity
                return "If"  # of the one before, overflowed Python's stack (an internal error)
            index = list(node.output).index(name)
            path.append((None, None))  # two branches: no one path
            made = {_made_by(branch.g.output[index].name, [*frames, (_producers(branch.g.node), None, None)],
                             functions, budget, initializers, [], depth + 1)
                    for branch in node.attribute if branch.name in ("then_branch", "else_branch")}
            return made.pop() if len(made) == 1 else "If"
        elif (called := None if onnx_op(node) else functions.get(call_key(node))) is not None and \
                list(node.output).index(name) < len(called.output):  # round 106: a call of more outputs than
            frames = [*frames, (_producers(called.node), node, called)]  # its function's was an IndexError
            name = called.output[list(node.output).index(name)]
        else:
            path.append((node, producers))
            return node.op_type if onnx_op(node) else f"{node.domain}.{node.op_type}"
    return None


def _in_function(frames: list) -> bool:
    return any(function is not None for _, _, function in frames)


def _producers(nodes) -> dict[str, onnx.NodeProto]:
    return {output: node for node in nodes for output in node.output}


def onnx_op(node: onnx.NodeProto) -> bool:
    """A node of ONNX's default domain (a local function named like an op there is ignored for the op)."""
    return node.domain in ("", "ai.onnx")


def image_input_name(recipe: Recipe, feeds: list[str], four_dimensional: list[str]) -> str | None:
    """The plain model's image input: the recipe's `input.target`, else the model's only real input, else its only
    4-D real input (others, such as a [1, K, 1, 1] bias, may be 4-D too: then nothing is guessed)."""
    target = recipe.input.target if recipe.input else None
    if target is None and len(feeds) == 1:
        target = feeds[0]
    if target is None:
        candidates = [name for name in four_dimensional if name in feeds]
        target = candidates[0] if len(candidates) == 1 else None
    return target


def fed_dims(recipe: Recipe, dims: list) -> list:
    """The image input's `dims` (model side) with a free height and width as the patched model feeds them: the last
    sized input step's `size` (resize, center_crop), or without one the caller's `tensor.shape`. Round 100: a YOLOv8
    exported with free H × W (ultralytics' dynamic=True) behind `resize: {size: [320, 320]}` was refused, "export
    the model with a fixed input size", though the patched model only ever feeds it 320 × 320; the probe measures
    its outputs, and `ModelFacts.input_size` is this size (round 103: a DFL or YOLOX head's grid needs it)."""
    section = recipe.input
    if section is None or len(dims) != 4:
        return dims
    sized = [step for step in section.steps if isinstance(step, SizedStep)]
    if sized:
        hw = sized[-1].size
    elif section.tensor.shape is not None:
        hw = tuple(section.tensor.shape[axis] for axis in hw_axes(section.tensor.layout))
    else:
        return dims
    if hw is None or not all(isinstance(side, int) for side in hw):
        return dims
    model_hw = (dims[axis] for axis in hw_axes(section.model.layout))
    return list(with_hw(tuple(dims), section.model.layout,
                        tuple(dim if isinstance(dim, int) and dim > 0 else side for dim, side in zip(model_hw, hw))))


@dataclass(frozen=True)
class ModelFacts:
    """What the steps and their twins need to know about the plain model; the splice and the twins both read it
    here, so they cannot disagree."""

    input_size: tuple[int, int] | None
    output_producer: str | None
    output_name: str
    input_shape: tuple[Dim, ...] | None = None  # the patched input's model-side shape (what input steps bind to)
    other_outputs: tuple[str, ...] = ()  # the model's outputs the steps do not read: the splice passes them through
    targets: tuple[str, ...] = ()  # every output the steps read, output_name first (output.target as a list)
    reads_float16: bool = False  # a target is float16: the values the steps decode are only that precise
    integer_outputs: tuple[str, ...] = ()  # the model's integer and bool outputs: passed through, compared exactly
    output_shape: tuple[Dim, ...] | None = None  # the first target's declared shape, where the graph declares it
    softmax_axes: frozenset[int] | None = None  # where a softmax made it: the axes it normalizes (`softmax_axes`)

    @classmethod
    def of(cls, proto: onnx.ModelProto, recipe: Recipe) -> ModelFacts:
        graph = proto.graph
        feeds = real_inputs(proto)
        shapes = {i.name: _declared_dims(i.type.tensor_type) for i in graph.input if i.name in feeds}
        wanted = image_input_name(recipe, feeds, [name for name, shape in shapes.items() if len(shape) == 4])
        shape = shapes.get(wanted)
        size = None
        if shape is not None and len(shape) == 4:
            nhwc = recipe.input is not None and recipe.input.model.layout == "NHWC"
            fed = fed_dims(recipe, list(shape))  # a free H × W: the size the recipe feeds (round 103)
            h, w = fed[1:3] if nhwc else fed[2:]
            size = (w, h) if isinstance(w, int) and isinstance(h, int) else None
        targets = (recipe.output.targets() if recipe.output else None) or (graph.output[0].name,)
        producer, path = _output_walk(proto, targets[0])
        output_shape = declared_shape(proto, targets[0])
        half = any(o.name in targets and o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
                   for o in graph.output)
        return cls(size, producer, targets[0], shape, tuple(o.name for o in graph.output if o.name not in targets),
                   targets, half, tuple(o.name for o in graph.output if _integer(o.type.tensor_type.elem_type)),
                   output_shape, softmax_axes(proto, path, output_shape) if producer == "Softmax" else None)


def declared_shape(proto: onnx.ModelProto, name: str) -> tuple[Dim, ...] | None:
    """The shape a graph declares for its output or value `name` (`_declared_dims`); None where it declares none."""
    declared = next((o.type.tensor_type for o in (*proto.graph.output, *proto.graph.value_info) if o.name == name),
                    None)
    return _declared_dims(declared) if declared is not None and declared.HasField("shape") else None


def _declared_dims(tensor: onnx.TypeProto.Tensor) -> tuple[Dim, ...]:
    """A tensor type's dims as declared: a number, else its name, else None (unknown)."""
    return tuple(d.dim_value if d.dim_value > 0 else (d.dim_param or None) for d in tensor.shape.dim)


def _integer(elem_type: int) -> bool:
    """Whether an ONNX element type holds integers or booleans (compared exactly, not within a float tolerance)."""
    if elem_type not in onnx.helper.get_all_tensor_dtypes():
        return False
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).kind in "biu"
