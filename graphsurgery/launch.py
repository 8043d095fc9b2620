"""The `graphsurgery` command's entry point (the console script and `python -m graphsurgery`): light on purpose.

The CLI imports click and rich, and a command, once its arguments are parsed, numpy, onnx and pydantic
(`load_libraries`), about 0.4 s in all; Ctrl-C or SIGTERM in that time gave a traceback or a death by signal (exit
-15). This module imports nothing heavy: while it imports the CLI, a signal
ends the process at once with one line and 130 / 143 (nothing is written yet); then Ctrl-C raises KeyboardInterrupt
and SIGTERM `Terminated`, which the command unwinds like exceptions (its scratch folders are removed). Once the
command has said its last line, a signal no longer changes its exit code.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

INTERRUPTED, TERMINATED = 130, 143  # the shell's 128 + SIGINT / SIGTERM
#: whether this process was started by `main` (the command line): then a command's last line ends the process
_command_line = False
#: the command line's Ctrl-C and SIGTERM handlers (`_once`), by signal
_armed: dict = {}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread, so that `finally` blocks (scratch folders) run on the way out."""


class CpuTimeLimit(BaseException):
    """SIGXCPU: the process used up its CPU time (`ulimit -t`, soft). By default it killed the process (exit 152,
    a core dump, scratch folders left); raised like Terminated, it unwinds and ends in one line, exit 2."""


#: the command's last line when the CPU time limit ended it
CPU_LIMIT_LINE = ("error: the command used up the process's CPU time limit (ulimit -t) — fix: raise the limit "
                  "(`ulimit -t unlimited`) and run the command again")


def terminate(signum, frame):
    """SIGTERM's handler while a command runs (the CLI group sets it, over `_once`'s): on the command line, once, as
    `_once` makes it — `kill -TERM -PGID` (GNU `timeout`) reaches the child twice, and the second Terminated broke
    into the `finally` that removes `run`'s scratch folder (2 left in 30 runs, round 28)."""
    if _sent_again_later(signum, frame):
        return
    if _command_line:
        ignore_signals()
    raise Terminated


def _once(handler):
    """`handler` (raising KeyboardInterrupt or Terminated), after which Ctrl-C and SIGTERM are ignored: the command is
    unwinding. `kill -INT -PGID` reaches the child twice (directly, and forwarded by graphsurgery.supervisor, which
    cannot tell a group's signal from one sent to it alone), and the second broke into the `finally` blocks that
    remove scratch folders (one left in 12 runs). Were the unwinding stuck in native code, the supervisor ends it."""
    def act(signum, frame):
        if _sent_again_later(signum, frame):
            return
        ignore_signals()
        handler(signum, frame)
    return act


def cpu_time_limit(signum, frame):
    """Raised once: the kernel repeats SIGXCPU every second past the soft limit, which would break into the
    `finally` blocks that remove scratch folders."""
    if _sent_again_later(signum, frame):
        return
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    raise CpuTimeLimit


def _sent_again_later(signum: int, frame) -> bool:
    """Whether the signal went off while a module loads, and is sent again 50 ms later instead of raising now: a C
    extension's initialisation can clear the exception a handler raises in Python code it calls. SIGXCPU went off in
    `abc.register`, called by numpy.random's Cython module as `verify` first drew samples, and its CpuTimeLimit was
    lost: verify ran on to exit 0 (1 in 30 runs on a loaded machine; the CI failure of stop 35). Sent again until it
    arrives outside an import, it raises where nothing can drop it."""
    while frame is not None and not frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
        frame = frame.f_back
    if frame is None:
        return False
    try:
        _thread.start_new_thread(_send_later, (signum,))
    except RuntimeError:  # no thread to spare (`ulimit -u`): raised now, as before
        return False
    return True


def main() -> None:
    global _command_line
    _command_line = True
    handlers = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: terminate}
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # elsewhere signal.signal raised (a traceback): signals are the main thread's, unwatched.
        # First of all: Ctrl-C while the modules below loaded was a KeyboardInterrupt's traceback, exit 1 (round 35)
        if signal.getsignal(signal.SIGXCPU) is not signal.SIG_IGN:
            signal.signal(signal.SIGXCPU, quit_now)
        for number in handlers:
            if signal.getsignal(number) is not signal.SIG_IGN:  # SIGINT ignored (a script's background job) stays so
                signal.signal(number, quit_now)
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.limits import ensure_processes, open_standard_streams

    open_standard_streams()  # closed stdin or stderr: the next file opened would take its descriptor
    try:  # before the fork and numpy's import: under `ulimit -u 2` OpenBLAS could not start its threads and numpy
        ensure_processes()  # raised SIGINT ("interrupted", 130, and four lines of OpenBLAS's)
    except GraphsurgeryError as exc:
        say(f"error: {exc}")
        exit_now(exc.exit_code)
    if main_thread:
        from graphsurgery.supervisor import supervise

        supervise(CPU_LIMIT_LINE)  # from here on, the child: a death by signal in native code is a line from the parent
        os.register_at_fork(after_in_child=_forked)  # the user's code's processes are not the command
    try:
        cli_main = _import_cli()
        for number, handler in handlers.items():  # from now on signals unwind: scratch folders are removed
            if signal.getsignal(number) is quit_now:
                _armed[number] = _once(handler)
                signal.signal(number, _armed[number])
        if signal.getsignal(signal.SIGXCPU) is quit_now:
            signal.signal(signal.SIGXCPU, cpu_time_limit)
        sys.unraisablehook = _unraisable
        cli_main()
    except CpuTimeLimit:
        ignore_signals()
        say(CPU_LIMIT_LINE)
        exit_now(2)
    except (KeyboardInterrupt, Terminated) as exc:  # while the CLI loaded (or past its own handling)
        ignore_signals()  # a second signal now would escape this handler as a traceback
        say("interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated")
        exit_now(INTERRUPTED if isinstance(exc, KeyboardInterrupt) else TERMINATED)
    except SystemExit as exc:
        ignore_signals()  # the command is over and has said so: a signal while Python shut down (~50 ms) killed the
        # process by that signal, hiding the exit code it had; the supervisor keeps that code if it must end a
        # shutdown that outlasts its grace (round 44)
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        last_line(code)
        if exc.code in (INTERRUPTED, TERMINATED):
            exit_now(exc.code)  # the command unwound (its finally blocks ran) and said so
        if _lingering_threads():
            exit_now(code)
        raise


def _lingering_threads() -> bool:
    """Whether the user's own code (`--reference-pipeline`, `--torch`) left a thread running that is no daemon:
    Python's shutdown waits for it, and verify, its last line said, never ended (round 89's leftover); or a
    `multiprocessing` process that is no daemon, which multiprocessing's own exit handler joins (round 91: verify
    said PASS and waited for ever). The command is over; such threads end with it, such processes go on alone."""
    if not users_code_ran():
        return False
    processes = sys.modules.get("multiprocessing")  # imported by the user's code, or not at all
    return any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
               if thread is not threading.main_thread()) or processes is not None and any(
        not process.daemon for process in processes.active_children())


def _forked() -> None:
    """In a process the command's own forks (the user's `multiprocessing` workers, `os.fork` in `--reference-pipeline`
    or `--torch` code): the signals' defaults, not the command's handlers, and no word to the supervisor. Each worker
    that `Pool.terminate()` ended (on leaving `with Pool() as pool:`) raised Terminated: a traceback of graphsurgery's
    on stderr for each, on a PASS (round 92); Ctrl-C made each print KeyboardInterrupt's, after "interrupted"."""
    from graphsurgery.supervisor import forked

    global _command_line
    _command_line = False
    _armed.clear()
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGXCPU):
        if signal.getsignal(number) is not signal.SIG_IGN:  # ignored by the user (`nohup`): stays so
            signal.signal(number, signal.SIG_DFL)
    forked()


def _import_cli():
    """The CLI's `main`: click and rich; its commands load their libraries once their arguments are parsed."""
    return load_libraries("graphsurgery.cli").main


def load_libraries(module: str = "graphsurgery.api"):
    """`module` imported, by default the libraries the CLI's commands use (numpy, onnx, pydantic, the steps), which
    the CLI loads once a command's arguments are parsed (its help and usage errors need none of them: about 0.3 s of
    CPU a command, BENCHMARKS.md "CLI start-up"). On the command line, under a small memory limit (`ulimit -v
    150000`) they cannot be loaded ("failed to map segment", OpenBLAS's "Memory allocation still failed"): a
    traceback, exit 1. Said as the limit, exit 2."""
    import importlib

    from graphsurgery.supervisor import LOADING, doing

    try:
        with doing(LOADING):  # a library that ends the process from C is then said by the supervisor
            return importlib.import_module(module)
    except (ImportError, OSError, MemoryError) as exc:
        from graphsurgery.limits import memory_limit

        if not _command_line or memory_limit() is None:
            raise
        ignore_signals()
        say(f"error: graphsurgery's libraries could not be loaded under the process's memory limit of "
            f"{memory_limit()} ({type(exc).__name__}) — fix: raise the limit (`ulimit -v unlimited`) and run the "
            f"command again")
        exit_now(2)


@contextmanager
def signals_ignored(code: int | None = None) -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored while a command says its last line and exits (with `code`, which the supervisor
    keeps if it must end a slow exit): its outcome is decided (a Ctrl-C just after an error line made click say
    "Aborted!" and exit 1, the parity-failure code). On the command line they stay ignored until the process ends
    (restored, a signal in the few frames before `main` saw the exit turned it into "interrupted", 130); restored
    for an application that runs the CLI in its own process."""
    last_line(code)
    previous = ignore_signals()
    try:
        yield
    finally:
        for number, handler in previous.items() if not _command_line else ():
            signal.signal(number, handler)


def ignore_signals() -> dict:
    """SIGINT and SIGTERM ignored from now on; the handlers they had (none outside the main thread, or for one not
    set from Python, which could not be restored)."""
    previous = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(number) is not None:
                previous[number] = signal.signal(number, signal.SIG_IGN)
    except ValueError:  # not the main thread: not ours to change
        pass
    return previous


def _unraisable(unraisable, default=sys.unraisablehook) -> None:
    """A signal whose exception went off inside a callback Python cannot raise from (a `__del__`, a weakref
    callback: importlib's, while a module loads, before `_sent_again_later`) was printed as "Exception ignored" and
    lost: SIGTERM during `bench`'s start, and the command ran to its end minutes later with exit 0. It is sent again
    a moment later from a new thread (sent from here it would go off here again; `threading.Thread.start` waits, and
    it went off in that wait) and arrives in the main thread, once out of the callback."""
    numbers = {KeyboardInterrupt: signal.SIGINT, Terminated: signal.SIGTERM, CpuTimeLimit: signal.SIGXCPU}
    number = numbers.get(type(unraisable.exc_value))
    if number is not None:
        # `_once` ignored Ctrl-C and SIGTERM, `cpu_time_limit` SIGXCPU, when this one went off, in vain
        rearmed = {**_armed, signal.SIGXCPU: cpu_time_limit} if number == signal.SIGXCPU else _armed
        for armed, handler in rearmed.items():
            try:
                signal.signal(armed, handler)
            except ValueError:  # not the main thread
                pass
        _thread.start_new_thread(_send_later, (number,))
    else:
        default(unraisable)


def last_line(code: int | None = None) -> None:
    """`supervisor.last_line`, once the supervisor is loaded (before, there is no parent to tell). This module
    imports nothing of graphsurgery's before `main` arms its handlers: importing the supervisor (and longrun and
    errors with it) took 20 to 35 ms, and a Ctrl-C then was a KeyboardInterrupt's traceback (round 93)."""
    supervisor = sys.modules.get("graphsurgery.supervisor")
    if supervisor is not None and hasattr(supervisor, "last_line"):  # not while it loads
        supervisor.last_line(code)


def users_code_ran() -> bool:
    """`supervisor.users_code_ran`: none ran before the supervisor was loaded."""
    supervisor = sys.modules.get("graphsurgery.supervisor")
    return supervisor is not None and hasattr(supervisor, "users_code_ran") and supervisor.users_code_ran()


def _send_later(number: int) -> None:
    time.sleep(0.05)
    os.kill(os.getpid(), number)


def quit_now(signum, frame) -> None:
    """A signal while the CLI loads: nothing is written yet, so leave at once. An exception raised there instead
    went off inside a C extension's initialisation (pybind11) and aborted the process (SIGABRT, SIGSEGV). A second
    signal is ignored: the supervisor forwards a `kill -TERM -PGID` the child has had already, and this handler,
    entered again while it wrote, said "terminated" twice."""
    ignore_signals()
    if signum == signal.SIGXCPU:
        say(CPU_LIMIT_LINE)
        exit_now(2)
    say("interrupted" if signum == signal.SIGINT else "terminated")
    exit_now(INTERRUPTED if signum == signal.SIGINT else TERMINATED)


def say(line: str) -> None:
    """`line`, the last one, on stderr, after what was said on stdout (also for the example scripts,
    examples/entry.py); the supervisor is told, so that it does not say one of its own (`supervisor.last_line`)."""
    last_line()
    for stream, text in ((sys.stdout, ""), (sys.stderr, f"{line}\n")):
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or gone (None: closed at start, before
            # `limits.open_standard_streams`, which a signal can precede): the exit code says it
            pass


def exit_now(code: int) -> None:
    """Exit now with `code` (130 or 143 after a signal), without Python's shutdown: a Ctrl-C that went through a C
    extension's own Python call while it loaded (pybind11's exec) leaves a flag that makes Python kill itself with
    SIGINT after the shutdown, whatever the exit code (exit -2 after "interrupted"); the user's lingering thread
    makes it wait for ever (`_lingering_threads`). Scratch folders are gone already: the command's `finally` blocks
    ran on the way out; nothing was written yet while the CLI loaded."""
    last_line(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover - `python -m graphsurgery.launch`
    main()
