"""Reading models safely and writing them atomically.

Models come from strangers. `load_model` refuses what onnx would happily follow: external-data locations that
escape the model's folder (`../`, absolute paths, symlinks), references past the end of a data file, IR versions
and opsets newer than the installed onnx. External data is *not* read into memory: the tensors keep their
references, and `save_model` streams the bytes into a new data file beside the output, so models over 2 GB work.

Every model is also checked before anything is done with it (`onnx.checker` with full shape inference, by path so
external data and large models work): a cycle, an unknown op or a broken tensor is the input's fault and is said
so, instead of surfacing later as a "bug" in the patched model. Ops must come from a domain onnx or the runtimes
know (or from a function the model defines): custom ops from elsewhere cannot be converted or run.

`save_model` writes into a temporary folder beside the destination, runs the full checker there, and only then
moves the files into place: a failure at any point leaves no partial output, and the input is never opened for
writing. Holes in a sparse external-data file stay holes in the copy.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import shlex
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from functools import cache, wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import onnx
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from graphsurgery.commandspan import _COMMAND, _Reads, lost_folder, one_command
from graphsurgery.errors import GraphsurgeryError, ModelError, RecipeError, check_flags, node_named, printable, quoted
from graphsurgery.folding import check_folding
from graphsurgery.limits import write_fix
from graphsurgery.model import all_nodes, call_key, function_key, nested_graphs
from graphsurgery.safeio import (
    check_output_folder,
    input_path,
    open_regular,
    place,
    placing,
    present,
    refuse_overwriting,
    scratch_folder,
    scratch_prefix,
    utf8_path,
)
from graphsurgery.scopes import SPLICED
from graphsurgery.sparsecopy import copy_range
from graphsurgery.supervisor import doing

T = TypeVar("T")
P = ParamSpec("P")
PROTOBUF_LIMIT = 2**31 - 1
#: Op domains besides onnx's own that the runtimes implement (onnxruntime's contrib ops; OpenVINO reads many).
RUNTIME_DOMAINS = frozenset({"com.microsoft"})


def _newest_opsets() -> dict[str, int]:
    """The newest opset of each domain onnx or ONNX Runtime knows. ONNX Runtime refuses a model importing a newer
    one, used or not (ai.onnx.ml 6, com.microsoft 2): `apply` wrote patched models no command could then run."""
    newest: dict[str, int] = {}
    for domain, version in onnx.helper.OP_SET_ID_VERSION_MAP:
        newest[domain] = max(version, newest.get(domain, 0))
    return newest | {"ai.onnx": onnx.defs.onnx_opset_version(), "com.microsoft": 1}


NEWEST_OPSETS = _newest_opsets()


@dataclass(frozen=True)
class LoadedModel:
    """A model and the folder its external data is relative to; `data_files`: the external data files it names on
    disk (also those whose small tensors were read inline on load: outputs must not land on them either);
    `data_ends`: for each, the end of the last byte its tensors read (None: to the end of the file)."""

    proto: onnx.ModelProto
    path: Path
    data_files: tuple[Path, ...] = ()
    data_ends: tuple[int | None, ...] = ()
    #: the `file_identity` of the model file and of each data file as they were read and checked
    identities: tuple[tuple[int, ...], ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def copied(self) -> LoadedModel:
        """The model as read, with a proto of its own for a splice to change (`api.apply_loaded`): a copy takes a
        tenth of a read (HRNet-W32: 0.02–0.07 s against 0.3–0.4 s)."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        return replace(self, proto=proto)


def network_sha256(loaded: LoadedModel) -> str:
    """SHA-256 of the network a model file holds: its opsets, its graph and the content of its external data files
    (not its metadata, which apply rewrites). `apply` records it in the provenance, so that an IR converted from the
    patched model can be traced to its plain model (`verify --precision int8 --patched`). A data file is read up to
    the last byte its tensors read, which ends it as onnx writes one: bytes past it are no tensor's (a data file grown
    sparse to 1 TB past its weights was read whole, `apply` running for an hour without a word; round 48)."""
    digest = hashlib.sha256()
    for entry in loaded.proto.opset_import:
        digest.update(entry.SerializeToString(deterministic=True))
    digest.update(loaded.proto.graph.SerializeToString(deterministic=True))
    ends = loaded.data_ends or (None,) * len(loaded.data_files)
    for data_file, end in zip(loaded.data_files, ends, strict=True):
        try:
            with open_regular(data_file, "an external data file", ModelError) as stream:
                left = end
                while chunk := stream.read(1 << 20 if left is None else min(1 << 20, left)):
                    digest.update(chunk)
                    if left is not None:
                        left -= len(chunk)
        except OSError as exc:  # removed or made unreadable since the model was loaded
            raise ModelError(f"cannot read the model's external data ({exc.strerror})", path=data_file,
                             fix="check that the file is there and readable") from None
    return digest.hexdigest()


def load_model(path: str | Path) -> LoadedModel:
    """Read an ONNX model without following external data; validate every reference it makes."""
    path = utf8_path(input_path(path, "model file"), "model")
    with doing(f"onnx was reading and checking {printable(path)}"):  # protobuf, the checker: native code
        return _read_and_check(path)


def _read_and_check(path: Path) -> LoadedModel:
    if not path.exists():
        raise ModelError("no such model file", path=path, fix="check the path")
    if path.is_dir():
        raise ModelError("is a directory, not an ONNX file", path=path, fix="give the path of the .onnx file")
    if not path.is_file():  # a FIFO or a device reports size 0: "empty" would send the user the wrong way
        raise ModelError("is not a regular file (a FIFO, a device or a socket)", path=path,
                         fix="give the path of the .onnx file itself")
    if path.suffix.lower() == ".xml":  # protobuf would call it a DecodeError
        raise ModelError("is an OpenVINO IR; this command reads ONNX", path=path,
                         fix="give the .onnx the IR was converted from")
    size = path.stat().st_size
    if size == 0:
        raise ModelError("the file is empty", path=path, fix="re-export or re-download the model")
    if size > PROTOBUF_LIMIT:
        raise ModelError(f"the file is {size:,} bytes; an ONNX protobuf cannot exceed 2 GB", path=path,
                         fix="save the weights as external data (onnx.save_model(..., save_as_external_data=True))")
    try:
        # protobuf whatever the name: onnx.load read `x.json` as JSON and `x.txt` as text format (a ParseError)
        with open_regular(path, "an ONNX model", ModelError) as stream:  # not a FIFO swapped in after the checks
            read = file_identity(stream.fileno())
            if read[2] != size:  # replaced since it was measured: perhaps by a file of 50 GB
                raise _changed(path)
            proto = onnx.load(stream, format="protobuf", load_external_data=False)
    except OSError as exc:
        raise ModelError(f"cannot read the model ({exc.strerror})", path=path, fix="check its permissions") from None
    except (DecodeError, RuntimeError, ValueError, TypeError, RecursionError) as exc:
        raise ModelError(f"not a readable ONNX model ({type(exc).__name__})", path=path,
                         fix="the file is truncated or not ONNX; re-export or re-download it") from None
    _check_text(proto, path)
    _check_structure(proto, path)
    check_work(proto, path)
    tensors = _all_tensors(proto)  # walked once: the walk was as long as the checks of what it finds
    external = [tensor for tensor in tensors if uses_external_data(tensor)]
    _check_external_data(external, path)
    _check_tensor_sizes(tensors, path)
    data_files = tuple(path.parent / name for name in sorted({ExternalDataInfo(t).location for t in external}))
    data_read = _identities(data_files, path)
    data_ends = _data_ends(external, path, data_files)  # before small tensors are read inline (entries dropped)
    inlined = _inline_small_external(external, path)
    _check_domains(proto, path)
    if file_identity(path) != read:  # the checker reads by path: it would judge another file (a FIFO: for ever)
        raise _changed(path)
    _check_consistency(path, proto if inlined else None)
    if file_identity(path) != read:
        raise _changed(path)
    check_folding(proto, path)
    _unknown_dims_symbolic(proto)
    remember_read(path, read, dict(zip(data_files, data_read)))
    return LoadedModel(proto, path, data_files, data_ends, (read, *data_read))


def still_as_loaded(loaded: LoadedModel) -> bool:
    """Whether the model file `load_model` read and its external data files are still as it read and checked them
    (`LoadedModel.identities`); if so, a command holds them to that from here as a new `load_model` would
    (`remember_read`), so that what was derived from them may be used again without reading the model again."""
    try:
        now = (file_identity(loaded.path), *_identities(loaded.data_files, loaded.path))
    except (OSError, ModelError):  # removed since: `load_model` says so
        return False
    if now != loaded.identities:
        return False
    remember_read(loaded.path, now[0], dict(zip(loaded.data_files, now[1:])))
    return True


def _identities(data_files: tuple[Path, ...], path: Path) -> tuple[tuple[int, ...], ...]:
    """Each external data file's `file_identity` as the model's checks read it."""
    try:
        return tuple(file_identity(data_file) for data_file in data_files)
    except OSError:  # removed since its offsets were checked
        raise _changed(path) from None


def _data_ends(external: list[onnx.TensorProto], path: Path, data_files: tuple[Path, ...]
               ) -> tuple[int | None, ...]:
    """For each data file, the end of the last byte an `external` tensor reads from it (offsets and lengths checked
    already); None where a tensor without a length reads to the end of the file."""
    ends: dict[Path, int | None] = dict.fromkeys(data_files, 0)
    for tensor in external:
        info = ExternalDataInfo(tensor)
        data_file = path.parent / info.location
        if info.length is None or ends[data_file] is None:
            ends[data_file] = None
        else:
            ends[data_file] = max(ends[data_file], (info.offset or 0) + info.length)
    return tuple(ends[data_file] for data_file in data_files)


def _changed(path: Path) -> ModelError:
    return ModelError("the model file changed while it was read", path=path,
                      fix="run the command again once nothing writes to the file")


def _as_given(path: Path) -> str:
    """`path` as the user spelled it, made absolute but not resolved: the key of what it named when read."""
    return str(Path(path).absolute())


def _real(reads: _Reads, path: Path) -> str:
    """The real path `path` named when the command read it, else the one it names now."""
    return reads.resolved.get(_as_given(path)) or os.path.realpath(path)


def _changed_since_read(path: Path, data: bool = False) -> ModelError:
    """The refusal of a model file, or of one of its external `data` files, changed since it was read."""
    what = "external data" if data else "model"
    return ModelError(f"the {what} file changed while the command ran (it was rewritten or replaced after it was "
                      "read and checked)", path=path, fix="run the command again once nothing writes to the file")


def remember_read(path: Path, read: tuple[int, ...], data: dict[Path, tuple[int, ...]] | None = None) -> None:
    """Within `one_command`, the file at `path` as it was read and checked (`file_identity`): by `load_model`, with
    its external `data` files' identities, or by `irchecks.check_ir` for an IR's .xml and .bin (round 46: a pair
    swapped in between the check and OpenVINO's compile was compiled unchecked). Outside a command nothing is kept:
    `read_by_path` asks nothing there."""
    reads = _COMMAND.get()
    if reads is None:
        return
    key = os.path.realpath(path)
    for file, identity in ((path, read), *(data or {}).items()):
        real = os.path.realpath(file)
        if reads.resolved.setdefault(_as_given(file), real) != real \
                or reads.read.setdefault(real, identity) != identity:
            raise _changed_since_read(file, file != path)
    reads.data.setdefault(key, tuple(data or ()))


def command(function: Callable[P, T]) -> Callable[P, T]:
    """`function` (verify, apply, …) as one command wherever it is called from, as the CLI runs it: through the
    Python API nothing held a model read and checked (`read_by_path`), so one replaced meanwhile went to a runtime
    unchecked. Called within a command, it is part of that one. It starts in a current folder that exists: in a
    deleted one every relative path, `import openvino` (Python's pkgutil looks for its parts in the current folder)
    and `import torch` (oneMKL's "FATAL ERROR: Cannot load libtorch_cpu.so" ended the process, `bench --torch`
    too) failed (round 87: FileNotFoundError out of the API's verify and convert)."""

    @wraps(function)
    def one(*args: P.args, **kwargs: P.kwargs) -> T:
        if (gone := lost_folder()) is not None:
            raise gone
        with one_command():
            return function(*args, **kwargs)

    return one


@contextmanager
def read_by_path(path: Path) -> Iterator[None]:
    """Within `one_command`, a runtime that reads the ONNX model at `path` itself (ONNX Runtime's session, OpenVINO's
    compiler and converter; an IR's .xml and .bin, checked by `irchecks`) reads the file the command read and
    checked: one replaced since it was read, or while the runtime read it, is refused as changed. (Every model a
    user gives is read first, for its signature; files the command makes for itself — verify's cut of the output
    steps — are not read again.) Outside a command (an application calling the runners) the file is taken as it
    is."""
    reads = _COMMAND.get()
    if reads is None:
        yield
        return
    files = (path, *reads.data.get(_real(reads, path), ()))  # its external data files too (round 57)

    def identities() -> list[tuple[int, ...] | None]:
        found = []
        for file in files:
            try:
                found.append(file_identity(file))
            except OSError:
                found.append(None)
        return found

    def refuse_changed(changed: list[bool]) -> None:
        if any(changed):
            raise _changed_since_read(files[changed.index(True)], changed.index(True) > 0)

    before = identities()
    refuse_changed([now is None or reads.read.get(_real(reads, file), now) != now
                    for file, now in zip(files, before)])
    yield
    refuse_changed([now != then for now, then in zip(identities(), before)])


def _unknown_dims_symbolic(proto: onnx.ModelProto) -> None:
    """Dims that exporters write as -1 or 0 for "unknown" (tf2onnx, Paddle) become named, symbolic dims, as ONNX
    spells unknown: every later step then treats them as dynamic instead of as sizes. The file is not changed.
    Such a dim in the value_info of a graph input or output takes the size its declaration gives: the graph editor
    believes the value_info, and heatmaps declared [N, 17, 16, 12] beside a value_info [0, 17, 0, 12] were refused
    as "not static" (round 49)."""
    declared = {value.name: value.type.tensor_type.shape.dim for value in (*proto.graph.input, *proto.graph.output)}
    entries = [(value, ()) for value in (*proto.graph.input, *proto.graph.output)]
    entries += [(value, declared.get(value.name, ())) for value in proto.graph.value_info]
    for value, sizes in entries:
        if value.type.WhichOneof("value") != "tensor_type":
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.WhichOneof("value") == "dim_value" and dim.dim_value <= 0:
                size = sizes[axis].dim_value if axis < len(sizes) else 0
                if size > 0:
                    dim.dim_value = size
                else:
                    dim.dim_param = f"{value.name}_{axis}"


def _check_text(proto: onnx.ModelProto, path: Path) -> None:
    """Every string field must be UTF-8: protobuf parses broken ones as bytes, which onnx and gs then trip over."""
    pending = [proto]
    while pending:
        message = pending.pop()
        for descriptor, value in message.ListFields():
            values = value if descriptor.is_repeated else [value]
            if descriptor.type == descriptor.TYPE_MESSAGE:
                pending.extend(values)
            elif descriptor.type == descriptor.TYPE_STRING and any(isinstance(v, bytes) for v in values):
                raise ModelError(f"a {message.DESCRIPTOR.name}.{descriptor.name} holds bytes that are not UTF-8 text",
                                 path=path, fix="the file is damaged; re-export or re-download the model")


def _check_structure(proto: onnx.ModelProto, path: Path) -> None:
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise ModelError("parses as protobuf but is not an ONNX model (no graph, IR version or opset)", path=path,
                         fix="give an .onnx model file")
    if proto.ir_version > onnx.IR_VERSION:
        raise ModelError(
            f"IR version {proto.ir_version} is newer than this onnx ({onnx.__version__}) supports ({onnx.IR_VERSION})",
            path=path,
            fix="upgrade graphsurgery's onnx, or re-export with an older IR",
        )
    unknown = UnknownFieldSet(proto)
    if len(unknown):  # one flipped bit in a tag: onnx and ONNX Runtime skip it, but OpenVINO, finding it first, took
        # the file for no ONNX and tried its other frontends (TensorFlow's logged 7 lines on stderr; round 27)
        raise ModelError(f"the model holds a field ONNX does not define (number {unknown[0].field_number}, or a "
                         "field of the wrong kind)", path=path,
                         fix=f"the file is damaged, or written by a newer onnx than graphsurgery's "
                             f"({onnx.__version__}); re-export or re-download the model")
    versions: dict[str, int] = {}
    for opset in proto.opset_import:  # onnx's checker lets a domain be imported twice; which one holds is unclear
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        if versions.setdefault(domain, opset.version) != opset.version:
            raise ModelError(f"the model imports opset {versions[domain]} and opset {opset.version} of domain "
                             f"{opset.domain or 'ai.onnx'!r}", path=path, fix="re-export the model (or edit its "
                             "opset_import) so that each domain has one version")
        newest = NEWEST_OPSETS.get(opset.domain or "ai.onnx")
        if newest is not None and opset.version > newest:
            raise ModelError(f"opset {opset.version} of domain {opset.domain or 'ai.onnx'!r} is newer than this onnx "
                             f"({onnx.__version__}) and ONNX Runtime support ({newest})", path=path,
                             fix="re-export the model at an older opset")
    _check_ir_for_opsets(proto, path)
    if not proto.graph.output:
        raise ModelError("the graph has no outputs", path=path, fix="re-export the model")
    counts = Counter(value.name for value in proto.graph.output)  # list.count per name: 100,000 outputs ran for hours
    twice = [name for name, count in counts.items() if count > 1]
    if twice:  # the checker lets it by; apply then said "set output.target", convert wrote it
        raise ModelError(f"output {twice[0]!r} is listed {counts[twice[0]]} times among the graph's outputs",
                         path=path, fix="re-export the model with each output listed once")
    for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for value in values:  # sequences, maps, optionals: no dtype and shape to patch, feed or compare
            held = value.type.WhichOneof("value")
            if held not in (None, "tensor_type"):  # no type at all: the checker says so
                held = held.replace("_type", "")
                fix = (f"graphsurgery reads models whose inputs and outputs are tensors: remove or convert "
                       f"{value.name!r} (sequence, map or optional) when exporting")
                if any(node.op_type == "ZipMap" and value.name in node.output for node in proto.graph.node):
                    fix = ("convert the model without ZipMap (skl2onnx: options={'zipmap': False}), so its "
                           "probabilities are a tensor")  # round 97: sklearn-onnx's classifiers end so
                raise ModelError(f"{kind} {value.name!r} is {'an' if held[0] in 'aeiou' else 'a'} {held}, not a "
                                 "tensor", path=path, fix=fix)
    _check_value_info(proto, path)
    _check_node_names(proto, path)


def _check_node_names(proto: onnx.ModelProto, path: Path) -> None:
    """Two nodes of one graph (or one If/Loop/Scan body) with the same name: onnx's checker lets them by, but ONNX
    Runtime refuses the model, and onnx-graphsurgeon printed twenty lines of warnings on standard output around
    `apply`, which wrote a patched model no one could run on ONNX Runtime. Unnamed nodes do not count."""
    for graph in nested_graphs(proto.graph):
        counts = Counter(node.name for node in graph.node if node.name)
        twice = next((name for name, count in counts.items() if count > 1), None)
        if twice is not None:
            where = "the graph" if graph is proto.graph else f"subgraph {quoted(graph.name)}"
            raise ModelError(f"{counts[twice]} nodes of {where} are named {quoted(twice)}; ONNX Runtime refuses a "
                             "model whose nodes share a name", path=path,
                             fix="re-export the model, or give each node of a graph its own name (or none)")


def _check_value_info(proto: onnx.ModelProto, path: Path) -> None:
    """A value_info entry of a graph input or output that contradicts its declaration (another element type, rank
    or fixed size) is the model's fault: the checker lets it by, the splice believed it, and the patched model then
    failed the checker as "a graphsurgery bug" (or the recipe was blamed: "the tensor has 1 channel")."""
    declared = {value.name: value.type.tensor_type for value in (*proto.graph.input, *proto.graph.output)}
    for value in proto.graph.value_info:
        if value.name not in declared or value.type.WhichOneof("value") != "tensor_type":
            continue
        said, held = value.type.tensor_type, declared[value.name]
        dims = [(a.dim_value if a.dim_value > 0 else None, b.dim_value if b.dim_value > 0 else None)  # -1, 0: unknown
                for a, b in zip(said.shape.dim, held.shape.dim)]
        ranks = said.HasField("shape") and held.HasField("shape") and len(said.shape.dim) != len(held.shape.dim)
        if (said.elem_type and held.elem_type and said.elem_type != held.elem_type) or ranks or any(
                a is not None and b is not None and a != b for a, b in dims):
            raise ModelError(f"the value_info of {value.name!r} contradicts its declaration as a graph input or "
                             "output (element type or dims)", path=path,
                             fix=f"remove the value_info entry of {value.name!r} (or re-export the model)")


def _check_ir_for_opsets(proto: onnx.ModelProto, path: Path) -> None:
    """An IR version too old for the opsets the model's ops come from (IR 3 beside opset 17: a hand-edited or
    damaged file) is refused; onnx's checker lets it by. onnx's table gives the IR version each opset came with;
    one less is let by, as exporters that wrote an opset before onnx released it kept the IR version they were
    built with (PyTorch 1.0 wrote IR 3 beside opset 9). Domains imported but unused (some exporters declare
    com.microsoft or ai.onnx.ml for nothing) are not held to it."""
    used = {node.domain or "ai.onnx" for node in all_nodes(proto)}
    opsets = [opset for opset in proto.opset_import if (opset.domain or "ai.onnx") in used]
    needed = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    if proto.ir_version < needed - 1:
        imported = ", ".join(f"{opset.domain or 'ai.onnx'} {opset.version}" for opset in opsets)
        raise ModelError(f"IR version {proto.ir_version} is too old for the opsets its ops come from "
                         f"({imported[:200]}), which need IR version {needed}", path=path,
                         fix=f"re-export the model, or set its ir_version to {needed} (onnx.helper."
                             "find_min_ir_version_for gives it)")


@cache
def _standard_domains() -> frozenset[str]:
    """The domains onnx and the runtimes define ops in. Once per process: listing onnx's schemas on every model
    loaded was 3 % of the test suite's CPU."""
    return frozenset({schema.domain for schema in onnx.defs.get_all_schemas_with_history()} | {"ai.onnx"}
                     | RUNTIME_DOMAINS)


def _check_domains(proto: onnx.ModelProto, path: Path) -> None:
    known = _standard_domains() | {function.domain for function in proto.functions}
    for node in all_nodes(proto):
        if node.domain not in known:
            raise ModelError(f"{node_named(node)} uses op {node.op_type!r} from domain {node.domain!r}, which neither "
                             "onnx nor onnxruntime/OpenVINO know", path=path,
                             fix="re-export the model without custom ops (or replace them with standard ONNX ops)")


#: What a model's structure may ask before anything runs it. Nodes are counted with each call of a model-local
#: function expanded (the checker and the runtimes inline them: 40 functions each calling the next twice are 2^40
#: nodes, and the checker ran for ever); 1,000,000 Identity nodes took `apply` minutes, and 150,000 took `verify`
#: 90 s (apply 20 s, each ONNX Runtime session 10 s, then OpenVINO's compile), where 50,000 stay within a minute
#: and real vision models have a few thousand. If/Loop/Scan bodies nested
#: 20 deep took OpenVINO 25 s to convert, each level ~1.5× more (30: hours); real models nest a few. A Loop whose
#: trip count is a constant runs it in full (OpenVINO folds a Loop of constants while converting: 2^62 iterations
#: ran for ever in `convert`, `verify` and `bench`); 10^6 iterations of a small body convert in ~5 s.
MAX_NODES = 50_000
MAX_SUBGRAPH_DEPTH = 10
MAX_LOOP_TRIPS = 1_000_000


def check_work(proto: onnx.ModelProto, path: Path | str, what: str = "the model") -> None:
    """Refuse, from static facts, models whose loading, checking, converting or running would not end in any
    reasonable time: too many nodes once functions are expanded, subgraphs nested too deep, a Loop with a huge
    constant trip count or one that can never end. Done before the checker, which is one of those that hang; and
    by the splice on what it made (`what`: "the patched model"), which would otherwise be refused only when
    `verify` loads it, naming its scratch file."""
    functions = {function_key(f): f for f in proto.functions}
    sizes: dict[tuple[str, str, str], int] = {}
    constants = {t.name: t for t in _all_initializers(proto)}
    constants |= {node.output[0]: attr.t for node in all_nodes(proto) if node.op_type == "Constant"
                  for attr in node.attribute if attr.name == "value" and attr.HasField("t")}

    def count(nodes, depth: int, calls: int, outer: onnx.NodeProto | None) -> int:
        """`outer`: the node of the main graph (or function) these nodes are nested in, which the user can find."""
        total = 0
        for node in nodes:
            total += 1
            callee = call_key(node)
            if callee in functions and calls < 100:  # deeper call chains: the checker refuses them
                if callee not in sizes:
                    sizes[callee] = 0  # a function calling itself: the checker refuses the cycle
                    sizes[callee] = count(functions[callee].node, depth, calls + 1, None)
                total += sizes[callee]
            if node.op_type == "Loop":
                _check_loop(node, constants, path)
            for attr in node.attribute:
                for graph in (*([attr.g] if attr.HasField("g") else ()), *attr.graphs):
                    if depth + 1 > MAX_SUBGRAPH_DEPTH:
                        raise ModelError(f"{node_named(outer or node)} nests subgraphs (If, Loop or Scan bodies) more "
                                         f"than {MAX_SUBGRAPH_DEPTH} deep; OpenVINO's time to convert grows "
                                         "exponentially with the depth", path=path,
                                         fix="re-export the model with fewer nested If/Loop/Scan (refused: it would "
                                             "not convert in hours)")
                    total += count(graph.node, depth + 1, calls, outer or node)
            if total > MAX_NODES:
                raise ModelError(f"{what} has more than {MAX_NODES:,} nodes (model-local functions expanded at "
                                 "each call); checking, splicing and converting it would take too long", path=path,
                                 fix="simplify or split the model (onnxsim, or fewer nested function calls)")
        return total

    count(proto.graph.node, 0, 0, None)


def _check_loop(node: onnx.NodeProto, constants: dict, path: Path) -> None:
    """A Loop that runs more than MAX_LOOP_TRIPS times by a constant trip count, or that can never end: no trip
    count and a condition the body passes on unchanged (or sets to a constant true)."""
    trip = node.input[0] if node.input else ""
    value = _scalar(constants.get(trip))
    if value is not None and value.dtype.kind in "iu":
        if int(value) > MAX_LOOP_TRIPS:
            raise ModelError(f"{node_named(node)} has a constant trip count of {int(value):,} (at most "
                             f"{MAX_LOOP_TRIPS:,}): running or converting it would not end", path=path,
                             fix="re-export the model with a smaller trip count, or one computed from an input")
    if trip:
        return
    body = next((attr.g for attr in node.attribute if attr.name == "body"), None)
    if body is None or len(body.input) < 2 or not body.output:
        return  # the checker's to say
    cond_out, cond_in = body.output[0].name, body.input[1].name
    producers = {out: n for n in body.node for out in n.output}
    while cond_out in producers and producers[cond_out].op_type == "Identity":
        cond_out = producers[cond_out].input[0]
    local = {t.name: t for t in body.initializer}
    local |= {n.output[0]: a.t for n in body.node if n.op_type == "Constant" for a in n.attribute
              if a.name == "value" and a.HasField("t")}
    always = _scalar(local.get(cond_out, constants.get(cond_out)))
    endless = cond_out == cond_in or (always is not None and bool(always))
    if endless or len(node.input) < 2 or not node.input[1]:
        raise ModelError(f"{node_named(node)} has no trip count and a condition its body never turns "
                         "false: it never ends", path=path,
                         fix="re-export the model with a trip count, or a condition the loop's body computes")


def _scalar(tensor: onnx.TensorProto | None):
    """A one-element constant's value, or None (absent, external, larger, or not readable: the checker judges)."""
    if tensor is None or uses_external_data(tensor) or math.prod(tensor.dims) != 1:
        return None
    try:
        return onnx.numpy_helper.to_array(tensor).reshape(())
    except (ValueError, TypeError):
        return None


def _all_initializers(proto: onnx.ModelProto):
    """Every initializer: the graph's and its subgraphs' (also inside functions)."""
    pending = [proto.graph, *(g for node in all_nodes(proto) for attr in node.attribute
                               for g in (*([attr.g] if attr.HasField("g") else ()), *attr.graphs))]
    for graph in pending:
        yield from graph.initializer


#: Files that passed the full checker in this process, by identity (device, inode, size, change times): one
#: command loads the same file several times (verify: the plain model for the comparison and for `apply`, the
#: patched one for its signature, its provenance and each runner), and one checker pass costs 0.4–0.7 s on
#: HRNet-W32. A file that is rewritten gets a new identity and is checked again.
_CHECKED: set[tuple[int, ...]] = set()

#: Models this process wrote (`save_model`, `irconvert`'s IRs), by identity: a node graphsurgery added that fails
#: at run time in one of them is a bug, but in a model the user gives (`run P.onnx`, `verify --patched P.onnx`) it
#: may have been edited or damaged since apply wrote it (round 27's fuzzer: a bit flipped in a Reshape's shape)
_MADE: set[tuple[int, ...]] = set()


def made_here(path: str | Path) -> bool:
    """Whether `path` is a model this process wrote, unchanged since (see `_MADE`)."""
    try:
        return file_identity(Path(path)) in _MADE
    except OSError:
        return False


def remember_made(path: Path) -> None:
    """Record `path`, just written and placed, as made by this process (`made_here`)."""
    _MADE.add(file_identity(path))


def file_identity(path: Path | int) -> tuple[int, ...]:
    """A file's identity, by path or open descriptor: a rewrite changes it (device, inode, size, mtime, ctime)."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _check_consistency(path: Path, inlined: onnx.ModelProto | None = None) -> None:
    """The full checker on the file as given (by path: external data is checked in place, never loaded), once per
    file identity in this process. `inlined`: the model with its small external tensors read inline
    (`_inline_small_external`), for a model saved with every tensor external: onnx's shape inference cannot read a
    Reshape's shape from external data, so the file's structure is checked by path and shapes on `inlined`."""
    if file_identity(path) in _CHECKED:
        return
    try:
        if inlined is None:
            onnx.checker.check_model(str(path), full_check=True)
        else:
            onnx.checker.check_model(str(path))
            onnx.shape_inference.infer_shapes(inlined, check_type=True, strict_mode=True)  # full_check's options
        _CHECKED.add(file_identity(path))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        # ValueError: the checker's own for some broken fields (an element type of 999 was an internal error)
        if "multiple hard links" in str(exc):  # a sound model whose data file has a second name (`cp -al`
            raise _hard_links(exc, path) from None  # backups): the line said to re-export it (round 44)
        raise ModelError(f"the model fails the ONNX checker: {' '.join(str(exc).split())[:300]}", path=path,
                         fix="the model file is invalid; re-export it (onnx.checker.check_model explains the problem)"
                         ) from None


def _hard_links(exc: Exception, path: Path) -> ModelError:
    """onnx's checker refuses an external data file with more than one hard link, as a possible hard-link attack."""
    named = re.search(r"should be stored in (.+?), but it has multiple hard links", str(exc))
    location = Path(named.group(1)).name if named else "its external data file"
    return ModelError(f"{location} has more than one hard link (another name for the same file elsewhere), which "
                      "onnx refuses as a possible hard-link attack", path=path,
                      fix=f"give it a file of its own: copy it and move the copy over it (cp {shlex.quote(location)} "
                          f"x.tmp && mv x.tmp {shlex.quote(location)})")


def external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor (initializers, also in subgraphs, and the values and indices of sparse ones) whose bytes live in
    an external file."""
    return [tensor for tensor in _all_tensors(proto) if uses_external_data(tensor)]


def _all_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor: initializers and attribute tensors (also in subgraphs), and the values and indices of sparse
    ones."""
    from onnx.external_data_helper import _get_all_tensors

    return [*_get_all_tensors(proto), *_sparse_parts(proto)]


def _sparse_parts(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """The values and indices of the sparse initializers and sparse attributes, which onnx's list of tensors leaves
    out (round 57): their data files were no input, and `apply -o DATA --force` replaced one; a reference past its
    end passed every check, and ONNX Runtime refused the model in verify."""
    for graph in nested_graphs(proto.graph):
        sparse = [*graph.sparse_initializer]
        for node in graph.node:
            for attr in node.attribute:
                sparse += [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else ()), *attr.sparse_tensors]
        for tensor in sparse:
            yield tensor.values
            yield tensor.indices


#: The keys of an external data entry that ONNX defines: onnx ignores any other with a warning on stderr (printed
#: once per read of the tensor: four times by `inspect`), and ONNX Runtime refuses the model ("model format error!"),
#: `basepath` too, which onnx's Python reader takes but onnx.proto does not define (round 57)
EXTERNAL_DATA_KEYS = frozenset({"location", "offset", "length", "checksum"})


def _check_external_data(external: list[onnx.TensorProto], path: Path) -> None:
    base = path.parent.resolve()
    for tensor in external:
        unknown = [entry.key for entry in tensor.external_data if entry.key not in EXTERNAL_DATA_KEYS]
        if unknown:  # before onnx's ExternalDataInfo reads the entry and warns (round 27's fuzzer)
            raise ModelError(f"tensor {tensor.name!r} has an external data key {_quoted(unknown[0])} that ONNX does "
                             "not define (ONNX Runtime refuses the model)", path=path,
                             fix="the file is damaged; re-save the model with onnx.save_model(..., "
                                 "save_as_external_data=True)")
        repeated = [key for key, count in Counter(entry.key for entry in tensor.external_data).items() if count > 1]
        if repeated:  # the checker reads the first location, onnx and OpenVINO the last: two files (round 57)
            raise ModelError(f"tensor {tensor.name!r} gives its external data {_quoted(repeated[0])} twice (onnx's "
                             "checker reads the first location, onnx and OpenVINO the last of each)",
                             path=path, fix="the file is damaged; re-save the model with onnx.save_model(..., "
                                            "save_as_external_data=True)")
        # plain decimal digits, as onnx writes them: Python's int() also takes ' 16', '+16', '1_6' and '١٦', which
        # ONNX Runtime refuses and OpenVINO reads otherwise ('1_6' as 1: other weights than apply copied; round 57)
        written = [entry.value for entry in tensor.external_data if entry.key in ("offset", "length")]
        try:
            if not all(value.isascii() and value.isdigit() for value in written):
                raise ValueError
            info = ExternalDataInfo(tensor)
        except ValueError:  # offset or length that is not an integer
            raise ModelError(f"tensor {tensor.name!r} has an external data offset or length that is not a number "
                             "(plain decimal digits)",
                             path=path, fix="the file is damaged; re-export or re-download the model") from None
        location = info.location or ""
        if "\x00" in location or len(location.encode()) > 4096:
            raise ModelError(f"tensor {tensor.name!r} names its external data file {_quoted(location)}, which "
                             "is no usable file name (a NUL byte, or too long)", path=path,
                             fix="the file is damaged; re-export or re-download the model")
        bad = (not location or os.path.isabs(location) or location.startswith(("/", "\\"))
               or ".." in Path(location.replace("\\", "/")).parts or ":" in location)
        target = (path.parent / location)
        try:
            if not bad:
                resolved = target.resolve()
                bad = base not in resolved.parents and resolved != base
            file_size = target.stat().st_size if not bad and target.is_file() and not target.is_symlink() else None
        except (OSError, RuntimeError) as exc:  # too long for the file system, a symbolic-link loop
            raise ModelError(f"external data file {_quoted(location)} of tensor {tensor.name!r} cannot be "
                             f"opened ({getattr(exc, 'strerror', None) or exc})", path=path,
                             fix="keep the external data file beside the model under a plain name") from None
        if not location:
            raise ModelError(f"tensor {tensor.name!r} has external data without a location", path=path,
                             fix="re-save the model with onnx.save_model(..., location=...)")
        if bad:
            raise ModelError(
                f"tensor {tensor.name!r} points its external data at {location!r}, outside the model's folder",
                path=path,
                fix="refused for safety; keep external data files beside the model",
            )
        if target.is_symlink():  # onnx refuses them too; say why here
            raise ModelError(f"external data file {location!r} of tensor {tensor.name!r} is a symbolic link",
                             path=path, fix="refused for safety; copy the data file itself beside the model")
        if file_size is None and target.is_dir():  # `.` or a folder's name: "missing" sent users looking for it
            raise ModelError(f"external data file {location!r} of tensor {tensor.name!r} is a folder, not a file",
                             path=path, fix="re-save the model with its external data in a file beside it "
                                            "(onnx.save_model(..., location='NAME.data'))")
        if file_size is None and target.exists():  # a FIFO, a device or a socket was called missing too
            raise ModelError(f"external data file {location!r} of tensor {tensor.name!r} is not a regular file (a "
                             f"FIFO, a device or a socket)", path=path, fix=f"put the data file {location!r} itself "
                                                                           f"beside the model")
        if file_size is None:
            raise ModelError(f"external data file {location!r} of tensor {tensor.name!r} is missing", path=path,
                             fix=f"put {location!r} beside the model")
        offset, length = info.offset or 0, info.length
        if length is None:
            length = file_size - offset
        if offset < 0 or length < 0 or offset + length > file_size:
            raise ModelError(f"tensor {tensor.name!r} reads past the end of {location!r}", path=path,
                             fix="the external data file is truncated; copy it again")


#: Bytes per element of the tensor types whose data is one fixed-size value per element (4-bit types are packed,
#: strings vary: their sizes are the checker's to judge)
ELEMENT_BYTES = {
    onnx.TensorProto.FLOAT: 4, onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT16: 2,
    onnx.TensorProto.INT16: 2, onnx.TensorProto.INT32: 4, onnx.TensorProto.INT64: 8, onnx.TensorProto.BOOL: 1,
    onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.UINT32: 4, onnx.TensorProto.UINT64: 8,
    onnx.TensorProto.COMPLEX64: 8, onnx.TensorProto.COMPLEX128: 16, onnx.TensorProto.BFLOAT16: 2,
    onnx.TensorProto.FLOAT8E4M3FN: 1, onnx.TensorProto.FLOAT8E4M3FNUZ: 1, onnx.TensorProto.FLOAT8E5M2: 1,
    onnx.TensorProto.FLOAT8E5M2FNUZ: 1,
}


#: The typed field holding a tensor's values when it has no raw_data, and its entries per element (ONNX keeps
#: the 8- and 16-bit types and float16 in int32_data)
TYPED_FIELDS = {
    onnx.TensorProto.FLOAT: ("float_data", 1), onnx.TensorProto.COMPLEX64: ("float_data", 2),
    onnx.TensorProto.DOUBLE: ("double_data", 1), onnx.TensorProto.COMPLEX128: ("double_data", 2),
    onnx.TensorProto.INT64: ("int64_data", 1), onnx.TensorProto.UINT32: ("uint64_data", 1),
    onnx.TensorProto.UINT64: ("uint64_data", 1),
}


def _check_tensor_sizes(tensors: list[onnx.TensorProto], path: Path) -> None:
    """A tensor's raw bytes (inline, or the length its external data declares) must be what its dims and type
    need: the checker refuses too few inline bytes but let too many by, and never compares an external length, so
    `apply` copied such a tensor into the patched model and only the runtimes refused it."""
    for tensor in tensors:
        if tensor.HasField("segment"):  # the checker lets it by, ONNX Runtime ignores it, OpenVINO refuses the model
            raise ModelError(f"tensor {tensor.name[:80]!r} is stored as a segment of a larger tensor, which ONNX "
                             "Runtime and OpenVINO do not read alike", path=path,
                             fix="re-export or re-save the model with onnx.save_model")
        size = ELEMENT_BYTES.get(tensor.data_type)
        if size is None or any(d < 0 for d in tensor.dims):  # the checker's to say
            continue
        if uses_external_data(tensor):
            info = ExternalDataInfo(tensor)  # offsets and lengths were checked against the file already
            held = info.length
            if held is None:  # no length: the tensor is the rest of the file (onnx reads to its end), so a location
                # naming a larger file (the model itself, one file for all tensors) was copied into `apply`'s output
                held = (path.parent / info.location).stat().st_size - (info.offset or 0)
        elif tensor.HasField("raw_data"):
            held = len(tensor.raw_data)
        else:  # values in the typed field (float_data, int32_data…): the checker let one too many by (round 57)
            field, per = TYPED_FIELDS.get(tensor.data_type, ("int32_data", 1))
            held = len(getattr(tensor, field)) * (size // per) or None  # none at all: the checker's to say
        need = math.prod(tensor.dims) * size
        if held is not None and held != need:
            raise ModelError(f"tensor {tensor.name[:80]!r} holds {held:,} bytes where its {len(tensor.dims)}-d "
                             f"{onnx.TensorProto.DataType.Name(tensor.data_type)} shape {list(tensor.dims)[:8]} needs "
                             f"{need:,}", path=path, fix="the file is damaged; re-export or re-download the model")


#: External tensors of at most this many bytes are read inline on load (onnx.save's own default threshold keeps
#: them inline): shape constants saved with `size_threshold=0` are then readable for shape inference and the steps.
SMALL_TENSOR = 1024


def _inline_small_external(external: list[onnx.TensorProto], path: Path) -> bool:
    """Read the small ones of a model's `external` tensors (paths, offsets and lengths already validated by
    `_check_external_data`) into the in-memory model; the file is not changed. A tensor whose length does not match
    its dims stays external, for the checker to judge. Whether any was read."""
    inlined = False
    for tensor in external:
        info = ExternalDataInfo(tensor)
        source = path.parent / info.location
        offset = info.offset or 0
        length = info.length if info.length is not None else source.stat().st_size - offset
        if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED) or length > SMALL_TENSOR:
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError):
            continue
        if math.prod(tensor.dims) * itemsize != length:  # 4-bit types (packed): the checker's to say
            continue
        try:
            with open(source, "rb") as stream:
                stream.seek(offset)
                data = stream.read(length)
        except OSError as exc:
            raise ModelError(f"external data file {_quoted(info.location)} of tensor {tensor.name!r} cannot be read "
                             f"({exc.strerror or exc})", path=path, fix="check its permissions") from None
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = data
        inlined = True
    return inlined


def _quoted(name: str) -> str:
    """A file name from a model, quoted and cut to 80 characters for an error line."""
    return repr(name[:80] + ("…" if len(name) > 80 else ""))


def data_file(out: Path) -> Path:
    """The external data file written beside `out` when the model has (or needs) external data."""
    return out.with_name(f"{out.name}.data")


def check_output_path(out: Path, inputs: list[Path], force: bool, *, ir: bool = False) -> None:
    """Refuse outputs that would overwrite an input (any spelling or link of it: the model, its external data, the
    recipe), land in a missing folder, replace something that is not a regular file, or replace a file without
    --force. The output's data file counts as part of the output: an orphan `<out>.data` is not replaced silently.
    An ONNX model (not an `ir`) is not named .xml: every command reads a .xml as an OpenVINO IR, so `apply -o m.xml`
    wrote a model no command read back (`run m.xml`: "not an OpenVINO IR"; round 39).
    """
    check_flags(force=force)  # the Python API's force="no" replaced an existing output
    if not ir and Path(out).suffix.lower() == ".xml":
        raise GraphsurgeryError("the output ends in .xml, which every command reads as an OpenVINO IR, not ONNX",
                                path=out, fix="name the model .onnx (`graphsurgery convert` writes the IR)")
    utf8_path(out, "output")
    refuse_overwriting(out, inputs)
    if not present(data_file(out)):  # too long a name for the system (a 255-byte output's): no file to find there
        data = None
    else:
        data = data_file(out)
        refuse_overwriting(data, inputs)
    check_output_folder(out)
    if out.is_dir():
        raise GraphsurgeryError("the output is a directory", path=out, fix="give a file name with -o")
    if (out.exists() or out.is_symlink()) and not force:  # a dangling or looping symlink is there all the same
        raise output_exists(out, out)
    if data is not None and not force:
        raise output_exists(out, data)
    if not os.access(out.parent, os.W_OK):
        raise GraphsurgeryError("the output folder is not writable", path=out, fix="choose a writable folder")


def output_exists(out: Path, found: Path) -> GraphsurgeryError:
    """The refusal of an output that exists (`found`: `out`, or its data file) without --force: when the command
    starts (`check_output_path`) and again as it places its files (`safeio.place`)."""
    what = "the output exists" if Path(found) == out else f"the output's data file {Path(found).name} exists"
    return GraphsurgeryError(what, path=out, fix="pass force=True (--force) to replace it, or choose another path")


def staging_folder(out: Path):
    """A scratch folder beside `out` (`safeio.scratch_folder`): files written there and then moved with os.replace
    (a rename within one file system) appear whole or not at all."""
    return scratch_folder(out.parent, scratch_prefix(out), out)


def save_model(
    proto: onnx.ModelProto, out: Path, *, external_base: Path | None = None, check: bool = True, replace: bool = True,
    patched_from: tuple[str, str] | None = None, made: bool = True,
) -> list[Path]:
    """Write `proto` to `out` atomically; returns the files written (the model and, if any, its data file).

    Tensors with external data are copied (streamed) from `external_base` into `<out>.data`; a model too large
    for one protobuf moves its large tensors there too. Without `replace` (no --force), an output that another
    command placed while this one worked is refused (`safeio.place`), not replaced. `patched_from`: (recipe,
    model) when `proto` is that model, checked when read, patched by that recipe: shape inference failing in the
    model's own nodes is then the recipe's fault (`_network_refuses`). `made`: whether `proto`'s graphsurgery nodes
    are this process's (`made_here`), not copied from a file the user gives.
    """
    out = Path(out)
    placed: list[Path] = []
    with staging_folder(out) as staging:
        try:
            staged = staging / out.name
            data_name = data_file(out).name
            moved = _stage_external_data(proto, external_base, staging / data_name, data_name)
            too_big = _exceeds_protobuf_limit(proto)
            if too_big and moved:
                raise ModelError("model holds both external data and over 2 GB inline", path=out,
                                 fix="keep the weights in one external data file")
            onnx.save_model(proto, str(staged), save_as_external_data=too_big, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            if check:
                onnx.checker.check_model(str(staged), full_check=True)
            with placing(out.parent):  # the data file never lands without its model, nor beside another's
                data = [(staging / data_name, out.parent / data_name)] if present(staging / data_name) else []
                placed = place([*data, (staged, out)], replace)
            if check:  # the rename keeps the identity: loading the output later in this command is not checked again
                _CHECKED.add(file_identity(out))
            if made:
                remember_made(out)
            return placed
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            if patched_from and (refused := _network_refuses(exc, *patched_from)):
                raise refused from None
            raise ModelError(f"the patched model fails the ONNX checker: {' '.join(str(exc).split())[:300]}", path=out,
                             fix="report this with the recipe and model (a graphsurgery bug)") from None
        except FileExistsError as exc:  # placed by another command since this one started (`place`)
            raise output_exists(out, out if present(out) else Path(exc.filename or out)) from None
        except OSError as exc:
            for path in placed:  # a data file without its model is a partial output
                with suppress(OSError):
                    path.unlink()
            fix = ("use a shorter output name (the weights go to <name>.data beside it)"
                   if exc.errno == errno.ENAMETOOLONG else write_fix(exc, "free disk space or choose another folder"))
            raise GraphsurgeryError(f"could not write the output ({exc.strerror or exc})", path=out,
                                    fix=f"{fix}; nothing was written") from None


#: One error of onnx's shape inference: "(op_type:Add, node name: p2o.Add.248): [ShapeInferenceError] Incompatible
#: dimensions"
_INFERENCE_ERROR = re.compile(r"\(op_type:[^,)]*, node name: ([^)]*)\): \[\w+\] [^(]*")


def _network_refuses(exc: Exception, recipe: str, model: str) -> GraphsurgeryError | None:
    """Shape inference failing only in the model's own nodes, of a model that passed the checker as read: the
    recipe feeds its network a shape it cannot take (round 45: a resize to 480 × 641 before a text detector whose
    sides must be multiples of 32 was "the patched model fails the ONNX checker", with the checker's raw lines and
    "a graphsurgery bug" as the fix). None when a node of graphsurgery's own fails (that is a bug)."""
    said = " ".join(str(exc).split())
    errors = list(_INFERENCE_ERROR.finditer(said))
    if not isinstance(exc, onnx.shape_inference.InferenceError) or not errors or any(
            error.group(1).startswith(f"{SPLICED}/") for error in errors):
        return None
    first = errors[0].group(0).strip().rstrip(":;,")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return RecipeError(f"the recipe gives {printable(model)}'s network an input of a size it cannot take: ONNX shape "
                       f"inference fails in the network's own nodes, first {first[:160]}{more}", path=recipe,
                       fix="change the recipe's sizes (resize, crop) to ones the network takes — often multiples of "
                           "its stride, e.g. 32")


def _exceeds_protobuf_limit(proto: onnx.ModelProto) -> bool:
    """Whether the model is too big for one protobuf. `ByteSize()` encodes the whole model (as slow as saving it),
    so it is asked only when the inline tensors alone come within a factor of two of the limit (raw data is sized
    from the dims without reading it; typed fields, whose varints can outgrow the values, are measured)."""
    from onnx.external_data_helper import _get_all_tensors

    inline = 0
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            continue
        if tensor.HasField("raw_data") and tensor.data_type != onnx.TensorProto.STRING:
            inline += math.prod(tensor.dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        else:
            inline += tensor.ByteSize()
    return inline > PROTOBUF_LIMIT // 2 and proto.ByteSize() > PROTOBUF_LIMIT


def _stage_external_data(proto: onnx.ModelProto, base: Path | None, data_path: Path, data_name: str) -> bool:
    """Stream every external tensor's bytes into one new data file; point the tensors at it."""
    tensors = external_tensors(proto)
    if not tensors:
        return False
    if base is None:
        raise ModelError("the model refers to external data but no source folder is known", path=data_path,
                         fix="load it with graphsurgery.modelio.load_model")
    with open(data_path, "wb") as sink:
        end = 0
        for tensor in tensors:
            info = ExternalDataInfo(tensor)
            source = base / info.location
            offset = info.offset or 0
            length = info.length if info.length is not None else source.stat().st_size - offset
            start = (end + 4095) // 4096 * 4096
            with open(source, "rb") as src:
                _as_read(source, src.fileno())
                copy_range(src.fileno(), sink.fileno(), offset, start, length)
                _as_read(source, src.fileno())
            _set_external(tensor, data_name, start, length)
            end = start + length
        sink.truncate(end)  # a trailing hole still counts towards the file's size
    return True


def _as_read(path: Path, descriptor: int) -> None:
    """Within `one_command`, refuse an open external data file that is not as the model's read saw it (round 57:
    one replaced or rewritten in between was copied into `apply`'s output as it was then)."""
    reads = _COMMAND.get()
    known = None if reads is None else reads.read.get(_real(reads, path))
    if known is not None and file_identity(descriptor) != known:
        raise _changed_since_read(path, data=True)


def _set_external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def model_files(loaded: LoadedModel) -> list[Path]:
    """The files a model is made of: the .onnx and each external data file it names (what outputs must not hit)."""
    names = {ExternalDataInfo(tensor).location for tensor in external_tensors(loaded.proto)}
    return [loaded.path, *dict.fromkeys([*loaded.data_files, *(loaded.base_dir / name for name in sorted(names))])]


def model_paths(model: Path) -> list[Path]:
    """The files a model given by path is made of, for outputs to avoid before it is loaded: an IR's .xml and .bin,
    an ONNX file and the external data files it names (`--json p.data` replaced the model's weights with the report,
    `verify --patched m.xml --json m.bin` the IR's). Read without its weights; a model that cannot be read names only
    itself (the command reports what is wrong with it)."""
    model = Path(model)
    if model.suffix.lower() == ".xml":
        return [model, model.with_suffix(".bin")]
    try:
        if not model.is_file() or model.stat().st_size > PROTOBUF_LIMIT:  # never opened: a FIFO would block
            return [model]
        proto = onnx.load(str(model), format="protobuf", load_external_data=False)
        with warnings.catch_warnings():  # an unknown key is refused, in one line, when the model is read
            warnings.simplefilter("ignore")
            names = {ExternalDataInfo(tensor).location for tensor in external_tensors(proto)}
    except (OSError, DecodeError, RuntimeError, ValueError, TypeError, RecursionError):
        return [model]
    return [model, *(model.parent / name for name in sorted(names) if name and "\0" not in name)]
