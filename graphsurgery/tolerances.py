"""The tolerance policy, in one place: how closely each output must match the unpatched pipeline.

Each step declares how its outputs compare (`OutputStep.writes`: exact coordinates, indices, or floats with
atol/rtol). Float outputs that come from the network itself get at least `MODEL_FLOAT_FLOOR`, the allowance for
one float32 network computed in two graphs or on two backends; a tolerance the caller sets by name replaces both.
Near ties of keypoints are judged at the model output's own float tolerance (`tie_tolerance`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from graphsurgery.errors import ArgumentError, GraphsurgeryError, finite, quoted
from graphsurgery.parts import largest_finite, row_parts
from graphsurgery.steps.base import Comparison

#: The comparison of a model output no step declares (the network's own output, kept or passed through).
DEFAULT_FLOAT = Comparison("float", rtol=1e-5, atol=1e-5)

#: The float tolerance under which two reference values count as a tie, when the caller gives none.
DEFAULT_TIE = Comparison("float", rtol=1e-5, atol=1e-5)

#: Float outputs come from the model, and one model in float32 gives slightly different numbers in different graphs
#: and backends (accumulated rounding; HRNet-W32: up to 3.7e-5 on heatmaps spanning ±1.2, ONNX Runtime vs OpenVINO,
#: and with vs without the preprocessing that OpenVINO folds into the first convolution). Declared float tolerances
#: tighter than this are raised to it unless a tolerance is set by name; wrong patches differ by 1e-2 (bf16) to 1
#: (colour order, std).
MODEL_FLOAT_FLOOR = Comparison("float", rtol=1e-4, atol=1e-4)

#: A difference between backends on the unpatched pipeline above this share of the output's magnitude is not
#: rounding: the runtimes disagree on the plain model itself, and verify says so instead of allowing it.
ROUNDING_SHARE = 1e-2

Tolerances = Mapping[str, tuple[float, float]]


def checked_tolerances(tolerances) -> dict:
    """The Python API's `tolerances`, a mapping of output names (or "*") to pairs, or None for none: 0.1 was
    "'float' object is not iterable", a numpy array "truth value … ambiguous", and "", [] or 0 were no tolerance
    at all, in silence (round 26)."""
    if tolerances is None:
        return {}
    if not isinstance(tolerances, Mapping):
        raise ArgumentError(f"tolerances is a mapping {{output name: (atol, rtol)}} (\"*\" for every float output), "
                            f"not {type(tolerances).__name__}")
    for name in tolerances:  # 1 beside "heatmaps" made the sorting of unknown names a TypeError
        if not isinstance(name, str):
            raise ArgumentError(f"tolerances are keyed by output names (str), not {type(name).__name__} "
                                f"{quoted(name)}")
    return dict(tolerances)


def model_float(comparison: Comparison) -> Comparison:
    """A float comparison raised to at least MODEL_FLOAT_FLOOR (other kinds unchanged)."""
    if comparison.kind != "float":
        return comparison
    return replace(comparison, rtol=max(comparison.rtol, MODEL_FLOAT_FLOOR.rtol),
                   atol=max(comparison.atol, MODEL_FLOAT_FLOOR.atol))


def with_tolerances(declared: dict[str, Comparison], tolerances: Tolerances) -> dict[str, Comparison]:
    """The recipe's comparisons (floats raised to the model floor) with the caller's tolerances; "*" applies to
    float outputs without their own (integer outputs stay exact unless named)."""
    unknown = sorted(set(tolerances) - set(declared) - {"*"})
    if unknown:
        raise GraphsurgeryError(f"no output named {unknown[0]!r} to set a tolerance for",
                                fix=f"the outputs are {', '.join(declared)} (or * for every float output)")
    result = {}
    for name, comparison in declared.items():
        given = tolerances.get(name, tolerances.get("*") if comparison.kind == "float" else None)
        if given is not None:
            atol, rtol = _atol_rtol(name, given)
            if comparison.kind == "detections":
                comparison = _detection_tolerance(name, comparison, atol, rtol)
            else:  # positions and indices use atol alone
                rtol = rtol if comparison.kind in ("float", "integer") else 0.0
                comparison = replace(comparison, atol=atol, rtol=rtol)
        else:
            comparison = model_float(comparison)
        result[name] = comparison
    return result


def nms_read_tolerances(wanted: Mapping[str, Comparison], tolerances: Tolerances, named: Mapping[str, str]
                        ) -> dict[str, Comparison]:
    """What a detector's nms reads (`nms_reads`: "candidates", "class_scores") is compared at the caller's tolerance
    where one is set by name, as every other output (round 78: `--tolerance scores=…` loosened the detections and
    the probe's, never the class scores before nms, so a decode meant to be approximate FAILed there alone): a read
    the recipe also outputs (`named`: result key → output name) at that output's alone (`wanted`; "*" too, a float,
    as for its own row); else the candidates at the detections' corner tolerance (box_atol in the network input's
    pixels, here, and box_rtol of each coordinate: no looser than of the box's largest), the class scores at the
    detections' score tolerance. "*" loosens neither, as it does not the detections. Where none is set, none is
    given: the decode's own applies (`NmsCut.comparison`)."""
    parts = {comparison.part: name for name, comparison in wanted.items() if comparison.kind == "detections"}
    found = {}
    for read, part in (("candidates", "boxes"), ("class_scores", "scores")):
        own, detections = named.get(read), parts.get(part)
        if own in wanted:
            if own in tolerances or "*" in tolerances:
                found[read] = wanted[own]
        elif detections in tolerances:
            given = wanted[detections]
            atol, rtol = (given.box_atol, given.box_rtol) if part == "boxes" else (given.atol, given.rtol)
            found[read] = Comparison("float", atol=atol, rtol=rtol)
    return found


def _detection_tolerance(name: str, comparison: Comparison, atol: float, rtol: float) -> Comparison:
    """A tolerance named for one of a detector's outputs (`steps.detect.DetectionComparison`): its boxes' corners
    (pixels) or its scores. The group is compared with the boxes' comparison, so a tolerance for the scores changed
    nothing and one for the boxes loosened the scores (`compare_detections.group_comparison`)."""
    if comparison.part == "boxes":
        return replace(comparison, box_atol=atol, box_rtol=rtol)
    if comparison.part == "scores":
        return replace(comparison, atol=atol, rtol=rtol)
    raise GraphsurgeryError(f"{name!r} is a detector's {comparison.part}, which is compared exactly, with the boxes "
                            "it belongs to", fix="set a tolerance for the boxes (corners, in pixels) or the scores")


def _atol_rtol(name: str, given) -> tuple[float, float]:
    """An (atol, rtol) pair of finite numbers ≥ 0: NaN would make every comparison pass, inf too. From the Python
    API, "0.1" and 0.1 were unpacking errors, ("nan", 0) a TypeError and (True, 0) an atol of 1."""
    pair = tuple(given) if isinstance(given, (tuple, list)) else (given,)
    if len(pair) != 2 or not all(finite(value) and value >= 0 for value in pair):
        shown = ", ".join(quoted(value) for value in pair) if isinstance(given, (tuple, list)) else quoted(given)
        raise GraphsurgeryError(f"tolerances for {name!r} must be two finite numbers ≥ 0 (atol, rtol), not {shown}",
                                fix="give atol, rtol ≥ 0, e.g. (1e-5, 1e-4)")
    return float(pair[0]), float(pair[1])  # numpy's float32 passes, not into the JSON report


def tie_tolerance(declared: dict[str, Comparison], wanted: dict[str, Comparison], tolerances: Tolerances,
                   output: str) -> Comparison:
    """The float tolerance under which two heatmap values tie: the model output's own, as declared or as set for it
    by name. A blanket "*" does not loosen it: that would turn every keypoint mismatch into a near tie."""
    tie = wanted[output] if output in tolerances else model_float(declared.get(output, DEFAULT_TIE))
    return tie if tie.kind == "float" else model_float(DEFAULT_TIE)


def without_vacuous_tie(tolerances: Tolerances, tie: Comparison, values: np.ndarray, output: str
                        ) -> tuple[Tolerances, str | None]:
    """`tolerances` without the one set for `output` when, as the near-tie tolerance, it lets every value in
    `values` tie with zero (atol ≥ the largest |value|, or rtol ≥ 1), with a note saying so: every keypoint or index
    mismatch was then a near tie, and `--tolerance heatmaps=1e30` passed a decode that gave (−4, −4) for (0, 0)
    (round 50). Near ties are then judged at the output's declared tolerance; the output itself keeps the one set."""
    largest = largest_finite(values) if output in tolerances else 0.0
    if largest == 0 or (tie.atol < largest and tie.rtol < 1):
        return tolerances, None
    note = (f"the tolerance set for {output} (atol {tie.atol:g}, rtol {tie.rtol:g}) lets every value of it tie "
            f"(the largest is {largest:.3g}): near ties of the outputs decoded from it are judged at its declared "
            "tolerance instead")
    return {name: pair for name, pair in tolerances.items() if name != output}, note


def allowance_note(declared: dict[str, Comparison], wanted: dict[str, Comparison]) -> str | None:
    """The report's line for the outputs whose declared float tolerance was raised to the model floor: what the
    step declares is shown beside what verify applies, never silently replaced."""
    raised = [f"{name} (declared atol {declared[name].atol:g}, rtol {declared[name].rtol:g})"
              for name in declared if declared[name].kind == "float" and wanted[name] != declared[name]
              and wanted[name] == model_float(declared[name])]
    if not raised:
        return None
    return (f"compared at atol, rtol ≥ {MODEL_FLOAT_FLOOR.atol:g}, the allowance for one float32 network computed in "
            f"two graphs or on two backends (HRNet-W32: 3.7e-5 on its heatmaps): {', '.join(raised)}; "
            "set a tolerance by name to override")


def scaled_floor(declared: dict[str, Comparison], wanted: dict[str, Comparison], tolerances: Tolerances,
                 reference: Mapping[str, np.ndarray]) -> tuple[dict[str, Comparison], str | None]:
    """The model floor's atol scaled to float outputs whose largest reference value is below 1: float32 rounding
    scales with the values (HRNet-W32's 3.7e-5 is on maps of ±1.2), and at an absolute 1e-4 the probabilities of
    1000 classes (≈ 2e-3) passed a centre crop of another size, 3 % off (round 37). Never raises a tolerance; the
    declared atol and any tolerance set by the caller are kept. Returns the comparisons and a note, if any."""
    result, scaled = dict(wanted), []
    for name, comparison in wanted.items():
        if comparison.kind != "float" or name in tolerances or "*" in tolerances or reference.get(name) is None:
            continue
        result[name] = _scaled(comparison, reference[name], declared[name].atol)
        if result[name] != comparison:
            scaled.append(f"{name} (atol {result[name].atol:.2g})")
    note = (f"the allowance of {MODEL_FLOAT_FLOOR.atol:g} scaled to outputs below 1, as float32 rounding scales: "
            f"{', '.join(scaled)}") if scaled else None
    return result, note


def scaled_tie(tie: Comparison, values: np.ndarray, tolerances: Tolerances, output: str) -> Comparison:
    """The near-tie tolerance scaled as `scaled_floor` scales outputs, to the values near ties are judged on: at an
    absolute 1e-4, neighbouring probabilities of 1000 classes all tied, and top-5 indices of a std of 0.2 for 0.225
    passed as near ties (round 37). A tolerance set for `output` keeps it."""
    return tie if output in tolerances else _scaled(tie, values, 0.0)


def _scaled(comparison: Comparison, values: np.ndarray, least: float) -> Comparison:
    """`comparison` with its atol at most MODEL_FLOAT_FLOOR's times the largest finite |value|, not below `least`."""
    atol = max(least, min(comparison.atol, MODEL_FLOAT_FLOOR.atol * largest_finite(values)))
    return replace(comparison, atol=atol) if atol < comparison.atol else comparison


#: One float16 step, relative: what a float16 model output is compared within (`twins.float16_resolution`)
FLOAT16_STEP = 2.0**-10


def float16_exponentials(wanted: dict[str, Comparison], tolerances: Tolerances, output: np.ndarray
                         ) -> tuple[dict[str, Comparison], str | None]:
    """Outputs that exponentiate a float16 model output (softmax probabilities, top-k scores of them) compared at
    rtol FLOAT16_STEP · (1 + 2 · its largest |value|): two sides may read a logit one float16 step apart (the model
    computes in float16 from float32 inputs rounded apart, or OpenVINO at f32 not at all), and e^(l + δ) moves the
    probability by δ relative, its share of the sum by as much again. Round 41: at one step (2^-10) float16 logits
    up to ±15 FAILed right patches, scores 5.5e-3 apart relative. A tolerance set by the caller is kept."""
    magnitude = largest_finite(output)
    rtol = FLOAT16_STEP * (1 + 2 * magnitude)
    result, raised = dict(wanted), []
    for name, comparison in wanted.items():
        if comparison.exponentiates and name not in tolerances and "*" not in tolerances and rtol > comparison.rtol:
            result[name] = replace(comparison, rtol=rtol)
            raised.append(name)
    note = (f"{', '.join(raised)} compared at rtol {rtol:.2g}: exponentials of float16 values up to "
            f"{magnitude:.3g}, whose float16 step moves them that much") if raised else None
    return result, note


def measured_floor(wanted: dict[str, Comparison], tolerances: Tolerances,
                   unpatched: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[dict[str, Comparison], list[str]]:
    """Float outputs compared at least at twice what the unpatched pipeline itself differs by between the backends
    (the same recipe and twins on each: only the runtimes' rounding), when that is more than the static floor: a
    deeper network or larger values than HRNet-W32's round more (the random tiny pose model: 3e-4 on maps of ±2).
    Outputs given a tolerance by the caller ("*" included) keep it. Returns the comparisons and a note per output
    raised, or not raised because the backends disagree beyond rounding (`ROUNDING_SHARE`)."""
    if len(unpatched) < 2 or "*" in tolerances:
        return wanted, []
    backends = " and ".join(unpatched)
    result, notes = dict(wanted), []
    for name, comparison in wanted.items():
        if comparison.kind != "float" or name in tolerances:
            continue
        raised, note = _raised(comparison, [outputs.get(name) for outputs in unpatched.values()], name, backends)
        result[name] = raised
        notes += [note] if note else []
    return result, notes


def measured_tie(tie: Comparison, values: Mapping[str, np.ndarray], on: str, tolerances: Tolerances, output: str
                 ) -> tuple[Comparison, str | None]:
    """The near-tie tolerance raised as `measured_floor` raises outputs, on the values near ties are judged on
    (`on`: the model output the decoding steps read, or a detector's class scores) on each backend: two positions
    whose values differ by less than the backends' rounding may swap. A tolerance set for `output` keeps it."""
    if len(values) < 2 or output in tolerances:
        return tie, None
    return _raised(tie, list(values.values()), f"near ties on {on}", " and ".join(values))


def _raised(comparison: Comparison, values: Sequence[np.ndarray | None], name: str, backends: str
            ) -> tuple[Comparison, str | None]:
    arrays = [np.asarray(value) for value in values if value is not None]
    if len(arrays) < 2 or any(array.shape != arrays[0].shape for array in arrays) or arrays[0].size == 0:
        return comparison, None
    noise, magnitude, any_finite = 0.0, 0.0, False  # where every side is finite; part by part, in float64
    for parts in row_parts(*arrays):
        parts = [part.astype(np.float64) for part in parts]
        finite = np.logical_and.reduce([np.isfinite(part) for part in parts])
        if finite.any():
            any_finite = True
            noise = max(noise, *(float(np.abs(part[finite] - parts[0][finite]).max()) for part in parts[1:]))
            magnitude = max(magnitude, float(np.abs(parts[0][finite]).max()))
    if not any_finite:
        return comparison, None
    if 2 * noise <= comparison.atol:
        return comparison, None
    if noise > ROUNDING_SHARE * magnitude:
        return comparison, (f"{name}: the unpatched pipeline differs by {noise:.3g} between {backends}, more than "
                            f"rounding ({ROUNDING_SHARE:g} of its largest value {magnitude:.3g}): not allowed for")
    return replace(comparison, atol=2 * noise), (f"{name}: compared at atol {2 * noise:.2g}, twice what the unpatched "
                                                 f"pipeline itself differs by between {backends}")
