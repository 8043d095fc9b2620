"""Input steps: from what the caller feeds (e.g. uint8 NHWC BGR) to what the model wants (float32 NCHW RGB)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs
from onnx.helper import np_dtype_to_tensor_dtype
from pydantic import Field, field_validator, model_validator

from graphsurgery.emit import Emitter
from graphsurgery.registry import register
from graphsurgery.steps.base import Dim, InputStep, Layout, StepError, TensorSpec

NCHW_FROM_NHWC = (0, 3, 1, 2)
NHWC_FROM_NCHW = (0, 2, 3, 1)


def _require_float(spec: TensorSpec, step: str) -> None:
    if spec.dtype != "float32":
        raise StepError(f"{step} needs float32 but the tensor is {spec.dtype} here", "put a `cast: {}` step before it")


@register
class Cast(InputStep):
    """Convert the element type to float32 (from uint8 or float16).

    Values are kept as they are (0–255 stays 0–255); follow with `scale` to bring them to 0–1.
    """

    step_name: ClassVar[str] = "cast"
    keeps_order: ClassVar[bool] = True
    to: Literal["float32"] = "float32"

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        return spec.with_(dtype=self.to)

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        return em.op("Cast", [x], {"to": np_dtype_to_tensor_dtype(np.dtype(self.to))}, dtype=np.float32)

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        return x.astype(np.float32)


@register
class ChangeLayout(InputStep):
    """Transpose between channel-last (NHWC, as images are stored) and channel-first (NCHW, as models want).

    `to` names the layout after the step; the layout before it is the other one.
    """

    step_name: ClassVar[str] = "layout"
    keeps_order: ClassVar[bool] = True
    to: Layout = "NCHW"

    def _perm(self) -> tuple[int, ...]:
        return NCHW_FROM_NHWC if self.to == "NCHW" else NHWC_FROM_NCHW

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        if spec.layout == self.to:
            raise StepError(
                f"the tensor is already {self.to} here", "remove this layout step or declare the caller's layout"
            )
        shape = tuple(spec.shape[i] for i in self._perm()) if spec.shape else spec.shape
        return spec.with_(layout=self.to, shape=shape)

    def shape_before(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> tuple[Dim, ...]:
        inverse = np.argsort(self._perm())
        return tuple(shape_after[i] for i in inverse)

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        return em.op("Transpose", [x], {"perm": list(self._perm())}, dtype=x.dtype)

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(x, self._perm()))


@register
class ReverseChannels(InputStep):
    """Reverse the channel order: BGR ↔ RGB."""

    step_name: ClassVar[str] = "reverse_channels"
    keeps_order: ClassVar[bool] = True

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        if spec.channels not in (None, 3):
            raise StepError(f"reverse_channels needs 3 colour channels, the tensor has {spec.channels}",
                            "drop the `reverse_channels` step (a tensor of other than 3 channels has no colour "
                            "order), or check input.model.layout if the channels are on the other axis")
        return spec.with_(color="RGB" if spec.color == "BGR" else "BGR")

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        order = em.const("order", [2, 1, 0], np.int64)
        return em.op("Gather", [x, order], {"axis": spec.channel_axis}, dtype=x.dtype)

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        return np.ascontiguousarray(np.flip(x, axis=spec.channel_axis))


@register
class Scale(InputStep):
    """Divide (or multiply) every value by a constant, e.g. `divide: 255` to bring 0–255 to 0–1."""

    step_name: ClassVar[str] = "scale"
    keeps_order: ClassVar[bool] = True
    divide: float | None = Field(default=None, description="divisor, e.g. 255")
    multiply: float | None = Field(default=None, description="factor, e.g. 0.00392156862745098")

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.divide is None) == (self.multiply is None):
            raise ValueError("give exactly one of `divide` or `multiply`")
        value = self.divide if self.divide is not None else self.multiply
        if not np.isfinite(value) or value == 0 or abs(value) > 1e30 or abs(value) < 1e-30:
            raise ValueError(f"the factor must be a finite, non-zero number of sensible size, got {value}")
        return self

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        _require_float(spec, "scale")
        return spec

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        if self.divide is not None:
            return em.op("Div", [x, em.const("divisor", self.divide, np.float32)], dtype=np.float32)
        return em.op("Mul", [x, em.const("factor", self.multiply, np.float32)], dtype=np.float32)

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        if self.divide is not None:
            return x / np.float32(self.divide)
        return x * np.float32(self.multiply)


@register
class Normalize(InputStep):
    """Subtract a per-channel mean and divide by a per-channel std: (x − mean) / std, as Sub and Div nodes.

    The constants are shaped for the layout they meet ([1,C,1,1] for NCHW, [1,1,1,C] for NHWC); each has one value
    per channel, or one value for all of them (as torchvision's Normalize broadcasts `mean=[0.5]`), and no std may
    be zero.
    """

    step_name: ClassVar[str] = "normalize"
    keeps_order: ClassVar[bool] = True
    mean: tuple[float, ...] = Field(min_length=1, max_length=4096)
    std: tuple[float, ...] = Field(min_length=1, max_length=4096)

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if not all(np.isfinite(v) and abs(v) < 1e30 for v in values):
            raise ValueError("every value must be a finite number of sensible size")
        return values

    @model_validator(mode="after")
    def _consistent(self):
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)} (give one per channel, "
                             "or one for all channels)")
        if any(abs(s) < 1e-30 for s in self.std):
            raise ValueError("std must not contain zero (it divides)")
        return self

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        _require_float(spec, "normalize")
        given = max(len(self.mean), len(self.std))
        if isinstance(spec.channels, int) and given not in (1, spec.channels):
            raise StepError(
                f"normalize has {given} mean/std values but the tensor has {spec.channels} channels",
                f"give {spec.channels} values for mean and std (or one value for all channels)",
            )
        return spec

    def _shaped(self, values: tuple[float, ...], spec: TensorSpec) -> np.ndarray:
        shape = [1, 1, 1, 1]
        shape[spec.channel_axis] = len(values)
        return np.asarray(values, dtype=np.float32).reshape(shape)

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        centred = em.op("Sub", [x, em.const("mean", self._shaped(self.mean, spec))], dtype=np.float32)
        return em.op("Div", [centred, em.const("std", self._shaped(self.std, spec))], dtype=np.float32)

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        return (x - self._shaped(self.mean, spec)) / self._shaped(self.std, spec)
