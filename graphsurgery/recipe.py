"""Recipes: YAML → validated, frozen objects.

Errors name the recipe file, the line and the YAML path (`input.steps[2].normalize.std`), and an unknown step gets
the closest known names. The YAML is read with the safe loader (no object-constructing tags), duplicate keys are
refused and the expanded size of the document is bounded (alias bombs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from graphsurgery.errors import ArgumentError, RecipeError, listed, quoted
from graphsurgery.parameter_errors import first_problem
from graphsurgery.registry import closest, steps_for
from graphsurgery.safeio import input_path, read_small_file
from graphsurgery.steps.base import Color, ExtraInput, InputStep, Layout, OutputStep, Step
from graphsurgery.yamlsource import YamlPath, dotted, line_of, read_yaml

MAX_RECIPE_BYTES = 1_000_000
MAX_STEPS = 100  # per side; the shipped recipes have at most a dozen
TENSOR_NAME = r"^[^\x00-\x1f]{1,256}$"
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
TensorName = Annotated[str, Field(pattern=TENSOR_NAME)]

class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputTensor(_Frozen):
    """What the caller will feed."""

    dtype: Literal["uint8", "float16", "float32"] = "float32"
    layout: Layout = "NCHW"
    color: Color = "RGB"
    shape: tuple[StrictInt | str | None, ...] | None = Field(
        default=None, description="fixed dims in the caller's layout; null or a name keeps a dim dynamic"
    )

    @field_validator("shape", mode="before")
    @classmethod
    def _no_booleans(cls, shape):
        if isinstance(shape, (list, tuple)) and any(isinstance(d, bool) for d in shape):
            raise ValueError("a dim is a number, a name or null, not true/false")
        if isinstance(shape, (list, tuple)) and any(isinstance(d, str) and _NUMBER.match(d) for d in shape):
            # a quoted "256" became a dynamic dim named 256, not the size 256 (round 44's leftover)
            raise ValueError("a dim name is not a number: write a fixed size without quotes")
        return shape

    @field_validator("shape")
    @classmethod
    def _four_dims(cls, shape):
        if shape is not None:
            if len(shape) != 4:
                raise ValueError(f"an image tensor has 4 dims, got {len(shape)}")
            if any(isinstance(d, int) and not 0 < d <= 1_000_000 for d in shape):
                raise ValueError("every fixed dim must be between 1 and 1,000,000")
        return shape


class ModelFacet(_Frozen):
    """What the model wants at the patched input (its element type is read from the model)."""

    layout: Layout = "NCHW"
    color: Color = "RGB"


class InputSection(_Frozen):
    target: str | None = Field(
        default=None, pattern=TENSOR_NAME, description="model input to patch; default: the single real input"
    )
    name: str | None = Field(
        default=None, pattern=TENSOR_NAME, description="name of the new input; default: the target's name"
    )
    tensor: InputTensor = InputTensor()
    model: ModelFacet = ModelFacet()
    steps: tuple[InputStep, ...] = ()


class OutputSection(_Frozen):
    target: TensorName | tuple[TensorName, ...] | None = Field(
        default=None,
        description="model output to patch, or a list of them (SimCC's simcc_x, simcc_y: each is then also "
                    "readable by its name); default: the single output")
    steps: tuple[OutputStep, ...] = Field(min_length=1)
    names: dict[str, TensorName] = Field(  # a newline or escape in an output name made a model `run` cannot read
        default_factory=dict,
        description="step result → new graph output name; default: every result under its own name",
    )
    keep_original: StrictBool = True  # "yes", 1 or "false" were taken as booleans (round 44's leftover)

    @field_validator("names")
    @classmethod
    def _names_known(cls, names: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        written = {key for step in info.data.get("steps", ()) for key in step.writes()}
        unknown = sorted(set(names) - written)
        if unknown and "steps" in info.data:
            raise ValueError(f"names [{listed(unknown)}] are not produced by the steps; the steps produce "
                             f"{sorted(written)}")
        values = list(names.values())
        if len(set(values)) != len(values):
            raise ValueError("two results are given the same output name")
        return names

    @field_validator("target")
    @classmethod
    def _distinct_targets(cls, target):
        if isinstance(target, tuple) and (not target or len(set(target)) != len(target) or len(target) > 16):
            raise ValueError("a list of targets names 1 to 16 different model outputs")
        return target

    def targets(self) -> tuple[str, ...] | None:
        """The model outputs the steps read, first one "output" (None: the model's single output)."""
        return (self.target,) if isinstance(self.target, str) else self.target

    def output_names(self) -> dict[str, str]:
        """Result key → graph output name, defaults filled in."""
        written: list[str] = []
        for step in self.steps:
            written += [key for key in step.writes() if key not in written]
        return self.names or {key: key for key in written}


class Recipe(_Frozen):
    """A validated recipe. Its identity, `sha256`, is the hash of what it does (`canonical`), the same for a file
    and for the same recipe built in Python; `file_sha256` and `source` name the file it came from, if any
    (recorded as provenance)."""

    version: Literal[1]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    description: str = Field(default="", max_length=10_000)
    input: InputSection | None = None
    output: OutputSection | None = None

    _sha256: str = PrivateAttr(default="")
    _source: str = PrivateAttr(default="<string>")

    @field_validator("version", mode="before")
    @classmethod
    def _not_a_bool(cls, value):
        if isinstance(value, bool):  # YAML `true` equals 1 in Python; a version is a number
            raise ValueError(f"version must be the number 1, not {str(value).lower()}")
        if isinstance(value, float):  # 1.0 was taken, "1" refused (round 44's leftover): the version is an integer
            raise ValueError(f"version must be the number 1, not {value!r}")
        return value

    @model_validator(mode="after")
    def _does_something(self):
        if self.input is None and self.output is None:
            raise ValueError("a recipe needs an `input` or an `output` section")
        unpaired = misplaced_steps(self.input and self.input.steps, self.output and self.output.steps,
                                   self.output and self.output.names)
        if unpaired is not None:  # a recipe built in Python (parse_recipe says it with the step's line)
            at, message, fix = unpaired
            raise ValueError(f"{dotted(at)}: {message} ({fix})")
        return self

    def extra_inputs(self) -> list[ExtraInput]:
        """The graph inputs its steps add (e.g. `boxes`, `center`, `scale`), each once, with the element type a
        model patched with it takes them in."""
        added = [extra for step in (self.input.steps if self.input else ()) for extra in step.extra_inputs()]
        added += [extra for step in (self.output.steps if self.output else ()) for extra in step.extra_inputs(None)]
        first: dict[str, ExtraInput] = {}
        for extra in added:
            first.setdefault(extra.name, extra)
        return list(first.values())

    def canonical(self) -> dict:
        """What the recipe does, as plain data: its sections with every step's parameters, defaults filled in.
        Not its name, description, comments or formatting: renaming or re-commenting a recipe keeps its identity."""
        def section(part: InputSection | OutputSection) -> dict:
            return {**part.model_dump(mode="json", exclude={"steps"}),
                    "steps": [{step.step_name: step.model_dump(mode="json")} for step in part.steps]}

        return {"version": self.version, "input": self.input and section(self.input),
                "output": self.output and section(self.output)}

    @property
    def sha256(self) -> str:
        """SHA-256 of `canonical()` as sorted, compact JSON: the recipe's identity."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def file_sha256(self) -> str | None:
        """SHA-256 of the text it was parsed from (None for a recipe built in Python)."""
        return self._sha256 or None

    def made(self, entry: dict) -> bool:
        """Whether a provenance entry records this recipe: the same content, or, in entries written before
        identities were content hashes (their `recipe_sha256` was the file's), the same file."""
        return entry.get("recipe_sha256") == self.sha256 or (
            self.file_sha256 is not None and self.file_sha256 in (entry.get("recipe_sha256"),
                                                                  entry.get("recipe_file_sha256")))

    @property
    def source(self) -> str:
        return self._source


def flip_unpaired(input_steps, output_steps) -> tuple[YamlPath, str, str] | None:
    """Where flip_test and flip_average do not pair up, with the message and the fix. flip_test doubles the crops
    (N → 2N) and flip_average, first among the output steps, folds their heatmaps back into N: repeated, unpaired
    or after a decoding step, 2N or 4N keypoints met N boxes (apply wrote the model, verify was an IndexError).
    `None` for a side stands for a recipe without that section: the caller then mirrors or folds; so does a caller
    that feeds its own crops, mirrored ones after the originals, to input steps that cut none (no `crop_boxes`)."""
    tests = [i for i, step in enumerate(input_steps or ()) if getattr(step, "step_name", None) == "flip_test"]
    averages = [i for i, step in enumerate(output_steps or ()) if getattr(step, "step_name", None) == "flip_average"]
    if len(tests) > 1:
        return (("input", "steps", tests[1], "flip_test"), "a second flip_test mirrors the crops again (4N)",
                "keep one flip_test")
    if len(averages) > 1:
        return (("output", "steps", averages[1], "flip_average"), "a second flip_average folds the heatmaps again",
                "keep one flip_average")
    if averages and averages[0] != 0:
        return (("output", "steps", averages[0], "flip_average"), "flip_average must come first among the output "
                "steps: the steps before it decode the 2N heatmaps of the flip test", "move it to the top of "
                "output.steps")
    if input_steps is not None and output_steps is not None and len(tests) != len(averages):
        if tests:
            return (("input", "steps", tests[0], "flip_test"), "flip_test doubles the crops but no output step "
                    "folds them back", "add `flip_average: {}` first among the output steps, or drop flip_test")
        if any(getattr(step, "sets_batch", False) for step in input_steps):  # the graph cuts the crops itself
            return (("output", "steps", averages[0], "flip_average"), "flip_average folds the flip test's mirrored "
                    "crops, but the input steps cut the crops and mirror none", "add `flip_test: {}` last among the "
                    "input steps, or drop flip_average")
    return None


def misplaced_steps(input_steps, output_steps, output_names=None) -> tuple[YamlPath, str, str] | None:
    """Steps in an order they cannot work in (`flip_unpaired`), or `udp_refine` not right after `heatmap_argmax`:
    it reads the argmax's integer cells, as mmpose's refine_keypoints_dark_udp does; after another refinement its
    twin indexed past the heatmaps (IndexError in `verify`) or disagreed with the graph (a false FAIL). Or
    `to_image` mode original after `crop_boxes`: it maps back through a center and scale the caller feeds besides
    the boxes the graph cropped (round 75: verify fed the boxes alone, an internal error)."""
    unpaired = flip_unpaired(input_steps, output_steps)
    if unpaired is not None:
        return unpaired
    names = [getattr(step, "step_name", None) for step in output_steps or ()]
    crops_boxes = any(getattr(step, "step_name", None) == "crop_boxes" for step in input_steps or ())
    for index, step in enumerate(output_steps or ()):
        if crops_boxes and names[index] == "to_image" and getattr(step, "mode", None) == "original":
            return (("output", "steps", index, "to_image"), "to_image mode original maps keypoints back through a "
                    "center and scale the caller feeds, but crop_boxes cuts the crops from the boxes in the graph",
                    "use `to_image: {mode: boxes}`: it maps them back through the boxes crop_boxes cut")
    for index, name in enumerate(names):
        if name == "udp_refine" and (index == 0 or names[index - 1] != "heatmap_argmax"):
            after = f"after {names[index - 1]}" if index else "first"
            return (("output", "steps", index, name), f"udp_refine refines the integer cells heatmap_argmax finds; "
                    f"it comes {after}", "put it right after `heatmap_argmax`, once, without another refinement")
    return units_unfit(output_steps) or unused_results(output_steps, output_names)


#: The output steps that refine keypoints in heatmap cells, and those that decode them (in heatmap cells, or in
#: crop pixels for SimCC)
REFINEMENTS = ("quarter_offset", "dark_refine", "udp_refine")
DECODERS = {"heatmap_argmax": "heatmap", "simcc_decode": "crop"}


def units_unfit(output_steps) -> tuple[YamlPath, str, str] | None:
    """A keypoint or box step that meets keypoints or boxes in other units than it reads, with the message and the
    fix. Each reads them as it finds them: a second `to_image` (or a refinement after one) scaled crop pixels as
    heatmap cells again (keypoints 4× too far, outside the crop), a second refinement moved refined keypoints again,
    a second `boxes_to_image` moved image-pixel boxes through the letterbox again (other boxes, another count); the
    numpy twins did the same, so `verify` passed the wrong answers (round 50). A decoder or `nms` starts afresh."""
    units, refined, made_by = None, False, ""  # keypoints: heatmap, crop or image pixels, as the steps left them
    boxes_mapped = False  # a detector's boxes: in the caller's image pixels (boxes_to_image), since the last nms
    for index, step in enumerate(output_steps or ()):
        name = getattr(step, "step_name", None)
        at = ("output", "steps", index, name)
        if name in DECODERS:
            units, refined, made_by = DECODERS[name], False, name
        elif name in REFINEMENTS and units is not None:
            if units != "heatmap":
                return (at, f"{name} refines keypoints in heatmap cells, but {made_by} has made them {units} pixels",
                        f"put {name} before to_image")
            if refined:
                return (at, f"{name} refines the keypoints again, after {made_by}", "keep one refinement")
            refined, made_by = True, name
        elif name == "to_image" and units is not None:
            reads = getattr(step, "units", "heatmap")
            if units != reads:
                fix = ("drop it: the keypoints are in image pixels already" if units == "image" else
                       "give it `units: crop` (modes original, boxes, image), or drop it" if units == "crop" else
                       "drop `units: crop`, or map them to crop pixels first with `to_image: {mode: crop}`")
                return (at, f"to_image reads keypoints in {reads} {'cells' if reads == 'heatmap' else 'pixels'}, but "
                            f"{made_by} has made them {units} {'cells' if units == 'heatmap' else 'pixels'}", fix)
            units = "crop" if getattr(step, "mode", None) == "crop" else "image"
            made_by = f"to_image (mode {getattr(step, 'mode', None)})"
        elif name == "nms":
            boxes_mapped = False
        elif name == "boxes_to_image":
            if boxes_mapped:
                return (at, "boxes_to_image maps the boxes of the model's input to the image, and a boxes_to_image "
                            "before it has mapped them already", "keep one boxes_to_image, after nms")
            boxes_mapped = True
    return None


def unused_results(output_steps, output_names) -> tuple[YamlPath, str, str] | None:
    """An output step none of whose results any later step reads or `output.names` keeps (`output_names`; none: all
    of them), with the message and the fix. Its work was thrown away in silence, and the recipe meant something
    else: `nms` after `boxes_to_image` reads the candidates again, so the detections came out in the model input's
    pixels; `heatmap_argmax` after `to_image` decoded the heatmaps afresh, in cells; a `softmax` whose
    probabilities were not named, a second `topk` (round 50's leftover). Their twins did the same, so verify
    passed."""
    steps = list(output_steps or ())
    latest: dict[str, int] = {}  # each result: the step that wrote it last
    used = [False] * len(steps)
    for index, step in enumerate(steps):
        for key in getattr(step, "reads", ()):
            if key in latest:
                used[latest[key]] = True
        written = [*step.writes(), *(["output"] if getattr(step, "rewrites_output", False) else [])]
        used[index] = not written
        latest.update(dict.fromkeys(written, index))
    kept = output_names if isinstance(output_names, dict) and output_names else [k for k in latest if k != "output"]
    if not set(kept) <= set(latest):  # names no step produces: refused by `OutputSection` for what they are
        return None
    for key in kept:
        if key in latest:
            used[latest[key]] = True
    index = next((index for index, step_used in enumerate(used) if not step_used), None)
    if index is None:
        return None
    step, written = steps[index], list(steps[index].writes())
    later = next(((other, key) for other in steps[index + 1:] for key in other.writes() if key in written), None)
    why = (f"{later[0].step_name} after it writes {later[1]} again before any step reads it" if later else
           "no later step reads them and output.names leaves them out")
    fix = ("drop the step, or name its results under output.names" if later is None else
           f"keep one {step.step_name}" if later[0].step_name == step.step_name else
           f"drop the step, or move it after {later[0].step_name} (a mapping such as to_image or boxes_to_image "
           "comes after the step that decodes or selects)")
    return (("output", "steps", index, step.step_name),
            f"the results of {step.step_name} ({', '.join(written)}) are never used: {why}", fix)


# --- loading -------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    path = input_path(path, "recipe file", RecipeError)
    raw = read_small_file(path, MAX_RECIPE_BYTES, "recipe file", RecipeError)
    return parse_recipe(raw, source=str(path))


def as_recipe(recipe: str | Path | Recipe) -> Recipe:
    """The Python API takes a recipe object or the path of a recipe file. Recipe text in a str was taken as the
    name of a file (an error line as long as the recipe, or an OSError when a line passed 255 bytes); a dict or
    None as a path (a TypeError from pathlib)."""
    if isinstance(recipe, Recipe):
        return revalidated(recipe)
    if isinstance(recipe, bytes) or not isinstance(recipe, (str, os.PathLike)):
        raise ArgumentError(f"a recipe is a Recipe or the path of a recipe file, not {type(recipe).__name__} (recipe "
                            "text: graphsurgery.recipe.parse_recipe(text) makes a Recipe of it)")
    if isinstance(recipe, str) and ("\n" in recipe or recipe.lstrip().startswith(("version:", "{"))):
        raise RecipeError("recipe text was given where the path of a recipe file goes",
                          fix="save it to a .yaml file and give its path, or pass parse_recipe(text)")
    return load_recipe(recipe)


def revalidated(recipe: Recipe) -> Recipe:
    """The recipe validated again, from what was set in it: a Recipe is checked once, when it is made, and
    `model_copy(update=…)`, `model_construct` or a change to its `names` dict made one with a std of 0 or NaN, a
    version 7, an output name holding escape sequences or steps that are numbers, which apply wrote into a model
    (round 34). Fields left to their defaults stay unset (a default set explicitly may conflict with another)."""
    def step(value):
        if not isinstance(value, Step):
            raise ArgumentError(f"a recipe step is a step object, not {type(value).__name__} {quoted(value)}")
        return type(value).model_validate(value.model_dump(exclude_unset=True))

    def section(part):
        if part is None or not isinstance(part, (InputSection, OutputSection)):
            return part  # None, or what validation refuses below
        steps = part.steps if isinstance(part.steps, (tuple, list)) else [part.steps]
        return {**part.model_dump(exclude_unset=True, exclude={"steps"}), "steps": tuple(map(step, steps))}

    try:
        data = {name: getattr(recipe, name) for name in recipe.model_fields_set}
        data.update({name: section(getattr(recipe, name, None)) for name in ("input", "output")
                     if name in recipe.model_fields_set})
        checked = Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RecipeError(f"the recipe object is no longer valid: {where + ': ' if where else ''}"
                          f"{first['msg'].removeprefix('Value error, ')}", path=recipe.source,
                          fix="build recipes with parse_recipe or load_recipe, and change them only by making a new "
                              "one") from None
    checked._sha256, checked._source = recipe._sha256, recipe._source
    return checked


def parse_recipe(raw: bytes | str, source: str = "<string>") -> Recipe:
    """Validate recipe text; `source` names it in errors. A path or a dict was an AttributeError on `.decode`
    (an internal error, round 50): refused, with the function that reads a file."""
    if not isinstance(raw, (str, bytes, bytearray)):
        raise ArgumentError(f"parse_recipe takes recipe text (str or bytes), not {type(raw).__name__} (a recipe "
                            "file: graphsurgery.recipe.load_recipe(path))")
    data_bytes = raw.encode() if isinstance(raw, str) else bytes(raw)
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data_bytes.count(b"\n", 0, exc.start) + 1
        raise RecipeError(f"line {line}: not UTF-8 text (bad byte at offset {exc.start})", path=source,
                          fix="save the recipe as UTF-8") from None
    data, lines = read_yaml(text, source)
    if data is None:
        raise RecipeError("the recipe is empty", path=source, fix="start from recipes/hrnet_coco_pose.yaml")
    if not isinstance(data, dict):
        raise RecipeError(
            f"line {lines.get((), 1)}: the recipe must be a mapping (key: value), not a {type(data).__name__}",
            path=source,
            fix="start from recipes/hrnet_coco_pose.yaml",
        )
    data = _parse_steps(data, lines, source)
    output = data.get("output")
    unpaired = misplaced_steps(*(_parsed_steps(data, side) for side in ("input", "output")),
                               output.get("names") if isinstance(output, dict) else None)
    if unpaired is not None:
        at, message, fix = unpaired
        raise RecipeError(f"line {line_of(at, lines)}: {dotted(at)}: {message}", path=source, fix=fix)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _recipe_error(exc, lines, source) from None
    recipe._sha256 = hashlib.sha256(data_bytes).hexdigest()
    recipe._source = source
    return recipe


def _parse_steps(data: dict, lines: dict[YamlPath, int], source: str) -> dict:
    """Replace each `{step_name: {params}}` item by its validated step object."""
    data = dict(data)
    for side in ("input", "output"):
        section = data.get(side)
        if not isinstance(section, dict) or "steps" not in section:
            continue
        items = section["steps"]
        if not isinstance(items, list):
            continue  # pydantic reports the wrong type with its line
        if len(items) > MAX_STEPS:  # each step is a few nodes in a chain: onnx-graphsurgeon's sort recursed past 500
            at: YamlPath = (side, "steps")
            raise RecipeError(f"line {line_of(at, lines)}: {dotted(at)}: {len(items):,} steps, more than "
                              f"{MAX_STEPS}", path=source, fix="a recipe has a few steps on each side; check that "
                              "it was not generated in a loop")
        known, other = steps_for(side), steps_for("output" if side == "input" else "input")
        parsed: list[Step] = []
        for index, item in enumerate(items):
            path: YamlPath = (side, "steps", index)
            parsed.append(_parse_step(item, path, known, other, side, lines, source))
        data[side] = {**section, "steps": parsed}
    return data


def _parsed_steps(data: dict, side: str) -> list | tuple | None:
    """A section's parsed steps (None: no such section, or one pydantic will refuse)."""
    section = data.get(side)
    steps = section.get("steps", ()) if isinstance(section, dict) else None
    return steps if isinstance(steps, (list, tuple)) else None


def _parse_step(item, path, known, other, side, lines, source) -> Step:
    def fail(message: str, fix: str, at: YamlPath = path) -> RecipeError:
        return RecipeError(f"line {line_of(at, lines)}: {dotted(at)}: {message}", path=source, fix=fix)

    if isinstance(item, str):
        item = {item: {}}
    if not isinstance(item, dict) or len(item) != 1:
        raise fail("a step is a mapping with one key, the step name", "write it as `- step_name: {param: value}`")
    (name, params), = item.items()
    name = str(name)
    if name not in known:
        if name in other:
            raise fail(f"{name!r} is an {other[name].side} step", f"move it under {other[name].side}.steps")
        suggestions = closest(name, list(known))
        hint = (
            f"did you mean {' or '.join(map(repr, suggestions))}?"
            if suggestions
            else f"known {side} steps: {', '.join(sorted(known))}"
        )
        raise fail(f"unknown {side} step {name!r}", hint + " (`graphsurgery steps` lists them)")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise fail(f"the parameters of {name!r} must be a mapping, not {type(params).__name__}",
                   f"write `{name}: {{}}` or `{name}: {{param: value}}`", path + (name,))
    try:  # strict JSON validation: `true` is not a number and "255" is not one either, as the schema says
        params_json = json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise fail(f"the parameters of {name!r} hold a value that is not a number, string, list or mapping ({exc})",
                   "quote dates and remove `!!` tags", path + (name,)) from None
    try:
        return known[name].model_validate_json(params_json, strict=True)
    except ValidationError as exc:
        raise _recipe_error(exc, lines, source, prefix=path + (name,), model=known[name]) from None


def _recipe_error(
    exc: ValidationError, lines, source: str, prefix: YamlPath = (), model: type[BaseModel] = Recipe
) -> RecipeError:
    problem = first_problem(exc, model)
    at = prefix + problem.loc
    return RecipeError(f"line {line_of(at, lines)}: {dotted(at)}: {problem.message}", path=source, fix=problem.fix)


# --- schema --------------------------------------------------------------------------------------------------


def recipe_json_schema() -> dict:
    """The JSON Schema of a recipe, with each step's parameters (for editors and `graphsurgery schema`)."""
    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for side, base in (("input", "InputStep"), ("output", "OutputStep")):
        variants = []
        for name, cls in sorted(steps_for(side).items()):
            params = cls.model_json_schema()
            defs.update(params.pop("$defs", {}))
            params["description"] = (cls.__doc__ or "").strip()
            variants.append({"type": "object", "properties": {name: params}, "required": [name],
                             "additionalProperties": False})
        defs[base] = {"description": f"one {side} step: `{{step_name: {{params}}}}`", "oneOf": variants}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
