"""A model cut between tensors, to run a part of it alone: verify's decoder probe, what nms reads and where the crops
sample (`decoder_probe`, `nms_reads`, `crop_positions`), and `chain --check`'s chained model at its glue.

The cut keeps the nodes its ends are computed with, from the tensors it is fed, with what their If, Loop and Scan
bodies read from the graph around them and the local functions they call, in bodies and functions too. onnx's
Extractor, which verify cut with, follows node inputs alone: it dropped a node or a constant only a body read (the
probe went unrun, and a wrong decoder inside an If PASSed verify) and a function only a body called (a cut ONNX
Runtime refused: a right patched model was exit 2), and it raised on any sparse initializer or quantization
annotation in the graph (exit 3; round 81). `chain --check` had cut by hand since round 80; both cut here now.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

from graphsurgery.model import call_key, function_key, node_reads, outer_reads


def needed_nodes(graph: onnx.GraphProto, outputs: Collection[str],
                 reads: Callable[[onnx.NodeProto], Collection[str]] = node_reads) -> list[onnx.NodeProto]:
    """The nodes of `graph` that its `outputs` are computed with (their subgraphs' reads from outside included;
    `reads=lambda node: node.input` follows node inputs alone, as onnx's Extractor does), in the graph's order. An
    empty name is an optional input or output left out, made and read by none (round 77: a Resize's "" roi made the
    dead node whose optional output was "" needed)."""
    producers = {name: node for node in graph.node for name in node.output if name}
    wanted, pending, seen = set(), list(outputs), set()
    while pending:
        name = pending.pop()
        node = producers.get(name)
        if name in seen or node is None:
            continue
        seen.add(name)
        wanted.add(id(node))
        pending.extend(reads(node))
    return [node for node in graph.node if id(node) in wanted]


def called_functions(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto]) -> list[onnx.FunctionProto]:
    """The local functions of `model` that `nodes` call, in their If, Loop and Scan bodies too, and those that these
    call, in the model's order (by `function_key`: a right patch calling one of two overloads was exit 2, "local:G(-1)
    is not a registered function"; round 82)."""
    local = {function_key(function): function for function in model.functions}
    called, pending = set(), list(nodes)
    while pending:
        node = pending.pop()
        key = call_key(node)
        if key in local and key not in called:
            called.add(key)
            pending.extend(local[key].node)
        for attribute in node.attribute:
            for graph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                pending.extend(graph.node)
    return [function for function in model.functions if function_key(function) in called]


def cut_between(proto: onnx.ModelProto, inputs: Sequence[str], starts: dict[str, np.ndarray], ends: Sequence[str],
                path: Path) -> bool:
    """`proto` cut from the tensors `inputs` and `starts` (fed the values given, by name) to the tensors `ends`,
    saved at `path`; False where its constants are external data (a model over 2 GB saves them beside it: the cut,
    saved elsewhere, would not find them), a tensor it takes or gives has no type and shape, as declared or as
    shape inference finds them (a node a user added, the graph saved without value_info; a step's tensor declared
    with its type alone, which the checker refuses as an output), or the cut reads what it is not fed
    (`outer_reads`: a step before nms reading the image's shape), which a runtime refused as an invalid model,
    naming verify's own scratch file."""
    graph = proto.graph
    typed = {value.name: value for value in (*graph.value_info, *graph.input, *graph.output)}
    for name, value in starts.items():  # declared with its type alone (the image crop_boxes cuts from), OpenVINO
        # refused the cut: "Parameter operation with dynamic rank" (round 76)
        if not _shaped(typed.get(name)):
            typed[name] = _declared_as(name, value)
    fed = [*inputs, *starts]
    if not all(_shaped(typed.get(name)) for name in (*fed, *ends)):
        try:
            inferred = onnx.shape_inference.infer_shapes(proto).graph
        except (onnx.shape_inference.InferenceError, ValueError):
            return False
        typed.update({value.name: value for value in (*inferred.value_info, *inferred.output)
                      if not _shaped(typed.get(value.name))})
        if not all(_shaped(typed.get(name)) for name in (*fed, *ends)):
            return False
    kept = needed_nodes(graph, ends, lambda node: node_reads(node) - set(fed))
    reads = {name for node in kept for name in node_reads(node)} - set(fed)
    named = (reads | {name for node in kept for name in node.output}) - {*fed, *ends}
    cut = onnx.helper.make_graph(
        kept, f"{graph.name} cut", [typed[name] for name in fed], [typed[name] for name in ends],
        initializer=[tensor for tensor in graph.initializer if tensor.name in reads],
        sparse_initializer=[tensor for tensor in graph.sparse_initializer if tensor.values.name in reads],
        value_info=[value for name, value in typed.items() if name in named])
    if any(uses_external_data(tensor) for tensor in (*cut.initializer, *(s.values for s in cut.sparse_initializer))) \
            or outer_reads(cut):
        return False
    # IR 4 at least: the cut lists no constant among its inputs, which IR 3 wants (ONNX Runtime refused a cut whose
    # body read one, "Graph ctor should have created NodeArg for initializer": a right patch was exit 2; round 82)
    onnx.save(onnx.helper.make_model(cut, ir_version=max(proto.ir_version, 4), opset_imports=proto.opset_import,
                                     producer_name="graphsurgery", functions=called_functions(proto, kept)),
              str(path))
    return True


def _shaped(value: onnx.ValueInfoProto | None) -> bool:
    return value is not None and value.type.tensor_type.HasField("shape")


def _declared_as(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    """A start of the cut where the model declares it nowhere: a model re-saved by a tool that drops value_info (or
    whose network output is no longer a graph output) was an internal error, "names were not found in value_infos"
    (round 49). Its type and size are those of the value it is fed."""
    return onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype),
                                              list(value.shape))


def declared_type(path: Path, name: str) -> np.dtype:
    """The element type the cut graph at `path` declares for its input `name`, read without the checker: the cut is
    verify's own file, made of the model `model_signature` checked."""
    cut = onnx.load(str(path), load_external_data=False)
    [value] = [value for value in cut.graph.input if value.name == name]
    return onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
