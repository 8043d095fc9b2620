"""Top-down pose in the graph: person crops cut from the whole image by boxes, and the flip test.

The caller feeds the decoded image ([1, H, W, C], H and W free) and person boxes ([N, 4], COCO x, y, w, h in image
pixels); `crop_boxes` turns each box into the HRNet authors' center/scale (`graphsurgery.crops`: padded to the
model's aspect, × 1.25) and samples the crop bilinearly at the pixel centres its affine map gives, zero outside the
image; `flip_test` batches the mirrored crops after the originals; `flip_average` (output side) flips their heatmaps
back, swaps the left/right joints, shifts them one pixel and averages, as the authors' `validate` does; `to_image
mode: boxes` maps keypoints back through the same boxes.

The crop is float32 arithmetic and one Gather per neighbour (every opset from 9), written once for the graph and its
twin (`affine_crop`), and it is `cv2.warpAffine`'s (what the authors call) bit for bit on a uint8 image but for ties
OpenCV's double-precision matrix breaks its own way; `crop_vs_opencv` measures the distance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field, field_validator

from graphsurgery.crops import PADDING, PIXEL_STD
from graphsurgery.emit import Emitter, Tensor
from graphsurgery.images import opencv
from graphsurgery.registry import register
from graphsurgery.steps import affine_crop
from graphsurgery.steps.base import (
    Comparison,
    Dim,
    ExtraInput,
    InputStep,
    OutputStep,
    SizedStep,
    StepError,
    TensorSpec,
    hw_axes,
)
from graphsurgery.steps.detect import to_float

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts

#: The caller's boxes: one row per person, COCO (x, y, w, h) in image pixels. N may be 0.
BOXES = ExtraInput("boxes", np.float32, ("N", 4), "person boxes (x, y, w, h) in image pixels, COCO style")
#: the name crop_boxes gives (in its scope) its crops before the rounding: `crop_positions` cuts the graph there
BLENDED = "blended"
#: COCO's left/right joint pairs (0-based: eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def padded_box(em: Emitter, boxes: Tensor, aspect: float) -> tuple[gs.Variable, gs.Variable]:
    """center [N, 2] and padded size [N, 2] (pixels) of boxes [N, 4], float32, as the authors' `_xywh2cs` makes
    them: the box grown to `aspect` (w / h) around its centre, before the × 1.25. Only Mul, Add and Max: no
    Div, which a runtime may turn into a multiplication by the reciprocal (OpenVINO does: 1 ulp off)."""
    f32 = np.float32
    corner = em.op("Gather", [boxes, em.const("corner", [0, 1], np.int64)], {"axis": 1}, dtype=f32)
    size = em.op("Gather", [boxes, em.const("size", [2, 3], np.int64)], {"axis": 1}, dtype=f32)
    center = em.op("Add", [corner, em.op("Mul", [size, em.const("half", 0.5, f32)], dtype=f32)], dtype=f32)
    # the side that is short for the aspect grows: w' = max(w, h·aspect), h' = max(h, w / aspect)
    other = em.op("Gather", [size, em.const("swap", [1, 0], np.int64)], {"axis": 1}, dtype=f32)
    grown = em.op("Mul", [other, em.const("aspect", [aspect, 1 / aspect], f32)], dtype=f32)
    return center, em.op("Max", [size, grown], dtype=f32)


def box_center_scale(em: Emitter, boxes: Tensor, aspect: float) -> tuple[gs.Variable, gs.Variable]:
    """center [N, 2] and scale [N, 2] (the padded size × 1.25 / 200, the authors' units) of boxes [N, 4]."""
    center, padded = padded_box(em, boxes, aspect)
    return center, em.op("Mul", [padded, em.const("to_scale", PADDING / PIXEL_STD, np.float32)], dtype=np.float32)


@register
class CropBoxes(SizedStep):
    """Cut one crop per person box out of the whole image, in the graph, as cv2.warpAffine cuts it.

    Adds the graph input `boxes` [N, 4] float32 (COCO x, y, w, h in image
    pixels; N free, 0 included). The tensor before it is the whole image,
    float32 with a batch of 1 and any H × W, in either layout (put it after
    `cast`; after `layout: {to: NCHW}` it is faster: each channel is then
    sampled as one block); after it, N crops at the model's size (or
    `size`), in the same layout. Each box becomes the HRNet authors' center
    and scale (padded to the crop's aspect w/h, in units of 200 px, ×
    1.25) and their rotation-0 affine map; the crop repeats OpenCV 5's
    warpAffine (INTER_LINEAR, zero border) operation for operation, in
    float32 (`affine_crop`): the same float32 matrix, sampling positions,
    row-then-column interpolation with one rounding per multiply-add, and
    with `round` (default) its rounding half to even. On a uint8 image
    the crop is bit-identical to cv2.warpAffine's but where OpenCV's
    double-precision matrix breaks an exact tie the other way (about 0.3 %
    of detector boxes, measured). Crop sizes: aspect 3/4, 1, 1/2 and the
    like (`affine_crop.supported`).
    """

    step_name: ClassVar[str] = "crop_boxes"
    sets_batch: ClassVar[bool] = True
    round: bool = Field(default=True, description="round to integers, as cv2.warpAffine does on a uint8 image")

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return (BOXES,)

    def against_library(self, image: np.ndarray) -> dict | None:
        return crop_vs_opencv(self, image)

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        if spec.dtype != "float32":
            raise StepError(f"crop_boxes cuts from a float32 image; the tensor is {spec.dtype} here",
                            "put crop_boxes after `cast: {}`")
        after = super().spec_after(spec)
        return after.with_(shape=(BOXES.shape[0], *after.shape[1:])) if len(after.shape) == 4 else after

    def shape_before(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> tuple[Dim, ...]:
        return (1, *super().shape_before(shape_after, spec_before)[1:])  # one image

    def _size(self) -> tuple[int, int]:
        h, w = self.target_size()
        if not affine_crop.supported(h, w):
            raise StepError(f"crop_boxes reproduces cv2.warpAffine for crop sizes like 256×192, not {h}×{w}",
                            "use a size whose aspect w/h is q/p with p a power of two (3/4, 1, 1/2) and p − q too")
        return h, w

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec, boxes: gs.Variable | None = None) -> gs.Variable:
        h, w = self._size()
        channel_axis = 1 if spec.layout == "NCHW" else 3
        channels = spec.shape[channel_axis] if len(spec.shape) == 4 else None
        if not isinstance(channels, int):
            raise StepError("crop_boxes needs the image's channel count to be static", "declare 3 channels")
        f32, i64 = np.float32, np.int64
        o = affine_crop.GraphOps(em)
        h_axis, w_axis = hw_axes(spec.layout)
        shape = em.op("Shape", [x], dtype=i64, shape=[4])
        image_h = em.op("Gather", [shape, em.const("h_axis", h_axis, i64)], {"axis": 0}, dtype=i64, shape=[])
        image_w = em.op("Gather", [shape, em.const("w_axis", w_axis, i64)], {"axis": 0}, dtype=i64, shape=[])
        # NCHW: [C, H·W], each channel a block that the [N, h, w] masks multiply whole; NHWC: [H·W, C]
        nchw = spec.layout == "NCHW"
        pixels = em.op("Reshape", [x, em.const("pixels", [channels, -1] if nchw else [-1, channels], i64)], dtype=f32)
        box = [em.op("Gather", [boxes, em.const("box", [k], i64)], {"axis": 1}, dtype=f32) for k in range(4)]
        sx, sy = affine_crop.positions(o, affine_crop.matrix(o, *box, h, w),
                                       em.const("columns", np.arange(w, dtype=f32)[None]),
                                       em.const("rows", np.arange(h, dtype=f32)[None]))  # [N, w], [N, h]
        axes = []
        for at, bound in ((sx, image_w), (sy, image_h)):
            low = o.floor(at)
            limit = em.op("Cast", [bound], {"to": TensorProto.FLOAT}, dtype=f32, shape=[])
            axes.append((affine_crop.fraction(o, at, low),
                         [self._neighbour(em, low, shift, limit) for shift in (0.0, 1.0)]))
        (alpha, columns), (beta, rows) = axes
        # the 4 neighbours of each crop pixel, 0 outside the image: NCHW [C, N, h, w], NHWC [N, h, w, C]
        values = []
        for inside_y, y_at in rows:
            offset = em.op("Mul", [em.unsqueeze(y_at, [2], dtype=i64), image_w], dtype=i64)        # [N, h, 1]
            for inside_x, x_at in columns:
                index = em.op("Add", [offset, em.unsqueeze(x_at, [1], dtype=i64)], dtype=i64)     # [N, h, w]
                inside = em.op("Mul", [em.unsqueeze(inside_y, [2], dtype=f32), em.unsqueeze(inside_x, [1], dtype=f32)],
                               dtype=f32)
                gathered = em.op("Gather", [pixels, index], {"axis": 1 if nchw else 0}, dtype=f32)
                values.append(o.mul(gathered, inside if nchw else em.unsqueeze(inside, [3], dtype=f32)))
        along_x = affine_crop.lerp_weights(o, em.unsqueeze(alpha, [1] if nchw else [1, 3], dtype=f32))
        along_y = affine_crop.blend_weights(o, em.unsqueeze(beta, [2] if nchw else [2, 3], dtype=f32))
        crops = affine_crop.blend(o, along_y, affine_crop.lerp(o, along_x, *values[:2]),
                                  affine_crop.lerp(o, along_x, *values[2:]))
        if nchw:
            crops = em.op("Transpose", [crops], {"perm": [1, 0, 2, 3]}, dtype=f32)
        crops.name = em.unique(BLENDED)  # before the rounding, in the crops' layout: what `blended` computes
        shape = [BOXES.shape[0], channels, h, w] if nchw else [BOXES.shape[0], h, w, channels]
        crops.shape = shape
        if self.round:
            crops = em.round(crops, dtype=f32, shape=shape)
        return crops

    @staticmethod
    def _neighbour(em: Emitter, low: gs.Variable, shift: float, limit: gs.Variable) -> tuple[gs.Variable, gs.Variable]:
        """(1 inside the image, 0 outside, and the int64 position) of the neighbour `low + shift`; position 0
        outside (or NaN), so the cast to integers never sees a value out of range."""
        f32 = np.float32
        at = em.op("Add", [low, em.const("shift", shift, f32)], dtype=f32) if shift else low
        inside = em.op("And", [em.op("Greater", [at, em.const("minus_one", -1.0, f32)], dtype=np.bool_),
                               em.op("Less", [at, limit], dtype=np.bool_)], dtype=np.bool_)
        # NaN compares false everywhere but on OpenVINO with AVX-512 (Greater(NaN, x) is true there): test it
        inside = em.op("And", [inside, em.op("Not", [em.op("IsNaN", [at], dtype=np.bool_)], dtype=np.bool_)],
                       dtype=np.bool_)
        safe = em.op("Where", [inside, at, em.const("zero", 0.0, f32)], dtype=f32)
        return (em.op("Cast", [inside], {"to": TensorProto.FLOAT}, dtype=f32),
                em.op("Cast", [safe], {"to": TensorProto.INT64}, dtype=np.int64))

    def sampling_positions(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the twin samples the image for each of `boxes` [N, 4]: x per crop column [N, w], y per crop row
        [N, h] (what the graph's two Floor nodes read; `crop_positions` compares them on many boxes)."""
        h, w = self._size()
        o = affine_crop.NumpyOps()
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        return affine_crop.positions(o, affine_crop.matrix(o, *(boxes[:, k:k + 1] for k in range(4)), h, w),
                                     np.arange(w, dtype=np.float32)[None], np.arange(h, dtype=np.float32)[None])

    def reference(self, x: np.ndarray, spec: TensorSpec, boxes: np.ndarray | None = None) -> np.ndarray:
        crops = self.blended(x, spec, boxes)
        return np.round(crops) if self.round else crops

    def blended(self, x: np.ndarray, spec: TensorSpec, boxes: np.ndarray | None) -> np.ndarray:
        """The crops before their rounding (the graph's `BLENDED` tensor; `crop_positions` compares them exactly)."""
        if boxes is None:
            raise StepError("crop_boxes needs the person boxes", "pass `boxes` [N, 4] with the image")
        if x.shape[0] != 1:
            raise StepError(f"crop_boxes cuts from one image; got a batch of {x.shape[0]}", "feed one image")
        nchw = spec.layout == "NCHW"
        image = np.asarray(np.transpose(x[0], (1, 2, 0)) if nchw else x[0], np.float32)
        image_h, image_w, channels = image.shape
        pixels = image.reshape(-1, channels)
        o = affine_crop.NumpyOps()
        sx, sy = self.sampling_positions(boxes)
        axes = []
        for at, bound in ((sx, image_w), (sy, image_h)):
            low = o.floor(at)
            neighbours = []
            for shift in (0.0, 1.0):
                near = low + np.float32(shift)
                with np.errstate(invalid="ignore"):
                    inside = (near > -1) & (near < bound) & ~np.isnan(near)
                neighbours.append((inside.astype(np.float32), np.where(inside, near, 0).astype(np.int64)))
            axes.append((affine_crop.fraction(o, at, low), neighbours))
        (alpha, columns), (beta, rows) = axes
        values = [o.mul(pixels[y_at[:, :, None] * image_w + x_at[:, None, :]],
                        (inside_y[:, :, None] * inside_x[:, None, :])[..., None])
                  for inside_y, y_at in rows for inside_x, x_at in columns]  # [N, h, w, C] each
        along_x = affine_crop.lerp_weights(o, alpha[:, None, :, None])
        along_y = affine_crop.blend_weights(o, beta[:, :, None, None])
        crops = affine_crop.blend(o, along_y, affine_crop.lerp(o, along_x, *values[:2]),
                                  affine_crop.lerp(o, along_x, *values[2:]))
        return np.ascontiguousarray(np.transpose(crops, (0, 3, 1, 2)) if nchw else crops, dtype=np.float32)


@register
class FlipTest(InputStep):
    """Add the mirrored crops after the originals: the authors' flip test.

    N crops become 2N: first the crops as they are, then each mirrored
    left-right (in either layout). Pair it with `flip_average` on the
    output side, which folds the 2N heatmaps back into N. The model runs
    on twice the crops: about twice the time.
    """

    step_name: ClassVar[str] = "flip_test"
    sets_batch: ClassVar[bool] = True
    keeps_order: ClassVar[bool] = True
    keeps_geometry: ClassVar[bool] = False

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        return spec.with_(shape=("2N", *spec.shape[1:])) if len(spec.shape) == 4 else spec

    def shape_before(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> tuple[Dim, ...]:
        return ("N", *shape_after[1:])

    @staticmethod
    def _w_axis(spec: TensorSpec) -> int:
        return 3 if spec.layout == "NCHW" else 2

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        width = spec.shape[self._w_axis(spec)] if len(spec.shape) == 4 else None
        if not isinstance(width, int):
            raise StepError("flip_test needs the crops' width to be static", "put it after `crop_boxes` or resize")
        mirrored = em.op("Gather", [x, em.const("mirror", np.arange(width - 1, -1, -1, dtype=np.int64))],
                         {"axis": self._w_axis(spec)}, dtype=x.dtype)
        return em.op("Concat", [x, mirrored], {"axis": 0}, dtype=x.dtype, shape=["2N", *spec.shape[1:]])

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        return np.concatenate([x, np.flip(x, self._w_axis(spec))])


@register
class FlipAverage(OutputStep):
    """Fold the flip test's 2N heatmaps back into N: the authors' flip_back, shift and average.

    Reads "output" [2N, K, H, W] (the crops, then their mirrors, as
    `flip_test` batches them) and writes "output" [N, K, H, W], so the
    decoding steps after it see one set of heatmaps per crop. The mirrored
    heatmaps are flipped back left-right, each joint of `pairs` swapped with
    its partner (COCO's left/right pairs by default), shifted one pixel to
    the right when `shift` (the authors' SHIFT_HEATMAP: column j takes
    column j − 1, column 0 keeps its own), then averaged with the originals:
    (a + b)·0.5, float32 as the authors' torch code.
    """

    step_name: ClassVar[str] = "flip_average"
    reads: ClassVar[tuple[str, ...]] = ("output",)
    rewrites_output: ClassVar[bool] = True
    pairs: tuple[tuple[int, int], ...] = Field(default=COCO_FLIP_PAIRS, max_length=1024,
                                               description="0-based joint pairs swapped by the flip (default COCO)")
    shift: bool = Field(default=True, description="shift the flipped-back heatmaps one pixel (SHIFT_HEATMAP)")

    @field_validator("pairs")
    @classmethod
    def _disjoint(cls, pairs):
        joints = [j for pair in pairs for j in pair]
        if any(j < 0 for j in joints) or len(set(joints)) != len(joints):
            raise ValueError("pairs are 0-based joint indices, each joint in at most one pair")
        return pairs

    def writes(self) -> dict[str, Comparison]:
        return {}

    def _joint_order(self, joints: int) -> np.ndarray:
        if any(j >= joints for pair in self.pairs for j in pair):
            raise StepError(f"flip_average pairs name joints beyond the model's {joints}",
                            "give pairs of joint indices below the number of heatmaps")
        order = np.arange(joints)
        for a, b in self.pairs:
            order[a], order[b] = b, a
        return order

    def _columns(self, width: int) -> np.ndarray:
        """Which column of the mirrored map each column of the result reads: flipped back, then shifted."""
        back = np.arange(width - 1, -1, -1)
        return np.concatenate([back[:1], back[:-1]]) if self.shift else back

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        heatmaps = env["output"]
        shape = heatmaps.shape
        if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            raise StepError(f"flip_average needs heatmaps [2N, K, H, W] with static K, H, W; the output is "
                            f"{list(shape or [])}", "set output.target to the heatmap output")
        if isinstance(shape[0], int) and shape[0] % 2:  # round 47: the Split failed the patched model's checker,
            # "a graphsurgery bug" (flip_average without flip_test, on a model exported at batch 1)
            raise StepError(f"flip_average folds 2N heatmaps (the crops, then their mirrors) into N; the output's "
                            f"batch is fixed at {shape[0]}, which does not split in two",
                            "add `flip_test: {}` last among the input steps (it frees the batch), or export the model "
                            "with a dynamic batch")
        joints, h, w = shape[1:]
        f32, i64 = np.float32, np.int64
        heatmaps = to_float(em, heatmaps)  # as the twin averages them (round 54: float16 maps were split as float32,
        # and apply refused a right recipe, "a graphsurgery bug")
        # two equal halves (also when N = 0, which a Reshape to [2, -1, ...] cannot express)
        original, mirrored = em.op("Split", [heatmaps], {"axis": 0, **({"num_outputs": 2} if em.opset >= 18 else {})},
                                   dtype=f32, num_outputs=2)
        mirrored.dtype = f32
        swapped = em.op("Gather", [mirrored, em.const("joints", self._joint_order(joints).astype(i64))], {"axis": 1},
                        dtype=f32)
        back = em.op("Gather", [swapped, em.const("columns", self._columns(w).astype(i64))], {"axis": 3}, dtype=f32)
        average = em.op("Mul", [em.op("Add", [original, back], dtype=f32), em.const("half", 0.5, f32)], dtype=f32)
        average.shape = ["N", joints, h, w]
        return {"output": average}

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        output = np.asarray(env["output"], np.float32)
        if output.ndim != 4 or output.shape[0] % 2:
            raise StepError(f"flip_average needs an even batch of heatmaps; got {list(output.shape)}",
                            "put `flip_test` last among the input steps")
        self._joint_order(output.shape[1])
        half = output.shape[0] // 2
        original = output[:half]
        # the authors' flip_back, then SHIFT_HEATMAP, then the average (on a copy: the model's output stays intact)
        output_flipped = output[half:, :, :, ::-1].copy()
        for a, b in self.pairs:
            tmp = output_flipped[:, a, :, :].copy()
            output_flipped[:, a, :, :] = output_flipped[:, b, :, :]
            output_flipped[:, b, :, :] = tmp
        if self.shift:
            output_flipped[:, :, :, 1:] = output_flipped.copy()[:, :, :, 0:-1]
        return {"output": ((original + output_flipped) * np.float32(0.5)).astype(np.float32)}


def crop_vs_opencv(step: CropBoxes, image: np.ndarray) -> dict:
    """How far the step's crop is from the authors' `cv2.warpAffine` (INTER_LINEAR, zero border) on one H×W×C
    image, for the whole-image box: the step's numpy twin (which the graph matches) against OpenCV on the image in
    its own dtype, in the image's units. The step must know its size (bound to the model, or `size` given)."""
    cv2 = opencv()

    from graphsurgery.crops import affine_transform, box_to_center_scale, whole_image_box

    h, w = step.target_size()
    hwc = image.reshape(*image.shape[:2], -1)
    box = whole_image_box(hwc)
    center, scale = box_to_center_scale(box, w / h)
    theirs = cv2.warpAffine(hwc, affine_transform(center, scale, (w, h)), (w, h), flags=cv2.INTER_LINEAR)
    spec = TensorSpec("float32", "NHWC", "BGR", (1, *hwc.shape))
    ours = step.reference(hwc[None].astype(np.float32), spec, boxes=np.array([box], np.float32))[0]
    difference = np.abs(ours.astype(np.float64) - theirs.reshape(ours.shape))
    return {
        "library_call": f"cv2.warpAffine(image, get_affine_transform(center, scale, 0, ({w}, {h})), ({w}, {h}), "
                  f"flags=cv2.INTER_LINEAR) for the whole-image box",
        "equivalent": "warpAffine INTER_LINEAR",
        "image_dtype": str(image.dtype),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
    }
