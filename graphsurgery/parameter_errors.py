"""One line for pydantic's ValidationError, wherever parameters are validated: a recipe (with the line it is on)
or a step built in Python (`Resize(size=(0, 0))`)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from graphsurgery.errors import quoted
from graphsurgery.registry import closest


@dataclass(frozen=True)
class Problem:
    """The first problem of a ValidationError: where (`loc`, without pydantic's union tags), what, and the fix."""

    loc: tuple
    message: str
    fix: str


def first_problem(exc: ValidationError, model: type[BaseModel]) -> Problem:
    """The first error of `exc` worded for the user, with " (and N more problems)" when there are more."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-union"))))
    message = first["msg"]
    step_name = getattr(model, "step_name", None)
    fix = f"`graphsurgery steps {step_name}` documents its parameters" if step_name else \
        "see `graphsurgery schema` for the recipe format"
    if loc == ("version",) and first["type"] == "literal_error":
        message = f"unsupported recipe version {quoted(first.get('input'))}"
        fix = "this graphsurgery reads `version: 1` recipes; upgrade graphsurgery for newer ones"
    elif first["type"] == "extra_forbidden":
        allowed = sorted(_fields_at(model, loc[:-1]))
        message = f"unknown key {quoted(loc[-1])}" if loc else "unknown key"  # a 120,000-character keyword (round 67)
        suggestion = closest(str(loc[-1]), allowed) if loc else []
        fix = ((f"did you mean {suggestion[0]!r}? " if suggestion else "") + f"allowed keys: {', '.join(allowed)}"
               if allowed else "this takes no parameters: write it as `{}`")
    elif first["type"] == "missing":
        message = f"required key {loc[-1]!r} is missing" if loc else "a required key is missing"
        fix = f"add `{loc[-1]}:`" if loc else fix
    elif first["type"] == "value_error":
        message = message.removeprefix("Value error, ")
        fix = "correct the value"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return Problem(loc, message + more, fix)


def _fields_at(model: type[BaseModel], loc: tuple) -> set[str]:
    """Field names of the pydantic model found at `loc` below `model` (for 'unknown key' hints)."""
    current = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return set()
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return set(current.model_fields)
    return set()
