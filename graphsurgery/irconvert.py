"""ONNX → OpenVINO IR (.xml + .bin), keeping what users rely on: names, FP32 weights, no partial output.

- Weights stay FP32 unless FP16 is asked for: `ov.save_model` would compress them to FP16 by default, which moves
  about 1 % of HRNet's argmaxes.
- Input and output names are the ONNX ones, checked after conversion (and restored if OpenVINO renamed a port),
  so feeds and results are addressed alike on both runtimes.
- The weights' precision ("FP32"/"FP16") is recorded in the IR's rt_info under `graphsurgery/weights`, so that
  `run` can label its results; the patched model's provenance (recipes, plain model's SHA-256) under
  `graphsurgery/provenance`, so that `verify --precision int8 --patched` can tell where an int8 IR came from.
- Output is staged in a temporary folder beside the destination, then moved into place (.bin first, then .xml):
  a failure leaves nothing behind, and the input is never opened for writing.
- `--ovms DIR` writes the OpenVINO Model Server repository layout DIR/<name>/1/model.xml.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import onnx

from graphsurgery.errors import GraphsurgeryError, ModelError, check_flags, listed, printable, quoted, whole
from graphsurgery.inlining import for_openvino
from graphsurgery.irchecks import WEIGHTS_BYTES_KEY, WEIGHTS_SHA256_KEY, weights_digest
from graphsurgery.limits import (
    file_size_fix,
    file_size_limit,
    file_size_problem,
    refuse_if_limited,
    write_fix,
)
from graphsurgery.model import openvino_caveats, provenance, real_inputs
from graphsurgery.modelio import (
    check_output_path,
    command,
    load_model,
    model_files,
    network_sha256,
    output_exists,
    read_by_path,
    remember_made,
    staging_folder,
)
from graphsurgery.quantize import AccuracyControl
from graphsurgery.runners import openvino
from graphsurgery.safeio import input_path, output_path, place, placing, present, refuse_overwriting, umask_refusal
from graphsurgery.supervisor import doing
from graphsurgery.supervisor import made as made_folders

WEIGHTS_KEY = ("graphsurgery", "weights")
SOURCE_KEY = ("graphsurgery", "source")
PROVENANCE_KEY = ("graphsurgery", "provenance")
#: the SHA-256 of the network the IR was converted from (`modelio.network_sha256`): an int8 IR's input steps cannot be
#: compared in the IR, so `verify --precision int8 --patched` asks that it be the model apply makes
CONVERTED_KEY = ("graphsurgery", "converted_sha256")
OVMS_VERSION = "1"
OVMS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Shape = tuple[int | None, ...]


#: `convert --json`'s names of the accuracy control's metric
AGREEMENT, COCO_AP = "joints_within_one_cell", "coco_keypoint_ap"
#: The largest dim --input-shape takes: OpenVINO's dims are 32-bit (a larger one was an internal error)
MAX_DIM = 2**31 - 1


@dataclass(frozen=True)
class Int8Facts:
    """How an int8 IR was calibrated and what it costs: `vs_f32` is int8 against f32 on the calibration samples,
    output by output (`quantize.price`); `speedup` how many times faster than f32 it ran here (`quantize.speedup`);
    `quantized_activations` counts the quantizers NNCF kept. Under accuracy control (`control`): `drop_met`, the
    layers `reverted` to float and, when the metric was COCO keypoint AP (`control.metric`), `ap`: (f32, int8)."""

    vs_f32: dict[str, dict[str, float]]
    speedup: float
    quantized_activations: int
    calibration: str
    control: AccuracyControl | None = None
    drop_met: bool | None = None
    reverted: tuple[str, ...] = ()
    ap: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        control, ap = self.control, self.ap
        return {"int8_vs_f32": self.vs_f32, "int8_speedup": self.speedup, "calibration": self.calibration,
                "quantized_activations": self.quantized_activations,
                "max_drop": control.max_drop if control else None,
                "max_reverts": control.max_reverts if control else None,
                "ranking_samples": control.ranking_samples if control else None,
                "metric": (COCO_AP if control.metric else AGREEMENT) if control else None,
                "coco_ap": {"f32": ap[0], "int8": ap[1], "drop": ap[0] - ap[1],
                            "on": control.metric.description} if ap else None,
                "drop_met": self.drop_met, "reverted_to_float": list(self.reverted)}

    def control_summary(self) -> str:
        """One line on the accuracy control: the metric, the drop asked, met or not (and why not), what went back
        to float."""
        control, within = self.control, self.vs_f32.get("keypoints", {}).get("within_one_cell")
        if self.ap:
            asked = f"COCO keypoint AP on {control.metric.description}, a drop of at most {control.max_drop:g} asked"
            reached = f"AP {self.ap[0]:.4f} f32, {self.ap[1]:.4f} int8, drop {self.ap[0] - self.ap[1]:.4f}"
        else:
            asked = f"at least {1 - control.max_drop:.1%} of the joints within one cell of f32 asked"
            reached = "unknown" if within is None else f"{within:.1%}"
        count = len(self.reverted)
        reverted = (f"{count} layer{'s' if count > 1 else ''} went back to float ({', '.join(self.reverted[:5])}"
                    f"{', …' if len(self.reverted) > 5 else ''})" if self.reverted else "no layer went back to float")
        if self.drop_met:
            return f"accuracy control: met, {reached} ({asked}); {reverted}"
        n = control.max_reverts
        why = f"not within {n} round{'s' if n > 1 else ''} of reverting (--max-reverts)" if n else (
            "NNCF tried every layer")
        if not self.ap and within is None:  # NaN maps: NNCF's validation saw (0, 0) agree with (0, 0)
            why = "no finite f32 joint on the calibration samples to measure it on (check the model's weights)"
        if self.ap and self.ap[0] <= 0:  # any int8 model "drops" nothing from an AP of 0
            why = ("the f32 model scores no AP on these people, so no drop can be measured (untrained weights, or "
                   "annotations of other images?)")
        flat = None if self.ap else too_flat(self.vs_f32)
        return (f"accuracy control: NOT met, {reached} ({asked}): {why}; {reverted}; the IR is written as it stands"
                + (f"; {flat}" if flat else ""))


def too_flat(vs_f32: dict[str, dict[str, float]]) -> str | None:
    """Why int8 cannot keep the joints in their f32 cells, when `quantize.price` measured it: int8 moves a heatmap
    output's values by more, on average, than its f32 peaks stand above the rest of their maps (the median
    `peak_margin_median`). None when no output says so."""
    for name, numbers in vs_f32.items():
        margin, error = numbers.get("peak_margin_median"), numbers.get("mean_abs_diff")
        if margin is not None and error is not None and margin < error:
            return (f"the f32 peaks stand a median {margin:.3g} above the rest of their maps, int8 moves the values of "
                    f"{name} by {error:.3g} on average: these maps are too flat for int8 (untrained weights?) unless "
                    "most layers stay float")
    return None


@dataclass(frozen=True)
class ConvertResult:
    """What `convert` wrote: the IR pair, its weights' precision ("FP32", "FP16" or "INT8"), what OpenVINO computes
    differently in this model (`model.openvino_caveats`; for an int8 IR without accuracy control, also why its
    heatmaps are too flat for int8, `too_flat`) and, for an int8 IR, its `Int8Facts`."""

    xml: Path
    bin: Path
    weights: str
    notes: list[str]
    int8: Int8Facts | None = None

    @property
    def written(self) -> list[Path]:
        """The files in the order they were moved into place: .bin first, so a present .xml means a whole IR."""
        return [self.bin, self.xml]

    def to_dict(self) -> dict:
        """`graphsurgery convert --json`."""
        return {"written": [str(p) for p in self.written], "weights": self.weights, "notes": list(self.notes),
                **(self.int8.to_dict() if self.int8 else {})}


def parse_input_shape(text: str) -> tuple[str, Shape]:
    """`NAME=1,256,192,3` → ("NAME", (1, 256, 192, 3)); `?` or `-1` (None) keeps a dim as the model has it."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(None if d.strip() in ("?", "-1") else int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not _usable_dims(shape):
        raise GraphsurgeryError(f"--input-shape {text!r} is not NAME=D1,D2,...", fix="write e.g. input=1,256,192,3 "
                                f"(dims from 1 to {MAX_DIM:,}; ? or -1 keeps a dim as it is)")
    return name, shape


def _usable_dims(dims) -> bool:
    """A shape --input-shape (or `input_shapes`) can set: a list or tuple of dims, each None (kept as it is) or a
    whole number from 1 to MAX_DIM (the API took -5, 1.5, 2**40 and "abc", each dim a letter, to OpenVINO)."""
    return (isinstance(dims, (list, tuple)) and len(dims) > 0
            and all(d is None or (whole(d) and 0 < d <= MAX_DIM) for d in dims))


def _xml_name_fix(out_xml: Path) -> str:
    """The name to suggest for an IR file not named *.xml: `-o .xml` (a hidden file with no suffix) was told "use
    .xml.xml", and `-o x.xml.` "use x.xml..xml" (round 63)."""
    trimmed = out_xml.name.rstrip(".")
    if trimmed.endswith(".xml") and trimmed != ".xml":
        return f"use {out_xml.with_name(trimmed)}"
    if not Path(trimmed).stem.lstrip(".") or trimmed == ".xml":
        return "give the IR file a name before .xml, e.g. model.xml"
    return f"use {out_xml.with_suffix('.xml')}"


def ovms_path(directory: str | Path, name: str) -> Path:
    """DIR/<name>/1/model.xml, the layout OpenVINO Model Server reads (`--model_path DIR/<name>`)."""
    directory = Path(directory)
    if not directory.is_dir():
        if present(directory):  # `--ovms model.onnx`: "does not exist — fix: create model.onnx first", of a file
            raise GraphsurgeryError("the OVMS repository path is not a folder", path=directory,
                                    fix="give --ovms a folder (an existing one, or create a new one first)")
        raise GraphsurgeryError(
            "the OVMS repository folder does not exist", path=directory, fix=f"create {directory} first"
        )
    if not OVMS_NAME.fullmatch(name):  # match would let a trailing newline through ($)
        raise GraphsurgeryError(f"{name!r} is not a usable model name", path=directory,
                                fix="pass --name with letters, digits, '_', '-' or '.'")
    return directory / name / OVMS_VERSION / "model.xml"


def convert(model_path: str | Path, out_xml: str | Path, fp16: bool = False,
            input_shapes: Mapping[str, Sequence[int | None]] | None = None, *, force: bool = False,
            make_parents: bool = False, transform: Callable | None = None, weights: str | None = None
            ) -> ConvertResult:
    """Convert the ONNX model to IR at `out_xml` (+ .bin).

    `input_shapes` fixes dynamic dims by input name; `make_parents` creates missing folders (the OVMS layout);
    `transform` turns the converted OpenVINO model into the one saved (int8 quantization), whose weights are then
    labelled `weights`.
    """
    check_flags(fp16=fp16, force=force, make_parents=make_parents)
    model_path, out_xml = input_path(model_path, "model file"), output_path(out_xml)
    out_bin = out_xml.with_suffix(".bin")
    if out_xml.suffix != ".xml":
        raise GraphsurgeryError("the IR file name must end in .xml", path=out_xml, fix=_xml_name_fix(out_xml))
    loaded = load_model(model_path)
    proto = loaded.proto
    made = _missing_parents(out_xml.parent) if make_parents else []
    with made_folders(made):  # removed by the parent too, if a signal kills this process (round 84)
        try:
            for folder in reversed(made):
                try:
                    folder.mkdir()
                except OSError as exc:  # a read-only file system under --ovms DIR: an internal error
                    raise (umask_refusal(folder.parent, out_xml) or GraphsurgeryError(
                        f"cannot create the folder {folder} ({exc.strerror or exc})", path=out_xml,
                        fix="choose a writable folder")) from None
            for out in (out_xml, out_bin):  # never over the model or its external data
                check_output_path(out, model_files(loaded), force, ir=True)
            model = _convert(model_path, proto)
            _check_names(model, proto, model_path)
            if input_shapes:
                _reshape(model, input_shapes, model_path)
            if transform is not None:
                model = transform(model)
            weights = weights or ("FP16" if fp16 else "FP32")
            model.set_rt_info(weights, list(WEIGHTS_KEY))
            model.set_rt_info(model_path.name, list(SOURCE_KEY))
            if entries := provenance(proto):
                model.set_rt_info(json.dumps(entries), list(PROVENANCE_KEY))
            model.set_rt_info(network_sha256(loaded), list(CONVERTED_KEY))
            _save(model, out_xml, out_bin, fp16, replace=force)  # without --force, still refused as it is placed
            return ConvertResult(out_xml, out_bin, weights, openvino_caveats(proto))
        except BaseException:
            for folder in made:
                with suppress(OSError):
                    folder.rmdir()
            raise


@command
def convert_ir(model_path: str | Path, out_xml: str | Path, fp16: bool = False,
               input_shapes: Mapping[str, Sequence[int | None]] | None = None, *, int8: bool = False,
               calibration: str | Path | None = None, boxes: str | Path | None = None,
               calibration_random: int | None = None, max_drop: float | None = None, max_reverts: int | None = None,
               ranking_samples: int | None = None, annotations: str | Path | None = None, force: bool = False,
               make_parents: bool = False) -> ConvertResult:
    """`graphsurgery convert` in Python: `convert`, or with `int8` `quantize.convert_int8` calibrated on the images
    in the folder `calibration` (with person `boxes`) or on `calibration_random` random caller inputs; `max_drop`
    (bounded by `max_reverts` rounds, layers ranked on `ranking_samples` samples) asks for accuracy control, whose
    metric is COCO keypoint AP on the people of `annotations` (`int8_coco`; `boxes` are then eval-coco's
    detections) when given, else the joints' agreement with f32."""
    check_flags(fp16=fp16, int8=int8, force=force, make_parents=make_parents)
    model_path, out_xml = input_path(model_path, "model file"), output_path(out_xml)
    calibration, boxes, annotations = (None if value is None else input_path(value, what) for value, what in (
        (calibration, "calibration folder"), (boxes, "boxes file"), (annotations, "annotation file")))
    images = list(calibration.iterdir()) if calibration is not None and calibration.is_dir() else []
    for out in (out_xml, out_xml.with_suffix(".bin")):  # `-o boxes.xml --boxes boxes.xml --force` replaced the boxes
        refuse_overwriting(out, [boxes, annotations, *images])
    if annotations is not None:
        _check_annotated(int8, calibration, calibration_random, max_drop)
    if not int8 and (calibration or boxes or calibration_random is not None or max_drop is not None):
        raise GraphsurgeryError("calibration samples and max_drop (--max-drop) are for int8 (--int8)",
                                fix="pass int8=True (--int8), or drop the calibration options")
    for name, value in (("max_reverts (--max-reverts)", max_reverts), ("ranking_samples (--ranking-samples)",
                                                                      ranking_samples)):
        if value is not None and max_drop is None:
            raise GraphsurgeryError(f"{name} bounds the accuracy control of max_drop (--max-drop)",
                                    fix="give max_drop=X (--max-drop X)")
    if int8 and fp16:
        raise GraphsurgeryError("int8 (--int8) and fp16 (--fp16) both choose the weights' precision",
                                fix="give only one of them")
    if input_shapes is not None and not isinstance(input_shapes, Mapping):
        raise GraphsurgeryError(f"input_shapes is a {type(input_shapes).__name__}, not a mapping of input names to "
                                "dims", fix="give e.g. {'input': (1, 256, 192, 3)} (parse_input_shape reads the "
                                "CLI's NAME=D1,D2,... form)")
    for name, dims in (input_shapes or {}).items():
        if not _usable_dims(dims):
            raise GraphsurgeryError(f"input_shapes gives {name!r} the dims {dims!r}", fix="give a tuple of whole "
                                    f"numbers from 1 to {MAX_DIM:,}, or None to keep a dim as it is, e.g. "
                                    f"{{{name!r}: (1, 256, 192, 3)}}")
    if not int8:
        return convert(model_path, out_xml, fp16, input_shapes, force=force, make_parents=make_parents)
    from graphsurgery.quantize import calibration_set, convert_int8

    metric = None
    if annotations is None:
        samples = calibration_set(model_path, calibration, boxes, calibration_random, input_shapes=input_shapes)
    else:
        from graphsurgery.int8_coco import coco_calibration

        samples, metric = coco_calibration(model_path, calibration, annotations, boxes)
    control = None if max_drop is None else AccuracyControl(max_drop, max_reverts, ranking_samples, metric)
    return convert_int8(model_path, out_xml, samples, input_shapes, force=force, make_parents=make_parents,
                        control=control)


def _check_annotated(int8: bool, calibration, calibration_random: int | None, max_drop: float | None) -> None:
    """`annotations` makes COCO keypoint AP the metric of `max_drop`, on the annotated images of `calibration`."""
    if calibration_random is not None:
        raise GraphsurgeryError("annotations (--annotations) scores the annotated images of calibration "
                                "(--calibration DIR); random samples (--calibration-random) have no ground truth",
                                fix="give calibration=DIR (--calibration DIR), the folder of the annotated images")
    if not int8 or calibration is None or max_drop is None:
        raise GraphsurgeryError("annotations (--annotations) makes COCO keypoint AP the metric of int8's accuracy "
                                "control: it needs int8 (--int8), calibration (--calibration DIR) and max_drop "
                                "(--max-drop X)", fix="add --int8 --calibration DIR --max-drop X, or drop "
                                "--annotations")


def _missing_parents(folder: Path) -> list[Path]:
    """The folders to create for `folder`, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


#: what OpenVINO's conversion report says when an allocation failed
OUT_OF_MEMORY = ("runtime/allocator.cpp", "std::bad_alloc")


def _restore_ovc_docstring() -> None:
    """OpenVINO's converter learns its own options from `convert_model.__doc__`, which `python -OO` drops: every
    conversion failed with "'NoneType' object has no attribute 'find'", blamed on the model. Only then, a docstring
    naming the parameters (all it reads) is put back."""
    import inspect

    from openvino.tools import ovc

    if ovc.convert_model.__doc__ is None:
        names = inspect.signature(ovc.convert_model).parameters
        ovc.convert_model.__doc__ = "".join(f":param {name}:\n    -\n" for name in names) + "Returns:"


def _convert(model_path: Path, proto: onnx.ModelProto):
    ov = openvino()
    _restore_ovc_docstring()
    try:
        with read_by_path(model_path), doing(f"OpenVINO was converting {printable(model_path)}"), \
                for_openvino(model_path, proto) as (readable, proto):
            return ov.convert_model(str(readable))
    except GraphsurgeryError:  # the file changed since it was read
        raise
    except Exception as exc:  # OpenVINO raises OpConversionFailure / RuntimeError with multi-line reports
        # `ulimit -v`: not "too large for this machine", nor the model's fault
        refuse_if_limited(exc, "OpenVINO", model_path)
        if any(sign in str(exc) for sign in OUT_OF_MEMORY):  # it named only its allocator's source line
            raise ModelError("OpenVINO ran out of memory converting the model: a tensor it computes from the "
                             "model's constants while converting (ConstantOfShape, Expand, Tile, a folded Loop) is "
                             "too large for this machine", path=model_path,
                             fix="re-export the model with smaller constant shapes") from None
        unreadable = unreadable_tensor(str(exc), proto)
        if unreadable:
            raise ModelError(unreadable, path=model_path, fix="remove that tensor before converting (ONNX Runtime may "
                                                              "still run the model)") from None
        raise ModelError(conversion_failure(str(exc), proto), path=model_path,
                         fix="change or remove that node before converting (ONNX Runtime may still run the model)"
                         ) from None


#: Element types OpenVINO's ONNX reader refuses, saying only "Unsupported type"
UNREADABLE_TYPES = (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)


def unreadable_tensor(report: str, proto: onnx.ModelProto) -> str | None:
    """The line for a model OpenVINO refused as "Loading input model: Unsupported type" for a tensor of a type its
    ONNX reader lacks, naming the tensor; None for other failures. Round 57: an unused complex64 initializer was
    "OpenVINO cannot compile the model: Loading input model — fix: check the model with `graphsurgery inspect`",
    which found nothing."""
    from onnx.external_data_helper import _get_all_tensors

    if "Unsupported type" not in report:
        return None
    found = [tensor for tensor in _get_all_tensors(proto) if tensor.data_type in UNREADABLE_TYPES]
    if not found:
        return None
    kind = onnx.TensorProto.DataType.Name(found[0].data_type).lower()
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    return f"OpenVINO cannot read the {kind} tensor {quoted(found[0].name)}{more}: its ONNX reader has no such type"


def conversion_failure(report: str, proto: onnx.ModelProto) -> str:
    """One line from OpenVINO's conversion report: the failing op types, their node names and OpenVINO's reason.
    Ops it has no rule for come alone: the nodes after one fail too, of inputs of no known type, and were listed
    beside it with that reason ("ReduceMax node 'graphsurgery/post/…': Unsupported input type dynamic", after a
    model-local function of a custom domain), which blamed the spliced decode."""
    unknown: list[str] = []
    failed: list[str] = []
    known = sorted({kind for n in proto.graph.node for kind in (n.op_type, f"{n.domain}.{n.op_type}")}, key=len,
                   reverse=True)
    for summary in re.finditer(r"^\s*-- (No conversion rule found for operations|Conversion is failed for):"
                               r"(.*?)(?=^\s*-- |\Z)", report, re.MULTILINE | re.DOTALL):
        (unknown if summary.group(1).startswith("No conversion rule") else failed).extend(
            _listed_ops(summary.group(2), known))
    failed = unknown or failed
    if not failed:
        lines = [line.strip() for line in report.splitlines() if line.strip() and not line.startswith("Check ")]
        return f"OpenVINO cannot convert the model: {(lines[0] if lines else 'unknown error')[:300]}"
    described = []
    for op in dict.fromkeys(failed):
        op_type = re.sub(r"-\d+$", "", op)  # "Mod-17" → "Mod"; "com.example.Frobnicate" keeps its domain
        names = [n.name or n.output[0] for n in proto.graph.node
                 if op_type in (n.op_type, f"{n.domain}.{n.op_type}")]
        shown = ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        described.append(f"{op_type} node {shown}" if names else op_type)
    reason = None if unknown else _reason(report)
    return f"OpenVINO cannot convert {'; '.join(described)}" + (f": {reason}" if reason else " (no conversion rule)")


def _listed_ops(listed: str, known: list[str]) -> list[str]:
    """The op types of one of OpenVINO's summary lists ("A-17, com.example.B"), read against the model's own
    (`known`, longest first), else up to the next comma. Round 55: the list was split at commas and lines, so an op
    type holding either was named cut, or as several."""
    ops, rest = [], listed.strip()
    while rest:
        op = next((kind for kind in known if re.match(re.escape(kind) + r"(-\d+)?\s*(,|$)", rest)),
                  rest.partition(",")[0])
        taken = re.match(re.escape(op) + r"(-\d+)?", rest)
        ops.append(taken.group(0).strip())
        rest = rest[taken.end():].lstrip().removeprefix(",").lstrip()
    return [op for op in ops if op]


def _reason(report: str) -> str | None:
    """OpenVINO's own explanation in the detailed log: its last line that is not a location or a wrapper."""
    detail = report.split("Failed operations detailed log:", 1)
    if len(detail) < 2:
        return None
    noise = ("Check ", "While validating", "FrontEnd API failed", "[ONNX Frontend]", "-- ")
    lines = [line.strip() for line in detail[1].split("Summary:", 1)[0].splitlines()]
    lines = [line for line in lines if line and not line.startswith(noise)]
    return lines[-1][:300] if lines else None


def _check_names(model, proto: onnx.ModelProto, model_path: Path) -> None:
    """Give every IR input and output exactly its ONNX name (OpenVINO may add or drop tensor names)."""
    expected = [
        ("input", real_inputs(proto), model.inputs),
        ("output", [o.name for o in proto.graph.output], model.outputs),
    ]
    passed = [name for name in real_inputs(proto) if name in expected[1][1]]
    for kind, names, ports in expected:
        if len(names) != len(ports) and passed:  # was "OpenVINO made 2 inputs of the model's 1 — report this"
            raise ModelError(f"input {passed[0]!r} is also an output of the model (passed through as it is), which "
                             "OpenVINO cannot keep as one port", path=model_path,
                             fix=f"remove {passed[0]!r} from the model's outputs before converting")
        if len(names) != len(ports):
            raise ModelError(f"OpenVINO made {len(ports)} {kind}s of the model's {len(names)} "
                             f"({listed(names)})", path=model_path,
                             fix="report this with the model (OpenVINO changed the model's signature)")
        for name, port in zip(names, ports):
            if port.get_names() != {name}:
                port.get_tensor().set_names({name})


def check_input_names(input_shapes: Mapping[str, object], inputs: Iterable[str], model_path: Path) -> None:
    """Refuses an `--input-shape` naming no input of the model, by name, before anything reads its dims (int8's
    calibration said the input it meant had no static size instead; round 62)."""
    inputs = list(inputs)
    for name in input_shapes:
        if name not in inputs:
            raise GraphsurgeryError(f"--input-shape names {name!r}, which is not an input; the inputs are "
                                    f"{listed(inputs)}", path=model_path, fix="use one of those names")


def _reshape(model, input_shapes: Mapping[str, Sequence[int | None]], model_path: Path) -> None:
    """Fix dynamic dims; a static dim cannot change (the spliced steps baked sizes into the graph)."""
    ov = openvino()

    ports = {port.get_any_name(): port for port in model.inputs}
    check_input_names(input_shapes, ports, model_path)
    new_shapes = {}
    for name, dims in input_shapes.items():
        current = ports[name].get_partial_shape()
        shown = str(current).replace(" ", "")
        if current.rank.is_dynamic or current.rank.get_length() != len(dims):
            raise GraphsurgeryError(f"--input-shape gives {name!r} {len(dims)} dims; its shape is {shown}",
                                    path=model_path, fix="give one value per dim (? keeps a dim as it is)")
        for axis, (old, new) in enumerate(zip(current, dims)):
            if old.is_static and new is not None and old.get_length() != new:
                raise GraphsurgeryError(f"--input-shape sets dim {axis} of {name!r} to {new}, but it is fixed at "
                                        f"{old.get_length()} ({shown})", path=model_path,
                                        fix="only dynamic dims (? or a name) can be fixed; keep the others")
        new_shapes[name] = ov.PartialShape(
            [old if new is None else ov.Dimension(new) for old, new in zip(current, dims)]
        )
    try:
        model.reshape(new_shapes)
    except Exception as exc:  # OpenVINO re-runs shape inference and reports the first node that disagrees
        first = next((line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("Check ")),
                     type(exc).__name__)
        raise GraphsurgeryError(f"the model does not accept --input-shape {new_shapes}: {first[:300]}",
                                path=model_path, fix="choose dims the model supports") from None


#: What hold the places of the .bin's SHA-256 and size in the .xml until the .bin is written (`_sign`)
UNSIGNED, UNSIZED = "0" * 64, "0" * 20


def _sign(xml: Path) -> None:
    """Record the SHA-256 and size of the .bin just written beside `xml` in its rt_info (`irchecks`'
    WEIGHTS_SHA256_KEY, WEIGHTS_BYTES_KEY), in place of UNSIGNED and UNSIZED: an IR read later must come with this
    .bin (another model's of the same size went through)."""
    text = xml.read_bytes()
    weights = xml.with_suffix(".bin")
    for mark, value in ((UNSIGNED, weights_digest(weights)), (UNSIZED, str(weights.stat().st_size))):
        at = text.rindex(f'value="{mark}"'.encode())  # the model's rt_info comes last, after every layer's
        text = text[:at] + f'value="{value}"'.encode() + text[at + len(mark) + 8:]
    xml.write_bytes(text)


def _save(model, out_xml: Path, out_bin: Path, fp16: bool, replace: bool) -> None:
    ov = openvino()

    with staging_folder(out_xml) as staging:
        try:
            staged = staging / out_xml.name
            model.set_rt_info(UNSIGNED, list(WEIGHTS_SHA256_KEY))
            model.set_rt_info(UNSIZED, list(WEIGHTS_BYTES_KEY))
            with doing(f"OpenVINO was writing {printable(out_xml)}"):
                ov.save_model(model, str(staged), compress_to_fp16=fp16)
            _sign(staged)
            with placing(out_xml.parent):  # a Ctrl-C between the two left a new .bin beside the old .xml
                place([(staged.with_suffix(".bin"), out_bin), (staged, out_xml)], replace)
            remember_made(out_xml)  # its own nodes failing later in this command are a bug (runners.failed_run)
        except FileExistsError as exc:  # placed by another command since this one started (`place`)
            found = out_xml if present(out_xml) else Path(exc.filename or out_bin)  # named as check_output_path does
            raise output_exists(found, found) from None
        except OSError as exc:
            raise GraphsurgeryError(f"could not write the IR ({exc.strerror or exc})", path=out_xml,
                                    fix=write_fix(exc, "free disk space or choose another folder")) from None
        except RuntimeError as exc:  # OpenVINO's writer on a full disk: "basic_ios::clear: iostream error"
            if "filesystem error" in str(exc):  # a path longer than the system takes (a deep folder): an internal error
                raise GraphsurgeryError(f"could not write the IR (OpenVINO: {' '.join(str(exc).split())[:160]})",
                                        path=out_xml, fix="use a shorter path (or a folder nearer the root)") from None
            if "ios" not in str(exc):
                raise
            if file_size_limit() is not None:  # `ulimit -f`: it said "78,169,571,328 bytes free there"
                raise GraphsurgeryError(f"could not write the IR: {file_size_problem()}", path=out_xml,
                                        fix=file_size_fix()) from None
            free = shutil.disk_usage(staging).free
            raise GraphsurgeryError(f"could not write the IR (OpenVINO: {' '.join(str(exc).split())[:120]}; "
                                    f"{free:,} bytes free there)", path=out_xml,
                                    fix="free disk space or choose another folder") from None
