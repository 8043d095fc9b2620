"""Importing a user's function named on the command line as `package.module:function` (the current folder is
importable, as for `python -m`): bench's PyTorch network, verify's reference pipeline."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError
from graphsurgery.limits import memory_limit, writable
from graphsurgery.supervisor import users_code


def source_file(spec: str | None) -> Path | None:
    """The file of the module `spec` (`module:function`) names, as `import_callable` will find it, or None (no
    spec, a built-in, a module not found: `import_callable` says so later). It is an input of the command like any
    other: `bench --torch net:build --json net.py` (and `verify --reference-pipeline m:f --json m.py`) wrote the
    report over the user's own code. Found without running the module itself (a dotted name's packages load)."""
    module_name = (spec or "").partition(":")[0]
    if not module_name or module_name.startswith("."):
        return None
    _importable_here()
    try:
        found = importlib.util.find_spec(module_name)
    except (Exception, SystemExit):  # a parent package that fails to load: import_callable says how, later
        return None
    origin = getattr(found, "origin", None)
    return Path(origin) if origin and os.path.isfile(origin) else None


def _importable_here() -> None:
    """The current folder is importable, as for `python -m`."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def import_callable(spec: str, what: str, example: str) -> Callable:
    """The function `spec` names; `what` says what it is for in errors (e.g. "the torch network (--torch)")."""
    module_name, _, attribute = spec.partition(":")
    fix = f"give MODULE:FUNCTION, e.g. {example}"
    if not module_name or not attribute or module_name.startswith("."):  # `..:f` is relative to no package
        raise GraphsurgeryError(f"{what} {spec!r} is not MODULE:FUNCTION", fix=fix)
    _importable_here()
    try:
        with _in_this_folder(), users_code(f"{what} importing {module_name}"):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GraphsurgeryError(f"{what}: cannot import {module_name!r} ({exc})",
                                fix="run from the folder that holds the module, or check its name") from None
    except (Exception, SystemExit) as exc:  # the module's own code failed or exited while it loaded (a script's
        raise _users_fault(what, f"importing {module_name}", exc) from None  # `sys.exit(main())`: exit 0, unverified)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise GraphsurgeryError(f"{what}: {module_name} has no function {attribute!r}", fix=fix)
    return function


def call_user(function: Callable, what: str, *args, name: str | None = None):
    """`function(*args)` for a function the user named (`what` says which, e.g. "the reference pipeline
    (--reference-pipeline)"): an exception in it is theirs to fix, said in one line, not a graphsurgery bug.
    `name`: how to call it in that line (default: its module and name; a network's forward is named by the spec
    of the function that made it)."""
    # named by its type where it has no name of its own: the object's str() is the caller's code, and may raise
    name = name or (f"{getattr(function, '__module__', None) or '?'}:"
                    f"{getattr(function, '__qualname__', None) or type(function).__qualname__}")
    could_write = writable(sys.stdout)
    try:
        with _in_this_folder(), users_code(f"{what} {name}"):
            answer = function(*args)
    except GraphsurgeryError:
        raise
    except MemoryError:
        if memory_limit() is not None:  # the process's limit, which the CLI names (`limits.limit_error`)
            raise
        raise _users_fault(what, name, MemoryError()) from None
    except (Exception, SystemExit) as exc:  # sys.exit(0) in it ended verify with exit 0, having compared nothing
        raise _users_fault(what, name, exc) from None
    if could_write and not writable(sys.stdout):  # the report then failed to print: an internal error (EBADF; round 89)
        raise GraphsurgeryError(f"{what}: {name} closed standard output, where the command's report goes",
                                fix="leave sys.stdout (and descriptor 1) open in it")
    return answer


def call_back(function: Callable, *args):
    """`function(*args)` for a callback of the Python API (run's `on_image`, eval-coco's and bench's `progress`),
    with the current folder kept as for the user's named functions: one that changed it (`os.chdir`) moved every
    relative path the command held (round 87: `run(…, "out", on_image=…)` looked for its scratch folder in the new
    folder and said the output folder had been deleted). Its exceptions are the caller's and reach it as they are."""
    with _in_this_folder():
        return function(*args)


@contextlib.contextmanager
def _in_this_folder() -> Iterator[None]:
    """The current folder kept across the user's code: a pipeline that changed it (`os.chdir` to its own assets)
    made a relative `--patched` "no such model file" (round 69), as every relative path graphsurgery holds then
    names another file. Held by a descriptor, so that a folder renamed meanwhile is still the one returned to."""
    try:
        here = os.open(".", getattr(os, "O_PATH", os.O_RDONLY))
    except OSError:  # a current folder that cannot be opened: none to return to
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.fchdir(here)
        os.close(here)


def _users_fault(what: str, name: str, exc: BaseException) -> GraphsurgeryError:
    """The one line for an exception (or an exit) in the user's code: theirs to fix, not a graphsurgery bug."""
    if isinstance(exc, SystemExit):
        return GraphsurgeryError(f"{what}: {name} called sys.exit({exc.code!r})"[:300], fix="return from the "
                                 "function instead of exiting (guard a script's own run with `if __name__ == "
                                 "'__main__':`)")
    if isinstance(exc, MemoryError):  # was "internal error (out of memory) — this is a graphsurgery bug" (round 89)
        return GraphsurgeryError(f"{what}: {name} ran out of memory (MemoryError)"[:300],
                                 fix="have it hold less at once (fewer or smaller arrays), or free memory")
    message = " ".join(str(exc).split())[:200]
    return GraphsurgeryError(f"{what}: {name} raised {type(exc).__name__}: {message}",
                             fix="call it alone in Python to see its traceback, and fix it")
