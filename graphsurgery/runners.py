"""ONNX Runtime and OpenVINO behind one small interface.

A runner is a context manager: `with open_runner("openvino", path) as run: outputs = run({"input": x})`, giving a
dict of numpy arrays by output name. OpenVINO runs at f32 unless a reduced precision is asked for explicitly (its
CPU plugin would otherwise pick bf16 on this kind of CPU). Backends are imported only when a runner is opened.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from graphsurgery.defaults import BACKENDS, MAX_THREADS, PRECISIONS
from graphsurgery.errors import ArgumentError, GraphsurgeryError, check_names, printable, whole
from graphsurgery.inlining import for_openvino
from graphsurgery.limits import openvino_telemetry_off, refuse_if_limited
from graphsurgery.safeio import input_path, present
from graphsurgery.scopes import SPLICED, step_nodes
from graphsurgery.supervisor import doing, each

if TYPE_CHECKING:
    from graphsurgery.modelio import LoadedModel

#: the node-name prefixes of the flip test's two halves, as splice names them
FLIP_TEST, FLIP_AVERAGE = step_nodes("input", "flip_test"), step_nodes("output", "flip_average")

#: How much of an .xml is read to see that it is an IR (its <net> element comes after the XML declaration)
IR_HEAD_BYTES = 4096
#: How an IR starts: its root element is <net>, after at most an XML declaration and comments. An HTML page that
#: mentions <net> went on to every frontend of OpenVINO (TensorFlow's logged to stderr); a DOCTYPE (entities, the
#: "billion laughs") has no place in an IR.
IR_START = re.compile(rb"(\xef\xbb\xbf)?\s*(<\?xml[^>]*\?>\s*)?(<!--.*?-->\s*)*<net[\s>]", re.DOTALL)

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

#: whether `openvino` has made OpenVINO ready in this process, and the lock the first caller does it under
_openvino_ready = False
_OPENVINO_READYING = threading.Lock()


@dataclass(frozen=True)
class Runner:
    """A loaded model: `runner(feeds)` runs it. `precision` is what the backend really computes in: OpenVINO's CPU
    plugin quietly runs f32 when the CPU lacks bf16/f16, whatever the hint asked, and results must say so."""

    infer: Run
    precision: str

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer(feeds)


@dataclass(frozen=True)
class Port:
    """A model input or output: name, numpy dtype name, shape (None for a dynamic dim)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ModelSignature:
    """What a caller needs to feed a model and label its results: ports and the weights' precision (FP32/FP16)."""

    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    weights: str
    local_functions: bool = False  # an ONNX model's: OpenVINO reads it inlined (`inlining.for_openvino`)


@contextmanager
def open_runner(backend: str, model: str | Path, *, precision: str = "f32", threads: int | None = None,
                spin: bool = True) -> Iterator[Runner]:
    """Load `model` (.onnx, or .xml for OpenVINO) on `backend`; yield a function feeding inputs by name.

    `spin=False` stops ONNX Runtime's idle worker threads from spin-waiting after a run: alone, spinning saves a
    little latency; next to another runtime in the same process it steals that runtime's CPU (benchmarks).
    """
    model = Path(model)
    check_names(backend=backend, precision=precision)
    if backend == "onnxruntime":
        if precision != "f32":
            raise GraphsurgeryError(f"onnxruntime runs at f32 only, not {precision}", path=model,
                                    fix="use precision f32 or the openvino backend (--precision, --backend)")
        if model.suffix.lower() == ".xml":  # round 53: `run m.xml --backend onnxruntime` was "Protobuf parsing
            # failed — fix: check the model with `graphsurgery inspect`", which says it is an IR
            raise GraphsurgeryError("onnxruntime cannot run an OpenVINO IR", path=model,
                                    fix="run the .xml on openvino (--backend openvino), or give the .onnx it was "
                                        "converted from")
        yield Runner(_onnxruntime(model, threads, spin), "f32")
    elif backend == "openvino":
        yield _openvino(model, precision, threads)
    else:
        raise GraphsurgeryError(f"unknown backend {backend!r}", fix=f"choose one of {', '.join(BACKENDS)}")


def _small_tensors_inline(ort, model: Path, options):
    """A session on a model saved with every tensor external (`size_threshold=0`), whose shape constants onnxruntime
    cannot read from there: the model as `load_model` holds it (its paths checked, small tensors read inline), its
    other external data read from the model's folder."""
    from graphsurgery.modelio import load_model

    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(model.parent))
    return ort.InferenceSession(load_model(model).proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _onnxruntime(model: Path, threads: int | None, spin: bool = True) -> Run:
    # onnxruntime's import warns in colour on stderr when it cannot store a telemetry id in an unwritable HOME
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    from graphsurgery.modelio import read_by_path

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failing node is reported once, as a one-line error (not in red)
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:  # "", [] and 0 were falsy: the runtime's default, in silence (round 26)
        options.intra_op_num_threads = _bounded(threads)
        options.inter_op_num_threads = 1
    try:
        try:
            with read_by_path(model), doing(f"ONNX Runtime was loading {printable(model)}"):
                session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            if isinstance(exc, GraphsurgeryError) or "from external tensors" not in str(exc):
                raise
            with read_by_path(model), doing(f"ONNX Runtime was loading {printable(model)}"):
                session = _small_tensors_inline(ort, model, options)
    except GraphsurgeryError:
        raise
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        refuse_if_limited(exc, "onnxruntime", model)  # `ulimit -v`: not the model's fault
        raise GraphsurgeryError(f"onnxruntime cannot load the model: {_first_line(exc)}", path=model,
                                fix="check the model with `graphsurgery inspect`") from None
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            with doing(f"ONNX Runtime was running {printable(model)}"):
                return dict(zip(names, session.run(names, feeds)))
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's untyped exceptions: the model's fault, or a bug (see failed_run)
            failed_run(exc, "onnxruntime", model, feeds)

    return run


def precision_note(ran: str) -> str | None:
    """What a user should know about bf16 that really ran: whether it is faster depends on the CPU, not on the
    flag. Measured with HRNet-W32 (BENCHMARKS.md): 0.27× the time of f32 on an Intel Xeon with AMX, 0.52× on an
    AMD EPYC (Zen 4, AVX-512 bf16), 1.41× on an Intel Xeon with AVX-512 bf16 and no AMX."""
    if ran != "bf16":
        return None
    return ("bf16 is not faster on every CPU (HRNet-W32: 0.27× the time of f32 on an Intel Xeon with AMX, 0.52× on "
            "an AMD EPYC with AVX-512 bf16, 1.41× on an Intel Xeon without AMX): time it on this one with "
            "`graphsurgery bench`")


def backend_list(backends: str | Iterable[str]) -> list[str]:
    """Backends as the Python API takes them: a list, or one name or "a,b" as the CLI does (a str was iterated
    into the one-letter backends 'o', 'n', …)."""
    if isinstance(backends, str):
        return [name.strip() for name in backends.split(",") if name.strip()]
    if not isinstance(backends, Iterable):  # None was "'NoneType' object is not iterable"
        raise ArgumentError(f"backends is a list of backend names ({', '.join(BACKENDS)}), not "
                            f"{type(backends).__name__}")
    return list(backends)


def check_backends(backends: list[str], precision: str, patched: str | Path | None) -> list[str]:
    if not backends:
        raise GraphsurgeryError("no backend to verify on", fix=f"choose from {', '.join(BACKENDS)}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise GraphsurgeryError(f"unknown backend {unknown[0]!r}", fix=f"choose from {', '.join(BACKENDS)}")
    check_precision(precision)  # first: "F32" was said to apply to OpenVINO only (round 87)
    if precision != "f32" and "openvino" not in backends:
        raise GraphsurgeryError(f"precision {precision} applies to OpenVINO only", fix="add openvino to the backends")
    patched = input_path(patched, "patched model file") if patched is not None else None  # the API's first look
    if patched is not None and patched.suffix.lower() == ".xml" and "onnxruntime" in backends:
        raise GraphsurgeryError(
            "onnxruntime cannot run OpenVINO IR",
            path=patched,
            fix="verify the .xml on openvino alone (--backends openvino), or give the patched .onnx",
        )
    return list(dict.fromkeys(backends))


def check_precision(precision: str) -> None:
    """Refuse a precision that is none of OpenVINO's CPU plugin hints graphsurgery gives (`PRECISIONS`)."""
    if precision not in PRECISIONS:
        raise GraphsurgeryError(f"unknown precision {precision!r}", fix=f"choose one of {', '.join(PRECISIONS)}")


def _bounded(threads: int) -> int:
    """A thread count the runtimes can take: an int (2.5 from the Python API went through), 1 to MAX_THREADS."""
    if not whole(threads) or not 1 <= threads <= MAX_THREADS:  # "2" said "2 threads: give between 1 and 8"
        raise GraphsurgeryError(f"{threads!r} threads: give a whole number between 1 and {MAX_THREADS} (4 per CPU)",
                                fix="leave the thread count to the runtime, or give the number of CPUs")
    return threads


def openvino_config(precision: str, threads: int | None, *, throughput: bool = False) -> dict:
    """The CPU plugin configuration: an explicit inference precision (f32 unless asked) and thread count;
    `throughput` asks for parallel streams (for asynchronous requests) instead of one fast request."""
    check_precision(precision)
    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads is not None:  # "", [] and 0 were falsy: the runtime's default, in silence (round 26)
        config["INFERENCE_NUM_THREADS"] = _bounded(threads)
    if throughput:
        config["PERFORMANCE_HINT"] = "THROUGHPUT"
    return config


def openvino():
    """The `openvino` module, its telemetry off and its binding's numpy bridge built: every OpenVINO object
    graphsurgery makes starts here.

    The first `Tensor.data` of a process (an input's copy in `infer`) builds a static dtype table in OpenVINO's
    binding, and building it has pybind11 load numpy's C API, which lets go of the GIL inside the table's C++
    initialization guard. A second thread's first `Tensor.data` then waited for that guard holding the GIL, the
    first waited for the GIL: the whole process froze for ever (round 85: two threads' `verify --backends
    openvino`, 8 fresh processes in 40; every time when the first thread pauses there). The first caller builds the
    table once, alone, under a lock; later calls cost one flag read. Telemetry is silenced before the import, which
    sends an event: the CLI did so as a command started, an application calling the API did not.
    """
    global _openvino_ready
    if not _openvino_ready:
        openvino_telemetry_off()
    import openvino as ov

    if not _openvino_ready:
        with _OPENVINO_READYING:
            if not _openvino_ready:
                ov.Tensor(np.zeros(1, np.float32)).data  # noqa: B018 (numpy's C API and the dtype table loaded)
                _openvino_ready = True
    return ov


#: How the command at work runs a model on ONNX Runtime alone, for the fix of OpenVINO's refusals: verify and chain
#: take `--backends`, `run` takes `--backend`, bench times both (round 97: run and bench named an option they refuse)
ONNXRUNTIME_ALONE: ContextVar[str] = ContextVar("onnxruntime_alone", default="--backends onnxruntime")


@contextmanager
def onnxruntime_alone(words: str) -> Iterator[None]:
    """Within: OpenVINO's refusals tell how to run the model on ONNX Runtime alone in these `words`."""
    token = ONNXRUNTIME_ALONE.set(words)
    try:
        yield
    finally:
        ONNXRUNTIME_ALONE.reset(token)


def compile_openvino(model: str | Path, precision: str = "f32", threads: int | None = None, *,
                     throughput: bool = False):
    """The compiled model behind an OpenVINO runner, for callers that need more than `run` (async request queues)."""
    from graphsurgery.modelio import read_by_path

    ov = openvino()

    config = openvino_config(precision, threads, throughput=throughput)
    if Path(model).suffix.lower() == ".xml":  # checked once per process: most callers read its signature first
        check_ir_files(Path(model))
    try:
        with read_by_path(Path(model)), _ir_weights_read(Path(model)), doing(f"OpenVINO was compiling "
                                                                              f"{printable(model)}"), \
                for_openvino(Path(model)) as (readable, _):
            return ov.Core().compile_model(str(readable), "CPU", config)
    except GraphsurgeryError:  # the file changed since it was read (`read_by_path`)
        raise
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line reports
        # `ulimit -v`: "Cannot load library … failed to map segment", not the model
        refuse_if_limited(exc, "OpenVINO", model)
        if "wasn't fully converted" in str(exc):  # an op OpenVINO has no rule for: named as `convert` names it
            # (verify, bench and run said "Model wasn't fully converted", round 35)
            raise GraphsurgeryError(_unconverted(model, str(exc)), path=model,
                                    fix="change or remove that node (ONNX Runtime may still run the model: "
                                        f"{ONNXRUNTIME_ALONE.get()})") from None
        unreadable = _unreadable(model, str(exc))
        if unreadable:
            raise GraphsurgeryError(unreadable, path=model, fix="remove that tensor, or run the model on ONNX Runtime "
                                                                f"({ONNXRUNTIME_ALONE.get()})") from None
        raise GraphsurgeryError(f"OpenVINO cannot compile the model: {_first_line(exc)}", path=model,
                                fix="check the model with `graphsurgery inspect`") from None


def _unreadable(model: str | Path, report: str) -> str | None:
    """`irconvert.unreadable_tensor`'s line for an ONNX file, or None."""
    if "Unsupported type" not in report or Path(model).suffix.lower() == ".xml":
        return None
    import onnx

    from graphsurgery.irconvert import unreadable_tensor

    try:
        return unreadable_tensor(report, onnx.load(str(model), load_external_data=False))
    except Exception:  # the file changed under us: OpenVINO's own words
        return None


def _unconverted(model: str | Path, report: str) -> str:
    """`irconvert.conversion_failure`'s line (the failing ops, their nodes, OpenVINO's reason) for an ONNX file."""
    import onnx

    from graphsurgery.irconvert import conversion_failure

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # the file changed under us: the ops alone
        proto = onnx.ModelProto()
    return conversion_failure(report, proto)


def _openvino(model: Path, precision: str, threads: int | None) -> Runner:
    compiled = compile_openvino(model, precision, threads)
    request = compiled.create_infer_request()
    names = _output_names(model, compiled)

    failed = False

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal compiled, request, failed
        if failed:  # a compiled model that failed on one shape fails the next shapes too, each request of it:
            # verify's companions (a batch a model cannot run), then the samples alone, failed on the batch's shape
            # (round 95); compiled again, on the next call only (a failure mostly ends the command)
            compiled, failed = compile_openvino(model, precision, threads), False
            request = compiled.create_infer_request()
        try:
            with doing(f"OpenVINO was running {printable(model)}"):
                result = request.infer(feeds)
        except RuntimeError as exc:
            failed = True
            failed_run(exc, "OpenVINO", model, feeds)
        return {name: np.array(result[output]) for name, output in zip(names, compiled.outputs)}

    return Runner(run, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


@contextmanager
def open_stream(backend: str, model: str | Path, *, precision: str = "f32", threads: int | None = None
                ) -> Iterator[Runner]:
    """Like `open_runner`, for many inputs: `runner(iterable of feeds)` yields each one's outputs, in input order.

    On OpenVINO the plugin's optimal number of asynchronous requests (AsyncInferQueue, throughput mode) stays in
    flight while the caller prepares the next inputs; elsewhere the inputs run one after the other.
    """
    if backend != "openvino":
        with open_runner(backend, model, precision=precision, threads=threads) as run:
            yield Runner(lambda feeds: map(run, feeds), run.precision)
        return
    ov = openvino()

    compiled = compile_openvino(model, precision, threads, throughput=True)
    queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    names = _output_names(model, compiled)
    done: dict[int, dict[str, np.ndarray]] = {}
    queue.set_callback(lambda request, index: done.__setitem__(
        index, {name: np.array(tensor.data) for name, tensor in zip(names, request.output_tensors)}))

    def run_all(feeds):
        emitted, feed = 0, {}
        # the requests run in OpenVINO's threads, also while the caller makes the next feed or reads a result: a
        # kernel dying there was a crash that named nothing; each feed is a step under the time limit
        with doing(f"OpenVINO was running {printable(model)}"):
            try:
                for index, feed in enumerate(each(feeds)):
                    queue.start_async(feed, index)  # blocks while every request is busy
                    while emitted in done:
                        yield done.pop(emitted)
                        emitted += 1
                queue.wait_all()
            except RuntimeError as exc:  # a request that failed is reported by the next call on the queue
                failed_run(exc, "OpenVINO", model, feed)
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1

    yield Runner(run_all, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


def model_signature(model: str | Path) -> ModelSignature:
    """Inputs, outputs and weight precision of an .onnx model or an OpenVINO .xml IR, without compiling it."""
    model = Path(model)
    if model.suffix.lower() == ".xml":
        return _ir_signature(model)
    from graphsurgery.modelio import load_model, still_as_loaded

    known = _SIGNATURES.get(os.path.realpath(model))
    if known is not None and known[0].path == model and still_as_loaded(known[0]):
        return known[1]
    return remember_signature(load_model(model))


def remember_signature(loaded: LoadedModel) -> ModelSignature:
    """The signature of a model `load_model` read, kept for `model_signature` as of that read: a command that reads
    a model itself (verify: the plain and the patched model) had each read again, 0.3 s apiece for HRNet-W32, by
    the first runtime opened on it."""
    import onnx

    from graphsurgery.model import real_inputs

    proto = loaded.proto

    def port(value: onnx.ValueInfoProto) -> Port:
        tensor = value.type.tensor_type
        return Port(value.name, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
                    tuple(d.dim_value or None for d in tensor.shape.dim))

    feeds = set(real_inputs(proto))
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    signature = ModelSignature(tuple(port(v) for v in proto.graph.input if v.name in feeds),
                               tuple(port(v) for v in proto.graph.output), "FP16" if half else "FP32",
                               bool(proto.functions))
    key = os.path.realpath(loaded.path)
    with _SIGNATURES_HELD:
        _SIGNATURES.pop(key, None)
        while len(_SIGNATURES) >= SIGNATURES_KEPT:
            del _SIGNATURES[next(iter(_SIGNATURES))]  # the oldest
        _SIGNATURES[key] = (replace(loaded, proto=onnx.ModelProto()), signature)
    return signature


#: The latest ONNX models' signatures, by real path, with the files as `load_model` read and checked them: one
#: opened again unchanged (`modelio.still_as_loaded`) is not read and checked again. Each runtime a command opens on
#: a model asks its signature, and re-reading them was 4 % of the test suite's CPU.
_SIGNATURES: dict[str, tuple[LoadedModel, ModelSignature]] = {}
SIGNATURES_KEPT = 32
#: Held while the memo is changed: two threads of an application evicting the same oldest entry at once raised
#: StopIteration or KeyError from `model_signature` (round 85).
_SIGNATURES_HELD = threading.Lock()


def _ir_weights_read(model: Path):
    """For an IR's .xml, `read_by_path` of its .bin, which OpenVINO reads too; nothing for an ONNX model."""
    from graphsurgery.modelio import read_by_path

    return read_by_path(model.with_suffix(".bin")) if model.suffix.lower() == ".xml" else nullcontext()


def read_ir(model: Path):
    """The IR as OpenVINO reads it (an ov.Model), once its files pass `check_ir_files`; OpenVINO's refusal (an IR
    version it does not read, a Const past the .bin) in one line. Within a command, the .xml and .bin it reads are
    the ones checked (`modelio.read_by_path`)."""
    from graphsurgery.modelio import read_by_path

    ov = openvino()

    check_ir_files(model)
    try:
        with read_by_path(model), _ir_weights_read(model), doing(f"OpenVINO was reading {printable(model)}"):
            return ov.Core().read_model(str(model))
    except GraphsurgeryError:  # the files changed since they were checked (`read_by_path`)
        raise
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line reports
        refuse_if_limited(exc, "OpenVINO", model)
        raise GraphsurgeryError(f"OpenVINO cannot read the IR: {_first_line(exc)}", path=model,
                                fix="convert the model again with `graphsurgery convert`") from None


def _ir_signature(model: Path) -> ModelSignature:
    from graphsurgery.irconvert import WEIGHTS_KEY

    ov = openvino()

    ir = read_ir(model)

    def port(output) -> Port:
        return Port(output.get_any_name(), output.get_element_type().to_dtype().name,
                    tuple(d.get_length() if d.is_static else None for d in output.get_partial_shape()))

    weights = rt_info_text(ir, WEIGHTS_KEY)
    if weights is None:  # an IR made elsewhere: FP16 weights are FP16 constants
        half = any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in ir.get_ops())
        weights = "FP16" if half else "FP32"
    return ModelSignature(tuple(port(p) for p in ir.inputs), tuple(port(p) for p in ir.outputs), weights)


def rt_info_text(ir, key: tuple[str, ...]) -> str | None:
    """The text an IR's rt_info holds under `key`, None where absent. OpenVINO raises where the path passes through
    a value (`<graphsurgery value="…"/>`, anyone's IR): run and verify ended in an internal error (round 55)."""
    try:
        return ir.get_rt_info(list(key)).astype(str) if ir.has_rt_info(list(key)) else None
    except RuntimeError:  # "Path to runtime attribute is incorrect"
        return None


def check_ir_files(model: Path) -> None:
    """An IR's .xml and .bin are there, the .xml starts as an IR does, and its static facts pass `irchecks`: before
    OpenVINO reads it (to read its signature, or to compile it)."""
    from graphsurgery.irchecks import check_ir

    bin_file = model.with_suffix(".bin")
    if not model.is_file():  # a FIFO or /dev/zero as the .xml was "no such IR", of a path that is there
        what = ("is not a regular file (a folder, FIFO or device), so it is not read as an IR" if model.exists()
                else "no such IR (.xml with its .bin beside it)")
        raise GraphsurgeryError(what, path=model, fix="check the path, or make the IR with `graphsurgery convert`")
    if not bin_file.is_file():  # was "no such IR" for an .xml that is there (its .bin beside a symlink's target)
        absent = "is missing" if not present(bin_file) else "is not a regular file (a folder, FIFO or device)"
        raise GraphsurgeryError(f"the IR's weights file {bin_file.name} {absent}: OpenVINO reads it from beside the "
                                ".xml", path=model, fix=f"put the {bin_file.name} that `graphsurgery convert` wrote "
                                                        "with this .xml beside it, or convert the model again")
    with open(model, "rb") as head:  # OpenVINO would try every frontend on it, and TensorFlow's logs to stderr
        if not IR_START.match(head.read(IR_HEAD_BYTES)):
            raise GraphsurgeryError("not an OpenVINO IR (no <net> element at its start)", path=model,
                                    fix="give the .xml that `graphsurgery convert` wrote")
    check_ir(model)


def _output_names(model: str | Path, compiled) -> list[str]:
    """The outputs' names as the ONNX file declares them. When OpenVINO removes an Identity in front of an output
    the tensor carries both names, and `get_any_name` may pick the inner one (measured: `graphsurgery/pre/x`
    for an output `y`)."""
    if Path(model).suffix.lower() != ".onnx":
        return [o.get_any_name() for o in compiled.outputs]
    declared = [p.name for p in model_signature(model).outputs]
    names: list[str] = []
    for index, output in enumerate(compiled.outputs):  # a name each: OpenVINO may give two outputs both names
        carried = output.get_names()  # (round 97: an If body reading an output; "internal error (KeyError)")
        own = declared[index] if index < len(declared) and declared[index] in carried else None
        names.append(own or next((name for name in declared if name in carried and name not in names),
                                 output.get_any_name()))
    return names


def failed_run(exc: Exception, runtime: str, model: Path, feeds: dict[str, np.ndarray]) -> NoReturn:
    """A model that loads but fails in `runtime` on inputs that fit what it declares (a dim of 0 somewhere, shapes
    that conflict only at run time) is the model's fault: one line naming the model, the runtime and its message.
    Inputs that do not fit, or a failing node of graphsurgery's own in a model this command made, are a bug: `exc`
    goes on (an internal error). In a patched model the user gives, such a node may have been edited or damaged
    since apply wrote it (round 27: one flipped bit in a Reshape's shape was "a graphsurgery bug"): one line."""
    from graphsurgery.modelio import made_here

    refuse_if_limited(exc, runtime, model)  # an allocation failing under `ulimit -v`: not the model's fault
    if not _fits(feeds, model_signature(model).inputs):
        raise exc
    _refuse_unpaired_flip_average(exc, model)
    own = f"{SPLICED}/" in str(exc)
    if own and made_here(model):
        raise exc
    raise GraphsurgeryError(f"{runtime} cannot run the model: {_first_line(exc)}", path=model,
                            fix="apply the recipe to the plain model again (a node graphsurgery added fails: if "
                                "the file is as apply wrote it, report this)" if own else
                                f"check that the model runs in {runtime} alone on inputs of the shapes it declares; "
                                "re-export it if not") from None


def _refuse_unpaired_flip_average(exc: Exception, model: Path) -> None:
    """A spliced flip_average without a spliced flip_test is a right recipe for a caller that feeds each crop and
    then its mirror (`recipe.flip_unpaired`); run and convert --int8 feed each crop once, and its Split of an odd
    batch failed with "apply the recipe again … report this" (round 69). One line saying what the model wants."""
    from graphsurgery.modelio import load_model

    if f"{FLIP_AVERAGE}Split" not in str(exc) or Path(model).suffix.lower() != ".onnx":  # an IR: not read here
        return
    if any(node.name.startswith(FLIP_TEST) for node in load_model(model).proto.graph.node):
        return
    raise GraphsurgeryError("the model folds a flip test's mirrored crops (a spliced flip_average) but mirrors none "
                            "itself (no flip_test): fed each crop once, its batch does not split in two", path=model,
                            fix="add `flip_test: {}` last among the recipe's input steps and apply it again (or "
                                "feed each crop, then its mirror, yourself)") from None


def _fits(feeds: dict[str, np.ndarray], inputs: tuple[Port, ...]) -> bool:
    """Whether `feeds` are exactly the declared inputs, each of its declared element type, rank and static dims."""
    declared = {port.name: port for port in inputs}
    if set(feeds) != set(declared):
        return False
    for name, value in feeds.items():
        port, value = declared[name], np.asarray(value)
        if value.dtype.name != port.dtype or value.ndim != len(port.shape):
            return False
        if any(dim is not None and dim != size for dim, size in zip(port.shape, value.shape)):
            return False
    return True


#: What makes onnxruntime's messages long and no clearer: its error-code prefix and the C++ function that failed
ORT_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : |/onnxruntime_src/\S+:\d+ [^(]*\([^)]*\)\s*")


def _first_line(exc: BaseException) -> str:
    """The first line of a runtime's report that says something: OpenVINO's start with lines that only name a
    source location ("Exception from src/inference/src/cpp/core.cpp:84:") or lead in to the reason with a colon
    ("Check 'false' failed at …:", "FrontEnd API failed with OpConversionFailure:"); onnxruntime's with an error
    code and a C++ signature."""
    lines = [line.strip() for line in ORT_NOISE.sub("", str(exc)).splitlines() if line.strip()]
    telling = [line for line in lines if not re.fullmatch(r"Exception from \S+:\d+:", line)]
    said = [line for line in telling if not line.endswith(":")]  # "Check '…' failed at x.cpp:77:" only leads in
    first = (said or telling or lines or [type(exc).__name__])[0]
    # onnxruntime's "Got invalid dimensions for input: x for the following indices" puts which dim, the size fed
    # and the size declared (e.g. a batch declared 0) on the lines after: without them the line said nothing
    indices = [line for line in lines if line.startswith("index:")]
    if first.endswith("for the following indices") and indices:
        first = f"{first}: {'; '.join(indices)}"
    return first[:300]
