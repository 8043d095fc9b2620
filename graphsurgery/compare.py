"""Compare one output of a model with the same output of a reference, by the output's `Comparison` kind.

- "float": an element fails only when its difference exceeds BOTH tolerances, |a − b| > atol and
  |a − b| > rtol·|b| (b is the reference). The result carries max / mean / median absolute and relative differences
  and the tolerances that would have passed: the smallest atol given the rtol, the smallest rtol given the atol.
  NaN equals NaN; NaN on one side only is a failure that no tolerance passes.
- "coordinates": positions [..., 2] (keypoints); a position matches when |dx| and |dy| are both ≤ atol
  (0 = exact). Every mismatch is classified: a NEAR TIE when the reference values the two answers were chosen
  from differ by no more than a float tolerance (either answer is then legitimate under float rounding), else a
  real mismatch. Only real mismatches fail.
- "indices": integer indices (argmax / top-k), exact; near ties as for coordinates.
- "integer": an integer or bool output of the model itself, compared as floats are, exactly unless a tolerance is
  set for it by name; an answer that holds no integers fails.

A mismatch that is no near tie may still be UNSTABLE: within the output's atol plus twice the distance the reference
pipeline's own answer moves when the values it decodes are perturbed by float rounding (`wobble`, measured by
`graphsurgery.stability`; twice: each side rounds on its own).
A refinement that solves through a nearly flat peak (DARK, UDP) amplifies rounding into any distance; such positions
are allowed and counted apart, and a wrong patch still fails on every well-conditioned position.

Near ties need the values the positions were chosen from (`reference`): the heatmaps [N, K, H, W] for
coordinates, the class scores [..., C] for indices. Coordinates may be in crop or image pixels, so the caller
also passes a `HeatmapGrid`, the per-position affine map between heatmap cells and the output's coordinates
(`heatmap_grid.heatmap_grid` measures it from the recipe's own numpy twins). A mismatch whose two coordinates fall
in the same heatmap cell differs in a sub-cell refinement (the quarter-pixel offset): it is a near tie when the
two neighbours that decide the refinement along the differing axis tie. A joint whose reference peak is itself
within the tolerance of 0, or subnormal (`SUBNORMAL`), sits on the "score ≤ 0 → (0, 0)" threshold, also a near
tie. Positions chosen per axis from two 1-D vectors (SimCC: `AxisVectors`) are judged the same way, bin by bin on
each axis that differs.

Results are small JSON-serialisable dataclasses; `bool(result)` is the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from graphsurgery.parts import row_parts
from graphsurgery.steps.base import Comparison
from graphsurgery.tolerances import DEFAULT_TIE

#: Mismatches listed one by one in a result (all are counted).
MAX_DETAILS = 20
#: Below float32's smallest normal number a peak is on the score ≤ 0 threshold whatever the tolerance: OpenVINO's
#: kernels flush subnormal results to zero (a network whose maps peak at 1e-40 gives maps of zeros there), ONNX
#: Runtime keeps them, and the ONNX spec leaves subnormals to each runtime (round 90).
SUBNORMAL = float(np.finfo(np.float32).tiny)

def exceeds(diff: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """Where a difference exceeds BOTH tolerances (the one failure rule for floats and near ties)."""
    return (diff > atol) & (diff > relative(rtol, np.abs(reference)))


def relative(rtol: float, magnitude: np.ndarray) -> np.ndarray:
    """rtol × magnitude, inf past the dtype's range: a huge rtol (`--tolerance scores=0,1e308`, finite) covers every
    value, as it says, without numpy's "overflow encountered in multiply" on stderr, two lines naming this file on a
    verify that passed (round 60), and an error under PYTHONWARNINGS=error."""
    with np.errstate(over="ignore"):
        return rtol * magnitude


def differences(actual, expected) -> np.ndarray:
    """|actual − expected| elementwise in float64, where agreeing values (the same infinity, NaN on both sides)
    differ by 0 and a NaN on one side only by infinity: a plain subtraction gives NaN there, and `NaN > tolerance`
    is false (`chain --check` passed a chained model whatever it answered where a hostile detector's boxes were
    NaN)."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    with np.errstate(invalid="ignore"):  # inf − inf
        delta = np.abs(a - b)
    delta[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    return np.nan_to_num(delta, nan=math.inf)


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _jsonable(data):
    if isinstance(data, float):
        return _json_float(data)
    if isinstance(data, dict):
        return {key: _jsonable(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_jsonable(value) for value in data]
    return data


@dataclass
class FloatResult:
    """A float output: how many elements exceed both tolerances, the differences, and what would have passed."""

    output: str
    atol: float
    rtol: float
    elements: int = 0
    failed: int = 0
    nan_mismatches: int = 0
    max_abs: float = 0.0
    mean_abs: float = 0.0
    median_abs: float = 0.0
    max_rel: float = 0.0
    mean_rel: float = 0.0
    median_rel: float = 0.0
    worst_index: list[int] | None = None
    passing_atol: float = 0.0
    passing_rtol: float = 0.0
    largest: float = 0.0  # the largest finite |reference value|
    problem: str | None = None
    kind: str = "float"

    def __bool__(self) -> bool:
        return self.problem is None and self.failed == 0

    def summary(self) -> str:
        if self.problem:
            return self.problem
        text = (f"|Δ| max {self.max_abs:.3g} mean {self.mean_abs:.2g} median {self.median_abs:.2g}; "
                f"rel max {self.max_rel:.3g} mean {self.mean_rel:.2g} median {self.median_rel:.2g}")
        if not self.failed:
            text = f"all {self.elements} within atol {self.atol:g} or rtol {self.rtol:g}; {text}"
            if self.largest > 0 and (self.atol >= self.largest or self.rtol >= 1):  # --tolerance '*=1e30,0' passed
                # any patch in silence (round 34)
                text += loose_note(self.largest)
        else:
            nans = f" ({self.nan_mismatches} with NaN on one side only)" if self.nan_mismatches else ""
            text = (
                f"{self.failed} of {self.elements} elements exceed atol {self.atol:g} and rtol {self.rtol:g}{nans}; "
                f"{text}; worst at {self.worst_index}; would pass with atol ≥ {self.passing_atol:.3g} "
                f"or rtol ≥ {self.passing_rtol:.3g}"
            )
        return text

    def to_dict(self) -> dict:
        return _jsonable({**asdict(self), "passed": bool(self)})


def loose_note(largest: float) -> str:
    """The stats line's warning for a tolerance under which an output of zeros passes."""
    return (f"; NOTE: these tolerances let an output of zeros pass (the largest reference value is {largest:.3g}): "
            "this comparison cannot catch a wrong patch")


@dataclass
class Mismatch:
    """One position where the answers differ; `gap` is the difference of the reference values that decided it,
    `wobble` how far float rounding moves the reference's own answer there (when it was measured)."""

    index: list[int]
    expected: list[float]
    actual: list[float]
    distance: float
    gap: float | None
    near_tie: bool
    unstable: bool = False
    wobble: float | None = None

    @property
    def verdict(self) -> str:
        return "near tie" if self.near_tie else "unstable" if self.unstable else "real mismatch"


@dataclass
class PositionResult:
    """A coordinate or index output: exact-match rate, largest distance, mismatches split into near ties and real."""

    output: str
    kind: str
    atol: float
    positions: int = 0
    matches: int = 0
    max_distance: float = 0.0
    near_ties: int = 0
    unstable: int = 0
    mismatches: int = 0
    tie_atol: float = DEFAULT_TIE.atol
    tie_rtol: float = DEFAULT_TIE.rtol
    details: list[Mismatch] = field(default_factory=list)
    largest: float = 0.0  # coordinates: the largest finite |reference value|
    problem: str | None = None

    def __bool__(self) -> bool:
        return self.problem is None and self.mismatches == 0

    @property
    def match_rate(self) -> float:
        return self.matches / self.positions if self.positions else 1.0

    def summary(self) -> str:
        if self.problem:
            return self.problem
        unit = " px" if self.kind == "coordinates" else ""
        within = "exact" if self.atol == 0 else f"within {self.atol:g}"
        text = (f"{self.matches}/{self.positions} {within} ({100 * self.match_rate:.1f}%), "
                f"max distance {self.max_distance:.4g}{unit}")
        if self.mismatches:
            text += f"; {self.mismatches} real mismatch{'es' if self.mismatches > 1 else ''}"
        if self.near_ties:
            text += f"; {self.near_ties} near tie{'s' if self.near_ties > 1 else ''} (allowed)"
        if self.unstable:
            text += f"; {self.unstable} unstable (allowed: float rounding moves the reference's own answer that far)"
        if not self.mismatches and 0 < self.largest <= self.atol:  # --tolerance keypoints=1000 on 384×288 crops
            text += loose_note(self.largest)
        return text

    def to_dict(self) -> dict:
        return _jsonable({**asdict(self), "match_rate": self.match_rate, "passed": bool(self)})


@dataclass
class DetectionResult:
    """A group of detector outputs (boxes, scores, classes, count) compared as sets, image by image: each reference
    detection matched by one of the same class with IoU ≥ `iou`, its corners within `box_atol` + `box_rtol` × the
    boxes' largest |coordinate| (pixels), and its score within atol or rtol. Unmatched ones on
    either side are near ties when a float rounding could have decided them (a score at the threshold or at the
    max_detections cut, an overlap at the IoU threshold), else real mismatches."""

    output: str
    iou: float
    atol: float
    rtol: float
    box_atol: float = 0.0
    box_rtol: float = 0.0
    box_resolution: float = 0.0  # relative, of the head's coordinates (a float16 head's step)
    kind: str = "detections"
    images: int = 0
    detections: int = 0  # in the reference
    matched: int = 0
    near_ties: int = 0
    mismatches: int = 0
    min_iou: float = 1.0
    max_score_diff: float = 0.0
    max_corner_diff: float = 0.0  # pixels, over the matched detections
    largest_score: float = 0.0  # the largest finite |score| of the reference's detections
    unsettled: int = 0  # images whose candidates hold a box or score that is not finite
    reordered: int = 0  # images whose differences the order of equal scores explains (`compare_detections`)
    details: list[dict] = field(default_factory=list)
    problem: str | None = None

    def __bool__(self) -> bool:
        return self.problem is None and self.mismatches == 0

    def summary(self) -> str:
        if self.problem:
            return self.problem
        text = (f"{self.matched}/{self.detections} detections matched in {self.images} image(s) (same class, IoU ≥ "
                f"{self.iou:g}, corners within {self.box_atol:g} px + {self.box_rtol:g} × the box's largest "
                f"coordinate{self._resolution()}, score within atol {self.atol:g} or rtol {self.rtol:g}); min IoU "
                f"{self.min_iou:.6f}, max |Δcorner| {self.max_corner_diff:.3g} px, max |Δscore| "
                f"{self.max_score_diff:.3g}")
        if self.mismatches:
            text += f"; {self.mismatches} detection(s) on one side only"
        if self.near_ties:
            text += f"; {self.near_ties} near tie{'s' if self.near_ties > 1 else ''} (allowed)"
        if self.unsettled:
            text += (f"; {self.unsettled} image(s) with candidate boxes or scores that are not finite, where NMS is "
                     "each runtime's own rule: every difference there counts as a near tie")
        if self.reordered:
            text += (f"; {self.reordered} image(s) whose differences another order of equal scores explains (ONNX's "
                     "NonMaxSuppression keeps either of two overlapping boxes of one score): near ties")
        if not self.mismatches and 0 < self.largest_score and (self.atol >= self.largest_score or self.rtol >= 1):
            text += loose_note(self.largest_score)  # --tolerance scores=1e9 passed every score halved (round 55)
        return text

    def _resolution(self) -> str:
        """The corners' allowance for a head that rounds its own coordinates (float16), where there is one."""
        return (f" or {self.box_resolution:g} × its largest coordinate in the head, in these pixels"
                if self.box_resolution else "")

    def to_dict(self) -> dict:
        return _jsonable({**asdict(self), "passed": bool(self)})


OutputResult = FloatResult | PositionResult | DetectionResult


@dataclass(frozen=True)
class HeatmapGrid:
    """coordinate = cell · scale + offset (x then y): how an output's coordinates map to heatmap cells.

    `scale` and `offset` broadcast against the coordinates [..., 2] (e.g. [N, K, 2], one map per crop and joint).
    """

    scale: np.ndarray
    offset: np.ndarray

    def cells(self, coordinates: np.ndarray) -> np.ndarray:
        """The heatmap cell (x, y) of each coordinate, rounded to the nearest cell as the refinement steps do."""
        with np.errstate(divide="ignore", invalid="ignore"):
            cells = (np.asarray(coordinates, np.float64) - self.offset) / np.where(self.scale == 0, 1, self.scale)
        return nearest_cells(cells)


@dataclass(frozen=True)
class AxisVectors:
    """The two vectors [N, K, L] whose maxima chose each position's x and y (SimCC's two heads), as `reference` of
    a coordinate output whose grid maps its coordinates to their bins: a float16 head ties two far bins exactly
    where OpenVINO, computing the Cast to float16 as no rounding, still tells them apart (round 88's leftover)."""

    x: np.ndarray
    y: np.ndarray


def nearest_cells(values: np.ndarray) -> np.ndarray:
    """`values` rounded to the nearest integer cell, NaN as 0 and ±inf as a cell far off (round 40: ±inf, e.g. a
    keypoint divided by zero, was cast to int64 from ±1.8e308: numpy's "invalid value" warning on stderr, an
    internal error under PYTHONWARNINGS=error)."""
    far = 2.0**52
    return np.floor(np.clip(np.nan_to_num(values, nan=0.0), -far, far) + 0.5).astype(np.int64)


def compare_output(name: str, actual: np.ndarray, expected: np.ndarray, comparison: Comparison, *,
                   reference: np.ndarray | AxisVectors | None = None, grid: HeatmapGrid | None = None,
                   tie: Comparison = DEFAULT_TIE, wobble: Callable[[], np.ndarray | None] | None = None,
                   exact: bool = False) -> OutputResult:
    """Compare `actual` with `expected` (the reference answer) as `comparison` says.

    For positions, `reference` holds the values they were chosen from (heatmaps [N, K, H, W], SimCC's vectors or
    class scores [..., C]) and `grid` maps coordinates to heatmap cells or bins (None: coordinates are cells); without
    `reference`, every mismatch is real. `tie` is the float tolerance for near ties. `wobble` gives, per position,
    how far rounding moves the reference's own answer (called only when a mismatch is no near tie). `exact`: both
    answers were decided on `reference` itself by exact steps (the decoder probe: one float32 map fed to the graph
    and the twins, an argmax and comparisons, no arithmetic before them), so a mismatch of two cells is real
    however close their values, a peak on 0 included; a map whose peak is NaN or ±inf still decides nothing.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    if comparison.kind in ("float", "integer"):
        return compare_floats(name, actual, expected, atol=comparison.atol, rtol=comparison.rtol, kind=comparison.kind)
    return compare_positions(name, actual, expected, comparison, reference=reference, grid=grid, tie=tie,
                             wobble=wobble, exact=exact)


def missing_output(name: str, comparison: Comparison, problem: str) -> OutputResult:
    """A failed result for an output that cannot be compared at all (e.g. the patched model lacks it)."""
    if comparison.kind == "detections":
        return DetectionResult(name, iou=getattr(comparison, "iou", 1.0), atol=comparison.atol, rtol=comparison.rtol,
                               box_atol=getattr(comparison, "box_atol", 0.0),
                               box_rtol=getattr(comparison, "box_rtol", 0.0), problem=problem)
    if comparison.kind in ("float", "integer"):
        return FloatResult(name, atol=comparison.atol, rtol=comparison.rtol, problem=problem, kind=comparison.kind)
    return PositionResult(name, kind=comparison.kind, atol=comparison.atol, problem=problem)


def compare_floats(name: str, actual: np.ndarray, expected: np.ndarray, *, atol: float, rtol: float,
                   kind: str = "float") -> FloatResult:
    """Elementwise within atol or rtol; kind "integer" also asks `actual` to hold integers (or booleans): a patch
    that turned an int64 output into float32 gave equal values below 2^24 and PASSed, while a caller reading
    int64 reads other bytes (round 45)."""
    result = FloatResult(name, atol=atol, rtol=rtol, kind=kind)
    if actual.shape != expected.shape:
        result.problem = f"shape {list(actual.shape)} differs from the reference {list(expected.shape)}"
        return result
    if kind == "integer" and actual.dtype.kind not in "biu":
        result.problem = f"holds {actual.dtype} where the model gives {expected.dtype}: integers were expected"
        return result
    return _compared(result, row_parts(actual, expected), actual.shape)


def compare_float_parts(name: str, parts: Sequence[tuple[np.ndarray, np.ndarray]], *, atol: float, rtol: float
                        ) -> FloatResult:
    """`compare_floats` of the parts' values joined in order (flattened: the worst index counts along them), with
    the float64 copies of one part at a time: verify's network input of every sample at once took 0.7 GB for 100
    HRNet crops. Each part's two arrays have one shape."""
    result = FloatResult(name, atol=atol, rtol=rtol)
    for actual, expected in parts:
        if actual.shape != expected.shape:
            result.problem = f"shape {list(actual.shape)} differs from the reference {list(expected.shape)}"
            return result
    return _compared(result, parts, (sum(actual.size for actual, _ in parts),))


def compare_either_way(made: Sequence[dict[str, np.ndarray]], expected: dict[str, np.ndarray], *,
                       tolerances: Mapping[str, tuple[float, float]], what: str) -> list[FloatResult]:
    """Two tensors a cut graph makes (`made`: by tensor name, one dict per batch, in order) against the twins' two
    (`expected`: by key, in the order reported, every batch's rows joined; `tolerances`: (atol, rtol) by the same
    key), each graph tensor taken as the one of the twin's shape, and where both fit either way (equal shapes) the
    nearer way round: a graph's tensor names say nothing of which is which. A graph whose two fit neither way fails
    as such (`what`: what the graph's tensors are, for that line). Compared a batch at a time (`compare_float_parts`
    makes float64 copies of one part): joined, a YOLOv8n head's 80 × 8,400 class scores of 27 samples took 1 GB more
    than verify without the comparison (round 70)."""
    ends, keys = list(made[0]), list(expected)

    def parts(end: str, key: str) -> list[tuple[np.ndarray, np.ndarray]]:
        stops = np.cumsum([_rows(batch[end]) for batch in made])  # where each batch's rows end
        if stops[-1] != len(expected[key]):
            return []
        return list(zip((batch[end] for batch in made), np.split(expected[key], stops[:-1])))

    def fit(order: Sequence[str]) -> list[list[tuple[np.ndarray, np.ndarray]]] | None:
        paired = [parts(end, key) for end, key in zip(order, keys)]
        return paired if all(pairs and all(a.shape == b.shape for a, b in pairs) for pairs in paired) else None

    def distance(paired: list[list[tuple[np.ndarray, np.ndarray]]]) -> float:
        with np.errstate(invalid="ignore", over="ignore"):  # inf − inf: huge values (a head of huge boxes)
            return sum(float(np.nansum(np.abs(a.astype(np.float64) - b))) for pairs in paired for a, b in pairs)

    fits = [paired for paired in map(fit, (ends, ends[::-1])) if paired is not None]
    if fits:
        nearest = min(fits, key=distance) if len(fits) > 1 else fits[0]
        return [compare_float_parts(key, pairs, atol=tolerances[key][0], rtol=tolerances[key][1])
                for key, pairs in zip(keys, nearest)]
    shapes = " and ".join(str([sum(_rows(batch[end]) for batch in made), *made[0][end].shape[1:]]) for end in ends)
    results = []
    for key in keys:
        result = FloatResult(key, atol=tolerances[key][0], rtol=tolerances[key][1])
        result.problem = f"{what} {shapes}, the twins' {key} is {list(expected[key].shape)}"
        results.append(result)
    return results


def _rows(made: np.ndarray) -> int:
    """A batch's rows: its first dim (a scalar, which no twin's is, as one)."""
    return made.shape[0] if made.ndim else 1


def _compared(result: FloatResult, parts: Sequence[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]
              ) -> FloatResult:
    """`result` filled from the parts' differences (`compare_floats`); `shape`: the joined values', for the worst
    index."""
    result.elements = sum(actual.size for actual, _ in parts)
    # NaN equals NaN: a recipe that overflows float32 (scale 1e30, std 1e-30) or a model of NaN made every output
    # NaN on both sides, and a wrong patch passed
    if result.elements and not any(np.isfinite(np.asarray(expected, np.float64)).any() for _, expected in parts):
        result.problem = (f"the reference holds no finite value ({result.elements} elements, all NaN or ±inf), so "
                          "agreement proves nothing; check the recipe's scale and normalize (float32 overflows past "
                          "3.4e38) and the model")
        return result
    if result.elements == 0:
        return result
    if all(actual.dtype.kind == expected.dtype.kind == "f" and np.array_equal(actual, expected, equal_nan=True)
           for actual, expected in parts):  # every difference 0, as measured below: verify's exact comparison of
        # the crop positions (3.7 M values, `crop_positions`) spent most of its time on the medians of zeros
        result.largest = max(float(np.abs(expected[np.isfinite(expected)], dtype=np.float64).max(initial=0.0))
                             for _, expected in parts)
        result.worst_index = [0] * len(shape)
        return result
    # every part's differences where both sides are numbers, and their relative ones, written in place (the medians
    # need them all): a list of parts joined at the end held each twice
    finite, rel = np.empty(result.elements), np.empty(result.elements)
    finite_count, rel_count, worst, offset = 0, 0, (-1.0, 0), 0
    for actual, expected in parts:
        diff, usable, b = _part_differences(result, actual, expected)
        usable_diff = diff[usable]
        finite[finite_count:finite_count + usable_diff.size] = usable_diff
        finite_count += usable_diff.size
        reference = np.abs(b[usable])
        del b
        result.largest = max(result.largest, float(reference[np.isfinite(reference)].max(initial=0.0)))
        nonzero = reference > 0
        with np.errstate(invalid="ignore"):  # round 41: a finite value against an infinite one is inf / inf: numpy's
            quotient = usable_diff[nonzero] / reference[nonzero]  # warning on stderr (a pad_value of 1e19 overflowing)
        quotient[np.isnan(quotient)] = np.inf
        rel[rel_count:rel_count + quotient.size] = quotient
        rel_count += quotient.size
        if diff.size and (largest := float(diff.max())) > worst[0]:
            worst = (largest, offset + int(np.argmax(diff)))
        offset += diff.size
    finite, rel = finite[:finite_count], rel[:rel_count]
    if finite.size:
        result.max_abs, result.mean_abs, result.median_abs = (float(finite.max()), float(finite.mean()),
                                                              float(np.median(finite, overwrite_input=True)))
    if rel.size:
        result.max_rel, result.mean_rel, result.median_rel = (float(rel.max()), float(rel.mean()),
                                                              float(np.median(rel, overwrite_input=True)))
    if result.nan_mismatches:
        result.max_abs = result.max_rel = math.inf
    result.worst_index = [int(i) for i in np.unravel_index(worst[1], shape)]
    return result


def _part_differences(result: FloatResult, actual: np.ndarray, expected: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One part's |Δ| (infinite where one side only is NaN), where both sides are numbers, and the reference in
    float64; adds the part's failures, NaN mismatches and the tolerances that would pass it to `result`."""
    atol, rtol = result.atol, result.rtol
    a, b = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    one_sided = a_nan != b_nan
    both = a_nan & b_nan
    usable = ~(a_nan | b_nan)
    if actual.dtype.kind in "biu" and expected.dtype.kind in "biu":  # integers differ by their exact difference:
        # float64 holds 53 bits, and a label of 2^62 + 485 against 2^62 differed by 0 (round 31)
        diff = np.abs(actual.ravel().astype(object) - expected.ravel().astype(object)).astype(np.float64)
    else:
        diff = np.zeros_like(a)
        with np.errstate(invalid="ignore"):
            diff[usable] = np.abs(a[usable] - b[usable])
        diff[usable & (a == b)] = 0.0  # inf == inf, whose difference is NaN: the report's |Δ| max was nan, its worst
    diff[one_sided] = np.inf
    diff[both] = 0.0
    reference = np.abs(np.nan_to_num(b, nan=0.0))
    result.failed += int(exceeds(diff, reference, atol, rtol).sum())
    result.nan_mismatches += int(one_sided.sum())
    # smallest atol that passes at this rtol: the largest difference that rtol alone does not cover (and vice versa)
    over_rtol = diff > relative(rtol, reference)
    if over_rtol.any():
        result.passing_atol = max(result.passing_atol, float(diff[over_rtol].max()))
    over_atol = diff > atol
    if over_atol.any():
        result.passing_rtol = max(result.passing_rtol, _smallest_rtol(diff[over_atol], reference[over_atol]))
    return diff, usable, b


def _smallest_rtol(diff: np.ndarray, reference: np.ndarray) -> float:
    """The smallest rtol with diff ≤ rtol·reference everywhere, in float64 as the failure rule computes it."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        needed = np.nan_to_num(diff / reference, nan=math.inf, posinf=math.inf)
        for _ in range(4):  # the quotient may be an ulp or two off either way: settle on the smallest that covers
            short = needed * reference < diff
            needed[short] = np.nextafter(needed[short], math.inf)
            lower = np.nextafter(needed, 0)
            spare = ~short & (lower * reference >= diff) & np.isfinite(needed)
            needed[spare] = lower[spare]
            if not (short.any() or spare.any()):
                break
    return float(needed.max())


#: How many steps of their float type two coordinates may differ by beyond the atol: the graph and the twins round
#: each of their few operations, and at 65,535 px a float32 step (0.0078 px) is four times the top-down recipe's
#: 0.002 px (round 34: a right patch FAILed on a 65,535 × 1 image and on a box of 10^6 px).
FLOAT_STEPS = 2


def _resolution(actual: np.ndarray, expected: np.ndarray) -> np.ndarray | float:
    """Per position, the step of the coarser float type of the two arrays at the larger of the reference's |x|, |y|:
    both come out of one affine map whose terms are as large (x = −8,191.875 was 8 float32 steps off at y = −54,612,
    one step of y). 0 for integers."""
    kinds = [array.dtype for array in (actual, expected) if array.dtype.kind == "f"]
    if not kinds:
        return 0.0
    coarse = min(kinds, key=lambda dtype: dtype.itemsize)
    magnitude = np.abs(np.nan_to_num(expected.astype(np.float64), posinf=0.0, neginf=0.0))
    magnitude = magnitude.max(axis=-1, keepdims=True) if magnitude.ndim else magnitude
    with np.errstate(over="ignore"):
        return np.spacing(magnitude.astype(coarse)).astype(np.float64)


def compare_positions(name: str, actual: np.ndarray, expected: np.ndarray, comparison: Comparison, *,
                      reference: np.ndarray | AxisVectors | None = None, grid: HeatmapGrid | None = None,
                      tie: Comparison = DEFAULT_TIE, wobble: Callable[[], np.ndarray | None] | None = None,
                      exact: bool = False) -> PositionResult:
    kind = comparison.kind
    result = PositionResult(name, kind=kind, atol=comparison.atol, tie_atol=tie.atol, tie_rtol=tie.rtol)
    if actual.shape != expected.shape:
        result.problem = f"shape {list(actual.shape)} differs from the reference {list(expected.shape)}"
        return result
    if kind == "coordinates" and (actual.ndim == 0 or actual.shape[-1] != 2):
        result.problem = f"coordinates must have shape [..., 2], got {list(actual.shape)}"
        return result
    a, b = actual.astype(np.float64), expected.astype(np.float64)
    if kind == "coordinates":
        result.largest = float(np.abs(b[np.isfinite(b)]).max(initial=0.0))
    if kind == "indices":  # one position per element
        a, b = a[..., None], b[..., None]
    delta = differences(a, b)
    rounding = FLOAT_STEPS * _resolution(actual, expected) if comparison.atol > 0 else 0.0  # exact stays exact
    matching = (delta <= comparison.atol + rounding).all(axis=-1)
    distance = np.sqrt((delta ** 2).sum(axis=-1))
    result.positions = int(matching.size)
    result.matches = int(matching.sum())
    result.max_distance = float(distance.max()) if distance.size else 0.0
    if kind == "coordinates":
        to_cells = grid.cells if grid is not None else nearest_cells
        cells_a, cells_b = to_cells(a), to_cells(b)
    moves, measured = None, False  # the reference's wobble per position, measured once a mismatch needs it
    value_ties = 0  # near ties between two reference values (not maps that decide nothing)
    for index in zip(*np.nonzero(~matching)):
        if kind == "indices":
            gap, near_tie = _index_tie(index, int(b[index][0]), int(a[index][0]), reference, tie)
            decides = True
        else:
            judge = _bin_tie if isinstance(reference, AxisVectors) else _cell_tie
            gap, near_tie, decides = judge(index, b[index], a[index], cells_b[index], cells_a[index], reference, tie,
                                           exact)
        value_ties += near_tie and decides
        if not near_tie and wobble is not None and not measured:
            moves, measured = wobble(), True
            moves = moves if moves is not None and moves.shape == distance.shape else None  # nothing measurable
        moved = float(moves[index]) if moves is not None else None
        unstable = bool(not near_tie and moved is not None and distance[index] <= comparison.atol + 2 * moved)
        result.near_ties += near_tie
        result.unstable += unstable
        result.mismatches += not (near_tie or unstable)
        if len(result.details) < MAX_DETAILS:
            result.details.append(Mismatch([int(i) for i in index], b[index].tolist(), a[index].tolist(),
                                           float(distance[index]), gap, near_tie, unstable, moved))
    if value_ties and not (result.matches or result.mismatches):  # every position a near tie or unstable: a patch
        # that moves every keypoint between tied values would pass as well (detections that are all near ties do
        # not; round 51's leftover). Maps that decide nothing or no valid joint (NaN, ±inf, a peak ≤ 0: the decoder
        # probe's invalid joints) are no such tie: their answers are conventions, checked there.
        result.problem = (f"no {'index' if kind == 'indices' else 'keypoint'} of the {result.positions} matched: "
                          f"all are near ties ({result.near_ties}) or unstable ({result.unstable}), so agreement "
                          "proves nothing; verify with inputs whose answers are clear (--images)")
    return result


def _index_tie(index: tuple, expected: int, actual: int, reference: np.ndarray | None, tie: Comparison
               ) -> tuple[float | None, bool]:
    """An index mismatch: do the reference scores of the two classes tie?

    `reference` holds the class scores: [..., C] for top-k indices [..., k], or [..., C] for argmax indices [...].
    """
    if reference is None:
        return None, False
    reference = np.asarray(reference, np.float64)
    while reference.ndim > 2 and reference.shape[-1] == 1:  # [N, C, 1, 1] class scores (caffe2-era): [N, C]
        reference = reference[..., 0]
    scores = reference[index] if reference.ndim == len(index) + 1 else reference[index[:-1]]
    if scores.ndim != 1 or not (0 <= expected < scores.size and 0 <= actual < scores.size):
        return None, False
    return within(scores[expected], scores[actual], tie)


def _cell_tie(index: tuple, expected: np.ndarray, actual: np.ndarray, cell_e: np.ndarray, cell_a: np.ndarray,
              reference: np.ndarray | None, tie: Comparison, exact: bool = False) -> tuple[float | None, bool, bool]:
    """A coordinate mismatch: do the heatmap values that decided between the two answers tie? And does the map
    decide a valid joint (False: a map that decides nothing, a near tie whatever the answers, or a peak ≤ 0)?

    Judged on the map before the answers' finiteness (round 31): a map whose peak is NaN, ±inf or on the score ≤ 0
    threshold decides nothing, and a refinement's NaN there (mmpose's 0 / 0 and inf / inf rescaling) is a NaN that
    ONNX leaves each runtime to carry or drop (OpenVINO's Clip and Max on AVX2 drop it).

    `exact` (`compare_output`): no tie but a map that decides nothing (round 52: on the decoder probe's maps lowered
    to a peak of exactly 0, a patch testing score >= 0 for > 0 answered every such joint at its peak and passed,
    each mismatch "on the score <= 0 threshold"; a patch taking the last of tied maxima passed as tied values)."""
    if reference is None:
        return None, False, True
    heatmap = np.asarray(reference[index], np.float64)  # [H, W]
    if heatmap.ndim != 2:
        return None, False, True
    peak = float(heatmap.max())  # NaN when the map holds one
    settled = _settled_by_peak(peak, expected, actual, tie, exact)
    if settled is not None:
        return settled
    decides = peak > 0  # an invalid joint's answer is a convention, its refinement ill-conditioned
    h, w = heatmap.shape

    def value(cell: np.ndarray) -> float | None:
        return float(heatmap[cell[1], cell[0]]) if 0 <= cell[0] < w and 0 <= cell[1] < h else None

    if tuple(cell_e) != tuple(cell_a):
        first, second = value(cell_e), value(cell_a)
        return (None, False, True) if first is None or second is None else (*within(first, second, tie), decides)
    # same cell: the sub-cell refinement differs; the two neighbours along each differing axis decided it
    gaps = []
    for axis, step in ((0, np.array([1, 0])), (1, np.array([0, 1]))):
        if expected[axis] == actual[axis]:
            continue
        after, before = value(cell_e + step), value(cell_e - step)
        if after is None or before is None:
            return None, False, True
        gaps.append(within(after, before, tie))
    if not gaps:
        return None, False, True
    return max(g for g, _ in gaps), all(t for _, t in gaps), decides


def _bin_tie(index: tuple, expected: np.ndarray, actual: np.ndarray, bin_e: np.ndarray, bin_a: np.ndarray,
             reference: AxisVectors, tie: Comparison, exact: bool = False) -> tuple[float | None, bool, bool]:
    """`_cell_tie` for a position chosen per axis (SimCC): on each axis whose bins differ, do the vector's values at
    the two bins tie? The peak is the twin's score, the smaller maximum. Two answers in one bin are a real mismatch:
    a bin has no refinement. `exact` (the decoder probe): every mismatch is real, on vectors holding NaN or ±inf too:
    simcc_decode finds NaN and the all −inf vector by rule (`first_nan`), where heatmap_argmax leaves a NaN map's
    position to the runtime."""
    x, y = (np.asarray(vector[index], np.float64) for vector in (reference.x, reference.y))
    if exact or x.ndim != 1 or y.ndim != 1 or not (x.size and y.size):
        return None, False, True
    peaks = float(x.max()), float(y.max())  # NaN when the vector holds one
    peak = min(peaks) if all(map(math.isfinite, peaks)) else math.nan  # a vector's NaN or ±inf decides nothing
    settled = _settled_by_peak(peak, expected, actual, tie, exact)
    if settled is not None:
        return settled
    gaps = []
    for vector, first, second in ((x, bin_e[0], bin_a[0]), (y, bin_e[1], bin_a[1])):
        if first == second:
            continue
        if not (0 <= first < vector.size and 0 <= second < vector.size):
            return None, False, True
        gaps.append(within(vector[first], vector[second], tie))
    if not gaps:
        return None, False, True
    return max(g for g, _ in gaps), all(t for _, t in gaps), peak > 0


def _settled_by_peak(peak: float, expected: np.ndarray, actual: np.ndarray, tie: Comparison, exact: bool
                     ) -> tuple[float | None, bool, bool] | None:
    """A mismatch's verdict where the peak of the values it was chosen from settles it before any two values are
    compared (`_cell_tie`, `_bin_tie`); None where they must be compared."""
    if not math.isfinite(peak):
        return None, True, False
    if exact:
        return None, False, True
    if abs(peak) < SUBNORMAL or not exceeds(np.array(abs(peak)), np.array(0.0), tie.atol, tie.rtol):  # on the
        # score ≤ 0 threshold
        return abs(peak), True, False
    if not (np.isfinite(expected).all() and np.isfinite(actual).all()):  # a NaN answer of an invalid joint (score
        # ≤ 0: UDP refines its (−1, −1) from wrapped reads, mmpose inverting in float64) is no position either
        return (abs(peak), True, False) if peak <= 0 else (None, False, True)
    return None


def within(first, second, tie: Comparison) -> tuple[float, bool]:
    gap = abs(float(first) - float(second))
    return gap, not bool(exceeds(np.array(gap), np.array(float(first)), tie.atol, tie.rtol))
