"""Static checks of an OpenVINO IR (.xml + .bin) before OpenVINO reads it.

OpenVINO's reader (pugixml, then its IR frontend) was the only guard of an IR given as an input, and some IRs made
it die or run for ever before it said anything: rt_info nested 100,000 deep (SIGSEGV: its reader recurses), If
bodies nested 12 deep (65,000 layers: 18 s to read, minutes to compile), a Loop with a constant trip count of 2^62
(folded for ever while compiling), names that are not UTF-8 (an internal UnicodeDecodeError once read), an IR
`version` it does not know (handed to every frontend: TensorFlow's logged to stderr). `check_ir` reads the .xml
once with expat, streaming, as UTF-8 whatever it declares, with no DTD or entity allowed, and refuses each of those
from static facts with one line, under the limits `modelio` holds ONNX models to (layers, body nesting, loop trips).

A .bin that is not the one the .xml was converted with (another model's of the same size) went through in silence:
`graphsurgery convert` records the SHA-256 and size of the .bin in the IR's rt_info (`WEIGHTS_SHA256_KEY`,
`WEIGHTS_BYTES_KEY`), and an IR that records them must come with that .bin (its size is compared first: a sparse
.bin of 100 GB is not hashed). IRs made elsewhere record none and are read as they are.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from graphsurgery.errors import ModelError, printable, quoted
from graphsurgery.modelio import MAX_LOOP_TRIPS, MAX_NODES, MAX_SUBGRAPH_DEPTH, file_identity, remember_read

#: The largest .xml read. The .xml holds the structure only (weights are in the .bin): large LLMs' are a few MB,
#: and pugixml holds ~3 bytes of memory per byte (a 300 MB attribute: 1 GB).
MAX_IR_XML = 256 * 2**20
#: Elements in all, and how deep they nest. An IR with MAX_NODES layers has ~15 elements a layer; bodies nested
#: MAX_SUBGRAPH_DEPTH deep are ~40 elements deep. OpenVINO's rt_info reader recurses: 100,000 levels were SIGSEGV.
MAX_ELEMENTS = 5_000_000
MAX_DEPTH = 100
#: The IR versions OpenVINO's IR frontend reads; any other was tried on every frontend (TensorFlow's logged).
IR_VERSIONS = ("10", "11")
#: Where `graphsurgery convert` records the SHA-256 of the .bin it wrote beside the .xml
WEIGHTS_SHA256_KEY = ("graphsurgery", "weights_sha256")
WEIGHTS_BYTES_KEY = ("graphsurgery", "weights_bytes")
#: The elements that hold a sub-graph (Loop, TensorIterator: body; If: then_body, else_body)
BODIES = frozenset({"body", "then_body", "else_body"})
CHUNK = 1 << 20
FIX = "convert the model again with `graphsurgery convert` (or give the IR that it wrote)"


@dataclass
class _Layer:
    id: str
    type: str
    name: str
    data: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)  # its input ports' ids, in order
    bodies: list = field(default_factory=list)
    condition: str | None = None  # a Loop's body Result that is its execution condition


@dataclass
class _Graph:
    layers: dict = field(default_factory=dict)  # by id
    edges: dict = field(default_factory=dict)  # (to-layer, to-port) → from-layer


@dataclass(frozen=True)
class _Facts:
    graph: _Graph
    weights_sha256: str | None
    weights_bytes: str | None


#: IRs already checked in this process, by the identity of their .xml and .bin (a command reads an IR's signature,
#: then compiles it: checked once)
_checked: set[tuple] = set()


def check_ir(xml: str | Path) -> None:
    """Refuse an IR whose reading, compiling or running would crash OpenVINO, not end, or read a .bin that is not
    its own; see the module's docstring. The .xml and its .bin are regular files (checked by the caller). Both are
    remembered as checked (`modelio.remember_read`): within a command, OpenVINO's read of them (`runners`, under
    `modelio.read_by_path`) refuses a file replaced since, as for ONNX models (round 46)."""
    xml = Path(xml)
    weights = xml.with_suffix(".bin")
    key = (file_identity(xml), file_identity(weights))
    if key not in _checked:
        _check_ir(xml, weights, key)
        if (file_identity(xml), file_identity(weights)) != key:  # replaced while it was checked
            raise ModelError("the IR changed while the command ran (its .xml or .bin was rewritten or replaced "
                             "while it was checked)", path=xml,
                             fix="run the command again once nothing writes to the files")
        _checked.add(key)
    remember_read(xml, key[0])
    remember_read(weights, key[1])


def _check_ir(xml: Path, weights: Path, key: tuple) -> None:
    if key[0][2] > MAX_IR_XML:
        raise ModelError(f"the IR's .xml is {key[0][2]:,} bytes (at most {MAX_IR_XML >> 20} MiB: an IR's structure "
                         "is a few MB, its weights are in the .bin)", path=xml, fix=FIX)
    facts = _parse(xml)
    results = [layer for layer in facts.graph.layers.values() if layer.type == "Result"]
    if not results:
        raise ModelError("the IR has no outputs (no Result layer)", path=xml, fix=FIX)
    with open(weights, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        _check_graph(facts.graph, xml, stream, size)
        if facts.weights_sha256 is not None:
            _check_digest(facts, size, stream, xml, weights)


def _parse(xml: Path) -> _Facts:
    """The IR's layers, edges and bodies, read with expat as UTF-8, refusing what OpenVINO would choke on."""
    parser = expat.ParserCreate(encoding="UTF-8")  # whatever the file declares: names must be UTF-8 for Python
    top = _Graph()
    graphs: list[_Graph] = [top]
    layers: list[_Layer] = []
    stack: list[tuple[str, str | None]] = []  # (element, what it opened: "layer", "graph" or None)
    counts = {"elements": 0, "layers": 0}
    recorded: dict[str, str] = {}

    def refuse(message: str):
        raise ModelError(message, path=xml, fix=FIX)

    def doctype(*_):
        refuse("the IR declares a DTD (<!DOCTYPE>: entities, perhaps external ones); an IR has none")

    def start(name: str, attrs: dict) -> None:
        counts["elements"] += 1
        parent, within = stack[-1] if stack else (None, None)  # `within`: what the parent opened
        opened = None
        if len(stack) >= MAX_DEPTH:
            refuse(f"the IR nests elements more than {MAX_DEPTH} deep (OpenVINO's reader recurses: it crashed)")
        if counts["elements"] > MAX_ELEMENTS:
            refuse(f"the IR has more than {MAX_ELEMENTS:,} XML elements; reading it would take too long")
        if parent is None:
            if name != "net":
                refuse(f"not an OpenVINO IR (its root element is <{printable(name)[:40]}>, not <net>)")
            if attrs.get("version") not in IR_VERSIONS:
                refuse(f"IR version {quoted(attrs.get('version'), 20)}: OpenVINO reads IR versions "
                       f"{' and '.join(IR_VERSIONS)}")
        elif name == "layer" and parent == "layers":
            counts["layers"] += 1
            if counts["layers"] > MAX_NODES:
                refuse(f"the IR has more than {MAX_NODES:,} layers (bodies included); reading and compiling it "
                       "would take too long")
            layer = _Layer(attrs.get("id", ""), attrs.get("type", ""), attrs.get("name", ""))
            graphs[-1].layers[layer.id] = layer
            layers.append(layer)
            opened = "layer"
        elif name in BODIES and within == "layer":
            if sum(kind == "graph" for _, kind in stack) >= MAX_SUBGRAPH_DEPTH:
                refuse(f"layer {quoted(printable(layers[-1].name))} nests bodies (If, Loop, TensorIterator) more "
                       f"than {MAX_SUBGRAPH_DEPTH} deep; OpenVINO's time to read and compile grows exponentially "
                       "with the depth (12: minutes)")
            graphs.append(_Graph())
            layers[-1].bodies.append(graphs[-1])
            opened = "graph"
        elif name == "data" and within == "layer":
            layers[-1].data = attrs
        elif name == "port" and parent == "input" and len(stack) >= 2 and stack[-2][1] == "layer":
            layers[-1].inputs.append(attrs.get("id"))
        elif name == "output" and parent == "port_map" and stack[-2][1] == "layer" and \
                attrs.get("purpose") == "execution_condition":
            layers[-1].condition = attrs.get("internal_layer_id")
        elif name == "edge" and parent == "edges":
            graphs[-1].edges[(attrs.get("to-layer"), attrs.get("to-port"))] = attrs.get("from-layer")
        elif name in (WEIGHTS_SHA256_KEY[1], WEIGHTS_BYTES_KEY[1]) and [element for element, _ in stack] == [
                "net", "rt_info", WEIGHTS_SHA256_KEY[0]]:
            recorded[name] = attrs.get("value", "")
        stack.append((name, opened))

    def end(_name: str) -> None:
        _, opened = stack.pop()
        if opened == "layer":
            layers.pop()
        elif opened == "graph":
            graphs.pop()

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        with open(xml, "rb") as stream:
            tail = b""
            while chunk := stream.read(CHUNK):
                chunk, tail = _split_reference(tail + chunk)
                parser.Parse(_CONTROL_REFERENCE.sub(_replacement, chunk), False)
            parser.Parse(_CONTROL_REFERENCE.sub(_replacement, tail), True)
    except expat.ExpatError as exc:
        raise ModelError(f"the IR is not well-formed UTF-8 XML ({expat.ErrorString(exc.code)}, line {exc.lineno}, "
                         f"column {exc.offset})", path=xml, fix=FIX) from None
    except OSError as exc:
        raise ModelError(f"cannot read the IR ({exc.strerror})", path=xml, fix="check its permissions") from None
    return _Facts(top, recorded.get(WEIGHTS_SHA256_KEY[1]), recorded.get(WEIGHTS_BYTES_KEY[1]))


#: A character reference, as OpenVINO writes a control character of a name (`&#27;` for ESC): XML 1.1, which expat
#: (XML 1.0) refuses. For the check each reads as U+FFFD; names are shown escaped (`errors.printable`) wherever shown.
_CONTROL_REFERENCE = re.compile(rb"&#(x[0-9a-fA-F]{1,8}|[0-9]{1,10});")


def _replacement(match: re.Match) -> bytes:
    text = match.group(1).decode()
    value = int(text[1:], 16) if text.startswith("x") else int(text)
    return b"&#xFFFD;" if value < 0x20 and value not in (0x9, 0xA, 0xD) or 0x7F <= value <= 0x9F else match.group()


def _split_reference(data: bytes) -> tuple[bytes, bytes]:
    """`data` without a character reference cut at its end (kept for the next chunk)."""
    cut = data.rfind(b"&", max(0, len(data) - 16))
    return (data[:cut], data[cut:]) if cut != -1 and b";" not in data[cut:] else (data, b"")


def _check_graph(graph: _Graph, xml: Path, weights, size: int, static: bool | None = None) -> None:
    """Each Const's bytes lie inside the .bin, no Loop runs for ever or more than MAX_LOOP_TRIPS times, no integer
    division that OpenVINO folds may divide by −1. `static`: every input of the model has a static shape."""
    if static is None:
        static = all(_STATIC.fullmatch(layer.data.get("shape", "?")) for layer in graph.layers.values()
                     if layer.type == "Parameter")
    for layer in graph.layers.values():
        if layer.type == "Const" and "offset" in layer.data and "size" in layer.data:
            offset, length = _number(layer.data["offset"]), _number(layer.data["size"])
            if offset is None or length is None or offset + length > size:
                raise ModelError(f"Const layer {quoted(printable(layer.name))} reads bytes "
                                 f"{quoted(layer.data['offset'], 24)} + {quoted(layer.data['size'], 24)} of "
                                 f"{Path(xml).with_suffix('.bin').name}, which holds {size:,}", path=xml,
                                 fix=f"put the {Path(xml).with_suffix('.bin').name} written with this .xml beside "
                                     "it, or convert the model again with `graphsurgery convert`")
        if layer.type == "Loop":
            _check_loop(layer, graph, xml, weights)
        if layer.type in ("Divide", "Mod"):
            _check_division(layer, graph, xml, weights, static)
        for body in layer.bodies:
            _check_graph(body, xml, weights, size, static)


def _check_loop(layer: _Layer, graph: _Graph, xml: Path, weights) -> None:
    """As `modelio._check_loop` for ONNX: a constant trip count over MAX_LOOP_TRIPS, or none (-1) and a condition
    the body passes on unchanged or sets to a constant true."""
    named = f"Loop layer {quoted(printable(layer.name))}"
    trips = _constant(_producer(graph, layer, 0), weights)
    if trips is not None and trips > MAX_LOOP_TRIPS:
        raise ModelError(f"{named} has a constant trip count of {trips:,} (at most {MAX_LOOP_TRIPS:,}): compiling "
                         "or running it would not end", path=xml,
                         fix="re-export the model with a smaller trip count, or one computed from an input")
    if trips is None or trips >= 0 or not layer.bodies or layer.condition is None:
        return
    body = layer.bodies[0]
    result = body.layers.get(layer.condition)
    source = _producer(body, result, 0) if result is not None else None
    if source is not None and (source.type == "Parameter" or _constant(source, weights)):
        raise ModelError(f"{named} has no trip count and a condition its body never turns false: it never ends",
                         path=xml, fix="re-export the model with a trip count, or a condition the loop's body "
                                       "computes")


#: An input's `shape` attribute when it is static ("1,256,192,3"; a dynamic one holds "?", "-1" or "..")
_STATIC = re.compile(r"[0-9, ]*")
#: Integer types whose division traps on x86 (idiv) for the smallest value by −1; narrower ones are widened first
_TRAPPING = {"i32": np.int32, "i64": np.int64}
#: The largest divisor Const read to look for −1 in it
MAX_DIVISOR_BYTES = 1 << 20


def _check_division(layer: _Layer, graph: _Graph, xml: Path, weights, static: bool) -> None:
    """A Divide or Mod of i32/i64 by a divisor that may be −1 and that OpenVINO computes while compiling: its constant
    folding divides INT_MIN by −1 with idiv, and the process dies of SIGFPE (measured: a Const −1, 0 − 1 of two
    Consts, 0 × the input's static shape − 1). A divisor computed from an input's values (or a dynamic shape) is
    divided at run time, which is safe."""
    divisor = _producer(graph, layer, 1)
    if divisor is None:
        return
    if divisor.type == "Const":
        if not _holds_minus_one(divisor, weights):
            return
        said = "a constant divisor holding −1"
    elif _value_type(graph, divisor) not in (*_TRAPPING, None):  # a float division traps on nothing (round 55:
        return  # the letterbox's scales from static shapes, in an IR `convert --input-shape` wrote, were refused)
    elif _constant_only(graph, divisor, static) and not _dims_only(graph, divisor, weights):
        said = "a divisor computed from constants (or static shapes) alone: it may be −1"
    else:
        return
    raise ModelError(f"{layer.type} layer {quoted(printable(layer.name))} has {said}: OpenVINO computes it while "
                     "compiling, and the smallest integer divided by −1 kills the process (SIGFPE)", path=xml,
                     fix="re-export the model without dividing integers by −1 (use Negative), or convert it again "
                         "with `graphsurgery convert`")


#: Layers whose values are their first input's (or, for Concat, their inputs') values, picked, reshaped or repeated
_PICKING = {"Gather", "Squeeze", "Unsqueeze", "Reshape", "StridedSlice", "Slice", "Broadcast", "Tile", "Concat"}
#: Where a layer's element type is written, and the layers whose output has the type of one of their inputs (the
#: value input's number: picking and reshaping, elementwise arithmetic, choosing)
_TYPE_ATTRIBUTE = {"Const": "element_type", "Parameter": "element_type", "Convert": "destination_type",
                   "ShapeOf": "output_type"}
_TYPE_OF_INPUT = {"Select": 1, **dict.fromkeys(_PICKING, 0), **dict.fromkeys((
    "Add", "Subtract", "Multiply", "Divide", "Mod", "FloorMod", "Minimum", "Maximum", "Negative", "Abs", "Floor",
    "Ceiling", "Round"), 0)}


def _value_type(graph: _Graph, layer: _Layer | None) -> str | None:
    """The element type of `layer`'s output ("i64", "f32", …), followed back through layers that keep their input's;
    None where it is not written on the way."""
    for _ in range(1000):
        if layer is None or layer.type not in (*_TYPE_ATTRIBUTE, *_TYPE_OF_INPUT):
            return None
        if layer.type in _TYPE_ATTRIBUTE:
            return layer.data.get(_TYPE_ATTRIBUTE[layer.type])
        layer = _producer(graph, layer, _TYPE_OF_INPUT[layer.type])
    return None


def _holds_minus_one(const: _Layer, weights) -> bool | None:
    """Whether an i32/i64 Const holds −1; None where it is of another type or too large to read."""
    dtype = _TRAPPING.get(const.data.get("element_type", ""))
    offset, length = _number(const.data.get("offset", "")), _number(const.data.get("size", ""))
    if dtype is None or offset is None or length is None or length > MAX_DIVISOR_BYTES:
        return None
    raw = os.pread(weights.fileno(), length, offset)
    return len(raw) != length or bool((np.frombuffer(raw[:length - length % dtype().itemsize], dtype) == -1).any())


def _dims_only(graph: _Graph, layer: _Layer, weights) -> bool:
    """Whether `layer`'s values are dims of static shapes (ShapeOf in i64: ≥ 0) or of i32/i64 Consts holding no −1,
    only picked, reshaped or joined on the way: such a divisor is never −1. graphsurgery's letterbox divides by the
    image's width and height, static once `convert --input-shape` fixes them: the IR convert wrote was refused by
    run and verify as "a divisor computed from constants (or static shapes) alone: it may be −1" (round 55)."""
    seen, pending = set(), [layer]
    while pending:
        current = pending.pop()
        if current.id in seen:
            continue
        seen.add(current.id)
        if current.type == "ShapeOf" and current.data.get("output_type") == "i64":
            continue
        if current.type == "Const" and _holds_minus_one(current, weights) is False:
            continue
        if current.type not in _PICKING or len(seen) > 1000:
            return False
        for index in range(len(current.inputs) if current.type == "Concat" else 1):
            producer = _producer(graph, current, index)
            if producer is None:
                return False
            pending.append(producer)
    return True


def _constant_only(graph: _Graph, layer: _Layer, static: bool) -> bool:
    """Whether `layer` is computed from Const layers alone, or also from shapes when every input's shape is static
    (no Parameter, ReadValue or unknown input): what OpenVINO folds while compiling. The integer divisors of a
    converted model are Consts (its converter folded the rest) or come from inputs."""
    seen, pending = set(), [layer]
    while pending:
        current = pending.pop()
        if current.id in seen or current.type == "Const" or (static and current.type == "ShapeOf"):
            continue
        if current.type in ("Parameter", "ShapeOf", "ReadValue") or current.bodies or not current.inputs or \
                len(seen) > 1000:
            return False
        seen.add(current.id)
        for index in range(len(current.inputs)):
            producer = _producer(graph, current, index)
            if producer is None:
                return False
            pending.append(producer)
    return True


def _producer(graph: _Graph, layer: _Layer, index: int) -> _Layer | None:
    """The layer feeding `layer`'s input number `index` (None if unknown)."""
    if index >= len(layer.inputs):
        return None
    return graph.layers.get(graph.edges.get((layer.id, layer.inputs[index])))


#: Element types a Loop's trip count or condition comes in, and their sizes
_SCALARS = {"i64": 8, "i32": 4, "u64": 8, "u32": 4, "i8": 1, "u8": 1, "boolean": 1}


def _constant(layer: _Layer | None, weights) -> int | None:
    """The value of a Const scalar (of one element) read from the .bin; None for anything else."""
    if layer is None or layer.type != "Const":
        return None
    width = _SCALARS.get(layer.data.get("element_type", ""))
    offset, length = _number(layer.data.get("offset", "")), _number(layer.data.get("size", ""))
    if width is None or offset is None or length != width:
        return None
    raw = os.pread(weights.fileno(), width, offset)
    signed = layer.data["element_type"].startswith("i")
    return int.from_bytes(raw, "little", signed=signed) if len(raw) == width else None


def _number(text: str) -> int | None:
    """A non-negative decimal integer, or None."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None


def _check_digest(facts: _Facts, size: int, weights, xml: Path, path: Path) -> None:
    """The .bin is the one the .xml was converted with: its size (compared first, without reading it) and SHA-256
    are the ones the .xml records."""
    if facts.weights_bytes is not None and _number(facts.weights_bytes) != size:
        differs = f"it holds {size:,} bytes, the .xml records {quoted(facts.weights_bytes, 24)}"
    else:
        weights.seek(0)
        if _sha256(weights) == facts.weights_sha256.strip().lower():
            return
        differs = "its SHA-256 differs from the one the .xml records"
    raise ModelError(f"{path.name} is not the weights file this .xml was converted with ({differs})", path=xml,
                     fix=f"put the {path.name} that `graphsurgery convert` wrote with this .xml beside it, or "
                         "convert the model again")


def weights_digest(path: Path) -> str:
    """The SHA-256 of an IR's .bin, as `convert` records it."""
    with open(path, "rb") as stream:
        return _sha256(stream)


def _sha256(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
