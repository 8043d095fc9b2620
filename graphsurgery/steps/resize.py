"""The `resize` input step: from whatever image size the caller has to the model's, inside the graph.

Resizing is where re-implemented pipelines drift most (pixel-centre conventions, rounding, antialiasing differ
between libraries), so the recipe declares every choice and the numpy twin implements exactly those semantics:
the ONNX Resize definition and the libraries' filters, written independently in `resampling`. The filtered modes
are emitted by `filtered`; `libraries` measures how far the step is from `cv2.resize` or PIL's `Image.resize`, so a
user knows what changed against an OpenCV or PIL pipeline.

Measured with onnxruntime 1.32 and OpenVINO 2026.4 (tests/test_resize.py):
- Source coordinates are computed in float32, as both runtimes do: half_pixel is (x + 0.5) / (out / in) − 0.5
  with the scale out / in rounded to float32. At a few exact nearest-neighbour ties onnxruntime lands on the other
  side (5 of 3,600 combinations of sizes 2–300 and the four nearest modes, half_pixel; e.g. 26 → 61 rows with
  round_prefer_floor, row 30); OpenVINO and the twin agree there. Linear and cubic are unaffected.
- OpenVINO's ONNX reader ignores Resize's `antialias` attribute (it resizes as without it, silently) and
  `exclude_outside` too. So the filtered modes (antialias, area, lanczos) do not use the Resize op: they are two
  MatMuls with weight matrices the graph computes from the sizes, PIL's resampling (and OpenCV's INTER_AREA)
  written in standard ops, the same on every runtime (graph vs twin within 2e-6 on both).
- Cubic on a channel-last (NHWC) tensor: onnxruntime refuses to shrink it and OpenVINO returns garbage, so the
  step asks for NCHW there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, get_args

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field, field_validator, model_validator

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import Dim, SizedStep, StepError, TensorSpec, hw_axes, with_hw
from graphsurgery.steps.filtered import emit_filtered
from graphsurgery.steps.input import _require_float
from graphsurgery.steps.libraries import pil_equivalent, resize_vs_opencv, resize_vs_pil
from graphsurgery.steps.resampling import filtered_resample, filtered_resample_bounds, onnx_resample

Interpolation = Literal["nearest", "linear", "cubic", "area", "lanczos"]
CoordinateMode = Literal["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NearestMode = Literal["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
Fit = Literal["stretch", "crop", "letterbox", "height"]
SideRounding = Literal["floor", "round", "ceil"]
#: How a hand-written pipeline may round a half instead (C's round, int(x + 0.5); and down): told apart from `round`
#: by `Resize.rounding_sizes`, not offered as a `side_rounding`
HalfRounding = Literal["half_up", "half_down"]
PadAnchor = Literal["center", "top_left"]
CropOffset = Literal["round", "floor"]
MAX_SIDE = 65_536
#: The largest |pad_value|: pixels are 0–255 (or 65,535); at 1e19 a model squaring its input overflowed float32, at
#: 1e8 (over /255) one computing in float16 overflowed it, each on one runtime or graph and not the other
MAX_PAD_VALUE = 1e6

#: Which parameters mean something only with some settings: (parameter, setting it needs, the allowed values).
ONLY_WITH = (
    ("nearest_mode", "interpolation", ("nearest",)),
    ("cubic_coeff_a", "interpolation", ("cubic",)),
    ("antialias", "interpolation", ("linear", "cubic")),
    ("coordinate_transformation_mode", "interpolation", ("nearest", "linear", "cubic")),
    ("crop_fraction", "fit", ("crop",)),
    ("crop_offset", "fit", ("crop",)),
    ("pad_value", "fit", ("letterbox", "height")),
    ("pad_anchor", "fit", ("letterbox", "height")),
    ("side_rounding", "fit", ("crop", "letterbox", "height")),
)


def centre_start(excess, rule: CropOffset) -> np.ndarray:
    """Where a centre cut starts, for the (non-negative, integer) excess of the image over the cut: half of it
    rounded half to even, as torchvision's round, or down (`crop_offset: floor`, PaddleClas's `(w' − W) // 2`)."""
    return np.floor_divide(excess, 2) if rule == "floor" else np.round(np.divide(excess, 2))


def emit_centre_start(em: Emitter, excess: gs.Variable, rule: CropOffset) -> gs.Variable:
    """`centre_start` in the graph, of an int64 [2] excess (Round rounds half to even): int64 [2]."""
    f32, i64 = np.float32, np.int64
    if rule == "floor":
        return em.op("Div", [excess, em.const("two", 2, i64)], dtype=i64, shape=[2])
    half = em.op("Div", [em.op("Cast", [excess], {"to": TensorProto.FLOAT}, dtype=f32), em.const("two", 2.0, f32)],
                 dtype=f32)
    return em.op("Cast", [em.op("Round", [half], dtype=f32)], {"to": TensorProto.INT64}, dtype=i64, shape=[2])


@register
class Resize(SizedStep):
    """Resize the image to the model's height and width, from any size the caller feeds (H and W become free).

    `interpolation`: nearest | linear (default) | cubic, with ONNX Resize semantics (the numpy twin implements
    them), tuned by `coordinate_transformation_mode` (half_pixel, the default, maps pixel centres as OpenCV and
    PIL do; pytorch_half_pixel; align_corners; asymmetric), `nearest_mode` (nearest only) and `cubic_coeff_a`
    (cubic only; -0.75 as OpenCV and PyTorch, -0.5 as PIL). Filtered resampling, built from standard ops so that
    every runtime computes it (OpenVINO ignores Resize's own antialias):
    - `antialias: true` (linear/cubic): PIL's resampling (torchvision's antialias): the kernel stretched by the
      scale when shrinking, taps past the edges left out, each output renormalised;
    - `area`: OpenCV's INTER_AREA (the share of each source pixel; its own two-tap blend when a side grows);
    - `lanczos`: PIL's LANCZOS (Lanczos-3, antialiased).
    These cost two dense MatMuls (BENCHMARKS.md measures a 4000×3000 photo). PIL resamples uint8 images in two
    passes, each clipped to 0–255 and rounded: `clamp: [0, 255]` clips each pass and `round: true` rounds it (half
    to even); with either, the passes run in Pillow 13's order (the rows first when the height shrinks by more than
    twice as many pixels as the width, else the columns), chosen in the graph from the image's size. With both,
    antialiased bilinear/bicubic and lanczos give PIL's uint8 result within 1 level; without them, overshoot at
    hard edges is kept, as a float pipeline keeps it. A rounded pass can land a level away from the numpy twin
    where its float32 sum falls within rounding error of a half (a few pixels per image): verify then checks the
    graph's network input and the outputs apart (`graphsurgery.staged`).
    `fit` says what happens to the aspect ratio:
    - stretch (default): each side to the model's size; the aspect ratio is not kept.
    - crop: scale, keeping the aspect ratio, so the image covers floor(H / crop_fraction) × floor(W /
      crop_fraction): the binding side gets exactly that, the other side floor(side · scale), in integer
      arithmetic; then cut the model's H × W from the centre, the offset rounded half to even as torchvision's
      CenterCrop does (`crop_offset: floor`: rounded down, as PaddleClas's CropImage, `(w' − W) // 2`). With
      crop_fraction 0.875 and a 224 model this is torchvision's ImageNet evaluation transform: short side to 256,
      centre crop 224.
    - letterbox: scale, keeping the aspect ratio, to fit inside H × W (the other side floor(side · scale), at
      least 1), centre it (the odd pixel of padding goes to the bottom / right) and fill the rest with pad_value.
      `pad_anchor: top_left` puts the image in the top-left corner instead (YOLO-style and OCR pipelines).
    - height: scale to the model's height, keeping the aspect ratio; the width is capped at the model's width and
      the rest padded per `pad_anchor` (text-line recognisers: PaddleOCR's resize_norm_img rounds it up, `ceil`).
    `side_rounding` (crop, letterbox, height): how the aspect-kept side is rounded to whole pixels: floor
    (default, torchvision), round (half to even, as Python's round: PIL-style pipelines) or ceil.
    `size`: [height, width] the model wants; read from the model input by default (give it when that is dynamic).
    Needs float32 input (put it after `cast`); the result is not rounded back to integers. Opset 11; cubic without
    antialias needs the NCHW layout.
    """

    step_name: ClassVar[str] = "resize"
    min_opset: ClassVar[int] = 11

    interpolation: Interpolation = "linear"
    coordinate_transformation_mode: CoordinateMode = "half_pixel"
    nearest_mode: NearestMode = "round_prefer_floor"
    cubic_coeff_a: float = Field(default=-0.75, ge=-2.0, le=0.0)
    antialias: bool = False
    fit: Fit = "stretch"
    crop_fraction: float = Field(default=1.0, gt=0.05, le=1.0, description="share of the covered size kept by crop")
    crop_offset: CropOffset = Field(default="round", description="crop: the centre cut's offset rounded half to even "
                                    "(torchvision) or down (PaddleClas)")
    pad_value: float = Field(default=0.0, description="value of letterbox padding, a pixel value in the caller's "
                             f"units (at most ±{MAX_PAD_VALUE:,.0f})",
                             json_schema_extra={"minimum": -MAX_PAD_VALUE, "maximum": MAX_PAD_VALUE})
    pad_anchor: PadAnchor = Field(default="center", description="letterbox/height: where the image sits")
    side_rounding: SideRounding = Field(default="floor", description="rounding of the aspect-kept side")
    clamp: tuple[float, float] | None = Field(default=None, description="filtered modes: clip each pass to [low, "
                                              "high], as PIL's 8-bit resampling does ([0, 255])")
    round: bool = Field(default=False, description="filtered modes: round each pass half to even, as PIL's 8-bit "
                        "resampling stores it")

    @field_validator("pad_value")
    @classmethod
    def _pixel_value(cls, value: float) -> float:
        """Round 41: ±1e20 (the old bound was 1e30) overflowed float32 in a model that squares its input and float16
        in one that computes in it, where the runtimes and graphs overflow apart: a right patch FAILed."""
        if not abs(value) <= MAX_PAD_VALUE:
            raise ValueError(f"pad_value is a pixel value from −{MAX_PAD_VALUE:,.0f} to {MAX_PAD_VALUE:,.0f}, not "
                             f"{value!r}: beyond, a model's float arithmetic overflows, differently on each runtime")
        return value

    @model_validator(mode="after")
    def _meaningful(self):
        for name, setting, allowed in ONLY_WITH:
            if name in self.model_fields_set and getattr(self, setting) not in allowed:
                raise ValueError(f"{name} applies only with {setting} {' or '.join(allowed)}, "
                                 f"not {getattr(self, setting)}")
        for name in ("clamp", "round"):
            if name in self.model_fields_set and getattr(self, name) and not self.filtered:
                raise ValueError(f"{name} acts on the passes of the filtered modes (antialias, area, lanczos)")
        if self.clamp is not None and not self.clamp[0] < self.clamp[1]:
            raise ValueError("clamp is [low, high] with low < high")
        if self.antialias and self.coordinate_transformation_mode != "half_pixel":
            raise ValueError("antialias filters about pixel centres (PIL's convention): it goes with "
                             "coordinate_transformation_mode half_pixel")
        return self

    @property
    def filtered(self) -> bool:
        """Resampled with a kernel stretched over the source pixels (PIL's resampling): area, lanczos, antialias."""
        return self.antialias or self.interpolation in ("area", "lanczos")

    @property
    def pass_order_shows(self) -> bool:
        """Whether the order of the filtered passes changes the result: they are clipped or rounded, as PIL's are
        (area imitates OpenCV, which has no such order: its passes stay columns first)."""
        return (self.clamp is not None or self.round) and self.interpolation != "area"

    def rows_first(self, hw: tuple[int, int], resized_hw: tuple[int, int]) -> bool:
        """Whether the filtered passes run the rows first: where the order shows and Pillow 13 would (the height
        shrinks by more than twice as many pixels as the width)."""
        (h, w), (new_h, new_w) = hw, resized_hw
        return self.pass_order_shows and h - new_h > 0 and h - new_h > 2 * (w - new_w)

    def against_library(self, image: np.ndarray) -> dict | None:
        if pil_equivalent(self) is not None and image.dtype == np.uint8:
            return resize_vs_pil(self, image)
        return resize_vs_opencv(self, image)

    # --- the contract ------------------------------------------------------------------------------------------

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        _require_float(spec, "resize")
        if self.interpolation == "cubic" and spec.layout == "NHWC" and not self.filtered:
            raise StepError("cubic resize needs an NCHW tensor (onnxruntime cannot shrink NHWC cubically and "
                            "OpenVINO 2026.4 computes it wrongly)", "put resize after the `layout: {to: NCHW}` step")
        return super().spec_after(spec)

    def bind(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> Resize:
        bound = super().bind(shape_after, spec_before)
        if bound.interpolation == "cubic" and not bound.filtered and 1 in bound.target_size():
            # round 40: ONNX Runtime's layout optimizer runs such a Resize channel-last, where it cannot shrink
            # cubically: the patched model failed on most image sizes ("'Cubic' mode only supports…"), exit 3
            raise StepError(f"a cubic resize to {bound.target_size()[0]} × {bound.target_size()[1]} (a side of 1) "
                            "fails in onnxruntime", "use `interpolation: linear`, or `antialias: true` (PIL's bicubic)")
        return bound

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        target = self.target_size()
        h_axis, w_axis = hw_axes(spec.layout)
        i64, f32 = np.int64, np.float32
        shape, hw, resized_hw = self._sizes(em, x, spec)
        if self.filtered:
            y = emit_filtered(self, em, x, shape, hw, resized_hw, spec)
        else:
            keep = em.op("Gather", [shape, em.const("kept_axes", [0, 1] if spec.layout == "NCHW" else [0], i64)],
                         {"axis": 0}, dtype=i64)
            parts = [keep, resized_hw] if spec.layout == "NCHW" else [
                keep, resized_hw, em.op("Gather", [shape, em.const("channel_axis", [3], i64)], {"axis": 0}, dtype=i64)]
            sizes = em.op("Concat", parts, {"axis": 0}, dtype=i64, shape=[4])
            if em.opset >= 13:
                unused = [gs.Variable.empty(), gs.Variable.empty()]
            else:  # opsets 11 and 12 want roi and scales present (empty when sizes are given)
                unused = [em.const("roi", np.zeros(0, f32)), em.const("scales", np.zeros(0, f32))]
            y = em.op("Resize", [x, *unused, sizes], self._attrs(), dtype=f32)
        if self.fit == "crop":
            starts = self._crop_starts(em, resized_hw)
            ends = em.op("Add", [starts, em.const("target", list(target), i64)], dtype=i64)
            y = em.op("Slice", [y, starts, ends, em.const("axes", [h_axis, w_axis], i64)], dtype=f32)
        elif self.fit in ("letterbox", "height"):
            y = self._letterbox(em, y, resized_hw, spec)
        y.shape = list(with_hw(tuple(x.shape) if x.shape else (None,) * 4, spec.layout, target))
        return y

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        axes = hw_axes(spec.layout)
        hw = (x.shape[axes[0]], x.shape[axes[1]])
        resized_hw = self.resized_hw(*hw)
        y = x.astype(np.float64)
        if self.filtered:
            y = filtered_resample(self, y, axes, resized_hw)
        else:
            for axis, length in zip(axes, resized_hw):
                y = onnx_resample(self, y, axis, length)
        return self.place(y, resized_hw, axes).astype(np.float32)

    @property
    def rounds_halves(self) -> bool:
        return self.filtered and self.round

    def reference_bounds(self, lo: np.ndarray, hi: np.ndarray, spec: TensorSpec
                         ) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.filtered:
            return None
        axes = hw_axes(spec.layout)
        resized_hw = self.resized_hw(lo.shape[axes[0]], lo.shape[axes[1]])
        bounds = filtered_resample_bounds(self, lo.astype(np.float64), hi.astype(np.float64), axes, resized_hw)
        return tuple(self.place(bound, resized_hw, axes).astype(np.float32) for bound in bounds)

    def forward_map(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        self._check_centred()
        (h, w), f32 = hw, np.float32
        th, tw = self.target_size()
        rh, rw = self.resized_hw(h, w)
        scale = np.array([f32(rw) / f32(w), f32(rh) / f32(h)], f32)
        if self.fit == "crop":
            offset = -np.array(self._crop_offsets((rh, rw))[::-1])  # as `place` cuts
        elif self.fit in ("letterbox", "height") and self.pad_anchor == "center":
            offset = np.array([(tw - rw) // 2, (th - rh) // 2])
        else:
            offset = np.zeros(2)
        return scale, offset.astype(f32)

    def build_forward_map(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> tuple[gs.Variable, gs.Variable]:
        self._check_centred()
        f32, i64 = np.float32, np.int64
        _, hw, resized_hw = self._sizes(em, x, spec)
        swap = em.const("xy", [1, 0], i64)

        def as_xy(hw_values: gs.Variable) -> gs.Variable:
            return em.op("Gather", [em.op("Cast", [hw_values], {"to": TensorProto.FLOAT}, dtype=f32), swap],
                         {"axis": 0}, dtype=f32, shape=[2])

        scale = em.op("Div", [as_xy(resized_hw), as_xy(hw)], dtype=f32, shape=[2])
        if self.fit == "crop":
            offset = em.op("Neg", [as_xy(self._crop_starts(em, resized_hw))], dtype=f32, shape=[2])
        elif self.fit in ("letterbox", "height"):
            offset = as_xy(self._pad_before(em, resized_hw))
        else:
            offset = em.const("no_offset", np.zeros(2, f32))
        return scale, offset

    def _check_centred(self) -> None:
        if self.coordinate_transformation_mode not in ("half_pixel", "pytorch_half_pixel"):
            raise StepError(f"a resize with coordinate_transformation_mode {self.coordinate_transformation_mode} "
                            "does not scale pixel edges, so results cannot be mapped back through it",
                            "use half_pixel (OpenCV's and PIL's convention) to map results back to the image")

    # --- geometry, shared by the twin and the OpenCV comparison -------------------------------------------------

    def resized_hw(self, h: int, w: int, rounding: SideRounding | HalfRounding | None = None) -> tuple[int, int]:
        """The size the image is resampled to, before crop or letterbox (integer arithmetic, as in the graph), the
        aspect-kept side rounded per `rounding` (default: this step's `side_rounding`)."""
        th, tw = self.target_size()
        if self.fit == "stretch":
            return th, tw
        divide = {"floor": lambda a, b: a // b, "ceil": lambda a, b: -(-a // b), "round": _round_half_even,
                  "half_up": lambda a, b: (2 * a + b) // (2 * b), "half_down": lambda a, b: (2 * a + b - 1) // (2 * b)
                  }[rounding or self.side_rounding]
        if self.fit == "crop":
            ch, cw = self._covered()
            return max(ch, divide(h * cw, w)), max(cw, divide(w * ch, h))
        if self.fit == "height":
            return th, max(1, min(tw, divide(w * th, h)))
        return max(1, min(th, divide(h * tw, w))), max(1, min(tw, divide(w * th, h)))

    def roundings_told_apart(self, sizes: Sequence[tuple[int, int]]) -> bool:
        """Whether caller images of `sizes` (W, H) give floor, round and ceil each other resized sizes, so that a
        patch rounding the aspect-kept side another way differs from the twin on them; for `side_rounding: round`
        also halves up and down (round 56: for a 33 × 17 letterbox 400×300 and 353×481 told floor, round and ceil
        apart, so the sizes of `_half_sizes` were left out, and a geometry record rounding halves up PASSed)."""
        roundings = (*get_args(SideRounding), *(get_args(HalfRounding) if self.side_rounding == "round" else ()))
        resized = {tuple(self.resized_hw(h, w, rounding) for w, h in sizes) for rounding in roundings}
        return len(resized) == len(roundings)

    def rounding_sizes(self) -> tuple[tuple[int, int], ...]:
        """Two caller sizes (W, H) that tell floor, round and ceil apart, from the model's size: one where the
        aspect-kept side falls below a half (round = floor, not ceil), one above (round = ceil, not floor); none
        where no rounding shows (fit stretch, a side of 1). Round 41: verify's fixed sizes gave every rounding
        the same sides for a 64 × 64 letterbox (round vs ceil) or a 48 × 48 crop (floor vs round), and a patch
        rounding the other way PASSed. Portrait images (twice the model's height, one more), so that the rounded
        side is the width, below the model's (fit height caps it there), scanned up from the model's width; for
        `side_rounding: round`, where they exist, two whose side is exactly a half (`_half_sizes`), which tell
        floor, round and ceil apart as well."""
        th, tw = self.target_size()
        if self.side_rounding == "round" and (halves := self._half_sizes()):
            return halves
        h, below, above = 2 * th + 1, None, None
        for w in range(tw, 2 * tw + 8):
            floor, rounded, ceil = (self.resized_hw(h, w, rounding) for rounding in get_args(SideRounding))
            below = below or ((w, h) if rounded == floor != ceil else None)
            above = above or ((w, h) if floor != rounded == ceil else None)
            if below and above:
                return below, above
        return ()

    def _half_sizes(self) -> tuple[tuple[int, int], ...]:
        """`rounding_sizes` for `side_rounding: round`: two sizes twice the model's height whose kept side
        is exactly an even integer and a half (half to even rounds it down, as floor; half up, as ceil and C's round,
        does not) and an odd one and a half (rounded up, as ceil; half down and floor do not). Round 52: verify's
        sizes held no half, so a letterbox geometry rounding halves up passed. Widths up to four times the model's:
        a crop's halves may lie past twice it (round 61: a crop covering 36 of a 32 model had them at 72 and 88 wide
        only, and a patch testing the quotient's parity with Div for Mod PASSed). None where no width in the scan
        gives one (a crop of a covered size whose quotients are never halves)."""
        th, tw = self.target_size()
        h, found = 2 * th, {}
        for w in range(tw, 4 * tw + 8):
            rounded = self.resized_hw(h, w)
            if rounded != self.resized_hw(h, w, "half_up"):
                found.setdefault("even", (w, h))
            if rounded != self.resized_hw(h, w, "half_down"):
                found.setdefault("odd", (w, h))
            if len(found) == 2:
                return found["even"], found["odd"]
        return ()

    def offset_sizes(self, sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
        """Caller sizes (W, H) that give the centre cut or pad an excess (the resized side's difference from the
        model's) of each remainder modulo 4 that `sizes` give neither side, and each odd one that they do not give
        each side: where the offset, half of it, is an integer and a half (rounded half to even by `fit: crop`, down
        by a centred letterbox) and where it is an odd integer. Round 52: the classifier's sizes gave excesses of 0
        and 1 modulo 4 only, so a patch cutting from round((h' − 225) / 2) or rounding the offset up PASSed (an image
        whose resized side is 258: one pixel off); the detector's letterbox saw even excesses only. Round 58: its
        odd excesses were the height's only (wider images), and a patch padding the left from a width of 161 for
        160 PASSed; taller images give the width's. None where no offset is computed (stretch, top-left)."""
        if self.fit == "stretch" or (self.fit != "crop" and self.pad_anchor != "center"):
            return ()
        th, tw = self.target_size()

        def remainders(size: tuple[int, int]) -> set[tuple[str, int]]:
            rh, rw = self.resized_hw(size[1], size[0])
            excess = (("height", abs(rh - th) % 4), ("width", abs(rw - tw) % 4))
            return {("either" if left == 2 else side, left) for side, left in excess if left}

        wanted = {("either", 2), *((side, left) for side in ("height", "width") for left in (1, 3))}
        seen = set().union(*(remainders(size) for size in sizes))
        found = []
        wider, taller = ((w, th) for w in range(tw + 1, 3 * tw + 16)), ((tw, h) for h in range(th + 1, 3 * th + 16))
        for size in (*wider, *taller):  # the side kept to the model's aspect: the width, then the height
            new = remainders(size) - seen
            if new:
                found.append(size)
                seen |= new
            if seen >= wanted:
                break
        return tuple(found)

    def place(self, y: np.ndarray, resized_hw: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
        """Crop or pad the resampled `y` to the model's size, as the graph does (`fit` stretch: unchanged)."""
        th, tw = self.target_size()
        (rh, rw), (h_axis, w_axis) = resized_hw, axes
        if self.fit == "crop":
            top, left = self._crop_offsets(resized_hw)
            index = [slice(None)] * y.ndim
            index[h_axis], index[w_axis] = slice(top, top + th), slice(left, left + tw)
            return y[tuple(index)]
        if self.fit in ("letterbox", "height"):
            top, left = ((th - rh) // 2, (tw - rw) // 2) if self.pad_anchor == "center" else (0, 0)
            pads = [(0, 0)] * y.ndim
            pads[h_axis], pads[w_axis] = (top, th - rh - top), (left, tw - rw - left)
            return np.pad(y, pads, constant_values=self.pad_value)
        return y

    def _crop_offsets(self, resized_hw: tuple[int, int]) -> tuple[int, int]:
        """[top, left] of the centre cut of a `resized_hw` image: half the excess, rounded half to even (like Round)
        or down (`crop_offset: floor`). Round 100: PaddleClas floors it, and 2 of verify's 9 sizes then cut a pixel
        apart, which no recipe could say."""
        return tuple(int(side) for side in centre_start(np.subtract(resized_hw, self.target_size()), self.crop_offset))

    # --- graph pieces ------------------------------------------------------------------------------------------

    def _covered(self) -> tuple[int, int]:
        th, tw = self.target_size()
        return int(np.floor(th / self.crop_fraction)), int(np.floor(tw / self.crop_fraction))

    def _attrs(self) -> dict:
        attrs = {"mode": self.interpolation, "coordinate_transformation_mode": self.coordinate_transformation_mode}
        if self.interpolation == "nearest":
            attrs["nearest_mode"] = self.nearest_mode
        if self.interpolation == "cubic":
            attrs["cubic_coeff_a"] = float(self.cubic_coeff_a)
        return attrs

    def _sizes(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> tuple[gs.Variable, gs.Variable, gs.Variable]:
        """x's shape, its [h, w] and the [h', w'] it is resampled to (before crop or letterbox), int64."""
        i64 = np.int64
        shape = em.op("Shape", [x], dtype=i64, shape=[4])
        hw = em.op("Gather", [shape, em.const("hw_axes", list(hw_axes(spec.layout)), i64)], {"axis": 0}, dtype=i64,
                   shape=[2])
        resized_hw = (em.const("size", list(self.target_size()), i64) if self.fit == "stretch"
                      else self._fitted_hw(em, shape, hw, spec))
        return shape, hw, resized_hw

    def _fitted_hw(self, em: Emitter, shape: gs.Variable, hw: gs.Variable, spec: TensorSpec) -> gs.Variable:
        """[h', w'] keeping the aspect ratio: max(bound, other · bound / side) for crop, min(…) for letterbox, the
        model's height and min(W, w · H / h) for height; the quotient rounded per `side_rounding`."""
        i64 = np.int64
        h_axis, w_axis = hw_axes(spec.layout)
        wh = em.op("Gather", [shape, em.const("wh_axes", [w_axis, h_axis], i64)], {"axis": 0}, dtype=i64, shape=[2])
        bound = self._covered() if self.fit == "crop" else self.target_size()
        # [h · W' / w, w · H' / h]: the other side scaled by the binding one, in integers
        scaled = self._divide(em, em.op("Mul", [hw, em.const("bound_swapped", bound[::-1], i64)], dtype=i64), wh)
        bound_c = em.const("bound", list(bound), i64)
        if self.fit == "crop":  # Where/Less rather than Max: integer Max needs opset 12
            return em.op("Where", [em.op("Less", [scaled, bound_c], dtype=np.bool_), bound_c, scaled], dtype=i64,
                         shape=[2])
        if self.fit == "height":  # the height is the model's; the width at most the model's
            scaled = em.op("Concat", [em.const("height", [bound[0]], i64),
                                      em.op("Gather", [scaled, em.const("width", [1], i64)], {"axis": 0}, dtype=i64)],
                           {"axis": 0}, dtype=i64, shape=[2])
        inside = em.op("Where", [em.op("Less", [bound_c, scaled], dtype=np.bool_), bound_c, scaled], dtype=i64)
        one = em.const("one", [1, 1], i64)
        return em.op("Where", [em.op("Less", [inside, one], dtype=np.bool_), one, inside], dtype=i64, shape=[2])

    def _divide(self, em: Emitter, numerator: gs.Variable, denominator: gs.Variable) -> gs.Variable:
        """numerator / denominator for positive int64s, rounded per `side_rounding` (Div floors them)."""
        i64 = np.int64
        quotient = em.op("Div", [numerator, denominator], dtype=i64, shape=[2])
        if self.side_rounding == "floor":
            return quotient
        remainder = em.op("Sub", [numerator, em.op("Mul", [quotient, denominator], dtype=i64)], dtype=i64)
        if self.side_rounding == "ceil":
            up = em.op("Greater", [remainder, em.const("zero", 0, i64)], dtype=np.bool_)
        else:  # half to even: up when 2r > d, or 2r = d and q is odd
            twice = em.op("Mul", [remainder, em.const("two", 2, i64)], dtype=i64)
            odd = em.op("Equal", [em.op("Mod", [quotient, em.const("two", 2, i64)], dtype=i64),
                                  em.const("one", 1, i64)], dtype=np.bool_)
            tie = em.op("And", [em.op("Equal", [twice, denominator], dtype=np.bool_), odd], dtype=np.bool_)
            up = em.op("Or", [em.op("Greater", [twice, denominator], dtype=np.bool_), tie], dtype=np.bool_)
        return em.op("Add", [quotient, em.op("Cast", [up], {"to": TensorProto.INT64}, dtype=i64)], dtype=i64,
                     shape=[2])

    def _crop_starts(self, em: Emitter, resized_hw: gs.Variable) -> gs.Variable:
        """[top, left] of the centre cut: round((h' − H) / 2), half to even (Round), int64; with `crop_offset:
        floor` (h' − H) // 2 (the excess is never negative: the image covers the crop)."""
        excess = em.op("Sub", [resized_hw, em.const("target", list(self.target_size()), np.int64)], dtype=np.int64)
        return emit_centre_start(em, excess, self.crop_offset)

    def _pad_before(self, em: Emitter, resized_hw: gs.Variable) -> gs.Variable:
        """[top, left] padding of the letterbox, int64: half the spare rows and columns (rounded down) when centred,
        none in the top-left corner."""
        i64 = np.int64
        if self.pad_anchor != "center":
            return em.const("none", [0, 0], i64)
        spare = em.op("Sub", [em.const("target", list(self.target_size()), i64), resized_hw], dtype=i64)
        return em.op("Div", [spare, em.const("two", [2, 2], i64)], dtype=i64, shape=[2])

    def _letterbox(self, em: Emitter, y: gs.Variable, resized_hw: gs.Variable, spec: TensorSpec) -> gs.Variable:
        i64 = np.int64
        spare = em.op("Sub", [em.const("target", list(self.target_size()), i64), resized_hw], dtype=i64)
        before = self._pad_before(em, resized_hw)
        after = em.op("Sub", [spare, before], dtype=i64)
        zero = em.const("zero", [0], i64)
        if spec.layout == "NCHW":  # pads: [N, C, H, W begins, N, C, H, W ends]
            pads = [zero, zero, before, zero, zero, after]
        else:  # [N, H, W, C begins, N, H, W, C ends]
            pads = [zero, before, zero, zero, after, zero]
        pads = em.op("Concat", pads, {"axis": 0}, dtype=i64, shape=[8])
        value = em.const("pad_value", self.pad_value, np.float32)
        return em.op("Pad", [y, pads, value], {"mode": "constant"}, dtype=np.float32)


def _round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half to even, in integers (Python's round on the exact quotient)."""
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1))
