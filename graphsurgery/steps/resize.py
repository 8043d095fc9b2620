"""The `resize` input step: from whatever image size the caller has to the model's, inside the graph.

Resizing is where re-implemented pipelines drift most (pixel-centre conventions, rounding, antialiasing differ
between libraries), so the recipe declares every choice and the numpy twin implements exactly those semantics,
the ONNX Resize definition, written independently here. `resize_vs_opencv` measures how far that is from
`cv2.resize` with the closest settings, so a user knows what changed against an OpenCV pipeline.

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

from typing import ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field, model_validator

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import SizedStep, StepError, TensorSpec, hw_axes, with_hw
from graphsurgery.steps.input import _require_float

Interpolation = Literal["nearest", "linear", "cubic", "area", "lanczos"]
CoordinateMode = Literal["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NearestMode = Literal["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
Fit = Literal["stretch", "crop", "letterbox", "height"]
SideRounding = Literal["floor", "round", "ceil"]
PadAnchor = Literal["center", "top_left"]
MAX_SIDE = 65_536

#: Filtered resampling (antialias, area, lanczos): each kernel's support in source pixels at scale 1 (PIL's)
SUPPORT = {"linear": 1.0, "cubic": 2.0, "lanczos": 3.0, "area": 0.5}
#: Which parameters mean something only with some settings: (parameter, setting it needs, the allowed values).
ONLY_WITH = (
    ("nearest_mode", "interpolation", ("nearest",)),
    ("cubic_coeff_a", "interpolation", ("cubic",)),
    ("antialias", "interpolation", ("linear", "cubic")),
    ("coordinate_transformation_mode", "interpolation", ("nearest", "linear", "cubic")),
    ("crop_fraction", "fit", ("crop",)),
    ("pad_value", "fit", ("letterbox", "height")),
    ("pad_anchor", "fit", ("letterbox", "height")),
    ("side_rounding", "fit", ("crop", "letterbox", "height")),
)


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
    where its float32 sum falls within rounding error of a half (a few pixels per image).
    `fit` says what happens to the aspect ratio:
    - stretch (default): each side to the model's size; the aspect ratio is not kept.
    - crop: scale, keeping the aspect ratio, so the image covers floor(H / crop_fraction) × floor(W /
      crop_fraction): the binding side gets exactly that, the other side floor(side · scale), in integer
      arithmetic; then cut the model's H × W from the centre, the offset rounded half to even as torchvision's
      CenterCrop does. With crop_fraction 0.875 and a 224 model this is torchvision's ImageNet evaluation
      transform: short side to 256, centre crop 224.
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
    pad_value: float = Field(default=0.0, ge=-1e30, le=1e30, description="value of letterbox padding")
    pad_anchor: PadAnchor = Field(default="center", description="letterbox/height: where the image sits")
    side_rounding: SideRounding = Field(default="floor", description="rounding of the aspect-kept side")
    clamp: tuple[float, float] | None = Field(default=None, description="filtered modes: clip each pass to [low, "
                                              "high], as PIL's 8-bit resampling does ([0, 255])")
    round: bool = Field(default=False, description="filtered modes: round each pass half to even, as PIL's 8-bit "
                        "resampling stores it")

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

    def rows_first(self, hw: tuple[int, int], resized_hw: tuple[int, int]) -> bool:
        """Whether the filtered passes run the rows first: only where the order shows (passes clipped or rounded,
        as PIL's are) and Pillow 13 would (the height shrinks by more than twice as many pixels as the width)."""
        (h, w), (new_h, new_w) = hw, resized_hw
        pil_like = (self.clamp is not None or self.round) and self.interpolation != "area"
        return pil_like and h - new_h > 0 and h - new_h > 2 * (w - new_w)

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

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        target = self.target_size()
        h_axis, w_axis = hw_axes(spec.layout)
        i64, f32 = np.int64, np.float32
        shape, hw, resized_hw = self._sizes(em, x, spec)
        if self.filtered:
            y = self._filter(em, x, shape, hw, resized_hw, spec)
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
        if self.filtered:  # two passes, the columns first unless PIL would run the rows first
            shrinks = all(new <= old for new, old in zip(resized_hw, hw))
            passes = list(zip(axes, resized_hw))
            for axis, length in passes if self.rows_first(hw, resized_hw) else reversed(passes):
                weights = filter_weights(self.interpolation, self.cubic_coeff_a, y.shape[axis], length, shrinks)
                y = np.moveaxis(np.tensordot(weights, y, axes=([1], [axis])), 0, axis)
                y = y if self.clamp is None else np.clip(y, *self.clamp)
                y = np.round(y) if self.round else y
        else:
            for axis, length in zip(axes, resized_hw):
                y = self._resample(y, axis, length)
        return self.place(y, resized_hw, axes).astype(np.float32)

    def forward_map(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        self._check_centred()
        (h, w), f32 = hw, np.float32
        th, tw = self.target_size()
        rh, rw = self.resized_hw(h, w)
        scale = np.array([f32(rw) / f32(w), f32(rh) / f32(h)], f32)
        if self.fit == "crop":
            offset = -np.round([(rw - tw) / 2, (rh - th) / 2])  # half to even, as `place` cuts
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

    def resized_hw(self, h: int, w: int) -> tuple[int, int]:
        """The size the image is resampled to, before crop or letterbox (integer arithmetic, as in the graph)."""
        th, tw = self.target_size()
        if self.fit == "stretch":
            return th, tw
        divide = {"floor": lambda a, b: a // b, "ceil": lambda a, b: -(-a // b), "round": _round_half_even}[
            self.side_rounding]
        if self.fit == "crop":
            ch, cw = self._covered()
            return max(ch, divide(h * cw, w)), max(cw, divide(w * ch, h))
        if self.fit == "height":
            return th, max(1, min(tw, divide(w * th, h)))
        return max(1, min(th, divide(h * tw, w))), max(1, min(tw, divide(w * th, h)))

    def place(self, y: np.ndarray, resized_hw: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
        """Crop or pad the resampled `y` to the model's size, as the graph does (`fit` stretch: unchanged)."""
        th, tw = self.target_size()
        (rh, rw), (h_axis, w_axis) = resized_hw, axes
        if self.fit == "crop":
            top, left = int(np.round((rh - th) / 2)), int(np.round((rw - tw) / 2))  # half to even, like Round
            index = [slice(None)] * y.ndim
            index[h_axis], index[w_axis] = slice(top, top + th), slice(left, left + tw)
            return y[tuple(index)]
        if self.fit in ("letterbox", "height"):
            top, left = ((th - rh) // 2, (tw - rw) // 2) if self.pad_anchor == "center" else (0, 0)
            pads = [(0, 0)] * y.ndim
            pads[h_axis], pads[w_axis] = (top, th - rh - top), (left, tw - rw - left)
            return np.pad(y, pads, constant_values=self.pad_value)
        return y

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

    def _filter(self, em: Emitter, x: gs.Variable, shape: gs.Variable, hw: gs.Variable, resized_hw: gs.Variable,
                spec: TensorSpec) -> gs.Variable:
        """PIL's separable resampling as two MatMuls with weight matrices computed in the graph from the sizes: the
        columns (a [w', W] matrix) and the rows ([h', H]), each pass clipped to `clamp` and rounded when asked, as
        PIL does; where that makes the order show, an If picks it from the sizes as `rows_first` does. Dense
        matrices waste multiplications on zeros (the kernel covers a few source pixels per output), but MatMul is
        what every runtime runs fastest."""
        i64 = np.int64

        def pick(values: gs.Variable, index: int) -> gs.Variable:
            return em.op("Gather", [values, em.const("index", index, i64)], {"axis": 0}, dtype=i64, shape=[])

        # OpenCV's INTER_AREA is an area average only when no side grows (else its own two-tap blend)
        shrinks = None
        if self.interpolation == "area":
            grows = em.op("Cast", [em.op("Less", [hw, resized_hw], dtype=np.bool_)], {"to": TensorProto.INT32},
                          dtype=np.int32)
            any_grows = em.op("Cast", [em.reduce_max(grows, [0], keepdims=False, dtype=np.int32)],
                              {"to": TensorProto.BOOL}, dtype=np.bool_)
            shrinks = em.op("Not", [any_grows], dtype=np.bool_)
        rows = self._weights(em, pick(hw, 0), pick(resized_hw, 0), shrinks)             # [h', H]
        columns = self._weights(em, pick(hw, 1), pick(resized_hw, 1), shrinks)          # [w', W]
        passes = (_NCHWPasses(self, rows, columns) if spec.layout == "NCHW"
                  else _NHWCPasses(self, rows, columns, shape, resized_hw))
        if not (self.clamp is not None or self.round) or self.interpolation == "area":
            return passes.columns_first(em, x)
        # rows first where h − h' > 0 and h − h' > 2 · (w − w'), as `rows_first`
        shrunk = em.op("Sub", [hw, resized_hw], dtype=i64, shape=[2])
        height_shrunk, width_shrunk = pick(shrunk, 0), pick(shrunk, 1)
        zero, two = em.const("zero", 0, i64), em.const("two", 2, i64)
        rows_first = em.op("And", [
            em.op("Greater", [height_shrunk, zero], dtype=np.bool_),
            em.op("Greater", [height_shrunk, em.op("Mul", [width_shrunk, two], dtype=i64)], dtype=np.bool_)],
            dtype=np.bool_)
        return em.branch(rows_first, lambda branch: passes.rows_first(branch, x),
                         lambda branch: passes.columns_first(branch, x), dtype=np.float32, rank=4)

    def finish_pass(self, em: Emitter, y: gs.Variable) -> gs.Variable:
        """One pass's result clipped to `clamp` and rounded when asked (PIL's uint8 passes)."""
        if self.clamp is not None:
            low, high = (em.const(name, value, np.float32) for name, value in zip(("low", "high"), self.clamp))
            y = em.op("Clip", [y, low, high], dtype=np.float32)
        return em.round(y, dtype=np.float32) if self.round else y

    def _weights(self, em: Emitter, n_in: gs.Variable, n_out: gs.Variable, shrinks: gs.Variable | None
                 ) -> gs.Variable:
        """[n_out, n_in] float32 resampling weights, PIL's `precompute_coeffs`: output i centred at (i + 0.5) ·
        scale in the source, the kernel stretched by the scale when shrinking, taps past the edges left out and
        each row renormalised. Area (OpenCV's INTER_AREA): where no side grows (`shrinks`), the share of each source
        pixel inside the output pixel's span; else OpenCV's two-tap blend."""
        f32 = np.float32
        n_in_f = em.op("Cast", [n_in], {"to": TensorProto.FLOAT}, dtype=f32)
        n_out_f = em.op("Cast", [n_out], {"to": TensorProto.FLOAT}, dtype=f32)
        scale = em.op("Div", [n_in_f, n_out_f], dtype=f32)
        one, half, zero = (em.const(name, value, f32) for name, value in (("one", 1.0, ), ("half", 0.5), ("zero", 0.0)))
        out_index = em.unsqueeze(em.op("Range", [zero, n_out_f, one], dtype=f32), [1], dtype=f32)        # [m, 1]
        in_index = em.unsqueeze(em.op("Range", [zero, n_in_f, one], dtype=f32), [0], dtype=f32)          # [1, n]
        if self.interpolation == "area":
            start = em.op("Mul", [out_index, scale], dtype=f32)
            end = em.op("Mul", [em.op("Add", [out_index, one], dtype=f32), scale], dtype=f32)
            overlap = em.op("Sub", [em.op("Min", [em.op("Add", [in_index, one], dtype=f32), end], dtype=f32),
                                    em.op("Max", [in_index, start], dtype=f32)], dtype=f32)
            weights = em.op("Where", [shrinks, em.op("Max", [overlap, zero], dtype=f32),
                                      self._area_blend(em, n_in_f, scale, out_index, in_index)], dtype=f32)
        else:
            stretch = em.op("Max", [scale, one], dtype=f32)
            support = em.op("Mul", [em.const("support", SUPPORT[self.interpolation], f32), stretch], dtype=f32)
            centre = em.op("Mul", [em.op("Add", [out_index, half], dtype=f32), scale], dtype=f32)
            first = em.op("Max", [em.op("Floor", [em.op("Add", [em.op("Sub", [centre, support], dtype=f32), half],
                                                        dtype=f32)], dtype=f32), zero], dtype=f32)
            last = em.op("Min", [em.op("Floor", [em.op("Add", [em.op("Add", [centre, support], dtype=f32), half],
                                                       dtype=f32)], dtype=f32), n_in_f], dtype=f32)
            inside = em.op("And", [em.op("Not", [em.op("Less", [in_index, first], dtype=np.bool_)], dtype=np.bool_),
                                   em.op("Less", [in_index, last], dtype=np.bool_)], dtype=np.bool_)
            distance = em.op("Div", [em.op("Add", [em.op("Sub", [in_index, centre], dtype=f32), half], dtype=f32),
                                     stretch], dtype=f32)
            weights = em.op("Where", [inside, self._kernel(em, distance), zero], dtype=f32)
        return em.op("Div", [weights, em.reduce_sum(weights, [1], dtype=f32)], dtype=f32)

    @staticmethod
    def _area_blend(em: Emitter, n_in: gs.Variable, scale: gs.Variable, out_index: gs.Variable,
                    in_index: gs.Variable) -> gs.Variable:
        """OpenCV's INTER_AREA where a side grows: source sx = floor(i · scale) and sx + 1, blended by fx = (i + 1)
        − (sx + 1) / scale, taken modulo 1 when positive (else 0); the last source pixel alone at the far edge."""
        f32 = np.float32
        one, zero = em.const("one", 1.0, f32), em.const("zero", 0.0, f32)
        source = em.op("Floor", [em.op("Mul", [out_index, scale], dtype=f32)], dtype=f32)
        fraction = em.op("Sub", [em.op("Add", [out_index, one], dtype=f32),
                                 em.op("Div", [em.op("Add", [source, one], dtype=f32), scale], dtype=f32)], dtype=f32)
        fraction = em.op("Where", [em.op("Greater", [fraction, zero], dtype=np.bool_),
                                   em.op("Sub", [fraction, em.op("Floor", [fraction], dtype=f32)], dtype=f32), zero],
                         dtype=f32)
        edge = em.op("Not", [em.op("Less", [source, em.op("Sub", [n_in, one], dtype=f32)], dtype=np.bool_)],
                     dtype=np.bool_)
        fraction = em.op("Where", [edge, zero, fraction], dtype=f32)
        source = em.op("Where", [edge, em.op("Sub", [n_in, one], dtype=f32), source], dtype=f32)
        near = em.op("Where", [em.op("Equal", [in_index, source], dtype=np.bool_),
                               em.op("Sub", [one, fraction], dtype=f32), zero], dtype=f32)
        far = em.op("Where", [em.op("Equal", [in_index, em.op("Add", [source, one], dtype=f32)], dtype=np.bool_),
                              fraction, zero], dtype=f32)
        return em.op("Add", [near, far], dtype=f32)

    def _kernel(self, em: Emitter, d: gs.Variable) -> gs.Variable:
        """PIL's filters at distance `d` (in kernel units): triangle, Keys cubic with `cubic_coeff_a`, Lanczos-3."""
        f32 = np.float32
        a = em.op("Abs", [d], dtype=f32)
        one, zero = em.const("one", 1.0, f32), em.const("zero", 0.0, f32)
        if self.interpolation == "linear":
            return em.op("Max", [em.op("Sub", [one, a], dtype=f32), zero], dtype=f32)
        if self.interpolation == "cubic":
            c = float(self.cubic_coeff_a)
            near = em.op("Add", [em.op("Mul", [em.op("Mul", [em.op("Sub", [em.op("Mul", [a, em.const("n1", c + 2, f32)],
                                                                                dtype=f32), em.const("n2", c + 3, f32)],
                                                                  dtype=f32), a], dtype=f32), a], dtype=f32), one],
                          dtype=f32)
            far = em.op("Sub", [em.op("Mul", [em.op("Add", [em.op("Mul", [em.op("Sub", [
                em.op("Mul", [a, em.const("f1", c, f32)], dtype=f32), em.const("f2", 5 * c, f32)], dtype=f32), a],
                dtype=f32), em.const("f3", 8 * c, f32)], dtype=f32), a], dtype=f32), em.const("f4", 4 * c, f32)],
                dtype=f32)
            two = em.const("two", 2.0, f32)
            return em.op("Where", [em.op("Less", [a, one], dtype=np.bool_), near,
                                   em.op("Where", [em.op("Less", [a, two], dtype=np.bool_), far, zero], dtype=f32)],
                         dtype=f32)
        # lanczos: sinc(d) · sinc(d / 3) for |d| < 3; sinc(0) = 1
        pi_d = em.op("Mul", [d, em.const("pi", np.pi, f32)], dtype=f32)
        third = em.op("Div", [pi_d, em.const("three", 3.0, f32)], dtype=f32)
        tiny = em.op("Less", [a, em.const("tiny", 1e-6, f32)], dtype=np.bool_)
        safe = em.op("Where", [tiny, one, pi_d], dtype=f32)
        safe_third = em.op("Where", [tiny, one, third], dtype=f32)
        product = em.op("Div", [em.op("Mul", [em.op("Sin", [safe], dtype=f32), em.op("Sin", [safe_third], dtype=f32)],
                                      dtype=f32), em.op("Mul", [safe, safe_third], dtype=f32)], dtype=f32)
        product = em.op("Where", [tiny, one, product], dtype=f32)
        return em.op("Where", [em.op("Less", [a, em.const("three", 3.0, f32)], dtype=np.bool_), product, zero],
                     dtype=f32)

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
        """[top, left] of the centre cut: round((h' − H) / 2), half to even (Round), int64."""
        f32, i64 = np.float32, np.int64
        excess = em.op("Cast", [em.op("Sub", [resized_hw, em.const("target", list(self.target_size()), i64)],
                                      dtype=i64)], {"to": TensorProto.FLOAT}, dtype=f32)
        half = em.op("Round", [em.op("Div", [excess, em.const("two", 2.0, f32)], dtype=f32)], dtype=f32)
        return em.op("Cast", [half], {"to": TensorProto.INT64}, dtype=i64, shape=[2])

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

    # --- the twin's resampling ---------------------------------------------------------------------------------

    def _resample(self, x: np.ndarray, axis: int, length: int) -> np.ndarray:
        """`x` resampled to `length` along `axis`: a weighted sum of source samples (taps), per ONNX Resize."""
        taps, weights = self._taps(x.shape[axis], length)
        shape = [1] * x.ndim
        shape[axis] = length
        out = np.zeros(x.shape[:axis] + (length,) + x.shape[axis + 1:], np.float64)
        for k in range(taps.shape[1]):
            out += np.take(x, taps[:, k], axis=axis) * weights[:, k].reshape(shape)
        return out

    def _taps(self, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        """Source indices [n_out, T] and their weights [n_out, T]; indices past an edge repeat the edge sample."""
        x = source_coordinates(self.coordinate_transformation_mode, n_in, n_out).astype(np.float64)
        if self.interpolation == "nearest":
            return np.clip(_round(x, self.nearest_mode), 0, n_in - 1).astype(np.int64)[:, None], np.ones((n_out, 1))
        if self.interpolation == "linear":
            x = np.clip(x, 0, n_in - 1)  # outside the image the edge sample is repeated
            low = np.floor(x).astype(np.int64)
            t = x - low
            return np.stack([low, np.minimum(low + 1, n_in - 1)], 1), np.stack([1 - t, t], 1)
        taps = np.floor(x)[:, None].astype(np.int64) + np.arange(-1, 3)[None, :]  # cubic: 4 taps, edges repeated
        return np.clip(taps, 0, n_in - 1), _cubic_kernel(taps - x[:, None], self.cubic_coeff_a)


def source_coordinates(mode: str, n_in: int, n_out: int) -> np.ndarray:
    """Where each output sample sits in the input (ONNX Resize's coordinate transformation), in float32 as the
    runtimes compute it; the scale is out / in rounded to float32."""
    f32 = np.float32
    x = np.arange(n_out, dtype=f32)
    scale = f32(n_out) / f32(n_in)
    if mode == "align_corners":
        return np.zeros(n_out, f32) if n_out == 1 else x * f32(n_in - 1) / f32(n_out - 1)
    if mode == "asymmetric":
        return x / scale
    if mode == "pytorch_half_pixel" and n_out == 1:
        return np.zeros(1, f32)
    return (x + f32(0.5)) / scale - f32(0.5)  # half_pixel, pytorch_half_pixel


class _NCHWPasses:
    """The filtered passes on [N, C, H, W]: x @ columnsᵀ along W, rows @ x along H."""

    def __init__(self, step: Resize, rows: gs.Variable, columns: gs.Variable):
        self.step, self.rows, self.columns = step, rows, columns

    def along_columns(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        columns_t = em.op("Transpose", [self.columns], {"perm": [1, 0]}, dtype=np.float32)
        return self.step.finish_pass(em, em.op("MatMul", [x, columns_t], dtype=np.float32))

    def along_rows(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        return self.step.finish_pass(em, em.op("MatMul", [self.rows, x], dtype=np.float32))

    def columns_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        return self.along_rows(em, self.along_columns(em, x))

    def rows_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        return self.along_columns(em, self.along_rows(em, x))


class _NHWCPasses(_NCHWPasses):
    """The filtered passes on [N, H, W, C], seen as [N, H, C, W] for the columns, so that they are one large MatMul
    (a [w', W] against each row of three channels is many tiny ones: 1.45× the time on a 4000×3000 photo), and as
    [N, H, W·C] for the rows."""

    def __init__(self, step: Resize, rows: gs.Variable, columns: gs.Variable, shape: gs.Variable,
                 resized_hw: gs.Variable):
        super().__init__(step, rows, columns)
        self.shape, self.resized_hw = shape, resized_hw

    def _sized(self, em: Emitter, y: gs.Variable, dims: list[tuple[gs.Variable, int]]) -> gs.Variable:
        """y reshaped to the listed dims, each one element of `self.shape` or `self.resized_hw`."""
        i64 = np.int64
        parts = [em.op("Slice", [source, em.const("start", [i], i64), em.const("end", [i + 1], i64)], dtype=i64)
                 for source, i in dims]
        return em.op("Reshape", [y, em.op("Concat", parts, {"axis": 0}, dtype=i64)], dtype=np.float32)

    def columns_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        f32, i64 = np.float32, np.int64
        y = self.along_columns(em, em.op("Transpose", [x], {"perm": [0, 1, 3, 2]}, dtype=f32))   # [N, H, C, w']
        y = self.along_rows(em, em.op("Reshape", [y, em.const("rows_last", [0, 0, -1], i64)], dtype=f32))
        y = self._sized(em, y, [(self.shape, 0), (self.resized_hw, 0), (self.shape, 3), (self.resized_hw, 1)])
        return em.op("Transpose", [y], {"perm": [0, 1, 3, 2]}, dtype=f32)                        # [N, h', w', C]

    def rows_first(self, em: Emitter, x: gs.Variable) -> gs.Variable:
        f32, i64 = np.float32, np.int64
        y = self.along_rows(em, em.op("Reshape", [x, em.const("rows_last", [0, 0, -1], i64)], dtype=f32))
        y = self._sized(em, y, [(self.shape, 0), (self.resized_hw, 0), (self.shape, 2), (self.shape, 3)])
        y = self.along_columns(em, em.op("Transpose", [y], {"perm": [0, 1, 3, 2]}, dtype=f32))  # [N, h', C, w']
        return em.op("Transpose", [y], {"perm": [0, 1, 3, 2]}, dtype=f32)                        # [N, h', w', C]


def filter_weights(interpolation: str, cubic_coeff_a: float, n_in: int, n_out: int, shrinks: bool = True
                   ) -> np.ndarray:
    """[n_out, n_in] float64 weights of the filtered modes, written here from the libraries' code.

    PIL's resampling (libImaging/Resample.c, `precompute_coeffs`): output i sits at centre (i + 0.5) · scale; the
    filter (support s) is stretched by the scale when shrinking; taps from int(centre − support + 0.5) up to
    int(centre + support + 0.5), inside the image, each weighted filter((tap − centre + 0.5) / stretch); each row
    divided by its sum. `area`, OpenCV's INTER_AREA (imgproc/src/resize.cpp): when no side grows (`shrinks`), the
    share of each source pixel inside [i · scale, (i + 1) · scale); else two taps sx = floor(i · scale) and sx + 1
    blended by fx = (i + 1) − (sx + 1) / scale (mod 1 when positive, else 0), the last pixel alone at the far edge.
    """
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        if interpolation == "area" and shrinks:
            start, end = i * scale, (i + 1) * scale
            taps = np.arange(int(np.floor(start)), min(int(np.ceil(end)), n_in))
            row = np.minimum(taps + 1, end) - np.maximum(taps, start)
        elif interpolation == "area":
            source = int(np.floor(i * scale))
            fx = (i + 1) - (source + 1) / scale
            fx = fx - np.floor(fx) if fx > 0 else 0.0
            if source >= n_in - 1:
                source, fx = n_in - 1, 0.0
            taps, row = np.array([source, min(source + 1, n_in - 1)]), np.array([1 - fx, fx])
        else:
            stretch = max(scale, 1.0)
            support = SUPPORT[interpolation] * stretch
            centre = (i + 0.5) * scale
            taps = np.arange(max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in))
            row = _pil_filter(interpolation, (taps - centre + 0.5) / stretch, cubic_coeff_a)
        np.add.at(weights[i], taps, row / row.sum())
    return weights


def _pil_filter(interpolation: str, d: np.ndarray, cubic_coeff_a: float) -> np.ndarray:
    if interpolation == "linear":
        return np.clip(1 - np.abs(d), 0, None)
    if interpolation == "cubic":
        return _cubic_kernel(d, cubic_coeff_a)
    return np.where(np.abs(d) < 3, np.sinc(d) * np.sinc(d / 3), 0.0)  # lanczos; np.sinc is sin(πx) / (πx)


def _round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half to even, in integers (Python's round on the exact quotient)."""
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1))


def _round(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    tie = (x - np.floor(x)) == 0.5
    if mode == "round_prefer_floor":
        return np.where(tie, np.floor(x), np.floor(x + 0.5))
    return np.where(tie, np.ceil(x), np.floor(x + 0.5))  # round_prefer_ceil


def _cubic_kernel(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient `a`, as the ONNX Resize definition writes it."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))




# --- against OpenCV and PIL --------------------------------------------------------------------------------------


def opencv_equivalent(step: Resize, image_hw: tuple[int, int]) -> str:
    """The `cv2.resize` interpolation flag closest to the step's settings for an image of this size."""
    resized = step.resized_hw(*image_hw)
    shrinks = resized[0] < image_hw[0] or resized[1] < image_hw[1]
    if step.interpolation == "area" or (step.antialias and shrinks):
        return "INTER_AREA"
    if step.interpolation == "lanczos":
        return "INTER_LANCZOS4"
    if step.interpolation == "nearest":
        centred = step.coordinate_transformation_mode in ("half_pixel", "pytorch_half_pixel")
        return "INTER_NEAREST_EXACT" if centred else "INTER_NEAREST"
    return "INTER_LINEAR" if step.interpolation == "linear" else "INTER_CUBIC"


def resize_vs_opencv(step: Resize, image: np.ndarray) -> dict:
    """How far the step's resize is from `cv2.resize` with the closest settings, on one H×W×C (or H×W) image.

    The step's side is its numpy twin (which matches the graph within 1e-5) on the image as float32; OpenCV's
    side is `cv2.resize` on the image in its own dtype (uint8 results are rounded, as an OpenCV pipeline gets
    them), then the same crop or letterbox, so only the resampling differs. Differences are in the image's units.
    The step must know its target size (a bound step, or `size` given).
    """
    import cv2

    if image.ndim not in (2, 3):
        raise ValueError(f"one image, H×W×C or H×W, not an array of shape {image.shape}")
    flag = opencv_equivalent(step, image.shape[:2])
    resized_hw = step.resized_hw(*image.shape[:2])
    theirs = cv2.resize(image, (resized_hw[1], resized_hw[0]), interpolation=getattr(cv2, flag))
    theirs = step.place(theirs.reshape(*resized_hw, -1).astype(np.float64), resized_hw, (0, 1))
    hwc = image.reshape(*image.shape[:2], -1)
    ours = step.reference(hwc[None].astype(np.float32), TensorSpec("float32", "NHWC", "RGB", (1, *hwc.shape)))[0]
    difference = np.abs(ours.astype(np.float64) - theirs)
    return {
        "library_call": f"cv2.resize(image, ({resized_hw[1]}, {resized_hw[0]}), interpolation=cv2.{flag})",
        "equivalent": flag,
        "image_dtype": str(image.dtype),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
    }


def pil_equivalent(step: Resize) -> str | None:
    """The PIL filter the step imitates (`Image.resize`'s resample): lanczos and the antialiased modes; None for
    the modes that imitate OpenCV or ONNX Resize."""
    if step.interpolation == "lanczos":
        return "LANCZOS"
    if step.antialias:
        return "BILINEAR" if step.interpolation == "linear" else "BICUBIC"
    return None


def resize_vs_pil(step: Resize, image: np.ndarray) -> dict:
    """How far the step's resize is from PIL's `Image.resize` with the filter it imitates, on one uint8 H×W×C (or
    H×W) image, each channel resized as an 8-bit band (as PIL does an RGB image), then the same crop or letterbox."""
    from PIL import Image

    filter_name = pil_equivalent(step)
    if image.ndim not in (2, 3) or image.dtype != np.uint8 or filter_name is None:
        raise ValueError("one uint8 image, H×W×C or H×W, and a step with a PIL filter (lanczos, antialias)")
    resized_hw = step.resized_hw(*image.shape[:2])
    hwc = image.reshape(*image.shape[:2], -1)
    resample = getattr(Image.Resampling, filter_name)
    theirs = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(hwc[..., c])).resize(resized_hw[::-1], resample))
                       for c in range(hwc.shape[2])], axis=-1)
    theirs = step.place(theirs.astype(np.float64), resized_hw, (0, 1))
    ours = step.reference(hwc[None].astype(np.float32), TensorSpec("float32", "NHWC", "RGB", (1, *hwc.shape)))[0]
    difference = np.abs(ours.astype(np.float64) - theirs)
    return {
        "library_call": f"PIL.Image.fromarray(image).resize(({resized_hw[1]}, {resized_hw[0]}), "
                        f"Image.Resampling.{filter_name})",
        "equivalent": f"PIL {filter_name}",
        "image_dtype": str(image.dtype),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
    }
