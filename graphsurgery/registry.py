"""The step registry: an explicit name → class dict, filled by the `@register` decorator in `graphsurgery.steps`."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from graphsurgery.steps.base import Step

S = TypeVar("S", bound="type[Step]")

STEPS: dict[str, type[Step]] = {}


def register(cls: S) -> S:
    """Class decorator: make a step available to recipes under `cls.step_name`."""
    if cls.step_name in STEPS:
        raise RuntimeError(f"two steps are named {cls.step_name!r}")
    STEPS[cls.step_name] = cls
    return cls


def steps_for(side: str) -> dict[str, type[Step]]:
    """The steps usable on one side of the model ('input' or 'output'), by name."""
    import graphsurgery.steps  # noqa: F401  (fills STEPS)

    return {name: cls for name, cls in STEPS.items() if cls.side == side}


def producers(names: list[str]) -> list[str]:
    """The output steps that, built with their defaults, write every one of `names` and read none of them: what a
    recipe missing them could add before (round 105: a detector's boxes_to_image was told "e.g. heatmap_argmax")."""
    from graphsurgery.errors import RecipeError

    found = []
    for step_name, cls in sorted(steps_for("output").items()):
        try:
            step = cls()
        except RecipeError:  # a step with required parameters (to_image's mode)
            continue
        if set(names) <= set(step.writes()) and not set(names) & set(step.reads):
            found.append(step_name)
    return found


def closest(name: str, candidates: list[str]) -> list[str]:
    """The known names closest to a misspelt one, best first."""
    return difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
