"""How far float rounding alone moves the reference pipeline's own answer: the allowance for ill-conditioned
positions.

A sub-cell refinement divides by the curvature of the map around its peak (DARK and UDP solve a 2×2 Hessian). Where
the map is nearly flat there, the answer is ill-conditioned: the graph's float32 arithmetic and the twin's float64
(mmpose's) land 1e-3 cells to many cells apart, and neither is wrong. The distance alone cannot tell that from a
wrong patch, so verify asks the twins: the decoding steps' twins run again on the maps they read, each value moved
by ± `spread` (random signs, `PATTERNS` patterns, and stripes wider than a blur: `_stripes`), and how far each
answer moves is that position's wobble. A mismatch within the output's atol plus twice its wobble (each side
rounds on its own) is unstable (allowed, counted apart); a wrong patch also differs where the peak is
well-conditioned and the wobble is near 0. Nothing here knows any particular step.

Measured on a random tiny pose model (DARK, 4,080 joints): 157 graph/twin distances over 1e-3 cells, all within
the wobble at a spread of 1e-5 (relative); at 8 ulp (1e-6) 118 were. The graph's 11 × 11 blur alone accumulates
up to ~100 ulp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphsurgery.model import ModelFacts
from graphsurgery.recipe import Recipe
from graphsurgery.steps.base import Comparison
from graphsurgery.twins import postprocess

#: sign patterns tried: the largest move counts
PATTERNS = 4
#: float32 rounding a refinement's graph arithmetic may add to the values it reads, relative (≈ 84 ulp)
ROUNDING = Comparison("float", rtol=1e-5, atol=0.0)
#: width, in values, of the stripes of the smooth sign patterns tried beside the random ones: wider than a
#: refinement's blur (UDP's and DARK's 11 × 11 Gaussian, σ 2), which averages random signs away
STRIPE = 9


def wobble(recipe: Recipe, facts: ModelFacts, parts: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], name: str,
           kind: str, spread: Comparison = ROUNDING, seed: int = 0) -> np.ndarray | None:
    """Per position of output `name` (of `kind` "coordinates": [...] of its [..., 2]; "indices": each index), the
    largest distance the twins' answer moves when every value they decode moves by ± max(atol, rtol·|value|).
    `parts`: per batch, the decoded model output and the extra inputs its twins got (`verification._run_unpatched`).
    None when the twins do not write `name` or it is not numbers."""
    coordinates = kind == "coordinates"
    rng = np.random.default_rng(seed)
    moves = []
    for values, extras in parts:
        base = postprocess(recipe, values, facts, extras, decoded=True).get(name)
        if base is None or not np.issubdtype(np.asarray(base).dtype, np.number):
            return None
        base = np.asarray(base, np.float64)
        exact = np.asarray(values, np.float64)
        step = np.where(np.isfinite(exact), np.maximum(spread.atol, spread.rtol * np.abs(exact)), 0.0)
        moved = np.zeros(base.shape[:-1] if coordinates else base.shape)
        for signs in [rng.choice(np.array([-1.0, 1.0]), exact.shape) for _ in range(PATTERNS)] + _stripes(exact.shape):
            # at least float32 (round 31): float16 maps cast back to float16 rounded the ±1e-5 away, the wobble of
            # every DARK or UDP joint on them was 0, and right patches failed by 0.002 px on onnxruntime alone
            moved_values = (exact + signs * step).astype(np.promote_types(values.dtype, np.float32))
            other = postprocess(recipe, moved_values, facts, extras, decoded=True)[name]
            moved = np.maximum(moved, _distance(np.asarray(other, np.float64), base, coordinates))
        moves.append(moved)
    return np.concatenate(moves) if moves else None


def _stripes(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Sign patterns of STRIPE-wide stripes across each of the last two axes, at two phases. Random signs model
    rounding value by value, but a refinement that first blurs the map (UDP, DARK) averages them to about a
    seventh (σ 2): it then read ~12 ulp where its own float32 graph rounds the blurred map by up to ~100, and a
    right patch failed on ONNX Runtime (UDP on nearly flat maps: 0.0085 px apart, wobble 0.0027; round 29).
    Stripes wider than the blur reach the refinement at the full ±`ROUNDING`."""
    patterns = []
    for axis in range(max(len(shape) - 2, 0), len(shape)):
        index = np.arange(shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        patterns += [np.broadcast_to(np.where((index + phase) // STRIPE % 2 == 0, 1.0, -1.0), shape)
                     for phase in (0, STRIPE // 2)]
    return patterns


def _distance(a: np.ndarray, b: np.ndarray, coordinates: bool) -> np.ndarray:
    """Euclidean per position for coordinates, absolute for indices; a position that turns NaN (or was NaN) moved
    by nothing that can be measured: 0, so it excuses nothing."""
    with np.errstate(invalid="ignore"):
        delta = np.abs(a - b)
        distance = np.sqrt((delta ** 2).sum(axis=-1)) if coordinates else delta
    return np.nan_to_num(distance, nan=0.0, posinf=0.0)


class Wobbles:
    """`wobble` for each backend's reference side and position output, measured the first time a comparison asks
    (most never do: no mismatch) and kept. Unpatched → patched on one backend decodes the same maps on both sides:
    only the refinement's rounding (`ROUNDING`) is allowed. Across backends the maps themselves differ within the
    near-tie tolerance `tie`, so that spread is allowed too."""

    def __init__(self, recipe: Recipe, facts: ModelFacts,
                 decoded: dict[str, Sequence[tuple[np.ndarray, dict[str, np.ndarray]]]], kinds: dict[str, str],
                 tie: Comparison):
        self._recipe, self._facts, self._decoded, self._kinds = recipe, facts, decoded, kinds
        self._across = Comparison("float", rtol=max(tie.rtol, ROUNDING.rtol), atol=max(tie.atol, ROUNDING.atol))
        self._measured: dict[tuple[str, str, bool], np.ndarray | None] = {}

    def of(self, backend: str, across: bool) -> dict[str, Callable[[], np.ndarray | None]]:
        """Per position output, the wobble of `backend`'s reference answers, measured on demand."""
        return {name: (lambda name=name: self._measure(backend, name, across)) for name in self._kinds}

    def _measure(self, backend: str, name: str, across: bool) -> np.ndarray | None:
        key = (backend, name, across)
        if key not in self._measured:
            self._measured[key] = wobble(self._recipe, self._facts, self._decoded[backend], name, self._kinds[name],
                                         self._across if across else ROUNDING)
        return self._measured[key]
