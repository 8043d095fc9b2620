"""Verify against the user's own pipeline, recorded: what they feed it and what it answers, in one .npz file.

`verify` on its own proves the patched model equals the recipe's numpy twins. A user migrating from a package
needs more: proof that it equals *their current code*, which the recipe may not match (a side rounded where the
recipe floors, a colour order). They record, once, the caller-side inputs under the patched model's input names
and their pipeline's answers under its output names:

    np.savez("reference.npz", input=crops_uint8_nhwc, keypoints=my_keypoints, scores=my_scores)

and `verify RECIPE PLAIN --reference reference.npz` runs the patched model on those inputs, on every backend, and
compares each recorded output by the recipe's comparison for it (floats within tolerance, keypoints and class
indices exactly).
"""

from __future__ import annotations

import lzma
import math
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

import numpy as np
import onnx

from graphsurgery.api import apply_loaded
from graphsurgery.batched import TOGETHER, BatchRows, among_companions, fail_unfollowed
from graphsurgery.callables import call_user, import_callable
from graphsurgery.compare import PositionResult
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.heatmap_grid import heatmap_grid
from graphsurgery.model import ModelFacts, declared_shape, real_inputs
from graphsurgery.modelio import load_model
from graphsurgery.recipe import Recipe, as_recipe
from graphsurgery.runners import backend_list, check_backends, model_signature, open_runner
from graphsurgery.safeio import input_path, open_regular, scratch_named, temporary_folder
from graphsurgery.samples import Samples, patched_inputs, plain_input, random_caller_samples, tensor_facet
from graphsurgery.stability import Wobbles
from graphsurgery.tolerances import Tolerances, tie_tolerance, with_tolerances
from graphsurgery.twins import (
    comparisons,
    concat,
    crops_in_graph,
    decoded_output,
    extra_input_names,
    input_steps,
    joined_decision_inputs,
    other_inputs,
    output_extras,
    postprocess,
)
from graphsurgery.verification import (
    PairReport,
    VerifyReport,
    colours_unproven,
    companion_rows,
    compare,
    read_patched,
    refuse_unless_outputs_fit,
)

#: Arrays in a reference file at most (a recording is a few batches, not a data set)
MAX_REFERENCE_BYTES = 2**31


def load_reference(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz reference file, by name; pickled objects are refused (a .npz can carry code)."""
    path = input_path(path, "reference file")
    if path.exists() and not path.is_file():  # a folder or a FIFO is there, but it is no file to read
        raise GraphsurgeryError("is not a regular file (a folder, a FIFO or a device)", path=path,
                                fix="give the .npz file itself")
    if not path.is_file():
        raise GraphsurgeryError("no such reference file", path=path, fix="record one with numpy.savez (see docs)")
    try:
        # one open file for every read below, judged a regular file as it is opened (round 63: each read opened the
        # path again, and a FIFO put there after the checks above blocked verify for ever in zipfile's open())
        with open_regular(path, "a reference file") as stream:
            if not zipfile.is_zipfile(stream):  # np.load would return a bare array from a .npy
                raise ValueError("not a zip archive")
            stream.seek(0)  # np.load judges by the first bytes, zipfile by the last: a .npy followed by a zip's index
            if stream.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # (a damaged .npz) was read as that .npy,
                raise ValueError("not a zip archive")  # then an internal error (round 48)
            stream.seek(0)
            with np.load(stream, allow_pickle=False) as data:
                _check_headers(data, path)
                arrays = {name: data[name] for name in data.files}
    except (RuntimeError, NotImplementedError) as exc:  # round 48: each was an internal error
        if isinstance(exc, RecursionError):
            raise
        raise GraphsurgeryError("its arrays are encrypted or compressed by a method Python's zipfile cannot read",
                                path=path, fix="write it with numpy.savez or numpy.savez_compressed") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, SyntaxError, tokenize.TokenError,
            lzma.LZMAError, zlib.error) as exc:  # EOFError: an empty file; SyntaxError and TokenError: a header that
        # is no Python literal; LZMAError, zlib.error: compressed data damaged (an internal error, round 48)
        raise GraphsurgeryError(f"not a readable .npz of numeric arrays ({type(exc).__name__})", path=path,
                                fix="write it with numpy.savez(path, name=array, ...), without object arrays"
                                ) from None
    if not arrays:
        raise GraphsurgeryError("the reference file holds no arrays", path=path, fix="record inputs and outputs")
    return arrays


def _check_headers(data, path: Path) -> None:
    """Refuse from the .npy headers alone, before any array is allocated: a shape whose size the zip entry does not
    back (numpy allocates the declared size first: 10^10 floats in a 200-byte file ran out of memory), more than
    2 GiB in all, and arrays that are no numbers on a sample axis (0-d, complex, strings, records, objects)."""
    total = 0
    for name in data.files:
        with data.zip.open(f"{name}.npy") as stream:
            version = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(stream, max_header_size=10_000)
        if dtype.hasobject:  # pickles: refused as np.load(allow_pickle=False) refuses them, never loaded
            raise ValueError("object arrays")
        size = math.prod(shape) * dtype.itemsize
        if dtype.kind not in "biuf" or not shape:
            raise GraphsurgeryError(f"the reference's {name!r} is {dtype}{list(shape)}, not an array of numbers with "
                                    "one row per sample", path=path, fix="record real numbers (bool, int, float), "
                                    "one row per sample")
        if size > data.zip.getinfo(f"{name}.npy").file_size:
            raise GraphsurgeryError(f"the reference's {name!r} declares {list(shape)} but holds less data",
                                    path=path, fix="the file is truncated or damaged: record it again")
        total += size
    if total > MAX_REFERENCE_BYTES:
        raise GraphsurgeryError("the reference holds more than 2 GiB of arrays", path=path,
                                fix="record a few batches, not a data set")


def verify_reference(recipe: str | Path | Recipe, plain_model: str | Path, reference: str | Path | None = None, *,
                     pipeline: str | Callable | None = None, random: int | None = None, seed: int = 0,
                     patched: str | Path | None = None, backends: Iterable[str] = ("onnxruntime", "openvino"),
                     precision: str = "f32", tolerances: Tolerances | None = None,
                     upgrade_opset: bool = False) -> VerifyReport:
    """The patched model (built from `recipe` when `patched` is None) against the user's own pipeline: recorded in
    the .npz file `reference`, or called live — `pipeline`, a function or "module:function", gets a dict of caller
    inputs by the patched model's input names (`random` random samples, as verify makes them) and returns its
    answers by the patched model's output names."""
    recipe = as_recipe(recipe)
    plain = load_model(plain_model)
    facts = ModelFacts.of(plain.proto, recipe)
    backends = check_backends(backend_list(backends), precision, patched)
    declared = comparisons(recipe, facts)
    wanted = with_tolerances(declared, tolerances or {})
    with temporary_folder("reference") as tmp, scratch_named(tmp, f"{plain.path} (patched by {recipe.source})"):
        patched_path = (Path(patched) if patched is not None
                        else apply_loaded(recipe, plain.copied(), Path(tmp) / "patched.onnx",
                                          upgrade_opset=upgrade_opset).output)
        if pipeline is None:
            source, described = reference, f"samples recorded in {reference}"
            groups = [_recorded(load_reference(reference), model_signature(patched_path).inputs, reference)]
            unfed = None
        else:
            function = (import_callable(pipeline, "the reference pipeline (--reference-pipeline)",
                                        "mypackage.pose:predict") if isinstance(pipeline, str) else pipeline)
            # by its type where it has no name: str() of the caller's object is its code, and may raise
            source = getattr(function, "__qualname__", None) or type(function).__qualname__
            described = f"random samples (seed {seed}) through {source}()"
            groups, unfed = _live(function, recipe, facts, plain, patched_path, random, seed)
        expected = concat([answers for _, answers in groups])
        compared = [name for name in expected if name in wanted]
        model_outputs = [name for name in facts.targets if name in expected and name not in compared]
        if not compared and len(model_outputs) < len(facts.targets):
            _refuse_nothing_compared(expected, wanted, reference)
        image = model_signature(patched_path).inputs[0]
        paired = _companion_rows(recipe, facts, plain, patched_path, image.name, backends[0], seed)
        count = len(expected[(compared + model_outputs)[0]])  # the samples compared (boxes, where the graph
        # crops them): the file's first array, set aside, said "8 samples" of 4 (round 91)
        batch = image.shape[0] if isinstance(image.shape[0], int) else 1
        refuse_unless_outputs_fit(sum(expected[name].nbytes for name in compared + model_outputs) / max(count, 1),
                                  count, "samples", 1 + len(backends), reference if pipeline is None else plain.path,
                                  batch, "record at most {most:,} samples" if pipeline is None else
                                  "give at most {most:,} samples (--random {most})")
        runs, ran = {}, {}
        unfollowed: dict[str, str] = {}  # outputs declared to follow the batch that did not (`batched`)
        for backend in backends:
            parts = [_run(backend, patched_path, precision if backend == "openvino" else "f32", feeds,
                          image.shape[0] if isinstance(image.shape[0], int) else None, source,
                          (image.name, paired, unfollowed)) for feeds, _ in groups]
            runs[backend] = concat([out for out, _ in parts])
            ran[backend] = parts[0][1]
    _check_counts(expected, runs[backends[0]], [name for name in compared if name not in unfollowed],
                  reference if pipeline is None else None, source)
    report = VerifyReport(recipe.source, str(plain.path), str(patched) if patched else "(built from the recipe)",
                          f"{count} {described}", count, backends, precision, "samples",
                          compared_with=f"your pipeline ({source})", notes=[unfed] if unfed else [])
    report.problem = colours_unproven(Samples([(feeds[image.name], {}) for feeds, _ in groups], described, "samples"),
                                      tensor_facet(recipe).layout, "record colour images too")
    label = {b: b + (f" at {ran[b]}" if ran[b] != "f32" else "") for b in backends}

    judged = {name: wanted[name] for name in compared}
    maps, made = _recorded_maps(recipe, facts, groups, image.name, runs[backends[0]], plain.proto,
                                [name for name, c in wanted.items() if c.kind in ("coordinates", "indices")])
    twinned = _twins_of_recorded(recipe, facts, made, [name for name in wanted if name not in expected])
    if not compared and not twinned:  # the model outputs alone, which do not fit the model or cannot be decoded
        _refuse_nothing_compared(expected, wanted, reference)
    expected.update(twinned)
    judged.update({name: wanted[name] for name in twinned})
    tie = tie_tolerance(declared, wanted, tolerances or {}, facts.output_name)
    positions = {name: c.kind for name, c in judged.items() if c.kind in ("coordinates", "indices")}
    if maps:  # near ties, cells and rounding judged on the maps the user's pipeline decoded, as verify judges them
        raw = np.concatenate([values for values, _ in maps])
        grids = heatmap_grid(recipe, facts, maps, judged)
        wobbles = Wobbles(recipe, facts, {"reference": maps}, positions, tie).of("reference", True)
        # SimCC's two vectors as the twins read them (indices keep the values your pipeline ranked: `compare`)
        decided = {name: reads for name, reads in joined_decision_inputs(recipe, facts, maps).items()
                   if name in judged and judged[name].per_axis}
    else:
        raw, grids, wobbles, decided = None, {}, {}, {}

    def results(actual: dict, against: dict) -> list:
        return fail_unfollowed(_unprobed(compare(actual, against, raw, judged, grids, tie, wobbles, decided)),
                               unfollowed)

    report.pairs = [PairReport(f"{label[b]}: your pipeline → patched", f"your pipeline ({source})",
                               f"patched model on {label[b]}", results(runs[b], expected),
                               ran[b] if ran[b] != "f32" else None) for b in backends]
    first = backends[0]
    report.pairs += [PairReport(f"patched: {label[first]} → {label[b]}", f"patched model on {label[first]}",
                                f"patched model on {label[b]}", results(runs[b], runs[first]),
                                next((ran[s] for s in (first, b) if ran[s] != "f32"), None)) for b in backends[1:]]
    ignored = [name for name in expected if name not in wanted and not (maps and name in facts.targets)]
    if ignored:
        report.notes.append(f"reference array(s) {', '.join(map(repr, ignored))} are not outputs of the patched "
                            f"model: not compared")
    if twinned:
        report.notes.append(f"the patched model's output(s) {', '.join(map(repr, twinned))} are not in the reference: "
                            f"compared with the recipe's output steps (numpy twins) on your pipeline's recorded "
                            f"{facts.output_name!r} — record them too to have your pipeline's own checked")
    unrecorded = [name for name in wanted if name not in expected]
    if unrecorded:  # round 44: a PASS said the patched model agrees, of outputs it never compared
        report.notes.append(f"the patched model's output(s) {', '.join(map(repr, unrecorded))} are not in the "
                            f"reference: not compared — record them too to have them checked")
    if positions and maps:
        report.notes.append(f"keypoint and index mismatches judged on the reference's own {facts.output_name!r} (near "
                            "ties, rounding), as verify judges them on the plain model's")
    elif positions:
        lacks = (f"not both of {' and '.join(map(repr, facts.targets))} (the model outputs" if len(facts.targets) > 1
                 else f"no {facts.output_name!r} (the model output")
        report.notes.append(f"the reference holds {lacks} the decoding reads, in the model's shape, a row per "
                            "sample): every keypoint or index mismatch counts as real; record it too to have near "
                            "ties judged")
    return report


Group = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (caller inputs, the pipeline's answers)


def _refuse_nothing_compared(expected: dict[str, np.ndarray], wanted: dict, reference: str | Path | None
                             ) -> NoReturn:
    """A reference of which nothing can be compared: none of its arrays is an output of the patched model, nor
    are they the model outputs the output steps read (decoded by their twins, `_twins_of_recorded`)."""
    raise GraphsurgeryError(f"none of the reference's arrays ({', '.join(expected) or 'none'}) is an output of the "
                            f"patched model ({', '.join(wanted)}) or a model output its steps decode, in the model's "
                            "shape", path=reference, fix="name your pipeline's answers as the patched model's outputs")


def _unprobed(results: list) -> list:
    """`results` with positions that none matched, every one excused as a near tie, failed as proving nothing: verify
    checks the answers of maps that decide nothing (NaN, ±inf, a peak on or below 0) on its decoder probe, and here
    there is none. Round 91: a recording of heads of zeros (or NaN) beside its keypoints and scores PASSed a patch
    whose every keypoint was 5 px off, each mismatch "on the score ≤ 0 threshold" of the recorded heads."""
    for result in results:
        if isinstance(result, PositionResult) and result.problem is None and result.near_ties and not (
                result.matches or result.mismatches):
            result.problem = (f"no {'index' if result.kind == 'indices' else 'keypoint'} of the {result.positions} "
                              f"matched: all are near ties ({result.near_ties}) or unstable ({result.unstable}) on "
                              "the model outputs the reference records, so agreement proves nothing; record the "
                              "model outputs your pipeline decoded, or verify with inputs whose answers are clear")
    return results


def _check_counts(expected: dict[str, np.ndarray], answered: dict[str, np.ndarray], compared: list[str],
                  reference: str | Path | None, source) -> None:
    """Each compared answer holds as many samples (rows) as the patched model makes of the same inputs: a
    recording of 5 inputs and 3 answers failed every output as "shape differs" (exit 1), a wrong recording, not a
    wrong patch."""
    for name in compared:
        got, made = np.shape(expected[name])[:1], np.shape(answered[name])[:1]
        if got != made:
            held, want = (got or (0,))[0], (made or (0,))[0]
            if reference is not None:
                raise GraphsurgeryError(f"the reference's {name!r} holds {held} samples; its recorded inputs make "
                                        f"{want}", path=reference, fix="record your pipeline's answers to the very "
                                                                       "inputs recorded: one row per sample")
            raise GraphsurgeryError(f"the reference pipeline ({source}) answered {held} samples of {name!r} for "
                                    f"inputs that make {want}", fix="return one answer (row) per sample it is fed")


def _recorded_maps(recipe: Recipe, facts: ModelFacts, groups: list[Group], image_name: str,
                   patched: dict[str, np.ndarray], plain: onnx.ModelProto, positions: list[str]
                   ) -> tuple[list[tuple[np.ndarray, dict[str, np.ndarray]]] | None, dict[str, np.ndarray] | None]:
    """Per group, the model output the decoding steps read, as the user's pipeline recorded it, with the extra
    inputs the output twins get (SimCC's second head among them), and what the output twins make of them, joined;
    (None, None) where the recording lacks one, or holds it
    in another shape than the patched model gives (the recipe keeps it, keep_original) or the plain model declares
    (each dim after the first it declares as a number), or decoded (`decoded_output`) in another count of rows than
    the patched model's `positions` outputs hold. A recipe that does not keep the model output (SimCC's, DARK's) had
    its recorded heads set aside as "not compared", and a right float16 SimCC patch FAILed on OpenVINO where they
    tie exactly at two far bins."""
    name = facts.output_name
    if name is None or not all(target in answers for _, answers in groups for target in facts.targets):
        return None, None
    for target in facts.targets:
        shapes = [np.shape(answers[target]) for _, answers in groups]
        if any(0 in shape for shape in shapes):  # no joint, no bin: nothing recorded
            return None, None
        if any(shape[1:] != shapes[0][1:] for shape in shapes) or [shape[:1] for shape in shapes] != [
                np.shape(answers[facts.targets[0]])[:1] for _, answers in groups]:  # SimCC's heads: as many rows
            # each (round 91: a y head of half the rows was reshaped to vectors of twice the bins, a right patch FAILed)
            return None, None
        shape = (sum(shape[0] for shape in shapes), *shapes[0][1:])
        fits = shape == patched[target].shape if target in patched else _fits_declared(shape, plain, target)
        if not fits:
            return None, None
    maps = []
    for feeds, answers in groups:
        extras = {key: value for key, value in feeds.items() if key != image_name}
        try:
            decoded = decoded_output(recipe, np.asarray(answers[name], np.float32), facts, extras)
        except GraphsurgeryError:  # a flip test's odd count of rows (flip_average's twin refuses it): not the model's
            return None, None
        maps.append((decoded, output_extras(recipe, facts, extras, feeds[image_name].shape,
                                            {target: np.asarray(answers[target], np.float32)
                                             for target in facts.targets})))
    try:  # what the twins make of them: each position output in the patched model's shape (round 91: heads of 5
        # joints beside 17 keypoints, of a model declaring them [N, K, L], were an internal error)
        made = concat([postprocess(recipe, decoded, facts, extras, decoded=True) for decoded, extras in maps])
    except GraphsurgeryError:  # heads of other lengths than the recipe's split_ratio makes: not the model's
        return None, None
    if any(made[output].shape != np.shape(patched[output]) for output in positions if output in patched and output
           in made):
        return None, None
    return maps, made


def _fits_declared(shape: tuple[int, ...], plain: onnx.ModelProto, target: str) -> bool:
    """Whether the plain model declares `target` of `shape`'s rank, each dim after the first it gives as a number
    equal to `shape`'s."""
    declared = declared_shape(plain, target)
    return declared is not None and len(declared) == len(shape) and all(
        not isinstance(dim, int) or dim == size for dim, size in zip(declared[1:], shape[1:]))


def _twins_of_recorded(recipe: Recipe, facts: ModelFacts, made: dict[str, np.ndarray] | None, missing: list[str]
                       ) -> dict[str, np.ndarray]:
    """The `missing` outputs (none recorded) as the output steps' twins make them (`made`, by `_recorded_maps`) from
    the model outputs the user's pipeline recorded (the one the decoding reads, with SimCC's second head): a
    reference of the kept heatmaps alone was compared on the heatmaps, and a patch whose keypoints were 3 px off
    PASSed (round 89).
    Nothing without those recordings, or where a step that rewrites the output (a flip test's average) would have
    to rewrite several."""
    if not missing or made is None or len(facts.targets) > 1 and any(
            step.rewrites_output for step in recipe.output.steps):
        return {}
    return {name: made[name] for name in missing if name in made}


def _recorded(arrays: dict[str, np.ndarray], ports, reference: str | Path) -> Group:
    missing = [port.name for port in ports if port.name not in arrays]
    if missing:
        raise GraphsurgeryError(f"the reference lacks the patched model's input(s) {', '.join(map(repr, missing))}",
                                path=reference, fix="record what you feed your pipeline under those names")
    feeds = {port.name: arrays[port.name] for port in ports}
    for port in ports:  # what the runtime would refuse deep inside (a float64 image, no samples at all)
        value = feeds[port.name]
        fixed = [(got, want) for got, want in zip(value.shape[1:], port.shape[1:]) if isinstance(want, int) and want]
        if value.dtype.name != port.dtype or value.ndim != len(port.shape) or not len(value) or any(
                got != want for got, want in fixed):  # crops of 100 rows for a 256-row input: the runtime's error
            # was an internal error (the batch axis may differ: a static batch is fed in slices)
            raise GraphsurgeryError(f"the reference's {port.name!r} is {value.dtype.name}{list(value.shape)}; the "
                                    f"patched model takes {port.dtype}[{', '.join(str(d or '?') for d in port.shape)}]",
                                    path=reference, fix="record at least one sample, as the patched model takes it")
        if value.dtype.kind == "f" and not np.isfinite(value).all():  # a wrong patch passed on such samples
            raise GraphsurgeryError(f"the reference's {port.name!r} holds NaN or infinite values: the answers "
                                    "they make are NaN whatever the patch, and NaN equals NaN", path=reference,
                                    fix="record finite inputs")
    return feeds, {name: value for name, value in arrays.items() if name not in feeds}


def _live(function: Callable, recipe: Recipe, facts: ModelFacts, plain, patched: Path, count: int | None,
          seed: int) -> tuple[list[Group], str | None]:
    """Random caller inputs as verify makes them (several image sizes when the recipe resizes; by default each
    size verify feeds, where it took 8 samples and never met a letterbox recipe's later sizes), one call of the
    user's pipeline per size; and what they leave out (`Samples.note`)."""
    input_name = plain_input(recipe, plain)
    others = [name for name in real_inputs(plain.proto) if name != input_name]
    image_input, extras = patched_inputs(patched, extra_input_names(recipe), others, recipe)
    samples = random_caller_samples(count, image_input, recipe, facts, input_steps(recipe, facts), extras, 1, seed)
    groups = []
    for tensors, extra in samples.groups:
        other = other_inputs(plain.proto, others, len(tensors), facts.input_shape[0] if facts.input_shape else None,
                             seed, plain.path)
        feeds = {image_input.name: tensors, **extra, **other}
        # its own copies: a pipeline that draws its answer on the caller's image in place (cv2.rectangle) fed the
        # patched model the drawn-on image, and a right patch FAILed against right answers (round 69)
        answers = call_user(function, "the reference pipeline (--reference-pipeline)",
                            {name: np.array(array, copy=True) for name, array in feeds.items()})
        if not isinstance(answers, dict) or not all(isinstance(k, str) for k in answers):
            raise GraphsurgeryError(f"the reference pipeline returned {type(answers).__name__}, not a dict of arrays "
                                    "by output name", fix="return {output name: array, ...}")
        groups.append((feeds, _answers(answers, groups[0][1] if groups else None)))
    return groups, samples.note


def _answers(answers: dict, first: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The pipeline's answers as arrays held to what a recorded reference must hold (`_check_headers`): numbers with
    a sample axis, the same names and row shapes in every call. {'keypoints': 1} was numpy's "zero-dimensional
    arrays cannot be concatenated", a ragged list its "inhomogeneous shape" (round 26)."""
    arrays = {}
    for name, value in answers.items():
        try:
            array = np.asarray(value)
        except Exception:  # noqa: BLE001 — a ragged list, or the caller's object refusing to be an array
            array = None
        if array is None or array.dtype.kind not in "biuf" or not array.ndim:
            shown = f"{array.dtype}{list(array.shape)}" if array is not None else type(value).__name__
            raise GraphsurgeryError(f"the reference pipeline answered {name!r} with {shown}, not an array of numbers "
                                    "with one row per sample", fix="return real numbers (bool, int, float), one row "
                                                                   "per sample")
        arrays[name] = array
    if first is not None and (set(arrays) != set(first) or any(a.shape[1:] != first[n].shape[1:]
                                                                for n, a in arrays.items())):
        raise GraphsurgeryError("the reference pipeline answered its calls (one per image size) with other names or "
                                "row shapes", fix="return the same outputs, of the same shape per sample, each call")
    return arrays


def _run(backend: str, patched: Path, precision: str, feeds: dict[str, np.ndarray], batch: int | None,
         source, companions: tuple[str, BatchRows | None, dict[str, str]]) -> tuple[dict[str, np.ndarray], str]:
    """The patched model on one group of inputs, in batches of its static batch, or, where its batch is dynamic,
    up to `TOGETHER` samples a call among companions (`companions`: the image input's name, `_companion_rows`, and
    where outputs that did not follow the batch are named); a model whose outputs' batch is unknown all at once.
    Fed as recorded, one recorded sample was a batch of one, and a patch reading row 0 of the batch PASSed."""
    image_name, paired, unfollowed = companions
    count = len(next(iter(feeds.values())))
    batch = batch or (TOGETHER if paired is not None else count)
    if count % batch and paired is None:
        raise GraphsurgeryError(f"the model takes batches of {batch}; the reference's {count} samples do not divide "
                                "into them", path=source, fix=f"record a multiple of {batch} samples")
    own_rows = {image_name, *paired.with_rows} if paired is not None else None
    for name in [name for name in feeds if name in paired.with_rows] if paired is not None else ():
        if len(feeds[name]) != count:  # round 102: one recorded `center` for 3 crops was onnxruntime's broadcast
            # error among the companions, blamed on the patched model ("re-export it")
            raise GraphsurgeryError(f"the reference's {name!r} holds {len(feeds[name])} row(s) for "
                                    f"{count} samples of {image_name!r}; the patched model takes one a sample",
                                    path=source, fix=f"record one {name!r} row per sample")
    parts = []
    with open_runner(backend, patched, precision=precision) as run:
        for start in range(0, count, batch):
            # arrays of one row per sample are cut into batches; others (a [1, K, 1, 1] bias) are fed whole
            part = {name: value[start:start + batch] if (name in own_rows if own_rows is not None
                                                         else value.ndim and len(value) == count) else value
                    for name, value in feeds.items()}
            parts.append(run(part) if paired is None else among_companions(run, part, image_name, paired, unfollowed))
    return concat(parts), run.precision


def _companion_rows(recipe: Recipe, facts: ModelFacts, plain, patched: Path, image_name: str, backend: str,
                    seed: int) -> BatchRows | None:
    """How the patched model's outputs follow its batch, as verify finds them (`verification.companion_rows`); None
    where it crops a whole image's boxes (their rows are not the samples')."""
    steps = input_steps(recipe, facts)
    if crops_in_graph(steps):
        return None
    input_name = plain_input(recipe, plain)
    others = [name for name in real_inputs(plain.proto) if name != input_name]
    other = other_inputs(plain.proto, others, 1, facts.input_shape[0] if facts.input_shape else None, seed,
                         plain.path)
    patched_model = read_patched(patched)
    return companion_rows(patched, patched_model.proto if patched_model is not None else None, image_name,
                          extra_input_names(recipe), steps, facts, backend=backend, plain=plain.path,
                          input_name=input_name, other=other, seed=seed)
