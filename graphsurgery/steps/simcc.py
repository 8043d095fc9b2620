"""SimCC decoding (RTMPose and other mmpose SimCC heads): two 1-D classifications per joint, one over x and one
over y, instead of a heatmap.

The reference is mmpose 1.x: `get_simcc_maximum` (mmpose/codecs/utils/post_processing.py) and `SimCCLabel.decode`
(mmpose/codecs/simcc_label.py), which divides the locations by `simcc_split_ratio` after marking invalid joints.
The maxima are found with `maxima.first_maximum`, so ties, NaN and ±inf give numpy's answer on every runtime.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto
from pydantic import Field

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import Comparison, OutputStep, StepError
from graphsurgery.steps.maxima import first_maximum, first_nan
from graphsurgery.steps.output import SCORE_COMPARISON

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts

def _length(var, name: str) -> int:
    shape = getattr(var, "shape", None)
    if shape is None or len(shape) != 3 or not isinstance(shape[2], (int, np.integer)) or not 0 < shape[2] < 2**24:
        raise StepError(f"simcc_decode needs {name} as [N, K, L] with a static length L; it is "
                        f"{list(shape) if shape is not None else 'of unknown shape'}",
                        f"list the SimCC outputs in output.target and name them with `{name[-1]}:`")
    return int(shape[2])


@register
class SimccDecode(OutputStep):
    """Decode SimCC vectors into keypoints: mmpose's get_simcc_maximum.

    Reads two model outputs by name, `x` [N, K, Wx] and `y` [N, K, Wy]
    (list both in output.target: `target: [simcc_x, simcc_y]`), writes
    "keypoints" [N, K, 2] float32 in model-input pixels and "scores"
    [N, K, 1]. Per joint: x and y are the first positions of each vector's
    maximum (numpy's argmax: the first NaN where a vector holds one, 0 for
    a vector of −inf), the score is the smaller maximum (x's unless x's is
    greater than y's, so a NaN in x stays), joints whose score is <= 0 get
    (−1, −1), and then both are divided by `split_ratio`, as mmpose's
    SimCCLabel.decode does (invalid joints end at −1 / split_ratio).
    Exact for a power-of-two split_ratio (mmpose uses 2.0).
    No softmax is applied: vectors a model already ends in Softmax or
    Sigmoid give the same keypoints, but their scores are probabilities,
    all > 0, so no joint is marked invalid (noted on apply and verify).
    """

    step_name: ClassVar[str] = "simcc_decode"
    # at least 1/64, as at most 64 (round 40): 1e-300 passed `gt=0` and was 0 in the graph's float32, so every
    # keypoint divided by zero (NaN or ±inf on both sides: any such patch passed verify, with numpy's warnings)
    split_ratio: float = Field(default=2.0, ge=1 / 64, le=64,
                               description="SimCC bins per input pixel, 1/64 to 64 (mmpose: 2.0)")
    x: str = Field(default="simcc_x", min_length=1, max_length=256, description="model output of the x vectors")
    y: str = Field(default="simcc_y", min_length=1, max_length=256, description="model output of the y vectors")

    @property
    def reads(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.x, self.y)

    def writes(self) -> dict[str, Comparison]:
        exact = math.log2(self.split_ratio).is_integer()
        keypoints = Comparison("coordinates", rtol=0.0, atol=0.0 if exact else 1e-5, per_axis=(self.x, self.y))
        return {"keypoints": keypoints, "scores": SCORE_COMPARISON}

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        f32, i32 = np.float32, np.int32
        self._check_lengths(_length(env[self.x], self.x), _length(env[self.y], self.y), facts)
        found = {}
        for axis, name in (("x", self.x), ("y", self.y)):
            vectors = env[name]
            length = _length(vectors, name)
            if vectors.dtype is not None and np.dtype(vectors.dtype) != f32:
                vectors = em.op("Cast", [vectors], {"to": TensorProto.FLOAT}, dtype=f32)
            maximum = first_maximum(em, vectors, 3, length)
            # numpy's argmax: the first NaN of a vector holding one, 0 for a vector of −inf
            first = em.op("Where", [em.op("Less", [maximum.first, em.const("length", length, i32)], dtype=np.bool_),
                                    maximum.first, em.const("origin", 0, i32)], dtype=i32)
            first = em.op("Where", [maximum.has_nan, first_nan(em, vectors, 3, length), first], dtype=i32)
            found[axis] = (em.op("Cast", [first], {"to": TensorProto.FLOAT}, dtype=f32), maximum)
        (x_at, x_max), (y_at, y_max) = found["x"], found["y"]
        # score: y's maximum where x's is greater (neither NaN), else x's
        neither_nan = em.op("Not", [em.op("Or", [x_max.has_nan, y_max.has_nan], dtype=np.bool_)], dtype=np.bool_)
        greater = em.op("And", [neither_nan, em.op("Greater", [x_max.comparable, y_max.comparable], dtype=np.bool_)],
                        dtype=np.bool_)
        scores = em.op("Where", [greater, y_max.value, x_max.value], dtype=f32)                    # [N, K, 1]
        comparable = em.op("Where", [greater, y_max.comparable, x_max.comparable], dtype=f32)
        # valid: score > 0, or NaN (NaN is not <= 0)
        valid = em.op("Or", [em.op("Greater", [comparable, em.const("zero", 0.0, f32)], dtype=np.bool_),
                             em.op("IsNaN", [scores], dtype=np.bool_)], dtype=np.bool_)
        locations = em.op("Concat", [x_at, y_at], {"axis": 2}, dtype=f32)                          # [N, K, 2]
        locations = em.op("Where", [valid, locations, em.const("invalid", -1.0, f32)], dtype=f32)
        keypoints = em.op("Div", [locations, em.const("split_ratio", self.split_ratio, f32)], dtype=f32)
        return {"keypoints": keypoints, "scores": scores}

    def notes(self, facts: ModelFacts | None) -> list[str]:
        """Vectors the model already put through a Softmax or Sigmoid: the same argmax, but scores that are never
        <= 0, so the `score <= 0` rule marks no joint invalid (round 104: not a double application; said)."""
        if facts is None or facts.output_producer not in ("Softmax", "Sigmoid"):
            return []
        return [f"the model's {facts.output_name!r} is already made by a {facts.output_producer}: the keypoints are "
                "the same, but the scores are its probabilities (never <= 0, so no joint is marked invalid), not "
                "mmpose's raw maxima"]

    def _check_lengths(self, x_length: int, y_length: int, facts: ModelFacts | None) -> None:
        """Refuse a split_ratio (or x and y) that the model's vectors contradict, where its input size is static:
        mmpose's vectors hold int(side × split_ratio) bins. A ratio of 3 on vectors of 2 bins a pixel, or x and y
        swapped, put every keypoint elsewhere in the crop, and verify PASSed, its twin dividing the same way
        (round 63)."""
        if facts is None or facts.input_size is None:
            return
        width, height = facts.input_size

        def fits(x: int, y: int) -> bool:
            return abs(x - width * self.split_ratio) < 1 and abs(y - height * self.split_ratio) < 1

        if fits(x_length, y_length):
            return
        if fits(y_length, x_length):
            raise StepError(f"x is {self.x!r} of {x_length} bins and y {self.y!r} of {y_length}, but the model input "
                            f"is {width} × {height}: x and y are swapped",
                            f"give `x: {self.y}` and `y: {self.x}`")
        raise StepError(f"x ({self.x!r}) holds {x_length} bins and y ({self.y!r}) {y_length}, but on a {width} × "
                        f"{height} input split_ratio {self.split_ratio:g} makes {width * self.split_ratio:g} and "
                        f"{height * self.split_ratio:g}", f"give split_ratio {x_length / width:g} (the model's)")

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        simcc_x, simcc_y = (np.asarray(env[name], np.float32) for name in (self.x, self.y))
        if simcc_x.ndim != 3 or simcc_y.ndim != 3 or simcc_x.shape[:2] != simcc_y.shape[:2]:  # a recording's heads
            # (verify --reference): y's other joints were reshaped into vectors of other lengths (round 91)
            raise StepError(f"x and y are [N, K, L] of the same N and K; they are {list(simcc_x.shape)} and "
                            f"{list(simcc_y.shape)}", "give both SimCC vectors of the model")
        n, k, _ = simcc_x.shape
        self._check_lengths(simcc_x.shape[2], simcc_y.shape[2], facts)
        # get_simcc_maximum, as mmpose writes it, then SimCCLabel.decode's division
        simcc_x = simcc_x.reshape(n * k, -1)
        simcc_y = simcc_y.reshape(n * k, -1)
        x_locs = np.argmax(simcc_x, axis=1)
        y_locs = np.argmax(simcc_y, axis=1)
        locs = np.stack((x_locs, y_locs), axis=-1).astype(np.float32)
        max_val_x = np.amax(simcc_x, axis=1)
        max_val_y = np.amax(simcc_y, axis=1)
        with np.errstate(invalid="ignore"):
            mask = max_val_x > max_val_y
            max_val_x[mask] = max_val_y[mask]
            vals = max_val_x
            locs[vals <= 0.] = -1
        locs /= np.float32(self.split_ratio)
        return {"keypoints": locs.reshape(n, k, 2), "scores": vals.reshape(n, k, 1)}
