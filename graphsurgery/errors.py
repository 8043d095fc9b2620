"""The one exception type users see.

Every mistake a user can make (a broken recipe, a wrong tensor name, a hostile model file, a missing image) is
raised as a `GraphsurgeryError` whose message is a single line naming the file and the fix; the CLI prints it and
exits with code 2, without a traceback.
"""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path


def listed(names, most: int = 10) -> str:
    """Names for an error line, quoted: the first `most` and how many there are in all (a model with 2,000 outputs
    made a line of 17,000 characters)."""
    names = list(names)
    shown = ", ".join(map(quoted, names[:most]))
    return shown if len(names) <= most else f"{shown}, … ({len(names):,} in all)"


def quoted(value, most: int = 80) -> str:
    """A value from a file for an error line, quoted and cut to `most` characters (a recipe's `version:` of 900,000
    characters was echoed whole)."""
    return repr(value if len(str(value)) <= most else f"{str(value)[:most]}…")


def whole(value) -> bool:
    """An int, not a bool (True is 1 in Python) nor a float or str: what a count, index, seed or thread count must be
    (2.5, "2" and True went through the Python API)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def real(value) -> bool:
    """A real number, not a bool nor a str ("0.2" was a TypeError from math, True a score of 1)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_flags(**named) -> None:
    """Each named flag of the Python API is True or False: a str such as "no" is truthy (force="no" replaced an
    output, fp16="no" wrote FP16 weights, upgrade_opset="no" upgraded the opset)."""
    for name, value in named.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r} (a str such as "
                            f"'no' would count as True)")


class GraphsurgeryError(Exception):
    """A user-facing error: one line that names the file (and YAML path or tensor) and says how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.fix = fix
        parts = [f"{self.path}: {message}" if self.path else message]
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__(" — ".join(" ".join(p.split()) for p in parts))


class RecipeError(GraphsurgeryError):
    """The recipe file is not valid YAML, or does not follow the recipe schema."""


class ModelError(GraphsurgeryError):
    """The model file cannot be read safely, or does not fit the recipe."""
