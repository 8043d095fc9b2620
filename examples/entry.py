"""The example scripts' command-line contract, which the `graphsurgery` command gets from graphsurgery.launch/cli.

`python examples/demo.py` and the export scripts are plain programs: without this, bad options were argparse's
usage block (several lines), an error was printed by rich on stdout and wrapped at 130 columns, an unwritable
folder or `python -OO` was a traceback, Ctrl-C a traceback and a death by SIGINT, and SIGTERM killed the process
with a half-written `.tmp` model left beside the output. Here: one line on stderr and exit 2 for bad input, 3 for
a bug, `interrupted` 130 and `terminated` 143 with scratch files removed (the signals unwind like exceptions).

Only the standard library and graphsurgery's light modules are imported: `guard()` runs before torch loads.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from graphsurgery.errors import GraphsurgeryError, printable
from graphsurgery.launch import INTERRUPTED, TERMINATED, exit_now, ignore_signals, quit_now, say, terminate

#: what the system says of a folder the user cannot write in (a full disk is `ending`'s: free disk space)
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def guard() -> None:
    """While the script imports torch, onnx and the runtimes (~1 s), Ctrl-C or SIGTERM ends it at once with its
    line: nothing is written yet (a KeyboardInterrupt raised there was a traceback, or a RecursionError). Then the
    script runs in a child that `graphsurgery.supervisor` watches, as a command does: SIGHUP, SIGQUIT, SIGUSR1 (and
    a crash in native code) killed it with no line and left its scratch folders (round 32: `demo.py` killed by
    SIGHUP left its `graphsurgery-verify-*` folder in $TMPDIR); now one line, 128 + the signal, folders removed."""
    from graphsurgery.launch import CPU_LIMIT_LINE
    from graphsurgery.supervisor import supervise

    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, quit_now)
    supervise(CPU_LIMIT_LINE)


def summary(doc: str | None, fallback: str) -> str:
    """The first line of a script's docstring for --help; `python -OO` drops docstrings (it was an AttributeError)."""
    return doc.splitlines()[0] if doc else fallback


class Parser(argparse.ArgumentParser):
    """argparse, with its refusals in one line like every other (they were the usage block plus the error)."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        say(f"error: {printable(message)} — fix: {usage} (see {self.prog} -h)")
        sys.exit(2)


def run(body: Callable[[], int]) -> int:
    """`body()`'s exit code, or the code and one line of what stopped it; the outcome, once decided, is final."""
    for number, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, terminate)):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, handler)
    try:
        from graphsurgery.limits import openvino_telemetry_off

        openvino_telemetry_off()  # an unwritable HOME printed three WARNING lines on success
        code = body()
    except BaseException as exc:  # noqa: BLE001 - every ending is said in one line
        code = _ending(exc)
    ignore_signals()  # a signal after the last line changed nothing (it killed the interpreter while it shut down)
    if code in (INTERRUPTED, TERMINATED):
        exit_now(code)
    return code


def _ending(exc: BaseException) -> int:
    """Say the line of the CLI's ending for `exc` (`graphsurgery.cli.ending`: a signal behind it, the user's errors,
    the process's limits, a bug) and return its exit code; a folder the system refuses to write is the user's to
    change, not a bug."""
    from graphsurgery.cli import INTERNAL_ERROR, ending

    line, code = ending(exc, "the example", "this is a bug in the example: please report it with the command")
    if code == INTERNAL_ERROR and isinstance(exc, SystemExit):
        raise exc
    if code == INTERNAL_ERROR and isinstance(exc, OSError) and exc.errno in UNWRITABLE:
        where = f"{exc.filename}: " if exc.filename else ""
        line = f"error: {printable(where)}{exc.strerror} — fix: choose a writable folder"
        code = GraphsurgeryError.exit_code
    say(line)
    return code
