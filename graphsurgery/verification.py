"""Parity verification: does the patched model give the answers of the unpatched pipeline, on every backend?

For each backend, the same caller-side inputs go through (a) the plain model between the recipe's numpy twins
(`graphsurgery.twins`, always at f32: it is the reference) and (b) the patched model; every output the recipe
declares is compared by its kind (`graphsurgery.compare`). The patched model is also compared across backends
(the first backend is the reference). `precision` applies to the patched model on OpenVINO: at bf16 the report
measures what the faster mode costs in agreement, and says so.

Inputs are random uint8 crops shaped like the patched model's input, or crops cut from images exactly as the
HRNet authors cut them (`graphsurgery.crops`): one per person box, or the whole image when no boxes are given.
Extra inputs the output steps declare (`center`, `scale`) come from the same boxes (random plausible boxes for
random crops). The plain model's other inputs, which the recipe leaves to the caller and the patched model keeps
under their names (a temperature, a mask), get deterministic random values (`other_inputs`), the same on both
sides and backends. A recipe that resizes leaves the caller's H × W free, and resizing is what drifts most between
pipelines: there the inputs are whole images at their own sizes (random ones at `RESIZE_SIZES`, or each image of
the folder), one size per batch, and the report adds how far each resize is from `cv2.resize` (informational).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphsurgery.api import apply
from graphsurgery.compare import DEFAULT_TIE, HeatmapGrid, OutputResult, compare_output, missing_output
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.modelio import LoadedModel, load_model
from graphsurgery.recipe import InputTensor, Recipe, as_recipe
from graphsurgery.runners import BACKENDS, Port, model_signature, open_runner, precision_note
from graphsurgery.splice import provenance, real_inputs
from graphsurgery.steps.base import Comparison, InputStep
from graphsurgery.steps.resize import Resize
from graphsurgery.twins import (
    ModelFacts,
    comparisons,
    extra_input_names,
    input_steps,
    other_inputs,
    postprocess,
    preprocess,
)

#: The image random boxes are drawn in (pixels), for the `center` / `scale` inputs of random crops.
RANDOM_IMAGE_SIZE = (640, 480)
DEFAULT_RANDOM = 8
#: (W, H) of random images when the recipe resizes: landscape and portrait, odd sides, smaller and larger than a
#: 224 or 256 model, and one equal to a 224 model's size.
RESIZE_SIZES = ((400, 300), (353, 481), (224, 224), (640, 480))

#: Float outputs come from the model, and one model in float32 gives slightly different numbers in different graphs
#: and backends (accumulated rounding; HRNet-W32: up to 3.7e-5 on heatmaps spanning ±1.2, ONNX Runtime vs OpenVINO,
#: and with vs without the preprocessing that OpenVINO folds into the first convolution). Declared float tolerances
#: tighter than this are raised to it unless a tolerance is set by name; wrong patches differ by 1e-2 (bf16) to 1
#: (colour order, std).
MODEL_FLOAT_FLOOR = Comparison("float", rtol=1e-4, atol=1e-4)

Tolerances = Mapping[str, tuple[float, float]]


@dataclass
class Samples:
    """Caller-side inputs in groups of one size each (a batch has one size): tensors as the patched model takes
    them ([n, ...]) with their extra inputs by name; what they are, and what one of them is called."""

    groups: list[tuple[np.ndarray, dict[str, np.ndarray]]]
    description: str
    unit: str = "crops"

    def __len__(self) -> int:
        return sum(len(tensors) for tensors, _ in self.groups)

    @property
    def extras(self) -> dict[str, np.ndarray]:
        """Every group's extra inputs, concatenated in order (as the outputs are)."""
        return {name: np.concatenate([extras[name] for _, extras in self.groups]) for name in self.groups[0][1]}

    def sizes(self, layout: str) -> list[tuple[int, int]]:
        """The distinct (W, H) of the samples, in order."""
        return list(dict.fromkeys(_width_height(tensors[0], layout) for tensors, _ in self.groups))


@dataclass
class PairReport:
    """One comparison: `actual` against `reference`, output by output."""

    name: str
    reference: str
    actual: str
    results: list[OutputResult]
    reduced_precision: str | None = None

    def __bool__(self) -> bool:
        return all(self.results)

    def to_dict(self) -> dict:
        return {"name": self.name, "reference": self.reference, "actual": self.actual, "passed": bool(self),
                "reduced_precision": self.reduced_precision, "outputs": [r.to_dict() for r in self.results]}


@dataclass
class VerifyReport:
    """The verdict (`bool(report)`) and everything that led to it."""

    recipe: str
    plain: str
    patched: str
    inputs: str
    samples: int
    backends: list[str]
    precision: str
    unit: str = "crops"
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (W, H) of the caller's samples
    pairs: list[PairReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resize_vs_opencv: list[dict] = field(default_factory=list)  # informational: not part of the verdict

    def __bool__(self) -> bool:
        return bool(self.pairs) and all(self.pairs)

    def failures(self) -> list[str]:
        """One line per failing output: the pair, the output and the size of the difference."""
        return [f"{pair.name}: {result.output}: {result.summary()}"
                for pair in self.pairs for result in pair.results if not result]

    def to_dict(self) -> dict:
        return {"passed": bool(self), "recipe": self.recipe, "plain": self.plain, "patched": self.patched,
                "inputs": self.inputs, "samples": self.samples,
                "sizes": [{"width": w, "height": h} for w, h in self.sizes], "backends": self.backends,
                "precision": self.precision, "notes": self.notes, "pairs": [p.to_dict() for p in self.pairs],
                "informational": {"resize_vs_opencv": self.resize_vs_opencv}}


def verify(recipe: str | Path | Recipe, plain_model: str | Path, *, patched: str | Path | None = None,
           images: str | Path | None = None, boxes: str | Path | None = None, random: int | None = None,
           backends: Iterable[str] = BACKENDS, precision: str = "f32", tolerances: Tolerances | None = None,
           seed: int = 0) -> VerifyReport:
    """Compare the patched model (built from `recipe` when `patched` is None) with the unpatched pipeline.

    `tolerances`: {output name: (atol, rtol)}, the key "*" for every float output without its own; coordinate
    outputs use only atol; otherwise each output's declared comparison, floats raised to `MODEL_FLOAT_FLOOR`.
    Keypoint mismatches are near ties when the model output's values at the two positions
    agree within that output's tolerance (declared, or set by name). Default inputs: `DEFAULT_RANDOM` random crops
    (random images of `RESIZE_SIZES` when the recipe resizes; `images` are then fed whole, and `boxes` refused).
    """
    recipe = as_recipe(recipe)
    plain = load_model(plain_model)
    facts = ModelFacts.of(plain.proto, recipe)
    backends = check_backends(list(backends), precision, patched)
    if images is not None and random is not None:
        raise GraphsurgeryError("give images or a number of random crops, not both", fix="drop --images or --random")
    if boxes is not None and images is None:
        raise GraphsurgeryError("boxes need images to cut them from", path=boxes, fix="add --images DIR")
    steps = input_steps(recipe, facts)
    resizes = [step for step in steps if isinstance(step, Resize)]
    if any(step.size is None for step in resizes):
        raise GraphsurgeryError("the recipe's resize cannot learn the model's size: no input of the plain model is "
                                "the recipe's input.target (or it has several and the recipe names none)",
                                path=plain.path, fix="name the input to patch in input.target (inspect lists them)")
    if boxes is not None and resizes:
        raise GraphsurgeryError("this recipe resizes whole images in the graph; boxes cut crops at the model's size",
                                path=boxes, fix="drop --boxes: verify feeds each image whole, at its own size")
    declared = comparisons(recipe, facts)
    wanted = _with_tolerances(declared, tolerances or {})
    tensor = tensor_facet(recipe)
    input_name = plain_input(recipe, plain)
    others = [name for name in real_inputs(plain.proto) if name != input_name]
    with tempfile.TemporaryDirectory(prefix="graphsurgery-verify-") as tmp:
        patched_path = (
            Path(patched) if patched is not None else apply(recipe, plain.path, Path(tmp) / "patched.onnx").output
        )
        image_input, extras = patched_inputs(patched_path, extra_input_names(recipe), others)
        batch = image_input.shape[0] if isinstance(image_input.shape[0], int) else 1
        count = random if random is not None else DEFAULT_RANDOM
        if resizes:
            model_size = resizes[-1].size[::-1]  # (W, H) of the last resize: the model's
            samples = (whole_images(Path(images), image_input, tensor, extras, model_size) if images is not None
                       else random_samples(count, image_input, RESIZE_SIZES, tensor.layout, extras, model_size,
                                           batch, seed))
        else:
            size = crop_size(image_input, recipe, facts)
            samples = (image_samples(Path(images), boxes, image_input, size, tensor, extras) if images is not None
                       else random_samples(count, image_input, [size], tensor.layout, extras, size, batch, seed))
        other = other_inputs(plain.proto, others, batch, facts.input_shape[0] if facts.input_shape else None,
                             seed, plain.path)
        report = VerifyReport(recipe.source, str(plain.path), str(patched) if patched else "(built from the recipe)",
                              samples.description, len(samples), backends, precision, samples.unit,
                              samples.sizes(tensor.layout))
        report.notes += _provenance_notes(patched_path, recipe)
        if other:
            shown = ", ".join(f"{name!r} {list(value.shape)} {value.dtype}" for name, value in other.items())
            report.notes.append(f"the plain model's other input(s) {shown} got deterministic random values "
                                f"(seed {seed}), the same on both sides")
        report.resize_vs_opencv = resize_vs_opencv_report(steps, samples.groups[0][0][0], tensor.layout)
        unpatched, raw, runs, ran = {}, {}, {}, {}
        for backend in backends:
            unpatched[backend], raw[backend] = _run_unpatched(recipe, facts, backend, plain.path, input_name,
                                                              other, samples, batch)
            runs[backend], ran[backend] = _run_patched(backend, patched_path,
                                                       precision if backend == "openvino" else "f32",
                                                       image_input.name, other, samples, batch)
    grids = heatmap_grid(recipe, facts, raw[backends[0]], samples.extras, wanted)
    if any(c.kind == "coordinates" for c in wanted.values()) and not grids:
        report.notes.append("coordinates could not be mapped to heatmap cells: every mismatch counts as real")
    tie = _tie_tolerance(declared, wanted, tolerances or {}, facts.output_name)
    if ran.get("openvino", "f32") != precision:
        report.notes.append(f"{precision} was asked for, but this CPU has no {precision} support: OpenVINO ran "
                            f"{ran['openvino']}")

    report.pairs = _pairs(backends, ran, unpatched, runs, raw, lambda actual, expected, values: _compare(
        actual, expected, values, wanted, grids, tie))
    if any(pair.reduced_precision for pair in report.pairs):
        report.notes.append(f"OpenVINO ran the patched model at {ran['openvino']}: differences measure what reduced "
                            f"precision costs in agreement, not a wrong patch")
    if note := precision_note(ran.get("openvino", "f32")):
        report.notes.append(note)
    return report


def _pairs(backends: list[str], ran: dict[str, str], unpatched: dict, patched: dict, raw: dict,
           compare: Callable[[dict, dict, np.ndarray], list[OutputResult]]) -> list[PairReport]:
    """Unpatched → patched on each backend, then the patched model on the first backend → on each other one.

    `ran` is the precision each backend really computed the patched model in; `raw` the plain model's output
    on each backend (near ties are judged on the reference side's)."""

    def label(backend: str) -> str:
        return backend + (f" at {ran[backend]}" if ran[backend] != "f32" else "")

    def reduced(*sides: str) -> str | None:
        return next((ran[b] for b in sides if ran[b] != "f32"), None)

    pairs = [
        PairReport(
            f"{label(b)}: unpatched → patched",
            f"unpatched pipeline on {b}",
            f"patched model on {label(b)}",
            compare(patched[b], unpatched[b], raw[b]),
            reduced(b),
        )
        for b in backends
    ]
    first = backends[0]
    pairs += [PairReport(f"patched: {label(first)} → {label(b)}", f"patched model on {label(first)}",
                         f"patched model on {label(b)}", compare(patched[b], patched[first], raw[first]),
                         reduced(first, b)) for b in backends[1:]]
    return pairs


# --- inputs --------------------------------------------------------------------------------------------------


def random_samples(n: int, image_input: Port, sizes: Sequence[tuple[int, int]], layout: str, extras: list[str],
                   model_size: tuple[int, int], batch: int = 1, seed: int = 0) -> Samples:
    """`n` random images (values 0–255 in the input's dtype), a new size from `sizes` (W, H) every `batch` images,
    grouped by size; random plausible boxes (padded to the aspect of `model_size`) for the extra inputs.

    One size: crops at the model's size. Several: images for a recipe that resizes them."""
    from graphsurgery.crops import box_to_center_scale

    if n < 1:
        raise GraphsurgeryError(f"--random needs at least 1 crop, not {n}", fix="give a positive number")
    rng = np.random.default_rng(seed)
    size_of = [sizes[(index // batch) % len(sizes)] for index in range(n)]
    members = {size: [i for i, s in enumerate(size_of) if s == size] for size in dict.fromkeys(size_of)}
    tensors = [rng.integers(0, 256, (len(m), *_sample_shape(image_input, size, layout))).astype(image_input.dtype)
               for size, m in members.items()]
    width, height = RANDOM_IMAGE_SIZE
    boxes = []
    for _ in range(n):
        w, h = rng.uniform(40, width / 2), rng.uniform(80, height - 10)
        boxes.append((rng.uniform(0, width - w), rng.uniform(0, height - h), w, h))
    centers, scales = (np.stack(v) for v in zip(*(box_to_center_scale(b, model_size[0] / model_size[1])
                                                  for b in boxes)))
    groups = [(t, _extras(extras, centers[m], scales[m])) for t, m in zip(tensors, members.values())]
    if len(sizes) == 1:
        return Samples(groups, f"{n} random crops (seed {seed})")
    shown = ", ".join(f"{w}×{h}" for w, h in members)
    return Samples(groups, f"{n} random images of {len(members)} sizes, W×H {shown} (seed {seed})", "images")


def image_samples(folder: Path, boxes_file: Path | str | None, image_input: Port, size: tuple[int, int],
                  tensor: InputTensor, extras: list[str]) -> Samples:
    """One crop per person box (or per whole image without a boxes file), cut as the HRNet authors cut them."""
    from graphsurgery.boxes import load_boxes
    from graphsurgery.crops import person_crop, whole_image_box
    from graphsurgery.images import list_images, read_image

    paths = list_images([folder])
    boxes = load_boxes(Path(boxes_file)) if boxes_file is not None else None
    tensors, centers, scales = [], [], []
    used = 0
    for path in paths:
        if boxes is not None and path.name not in boxes:
            continue
        image = read_image(path)
        used += 1
        for box in boxes[path.name] if boxes is not None else [whole_image_box(image)]:
            center, scale, crop = person_crop(image, box, size)
            tensors.append(as_caller_tensor(crop, tensor, image_input.dtype))
            centers.append(center)
            scales.append(scale)
    if not tensors:
        raise GraphsurgeryError("no image in the folder has boxes in the boxes file", path=boxes_file,
                                fix="check that the boxes file names the images by file name")
    how = "person boxes" if boxes is not None else "whole images"
    return Samples([(np.stack(tensors), _extras(extras, np.stack(centers), np.stack(scales)))],
                   f"{len(tensors)} crops from {used} images in {folder} ({how})")


def whole_images(folder: Path, image_input: Port, tensor: InputTensor, extras: list[str],
                 model_size: tuple[int, int]) -> Samples:
    """Each image of the folder whole, at its own size, as the caller feeds it: one group per image. Extra inputs
    come from the whole-image box (padded to the aspect of `model_size`, W / H)."""
    from graphsurgery.crops import box_to_center_scale, whole_image_box
    from graphsurgery.images import list_images, read_image

    groups = []
    for path in list_images([folder]):
        image = read_image(path)
        center, scale = box_to_center_scale(whole_image_box(image), model_size[0] / model_size[1])
        groups.append((as_caller_tensor(image, tensor, image_input.dtype)[None],
                       _extras(extras, center[None], scale[None])))
    shown = ", ".join(f"{w}×{h}" for w, h in dict.fromkeys(_width_height(t[0], tensor.layout) for t, _ in groups))
    return Samples(groups, f"{len(groups)} whole images from {folder} at their own sizes, W×H {shown}", "images")


def as_caller_tensor(crop_bgr: np.ndarray, tensor: InputTensor, dtype: str) -> np.ndarray:
    """A uint8 HWC BGR crop (or image) as the recipe's caller feeds it: its colour order, layout and element type
    (no batch)."""
    x = crop_bgr[..., ::-1] if tensor.color == "RGB" else crop_bgr
    x = np.transpose(x, (2, 0, 1)) if tensor.layout == "NCHW" else x
    return np.ascontiguousarray(x).astype(dtype)


def _extras(names: list[str], centers: np.ndarray, scales: np.ndarray) -> dict[str, np.ndarray]:
    known = {"center": centers.astype(np.float32), "scale": scales.astype(np.float32)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GraphsurgeryError(f"verify cannot make values for the extra input(s) {', '.join(map(repr, unknown))}",
                                fix="verify knows `center` and `scale`; compare such models with your own inputs")
    return {name: known[name] for name in names}


def tensor_facet(recipe: Recipe) -> InputTensor:
    return recipe.input.tensor if recipe.input else InputTensor()


def _sample_shape(image_input: Port, size: tuple[int, int], layout: str) -> tuple[int, ...]:
    """One sample's dims in the caller's layout, dynamic ones filled from the crop size (W, H) and 3 channels."""
    dims = image_input.shape[1:]
    if len(dims) != 3:
        raise GraphsurgeryError(f"the patched input {image_input.name!r} has {len(dims) + 1} dims; verify makes "
                                f"4-D image batches", fix="verify image models (a 4-D input)")
    wanted = (size[1], size[0], 3) if layout == "NHWC" else (3, size[1], size[0])
    return tuple(d or fill for d, fill in zip(dims, wanted))


def _width_height(sample: np.ndarray, layout: str) -> tuple[int, int]:
    """(W, H) of one sample (no batch) in the caller's layout."""
    h, w = sample.shape[:2] if layout == "NHWC" else sample.shape[1:]
    return int(w), int(h)


def crop_size(image_input: Port, recipe: Recipe, facts: ModelFacts) -> tuple[int, int]:
    """(W, H) of the crops: the patched input's static size, else the plain model's."""
    layout = tensor_facet(recipe).layout
    h, w = image_input.shape[1:3] if layout == "NHWC" else image_input.shape[2:4]
    if isinstance(h, int) and isinstance(w, int):
        return (w, h)
    if facts.input_size is None:
        raise GraphsurgeryError("neither the patched nor the plain model has a static input size",
                                fix="export the model with a fixed input size")
    return facts.input_size


# --- models and runs -----------------------------------------------------------------------------------------


def check_backends(backends: list[str], precision: str, patched: str | Path | None) -> list[str]:
    if not backends:
        raise GraphsurgeryError("no backend to verify on", fix=f"choose from {', '.join(BACKENDS)}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise GraphsurgeryError(f"unknown backend {unknown[0]!r}", fix=f"choose from {', '.join(BACKENDS)}")
    if precision != "f32" and "openvino" not in backends:
        raise GraphsurgeryError(f"precision {precision} applies to OpenVINO only", fix="add openvino to the backends")
    if patched is not None and Path(patched).suffix.lower() == ".xml" and "onnxruntime" in backends:
        raise GraphsurgeryError("onnxruntime cannot run OpenVINO IR", path=patched,
                                fix="verify the .xml with --backends openvino, or give the patched .onnx")
    return list(dict.fromkeys(backends))


def patched_inputs(path: Path, extra_names: list[str], other_names: Sequence[str] = ()) -> tuple[Port, list[str]]:
    """The patched model's image input, and the extra inputs (of the recipe) it takes; it must also take the plain
    model's `other_names`."""
    if not path.exists():
        raise GraphsurgeryError("no such patched model file", path=path, fix="check the path")
    inputs = model_signature(path).inputs
    besides = [*extra_names, *other_names]
    images = [p for p in inputs if p.name not in besides]
    extras = [p.name for p in inputs if p.name in extra_names]
    if len(images) != 1:
        raise GraphsurgeryError(f"the patched model has {len(images)} inputs besides {besides or 'none'}; "
                                f"expected one image input", path=path, fix="give the model patched with this recipe")
    missing = sorted(set(besides) - {p.name for p in inputs})
    if missing:
        raise GraphsurgeryError(f"the patched model lacks the input(s) {missing} the recipe adds or the plain model "
                                f"has", path=path, fix="give the model patched with this recipe")
    return images[0], extras


def plain_input(recipe: Recipe, plain: LoadedModel) -> str:
    """The plain model's input the recipe patches: its input.target, else the model's only input."""
    if recipe.input and recipe.input.target:
        return recipe.input.target
    names = real_inputs(plain.proto)
    if len(names) != 1:
        raise GraphsurgeryError(f"the plain model has {len(names)} inputs", path=plain.path,
                                fix="name the one to patch in the recipe's input.target")
    return names[0]


def _chunks(samples: Samples, batch: int):
    """Batches of `batch` samples, each of one size."""
    if any(len(tensors) % batch for tensors, _ in samples.groups):
        raise GraphsurgeryError(f"the model takes batches of {batch}; {len(samples)} {samples.unit} do not divide "
                                f"into them", fix=f"use a multiple of {batch} {samples.unit}")
    for tensors, extras in samples.groups:
        for start in range(0, len(tensors), batch):
            end = start + batch
            yield tensors[start:end], {k: v[start:end] for k, v in extras.items()}


def _run_unpatched(recipe: Recipe, facts: ModelFacts, backend: str, plain: Path, input_name: str,
                   other: dict[str, np.ndarray], samples: Samples, batch: int
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The reference answers, and the plain model's raw output (what near ties are judged on). `other`: the plain
    model's other inputs."""
    outputs, raws = [], []
    with open_runner(backend, plain) as run:
        for x, extras in _chunks(samples, batch):
            raw = run({input_name: preprocess(recipe, x, facts), **other})[facts.output_name]
            raws.append(raw)
            outputs.append(postprocess(recipe, raw, facts, extras))
    return _concat(outputs), np.concatenate(raws)


def _run_patched(backend: str, patched: Path, precision: str, input_name: str, other: dict[str, np.ndarray],
                 samples: Samples, batch: int) -> tuple[dict[str, np.ndarray], str]:
    """The patched model's answers, and the precision the backend really computed in."""
    outputs = []
    with open_runner(backend, patched, precision=precision) as run:
        for x, extras in _chunks(samples, batch):
            outputs.append(run({input_name: x, **other, **extras}))
    return _concat(outputs), run.precision


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


# --- comparing -----------------------------------------------------------------------------------------------


def _model_float(comparison: Comparison) -> Comparison:
    """A float comparison raised to at least MODEL_FLOAT_FLOOR (other kinds unchanged)."""
    if comparison.kind != "float":
        return comparison
    return Comparison("float", rtol=max(comparison.rtol, MODEL_FLOAT_FLOOR.rtol),
                      atol=max(comparison.atol, MODEL_FLOAT_FLOOR.atol))


def _with_tolerances(declared: dict[str, Comparison], tolerances: Tolerances) -> dict[str, Comparison]:
    """The recipe's comparisons (floats raised to the model floor) with the caller's tolerances; "*" applies to
    float outputs without their own."""
    unknown = sorted(set(tolerances) - set(declared) - {"*"})
    if unknown:
        raise GraphsurgeryError(f"no output named {unknown[0]!r} to set a tolerance for",
                                fix=f"the outputs are {', '.join(declared)} (or * for every float output)")
    result = {}
    for name, comparison in declared.items():
        given = tolerances.get(name, tolerances.get("*") if comparison.kind == "float" else None)
        if given is not None:
            atol, rtol = given
            if atol < 0 or rtol < 0:
                raise GraphsurgeryError(f"tolerances for {name!r} must not be negative", fix="give atol, rtol ≥ 0")
            comparison = Comparison(comparison.kind, atol=atol, rtol=rtol if comparison.kind == "float" else 0.0)
        else:
            comparison = _model_float(comparison)
        result[name] = comparison
    return result


def _tie_tolerance(declared: dict[str, Comparison], wanted: dict[str, Comparison], tolerances: Tolerances,
                   output: str) -> Comparison:
    """The float tolerance under which two heatmap values tie: the model output's own, as declared or as set for it
    by name. A blanket "*" does not loosen it: that would turn every keypoint mismatch into a near tie."""
    tie = wanted[output] if output in tolerances else _model_float(declared.get(output, DEFAULT_TIE))
    return tie if tie.kind == "float" else _model_float(DEFAULT_TIE)


def _compare(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], raw: np.ndarray,
             wanted: dict[str, Comparison], grids: dict[str, HeatmapGrid], tie: Comparison) -> list[OutputResult]:
    results = []
    for name, comparison in wanted.items():
        if name not in actual:
            results.append(missing_output(name, comparison, "the patched model has no such output"))
            continue
        reference = raw if comparison.kind == "indices" or name in grids else None
        results.append(compare_output(name, actual[name], expected[name], comparison, reference=reference,
                                      grid=grids.get(name), tie=tie))
    return results


def heatmap_grid(recipe: Recipe, facts: ModelFacts, heatmaps: np.ndarray, extras: dict[str, np.ndarray],
                 wanted: dict[str, Comparison]) -> dict[str, HeatmapGrid]:
    """How each coordinate output maps to heatmap cells, measured with the recipe's own numpy twins.

    One-hot heatmaps shaped like the model's output, with the peak in the first cell, the last cell and the
    middle one, are decoded by the output twins (with the same extra inputs); two answers give the per-axis scale
    and offset, the third must agree (within 1e-4), else that output gets no grid. Single-peak maps are decoded
    without refinement (the neighbours tie), so no knowledge of any particular step is needed here.
    """
    names = [name for name, c in wanted.items() if c.kind == "coordinates"]
    if not names or heatmaps.ndim != 4:
        return {}
    n, k, h, w = heatmaps.shape
    corners = {"first": (0, 0), "last": (w - 1, h - 1), "middle": (w // 2, h // 2)}
    decoded = {}
    for label, (x, y) in corners.items():
        probe = np.zeros(heatmaps.shape, np.float32)
        probe[:, :, y, x] = 1.0
        decoded[label] = postprocess(recipe, probe, facts, extras)
    span = np.array([max(w - 1, 1), max(h - 1, 1)], np.float64)
    grids = {}
    for name in names:
        first, last, middle = (np.asarray(decoded[label].get(name), np.float64) for label in corners)
        if first.shape != (n, k, 2) or last.shape != first.shape or middle.shape != first.shape:
            continue
        scale = (last - first) / span
        if not np.allclose(first + scale * np.array(corners["middle"]), middle, rtol=1e-6, atol=1e-4):
            continue
        grids[name] = HeatmapGrid(scale, first)
    return grids


def resize_vs_opencv_report(steps: Sequence[InputStep], sample: np.ndarray, layout: str) -> list[dict]:
    """Informational, not part of the verdict: how far each resize step is from `cv2.resize` with the closest
    settings, on one caller sample (no batch), in the caller's units (0–255 for uint8), so a user knows what
    changed against an OpenCV pipeline."""
    from graphsurgery.steps.resize import resize_vs_opencv

    image = np.transpose(sample, (1, 2, 0)) if layout == "NCHW" else sample
    image = image.astype(np.float32) if image.dtype == np.float16 else image  # cv2.resize takes no float16
    width, height = _width_height(sample, layout)
    return [{"step": f"input.steps[{index}].resize", "image": {"width": width, "height": height},
             **resize_vs_opencv(step, np.ascontiguousarray(image))}
            for index, step in enumerate(steps) if isinstance(step, Resize)]


def _provenance_notes(patched: Path, recipe: Recipe) -> list[str]:
    if patched.suffix.lower() != ".onnx":
        return []
    entries = provenance(load_model(patched).proto)
    if entries and not recipe.made(entries[-1]):
        last = entries[-1]
        return [f"the patched model was made with recipe {last.get('recipe')!r} "
                f"(sha256 {str(last.get('recipe_sha256'))[:12]}…), not with this recipe"]
    return []
