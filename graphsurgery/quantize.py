"""int8 post-training quantization (NNCF, OpenVINO backend) for `convert --int8`, with its accuracy price measured.

Calibration samples are what the *caller* feeds the model: uint8 crops cut the authors' way from images (and
person boxes), whole images with boxes for a model that crops in the graph, or random ones of the same kind. The
spliced nodes (`graphsurgery/…`) are kept out of quantization (NNCF's IgnoredScope), so the decode stays exact on
whatever heatmaps the int8 network gives. The price is measured on the same samples, f32 IR against int8 IR: for
keypoints, the mean distance and the share of joints within one heatmap cell (4 crop pixels for HRNet's 256×192 →
64×48); for every other output, the mean absolute difference; for heatmaps ([N,K,H,W] beside keypoints), also how
far the f32 peaks stand above the rest of their maps (`peak_margins`): when int8 moves the maps' values by more
than that, no accuracy control keeps the joints in their cells short of leaving most layers in float (the seeded,
untrained HRNet-W32: a median margin of 0.059 against int8's 0.124). Accuracy control (`--max-drop`) bounds the
drop of that share, or of COCO keypoint AP on annotated samples (`int8_coco`, `--annotations`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from graphsurgery.errors import GraphsurgeryError, printable, whole
from graphsurgery.longrun import FirstPart, say_long_run
from graphsurgery.recipe import InputTensor
from graphsurgery.runners import Port, failed_run, model_signature, openvino
from graphsurgery.safeio import temporary_folder, utf8_text
from graphsurgery.samples import joined
from graphsurgery.scopes import SPLICED
from graphsurgery.supervisor import again, doing, each
from graphsurgery.twins import FLOAT_QUIET

if TYPE_CHECKING:
    from graphsurgery.int8_coco import CocoAP
    from graphsurgery.irconvert import ConvertResult

#: the name prefix of every spliced node: kept in float
SPLICED_NODES = rf"{SPLICED}/.*"
#: one heatmap cell of HRNet's 64×48 maps in its 256×192 crop, in crop pixels: "the same joint" for the report
CELL_PIXELS = 4.0
MAX_CALIBRATION = 1000
#: interleaved rounds that measure int8's speed-up over f32 after quantizing
SPEED_ROUNDS = 10
#: the random calibration samples `verify --precision int8` quantizes on when it builds the int8 IR itself
VERIFY_CALIBRATION = 30
PRECISION_KEY = ("graphsurgery", "precision")
CALIBRATION_KEY = ("graphsurgery", "calibration")
#: int8's agreement with f32 as `convert` measured it, one line: what `run` prints beside an int8 IR's results
AGREEMENT_KEY = ("graphsurgery", "int8_vs_f32")
#: the longest agreement line read back from an IR (convert writes ~120 characters, ~60 more per extra output)
AGREEMENT_MOST = 2000
#: what a patched model's caller feeds, as the calibration samples are made: OpenCV's images
CALLER = InputTensor(dtype="uint8", layout="NHWC", color="BGR")


@dataclass(frozen=True)
class Calibration:
    """Inputs as the model's caller feeds them, one dict per inference, and what they are."""

    feeds: list[dict[str, np.ndarray]]
    description: str

    def sha256(self) -> str:
        """Identifies the set: the bytes of every array, in order."""
        digest = hashlib.sha256()
        for feed in self.feeds:
            for name in sorted(feed):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(feed[name]).tobytes())
        return digest.hexdigest()


def calibration_set(model: Path, images: Path | None = None, boxes: Path | None = None, random: int | None = None,
                    seed: int = 0, input_shapes=None) -> Calibration:
    """The calibration samples for `model` (ONNX), from a folder of images (and person boxes) or `random` ones;
    an image input of dynamic height and width (a detector's) at the size `input_shapes` (`--input-shape`) fixes."""
    from graphsurgery.samples import (
        box_image_samples,
        chunks,
        image_samples,
        random_box_samples,
        random_samples,
    )

    if (images is None) == (random is None):
        raise GraphsurgeryError("int8 needs calibration samples: images or a number of random ones",
                                fix="give --calibration DIR or --calibration-random N (one of them)")
    if random is not None and not (whole(random) and 1 <= random <= MAX_CALIBRATION):  # "2" was a TypeError
        raise GraphsurgeryError(f"{random!r} calibration samples (--calibration-random): give a whole number between "
                                f"1 and {MAX_CALIBRATION}",
                                fix="a few hundred samples calibrate a pose model (NNCF's default subset is 300)")
    from graphsurgery.irconvert import check_input_names

    inputs = model_signature(model).inputs
    names = {port.name for port in inputs}
    check_input_names(input_shapes or {}, [port.name for port in inputs], model)
    image = image_input(inputs, model)
    if "boxes" in names:  # crops are cut in the graph: whole images with their boxes
        samples = (random_box_samples(random, image, "NHWC", seed) if images is None
                   else box_image_samples(images, boxes, image, CALLER))
    else:
        size = crop_size(image, model, (input_shapes or {}).get(image.name))
        extras = [name for name in ("center", "scale") if name in names]
        samples = (random_samples(random, image, [size], "NHWC", extras, size, seed=seed) if images is None
                   else image_samples(images, boxes, image, size, CALLER, extras))
    feeds = [{image.name: tensors, **extras} for tensors, extras in chunks(samples, 1)]
    return Calibration(feeds, samples.description)


class NoStaticSize(GraphsurgeryError):
    """A model whose caller image has no static size to calibrate at: `convert --int8 --input-shape` gives it one;
    verify, which has no such option, says so in its own words (`int8_verification.build_int8`)."""

    def __init__(self, message: str, *, input_name: str, **where):
        super().__init__(message, **where)
        self.input_name = input_name

    def about(self, path: str | Path) -> NoStaticSize:
        return NoStaticSize(self.message, path=path, fix=self.fix, input_name=self.input_name)


def crop_size(image: Port, model: Path, fixed=None) -> tuple[int, int]:
    """(W, H) of the crops a model that does not crop in the graph takes: its image input's static size, or the
    one `fixed` (`--input-shape` dims) gives a dynamic one (a detector of any image size could not be quantized:
    the fix named a crop recipe, which detectors have none of)."""
    h, w = image.shape[1:3]
    if fixed is not None and len(fixed) == len(image.shape):
        h, w = (d if isinstance(d, int) else f for d, f in zip((h, w), fixed[1:3]))
    if not isinstance(h, int) or not isinstance(w, int):
        shown = ",".join(str(d) if isinstance(d, int) else "?" for d in image.shape)
        raise NoStaticSize(f"the input {image.name!r} has no static size ([{shown}])", path=model,
                           fix=f"fix it for int8 with --input-shape {image.name}=1,H,W,3 (the size the model will "
                               "be fed), or calibrate the model patched with a crop recipe", input_name=image.name)
    return w, h


def image_input(inputs: list[Port], model: Path) -> Port:
    images = [p for p in inputs if p.dtype == "uint8" and len(p.shape) == 4 and p.shape[3] == 3]
    if len(images) != 1:
        shown = ", ".join(f"{p.name} {p.dtype}" for p in inputs)
        raise GraphsurgeryError(f"int8 calibration feeds what a patched model's caller feeds (uint8 images); this "
                                f"model takes {shown}", path=model,
                                fix="patch the model with a recipe first (apply), then convert it with --int8")
    return images[0]


@dataclass(frozen=True)
class AccuracyControl:
    """`--max-drop` and its bounds: at most `max_drop` of the joints may leave their f32 cell, or, with a COCO
    `metric` (`--annotations`), the keypoint AP may fall by at most `max_drop`; at most `max_reverts` rounds of
    reverting; layers ranked on the first `ranking_samples` samples (NNCF's default: all of them, up to 300;
    ranking is what costs: every quantizer group is reverted and validated on that subset)."""

    max_drop: float
    max_reverts: int | None = None
    ranking_samples: int | None = None
    metric: CocoAP | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not (isinstance(self.max_drop, (int, float)) and 0 < self.max_drop < 1):  # NaN fails this too
            if self.metric is not None:
                raise GraphsurgeryError(f"max_drop={self.max_drop} (--max-drop) is not a drop of COCO keypoint AP "
                                        "between 0 and 1", fix="give e.g. 0.02: the int8 model's AP may be at most "
                                        "0.02 below f32's (0.70 → 0.68)")
            raise GraphsurgeryError(f"max_drop={self.max_drop} (--max-drop) is not a share between 0 and 1",
                                    fix="give e.g. 0.05: at most 5 % of the joints may leave their f32 cell")
        for name, value in (("max_reverts (--max-reverts)", self.max_reverts),
                            ("ranking_samples (--ranking-samples)", self.ranking_samples)):
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise GraphsurgeryError(f"{name}={value!r} is not a whole number of 1 or more", fix="give e.g. 3")


@dataclass(frozen=True)
class Quantized:
    """NNCF's int8 model and, under accuracy control, the layers that went back to float: the consumers of the
    quantizers of NNCF's first, fully quantized model that the returned model no longer has."""

    model: object
    reverted: tuple[str, ...] = ()


def _output_steps_last(model) -> list[str]:
    """The nodes that compute the output steps' results: OpenVINO names each after the output it gives (`keypoints`),
    not `graphsurgery/post/…`, so the pattern missed them, and NNCF quantized the last op of `to_image` mode boxes
    (an Add of two computed tensors): the top-down graph's int8 keypoints took 256 levels, 0.2-27 px off its own
    decode (round 92). Known by what they read: a spliced output step's node (the network reads none)."""
    post = f"{SPLICED}/post/"
    last = {result.input_value(0).get_node() for result in model.get_results()}
    return sorted(node.get_friendly_name() for node in last
                  if any(value.get_node().get_friendly_name().startswith(post) for value in node.input_values()))


def quantize(model, calibration: Calibration, control: AccuracyControl | None = None) -> Quantized:
    """The int8 model NNCF makes from the OpenVINO `model`, spliced nodes left in float. Under `control`, NNCF's
    accuracy control: layers go back to float, most sensitive first, until the share of joints within one cell of
    the f32 model's keypoints (on the calibration samples) is at least 1 − max_drop (or the COCO AP of
    `control.metric` at most max_drop below f32's), or `max_reverts` rounds have reverted (on HRNet-W32, 30 samples
    ranked, 2 cores: ~20 min per ranking of its 321 quantizer groups). NNCF validates on sample indices: a
    metric finds each sample's feed, and its people, by index."""
    ov = openvino()  # before NNCF, which imports OpenVINO: its telemetry off, its numpy bridge built
    import nncf

    nncf.set_log_level(logging.WARNING)  # its INFO lines list every ignored node
    step = _calibration_step(len(calibration.feeds), controlled=control is not None)
    dataset = nncf.Dataset(calibration.feeds, step)
    common = {"subset_size": len(calibration.feeds),
              "ignored_scope": nncf.IgnoredScope(names=_output_steps_last(model), patterns=[SPLICED_NODES],
                                                 validate=False)}
    # progress bars: standard output stays the command's (--json)
    with contextlib.redirect_stdout(sys.stderr), _nncf_steps():
        if control is None:
            return Quantized(nncf.quantize(model, dataset, **common))
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        with temporary_folder("int8") as folder:
            bounds = AdvancedAccuracyRestorerParameters(
                intermediate_model_dir=folder, ranking_subset_size=control.ranking_samples,
                **({} if control.max_reverts is None else {"max_num_iterations": control.max_reverts}))
            indices = nncf.Dataset(list(range(len(calibration.feeds))), lambda index: step(calibration.feeds[index]))
            validate = control.metric.validate if control.metric else _agreement_with(model, calibration)
            controlled = nncf.quantize_with_accuracy_control(
                model, dataset, indices, validation_fn=validate, max_drop=control.max_drop,
                drop_type=nncf.DropType.ABSOLUTE, advanced_accuracy_restorer_parameters=bounds, **common)
            first = ov.Core().read_model(str(Path(folder) / "intermediate_model.xml"))
    return Quantized(controlled, _reverted(first, controlled))


def _calibration_step(samples: int, controlled: bool) -> Callable:
    """NNCF's transform of each sample: none, but each sample NNCF runs is a step of its own for the time limit
    (`supervisor.again`: a Loop counted by the input ran for ever in its statistics collection), and the first
    ones are timed: a calibration of over a minute says so (`longrun`), as run, bench and verify do (HRNet-W32 on
    60 samples: 77 s on 2 cores, 21 s of them statistics; on 300, minutes, with NNCF's progress bars alone)."""
    first_part = FirstPart(samples)
    done = 0

    def step(sample):
        nonlocal done
        again()
        done += 1
        seconds = first_part.tick(done)
        if seconds:
            say_long_run(3 * seconds, f"int8 calibration on {samples:,} samples" + (
                ", then the accuracy control's ranking of the layers, which takes longer" if controlled else ""),
                f"{seconds / samples:.2f} s a sample for NNCF's statistics, measured on the first; its bias "
                "correction and the price of int8 take about as long again each",
                "fewer calibration images (--calibration) or samples (--calibration-random)")
        return sample

    return step


@contextlib.contextmanager
def _nncf_steps() -> Iterator[None]:
    """Each item of NNCF's own progress bars, and each match of its graph patterns, a step of its own for the time
    limit (`supervisor.again`), as the samples are. On HRNet-W32 its fast bias correction (a subgraph per layer
    over every sample's statistics, no sample asked for) and its quantizer set-up (networkx matching its patterns:
    17 s on an idle 2-core machine) were each one step; with 300 samples on a busy machine one outlasted the 30 s
    limit and a sound model was stopped as "too slow" (round 32). Wrapped while NNCF quantizes only."""
    from networkx.algorithms.isomorphism.isomorphvf2 import DiGraphMatcher  # where the method is defined
    from nncf.common.logging.track_progress import track

    wrapped = [(track, "__iter__"), (DiGraphMatcher, "subgraph_isomorphisms_iter")]
    originals = [getattr(owner, name) for owner, name in wrapped]
    for (owner, name), original in zip(wrapped, originals):
        setattr(owner, name, _stepping(original))
    try:
        yield
    finally:
        for (owner, name), original in zip(wrapped, originals):
            setattr(owner, name, original)


def _stepping(iterate: Callable) -> Callable:
    """The method `iterate` (a generator), each item it yields the start of a new step (`supervisor.again`)."""

    def stepped(self, *args, **kwargs):
        for item in iterate(self, *args, **kwargs):
            again()
            yield item

    return stepped


def _reverted(first, controlled) -> tuple[str, ...]:
    """The layers fed by a quantizer in `first` and by none in `controlled`, in `first`'s order."""
    def quantized_layers(model) -> list[str]:
        return [target.get_node().get_friendly_name() for op in model.get_ordered_ops()
                if op.get_type_name() == "FakeQuantize" for port in op.outputs() for target in port.get_target_inputs()]

    kept = set(quantized_layers(controlled))
    return tuple(dict.fromkeys(name for name in quantized_layers(first) if name not in kept))


def _agreement_with(f32_model, calibration: Calibration):
    """NNCF's validation function (on sample indices): per sample, the share of joints within one cell of the f32
    model's keypoints."""
    ov = openvino()

    if "keypoints" not in {name for port in f32_model.outputs for name in port.get_names()}:
        raise GraphsurgeryError("--max-drop measures keypoint agreement; this model has no `keypoints` output",
                                fix="use --int8 without --max-drop, or patch the model with a pose recipe")
    compiled = ov.Core().compile_model(f32_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = [np.asarray(compiled(feed)[compiled.output("keypoints")]) for feed in each(calibration.feeds)]

    def validate(model, indices) -> tuple[float, list[float]]:
        shares = [float(np.mean(within_one_cell(model(calibration.feeds[i])[model.output("keypoints")], reference[i])))
                  for i in each(indices)]
        return float(np.mean(shares)), shares

    return validate


def compile_pair(f32_model, int8_model) -> list:
    """Both models compiled for the OpenVINO CPU with f32 asked (the int8 one still runs its int8 kernels): what
    `price` and `speedup` run, compiled once."""
    ov = openvino()

    core = ov.Core()
    return [core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) for m in each((f32_model, int8_model))]


def price(compiled: list, calibration: Calibration) -> dict:
    """What int8 costs in agreement with f32, output by output, on the calibration samples: `compiled` is
    `compile_pair`'s [f32, int8]. Only values finite on both sides are measured (`not_finite`: the share left out);
    an integer output (labels, ids passed through) by the share of equal values: a "mean abs diff" of class labels
    measured the distance between class numbers. A detector's `count` also says how many detections f32 made: its
    boxes, scores and classes agree on padding where it made none."""
    names = [port.get_any_name() for port in compiled[0].outputs]
    answers: dict[str, list[list[np.ndarray]]] = {name: [[], []] for name in names}
    for feed in each(calibration.feeds):
        for side, model in enumerate(compiled):
            result = model(feed)
            for port in model.outputs:
                answers[port.get_any_name()][side].append(np.asarray(result[port]))
    sides = {name: (joined(exact), joined(fast)) for name, (exact, fast) in answers.items()}
    report = {}
    for name, (a, b) in sides.items():
        if a.dtype.kind in "biu":
            report[name] = {"equal": float(np.mean(a == b))}
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        if name == "keypoints" and a.shape[-1] == 2:
            sound = sound_joints(a, sides["scores"][0] if "scores" in sides else None)
            both = sound & np.isfinite(b).all(axis=-1)  # int8's NaN joints count as apart, not as near
            report[name] = {
                **({"mean_distance": float(np.mean(np.linalg.norm(a[both] - b[both], axis=-1)))} if both.any() else {}),
                **({"within_one_cell": float(np.mean(within_one_cell(a[sound], b[sound])))} if sound.any() else {}),
                "cell_pixels": CELL_PIXELS}
        else:
            sound = np.isfinite(a)
            both = sound & np.isfinite(b)
            report[name] = {"mean_abs_diff": float(np.mean(np.abs(a[both] - b[both])))} if both.any() else {}
            if a.ndim == 4 and "keypoints" in answers:  # heatmaps: how far their f32 peaks stand out
                report[name].update(margin_statistics(peak_margins(a)))
        if not both.all():
            report[name]["not_finite"] = float(1 - np.mean(both))
    if "count" in report and sides["count"][0].dtype.kind in "iu":  # a detector's (nms): the rows past the count
        # are padding, equal on both sides; round 100: "classes equal 1" on random inputs where f32 found nothing
        report["count"]["f32_detections"] = float(sides["count"][0].sum())
    return report


def sound_joints(keypoints: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """The f32 joints int8's agreement is measured on (`price`, `verify --precision int8`): finite, and found on
    finite f32 scores where the model gives them per joint (NaN heatmaps decode to a finite (0, 0) on both sides:
    "100 % within one cell" of nothing)."""
    sound = np.isfinite(keypoints).all(axis=-1)
    if scores is not None and np.size(scores) == sound.size:  # [N, K] or [N, K, 1]
        sound &= np.isfinite(scores).reshape(sound.shape)
    return sound


def within_one_cell(a, b, cell: float = CELL_PIXELS) -> np.ndarray:
    """Whether the points `a` and `b` ([..., 2]) are the same joint for the report: at most one heatmap `cell`
    apart, Euclidean, in the points' unit (crop pixels for keypoints; 1 for a map's own cells). NaN is apart."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1) <= cell


def peak_margins(maps: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """How far each map's peak stands above the rest of it: its maximum minus the maximum over the cells that are
    not `within_one_cell` (in cells) of its argmax, i.e. how much int8 may lift another joint position before the
    argmax leaves its cell. `maps` is [..., H, W]; a map holding NaN or ±inf is skipped, and so is one with no cell
    outside its peak's neighbourhood (1×1): one margin per remaining map, in `chunk`s of maps to bound memory."""
    maps = np.asarray(maps, np.float64)
    if maps.ndim < 2 or maps.size == 0:
        return np.empty(0)
    height, width = maps.shape[-2:]
    flat = maps.reshape(-1, height * width)
    flat = flat[np.isfinite(flat).all(axis=1)]
    cells = np.stack(np.divmod(np.arange(height * width), width), axis=-1)  # (row, column) of each cell
    margins = [np.empty(0)]
    for start in range(0, len(flat), chunk):
        part = flat[start:start + chunk]
        near = within_one_cell(cells[None], cells[part.argmax(axis=1)][:, None], 1.0)
        margins.append(part.max(axis=1) - np.where(near, -np.inf, part).max(axis=1))  # no cell outside: +inf
    margins = np.concatenate(margins)
    return margins[np.isfinite(margins)]


def margin_statistics(margins: np.ndarray) -> dict[str, float]:
    """The median and 5th percentile of `peak_margins`, as `price` reports them; nothing when no map has one."""
    if not len(margins):
        return {}
    return {"peak_margin_median": float(np.median(margins)), "peak_margin_p5": float(np.percentile(margins, 5))}


def speedup(compiled: list, feed: dict[str, np.ndarray], rounds: int = SPEED_ROUNDS) -> float:
    """How many times faster the int8 model runs than the f32 one on `feed` (`compile_pair`'s [f32, int8]): the
    median of per-round ratios, the two runs interleaved in each round so that the machine's load hits both alike."""
    ratios = []
    for _ in each(range(rounds + 1)):  # the first round warms up
        seconds = []
        for model in compiled:
            start = time.perf_counter()
            model(feed)
            seconds.append(time.perf_counter() - start)
        ratios.append(seconds[0] / seconds[1])
    return float(np.median(ratios[1:]))


def convert_int8(model: Path, out_xml: Path, calibration: Calibration, input_shapes=None, *, force: bool = False,
                 make_parents: bool = False, control: AccuracyControl | None = None) -> ConvertResult:
    """`irconvert.convert` with int8 quantization (accuracy-controlled under `control`): the IR's rt_info says int8
    and names the calibration set (size, sha256); the result's `int8` holds the price (`price`), the speed-up over
    f32 (`speedup`), how many quantizers the model kept and, under control, whether the drop was met (with a COCO
    metric: AP of f32 and int8 on all the samples) and what went back to float."""
    from graphsurgery.irconvert import Int8Facts, convert, too_flat

    facts: dict = {}

    def to_int8(f32_model):
        # NNCF and the pricing compile and run the model in OpenVINO: named if a kernel dies, and each compile or
        # sample a step under the time limit (`supervisor.each`); unwatched, a Loop counted by the input ran for ever.
        # Outputs near float32's limit overflow in NNCF's statistics and the price (inf − inf): numpy's warnings on
        # stderr said nothing the price does not (round 31)
        with doing(f"NNCF was quantizing {printable(model)} to int8"), np.errstate(**FLOAT_QUIET):
            try:
                return quantized_model(f32_model)
            except RuntimeError as exc:  # OpenVINO's, from a sample NNCF or the pricing ran: a model that failed at
                # run time (a Reshape's shape damaged after apply) was "a graphsurgery bug" (round 28); judged as
                # any run is (`runners.failed_run`: the file's fault unless this process made it)
                failed_run(exc, "OpenVINO", model, calibration.feeds[0])

    def quantized_model(f32_model):
        quantized = quantize(f32_model.clone(), calibration, control)
        int8_model = quantized.model
        quantizers = sum(op.get_type_name() == "FakeQuantize" for op in int8_model.get_ops())
        if not quantizers and control is None:  # under control, a model all back in float is its summary's to say
            # a network of pooling and shape ops: the f32 IR marked int8, "0 quantized activations" and a price of 0
            raise GraphsurgeryError("NNCF found no layer to quantize in this model's network (no convolution, "
                                    "MatMul or other layer it quantizes outside the spliced nodes): its int8 IR would "
                                    "be the f32 one marked int8", path=model,
                                    fix="leave out --int8 (or --precision int8): int8 has nothing to speed up in it")
        compiled = compile_pair(f32_model, int8_model)
        vs_f32 = price(compiled, calibration)
        ap = control.metric.pair(compiled) if control and control.metric else None
        facts.update(vs_f32=vs_f32, reverted=quantized.reverted, ap=ap, quantized_activations=quantizers,
                     speedup=speedup(compiled, calibration.feeds[0]),
                     drop_met=_drop_met(control, vs_f32.get("keypoints", {}).get("within_one_cell"), ap))
        int8_model.set_rt_info("int8", list(PRECISION_KEY))
        int8_model.set_rt_info(f"{len(calibration.feeds)} samples, sha256 {calibration.sha256()}",
                               list(CALIBRATION_KEY))
        int8_model.set_rt_info(utf8_text(agreement_line(vs_f32, calibration.description)), list(AGREEMENT_KEY))
        return int8_model

    _shapes_fit(model, input_shapes or {}, calibration)
    result = convert(model, out_xml, False, input_shapes, force=force, make_parents=make_parents,
                     transform=to_int8, weights="INT8")
    flat = None if control else too_flat(facts["vs_f32"])  # under control, its summary says so
    return replace(result, int8=Int8Facts(calibration=calibration.description, control=control, **facts),
                   notes=[*result.notes, *([f"int8 vs f32: {flat}"] if flat else [])])


def _shapes_fit(model: Path, input_shapes, calibration: Calibration) -> None:
    """`--input-shape` dims the calibration samples have: `input=2,256,192,3` beside samples fed one at a time
    was OpenVINO's refusal of the first sample, blamed on the model ("re-export it"). A rank that differs is left to
    the reshape's own refusal."""
    for name, dims in input_shapes.items():
        for feed in calibration.feeds:
            shape = np.shape(feed[name]) if name in feed else None
            if shape is not None and len(shape) == len(dims) and any(
                    d is not None and d != s for d, s in zip(dims, shape)):
                given = ",".join("?" if d is None else str(d) for d in dims)
                raise GraphsurgeryError(
                    f"--input-shape {name}={given} does not fit the int8 calibration samples, which feed {name!r} "
                    f"as {list(shape)}", path=model,
                    fix="keep those dims dynamic (?) with --int8 (NNCF feeds one sample at a time), or convert "
                        "without --int8")


def _drop_met(control: AccuracyControl | None, within: float | None, ap: tuple[float, float] | None
              ) -> bool | None:
    """Whether the measured pair kept the drop asked: AP(f32) − AP(int8), or 1 − the share within one cell. No
    share (no finite f32 joint: NaN maps decode to (0, 0) on both sides, which NNCF's validation took for
    agreement) is not met: it was exit 0 beside "NOT met, unknown"."""
    if control is None:
        return None
    if ap is not None:  # f32 scoring no AP (0, or pycocotools' -1): "met, drop 0.0000" of AP 0 against 0
        return ap[0] > 0 and ap[0] - ap[1] <= control.max_drop + 1e-9
    return within is not None and within >= 1 - control.max_drop - 1e-9


def agreement_line(vs_f32: dict[str, dict[str, float]], samples: str) -> str:
    """`price`'s keypoints (or, without them, each output's mean difference) in one line, e.g. "keypoints 43.9 %
    within one heatmap cell of f32, mean distance 42 px, on 30 random crops (seed 0)"."""
    keypoints = vs_f32.get("keypoints", {})
    if "within_one_cell" in keypoints:
        distance = (f"mean distance {keypoints['mean_distance']:.3g} px" if "mean_distance" in keypoints
                    else "no int8 joint finite")  # int8's joints all NaN where f32's are sound
        measured = f"keypoints {keypoints['within_one_cell']:.1%} within one heatmap cell of f32, {distance}"
    else:
        measured = ", ".join(f"{name} mean abs diff from f32 {numbers['mean_abs_diff']:.3g}" if "mean_abs_diff"
                             in numbers else f"{name} {numbers['equal']:.1%} equal to f32{_found(numbers)}"
                             for name, numbers in vs_f32.items() if "mean_abs_diff" in numbers or "equal" in numbers)
    return f"{measured or 'nothing measured'}, on {samples}"


def _found(numbers: dict[str, float]) -> str:
    """A detector's count says how many detections f32 made, as bench and convert print it (round 100): the line
    stored in the IR said "count 100.0 % equal to f32" where f32 found nothing (round 105)."""
    return f" (f32 detections {numbers['f32_detections']:.4g})" if "f32_detections" in numbers else ""


def int8_agreement(model: Path) -> str | None:
    """The agreement line `convert --int8` stored in the IR (`agreement_line`); None for any other model. An IR is
    anyone's file: a line of 100,000 characters in its rt_info was printed whole by `run` and kept in run.json."""
    precision, line = ir_info(model, PRECISION_KEY, AGREEMENT_KEY)
    if precision != "int8" or line is None:
        return None
    return line if len(line) <= AGREEMENT_MOST else f"{line[:AGREEMENT_MOST]}… (cut: {len(line):,} characters)"


def is_int8(model: Path) -> bool:
    """True for an OpenVINO IR that `convert --int8` made (its rt_info says so)."""
    return ir_info(model, PRECISION_KEY)[0] == "int8"


def ir_info(model: Path, *keys: tuple[str, str]) -> list[str | None]:
    """The values graphsurgery stored under `keys` in an IR's rt_info (None where absent, or for an ONNX model)."""
    if model.suffix.lower() != ".xml":
        return [None] * len(keys)
    from graphsurgery.runners import read_ir, rt_info_text

    ir = read_ir(model)  # checked first: `verify --precision int8 --patched` read it unchecked (SIGSEGV)
    return [rt_info_text(ir, key) for key in keys]
