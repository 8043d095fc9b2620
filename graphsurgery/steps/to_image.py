"""The `to_image` step: keypoints from heatmap pixels to crop, original-image or caller-image pixels.

It ends the heatmap chain of `steps/output.py` (`heatmap_argmax`, `quarter_offset`) and has a module of its own
because it is the one step there that needs geometry from outside the heatmaps: the model's input size, the crops'
center and scale or person boxes, and the input steps' resize and letterbox. Its `reference` follows the HRNet
authors' `transform_preds` (`lib/utils/transforms.py` in leoxiaobin/deep-high-resolution-net.pytorch).

It reads `ModelFacts.input_size` (the model input's static (W, H), or None), which the splice and
`twins.postprocess` both pass.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs
from pydantic import Field, field_validator, model_validator

from graphsurgery.crops import PIXEL_STD, box_to_center_scale, to_original
from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import EXACT, GEOMETRY, Comparison, Dim, ExtraInput, OutputStep, StepError
from graphsurgery.steps.output import heatmap_hw, require
from graphsurgery.steps.topdown import BOXES, box_center_scale

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts

#: `to_image mode: original`: float32 graph arithmetic vs the authors' float64 affine transform rounded to float32
#: differ by one float32 ulp of the coordinates' magnitude (measured: 1.2e-4 px at ~1500 px, 4.9e-4 at ~6000,
#: 9.8e-4 at ~12000, onnxruntime and OpenVINO alike). 2e-3 px covers images up to 16384 px.
IMAGE_COMPARISON = Comparison("coordinates", rtol=0.0, atol=2e-3)


@register
class ToImage(OutputStep):
    """Map keypoints from heatmap pixels to crop, original-image or caller-image pixels.

    Reads "keypoints" and "heatmaps" (for the heatmap size: `heatmap_argmax`
    must come before it, and `quarter_offset`, if any), and in mode image
    the input geometry; writes "keypoints".

    mode crop: pixels of the model's input crop, x·(W_in/W_hm) and
      y·(H_in/H_hm), each ratio rounded to float32 once; no half-pixel offset
      (the authors' convention: heatmap cell i sits at crop pixel i·ratio).
      (W_in, H_in) is `input_size` when given, else the model input's static
      size (the model facts' input_size). Compared exactly. With `udp`,
      UDP's scale instead (mmpose's UDPHeatmap): x·(W_in/(W_hm − 1)),
      y·(H_in/(H_hm − 1)).
    mode original: the authors' `transform_preds` at rotation 0, with two
      graph inputs this step adds, `center` [N, 2] and `scale` [N, 2]
      (float32: box centre in image pixels, box size / 200, as the authors'
      loader makes them): s = scale_x·200/W_hm, x' = center_x + (x − W_hm/2)·s,
      y' = center_y + (y − H_hm/2)·s. Only scale_x is used, as in the
      authors' affine transform (it keeps the aspect). Compared within
      2e-3 px: float32 graph vs the authors' float64 differ by one float32
      ulp of the coordinates (2e-3 px is one ulp at 16384 px).
    mode boxes: as original, with center and scale made in the graph from
      the graph input `boxes` [N, 4] (COCO x, y, w, h in image pixels; the
      one `crop_boxes` adds, or a new one), the authors' box → center/scale
      at the model input's aspect (`input_size` or the model's).
    mode image: pixels of the caller's image, for a model fed whole images
      through input steps that resize, letterbox or crop them: mode crop's
      answer, then back through the input geometry the splice records
      (scale s and offset o per axis, model = caller·s + o on pixel edges).
      Keypoints are read as pixel centres, so a point at the centre of a
      model pixel lands at the centre of the caller pixel it came from:
      caller = (model + 0.5 − o) / s − 0.5. A keypoint outside the
      caller's image (in the letterbox padding: x outside [−0.5, W − 0.5]
      or y outside [−0.5, H − 0.5]) becomes (−1, −1), mmpose's mark of an
      invalid joint; a NaN coordinate is not outside, so NaN stays NaN.
      (Cell i sits at pixel i·ratio, so a peak whose cell straddles the
      image's left or top edge may count as padding.)
      Needs the recipe's input steps (half_pixel resizes, crops, pads);
      crop_boxes and flip_test are refused. Compared within 2e-3 px:
      onnxruntime matched the twin bit for bit, OpenVINO's float32
      division did not (up to 9.8e-4 px measured, images up to 16384 px).
    `units: crop` (modes original, boxes and image): the keypoints arrive
      in crop pixels already (after `simcc_decode`): the same map with the
      model input's size in place of the heatmap's (mmpose's bbox mapping
      too, at rotation 0); no "heatmaps" needed.
    """

    step_name: ClassVar[str] = "to_image"
    mode: Literal["crop", "original", "boxes", "image"] = Field(
        description="crop: pixels of the model's input; original: image pixels via center/scale inputs; "
                    "boxes: image pixels via the person boxes; image: the caller's pixels via the input steps")
    input_size: tuple[int, int] | None = Field(
        default=None, description="(width, height) of the model input; default: the model's")
    udp: bool = Field(default=False, description="modes crop and image: UDP's scale input_size / (heatmap_size - 1)")
    units: Literal["heatmap", "crop"] = Field(
        default="heatmap", description="modes original, boxes and image: the keypoints arrive in heatmap cells, or "
                                       "already in crop pixels (simcc_decode, to_image crop)")

    @field_validator("input_size")
    @classmethod
    def _positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(0 < v < 2**20 for v in value):
            raise ValueError("input_size is (width, height) in pixels; both must be positive")
        return value

    @model_validator(mode="after")
    def _udp_in_crop_pixels(self):
        if self.udp and (self.mode not in ("crop", "image") or self.units == "crop"):
            raise ValueError("udp is UDP's scale from heatmap cells to the model input's pixels: it goes with mode "
                             "crop or image, and keypoints in heatmap cells")
        if self.units == "crop" and self.mode == "crop":
            raise ValueError("units crop says the keypoints are in crop pixels already: it goes with mode original "
                             "or boxes or image")
        if self.input_size is not None and self.mode == "original" and self.units == "heatmap":
            raise ValueError("input_size is not used by mode original on keypoints in heatmap cells (center and "
                             "scale alone map them): drop it, or say units: crop if the keypoints are in crop "
                             "pixels")  # it was taken and ignored in silence (round 69)
        return self

    @property
    def _boxes_from(self) -> tuple[str, ...]:
        """The inputs that say where each crop (mode image: the model's input) was in the image."""
        return {"crop": (), "original": ("center", "scale"), "boxes": ("boxes",), "image": (GEOMETRY,)}[self.mode]

    @property
    def reads(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("keypoints",) + (("heatmaps",) if self.units == "heatmap" else ()) + self._boxes_from

    def _grid(self, env: dict, facts: ModelFacts | None) -> tuple[int, int]:
        """(H, W) of the grid the keypoints are in: the heatmaps', or the model input's (units crop)."""
        require(env, ("keypoints", "heatmaps") if self.units == "heatmap" else ("keypoints",), self.step_name)
        if self.units == "crop":
            width, height = self._input_size(facts)
            return height, width
        return heatmap_hw(env["heatmaps"].shape, "the heatmaps")

    def writes(self) -> dict[str, Comparison]:
        return {"keypoints": EXACT if self.mode == "crop" else IMAGE_COMPARISON}

    def extra_inputs(self, batch: Dim) -> tuple[ExtraInput, ...]:
        if self.mode == "boxes":
            return (replace(BOXES, shape=(batch, 4)),)
        if self.mode != "original":
            return ()
        return (
            ExtraInput("center", np.float32, (batch, 2), "box centre (x, y) in original-image pixels, per crop"),
            ExtraInput("scale", np.float32, (batch, 2), "box size (w, h) / 200, per crop (authors' convention)"),
        )

    def _input_size(self, facts: ModelFacts | None) -> tuple[int, int]:
        declared = facts.input_size if facts is not None else None
        if self.input_size is not None and declared is not None and tuple(self.input_size) != tuple(declared):
            # the crops are cut at the model's size: keypoints mapped back through another (a [256, 192] copied
            # from crop_boxes' [height, width]) landed elsewhere in the image, and verify PASSed, its twin mapping
            # them the same wrong way (round 63)
            raise StepError(f"input_size is {list(self.input_size)} (width, height), but the model input is "
                            f"{declared[0]} × {declared[1]}: the keypoints would be mapped back through crops of "
                            "another size than the model's", f"drop input_size, or give [{declared[0]}, "
                                                              f"{declared[1]}]")
        size = self.input_size or declared
        if size is None:
            raise StepError(f"to_image mode {self.mode} needs the model's input size, which is not static",
                            "give `input_size: [width, height]` to the to_image step")
        return size

    def _ratio(self, facts: ModelFacts | None, hw: tuple[int, int]) -> np.ndarray:
        size = self._input_size(facts)
        h, w = (side - 1 for side in hw) if self.udp else hw
        if h < 1 or w < 1:
            raise StepError("to_image udp needs heatmaps of at least 2×2", "drop udp for maps this small")
        return np.array([size[0] / w, size[1] / h], dtype=np.float32)

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        f32 = np.float32
        if self.mode in ("crop", "image"):
            require(env, ("keypoints",), self.step_name)
            pixels = env["keypoints"]  # model-input pixels already with units crop
            if self.units == "heatmap":
                pixels = em.op("Mul", [pixels, em.const("ratio", self._ratio(facts, self._grid(env, facts)))],
                               dtype=f32)
            return {"keypoints": pixels if self.mode == "crop" else _caller_pixels(em, pixels, env[GEOMETRY])}
        keypoints = env["keypoints"]
        h, w = self._grid(env, facts)
        for name in self._boxes_from:
            if name not in env:
                raise StepError(f"to_image mode {self.mode} needs the graph input {name!r}",
                                "let the splice add it (it is declared by extra_inputs)")
        if self.mode == "boxes":
            width, height = self._input_size(facts)
            center, scale = box_center_scale(em, env["boxes"], width / height)
        else:
            center, scale = env["center"], env["scale"]
        scale_x = em.op("Gather", [scale, em.const("first", [[0]], np.int64)], {"axis": 1}, dtype=f32)
        s = em.op("Mul", [scale_x, em.const("pixels_per_cell", PIXEL_STD / w, f32)], dtype=f32)  # [N, 1, 1]
        centre = em.unsqueeze(center, [1], dtype=f32)                                             # [N, 1, 2]
        offset = em.op("Sub", [keypoints, em.const("heatmap_centre", [w / 2, h / 2], f32)], dtype=f32)
        return {"keypoints": em.op("Add", [em.op("Mul", [offset, s], dtype=f32), centre], dtype=f32)}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        if self.mode in ("crop", "image"):
            require(env, ("keypoints",), self.step_name)
            pixels = np.asarray(env["keypoints"], dtype=np.float32)
            if self.units == "heatmap":
                pixels = pixels * self._ratio(facts, self._grid(env, facts))
            if self.mode == "crop":
                return {"keypoints": pixels}
            if env.get(GEOMETRY) is None:
                raise StepError("to_image mode image needs the input geometry",
                                "pass it with the extra inputs (twins.with_geometry, for the caller's shape)")
            return {"keypoints": _caller_pixels_twin(pixels, env[GEOMETRY])}
        coords = np.asarray(env["keypoints"], dtype=np.float32)
        heatmap_height, heatmap_width = self._grid(env, facts)
        if any(env.get(name) is None for name in self._boxes_from):
            raise StepError(f"to_image mode {self.mode} needs the crops' {' and '.join(self._boxes_from)}",
                            "pass them ([N, 2] center and scale, or [N, 4] boxes) along with the model output")
        if self.mode == "boxes":
            width, height = self._input_size(facts)
            pairs = [box_to_center_scale(box, width / height) for box in np.asarray(env["boxes"], np.float64)]
            center = np.array([c for c, _ in pairs], np.float32).reshape(-1, 2)
            scale = np.array([s for _, s in pairs], np.float32).reshape(-1, 2)
        else:
            center, scale = np.asarray(env["center"]), np.asarray(env["scale"])
        size = (heatmap_width, heatmap_height)
        mapped = [to_original(coords[i], center[i], scale[i], size) for i in range(len(coords))]
        return {"keypoints": np.stack(mapped) if mapped else np.zeros(coords.shape, np.float32)}


    def cell_spacing(self, facts: ModelFacts) -> tuple[float, float] | None:
        """Model pixels from one heatmap column to the next and from one row to the next (x, y) as this step maps
        them (`_ratio`; UDP's differ), where the maps' and the model input's sizes are declared; None otherwise
        (`samples._upscaled_size` then assumes a whole ratio)."""
        shape = facts.output_shape
        if (self.units != "heatmap" or shape is None or len(shape) != 4 or not all(isinstance(side, int) and side > 1
                                                                                  for side in shape[2:])
                or (self.input_size or facts.input_size) is None):
            return None
        x, y = self._ratio(facts, shape[2:])
        return float(x), float(y)

    def edge_cells(self, facts: ModelFacts | None, hw: tuple[int, int], geometry: np.ndarray
                   ) -> list[tuple[int, int]]:
        """(row, column) cells of [H, W] maps on either side of each edge of the caller's image (mode image,
        `geometry` of that image: `_caller_pixels` decides there whether a keypoint is in the image or in the
        padding), the other coordinate the cell nearest the image's middle; where the image covers a whole axis,
        that axis's first and last cells. Round 56: the cell probes' fixed corners and edge middles never lay next
        to a letterbox's edge, and a patch whose `first_centre` was 0 for −0.5 PASSed."""
        if self.mode != "image" or self.units != "heatmap":
            return []
        ratio = self._ratio(facts, hw)
        edges, middles = [], []
        for axis, count in enumerate((hw[1], hw[0])):  # x over columns, y over rows
            pixels = np.zeros((count, 2), np.float32)
            pixels[:, axis] = np.arange(count, dtype=np.float32) * ratio[axis]
            inside = ~_caller_coordinates(pixels, geometry)[1][:, axis]
            if not inside.any():
                return []
            flips = np.flatnonzero(inside[1:] != inside[:-1])
            edges.append(sorted({*flips, *(flips + 1), *(end for end in (0, count - 1) if inside[end])}))
            middles.append(int(np.flatnonzero(inside)[inside.sum() // 2]))
        (columns, rows), (middle_column, middle_row) = edges, middles
        return [(middle_row, int(column)) for column in columns] + [(int(row), middle_column) for row in rows]


def _caller_pixels(em: Emitter, pixels: gs.Variable, geometry: gs.Variable) -> gs.Variable:
    """Keypoints [N, K, 2] in model-input pixels → the caller's (to_image mode image), through `GEOMETRY`: pixel
    centres map to pixel centres; a keypoint with a coordinate outside the caller's image becomes (−1, −1)."""
    f32, i64 = np.float32, np.int64

    def pair(start: int) -> gs.Variable:  # geometry[start:start + 2], (x, y); Gather: Slice takes inputs from 10
        return em.op("Gather", [geometry, em.const("xy", [start, start + 1], i64)], {"axis": 0}, dtype=f32, shape=[2])

    half = em.const("half", 0.5, f32)
    shifted = em.op("Sub", [em.op("Add", [pixels, half], dtype=f32), pair(2)], dtype=f32)
    caller = em.op("Sub", [em.op("Div", [shifted, pair(0)], dtype=f32), half], dtype=f32)
    last_centre = em.op("Sub", [pair(4), half], dtype=f32)
    outside = em.op("Or", [em.op("Less", [caller, em.const("first_centre", -0.5, f32)], dtype=np.bool_),
                           em.op("Greater", [caller, last_centre], dtype=np.bool_)], dtype=np.bool_)
    # NaN is not outside: said explicitly, as OpenVINO's comparisons answer True for NaN here
    outside = em.op("And", [outside, em.op("Not", [em.op("IsNaN", [caller], dtype=np.bool_)], dtype=np.bool_)],
                    dtype=np.bool_)
    either = em.op("Or", [em.op("Gather", [outside, em.const("x", [0], i64)], {"axis": 2}, dtype=np.bool_),
                          em.op("Gather", [outside, em.const("y", [1], i64)], {"axis": 2}, dtype=np.bool_)],
                   dtype=np.bool_)                                                                   # [N, K, 1]
    return em.op("Where", [either, em.const("invalid", -1.0, f32), caller], dtype=f32, shape=pixels.shape)


def _caller_pixels_twin(pixels: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """`_caller_pixels` in numpy, float32 operation by operation."""
    caller, outside = _caller_coordinates(pixels, geometry)
    return np.where(outside.any(axis=-1, keepdims=True), np.float32(-1), caller)


def _caller_coordinates(pixels: np.ndarray, geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [..., 2] in model-input pixels in the caller's, float32 operation by operation as
    `_caller_pixels`, and whether each coordinate lies outside the caller's image (the twin's rule, which
    `ToImage.edge_cells` reads too)."""
    geometry = np.asarray(geometry, np.float32)
    scale, offset, size = geometry[0:2], geometry[2:4], geometry[4:6]
    half = np.float32(0.5)
    caller = (pixels + half - offset) / scale - half
    return caller, (caller < -half) | (caller > size - half)
