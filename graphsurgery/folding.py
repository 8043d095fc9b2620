"""What the runtimes compute from a model's constants while they load it, judged before they do.

ONNX Runtime folds constant subgraphs when it opens a session and OpenVINO while it converts, before any time
limit or error handling of ours can act: a MatMul of two huge constants ran for many minutes, and some values kill
a kernel outright (the smallest integer divided by −1: SIGFPE; a CumSum of an empty tensor: SIGSEGV). `check_folding`
refuses those from the constants' values and shapes, in one line naming the node (the thirteenth and seventeenth
hostile rounds measured each case).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

from graphsurgery.errors import ModelError, node_named
from graphsurgery.model import all_nodes, call_key, function_key, shapes_only

#: Multiply-adds a model may ask of ops whose inputs are all constants. The runtimes compute them while they load
#: the model (OpenVINO folds them in `convert`, ONNX Runtime when it opens a session), before anything can be
#: interrupted by a time limit: a MatMul of two 30,000² ConstantOfShape ran for many minutes. Measured on the Xeon:
#: 4000³ = 6.4 × 10^10 took OpenVINO 13 s to fold and ONNX Runtime 1.3 s; 2000³ = 8 × 10^9 took 1.6 s and 0.2 s.
MAX_CONSTANT_MACS = 2 * 10**10

#: Ops whose work grows faster than their tensors (elementwise ops on huge constants are bounded by the memory).
_MAC_OPS = {"MatMul", "Gemm", "MatMulInteger", "Conv", "ConvTranspose", "ConvInteger", "QLinearConv",
            "QLinearMatMul"}


def check_folding(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse what the runtimes would compute from the model's constants while they load it, before any time limit
    can stop them: in the main graph a MatMul, Gemm or convolution over MAX_CONSTANT_MACS multiply-adds, an integer
    Div that may divide the smallest integer by −1 (`_check_integer_division`) and the values that kill a kernel
    (`_check_folded_kernels`); the last two in If/Loop/Scan bodies and functions too (`_check_folded_bodies`); and
    attributes that kill ONNX Runtime whatever the input (`_check_attribute_crashes`). Main-graph shapes and types
    come from onnx's shape inference (with data propagation: a ConstantOfShape's shape may be computed), run only
    when such a node exists: models whose heavy ops, divisions and fragile kernels read an input pay nothing."""
    _check_attribute_crashes(proto, path)
    _check_folded_bodies(proto, path)
    graph = proto.graph
    fed = {value.name for value in graph.input} - {tensor.name for tensor in graph.initializer}
    for node in graph.node:  # topological order, as the checker requires
        if any(name in fed for name in node.input) or any(a.HasField("g") or a.graphs for a in node.attribute):
            fed.update(node.output)
    folded = [node for node in graph.node if node.domain in ("", "ai.onnx") and not any(n in fed for n in node.input)]
    heavy = [node for node in folded if node.op_type in _MAC_OPS]
    divisions = [node for node in folded if node.op_type == "Div" and len(node.input) == 2]
    kernels = [node for node in folded if node.op_type in _FOLDING_CRASHES]
    if not heavy and not divisions and not kernels:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(shapes_only(proto), data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        return  # the checker passed it; what inference cannot follow, the runtimes judge
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    shapes = {value.name: [dim.dim_value if dim.HasField("dim_value") else None
                           for dim in value.type.tensor_type.shape.dim]
              for value in values if value.type.tensor_type.HasField("shape")}
    shapes |= {tensor.name: list(tensor.dims) for tensor in graph.initializer}
    for node in heavy:
        macs = _multiply_adds(node, shapes)
        if macs is not None and macs > MAX_CONSTANT_MACS:
            raise ModelError(f"{node_named(node)} multiplies constants only, {macs:,.0f} multiply-adds (at most "
                             f"{MAX_CONSTANT_MACS:,}): the runtimes compute it while they load the model, for "
                             "minutes", path=path,
                             fix="re-export the model with that constant computed and stored as a weight")
    types = {value.name: value.type.tensor_type.elem_type for value in values}
    types |= {tensor.name: tensor.data_type for tensor in graph.initializer}
    constants = plain_constants(graph.initializer, graph.node)
    _check_integer_division(divisions, constants, types, path)
    _check_folded_kernels(kernels, constants, shapes, types, path)


#: Integer types whose division traps on x86 (idiv) for the smallest value by −1: SIGFPE, in ONNX Runtime (its
#: Div kernel, also at run time) and in OpenVINO's constant folding; the others come widened or checked.
_TRAPPING = {onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT64: np.int64}
#: The largest constant whose values are read (to look for −1, zero, an index out of range)
MAX_READ_BYTES = 1 << 20


def small_value(constants: dict, name: str) -> np.ndarray | None:
    """The values of the plain constant `name` (`plain_constants`), or None: absent, computed, external, over
    MAX_READ_BYTES, or unreadable (the checker judged the model; what is not read is not refused)."""
    tensor = constants.get(name)
    if tensor is None or uses_external_data(tensor) or tensor.ByteSize() > MAX_READ_BYTES:
        return None
    try:
        return onnx.numpy_helper.to_array(tensor)
    except (ValueError, TypeError):
        return None


def _check_integer_division(divisions: list, constants: dict, types: dict, path: Path) -> None:
    """Refuse an int32/int64 Div of constants alone whose divisor may be −1 while its dividend may be the smallest
    integer: ONNX Runtime folds it when it opens a session and OpenVINO while converting, and both died of SIGFPE.
    Values are read from plain constants (`small_value`); a divisor computed from constants is taken as possibly
    −1 (onnxsim or the exporter folds such divisions away)."""
    for node in divisions:
        integer = _TRAPPING.get(types.get(node.input[0]) or types.get(node.input[1]))
        if integer is None:
            continue
        dividend, divisor = small_value(constants, node.input[0]), small_value(constants, node.input[1])
        if divisor is not None and not (divisor == -1).any():
            continue
        if divisor is not None and dividend is not None and not (dividend == np.iinfo(integer).min).any():
            continue
        said = ("divides the smallest integer by −1, both constants" if divisor is not None and dividend is not None
                else "divides an integer computed from constants by −1" if divisor is not None
                else "divides integer constants by a divisor computed from constants (it may be −1)")
        raise ModelError(f"{node_named(node)} {said}: ONNX Runtime and OpenVINO compute it while they load the model, "
                         "and the smallest integer divided by −1 kills the process (SIGFPE)", path=path,
                         fix="re-export the model with that division folded (onnxsim), or negate (Neg) instead of "
                             "dividing by −1")


#: Ops whose kernels died by a signal, not an error, on some values of constants the runtimes compute while they load
#: the model (the seventeenth round): see `_check_folded_kernels`.
_FOLDING_CRASHES = {"Mod", "CumSum", "GatherND", "RoiAlign", "InstanceNormalization", "Unique", "STFT", "DFT"}


def plain_constants(initializers, nodes) -> dict:
    """The plain constants of a graph or function: its initializers and its Constant nodes' tensors, by name."""
    constants = {tensor.name: tensor for tensor in initializers}
    for node in nodes:
        if node.op_type != "Constant" or not node.output or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            if attr.ref_attr_name:  # a function's attribute, set by each call: no constant of the body itself (it
                continue  # was an internal error reading the models onnxscript and torch.onnx write)
            if attr.name == "value" and attr.HasField("t"):
                constants[node.output[0]] = attr.t
            elif attr.name in _LISTED_CONSTANTS:  # value_int(s), value_float(s): a scalar or a list
                kind, listed = _LISTED_CONSTANTS[attr.name]
                value = onnx.helper.get_attribute_value(attr)
                constants[node.output[0]] = onnx.numpy_helper.from_array(
                    np.array(value, dtype=kind).reshape(-1 if listed else ()))
    return constants


_LISTED_CONSTANTS = {"value_int": (np.int64, False), "value_ints": (np.int64, True),
                     "value_float": (np.float32, False), "value_floats": (np.float32, True)}


def _check_folded_bodies(proto: onnx.ModelProto, path: Path) -> None:
    """The refusals of `_check_folded_kernels` and of the smallest integer divided by −1 in If, Loop and Scan bodies
    and in model-local functions: both runtimes fold the constants there too (an If on an input's value included;
    OpenVINO while converting, ONNX Runtime opening a session). Shapes and types are the plain constants' own (no
    inference inside bodies); a body may read the constants of the graphs around it."""
    outer = plain_constants(proto.graph.initializer, proto.graph.node)
    scopes, pending = [], [proto.graph]
    while pending:
        for node in pending.pop().node:
            for attr in node.attribute:
                bodies = [*([attr.g] if attr.HasField("g") else ()), *attr.graphs]
                scopes += [(body.node, plain_constants(body.initializer, body.node)) for body in bodies]
                pending += bodies
    for scope in scopes:
        outer |= scope[1]
    scopes = [(nodes, outer, {}) for nodes, _ in scopes]
    scopes += [(function.node, plain_constants((), function.node), binding) for function in proto.functions
               for binding in _call_bindings(proto, function)]
    for nodes, constants, binding in scopes:
        known = set(constants)
        folded = []
        for node in nodes:  # a node of constants alone: its outputs count as constants for those that follow
            if node.domain in ("", "ai.onnx") and all(name in known for name in node.input if name) and not any(
                    attr.HasField("g") or attr.graphs for attr in node.attribute):
                known.update(node.output)
                folded.append(node)
        shapes = {name: list(tensor.dims) for name, tensor in constants.items()}
        types = {name: tensor.data_type for name, tensor in constants.items()}
        _check_integer_division([node for node in folded if node.op_type == "Div" and len(node.input) == 2],
                                constants, types, path)
        _check_folded_kernels([node for node in folded if node.op_type in _FOLDING_CRASHES], constants, shapes,
                              types, path, binding)


def _call_bindings(proto: onnx.ModelProto, function: onnx.FunctionProto) -> list[dict]:
    """The attribute values each call of `function` gives its body's references (`ref_attr_name`), over the
    function's defaults, one dict per distinct set (at least one: the defaults). Round 41: a Mod in a function whose
    fmod was a reference was judged as fmod 0, and a call with fmod=1 of the smallest integer by −1 went through,
    into the model `--upgrade-opset` inlines and OpenVINO then folds (SIGFPE). A call's own reference to an outer
    function's attribute is not followed."""
    defaults = {a.name: onnx.helper.get_attribute_value(a) for a in function.attribute_proto}
    bindings = {}
    for node in all_nodes(proto):
        if call_key(node) == function_key(function):
            given = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if not a.ref_attr_name}
            bindings.setdefault(repr(sorted({**defaults, **given}.items())), {**defaults, **given})
    return list(bindings.values()) or [defaults]


def _check_folded_kernels(kernels: list, constants: dict, shapes: dict, types: dict, path: Path,
                          binding: dict | None = None) -> None:
    """Refuse the main-graph nodes of constants that killed a runtime while it loaded the model: an integer Mod by
    zero (OpenVINO folding it: SIGFPE; ONNX Runtime refuses it) or, with fmod=1, of the smallest int32/int64 by −1;
    a CumSum over an empty tensor or along an axis out of its rank, a GatherND index out of its dim (OpenVINO:
    SIGSEGV, converting or compiling; ONNX Runtime refuses them; a CumSum of empty integers is computed); a RoiAlign
    (of some boxes) or InstanceNormalization of a tensor with an empty spatial dim (ONNX Runtime opening a session:
    SIGSEGV); an STFT with frames or a window of length zero (ONNX Runtime: SIGFPE); a DFT of length zero
    (OpenVINO compiling: SIGSEGV or SIGFPE); a Unique with an axis of a tensor with an
    empty dim (OpenVINO converting: SIGSEGV; ONNX Runtime: SIGABRT). Values are read from
    plain constants (`small_value`), shapes from onnx's shape inference; a function's attribute references from
    `binding` (`_call_bindings`)."""

    def read(name: str) -> np.ndarray | None:
        return small_value(constants, name)

    for node in kernels:
        first = shapes.get(node.input[0]) if node.input and node.input[0] else None
        empty = first is not None and 0 in first
        attrs = {a.name: binding[a.ref_attr_name] if a.ref_attr_name else onnx.helper.get_attribute_value(a)
                 for a in node.attribute if not a.ref_attr_name or a.ref_attr_name in (binding or {})}
        said, runtime, signal = None, "OpenVINO", "SIGSEGV"
        if node.op_type == "Mod" and len(node.input) == 2:
            divisor, kind = read(node.input[1]), types.get(node.input[0])
            if divisor is None or kind not in _INTEGER_TYPES:
                continue
            dividend, trapping, signal = read(node.input[0]), _TRAPPING.get(kind), "SIGFPE"
            if (divisor == 0).any():
                said = "takes an integer modulo zero"
            elif attrs.get("fmod") and trapping and (divisor == -1).any() and (
                    dividend is None or (dividend == np.iinfo(trapping).min).any()):
                said = "takes the smallest integer modulo −1 (fmod=1)"
        elif node.op_type == "CumSum" and len(node.input) == 2 and first is not None:
            axis = read(node.input[1])
            if empty and types.get(node.input[0]) not in _INTEGER_TYPES:
                said = "cumulates an empty tensor"
            elif axis is not None and axis.size == 1 and not -len(first) <= int(axis.reshape(())) < len(first):
                said = f"cumulates along axis {int(axis.reshape(()))} of a tensor of rank {len(first)}"
        elif node.op_type == "GatherND" and len(node.input) == 2 and first is not None:
            indices, batch = read(node.input[1]), attrs.get("batch_dims", 0)
            if indices is None or indices.ndim == 0 or indices.dtype.kind not in "iu":
                continue
            for j in range(min(indices.shape[-1], len(first) - batch)):
                dim = first[batch + j]
                if dim is not None and indices.size and (
                        (indices[..., j] < -dim).any() or (indices[..., j] >= dim).any()):
                    said = f"gathers an index out of range of dim {batch + j} (size {dim})"
                    break
        elif node.op_type in ("RoiAlign", "InstanceNormalization") and first is not None and 0 in first[2:] and (
                node.op_type == "InstanceNormalization" or 0 not in (shapes.get(node.input[1]) or [1])[:1]):
            said, runtime = "computes over a tensor with an empty spatial dim", "ONNX Runtime"
        elif node.op_type == "STFT" and len(node.input) > 2:
            length = read(node.input[3]) if len(node.input) > 3 and node.input[3] else None
            window = shapes.get(node.input[2]) if node.input[2] else None
            if (length is not None and length.size == 1 and int(length.reshape(())) == 0) or (window and 0 in window):
                said, runtime, signal = "cuts frames of length zero", "ONNX Runtime", "SIGFPE"
        elif node.op_type == "DFT" and len(node.input) > 1 and node.input[1]:
            length = read(node.input[1])
            if length is not None and length.size == 1 and int(length.reshape(())) == 0:
                said, signal = "transforms zero points", "SIGSEGV or SIGFPE"
        elif node.op_type == "Unique" and "axis" in attrs and empty:
            said = "finds the unique slices of a tensor with an empty dim"
        if said:
            raise ModelError(f"{node_named(node)} {said}: {runtime} computes it while it loads the model and dies of "
                             f"{signal}", path=path,
                             fix="re-export the model with that node folded (onnxsim) or removed")


def _check_attribute_crashes(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse the attributes that killed ONNX Runtime whatever the input (every node: the graph's, its bodies' and
    functions'; a function's attribute reference is not read): a RandomUniform(Like) whose `low` is not at most its
    `high` (above it, or NaN) and a RandomNormal(Like) whose `scale` is not positive (its generator asserts:
    SIGABRT); a Conv of `group` 0 (over no channels: SIGFPE; over some, an error)."""
    for node in all_nodes(proto):
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Conv" and any(a.name == "group" and a.type == onnx.AttributeProto.INT and a.i < 1
                                          for a in node.attribute):
            raise ModelError(f"{node_named(node)} has group {next(a.i for a in node.attribute if a.name == 'group')}"
                             ": a Conv has at least one (ONNX Runtime divided by a group of 0 and died of SIGFPE)",
                             path=path, fix="set the Conv's group to 1 or more")
        if node.op_type not in ("RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike"):
            continue
        values = {a.name: a.f for a in node.attribute if a.type == onnx.AttributeProto.FLOAT}
        uniform = "Uniform" in node.op_type
        low, high = (values.get("low", 0.0), values.get("high", 1.0)) if uniform else (0.0, values.get("scale", 1.0))
        if not low <= high or (not uniform and not high > 0):
            said = (f"draws between low {low} and high {high}" if uniform else f"draws with scale {high}")
            raise ModelError(f"{node_named(node)} {said}: ONNX Runtime's generator asserts on it and the run dies of "
                             "SIGABRT", path=path,
                             fix="set low at most high (RandomUniform) or a positive scale (RandomNormal)")


#: Every integer element type (Mod by zero traps in all of them)
_INTEGER_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                  onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def _multiply_adds(node: onnx.NodeProto, shapes: dict) -> int | None:
    """The multiply-adds of a MatMul/Gemm (output elements × the shared dim) or a convolution (output elements ×
    input channels per group × kernel elements; transposed: input elements × output channels per group × kernel
    elements), from known dims; None where a dim is unknown."""
    first = shapes.get(node.input[0]) if node.input else None
    out = shapes.get(node.output[0]) if node.output else None
    if not first or not out or None in first or None in out:
        return None
    if "Conv" in node.op_type:
        weights = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
        if not weights or None in weights:
            return None
        if node.op_type == "ConvTranspose":  # each input element spreads over its output channels' kernels
            return math.prod(first) * weights[1] * math.prod(weights[2:])
        return math.prod(out) * weights[1] * math.prod(weights[2:])
    transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
    return math.prod(out) * first[0 if transposed else -1]
