"""Importing a user's function named on the command line as `package.module:function` (the current folder is
importable, as for `python -m`): bench's PyTorch network, verify's reference pipeline."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from graphsurgery.errors import GraphsurgeryError


def import_callable(spec: str, what: str, example: str) -> Callable:
    """The function `spec` names; `what` says what it is for in errors (e.g. "the torch network (--torch)")."""
    module_name, _, attribute = spec.partition(":")
    fix = f"give MODULE:FUNCTION, e.g. {example}"
    if not module_name or not attribute:
        raise GraphsurgeryError(f"{what} {spec!r} is not MODULE:FUNCTION", fix=fix)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GraphsurgeryError(f"{what}: cannot import {module_name!r} ({exc})",
                                fix="run from the folder that holds the module, or check its name") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise GraphsurgeryError(f"{what}: {module_name} has no function {attribute!r}", fix=fix)
    return function


def call_user(function: Callable, what: str, *args, name: str | None = None):
    """`function(*args)` for a function the user named (`what` says which, e.g. "the reference pipeline
    (--reference-pipeline)"): an exception in it is theirs to fix, said in one line, not a graphsurgery bug.
    `name`: how to call it in that line (default: its module and name; a network's forward is named by the spec
    of the function that made it)."""
    try:
        return function(*args)
    except (GraphsurgeryError, MemoryError):
        raise
    except Exception as exc:
        name = name or f"{getattr(function, '__module__', None) or '?'}:{getattr(function, '__qualname__', function)}"
        message = " ".join(str(exc).split())[:200]
        raise GraphsurgeryError(f"{what}: {name} raised {type(exc).__name__}: {message}",
                                fix="call it alone in Python to see its traceback, and fix it") from None
