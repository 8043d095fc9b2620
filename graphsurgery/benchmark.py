"""Latency and throughput of one model with its processing in numpy (plain) or in the graph (patched), side by side.

Every pipeline goes from the caller's crop (e.g. uint8 BGR; a 640×480 image when the recipe resizes, so the resize
is timed too, or when it crops person boxes in the graph, with `batch` boxes) to the recipe's outputs (e.g.
keypoints). The runs are interleaved: each round runs every pipeline
once, in a fresh random order, so load from other processes falls on all pipelines alike, and ratios are taken
within each round. Absolute times drift on a busy machine; ratios measured in one run stay meaningful.
`run_bench` returns a BenchResult (`to_dict()` is its JSON); the CLI prints it and `write_chart` draws it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from graphsurgery import twins
from graphsurgery.api import apply
from graphsurgery.callables import call_back, call_user, import_callable
from graphsurgery.defaults import MAX_ROUNDS, REFERENCE, TORCH_EXAMPLE, Settings
from graphsurgery.errors import ArgumentError, GraphsurgeryError, check_callback, check_flags, printable, quoted, whole
from graphsurgery.inlining import for_openvino
from graphsurgery.machine import machine
from graphsurgery.model import ModelFacts, real_inputs
from graphsurgery.modelio import command, load_model
from graphsurgery.ratios import paired_ratio, timing_stats
from graphsurgery.recipe import Recipe, as_recipe
from graphsurgery.runners import open_runner, open_stream, openvino, precision_note
from graphsurgery.safeio import input_path, scratch_named, temporary_folder
from graphsurgery.samples import MAX_BATCH_BYTES, check_resized
from graphsurgery.steps.topdown import FlipTest
from graphsurgery.supervisor import doing, each
from graphsurgery.targets import check_targets

#: (W, H) of the caller image when the recipe resizes (its H × W are free): a camera frame, not the model's size.
RESIZE_IMAGE_SIZE = (640, 480)


@dataclass(frozen=True)
class Workload:
    """What every pipeline computes: the same caller input, through the plain or the patched model."""

    recipe: Recipe
    facts: ModelFacts
    crop: np.ndarray  # the caller's input, as the patched model takes it
    extras: dict[str, np.ndarray]  # extra inputs of the output steps (e.g. center, scale)
    plain_input: str
    patched_input: str
    other: dict[str, np.ndarray]  # the plain model's other inputs, which the patched model keeps (twins.other_inputs)
    plain_output: tuple | None = None  # the plain model's declared output dims (None for a named or unknown one)

    def plain_pass(self, infer: Callable[[np.ndarray], dict[str, np.ndarray]]) -> Callable[[], tuple[int, int]]:
        """numpy twins around the plain model; returns a pass timing (model-only ns, end-to-end ns)."""

        def timed() -> tuple[int, int]:
            start = time.perf_counter_ns()
            x = twins.preprocess(self.recipe, self.crop, self.facts, self.extras)
            before = time.perf_counter_ns()
            outputs = infer(x)
            after = time.perf_counter_ns()
            twins.unpatched_outputs(self.recipe, self.facts, outputs, self.extras, self.crop.shape)
            return after - before, time.perf_counter_ns() - start

        return timed

    def patched_pass(self, run: Callable[[dict], dict]) -> Callable[[], tuple[int, int]]:
        """The patched model alone: nothing happens outside it, so model-only and end-to-end are one time."""

        def timed() -> tuple[int, int]:
            start = time.perf_counter_ns()
            run({self.patched_input: self.crop, **self.extras, **self.other})
            elapsed = time.perf_counter_ns() - start
            return elapsed, elapsed

        return timed

    def plain_stream(self, stream: Callable) -> Callable[[int], None]:
        """Throughput: n batches through the twins and a stream of asynchronous requests (`runners.open_stream`)."""

        def burst(n: int) -> None:
            feeds = ({self.plain_input: twins.preprocess(self.recipe, self.crop, self.facts, self.extras),
                      **self.other} for _ in range(n))
            for outputs in stream(feeds):
                twins.unpatched_outputs(self.recipe, self.facts, outputs, self.extras, self.crop.shape)

        return burst

    def random_feeds(self, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
        """`count` patched-model feeds like the timed one, each with its own random caller input: what a reduced
        precision's agreement is measured on, at whatever size the bench feeds (a model of dynamic size too)."""
        rng = np.random.default_rng(seed)
        return [{self.patched_input: _random_input(rng, self.crop.shape, self.crop.dtype), **self.extras, **self.other}
                for _ in range(count)]

    def patched_stream(self, stream: Callable) -> Callable[[int], None]:
        def burst(n: int) -> None:
            for _ in stream({self.patched_input: self.crop, **self.extras, **self.other} for _ in range(n)):
                pass

        return burst


# (backend, plain or patched, precision asked for, label); `_pipelines` derives each row's key
VARIANTS = (
    ("onnxruntime", "plain", "f32", "ONNX Runtime plain + numpy"),
    ("onnxruntime", "patched", "f32", "ONNX Runtime patched"),
    ("openvino", "plain", "f32", "OpenVINO plain + numpy (f32)"),
    ("openvino", "patched", "f32", "OpenVINO patched (f32)"),
    ("openvino", "patched", "bf16", "OpenVINO patched (bf16, reduced precision)"),
)
#: with --int8: the patched model quantized by NNCF (convert --int8), its float parts at f32
INT8_VARIANT = ("openvino", "patched", "int8", "OpenVINO patched (int8, reduced precision)")
#: random caller inputs on which bf16's agreement with f32 is measured, when bf16 really ran
BF16_SAMPLES = 16
BATCHES_PER_ROUND = 8  # throughput mode: each pipeline's share of one round


@dataclass(frozen=True)
class Pipeline:
    key: str
    label: str
    backend: str
    processing: str  # "numpy" (plain model between the twins) or "graph" (patched model)
    precision: str  # what the backend really computed in (OpenVINO ignores a bf16 hint on CPUs without bf16)
    requested: str  # the precision asked for
    run: Callable  # latency: () -> (model-only ns, end-to-end ns); throughput: (n) -> None once n batches are done

    def row(self) -> dict:
        return {"key": self.key, "label": self.label, "backend": self.backend, "processing": self.processing,
                "precision": self.precision, "precision_requested": self.requested,
                "reduced_precision": self.precision != "f32"}


@dataclass(frozen=True)
class BenchResult:
    """One `bench` run; `to_dict()` is `bench --json`. `targets` and `notes` are latency mode's (None in throughput
    mode); `int8` ({calibration, vs_f32}) is there when `Settings.int8` asked for the int8 IR, `bf16` ({samples,
    vs_f32}) when OpenVINO really ran bf16 (`_bf16_price`)."""

    mode: str
    recipe: str
    model: str
    settings: dict
    machine: dict
    load_average: dict
    pipelines: list[dict]
    targets: list[dict] | None = None
    notes: list[str] | None = None
    int8: dict | None = None
    bf16: dict | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


def checked_settings(settings: Settings) -> Settings:
    """`settings` held to the CLI's options, its counts as ints: from the Python API, iterations="3" and 2.5 were
    TypeErrors from deep inside, 10**12 ran for ever, a dict an AttributeError, numpy's int64 went into the JSON.
    Public for `make demo`, which checks its --iterations before minutes of export and conversion (round 36)."""
    if not isinstance(settings, Settings):
        raise ArgumentError(f"settings is a graphsurgery.benchmark.Settings, not {type(settings).__name__}")
    check_flags(throughput=settings.throughput, upgrade_opset=settings.upgrade_opset)
    counts = {"iterations": (settings.iterations, 1, MAX_ROUNDS), "warmup": (settings.warmup, 0, MAX_ROUNDS),
              "batch": (settings.batch, 1, None)}  # a batch too large for the memory is refused where it is made
    for name, (value, least, most) in counts.items():
        if not whole(value) or value < least or (most is not None and value > most):
            raise GraphsurgeryError(f"{name}={quoted(value)} (--{name}) is not a whole number from {least}"
                                    + (f" to {most:,}" if most else " up"),
                                    fix="e.g. iterations=50, warmup=5, batch=1 (--iterations, --warmup, --batch)")
    if settings.torch is not None and not isinstance(settings.torch, str):
        raise ArgumentError(f"torch is a 'module:function' str, not {type(settings.torch).__name__}")
    return replace(settings, **{name: int(value) for name, (value, *_) in counts.items()},
                   threads=int(settings.threads) if whole(settings.threads) else settings.threads)


@command
def run_bench(recipe: str | Path, model: str | Path, settings: Settings = Settings(),
              progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Patch `model` with `recipe` into a temporary folder, then time every pipeline, interleaved. `progress(done,
    total)` is called after each round (warm-up included): with a model of a second a call, the default 55 rounds
    ran for minutes without a word (`graphsurgery bench` shows the rounds and the time left)."""
    settings = checked_settings(settings)
    check_callback("progress", progress, "done, total")
    model = input_path(model, "model file")
    recipe = as_recipe(recipe)
    if settings.throughput and any(step.sets_batch for step in (recipe.input.steps if recipe.input else ())):
        raise GraphsurgeryError(f"recipe {recipe.name!r} makes its own batch of crops (crop_boxes, flip_test); "
                                "throughput mode streams whole batches", fix="measure its latency (no --throughput)")
    # None alone is "not given": threads=0 or "", torch="" and int8=0 ran as if absent, in silence (round 26)
    threads = settings.threads if settings.threads is not None else len(os.sched_getaffinity(0))
    network = load_torch_module(settings.torch) if settings.torch is not None else None  # fails before any work
    load_before = os.getloadavg()
    # errors about the models made in the scratch folder name the user's model, as verify's do (round 26: the
    # line named `/tmp/graphsurgery-bench-…/plain.patched.onnx`)
    with temporary_folder("bench") as folder, scratch_named(folder, f"{model} (patched by {recipe.source})"):
        patched = Path(folder) / f"{model.stem}.patched.onnx"
        plan = apply(recipe, model, patched, upgrade_opset=settings.upgrade_opset).plan
        workload = _workload(recipe, model, plan, settings.batch)
        timed_shape = {workload.patched_input: workload.crop.shape}
        int8 = (_int8_ir(patched, Path(folder) / "int8.xml", settings.int8, timed_shape)
                if settings.int8 is not None else None)
        with _pipelines(workload, model, patched, settings, threads, network, int8 and int8["ir"]) as pipelines:
            measure = _measure_throughput if settings.throughput else _measure_latency
            rows = measure(pipelines, settings, progress)
        bf16 = _bf16_price(patched, workload) if any(row["precision"] == "bf16" for row in rows) else None
    latency = not settings.throughput
    return BenchResult(
        mode="latency" if latency else "throughput", recipe=recipe.name, model=str(model),
        settings={"iterations": settings.iterations, "warmup": settings.warmup, "threads": threads,
                  "batch": settings.batch, "torch": settings.torch,
                  "batches_per_round": 1 if latency else BATCHES_PER_ROUND,
                  "input": {"name": workload.patched_input, "dtype": workload.crop.dtype.name,
                            "shape": list(workload.crop.shape)}},
        machine=machine(), load_average={"before": list(load_before), "after": list(os.getloadavg())}, pipelines=rows,
        targets=check_targets(rows) if latency else None, notes=precision_notes(rows) if latency else None,
        int8={"calibration": int8["calibration"], "vs_f32": int8["price"]} if int8 else None, bf16=bf16,
    )


def _random_input(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A caller input of `shape`: uint8 pixels over 0–255, floats over [0, 1)."""
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def _bf16_price(patched: Path, workload: Workload) -> dict:
    """What bf16 costs in agreement with f32, measured as int8's is (`quantize.price`) on `BF16_SAMPLES` random
    caller inputs shaped as the timed one: a faster row needs its price beside it, and bf16's depends on the model."""
    from graphsurgery.quantize import Calibration, price

    ov = openvino()

    core = ov.Core()
    # named if a kernel dies, each compile and run a step under the time limit (they ran unwatched)
    with doing(f"OpenVINO was comparing bf16 with f32 on {printable(patched)}"), \
            for_openvino(Path(patched)) as (readable, _):
        compiled = [core.compile_model(str(readable), "CPU", {"INFERENCE_PRECISION_HINT": hint})
                    for hint in each(("f32", "bf16"))]
        shape = "×".join(str(side) for side in workload.crop.shape)
        samples = Calibration(workload.random_feeds(BF16_SAMPLES), f"{BF16_SAMPLES} random inputs of {shape} (seed 0)")
        return {"samples": samples.description, "vs_f32": price(compiled, samples)}


def _int8_ir(patched: Path, xml: Path, samples: int, timed_shape: dict) -> dict:
    """The patched model as an int8 IR (`quantize.convert_int8`) on `samples` random caller inputs, with its price;
    the inputs at the size bench times (`timed_shape`), for a detector of any image size (it was refused with a fix,
    `--input-shape`, that bench has not)."""
    from graphsurgery.quantize import calibration_set, convert_int8

    facts = convert_int8(patched, xml, calibration_set(patched, random=samples, input_shapes=timed_shape)).int8
    return {"ir": xml, "calibration": facts.calibration,
            "price": {"quantizers": facts.quantized_activations, **facts.vs_f32}}


def precision_notes(rows: list[dict]) -> list[str]:
    """Reduced precision as it really went: bf16 that ran, and its time against f32 measured here."""
    by_key = {row["key"]: row for row in rows}
    f32, notes = by_key.get("openvino-patched-f32"), []
    for precision in ("bf16", "int8"):
        row = by_key.get(f"openvino-patched-{precision}")
        if row is None or f32 is None or row["precision"] != precision:
            continue
        ratio = paired_ratio(row["model_ms"]["samples"], f32["model_ms"]["samples"])
        notes.append(f"OpenVINO {precision} took {ratio:.2f}× the time of f32 here "
                     f"({'slower' if ratio > 1 else 'faster'})")
        if note := precision_note(precision):
            notes.append(note)
    return notes


def _workload(recipe: Recipe, model: Path, plan, batch: int) -> Workload:
    extras_names = set(twins.extra_input_names(recipe))
    image = next(s for s in plan.inputs if s.name not in extras_names)
    proto = load_model(model).proto
    facts = ModelFacts.of(proto, recipe)
    steps = twins.input_steps(recipe, facts)
    if image.shape is not None and any(s.frees_caller_size for s in steps):
        try:
            check_resized(steps, RESIZE_IMAGE_SIZE[::-1], 3, None)
        except GraphsurgeryError as exc:
            raise exc.about(model) from None
        hw_axes = (1, 2) if recipe.input.tensor.layout == "NHWC" else (2, 3)
        dims = list(image.shape)
        for axis, side in zip(hw_axes, RESIZE_IMAGE_SIZE[::-1]):
            dims[axis] = side
        image = replace(image, shape=tuple(dims))
    if image.shape is None or any(not isinstance(d, int) for d in image.shape[1:]):
        raise GraphsurgeryError(f"input {image.name!r} has dynamic dims besides the batch ({image})", path=model,
                                fix="export the model with a fixed input size")
    # a recipe that crops person boxes in the graph takes one image and `batch` boxes in it
    crops_boxes = twins.crops_in_graph(steps)
    images = 1 if crops_boxes else batch
    if isinstance(image.shape[0], int) and image.shape[0] != images:
        raise GraphsurgeryError(f"the model's batch is fixed at {image.shape[0]}, not {batch}", path=model,
                                fix=f"use batch={image.shape[0]} (--batch), or export with a dynamic batch "
                                    "(examples/hrnet/export.py --dynamic-batch)")
    rng = np.random.default_rng(0)
    shape = (images, *image.shape[1:])
    if math.prod(shape) * np.dtype(image.dtype).itemsize > MAX_BATCH_BYTES:  # made at once: 10^9 crops ran out
        raise GraphsurgeryError(f"a batch of {batch:,} takes more than {MAX_BATCH_BYTES >> 20} MiB of input",
                                path=model, fix="time a batch of a few crops (--batch)")
    plain_crop = facts.input_shape[1:] if facts.input_shape else ()
    if crops_boxes and plain_crop and all(isinstance(d, int) for d in plain_crop):
        # the graph cuts `batch` float crops (twice with the flip test) from one image: the input above is small,
        # and --batch 10^6 ran out of memory after a minute instead of being refused here
        made = batch * (2 if any(isinstance(step, FlipTest) for step in recipe.input.steps) else 1)
        if made * math.prod(plain_crop) * 4 > MAX_BATCH_BYTES:
            raise GraphsurgeryError(f"a batch of {batch:,} boxes makes {made:,} crops of {list(plain_crop)} in the "
                                    f"graph, more than {MAX_BATCH_BYTES >> 20} MiB", path=model,
                                    fix="time a few person boxes per image (--batch)")
    crop = _random_input(rng, shape, np.dtype(image.dtype))
    extras = {}
    if crops_boxes:  # people of 80–240 × 160–440 px, inside the 640 × 480 frame
        sizes = rng.uniform((80, 160), (240, 440), (batch, 2))
        corners = rng.uniform(0, 1, (batch, 2)) * (np.array(RESIZE_IMAGE_SIZE) - sizes)
        extras["boxes"] = np.concatenate([corners, sizes], axis=1).astype(np.float32)
    for step in recipe.output.steps if recipe.output else ():
        for extra in step.extra_inputs(batch):
            extras.setdefault(extra.name, rng.uniform(1.0, 2.0, extra.shape).astype(extra.dtype))
    plain_input = plan.input_target or image.name
    others = [name for name in real_inputs(proto) if name != plain_input]
    other = twins.other_inputs(proto, others, batch, facts.input_shape[0] if facts.input_shape else None, 0, model)
    declared = next((value.type.tensor_type for value in proto.graph.output if value.name == facts.output_name), None)
    plain_output = (tuple(d.dim_value or None for d in declared.shape.dim)
                    if declared is not None and declared.HasField("shape") else None)
    return Workload(recipe, facts, crop, extras, plain_input, image.name, other, plain_output)


@contextmanager
def _pipelines(work: Workload, plain: Path, patched: Path, settings: Settings, threads: int, network,
               int8_ir: Path | None = None) -> Iterator[list[Pipeline]]:
    """Every pipeline loaded at once. ONNX Runtime's idle threads do not spin: spinning, they would slow down
    whichever pipeline runs next. OpenVINO's throughput mode uses the plugin's parallel streams and async requests.
    `int8_ir`: the int8 IR of the patched model, timed as one more OpenVINO pipeline."""
    with ExitStack() as stack:
        pipelines = []
        if network is not None:
            pipelines.append(stack.enter_context(_torch_pipeline(work, network, threads, settings.throughput,
                                                                 settings.torch)))
        variants = VARIANTS + ((INT8_VARIANT,) if int8_ir else ())
        for backend, variant, precision, label in variants:
            model = plain if variant == "plain" else int8_ir if precision == "int8" else patched
            key = f"{backend}-{variant}" + (f"-{precision}" if backend == "openvino" and variant == "patched" else "")
            processing = "numpy" if variant == "plain" else "graph"
            runs_at = "f32" if precision == "int8" else precision  # an int8 IR runs its float parts in f32
            if settings.throughput and backend == "openvino":
                stream = stack.enter_context(open_stream(backend, model, precision=runs_at, threads=threads))
                run = work.plain_stream(stream) if variant == "plain" else work.patched_stream(stream)
                effective = "int8" if precision == "int8" else stream.precision
            else:
                runner = stack.enter_context(open_runner(backend, model, precision=runs_at, threads=threads,
                                                         spin=False))
                if variant == "plain":
                    run = work.plain_pass(lambda x, runner=runner: twins.run_in_model_batches(
                        runner, work.plain_input, x, work.other, work.facts))
                else:
                    run = work.patched_pass(runner)
                run = _repeat(run) if settings.throughput else run
                effective = "int8" if precision == "int8" else runner.precision
            pipelines.append(Pipeline(key, label, backend, processing, effective, precision, run))
        yield pipelines


def _repeat(timed: Callable[[], tuple[int, int]]) -> Callable[[int], None]:
    """Throughput of a synchronous pipeline: one batch after the other."""

    def burst(n: int) -> None:
        for _ in range(n):
            timed()

    return burst


@contextmanager
def _torch_pipeline(work: Workload, network, threads: int, throughput: bool, spec: str | None = None
                    ) -> Iterator[Pipeline]:
    """`network` (made by the function `spec`) in eager mode between the numpy twins: an exception in its forward
    pass, or an answer that is not one tensor, is the user's to fix (one line naming `spec`), not a bug."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    def forward(x: np.ndarray) -> np.ndarray:
        answer = network(torch.from_numpy(x))
        if not isinstance(answer, torch.Tensor):
            raise TypeError(f"its forward returned {type(answer).__name__}, not one tensor (the plain model's "
                            f"output {work.facts.output_name!r})")
        shape, declared = tuple(answer.shape), work.plain_output
        if declared is not None and (len(shape) != len(declared) or any(
                d not in (None, s) for d, s in zip(declared, shape))):
            raise ValueError(f"its forward returned a tensor of shape {list(shape)}; the plain model's output "
                             f"{work.facts.output_name!r} is [{', '.join(str(d or '?') for d in declared)}]")
        return answer.numpy()

    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {work.facts.output_name: call_user(forward, "the torch network (--torch)", x,
                                                      name=f"{spec}()'s network" if spec else None)}

    run = work.plain_pass(infer)
    try:
        yield Pipeline("torch-eager", "PyTorch eager + numpy", "torch", "numpy", "f32", "f32",
                       _repeat(run) if throughput else run)
    finally:
        torch.set_num_threads(previous)


def load_torch_module(spec: str):
    """`package.module:function` → function(), an nn.Module in eval mode (the current folder is importable)."""
    import torch

    what = "the torch network (--torch)"
    network = call_user(import_callable(spec, what, TORCH_EXAMPLE), what)
    if not isinstance(network, torch.nn.Module):
        raise GraphsurgeryError(
            f"the torch network (--torch): {spec}() returned {type(network).__name__}, not a torch.nn.Module",
            fix=f"give MODULE:FUNCTION returning a torch.nn.Module, e.g. {TORCH_EXAMPLE}",
        )
    return network.eval()


def _rounds(pipelines: list[Pipeline], settings: Settings, one: Callable[[Pipeline], object],
            progress: Callable[[int, int], None] | None = None) -> dict[str, list]:
    """Warm-up rounds, then timed rounds; each round runs every pipeline once in a fresh random order. `progress`
    is told each round done (`run_bench`)."""
    order = np.random.default_rng(0)
    samples: dict[str, list] = {p.key: [] for p in pipelines}
    total = settings.warmup + settings.iterations
    if progress is not None:
        call_back(progress, 0, total)  # the rounds begin (the patching and compiling before are not a round's time)
    for round_index in range(total):
        for index in order.permutation(len(pipelines)):
            pipeline = pipelines[index]
            sample = one(pipeline)
            if round_index >= settings.warmup:
                samples[pipeline.key].append(sample)
        if progress is not None:
            call_back(progress, round_index + 1, total)
    return samples


def _measure_latency(pipelines: list[Pipeline], settings: Settings,
                     progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Per pipeline: median, p90 and min, and every sample in round order (for the paired ratios)."""
    samples = _rounds(pipelines, settings, lambda p: p.run(), progress)
    rows = []
    for pipeline in pipelines:
        times = np.array(samples[pipeline.key], dtype=np.float64) / 1e6
        rows.append({**pipeline.row(), "model_ms": timing_stats(times[:, 0]),
                     "end_to_end_ms": timing_stats(times[:, 1]),
                     "end_to_end_over_model": paired_ratio(times[:, 1], times[:, 0])})
    reference = _find(rows, REFERENCE)
    for row in rows:
        row["vs_reference"] = {kind: paired_ratio(row[kind]["samples"], reference[kind]["samples"])
                               for kind in ("model_ms", "end_to_end_ms")}
    return rows


def _measure_throughput(pipelines: list[Pipeline], settings: Settings,
                        progress: Callable[[int, int], None] | None = None) -> list[dict]:
    def one(pipeline: Pipeline) -> int:
        start = time.perf_counter_ns()
        pipeline.run(BATCHES_PER_ROUND)
        return time.perf_counter_ns() - start

    samples = _rounds(pipelines, settings, one, progress)
    frames = BATCHES_PER_ROUND * settings.batch
    rows = []
    for pipeline in pipelines:
        seconds = np.array(samples[pipeline.key], dtype=np.float64) / 1e9
        fps = {"median": frames / float(np.median(seconds)), "p10": frames / float(np.percentile(seconds, 90))}
        rows.append({**pipeline.row(), "frames_per_second": fps})
    reference = _find(rows, REFERENCE)["frames_per_second"]["median"]
    for row in rows:
        row["vs_reference"] = {"time": reference / row["frames_per_second"]["median"]}
    return rows


def _find(rows: list[dict], key: str) -> dict:
    return next(row for row in rows if row["key"] == key)
