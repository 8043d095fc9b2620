"""Binding a recipe's input section to a model: each step learns the shapes around it, and the layouts, colours
and dtypes the steps produce must reach what the model wants. Splice uses it before it edits anything, and the
twins use it to run the same bound steps in numpy.
"""

from __future__ import annotations

from graphsurgery.errors import ModelError
from graphsurgery.recipe import InputSection
from graphsurgery.steps.base import Dim, InputStep, StepError, TensorSpec


def step_error(exc: StepError, where: str, model_name: str) -> ModelError:
    return ModelError(f"{where}: {exc}", path=model_name, fix=exc.fix or "adjust the recipe to this model")


def check_model_layout(shape: tuple[Dim, ...], layout: str, name: str, model_name: str) -> None:
    """A channel-last model patched as channel-first (or the reverse) would fail late and obscurely (3 mean values
    for 32 "channels"): say so first when the dims make it plain (3 channels at the other end)."""
    channels, other = (shape[1], shape[3]) if layout == "NCHW" else (shape[3], shape[1])
    if other == 3 and channels != 3:
        actual = "NHWC" if layout == "NCHW" else "NCHW"
        change = "drop the `layout: {to: NCHW}` step" if actual == "NHWC" else "add a `layout: {to: NCHW}` step"
        raise ModelError(f"input {name!r} is {list(shape)}: its channels are {'last' if actual == 'NHWC' else 'first'} "
                         f"({actual}) but the recipe says input.model.layout {layout}", path=model_name,
                         fix=f"set `model: {{layout: {actual}}}` in the recipe's input section and {change}")


def bind_input_steps(section: InputSection, model_shape: tuple[Dim, ...], model_name: str = "model"
                     ) -> tuple[tuple[InputStep, ...], tuple[Dim, ...]]:
    """The input steps bound to the model, and the caller-side shape they start from.

    Layouts and colours are followed forwards from the caller's tensor; shapes backwards from the model's: each
    step learns the model-side shape right after it (`bind`) and says which shape it needs before it.
    """
    specs = [TensorSpec(section.tensor.dtype, section.tensor.layout, section.tensor.color, ())]
    for index, step in enumerate(section.steps):
        try:
            specs.append(step.spec_after(specs[-1]))
        except StepError as exc:
            raise step_error(exc, f"input.steps[{index}].{step.step_name}", model_name) from None
    steps, shape = list(section.steps), model_shape
    for index in reversed(range(len(steps))):
        try:
            steps[index] = steps[index].bind(shape, specs[index])
        except StepError as exc:
            raise step_error(exc, f"input.steps[{index}].{steps[index].step_name}", model_name) from None
        shape = steps[index].shape_before(shape, specs[index])
    return tuple(steps), shape


def merge_declared(derived: tuple[Dim, ...], declared: tuple[Dim, ...] | None, model_name: str) -> tuple[Dim, ...]:
    if declared is None:
        return derived
    merged = []
    for axis, (got, want) in enumerate(zip(derived, declared)):
        if isinstance(got, int) and isinstance(want, int) and got != want:
            raise ModelError(f"input.tensor.shape[{axis}] is {want} but the model needs {got} there", path=model_name,
                             fix=f"set it to {got} or null")
        merged.append(want if want is not None else got)
    return tuple(merged)


def check_reaches_model(spec: TensorSpec, section: InputSection, dtype: str, model_name: str) -> None:
    wants = {"dtype": dtype, "layout": section.model.layout, "color": section.model.color}
    for key, want in wants.items():
        got = getattr(spec, key)
        if got != want:
            # `cast` makes float32 only: for a float16 model "add a cast step" was no fix (the recipe had one)
            cast = ("add a `cast: {}` step" if got != "float32" else
                    f"export the model with a float32 input (float16 conversion: keep_io_types=True), or feed "
                    f"{want} (input.tensor.dtype) with no cast step")
            fixes = {"dtype": cast, "layout": f"add a `layout: {{to: {want}}}` step",
                     "color": "add a `reverse_channels: {}` step"}
            raise ModelError(f"after the input steps the tensor is {got} but the model wants {want} ({key})",
                             path=model_name, fix=fixes[key])
