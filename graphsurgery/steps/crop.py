"""The `center_crop` input step: torchvision's CenterCrop in the graph.

After `resize: {size: [256, 256], fit: stretch}` it makes the Resize + CenterCrop of many packages' pipelines
(the aspect ratio is not kept, unlike `fit: crop`). torchvision pads an image smaller than the crop with zeros
first (the odd pixel on the right / bottom), then cuts at round((size − crop) / 2), rounded half to even.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import SizedStep, TensorSpec, hw_axes
from graphsurgery.steps.resize import CropOffset, centre_start, emit_centre_start


@register
class CenterCrop(SizedStep):
    """Cut the centre [height, width] out of the image: torchvision's CenterCrop.

    `size`: [height, width]; default: the model's. The cut starts at
    round((H − h) / 2), round((W − w) / 2), halves rounded to even as
    torchvision's `int(round(...))` does; an image smaller than the crop is
    first padded with zeros (the odd pixel to the right / bottom), as
    torchvision pads it. `crop_offset: floor` starts the cut at
    (H − h) // 2, (W − w) // 2 instead, as PaddleClas's CropImage does.
    Either layout; the caller's H × W become free. Opset 11.
    """

    step_name: ClassVar[str] = "center_crop"
    keeps_order: ClassVar[bool] = True
    min_opset: ClassVar[int] = 11

    crop_offset: CropOffset = Field(default="round", description="the cut's offset rounded half to even "
                                    "(torchvision) or down (PaddleClas)")

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        target = list(self.target_size())
        axes = list(hw_axes(spec.layout))
        i64, f32 = np.int64, np.float32
        before, after, starts = self._placement(em, x, spec)
        zero = em.const("zero_pad", [0], i64)
        begins, ends = [zero] * 4, [zero] * 4
        for position, axis in enumerate(axes):
            pick = em.const("axis", [position], i64)
            begins[axis] = em.op("Gather", [before, pick], {"axis": 0}, dtype=i64)
            ends[axis] = em.op("Gather", [after, pick], {"axis": 0}, dtype=i64)
        pads = em.op("Concat", begins + ends, {"axis": 0}, dtype=i64, shape=[8])
        padded = em.op("Pad", [x, pads, em.const("pad_value", 0, np.dtype(x.dtype or f32))], {"mode": "constant"},
                       dtype=x.dtype)
        ends = em.op("Add", [starts, em.const("target", target, i64)], dtype=i64)
        y = em.op("Slice", [padded, starts, ends, em.const("axes", axes, i64)], dtype=x.dtype)
        y.shape = list(self.spec_after(spec.with_(shape=tuple(x.shape or (None,) * 4))).shape)
        return y

    def _placement(self, em: Emitter, x: gs.Variable, spec: TensorSpec
                   ) -> tuple[gs.Variable, gs.Variable, gs.Variable]:
        """[h, w] int64 each: the zeros padded before and after an image smaller than the crop ((crop − size) // 2
        before, the rest after), and where the cut starts in the padded image (`resize.emit_centre_start`)."""
        target = list(self.target_size())
        i64 = np.int64
        shape = em.op("Shape", [x], dtype=i64, shape=[4])
        hw = em.op("Gather", [shape, em.const("hw_axes", list(hw_axes(spec.layout)), i64)], {"axis": 0}, dtype=i64,
                   shape=[2])
        short = em.op("Sub", [em.const("target", target, i64), hw], dtype=i64)
        short = em.op("Where", [em.op("Less", [short, em.const("zero", 0, i64)], dtype=np.bool_),
                                em.const("none", 0, i64), short], dtype=i64)
        before = em.op("Div", [short, em.const("two", 2, i64)], dtype=i64)
        after = em.op("Sub", [short, before], dtype=i64)
        # the padded image covers the crop: the excess is never negative
        excess = em.op("Sub", [em.op("Add", [hw, short], dtype=i64), em.const("target", target, i64)], dtype=i64)
        return before, after, emit_centre_start(em, excess, self.crop_offset)

    def forward_map(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        crop = np.array(self.target_size()[::-1])
        size = np.array(hw[::-1])  # (x, y) from here on
        short = np.maximum(crop - size, 0)
        starts = centre_start(size + short - crop, self.crop_offset)
        return np.ones(2, np.float32), (short // 2 - starts).astype(np.float32)

    def build_forward_map(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> tuple[gs.Variable, gs.Variable]:
        i64, f32 = np.int64, np.float32
        before, _, starts = self._placement(em, x, spec)
        shift = em.op("Sub", [before, starts], dtype=i64)
        offset = em.op("Gather", [em.op("Cast", [shift], {"to": TensorProto.FLOAT}, dtype=f32),
                                  em.const("xy", [1, 0], i64)], {"axis": 0}, dtype=f32, shape=[2])
        return em.const("unit_scale", np.ones(2, f32)), offset

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        h_axis, w_axis = hw_axes(spec.layout)
        (crop_height, crop_width), image_height, image_width = self.target_size(), x.shape[h_axis], x.shape[w_axis]
        # torchvision.transforms.functional.center_crop, written for an array
        if crop_width > image_width or crop_height > image_height:
            pads = [(0, 0)] * x.ndim
            pads[h_axis] = ((crop_height - image_height) // 2 if crop_height > image_height else 0,
                            (crop_height - image_height + 1) // 2 if crop_height > image_height else 0)
            pads[w_axis] = ((crop_width - image_width) // 2 if crop_width > image_width else 0,
                            (crop_width - image_width + 1) // 2 if crop_width > image_width else 0)
            x = np.pad(x, pads)
            image_height, image_width = x.shape[h_axis], x.shape[w_axis]
            if crop_width == image_width and crop_height == image_height:
                return x
        crop_top, crop_left = (int(start) for start in centre_start([image_height - crop_height,
                                                                      image_width - crop_width], self.crop_offset))
        index = [slice(None)] * x.ndim
        index[h_axis], index[w_axis] = slice(crop_top, crop_top + crop_height), slice(crop_left, crop_left + crop_width)
        return np.ascontiguousarray(x[tuple(index)])
