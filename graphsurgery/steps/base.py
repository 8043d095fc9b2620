"""The step contract.

A step is a frozen pydantic model (its fields are the recipe parameters) with:
- `build(...)`: emits its ONNX fragment through an `Emitter` for the model's opset;
- `reference(...)`: its numpy twin, an independent implementation of the same processing;
- `compare` (output steps): how each output it writes is compared (float with tolerances, or exact coordinates);
- its docstring, which `graphsurgery steps` prints.

Input steps form a chain: caller tensor → … → what the model wants, tracked by a `TensorSpec`.
Output steps read and write named tensors in an environment that starts as {"output": <model output>} plus
any extra graph inputs the steps declare (e.g. `center`, `scale`); what they need to know about the model
(its input size, the op that makes its output) comes typed, as `ModelFacts` (`graphsurgery.model`), the same
object for `build` (from the splice) and `reference` (from the twins). Tensors and facts never share a dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graphsurgery.emit import Emitter
from graphsurgery.errors import QUOTED_MOST, StepParameterError
from graphsurgery.parameter_errors import first_problem

if TYPE_CHECKING:  # model.py imports the recipe, which imports the steps
    from graphsurgery.model import ModelFacts

Dim = int | str | None
#: The environment key of the input geometry, for output steps that map results back to the caller's pixels:
#: float32 [scale x, scale y, offset x, offset y, width, height], with model pixel = caller pixel · scale + offset
#: (the input steps' `forward_map`s composed) and the caller image's width and height.
GEOMETRY = "input_geometry"
MAX_SIDE = 65_536
#: What `graphsurgery steps` says of a step whose docstring Python dropped (-OO)
UNDOCUMENTED = "(no documentation: Python runs with -OO or PYTHONOPTIMIZE=2, which drops it)"
Layout = Literal["NCHW", "NHWC"]
Color = Literal["RGB", "BGR"]


class StepError(Exception):
    """A step cannot apply to this model; splice turns it into a one-line error naming model and recipe path."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class TensorSpec:
    """What flows between input steps: element type, layout, colour order and shape (in layout order)."""

    dtype: str
    layout: Layout
    color: Color
    shape: tuple[Dim, ...]

    def with_(self, **changes) -> TensorSpec:
        return replace(self, **changes)

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "NCHW" else 3

    @property
    def channels(self) -> Dim:
        return self.shape[self.channel_axis] if len(self.shape) == 4 else None


@dataclass(frozen=True)
class Comparison:
    """How an output is compared with its numpy twin.

    kind "float": an element fails only when it exceeds both atol and rtol.
    kind "coordinates": positions (pixels); equal within atol (0 = exact), mismatches checked for near ties;
    `per_axis` names the two vectors (a step's reads) whose maxima chose x and y (SimCC), on which they are judged.
    kind "indices": integer indices (argmax / top-k), exact; `ranks` names the values they rank (a step's result
    key, or "output"), on which near ties are judged (after a softmax over another axis the model output's order
    is not theirs).
    kind "detections": one part of a group of detector outputs, compared together as sets
    (`steps.detect.DetectionComparison`).
    kind "integer": an integer or bool model output the steps pass through or keep, exact (atol = rtol = 0) unless
    a tolerance is set for it by name; the float floors leave it alone (round 45: an int64 flat index of 10^5 off by
    one passed at the floor's rtol 1e-4).
    `exponentiates` (floats): the values are exponentials of the model output (softmax), so each carries the
    output's absolute error as a relative one (`tolerances.float16_exponentials`).
    """

    kind: Literal["float", "coordinates", "indices", "detections", "integer"]
    rtol: float = 1e-5
    atol: float = 1e-6
    ranks: str | None = None
    exponentiates: bool = False
    per_axis: tuple[str, str] | None = None


EXACT = Comparison("coordinates", rtol=0.0, atol=0.0)
#: The comparison of an integer or bool output of the model itself (passed through or kept)
EXACT_INTEGER = Comparison("integer", rtol=0.0, atol=0.0)


@dataclass(frozen=True)
class ExtraInput:
    """A graph input an output step adds (e.g. the crop `center`), with its element type and shape."""

    name: str
    dtype: type
    shape: tuple[Dim, ...]
    doc: str


class _StepClass(type(BaseModel)):
    """The steps' metaclass: a step built in Python with a parameter its recipe refuses (`Resize(size=(0, 0))`)
    raised pydantic's ValidationError, many lines (round 60's leftover); it is one line now, worded as in a recipe
    (`StepParameterError`), and held to what its recipe takes (`_strictly`). Only a call of the class comes here: a
    recipe's validation makes its steps without one, and words its errors itself, with the line they are on."""

    def __call__(cls, *args, **kwargs):
        try:
            step = super().__call__(*args, **kwargs)
            _strictly(cls, kwargs)
            return step
        except ValidationError as exc:
            problem = first_problem(exc, cls)
            where = ".".join(map(str, problem.loc))
            where = where if len(where) <= QUOTED_MOST else f"{where[:QUOTED_MOST]}…"  # a keyword of 120,000 chars
            raise StepParameterError(f"{cls.__name__}({where + '=…' if where else ''}): {problem.message}",
                                     fix=problem.fix) from None


def _strictly(cls: type[BaseModel], kwargs: dict) -> None:
    """`kwargs` validated as a recipe's parameters are (strict JSON), where they are JSON once tuples and numpy
    values are lists and numbers: pydantic's lax mode took `Scale(divide=True)` as 1.0, `Resize(size=["256",
    192.0])` as (256, 192) and `Resize(antialias=1)` as True, which a recipe refuses (round 67); a Decimal or a
    Fraction is the number it holds (`antialias=Decimal(1)` was True). Values JSON cannot hold are left to the lax
    validation, which took them."""
    def plain(value):
        if isinstance(value, (np.generic, np.ndarray)):
            return value.tolist()
        if isinstance(value, (Decimal, Fraction)):  # NaN and infinities: ValueError, OverflowError, left to lax
            return int(value) if value == int(value) else float(value)
        raise TypeError(type(value).__name__)

    try:
        text = json.dumps(kwargs, default=plain)
    except (TypeError, ValueError, OverflowError):
        return
    cls.model_validate_json(text, strict=True)


class Step(BaseModel, metaclass=_StepClass):
    """Base of all steps: parameters are pydantic fields, validated and frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step_name: ClassVar[str]
    side: ClassVar[Literal["input", "output"]]
    min_opset: ClassVar[int] = 9

    @classmethod
    def summary(cls) -> str:
        """The docstring's first line. Python run with -OO (PYTHONOPTIMIZE=2) drops docstrings: `graphsurgery
        steps` was then an internal error (IndexError)."""
        lines = (cls.__doc__ or "").strip().splitlines()
        return lines[0] if lines else UNDOCUMENTED

    def opset_needed(self) -> int:
        """The opset this step needs with its parameters: `min_opset`, or more when a parameter needs a newer
        operator form (resize's `antialias` needs opset 18)."""
        return self.min_opset


class InputStep(Step):
    """Transforms one tensor on the way from what the caller feeds to what the model wants."""

    side: ClassVar[str] = "input"
    #: True for a step whose output size does not depend on its input's (resize): the caller's H × W are then
    #: free, and verify and bench feed images of several sizes
    frees_caller_size: ClassVar[bool] = False
    #: True for a step whose output batch is not its input's (crop_boxes: one crop per box; flip_test: twice the
    #: crops): the splice frees the model's batch dim
    sets_batch: ClassVar[bool] = False
    #: False for a step that moves pixels (resize, center_crop, crop_boxes, flip_test): it says how in
    #: `forward_map` and `build_forward_map`, or refuses, so an output mapped back to the caller's pixels
    #: (boxes_to_image) never passes through a step that moved them unsaid
    keeps_geometry: ClassVar[bool] = True
    #: True for a step each of whose output values is a monotone function of one input value (or a copy of one):
    #: the least and greatest inputs then give the least and greatest outputs (`reference_bounds`)
    keeps_order: ClassVar[bool] = False

    def forward_map(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Where a point of the (H, W) = `hw` image this step is fed lands in what it makes: (scale, offset), each
        float32 (x, y), with made = fed · scale + offset in continuous pixel coordinates (0 at the top-left edge).
        The numpy twin's side; `build_forward_map` is the graph's."""
        if self.keeps_geometry:
            return np.ones(2, np.float32), np.zeros(2, np.float32)
        raise StepError(f"{self.step_name} moves pixels in a way no output step can map back",
                        "map results back with the step made for it (to_image mode boxes after crop_boxes)")

    def build_forward_map(self, em: Emitter, x: gs.Variable, spec: TensorSpec
                          ) -> tuple[gs.Variable, gs.Variable] | None:
        """`forward_map` in the graph, for the tensor `x` this step is fed: float32 [2] scale and offset (x, y), or
        None where the step keeps every pixel where it is."""
        if self.keeps_geometry:
            return None
        self.forward_map((1, 1))  # refuses, as the twin does
        raise NotImplementedError

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        """Graph inputs this step needs besides the tensor it transforms (crop_boxes: `boxes`); `build` and
        `reference` get each as a keyword argument of its name. The output steps see them too."""
        return ()

    def output_size(self) -> tuple[int, int] | None:
        """(H, W) this step produces whatever it is fed (resize, once bound to the model); None for the others."""
        return None

    def against_library(self, image: np.ndarray) -> dict | None:
        """Informational, for verify's report: how far this step is from the library call a user's own pipeline
        would make (resize: `cv2.resize`) on one caller image (H × W × C); None when there is nothing to compare."""
        return None

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        """The tensor description after this step; raises StepError when the step does not fit `spec`."""
        return spec

    def shape_before(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> tuple[Dim, ...]:
        """The caller-side shape that yields `shape_after`; dims this step makes free become symbolic."""
        return shape_after

    def bind(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> InputStep:
        """This step with what it takes from the model filled in, given the model-side shape right after it
        (resize reads its target height and width there). Most steps take nothing: they return themselves."""
        return self

    def build(self, em: Emitter, x: gs.Variable, spec: TensorSpec) -> gs.Variable:
        raise NotImplementedError

    def reference(self, x: np.ndarray, spec: TensorSpec) -> np.ndarray:
        raise NotImplementedError

    @property
    def rounds_halves(self) -> bool:
        """Whether the graph may round a value to the integer next to the twin's (a rounded resize pass whose sum
        lies within float32 rounding of a half): the twins then bound the model input (`reference_bounds`)."""
        return False

    def reference_bounds(self, lo: np.ndarray, hi: np.ndarray, spec: TensorSpec
                         ) -> tuple[np.ndarray, np.ndarray] | None:
        """The least and greatest values this step's graph may give for inputs anywhere in [lo, hi] (after a
        resize whose rounded passes may round a half either way: `twins.preprocess_bounds`); None where this step
        cannot bound them."""
        if not self.keeps_order:
            return None
        a, b = self.reference(lo, spec), self.reference(hi, spec)
        return np.minimum(a, b), np.maximum(a, b)


def hw_axes(layout: Layout) -> tuple[int, int]:
    """The (H, W) axes of a 4-D image tensor in `layout`."""
    return (2, 3) if layout == "NCHW" else (1, 2)


def with_hw(shape: tuple[Dim, ...], layout: Layout, hw: tuple[Dim, Dim]) -> tuple[Dim, ...]:
    """`shape` (4-D, in `layout`) with its height and width replaced by `hw`."""
    h_axis, w_axis = hw_axes(layout)
    dims = list(shape)
    dims[h_axis], dims[w_axis] = hw
    return tuple(dims)


class SizedStep(InputStep):
    """An input step that makes a fixed [height, width] whatever it is fed (resize, center_crop, crop_boxes): its
    `size`, or the model's when the recipe leaves it out (`bind`); the caller's H × W become free."""

    frees_caller_size: ClassVar[bool] = True
    keeps_geometry: ClassVar[bool] = False
    size: tuple[int, int] | None = Field(default=None, description="[height, width]; default: the model's")

    @field_validator("size")
    @classmethod
    def _sensible(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and not all(1 <= side <= MAX_SIDE for side in size):
            raise ValueError(f"height and width must be between 1 and {MAX_SIDE}")
        return size

    def output_size(self) -> tuple[int, int] | None:
        return self.size

    def target_size(self) -> tuple[int, int]:
        """(H, W) this step makes; StepError while it is not bound to a model and has no `size`."""
        if self.size is None:
            raise StepError(f"{self.step_name} does not know the model's size here",
                            f"give it: `{self.step_name}: {{size: [height, width]}}` (or bind it to the model)")
        return self.size

    def spec_after(self, spec: TensorSpec) -> TensorSpec:
        if self.size is None or len(spec.shape) != 4:
            return spec
        return spec.with_(shape=with_hw(spec.shape, spec.layout, self.size))

    def shape_before(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> tuple[Dim, ...]:
        return with_hw(shape_after, spec_before.layout, ("H", "W"))

    def bind(self, shape_after: tuple[Dim, ...], spec_before: TensorSpec) -> SizedStep:
        model_hw = tuple(shape_after[axis] for axis in hw_axes(spec_before.layout))
        fixed = all(isinstance(d, int) and d > 0 for d in model_hw)
        if self.size is not None:
            if fixed and model_hw != self.size:
                raise StepError(f"{self.step_name} size is {list(self.size)} but the model wants {list(model_hw)} "
                                f"(H, W)", f"set size to {list(model_hw)} or leave it out")
            return self
        if not fixed:
            raise StepError(f"the model input's height and width are not fixed ({model_hw[0]} × {model_hw[1]}), so "
                            f"{self.step_name} does not know its size",
                            f"give it: `{self.step_name}: {{size: [height, width]}}`")
        return self.model_copy(update={"size": (int(model_hw[0]), int(model_hw[1]))})


class OutputStep(Step):
    """Reads and writes named tensors after the model (the model's output is named "output")."""

    side: ClassVar[str] = "output"
    reads: ClassVar[tuple[str, ...]] = ("output",)
    #: True for a step that replaces "output" by what the decoding steps after it read (flip_average folds the
    #: flip test's 2N heatmaps into N)
    rewrites_output: ClassVar[bool] = False

    def writes(self) -> dict[str, Comparison]:
        """The names this step writes, each with how it is compared against the numpy twin."""
        raise NotImplementedError

    def extra_inputs(self, batch: Dim) -> tuple[ExtraInput, ...]:
        """Graph inputs this step needs besides the model's (none by default)."""
        return ()

    def build(self, em: Emitter, env: dict[str, gs.Variable], facts: ModelFacts | None = None
              ) -> dict[str, gs.Variable]:
        raise NotImplementedError

    def reference(self, env: dict[str, np.ndarray], facts: ModelFacts | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def notes(self, facts: ModelFacts | None) -> list[str]:
        """What apply's plan and verify's report say of this step on this model: a likely mistake that verify's
        twin, doing the same, cannot see (none by default)."""
        return []

    def moved_boxes(self, boxes: np.ndarray, env: dict[str, np.ndarray]) -> np.ndarray:
        """`boxes` [N, A, 4] where this step puts the boxes it reads (boxes_to_image: in the caller's pixels), so
        that an nms's candidates can be found among the detections the recipe outputs, NaN where it drops them;
        unchanged by default."""
        return boxes
