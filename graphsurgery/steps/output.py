"""Output steps for heatmap models (HRNet-style top-down pose): heatmaps → keypoints, refined in heatmap pixels.

Each step's `reference` is written like the HRNet authors' numpy code (`lib/core/inference.py` in
leoxiaobin/deep-high-resolution-net.pytorch); its `build` emits float32 graph arithmetic that is exact where the
authors' code is exact (integer coordinates, quarter-pixel offsets). The step that ends the chain, `to_image`
(heatmap pixels → image coordinates), is in `steps/to_image.py`; the checks it shares with these steps
(`heatmap_hw`, `require`) stay here.

`heatmap_argmax` also leaves "heatmaps" (the float32 heatmaps) for the steps after it; it is not a result (not in
`writes()`), so it never becomes a graph output.
"""

from __future__ import annotations

import math
from itertools import product
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import EXACT, Comparison, OutputStep, StepError
from graphsurgery.steps.maxima import first_maximum_2d, first_nan

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts

#: Flat heatmap positions must stay below this: float32 index arithmetic (Floor((idx + 0.5) / W), Mod) is then
#: exact even when a backend turns the division into a multiplication by 1/W, and OpenVINO's int32 indices fit.
MAX_POSITIONS = 2**22

SCORE_COMPARISON = Comparison("float", rtol=1e-5, atol=1e-6)


def _np_float(var: gs.Variable) -> np.dtype | None:
    return None if var.dtype is None else np.dtype(var.dtype)


def heatmap_hw(shape, what: str) -> tuple[int, int]:
    """(H, W) of a [N, K, H, W] heatmap shape; StepError unless 4-D with static, not too large H and W and K > 0."""
    if shape is None:
        raise StepError(f"the rank of {what} is unknown",
                        "run onnx shape inference on the model first, or export it with static shapes")
    if len(shape) != 4:
        raise StepError(f"{what} has shape {list(shape)}, an output that is not a 4-D heatmap [N, K, H, W]",
                        "set output.target to the heatmap output, or use steps for this kind of output "
                        "(e.g. softmax/topk for classifiers)")
    h, w = shape[2], shape[3]
    if not (isinstance(h, (int, np.integer)) and isinstance(w, (int, np.integer)) and h > 0 and w > 0):
        raise StepError(f"{what} has shape {list(shape)}: its height and width are not static",
                        "export the model with a fixed input size so the heatmap size is known")
    if isinstance(shape[1], (int, np.integer)) and shape[1] == 0:
        raise StepError(f"{what} has shape {list(shape)}: no joints (K = 0)",
                        "set output.target to the heatmap output, or re-export the model with its joints")
    if h * w >= MAX_POSITIONS:
        raise StepError(f"{what} is {h}×{w} = {h * w} positions; heatmap_argmax supports fewer than 2^22 "
                        "(float32 index arithmetic is exact only there)",
                        "use a smaller heatmap (this is not a pose heatmap size), or decode it outside the graph")
    return int(h), int(w)


def _one_stride(maps: tuple, image: tuple[int, int]) -> bool:
    """Do maps of (H, W) sit at one stride of an (H, W) image (within 10 %, for exports that round)?"""
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in maps):
        return False
    ratios = [image[0] / maps[0], image[1] / maps[1]]
    return min(ratios) >= 1 and max(ratios) <= 1.1 * min(ratios)


def refuse_channel_last(shape, input_size: tuple[int, int] | None) -> None:
    """Channel-last heatmaps [N, H, W, K] (tf2onnx exports of Keras pose nets) read as [N, K, H, W] decode H
    "joints" of W × K maps: wrong keypoints that the twins, reading them the same way, agreed with (a false PASS).
    Refused when the model's input size says so: (H, W) at one stride of it on axes 1, 2 and not on axes 2, 3."""
    if input_size is None or len(shape) != 4:
        return
    image = (input_size[1], input_size[0])
    if _one_stride(tuple(shape[1:3]), image) and not _one_stride(tuple(shape[2:4]), image):
        raise StepError(f"the model output {list(shape)} has its joints last ([N, H, W, K] at stride "
                        f"{image[0] / shape[1]:g} of the {image[0]}×{image[1]} input); heatmap decoding reads "
                        "[N, K, H, W]", "export the heatmaps channel-first (e.g. a Transpose perm [0, 3, 1, 2] "
                        "at the model's end)")


def require(env: dict, names: tuple[str, ...], step: str) -> None:
    missing = [n for n in names if n not in env or env[n] is None]
    if missing:
        raise StepError(f"{step} needs {', '.join(missing)}, which no earlier step produces",
                        f"put a `heatmap_argmax` step before `{step}`")


@register
class HeatmapArgmax(OutputStep):
    """Decode heatmaps into keypoints: per joint, where the maximum is and its value.

    HRNet's `get_max_preds`, exactly. Reads "output" (heatmaps [N, K, H, W],
    float; H and W static), writes "keypoints" [N, K, 2] float32 (x, y in
    heatmap pixels, compared exactly) and "scores" [N, K, 1] float32 (the
    maxima), and leaves "heatmaps" for the steps after it.

    The maximum is searched over the flattened H·W map and ties go to the
    first position; x = idx mod W, y = floor(idx / W); joints whose score is
    <= 0 get (0, 0). NaN counts as the maximum, as in numpy: a map holding
    any NaN gets score NaN and keypoint (0, 0). An all −inf map gets score
    −inf and (0, 0). With `invalid: minus_one` it is mmpose's
    `get_heatmap_maximum` instead: (−1, −1) where the maximum is <= 0 (or
    the map all −inf), and a map holding NaN keeps numpy's argmax, its first
    NaN (NaN is not <= 0). Maps of 2^22 positions or more are refused (float32
    index arithmetic is exact below). Maps a model already puts through a
    Sigmoid or Softmax decode to the same keypoints; their scores are those
    values (a sigmoid's are > 0: no joint is set to (0, 0) or (−1, −1)).

    method exact (default): the row maxima (ReduceMax), the first row
      holding the peak, that one row read back (GatherElements; a one-hot
      select before opset 11) and the first position in it (Less, Where,
      ReduceMin on [N, K, H] and [N, K, W]), NaN found with IsNaN, (x, y)
      read from a table of positions with one Gather.
      Nothing is left to the runtime: onnxruntime, OpenVINO on every CPU
      and the numpy twin agree bit for bit, ties, NaN, ±inf and subnormal
      values included, at every opset. The cheaper one on OpenVINO (which
      turns ArgMax into TopK).
    method argmax: the classic Reshape/ArgMax/Mod/Floor/Concat/Greater/Mul
      chain of the HRNet ONNX write-ups, to compare against. Ties follow
      the ONNX spec from opset 12 (first position); NaN, ties before opset
      12 and the score of an all −inf map are the runtime's (OpenVINO's
      answer for NaN changes with the CPU's instruction set).
    Measured on one set of 17×64×48 maps (benchmarks/decode_cost.py
    --runtimes …, one runtime per run, Intel Xeon with AMX; BENCHMARKS.md):
    exact 50.2 µs on onnxruntime, 69.8 µs on OpenVINO; argmax 59.1 µs on
    onnxruntime, 2175 µs on OpenVINO (TopK).
    """

    step_name: ClassVar[str] = "heatmap_argmax"
    reads: ClassVar[tuple[str, ...]] = ("output",)
    method: Literal["exact", "argmax"] = Field(
        default="exact", description="exact: same answer on every runtime and CPU; argmax: the classic ArgMax chain")
    invalid: Literal["zero", "minus_one"] = Field(
        default="zero", description="zero: the HRNet authors' (0, 0) where the maximum is <= 0; minus_one: mmpose's "
                                    "get_heatmap_maximum, (-1, -1)")

    def writes(self) -> dict[str, Comparison]:
        return {"keypoints": EXACT, "scores": SCORE_COMPARISON}

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        heatmaps = env["output"]
        h, w = heatmap_hw(heatmaps.shape, "the model output")
        refuse_channel_last(heatmaps.shape, facts.input_size if facts is not None else None)
        dtype = _np_float(heatmaps)
        if dtype is not None and dtype.kind != "f":
            raise StepError(f"the heatmaps are {dtype}, not floating point",
                            "set output.target to the heatmap output")
        if dtype is not None and dtype != np.float32:
            heatmaps = em.op("Cast", [heatmaps], {"to": TensorProto.FLOAT}, dtype=np.float32, shape=heatmaps.shape)
        f32 = np.float32
        flat = em.op("Reshape", [heatmaps, em.const("shape", [0, 0, h * w], np.int64)], dtype=f32)  # [N, K, H·W]
        if self.method == "exact":
            maximum = first_maximum_2d(em, heatmaps, flat, h, w)                                  # [N, K, 1]
            found = em.op("Greater", [maximum.comparable, em.const("zero", 0.0, f32)], dtype=np.bool_)
            none = em.const("none", h * w, np.int32)
            if self.invalid == "zero":
                position = em.op("Where", [found, maximum.first, none], dtype=np.int32)
            else:  # mmpose: a map holding NaN keeps numpy's argmax (its first NaN); NaN is not <= 0
                found = em.op("Where", [found, maximum.first, none], dtype=np.int32)
                position = em.op("Where", [maximum.has_nan, first_nan(em, flat, 3, h * w), found], dtype=np.int32)
            # (x, y) of every position, and the invalid joint's (0, 0) or (−1, −1) at the extra position H·W: one
            # Gather, exact integers
            table = np.full((h * w + 1, 2), 0.0 if self.invalid == "zero" else -1.0, f32)
            table[:-1, 0], table[:-1, 1] = np.tile(np.arange(w), h), np.repeat(np.arange(h), w)
            picked = em.op("Gather", [em.const("coordinates", table), position], {"axis": 0}, dtype=f32)
            keypoints = em.op("Reshape", [picked, em.const("pairs", [0, 0, 2], np.int64)], dtype=f32)
            return {"keypoints": keypoints, "scores": maximum.value, "heatmaps": heatmaps}
        position = em.op("ArgMax", [flat], {"axis": 2, "keepdims": 1}, dtype=np.int64)
        idx = em.op("Cast", [position], {"to": TensorProto.FLOAT}, dtype=f32)
        scores = em.reduce_max(flat, [2], keepdims=True, dtype=f32)
        # floor((idx + 0.5) / W): the half keeps exact multiples of W away from a rounding edge, so the result
        # stays right even when a backend replaces the division by a multiplication with 1/W.
        y = em.op("Floor", [em.op("Div", [em.op("Add", [idx, em.const("half", 0.5, f32)], dtype=f32),
                                          em.const("width", float(w), f32)], dtype=f32)], dtype=f32)
        x = em.float_mod(idx, float(w), y, dtype=f32)
        coords = em.op("Concat", [x, y], {"axis": 2}, dtype=f32)                                # [N, K, 2]
        found = em.op("Cast", [em.op("Greater", [scores, em.const("zero", 0.0, f32)], dtype=np.bool_)],
                      {"to": TensorProto.FLOAT}, dtype=f32)
        keypoints = em.op("Mul", [coords, found], dtype=f32)
        if self.invalid == "minus_one":  # found − 1 is −1 where not found, 0 where found
            keypoints = em.op("Add", [keypoints, em.op("Sub", [found, em.const("one", 1.0, f32)], dtype=f32)],
                              dtype=f32)
        return {"keypoints": keypoints, "scores": scores, "heatmaps": heatmaps}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        batch_heatmaps = np.asarray(env["output"])
        heatmap_hw(batch_heatmaps.shape, "the model output")
        batch_heatmaps = batch_heatmaps.astype(np.float32)
        if self.invalid == "minus_one":
            return {**_heatmap_maximum_mmpose(batch_heatmaps), "heatmaps": batch_heatmaps}
        # get_max_preds, as written by the authors
        batch_size = batch_heatmaps.shape[0]
        num_joints = batch_heatmaps.shape[1]
        width = batch_heatmaps.shape[3]
        heatmaps_reshaped = batch_heatmaps.reshape((batch_size, num_joints, -1))
        idx = np.argmax(heatmaps_reshaped, 2)
        maxvals = np.amax(heatmaps_reshaped, 2)

        maxvals = maxvals.reshape((batch_size, num_joints, 1))
        idx = idx.reshape((batch_size, num_joints, 1))

        preds = np.tile(idx, (1, 1, 2)).astype(np.float32)

        preds[:, :, 0] = (preds[:, :, 0]) % width
        preds[:, :, 1] = np.floor((preds[:, :, 1]) / width)

        pred_mask = np.tile(np.greater(maxvals, 0.0), (1, 1, 2))
        pred_mask = pred_mask.astype(np.float32)

        preds *= pred_mask
        return {"keypoints": preds, "scores": maxvals.astype(np.float32), "heatmaps": batch_heatmaps}


def _heatmap_maximum_mmpose(heatmaps: np.ndarray) -> dict[str, np.ndarray]:
    """mmpose 1.x's `get_heatmap_maximum` (mmpose/codecs/utils/post_processing.py) on [B, K, H, W], as it behaves:
    the first maximum's (x, y), (−1, −1) where the maximum is <= 0; scores kept [B, K, 1] like `get_max_preds`."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b * k, -1)
    y_locs, x_locs = np.unravel_index(np.argmax(flat, axis=1), shape=(h, w))
    locs = np.stack((x_locs, y_locs), axis=-1).astype(np.float32)
    vals = np.amax(flat, axis=1)
    with np.errstate(invalid="ignore"):
        locs[vals <= 0.] = -1
    return {"keypoints": locs.reshape(b, k, 2), "scores": vals.reshape(b, k, 1).astype(np.float32)}


@register
class QuarterOffset(OutputStep):
    """Refine keypoints by a quarter pixel towards the higher neighbour.

    HRNet's `POST_PROCESS` (on in the authors' test config). Reads
    "keypoints" and "heatmaps", so `heatmap_argmax` must come before it (and
    `to_image` after it); writes "keypoints" (compared exactly). No
    parameters.

    With px = floor(x + 0.5), py = floor(y + 0.5), and only when
    1 < px < W-1 and 1 < py < H-1 (strict, as the authors wrote it), adds
    0.25·sign(hm[py][px+1] − hm[py][px−1]) to x and
    0.25·sign(hm[py+1][px] − hm[py−1][px]) to y; an exact tie adds 0. Joints
    zeroed by `heatmap_argmax` sit at (0, 0) and fail the border test, as in
    the authors' code. Heatmaps smaller than 4 in H or W have no such
    position: nothing changes. −inf on both sides gives NaN, as in the
    authors' code. Neighbours are read with GatherElements from opset 11,
    with a one-hot select (a few passes over the maps) at 9 and 10.
    gating mmpose: mmpose's `refine_keypoints` instead: x, y truncated
    (as astype(int)), x moves where 1 < x < W−1 and 0 < y < H, y where
    1 < y < H−1 and 0 < x < W, each axis on its own.
    """

    step_name: ClassVar[str] = "quarter_offset"
    reads: ClassVar[tuple[str, ...]] = ("keypoints", "heatmaps")
    gating: Literal["hrnet", "mmpose"] = Field(
        default="hrnet", description="hrnet: the authors' POST_PROCESS; mmpose: mmpose's refine_keypoints")

    def writes(self) -> dict[str, Comparison]:
        return {"keypoints": EXACT}

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        require(env, self.reads, self.step_name)
        keypoints, heatmaps = env["keypoints"], env["heatmaps"]
        h, w = heatmap_hw(heatmaps.shape, "the heatmaps")
        f32 = np.float32
        if self.gating == "mmpose" and (h < 3 or w < 3):
            raise StepError(f"quarter_offset gating mmpose needs heatmaps of at least 3×3; these are {h}×{w}",
                            "use gating hrnet, or no quarter_offset for maps this small")
        if (h < 4 or w < 4) if self.gating == "hrnet" else (h < 4 and w < 4):  # no gate can open
            return {"keypoints": em.op("Identity", [keypoints], dtype=f32)}
        flat = em.op("Reshape", [heatmaps, em.const("shape", [0, 0, h * w], np.int64)], dtype=f32)  # [N, K, H·W]
        if self.gating == "hrnet":
            pixel = em.op("Floor", [em.op("Add", [keypoints, em.const("half", 0.5, f32)], dtype=f32)], dtype=f32)
            # 1 < p < size-1 for both coordinates ⇔ max(|p − size/2| − (size/2 − 1)) < 0 (exact in float32)
            inside = em.op("Less", [em.reduce_max(off_centre(em, pixel, (w / 2, h / 2), (w / 2 - 1, h / 2 - 1)),
                                                  [2], keepdims=True, dtype=f32), em.const("zero", 0.0, f32)],
                           dtype=np.bool_)                                                      # [N, K, 1]
        else:
            pixel = truncate(em, keypoints)
            # per axis: x moves where 1 < x < W−1 and 0 < y < H; y where 1 < y < H−1 and 0 < x < W
            own = off_centre(em, pixel, (w / 2, h / 2), (w / 2 - 1, h / 2 - 1))              # [N, K, 2]
            other = off_centre(em, pixel, (w / 2, h / 2), (w / 2, h / 2))
            other = em.op("Gather", [other, em.const("swap", [1, 0], np.int64)], {"axis": 2}, dtype=f32)
            zero = em.const("zero", 0.0, f32)
            inside = em.op("And", [em.op("Less", [own, zero], dtype=np.bool_),
                                   em.op("Less", [other, zero], dtype=np.bool_)], dtype=np.bool_)  # [N, K, 2]
        # px + py·W, element-wise (not MatMul, which a bf16 precision hint would run in bf16)
        centre = em.reduce_sum(em.op("Mul", [pixel, em.const("strides", [1.0, float(w)], f32)], dtype=f32), [2],
                               keepdims=True, dtype=f32)
        # outside the interior, read around (1, 1) instead: every neighbour index stays in range
        safe = em.op("Where", [inside, centre, em.const("interior", float(w + 1), f32)], dtype=f32)
        safe = em.op("Cast", [safe], {"to": TensorProto.INT64}, dtype=np.int64)
        steps = em.const("steps", [1, w], np.int64)                                            # (x, y) neighbours
        after = em.gather_last(flat, em.op("Add", [safe, steps], dtype=np.int64), 3, h * w, dtype=f32)
        before = em.gather_last(flat, em.op("Sub", [safe, steps], dtype=np.int64), 3, h * w, dtype=f32)
        difference = em.op("Sub", [after, before], dtype=f32)
        # Sign(NaN) is not in the spec: NaN (−inf on both sides, as in the authors' code) is passed on explicitly
        sign = em.op("Where", [em.op("IsNaN", [difference], dtype=np.bool_), difference,
                               em.op("Sign", [difference], dtype=f32)], dtype=f32)
        shift = em.op("Mul", [sign, em.const("quarter", 0.25, f32)], dtype=f32)
        shift = em.op("Where", [inside, shift, em.const("none", 0.0, f32)], dtype=f32)
        return {"keypoints": em.op("Add", [keypoints, shift], dtype=f32)}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        require(env, self.reads, self.step_name)
        batch_heatmaps = env["heatmaps"]
        coords = np.array(env["keypoints"], dtype=np.float32)  # a copy
        if self.gating == "mmpose":
            return {"keypoints": _refine_keypoints_mmpose(coords, batch_heatmaps)}
        heatmap_height = batch_heatmaps.shape[2]
        heatmap_width = batch_heatmaps.shape[3]
        # the POST_PROCESS loop of get_final_preds, as written by the authors
        for n in range(coords.shape[0]):
            for p in range(coords.shape[1]):
                hm = batch_heatmaps[n][p]
                px = int(math.floor(coords[n][p][0] + 0.5))
                py = int(math.floor(coords[n][p][1] + 0.5))
                if 1 < px < heatmap_width - 1 and 1 < py < heatmap_height - 1:
                    diff = np.array(
                        [
                            hm[py][px + 1] - hm[py][px - 1],
                            hm[py + 1][px] - hm[py - 1][px]
                        ]
                    )
                    coords[n][p] += np.sign(diff) * .25
        return {"keypoints": coords}


def off_centre(em: Emitter, pixel: gs.Variable, middle: tuple[float, float], reach: tuple[float, float]
                ) -> gs.Variable:
    """|p − middle| − reach per coordinate: < 0 exactly where middle − reach < p < middle + reach (float32 exact
    for pixel positions)."""
    f32 = np.float32
    away = em.op("Abs", [em.op("Sub", [pixel, em.const("middle", list(middle), f32)], dtype=f32)], dtype=f32)
    return em.op("Sub", [away, em.const("reach", list(reach), f32)], dtype=f32)


def truncate(em: Emitter, x: gs.Variable) -> gs.Variable:
    """numpy's astype(int) on float32 positions: towards zero (−1 stays −1)."""
    f32 = np.float32
    negative = em.op("Less", [x, em.const("zero", 0.0, f32)], dtype=np.bool_)
    return em.op("Where", [negative, em.op("Ceil", [x], dtype=f32), em.op("Floor", [x], dtype=f32)], dtype=f32)


def _refine_keypoints_mmpose(keypoints: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """mmpose 1.x's `refine_keypoints` (mmpose/codecs/utils/refinement.py) on a batch: each axis moves a quarter
    pixel towards its higher neighbour under its own gate."""
    n_maps, k_joints = keypoints.shape[:2]
    h, w = heatmaps.shape[2:]
    for n, k in product(range(n_maps), range(k_joints)):
        x, y = keypoints[n, k, :2].astype(int)
        dx = heatmaps[n, k, y, x + 1] - heatmaps[n, k, y, x - 1] if 1 < x < w - 1 and 0 < y < h else 0.
        dy = heatmaps[n, k, y + 1, x] - heatmaps[n, k, y - 1, x] if 1 < y < h - 1 and 0 < x < w else 0.
        keypoints[n, k] += np.sign([dx, dy], dtype=np.float32) * 0.25
    return keypoints
