"""A command's span (one CLI command, one Python API call: `modelio.command`): the model files it read, held as they
were read until it ends (`modelio.read_by_path`), and the refusal of a current folder deleted under it. Apart from
modelio, which loads onnx and numpy, so that the CLI enters a command's span without them (`--help` needs neither)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError


@dataclass
class _Reads:
    """What one command read. The runtimes read a model again by its path (`read_by_path`): a file replaced in
    between is a model no check saw (round 44: verify's twins ran the plain model as read, and ONNX Runtime the file
    moved over it a moment later: an internal error). Within `one_command` (a CLI command, an API call: `command`)
    the first read holds to its end; outside, nothing is kept (an application may rewrite a model between two
    calls)."""

    #: each model file's identity as it was read and checked (`load_model`), by real path
    read: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: the external data files of each model in `read` (by its real path), held to their identities as it is
    #: (round 57: a data file replaced while a runtime read the model was read as it was then)
    data: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    #: the real path each file read named then, by its path as given (absolute, not resolved): a symlink re-pointed
    #: since names another real file, which no read recorded (round 82: a runtime ran the model the link named then)
    resolved: dict[str, str] = field(default_factory=dict)


#: The running command's reads, in its own thread (a context variable): commands an application runs in two threads
#: at once shared one record, so one refused a right model another had read before it was rewritten, and the first
#: to end dropped the other's hold (round 85).
_COMMAND: ContextVar[_Reads | None] = ContextVar("graphsurgery_command", default=None)


def lost_folder() -> GraphsurgeryError | None:
    """The refusal of a current folder deleted (or moved) under the process, or None while it exists."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return GraphsurgeryError("the current folder no longer exists (it was deleted or moved)",
                                 fix="cd (os.chdir) into an existing folder and run the command again")
    return None


@contextmanager
def one_command() -> Iterator[None]:
    """A command's span: a model file it read must stay as it was read until the command ends (`read_by_path`)."""
    if _COMMAND.get() is not None:  # within another: its reads hold
        yield
        return
    token = _COMMAND.set(_Reads())
    try:
        yield
    finally:
        _COMMAND.reset(token)
