"""Whether a chained graph's two parts are the detector and the pose model, node for node and constant for constant.

`chain --check` compares the chained model's answers with the two models' on the caller's images, the pose part on
random boxes and its crop positions on many. Answers on a few images leave what those images do not reach: a wrong
constant in the detector's box arithmetic that shows on no row of those photos, a score threshold × 0.99, a pre-NMS
TopK of 301 for 300, a crop rounding that moves a pixel for a few boxes in a hundred (round 66's survivors). But
`chain` copies each model's graph whole, so each part must BE that model: every node of the detector, and of the pose
model as `onnx.compose` renames it (`pose/` before each name, its `image` and `boxes` fed by the glue, its keypoints
and scores renamed the chained outputs), must stand in the chained graph with the same operator, attributes and
inputs, and every constant with the same bytes. That holds for every input, where the answers hold for those tried.
The glue between the parts is new code and is compared by its answers against its numpy twin (`select_people`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import onnx
from onnx import AttributeProto, numpy_helper

from graphsurgery.cutting import needed_nodes
from graphsurgery.model import function_key, node_reads

Rename = Callable[[str], str]


def part_difference(chained: onnx.ModelProto, part: onnx.ModelProto, outputs: Collection[str], rename: Rename,
                    prefix: str, what: str) -> str | None:
    """The first way the graph of `part` (`what`: "the detector", "the pose model"), as far as its `outputs` need
    it (`onnx.compose` keeps no other node), does not stand in `chained` with each tensor and node name renamed by
    `rename` and each of its local functions' names prefixed by `prefix` (as `onnx.compose.add_prefix` does); None
    where every node and constant is there, alike."""
    opsets = _opsets(chained.opset_import)
    for domain, versions in _opsets(part.opset_import).items():  # a node's meaning (Softmax's axis: 11 to 13)
        if opsets.get(domain) != versions:
            return (f"{what}'s opset {domain} {' and '.join(map(str, sorted(versions)))} is "
                    f"{' and '.join(map(str, sorted(opsets.get(domain, ())))) or 'missing'} there")
    functions = {(f.domain, f.name) for f in part.functions}

    def function_rename(name: str) -> str:
        return prefix + name

    chained_functions = {function_key(f): f for f in chained.functions}  # an overload is a function (round 82)
    for function in part.functions:
        theirs = chained_functions.get(function_key(function, function_rename))
        label = f"{what}'s function {function.name!r}"
        if theirs is None:
            return f"{label} is missing"
        if list(theirs.input) != list(function.input) or list(theirs.output) != list(function.output):
            return f"{label} takes or gives other tensors there"
        if _function_header(theirs) != _function_header(function):  # a default alpha 0.2 for 0.1 (round 77)
            return f"{label} has other attributes, attribute defaults or opsets there"
        found = _graph_difference(list(theirs.node), list(function.node), [], [], same_name, functions,
                                  function_rename, label)
        if found:
            return found
    nodes = needed_nodes(part.graph, outputs)
    reads = {name for node in nodes for name in node_reads(node)}
    constants = [tensor for tensor in part.graph.initializer if tensor.name in reads]
    return _graph_difference(list(chained.graph.node), nodes, list(chained.graph.initializer), constants, rename,
                             functions, function_rename, what) \
        or _sparse_difference(chained.graph, part.graph, rename, what) \
        or _fed_constant(chained.graph, part.graph, constants, rename, what)


def _fed_constant(chained: onnx.GraphProto, part: onnx.GraphProto, constants: list, rename: Rename, what: str
                  ) -> str | None:
    """A constant of the part that the chained graph also takes as an input (where the part does not): a caller
    feeding that input changes it (round 77's leftover: the same answers on the check's images, fed the image alone)."""
    fed = {value.name for value in chained.input}
    taken = {value.name for value in part.input}
    for tensor in constants:
        if rename(tensor.name) in fed and tensor.name not in taken:
            return f"{what}'s constant {tensor.name!r} is an input there, which a caller can feed otherwise"
    return None


def _opsets(imports) -> dict[str, set[int]]:
    """Each domain's versions (`onnx.compose.merge_models` lists the two models' alike opsets twice)."""
    found: dict[str, set[int]] = {}
    for opset in imports:
        found.setdefault(opset.domain or "ai.onnx", set()).add(opset.version)
    return found


def _function_header(function: onnx.FunctionProto) -> tuple:
    """What a local function's nodes do besides its nodes: its attributes' names and default values (a node's
    `ref_attr_name` reads them) and the opsets its nodes are of."""
    return (list(function.attribute), [a.SerializeToString(deterministic=True) for a in function.attribute_proto],
            _opsets(function.opset_import))


def same_name(name: str) -> str:
    """A name as the chained model keeps it: a local function's own tensors' (`chain` renames none of them)."""
    return name


def _graph_difference(chained_nodes: list, part_nodes: list, chained_constants: list, part_constants: list,
                      rename: Rename, functions: set, function_rename: Rename, what: str) -> str | None:
    """The first node of `part_nodes` with no twin among `chained_nodes` (found by its renamed outputs), or the
    first constant of `part_constants` unlike its renamed one; None where all are alike."""
    producers = {tuple(node.output): node for node in chained_nodes}
    for node in part_nodes:
        label = f"{what}'s node {node.name or node.op_type!r} ({node.op_type})"
        theirs = producers.get(tuple(map(rename, node.output)))
        if theirs is None:
            return f"{label} is missing (no node makes {', '.join(map(rename, node.output))})"
        if (theirs.domain, theirs.op_type) != (node.domain, _op(node.op_type, node.domain, functions, function_rename)):
            return f"{label} is {'an' if theirs.op_type[:1] in 'AEIOU' else 'a'} {theirs.op_type} there"
        if theirs.overload != node.overload:  # another of the function's overloads (IR 10)
            return f"{label} calls the overload {theirs.overload!r} there, not {node.overload!r}"
        if list(theirs.input) != [rename(name) for name in node.input]:
            return f"{label} reads {list(theirs.input)} there, not {[rename(name) for name in node.input]}"
        found = _attribute_difference(theirs, node, rename, functions, function_rename, label)
        if found:
            return found
    constants = {tensor.name: tensor for tensor in chained_constants}
    made = {name for node in chained_nodes for name in node.output}
    for tensor in part_constants:
        theirs = constants.get(rename(tensor.name))
        if theirs is None or rename(tensor.name) in made or not _same_tensor(theirs, tensor):
            return f"{what}'s constant {tensor.name!r} is {'missing' if theirs is None else 'another'} there"
    return None


def _attribute_difference(theirs: onnx.NodeProto, node: onnx.NodeProto, rename: Rename, functions: set,
                          function_rename: Rename, label: str) -> str | None:
    """The first attribute of `node` unlike `theirs`'s: subgraphs (If, Loop, Scan bodies) compared as graphs with
    their names renamed, the others by value."""
    mine = {attribute.name: attribute for attribute in node.attribute}
    other = {attribute.name: attribute for attribute in theirs.attribute}
    if mine.keys() != other.keys():
        return f"{label} has the attributes {sorted(other)} there, not {sorted(mine)}"
    for name, attribute in mine.items():
        twin = other[name]
        if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            graphs = [attribute.g] if attribute.type == AttributeProto.GRAPH else list(attribute.graphs)
            theirs_graphs = [twin.g] if twin.type == AttributeProto.GRAPH else list(twin.graphs)
            if twin.type != attribute.type or len(graphs) != len(theirs_graphs):
                return f"{label}'s {name} is another there"
            for graph, their_graph in zip(graphs, theirs_graphs):
                found = _body_difference(their_graph, graph, rename, functions, function_rename, f"{label}'s {name}")
                if found:
                    return found
        elif attribute.type == AttributeProto.TENSOR:
            if twin.type != attribute.type or not _same_tensor(twin.t, attribute.t):
                return f"{label}'s {name} is another tensor there"
        elif twin.SerializeToString(deterministic=True) != attribute.SerializeToString(deterministic=True):
            return f"{label}'s {name} is another there"
    return None


def _body_difference(theirs: onnx.GraphProto, body: onnx.GraphProto, rename: Rename, functions: set,
                     function_rename: Rename, label: str) -> str | None:
    """A subgraph's first difference: its inputs and outputs renamed in order, then its nodes and constants."""
    if [v.name for v in theirs.input] != [rename(v.name) for v in body.input] \
            or [v.name for v in theirs.output] != [rename(v.name) for v in body.output]:
        return f"{label} takes or gives other tensors there"
    return _graph_difference(list(theirs.node), list(body.node), list(theirs.initializer), list(body.initializer),
                             rename, functions, function_rename, label) \
        or _sparse_difference(theirs, body, rename, label)


def _sparse_difference(theirs: onnx.GraphProto, graph: onnx.GraphProto, rename: Rename, what: str) -> str | None:
    mine = {rename(s.values.name): s for s in graph.sparse_initializer}
    other = {s.values.name: s for s in theirs.sparse_initializer}
    for name, sparse in mine.items():
        twin = other.get(name)
        if twin is None or list(twin.dims) != list(sparse.dims) or not _same_tensor(twin.values, sparse.values) \
                or not _same_tensor(twin.indices, sparse.indices):
            return f"{what}'s sparse constant {sparse.values.name!r} is missing or another there"
    return None


def _same_tensor(theirs: onnx.TensorProto, mine: onnx.TensorProto) -> bool:
    """The same element type, dims and bytes (NaN bit patterns too; not the name, which is renamed)."""
    if theirs.data_type != mine.data_type or list(theirs.dims) != list(mine.dims):
        return False
    theirs, mine = numpy_helper.to_array(theirs), numpy_helper.to_array(mine)
    if theirs.dtype == object:  # strings: an object array's bytes are its pointers, unlike for equal ones (round 77)
        return theirs.tolist() == mine.tolist()
    return theirs.tobytes() == mine.tobytes()


def _op(op_type: str, domain: str, functions: set, rename: Rename) -> str:
    """A node's operator in the chained graph: a call of one of the part's local functions is renamed with them."""
    return rename(op_type) if (domain, op_type) in functions else op_type
