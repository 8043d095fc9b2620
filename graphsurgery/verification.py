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

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.api import apply_loaded
from graphsurgery.batched import (
    TOGETHER,
    BatchRows,
    among_companions,
    apart_in_plain,
    batch_rows,
    fail_unfollowed,
    ir_batch_rows,
)
from graphsurgery.compare import AxisVectors, FloatResult, HeatmapGrid, OutputResult, compare_output, missing_output
from graphsurgery.compare_detections import Candidates, compare_detections, group_comparison
from graphsurgery.crop_positions import (
    BLEND_BOXES,
    MANY_BOXES,
    PositionsCut,
    blend_cut,
    blend_results,
    crop_spec,
    graph_blended,
    graph_positions,
    positions_cut,
    positions_results,
    twin_blended,
    twin_positions,
)
from graphsurgery.decoder_probe import (
    EXACT_ON_INVALID,
    Probe,
    ProbeCuts,
    cell_probes,
    image_edge_cells,
    joined,
    read_steps,
    run_probe,
    run_simcc_probe,
)
from graphsurgery.errors import GraphsurgeryError, check_flags, check_names, printable
from graphsurgery.heatmap_grid import heatmap_grid
from graphsurgery.limits import byte_size
from graphsurgery.longrun import FirstPart, say_long_run
from graphsurgery.machine import usable_memory
from graphsurgery.model import ModelFacts, openvino_caveats, provenance, real_inputs
from graphsurgery.modelio import LoadedModel, command, load_model
from graphsurgery.nms_reads import NmsCut, graph_reads, nms_cut, reads_results
from graphsurgery.own_input_steps import doubled_notes
from graphsurgery.probe import settle_output_sizes
from graphsurgery.recipe import Recipe, as_recipe
from graphsurgery.runners import (
    BACKENDS,
    backend_list,
    check_backends,
    model_signature,
    open_runner,
    precision_note,
    remember_signature,
)
from graphsurgery.safeio import input_path, scratch_named, temporary_folder
from graphsurgery.samples import (
    DEFAULT_RANDOM,
    Samples,
    box_image_samples,
    check_plain_input,
    check_random,
    check_seed,
    chunks,
    crop_size,
    image_samples,
    many_person_boxes,
    patched_inputs,
    plain_input,
    ragged,
    random_box_samples,
    random_caller_samples,
    refuse_patched_plain,
    runs_of,
    tensor_facet,
    whole_images,
    width_height,
)
from graphsurgery.splice import reads_geometry, refuse_applied
from graphsurgery.stability import Wobbles
from graphsurgery.staged import (
    Bounds,
    exposed_copy,
    graph_inputs,
    input_bounds,
    input_result,
    rounding_step,
    unexposed_note,
)
from graphsurgery.steps.base import Comparison, InputStep, TensorSpec
from graphsurgery.steps.output import HeatmapArgmax
from graphsurgery.steps.simcc import SimccDecode
from graphsurgery.tolerances import (
    Tolerances,
    allowance_note,
    checked_tolerances,
    float16_exponentials,
    measured_floor,
    measured_tie,
    nms_read_tolerances,
    scaled_floor,
    scaled_tie,
    tie_tolerance,
    with_tolerances,
    without_vacuous_tie,
)
from graphsurgery.twins import (
    PLACED,
    comparisons,
    concat,
    crops_in_graph,
    decoded_output,
    extra_input_names,
    input_steps,
    joined_decision_inputs,
    other_inputs,
    output_extras,
    preprocess,
    ranked,
    run_in_model_batches,
    unpatched_outputs,
)

#: What verify holds at its peak, per pipeline, in bytes of the plain model's outputs: each pipeline's answers
#: joined, the plain model's output as the decoding steps read it, and the float64 differences a comparison keeps for
#: its medians (4 pipelines held 13.7 and 12.9 times, 4.8 and 9.1 GB, on a model of 21 × 512 × 512 float32 outputs
#: at 16 and 32 random samples)
HELD_PER_PIPELINE = 3.5


@dataclass
class PairReport:
    """One comparison: `actual` against `reference`, output by output."""

    name: str
    reference: str
    actual: str
    results: list[OutputResult]
    reduced_precision: str | None = None
    #: measured, not judged: int8 against f32 (the verdict is the int8 model's own decode,
    #: `int8_verification.int8_pairs`)
    informational: bool = False

    def __bool__(self) -> bool:
        return all(self.results)

    def to_dict(self) -> dict:
        return {"name": self.name, "reference": self.reference, "actual": self.actual, "passed": bool(self),
                "reduced_precision": self.reduced_precision, "informational": self.informational,
                "outputs": [r.to_dict() for r in self.results]}


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
    vs_library: list[dict] = field(default_factory=list)  # informational: not part of the verdict
    problem: str | None = None  # why the comparisons, however they end, prove nothing
    #: the output steps on a probe network output (`decoder_probe`): part of the verdict
    probes: list[PairReport] = field(default_factory=list)
    #: per backend, the network input the patched graph computes against the input twins' (`staged`): part of the
    #: verdict
    input_steps: list[PairReport] = field(default_factory=list)
    #: per backend (and on the probe), what the patched graph's nms reads against the twins', at every anchor
    #: (`nms_reads`): part of the verdict
    before_nms: list[PairReport] = field(default_factory=list)
    #: per backend, where the patched graph's crops sample the image for many boxes against the crop twin's
    #: (`crop_positions`): part of the verdict
    crop_positions: list[PairReport] = field(default_factory=list)
    #: per backend, the patched graph's crops of a few of those boxes before their rounding against the crop twin's
    #: (`crop_positions.blend_cut`): part of the verdict
    crop_values: list[PairReport] = field(default_factory=list)
    #: what the patched model was compared with, as the verdict says it (round 44: after `--reference FILE.npz` a
    #: PASS said it agreed with the unpatched pipeline, of a comparison with the user's recorded one)
    compared_with: str = "the unpatched pipeline"

    def __bool__(self) -> bool:
        decisive = [pair for pair in self.pairs if not pair.informational]
        return (self.problem is None and bool(decisive) and all(decisive) and all(self.input_steps)
                and all(self.crop_positions) and all(self.crop_values) and all(self.before_nms) and all(self.probes))

    @property
    def compared(self) -> list[PairReport]:
        """Every comparison, as reported: the pairs, the input steps, the crop positions and values, what nms reads,
        then the probes."""
        return [*self.pairs, *self.input_steps, *self.crop_positions, *self.crop_values, *self.before_nms,
                *self.probes]

    def failures(self) -> list[str]:
        """One line per failing output of the pairs that decide (the probes' last): the pair, the output and the
        size of the difference; first the problem, if any."""
        return [self.problem] * bool(self.problem) + [
            f"{pair.name}: {result.output}: {result.summary()}"
            for pair in self.compared if not pair.informational for result in pair.results if not result]

    def to_dict(self) -> dict:
        return {"passed": bool(self), "recipe": self.recipe, "plain": self.plain, "patched": self.patched,
                "inputs": self.inputs, "samples": self.samples,
                "sizes": [{"width": w, "height": h} for w, h in self.sizes], "backends": self.backends,
                "precision": self.precision, "compared_with": self.compared_with, "problem": self.problem,
                "notes": self.notes,
                "pairs": [p.to_dict() for p in self.pairs], "input_steps": [p.to_dict() for p in self.input_steps],
                "crop_positions": [p.to_dict() for p in self.crop_positions],
                "crop_values": [p.to_dict() for p in self.crop_values],
                "before_nms": [p.to_dict() for p in self.before_nms],
                "probes": [p.to_dict() for p in self.probes],
                "informational": {"vs_library": self.vs_library}}


@command
def verify(recipe: str | Path | Recipe, plain_model: str | Path, *, patched: str | Path | None = None,
           images: str | Path | None = None, boxes: str | Path | None = None, random: int | None = None,
           backends: Iterable[str] = BACKENDS, precision: str = "f32", tolerances: Tolerances | None = None,
           seed: int = 0, upgrade_opset: bool = False, reference: str | Path | None = None,
           reference_pipeline: str | Callable | None = None) -> VerifyReport:
    """Compare the patched model (built from `recipe` when `patched` is None) with the unpatched pipeline.

    `tolerances`: {output name: (atol, rtol)}, the key "*" for every float output without its own; coordinate
    outputs use only atol; otherwise each output's declared comparison, floats raised to `MODEL_FLOAT_FLOOR`.
    Keypoint mismatches are near ties when the model output's values at the two positions
    agree within that output's tolerance (declared, or set by name). Default inputs: `DEFAULT_RANDOM` random crops
    (random images of each of `resize_sizes` once, at least `DEFAULT_RANDOM`, when the recipe resizes; `images` are
    then fed whole, and `boxes` refused).
    `reference`: a .npz recording of the user's own pipeline (inputs and answers), or `reference_pipeline`: that
    pipeline itself (a function, or "module:function"), called on random samples: compared against instead of the
    twins (`graphsurgery.reference`).
    """
    check_seed(seed)
    check_flags(upgrade_opset=upgrade_opset)
    check_random(random)
    check_names(precision=precision)
    tolerances = checked_tolerances(tolerances)
    if isinstance(images, (list, tuple)):  # a TypeError from pathlib (run takes a list; verify one folder)
        raise GraphsurgeryError(f"images is a {type(images).__name__} of {len(images)}; verify takes one folder of "
                                "images (--images DIR)", fix="give the folder's path, or random=N for random samples")
    images = input_path(images, "image folder") if images is not None else None
    boxes = input_path(boxes, "boxes file") if boxes is not None else None
    if reference is not None or reference_pipeline is not None:
        if reference is not None and (reference_pipeline is not None or random is not None or seed):  # a seed was
            # taken and ignored (round 89)
            raise GraphsurgeryError("a reference file brings its own inputs and answers", path=reference,
                                    fix="give the reference file alone, without a pipeline, random samples or a seed")
        if images is not None or boxes is not None:
            raise GraphsurgeryError("a reference pipeline is compared on random samples", path=images or boxes,
                                    fix="give no images or boxes with a reference")
        from graphsurgery.reference import verify_reference

        return verify_reference(recipe, plain_model, reference, pipeline=reference_pipeline, random=random, seed=seed,
                                patched=patched, backends=backends, precision=precision, tolerances=tolerances,
                                upgrade_opset=upgrade_opset)
    recipe = as_recipe(recipe)
    plain = load_model(plain_model)
    remember_signature(plain)
    facts = ModelFacts.of(plain.proto, recipe)
    int8 = precision == "int8"
    if int8:  # an int8 IR runs on OpenVINO, computing in whatever its quantizers say
        from graphsurgery import int8_verification

        backends = int8_verification.int8_backends(backend_list(backends), patched, recipe, plain,
                                                   upgrade_opset)
        precision = "f32"
    backends = check_backends(backend_list(backends), precision, patched)
    if images is not None and random is not None:
        raise GraphsurgeryError(
            "give images or a number of random crops, not both",
            fix="give images or random (--images, --random), not both",
        )
    if boxes is not None and images is None:
        raise GraphsurgeryError("boxes need images to cut them from", path=boxes, fix="give images (--images DIR)")
    input_name = plain_input(recipe, plain)  # before the resize's size: which input, in apply's words
    if patched is not None:  # apply refuses such a PLAIN, but with --patched apply does not run
        refuse_patched_plain(recipe, plain, input_name)
        # and an output of another rank than declared (round 100: the patched file's cut at it failed in the
        # runtime, "a graphsurgery bug"); on a copy, as apply settles its own
        settle_output_sizes(plain.copied(), recipe)
    else:  # apply's refusal, before the input steps are bound to the model
        refuse_applied(recipe, plain.proto, str(plain.path))
    check_plain_input(recipe, plain, input_name)
    steps = input_steps(recipe, facts)
    resizes = [step for step in steps if step.frees_caller_size]
    if any(step.output_size() is None for step in resizes):
        raise GraphsurgeryError("the recipe's resize cannot learn the model's size: no input of the plain model is "
                                "the recipe's input.target (or it has several and the recipe names none)",
                                path=plain.path, fix="name the input to patch in input.target (inspect lists them)")
    crops_boxes = crops_in_graph(steps)
    if boxes is not None and resizes and not crops_boxes:
        raise GraphsurgeryError(
            "this recipe resizes whole images in the graph; boxes cut crops at the model's size",
            path=boxes,
            fix="give no boxes (--boxes): verify feeds each image whole, at its own size",
        )
    declared = comparisons(recipe, facts)
    wanted = with_tolerances(declared, tolerances)
    tensor = tensor_facet(recipe)
    others = [name for name in real_inputs(plain.proto) if name != input_name]
    made = str(patched) if patched is not None else f"{plain.path} (patched by {recipe.source})"
    # the scratch folder's models are cut from that one (round 56: a --patched file's were named as apply's output)
    with temporary_folder("verify") as tmp, scratch_named(tmp, made), ExitStack() as opened:
        # quantized here: its own decode is checked on the network outputs it then keeps
        built = int8_verification.keeping_outputs(recipe) if int8 and patched is None else recipe
        patched_path = (
            Path(patched) if patched is not None
            else apply_loaded(built, plain.copied(), Path(tmp) / "patched.onnx", upgrade_opset=upgrade_opset).output
        )
        patched_onnx = read_patched(patched_path)
        # samples.py's refusals name no file (it knows none): they are about the model that takes the samples
        with _naming(made):
            image_input, extras = patched_inputs(patched_path, extra_input_names(recipe), others, recipe)
            batch = image_input.shape[0] if isinstance(image_input.shape[0], int) else 1
            if crops_boxes:  # whole images with person boxes: the graph cuts the crops
                samples = (random_box_samples(random if random is not None else DEFAULT_RANDOM, image_input,
                                              tensor.layout, seed) if images is None
                           else box_image_samples(Path(images), boxes, image_input, tensor,
                                                  _values_per_box(steps, facts)))
            elif images is None:
                samples = random_caller_samples(random, image_input, recipe, facts, steps, extras, batch, seed)
            elif resizes:  # each image whole, at its own size; boxes from the whole image at the model's aspect
                samples = whole_images(Path(images), image_input, tensor, extras, resizes[-1].output_size()[::-1],
                                       resizes)
            else:
                samples = image_samples(Path(images), boxes, image_input, crop_size(image_input, recipe, facts), tensor,
                                        extras)
            other = other_inputs(plain.proto, others, batch, facts.input_shape[0] if facts.input_shape else None,
                                 seed, plain.path)
            batches = sum(1 for _ in chunks(samples, batch))  # a batch the samples do not divide: refused here
        # the ONNX whose declarations say which outputs follow the batch (`companion_rows`): also the one of an int8
        # IR made here (an IR's dims are unnamed: each sample would run alone too, to judge its outputs by their rows)
        declaring = patched_onnx.proto if patched_onnx is not None else None
        if int8 and patched is None:  # after the samples: a missing image or a bad boxes file was refused only after
            # the quantizing (NNCF's progress bars, then the error line)
            patched_path = int8_verification.build_int8(patched_path, seed)
            patched_onnx = None  # an IR
        report = VerifyReport(recipe.source, str(plain.path), str(patched) if patched else "(built from the recipe)",
                              samples.description, len(samples), backends, precision, samples.unit,
                              samples.sizes(tensor.layout))
        patched_proto = None  # an IR's: read by OpenVINO alone
        if patched_onnx is not None:
            patched_proto = patched_onnx.proto
            report.notes += _provenance_notes(patched_proto, recipe)
            report.notes += doubled_notes(recipe.input, plain.proto, input_name)  # applied with --force
            report.notes += [note for step in (recipe.output.steps if recipe.output else ()) for note in
                             step.notes(facts)]
            if "openvino" in backends:
                report.notes += openvino_caveats(patched_proto)
        elif not int8:
            report.notes += _quantized_note(patched_path)
        # not a whole image with its boxes (their rows are not the samples'); an int8 IR too (its own decode of a
        # batch of one read row 0 and PASSed)
        paired = (None if crops_boxes
                  else companion_rows(patched_path, declaring, image_input.name, extras, steps, facts,
                                      backend=backends[0], plain=plain.path, input_name=input_name, other=other,
                                      seed=seed))
        report.notes += [note for note in (samples.note, allowance_note(declared, wanted)) if note]
        if other:
            shown = ", ".join(f"{name!r} {list(value.shape)} {value.dtype}" for name, value in other.items())
            report.notes.append(f"the plain model's other input(s) {shown} got deterministic random values "
                                f"(seed {seed}), the same on both sides")
        report.vs_library = library_report(steps, samples.groups[0][0][0], tensor.layout)
        # the graph's own network input against the twins' (`staged`); where a resize rounds halves, the outputs
        # are then compared from the graph's input
        bounds = input_bounds(recipe, facts, steps, samples, batch)
        exposed = exposed_copy(patched_onnx, next(v for v in plain.proto.graph.input if v.name == input_name),
                               Path(tmp), plain.proto.graph) if bounds and patched_onnx else None
        rounding = rounding_step(steps) is not None
        staged = exposed is not None and rounding
        twin_inputs = [twin for twin, _ in bounds] if bounds and not rounding else None  # computed once, above
        unpatched, decoded, answers, ran, computed, network = {}, {}, {}, {}, {}, {}
        unfollowed: dict[str, str] = {}  # outputs declared to follow the batch that did not, on any backend
        pipelines = 2 * len(backends) + (len(backends) - 1 if staged else 0)
        watch = _first_pipeline_watch(pipelines, samples, batches, plain.path)
        for backend in backends:
            if exposed:  # compared at once: only staged verify keeps the graph's network inputs (as many floats as
                # the samples' network inputs: 590 KB a crop for HRNet)
                graph = graph_inputs(exposed, backend, image_input.name, other, samples, batch)
                network[backend] = input_result(bounds, graph, f"{input_name} (network input)")
                if staged:
                    computed[backend] = graph
            unpatched[backend], decoded[backend] = _run_unpatched(recipe, facts, backend, plain.path, input_name,
                                                                  other, samples, batch,
                                                                  computed[backend] if staged else twin_inputs,
                                                                  watch if backend == backends[0] else None)
            answers[backend], ran[backend] = _run_patched(backend, patched_path,
                                                          precision if backend == "openvino" else "f32",
                                                          image_input.name, other, samples, batch, paired,
                                                          unfollowed)
        cross = {}  # staged: per other backend, the side that is the first's unpatched pipeline fed its input
        for backend in backends[1:] if staged else ():
            cross[backend] = key = f"{backends[0]} fed {backend}'s input"
            unpatched[key], decoded[key] = _run_unpatched(recipe, facts, backends[0], plain.path, input_name, other,
                                                          samples, batch, computed[backend])
        # round 42: the output steps' decisions, which samples rarely reach; on the first batch (one sample, the
        # batch of a dynamic one: a static batch of 2 was fed one, ONNX Runtime refused, an internal error)
        (first, first_extras, _), *other_sizes = _probed_batches(recipe, samples, batch)
        feeds, network_output = _probe_feeds(image_input.name, batch, first, first_extras, decoded[backends[0]][0])
        cuts = opened.enter_context(ProbeCuts(recipe, patched_proto, backends[0], Path(tmp)))
        probe, probe_notes = (None, []) if int8 else run_probe(recipe, facts, cuts, network_output, image_input.name,
                                                               feeds, seed)
        report.notes += probe_notes
        if probe is None and not int8:  # round 52: SimCC's two heads; round 88: where the graph crops boxes too
            # (the first box's heads, as the heatmaps' probe reads; it was left out, and a wrong patch PASSed)
            probe, simcc_notes = run_simcc_probe(recipe, facts, cuts, decoded[backends[0]][0][1], image_input.name,
                                                 feeds)
            report.notes += simcc_notes
        # round 52: maps of flat, tied, cornered and faint peaks, for the heatmap decoders that decide exactly
        exact_heatmaps = probe is not None and _decided_exactly(recipe) and isinstance(read_steps(recipe)[0],
                                                                                        HeatmapArgmax)

        def cells_at(size_feeds: dict[str, np.ndarray], output: np.ndarray) -> list[Probe | None]:
            return [run_probe(recipe, facts, cuts, maps, image_input.name, size_feeds, seed)[0]
                    for maps in (cell_probes(output, image_edge_cells(recipe, facts, size_feeds[image_input.name].shape,
                                                                      output)) if exact_heatmaps else ())]

        cells = cells_at(feeds, network_output)
        sized = []  # the probes at each other size (W × H), where the output steps map back through the image: the
        # cell probes too (round 52: a letterbox's last-column table entry off by one passed `--random 4`, the first
        # size's last column lying in the padding)
        for tensors, extras, index in other_sizes if probe is not None else ():
            other_feeds, other_output = _probe_feeds(image_input.name, batch, tensors, extras,
                                                     decoded[backends[0]][index])
            other = run_probe(recipe, facts, cuts, other_output, image_input.name, other_feeds, seed)[0]
            sized.append((width_height(tensors[0], tensor_facet(recipe).layout), other,
                          cells_at(other_feeds, other_output) if other is not None else []))
        # what nms reads at every anchor, from the network outputs the twins decoded (`nms_reads`)
        cut, unread = (None, None) if int8 else nms_cut(recipe, facts, patched_proto, decoded[backends[0]][0][0],
                                                         Path(tmp))
        report.notes += [unread] if unread else []
        read_by_nms = {backend: graph_reads(cut, backend, [output for output, _ in decoded[backend]])
                       for backend in backends} if cut else {}
        probed = [probe, *(other for _, other, _ in sized if other is not None)] if cut and probe is not None else []
        read_on_probes = graph_reads(cut, backends[0], [one.output for one in probed]) if probed else []
        # where the crops sample the image, for many more boxes than the samples' (`crop_positions`)
        many_boxes = many_person_boxes(MANY_BOXES, seed) if crops_boxes and not int8 else None
        placing, unplaced = (None, None) if many_boxes is None else positions_cut(steps, patched_proto, many_boxes,
                                                                                   Path(tmp))
        report.notes += [unplaced] if unplaced else []
        placed = {backend: graph_positions(placing, backend, many_boxes) for backend in backends} if placing else {}
        # what they compute from the pixels there, before the rounding, for a few of those boxes (round 76)
        blended, blend_twin, unblended = _blended(
            patched_proto, Path(tmp), placing, placed, crop_spec(TensorSpec(
                tensor.dtype, tensor.layout, tensor.color, image_input.shape), steps), steps, many_boxes, seed
        ) if placing else ({}, None, None)
        report.notes += [unblended] if unblended else []
        own_decode = int8_verification.own_decode(recipe, facts, answers["openvino"], samples, batch) if int8 else None
    for backend in backends:  # joined flat (`samples.joined`), where the reference's answers are of one shape
        for name, shapes in ragged(answers[backend]).items():
            if name in unpatched[backend] and unpatched[backend][name].ndim > 1:
                unfollowed.setdefault(name, f"answers of several shapes past the first dim to the calls ({shapes}), "
                                            f"the reference's all {list(unpatched[backend][name].shape[1:])} past it")
    runs = {backend: concat(answers.pop(backend)) for backend in backends}  # the parts go as they are joined
    report.problem = _input_ignored(unpatched[backends[0]], steps) or colours_unproven(samples, tensor.layout)
    raw = {backend: np.concatenate([output for output, _ in parts]) for backend, parts in decoded.items()}
    grids = heatmap_grid(recipe, facts, decoded[backends[0]], wanted)
    if any(c.kind == "coordinates" for c in wanted.values()) and not grids:
        report.notes.append("coordinates could not be mapped to heatmap cells: every mismatch counts as real")
    # the backends' rounding, measured on one model input on each
    first_side = cross.get(backends[1], backends[0]) if len(backends) > 1 else backends[0]
    sides = {backend: first_side if backend == backends[0] else backend for backend in backends}
    wanted, scaled_note = scaled_floor(declared, wanted, tolerances, unpatched[backends[0]])
    report.notes += [scaled_note] if scaled_note else []
    if facts.reads_float16:
        wanted, float16_note = float16_exponentials(wanted, tolerances, raw[backends[0]])
        report.notes += [float16_note] if float16_note else []
    wanted, floor_notes = measured_floor(wanted, tolerances, {b: unpatched[side] for b, side in sides.items()})
    decided = {side: joined_decision_inputs(recipe, facts, parts) for side, parts in decoded.items()}
    # near ties of indices and detections: on the values ranked
    chosen = next((name for name in decided[backends[0]] if not (name in wanted and wanted[name].per_axis)), None)
    tied_on, tied = (f"the scores ranked for {chosen}", {b: ranked(decided[side][chosen]) for b, side in sides.items()}
                     ) if chosen else (facts.output_name, {b: raw[side] for b, side in sides.items()})
    tie = scaled_tie(tie_tolerance(declared, wanted, tolerances, facts.output_name), tied[backends[0]], tolerances,
                     facts.output_name)
    tie_tolerances, vacuous_note = without_vacuous_tie(tolerances, tie, tied[backends[0]], facts.output_name)
    if vacuous_note:
        tie = scaled_tie(tie_tolerance(declared, wanted, tie_tolerances, facts.output_name), tied[backends[0]],
                         tie_tolerances, facts.output_name)
    tie, tie_note = measured_tie(tie, tied, tied_on, tie_tolerances, facts.output_name)
    report.notes += floor_notes + [note for note in (vacuous_note, tie_note) if note]
    if ran.get("openvino", "f32") != precision:
        report.notes.append(f"{precision} was asked for, but this CPU has no {precision} support: OpenVINO ran "
                            f"{ran['openvino']}")

    positions = {name: c.kind for name, c in wanted.items() if c.kind in ("coordinates", "indices")}
    wobbles = Wobbles(recipe, facts, decoded, positions, tie)
    report.pairs = _pairs(backends, ran, unpatched, runs, lambda actual, expected, side, across: fail_unfollowed(
        compare(actual, expected, raw[side], wanted, grids, tie,
                wobbles.of(side, across or _maps_differ(actual, expected, wanted)), decided[side]), unfollowed), cross)
    if int8:
        report.pairs, note = int8_verification.int8_pairs(report.pairs[0], own_decode, runs["openvino"],
                                                           unpatched["openvino"], raw["openvino"], wanted, grids, tie,
                                                           recipe, facts)
        report.notes += [note, "int8 runs on OpenVINO: the verdict is the int8 model's own decode (its keypoints "
                               "from its own network output, exactly); its agreement with f32 is measured, not "
                               "judged (seeded stand-in weights quantize worse than trained ones)"]
    if probe is not None:
        report.probes = [_probe_pair(joined([probe, *(cell for cell in cells if cell is not None)]), recipe, facts,
                                     wanted, tie)]
        report.probes += [_probe_pair(joined([other, *(cell for cell in its_cells if cell is not None)]), recipe,
                                      facts, wanted, tie, size)
                          for size, other, its_cells in sized if other is not None]
    if placing is not None:
        report.crop_positions = _positions_pairs(twin_positions(steps, many_boxes), placed, len(many_boxes))
        report.crop_values = [PairReport(f"{backend}: crops of {BLEND_BOXES} boxes before rounding",
                                         f"crop_boxes' numpy twin on {BLEND_BOXES} of those boxes, on a random image",
                                         f"the patched graph's crops before their rounding on {backend} (cut from the "
                                         "image it crops and its crop positions)", blend_results(crops, blend_twin))
                              for backend, crops in blended.items()]
    if cut is not None:
        report.before_nms = _before_nms_pairs(cut, recipe, facts, read_by_nms, decided, probed, read_on_probes,
                                              nms_read_tolerances(wanted, tolerances, recipe.output.output_names()))
    if exposed:
        report.input_steps, note = _input_pairs(bounds, network, steps)
        report.notes += [note] if note else []
    elif steps:
        report.notes.append(unexposed_note(patched_path, bounds is not None))
    kept_here = () if built is recipe else facts.targets  # for the int8 model's own decode
    unpaired = [name for name in runs[backends[0]] if name not in wanted and name not in kept_here]
    if unpaired:
        report.notes.append(f"patched output(s) {', '.join(map(repr, unpaired))} have no counterpart in the "
                            f"unpatched pipeline: not compared")
    if not report and not staged and (note := _rounded_resize_note(steps)):
        report.notes.append(note)
    if any(pair.reduced_precision and not pair.informational for pair in report.pairs):
        report.notes.append(f"OpenVINO ran the patched model at {ran['openvino']}: differences measure what reduced "
                            f"precision costs in agreement, not a wrong patch")
    if note := precision_note(ran.get("openvino", "f32")):
        report.notes.append(note)
    return report


def read_patched(path: Path) -> LoadedModel | None:
    """The patched ONNX model, read once for the whole verify: its signature, its probes' cuts and its exposed copy
    are taken from this read (each read it again: three reads of 0.3 s for HRNet-W32). None for an IR, which
    OpenVINO alone reads, or a file that is not there (`patched_inputs` says so in verify's words)."""
    if path.suffix.lower() != ".onnx" or not path.exists():
        return None
    loaded = load_model(path)
    remember_signature(loaded)
    return loaded


@contextmanager
def _naming(name: str | Path) -> Iterator[None]:
    """A refusal that names no file names `name` (round 47: four of verify's lines, raised where the samples are made
    and cut, named nothing: batches the samples do not divide into, an extra input verify cannot make, a sample too
    large, no static input size)."""
    try:
        yield
    except GraphsurgeryError as exc:
        if exc.path is not None:
            raise
        raise exc.about(name) from None


def _maps_differ(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                 wanted: dict[str, Comparison]) -> bool:
    """Whether a float output (scores are the maps' maxima) differs at all between the two sides of a pair on one
    backend: the network then ran differently in the two graphs (OpenVINO folds the input steps into the first
    convolution: maps 3e-5 apart on HRNet-tiny), so a refinement reads maps that differ within the float tolerance,
    as across backends (UDP's step moved a keypoint 0.01 cells and a right patch failed on OpenVINO alone)."""
    return any(comparison.kind == "float" and name in actual and name in expected
               and np.shape(actual[name]) == np.shape(expected[name])
               and not np.array_equal(actual[name], expected[name], equal_nan=True)
               for name, comparison in wanted.items())


def _rounded_resize_note(steps: Sequence[InputStep]) -> str | None:
    """A failure's likely cause when the recipe rounds its resize passes (PIL's uint8 passes, `round: true`) and
    verify could not check in two stages (a patched IR): the graph and the twin land a level apart where a pass's
    float32 sum falls within rounding of a half, and through a network a few such pixels move every output a
    little (HRNet-tiny: 3e-3 on its maps)."""
    rounding = rounding_step(steps)
    if rounding is None:
        return None
    return (f"{rounding} rounds each pass (round: true): where a pass's float32 sum falls within rounding of a "
            "half, the graph and the numpy twin round a level apart, and a network spreads a few such pixels over "
            "its outputs; differences of that size are this rounding, not necessarily a wrong patch (without "
            "round the two agree within float tolerance)")


def _pairs(backends: list[str], ran: dict[str, str], unpatched: dict, patched: dict,
           compare: Callable[[dict, dict, str, bool], list[OutputResult]], cross: dict[str, str]) -> list[PairReport]:
    """Unpatched → patched on each backend, then the patched model on the first backend → on each other one.

    `ran` is the precision each backend really computed the patched model in. `compare` gets the reference side
    (near ties are judged on its plain model output) and whether the pair is across backends. `cross` (staged
    verify): per other backend, the side of `unpatched` that is the first backend's pipeline fed that backend's
    own network input, the reference across backends instead of the patched model on the first."""

    def label(backend: str) -> str:
        return backend + (f" at {ran[backend]}" if ran[backend] != "f32" else "")

    def reduced(*sides: str) -> str | None:
        return next((ran[b] for b in sides if ran[b] != "f32"), None)

    pairs = [
        PairReport(
            f"{label(b)}: unpatched → patched",
            f"unpatched pipeline on {b}",
            f"patched model on {label(b)}",
            compare(patched[b], unpatched[b], b, False),
            reduced(b),
        )
        for b in backends
    ]
    first = backends[0]
    pairs += [PairReport(f"patched: {label(first)} → {label(b)}", f"patched model on {label(first)}",
                         f"patched model on {label(b)}", compare(patched[b], patched[first], first, True),
                         reduced(first, b)) if b not in cross else
              PairReport(f"{first} → patched on {label(b)}, one network input",
                         f"unpatched pipeline on {first} fed the network input the graph computes on {b}",
                         f"patched model on {label(b)}", compare(patched[b], unpatched[cross[b]], cross[b], True),
                         reduced(b)) for b in backends[1:]]
    return pairs


def _probed_batches(recipe: Recipe, samples: Samples, batch: int) -> list[tuple[np.ndarray, dict, int]]:
    """(caller input, extras, index among the batches) of each batch the decoder probe runs on: the first; and where
    the output steps map back through the caller's image (`reads_geometry`: boxes_to_image, to_image), the first of
    every other size too. Round 52: the letterbox geometry recorded for boxes_to_image with one constant off was
    wrong for 8 of verify's 9 random sizes, but right for the first, and the detections of random images are too
    few to show it (one in 8 images): it PASSed."""
    found, sizes, every_size = [], set(), reads_geometry(recipe)
    for index, (tensors, extras) in enumerate(chunks(samples, batch)):
        size = tensors.shape[1:]
        if size not in sizes and (not found or every_size):
            sizes.add(size)
            found.append((tensors, extras, index))
    return found


def _probe_feeds(caller: str, batch: int, tensors: np.ndarray, extras: dict, decoded: tuple[np.ndarray, dict]
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The probe's feeds (the caller's input and extra inputs, by name) and network output (`decoded`: the plain
    model's, as `_run_unpatched` gives it for that batch)."""
    feeds = {caller: tensors[:batch], **{name: value[:batch] for name, value in extras.items()}}
    return feeds, decoded[0][:batch]


def _probe_pair(probe: Probe, recipe: Recipe, facts: ModelFacts, wanted: dict[str, Comparison],
                tie: Comparison, size: tuple[int, int] | None = None) -> PairReport:
    """The decoder probe's comparison (`decoder_probe`), of the outputs the cut graph makes; `size`: the caller's
    image (W, H) where the probe is one of those run at each size (`_probed_batches`)."""
    made = {name: comparison for name, comparison in wanted.items() if name in probe.answers}
    at = f" of a {size[0]}×{size[1]} image" if size else ""
    return PairReport(f"{probe.backend}: output steps on a probe output{at}",
                      "the output twins on a probe network output",
                      f"the patched graph's output steps on {probe.backend}",
                      compare(probe.answers, probe.expected, probe.output, made, probe.grids(recipe, facts, wanted),
                              tie, probe.wobbles(recipe, facts, made, tie), probe.decided(recipe, facts),
                              _decided_exactly(recipe)))


def _decided_exactly(recipe: Recipe) -> bool:
    """Whether the output steps decide each keypoint exactly on the map they read (an argmax, comparisons, a quarter
    offset's sign, a scale: `EXACT_ON_INVALID`), so that on the decoder probe, whose map the graph and the twins
    read as one float32 tensor, every keypoint must match: no near ties there (round 52). After a flip_average too
    (`read_steps`: on the probe it halves the map exactly)."""
    steps = read_steps(recipe)
    return bool(steps) and all(isinstance(step, (*EXACT_ON_INVALID, SimccDecode)) for step in steps) and all(
        step.method == "exact" for step in steps if isinstance(step, HeatmapArgmax))  # `argmax`: ties are runtimes'
    # before opset 12


def _before_nms_pairs(cut: NmsCut, recipe: Recipe, facts: ModelFacts, graph: dict[str, list[dict[str, np.ndarray]]],
                      decided: dict[str, dict[str, dict[str, np.ndarray]]], probes: list[Probe],
                      on_probes: list[dict[str, np.ndarray]], given: dict[str, Comparison]) -> list[PairReport]:
    """What the patched graph's nms reads against what the nms twin read from the same network outputs
    (`nms_reads`): on each backend's samples, then on the decoder probes of the first backend, as one (`on_probes`:
    the graph's reads on each of `probes`); at the caller's tolerances where `given` (`nms_read_tolerances`)."""
    def twins(reads: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return next(found for found in reads.values() if "candidates" in found)

    pairs = [PairReport(f"{backend}: output steps before nms", "the output twins on the plain model's output",
                        f"the patched graph's output steps before nms on {backend}, fed that output",
                        reads_results(cut, answers, twins(decided[backend]), given))
             for backend, answers in graph.items()]
    if probes:
        decoded = [twins(probe.decided(recipe, facts)) for probe in probes]
        pairs.append(PairReport(f"{probes[0].backend}: output steps before nms on the probe outputs",
                                "the output twins on the probe network outputs",
                                f"the patched graph's output steps before nms on {probes[0].backend}",
                                reads_results(cut, on_probes, concat(decoded), given)))
    return pairs


def _blended(proto: onnx.ModelProto, folder: Path, placing: PositionsCut, placed: dict[str, dict[str, np.ndarray]],
             spec: TensorSpec, steps: Sequence[InputStep], boxes: np.ndarray, seed: int
             ) -> tuple[dict[str, np.ndarray], np.ndarray | None, str | None]:
    """The crops before their rounding for a few of the positions' `boxes` (`crop_positions.blend_cut`; `spec`: the
    tensor crop_boxes cuts from): per backend of `placed` (where each backend's graph placed them; the first's are
    those the cut is made with) the graph's, the crop twin's, and None; or nothing, and the note for a graph that
    cannot be cut there."""
    blending = blend_cut(proto, folder / "crop_blend.onnx", placing, next(iter(placed.values())), spec, seed)
    if isinstance(blending, str):
        return {}, None, (f"the crops before their rounding were not compared with the twin's ({blending}): only "
                          "the samples' rounded crops were")
    return ({backend: graph_blended(blending, backend, positions) for backend, positions in placed.items()},
            twin_blended(steps, spec, blending, boxes), None)


def _positions_pairs(twin: dict[str, np.ndarray], placed: dict[str, dict[str, np.ndarray]], boxes: int
                     ) -> list[PairReport]:
    """Where each backend's patched graph samples the crops of `boxes` random boxes against the crop twin
    (`crop_positions`)."""
    return [PairReport(f"{backend}: crop positions of {boxes:,} boxes",
                       f"crop_boxes' numpy twin on {boxes:,} random person boxes",
                       f"where the patched graph's crops sample on {backend} (cut from its boxes input)",
                       positions_results(positions, twin)) for backend, positions in placed.items()]


def _input_pairs(bounds: Bounds, network: dict[str, FloatResult], steps: Sequence[InputStep]
                 ) -> tuple[list[PairReport], str | None]:
    """The network input each graph computes against the input twins' on each backend (`staged`), and where a step
    rounds halves, the note that says why the outputs were compared from the graph's own input."""
    rounding = rounding_step(steps)
    twins = "the input steps' numpy twins" + (" (a half rounded either way)" if rounding else "")
    pairs = [PairReport(f"{backend}: input steps", twins, f"the network input the patched graph computes on {backend}",
                        [result]) for backend, result in network.items()]
    if rounding is None:
        return pairs, None
    ambiguous = sum(int(np.count_nonzero(lo != hi)) for lo, hi in bounds)
    total = sum(lo.size for lo, _ in bounds)
    return pairs, (f"{rounding} rounds its passes, and the graph (float32) may round a sum within "
                   f"rounding of a half to the other integer than the twin (float64): {ambiguous} of {total} "
                   "network input values lie where either is right. So verify checked the network input each "
                   "graph computes against the input steps' twins (either integer allowed there), and the outputs "
                   "against the plain model fed that same input")


def _run_unpatched(recipe: Recipe, facts: ModelFacts, backend: str, plain: Path, input_name: str,
                   other: dict[str, np.ndarray], samples: Samples, batch: int,
                   model_inputs: Sequence[np.ndarray] | None = None,
                   watch: Callable[[int, int, int], None] | None = None
                   ) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, dict[str, np.ndarray]]]]:
    """The reference answers, and per batch the plain model's output as the decoding steps read it (what near ties
    are judged on) with the extra inputs the output twins got (`output_extras`). `other`: the plain model's other
    inputs; `model_inputs`: per batch, the network input to feed instead of the input twins' (staged verify);
    `watch`: called after each batch with the batches and samples done and the bytes held for them
    (`_first_pipeline_watch`)."""
    outputs, decoded, done = [], [], 0
    given = iter(model_inputs) if model_inputs is not None else None
    with open_runner(backend, plain) as run:
        for x, extras in chunks(samples, batch):
            model_input = next(given) if given is not None else preprocess(recipe, x, facts, extras)
            model_outputs = run_in_model_batches(run, input_name, model_input, other, facts)
            decoded.append((decoded_output(recipe, model_outputs[facts.output_name], facts, extras),
                            output_extras(recipe, facts, extras, x.shape, model_outputs)))
            outputs.append(unpatched_outputs(recipe, facts, model_outputs, extras, x.shape))
            done += len(x)
            if watch:
                arrays = [*outputs[-1].values(), decoded[-1][0], *decoded[-1][1].values()]
                held = sum({id(a): a.nbytes for a in arrays if isinstance(a, np.ndarray)}.values())
                watch(len(outputs), done, held)
    return concat(outputs), decoded


def _input_ignored(reference: dict[str, np.ndarray], steps: Sequence[InputStep]) -> str | None:
    """Why agreement proves nothing about the input steps: the unpatched pipeline gave every sample the same answers
    (a model of constants, or one saturated for every input), so a wrong std or colour order gave them too and
    PASSed (round 36)."""
    arrays = [np.asarray(values) for values in reference.values()]
    if not steps or not arrays or any(len(values) < 2 for values in arrays):
        return None
    if not all(np.array_equal(values, np.broadcast_to(values[:1], values.shape), equal_nan=values.dtype.kind in "fc")
               for values in arrays):
        return None
    return (f"the unpatched pipeline gave all {len(arrays[0])} samples the same answers: the model's outputs do not "
            "depend on its input here, so agreement proves nothing about the input steps; verify with varied images "
            "(--images), or check the model")


def colours_unproven(samples: Samples, layout: str,
                     fix: str = "verify with colour images too, or without --images (random crops)") -> str | None:
    """Why agreement proves nothing about the colour order: every image fed is grey, which a patched model that
    swaps its channels (or leaves out the swap) turns into the same answers (round 83: a model patched for RGB
    callers PASSed the BGR recipe's verify on a grey photo; round 84: against a recording of grey crops)."""
    if not samples.grey(layout):
        return None
    return (f"all {len(samples)} {samples.unit} fed are grey (their three colour channels are equal), so agreement "
            f"proves nothing about the order of the colour channels; {fix}")


def _first_pipeline_watch(pipelines: int, samples: Samples, batches: int, plain: Path
                          ) -> Callable[[int, int, int], None]:
    """Watches the first pipeline, batch by batch.

    Time: its first seconds (`longrun.FirstPart`); when all `pipelines` will take over a minute, says how long in one
    line on stderr, as run, bench and eval-coco do (round 32: a model of ~2 s a call, each call under the time
    limit, ran 20 random samples through 4 pipelines for minutes without a word; HRNet-W32 on 300 images took over
    a minute on 2 cores).

    Memory: the outputs of its first batch, extrapolated to every sample and pipeline (`HELD_PER_PIPELINE`); past
    half of the memory this process may use (`machine.usable_memory`) the count is refused at once. The samples' own
    cap counts inputs only: a model of 21 × 512 × 512 outputs took 24 GB at 85 random samples, and the system killed
    it after 77 s."""
    first_part = FirstPart(pipelines * batches)

    def watch(batches_done: int, samples_done: int, held: int) -> None:
        if batches_done == 1:  # the other pipelines and the comparisons are still to come
            refuse_unless_outputs_fit(held / samples_done, len(samples), samples.unit, pipelines, plain, samples_done,
                                      "give at most {most:,} samples (--random {most}, or fewer --images)")
        if seconds := first_part.tick(batches_done):
            say_long_run(seconds, f"{pipelines} pipelines × {len(samples):,} {samples.unit} to run",
                         f"{seconds / pipelines / len(samples) * 1000:,.0f} ms per sample and pipeline, measured on "
                         "the first", "fewer --images or --random samples, or fewer --backends")
    return watch


def _values_per_box(steps: Sequence[InputStep], facts: ModelFacts) -> int | None:
    """The network-input values the graph cuts for one person box: a crop of the model's size, twice with the flip
    test (None where the model's size is not static)."""
    if facts.input_size is None:
        return None
    width, height = facts.input_size
    return 3 * width * height * (2 if any(step.step_name == "flip_test" for step in steps) else 1)


def refuse_unless_outputs_fit(per_sample: float, count: int, unit: str, pipelines: int, path: str | Path, batch: int,
                              fewer: str) -> None:
    """Refuse `count` samples of `per_sample` bytes of outputs when `pipelines` pipelines holding them and the
    comparisons (`HELD_PER_PIPELINE`) would take more than half of the memory this process may use
    (`machine.usable_memory`; unknown: not refused). `fewer`: the fix, formatted with `most`, the count that fits in
    whole batches of `batch`."""
    budget = usable_memory() // 2
    held = per_sample * HELD_PER_PIPELINE * pipelines
    if not budget or held * count <= budget:
        return
    most = int(budget // held) // batch * batch
    raise GraphsurgeryError(
        f"{count:,} {unit}: the model's outputs for them, held by {pipelines} pipelines and compared, would take "
        f"about {byte_size(int(held * count))} ({per_sample / 2**20:,.1f} MiB of outputs a sample), more than half "
        f"of the {byte_size(2 * budget)} of memory this process may use", path=path,
        fix=f"{fewer.format(most=most)}, or fewer --backends" if most else
        f"export the model with a dynamic batch, or one under its {batch:,}, or give fewer --backends")


def companion_rows(patched: Path, patched_proto: onnx.ModelProto | None, image_name: str, extras: Sequence[str],
                   steps: Sequence[InputStep], facts: ModelFacts, *, backend: str, plain: Path, input_name: str,
                   other: dict[str, np.ndarray], seed: int) -> BatchRows | None:
    """How the patched model's outputs follow its batch, where the samples go among companions (`batched`), the
    extras of a row per sample (`center`, `scale`) with companions of their own; None: a sample (or a static
    batch) a call. The `plain` model runs on `backend` (its `input_name` random, its `other` inputs given) where
    some output is not declared under the batch's name (`batched.apart_in_plain`)."""
    paired = (batch_rows(patched_proto, image_name, extras) if patched_proto is not None
              else ir_batch_rows(model_signature(patched), image_name, extras))
    if paired is not None and any(step.step_name == "flip_test" for step in steps):
        paired = replace(paired, mirrored=True)
    if paired is not None and {port.name for port in model_signature(patched).outputs} - paired.declared:
        image = next(port for port in model_signature(plain).inputs if port.name == input_name)
        with open_runner(backend, plain) as run:
            apart = apart_in_plain(run, image, other, paired.with_rows, seed)
        # where the output the steps read keeps no sample's rows among others (a model answering row 0's maps to any
        # batch), neither do the outputs made from it: a sample a call, as the unpatched pipeline
        paired = None if apart and facts.output_name in apart else replace(paired, apart=apart)
    return paired


def _run_patched(backend: str, patched: Path, precision: str, input_name: str, other: dict[str, np.ndarray],
                 samples: Samples, batch: int, per_batch: BatchRows | None,
                 unfollowed: dict[str, str]) -> tuple[list[dict[str, np.ndarray]], str]:
    """The patched model's answers, batch after batch (`chunks`), and the precision the backend really computed
    in. `per_batch`: where the batch is dynamic, how the outputs follow it, up to `TOGETHER` samples then fed among
    companions (`batched.among_companions`: those declared to follow that did not are named in `unfollowed`), the
    other inputs of a row per sample given the row they have for one (`other_inputs`) for each; None: each batch
    alone."""
    outputs = []
    with open_runner(backend, patched, precision=precision) as run:
        for x, extras in chunks(samples, batch) if per_batch is None else runs_of(samples, TOGETHER):
            feeds = {input_name: x, **other, **extras}
            if per_batch is None:
                outputs.append(run(feeds))
                continue
            # other inputs of fixed dims are fed whole (`batch_rows`); the extras are all of a row per sample there
            feeds.update({name: np.repeat(value, len(x), axis=0) for name, value in other.items()
                          if name in per_batch.with_rows})
            outputs.append(among_companions(run, feeds, input_name, per_batch, unfollowed))
    return outputs, run.precision


# --- comparing -----------------------------------------------------------------------------------------------


def compare(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], raw: np.ndarray,
            wanted: dict[str, Comparison], grids: dict[str, HeatmapGrid], tie: Comparison,
            wobbles: dict[str, Callable[[], np.ndarray | None]] | None = None,
            decided: dict[str, dict[str, np.ndarray]] | None = None, exact: bool = False) -> list[OutputResult]:
    """Each output the recipe declares, by its kind. Near ties are judged on `raw` (the reference side's model
    output as the decoding steps read it), those of indices, detections and coordinates chosen per axis (SimCC) on
    what their step read there (`decided`, by output name: `twins.decision_inputs`); `exact`: positions decided
    exactly on `raw` itself
    (`compare_output`: the decoder probe of exact steps)."""
    decided = decided or {}
    results = []
    # detector outputs (one nms per recipe) are compared together, as sets, where the first of them is listed
    detections = {comparison.part: name for name, comparison in wanted.items() if comparison.kind == "detections"}
    for name, comparison in wanted.items():
        if name not in actual:
            results.append(missing_output(name, comparison, "the patched model has no such output"))
            continue
        if comparison.kind == "detections":
            if name == next(iter(detections.values())):
                present = {part: other for part, other in detections.items() if other in actual}
                reads = decided.get(name)
                group = group_comparison({part: wanted[other] for part, other in detections.items()})
                results.append(compare_detections(present, actual, expected, group, tie, reads and Candidates(
                    reads["candidates"], reads["class_scores"], reads[PLACED])))
            continue
        reference = raw if comparison.kind == "indices" or name in grids else None
        if comparison.kind == "indices" and name in decided:  # the values ranked, on the reference side
            reference = ranked(decided[name])
        elif comparison.kind == "indices" and comparison.ranks in expected:  # your pipeline's (verify_reference)
            reference = expected[comparison.ranks]
        elif comparison.per_axis and name in decided and name in grids:  # the bins of SimCC's two vectors
            reference = AxisVectors(*(decided[name][vector] for vector in comparison.per_axis))
        results.append(compare_output(name, actual[name], expected[name], comparison, reference=reference,
                                      grid=grids.get(name), tie=tie, wobble=(wobbles or {}).get(name), exact=exact))
    return results


def library_report(steps: Sequence[InputStep], sample: np.ndarray, layout: str) -> list[dict]:
    """Informational, not part of the verdict: how far each step is from the library call a user's pipeline would
    make (resize: `cv2.resize` with the closest settings), on one caller sample (no batch), in the caller's units
    (0–255 for uint8), so a user knows what changed against an OpenCV pipeline."""
    image = np.transpose(sample, (1, 2, 0)) if layout == "NCHW" else sample
    image = np.ascontiguousarray(image.astype(np.float32) if image.dtype == np.float16 else image)  # no float16 in cv2
    width, height = width_height(sample, layout)
    entries = []
    for index, step in enumerate(steps):
        compared = step.against_library(image)
        if compared is not None:
            entries.append(
                {
                    "step": f"input.steps[{index}].{step.step_name}",
                    "image": {"width": width, "height": height},
                    **compared,
                }
            )
    return entries


def _quantized_note(patched: Path) -> list[str]:
    """Why a patched int8 IR FAILs at f32: its answers differ from the f32 pipeline's by what quantization costs
    (round 90: "3 of 3 comparisons differ", and nothing said the IR was int8 or that `--precision int8` judges it)."""
    from graphsurgery.quantize import is_int8

    if not is_int8(patched):
        return []
    return [f"{printable(patched)} is an int8 IR (`convert --int8`): against the f32 pipeline it differs by what "
            "quantization costs, not only by the patch; verify it with --precision int8, which judges its own decode"]


def _provenance_notes(patched: onnx.ModelProto, recipe: Recipe) -> list[str]:
    entries = provenance(patched)
    if entries and not recipe.made(entries[-1]):
        last = entries[-1]
        return [
            f"the patched model was made with recipe {last.get('recipe')!r} "
            f"(sha256 {str(last.get('recipe_sha256'))[:12]}…), not with this recipe"
        ]
    return []
