"""The `graphsurgery` command: a click group whose commands are thin shells over the Python API.

Exit codes, for scripts: 0 success (and parity), 1 parity failure (verify, eval-coco; convert when the accuracy
asked with --max-drop was not met), 2 a usage or input error (a `GraphsurgeryError`: one line on stderr naming the
file and the fix, no traceback), 3 an internal error (any other exception is a bug, not the user's mistake: one
line saying so and how to report it; the traceback is shown only with GRAPHSURGERY_DEBUG=1), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). An interrupted or terminated command unwinds like an exception: its scratch
folders are removed and no partial output appears.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from typing import NoReturn

import click
from rich.console import Console

from graphsurgery import __version__
from graphsurgery.cli.options import refuse_repeats
from graphsurgery.cli.tables import printable, usable_terminal_size
from graphsurgery.commandspan import lost_folder, one_command
from graphsurgery.errors import GraphsurgeryError, bounded_words, readable_errors
from graphsurgery.launch import (
    CPU_LIMIT_LINE,
    INTERRUPTED,
    TERMINATED,
    CpuTimeLimit,
    Terminated,
    cpu_time_limit,
    load_libraries,
    signals_ignored,
    terminate,
)
from graphsurgery.limits import (
    ensure_open_files,
    ensure_processes,
    limit_error,
    open_standard_streams,
    openvino_telemetry_off,
    writable,
)
from graphsurgery.safeio import PATH_ERRORS

INTERNAL_ERROR = 3  # never 1, which scripts read as "no parity"
BROKEN_PIPE = 128 + signal.SIGPIPE  # a shell's code for a writer whose reader left; 1 read as "no parity" under
                                    # `set -o pipefail` (`verify … | head`)
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT)


def _reader_gone(console: Console) -> NoReturn:
    """rich's Console ended a write whose reader went away with exit 1, "no parity" to a script (`graphsurgery
    steps | head -1` under `set -o pipefail`): raised as the BrokenPipeError the command ends on with BROKEN_PIPE."""
    console.quiet = True
    raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


Console.on_broken_pipe = _reader_gone


class _Group(click.Group):
    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:  # while the options are parsed: click would say "Aborted!" and exit 1
            self._end("interrupted", INTERRUPTED)
        except click.UsageError as exc:
            self._usage_error(exc)
        except OSError as exc:  # the group's own --help and --version, written while its options are parsed:
            self._failed(exc)  # `graphsurgery --help > /dev/full` was a traceback and exit 1, as was a closed pipe

    def invoke(self, ctx: click.Context):
        try:
            previous = signal.signal(signal.SIGTERM, terminate)
        except ValueError:  # not the main thread (an embedding application): leave its signals alone
            previous = None
        cpu_previous = None  # SIGXCPU (`ulimit -t`) killed the process with a core dump, scratch folders left
        if previous is not None and signal.getsignal(signal.SIGXCPU) not in (signal.SIG_IGN, None):
            cpu_previous = signal.signal(signal.SIGXCPU, cpu_time_limit)
        try:
            ensure_open_files()  # too few: OpenVINO failed halfway, blaming the model
            ensure_processes()  # `ulimit -u` too small for the runtimes' threads: blamed the model too
            openvino_telemetry_off()  # before openvino is imported: it warns from its import on in an unwritable HOME
            usable_terminal_size()  # before rich reads COLUMNS: at 0 every report was empty, with exit 0
            with one_command():  # a model it read stays as read until it ends (`commandspan`)
                return super().invoke(ctx)
        except KeyboardInterrupt:
            self._end("interrupted", INTERRUPTED)
        except Terminated:
            self._end("terminated", TERMINATED)
        except CpuTimeLimit:
            self._end(CPU_LIMIT_LINE, GraphsurgeryError.exit_code)
        except GraphsurgeryError as exc:
            self._end(*ending(exc))
        except click.UsageError as exc:  # a command's options, parsed in its own context
            if exc.ctx is None and ctx.invoked_subcommand:  # click's parser raises an option's missing value
                # without it: "Error: Option '--json' requires an argument.", not our line (round 50's leftover)
                command = self.get_command(ctx, ctx.invoked_subcommand)
                exc.ctx = command and click.Context(command, info_name=ctx.invoked_subcommand, parent=ctx)
            self._usage_error(exc)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            self._failed(exc)
        finally:  # a SIGTERM ignored by `_end` on the command line stays ignored: re-armed here, one arriving before
            # `launch.main` saw the exit was a traceback of Terminated after the command's last line (the flake of
            # test_hostile_eighth, still seen under load after round 44)
            if previous is not None and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
                signal.signal(signal.SIGTERM, previous)
            if cpu_previous is not None:
                signal.signal(signal.SIGXCPU, cpu_previous)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            refuse_repeats(command, click.Context(command, info_name=name, parent=ctx), rest)
        return name, command, rest

    @classmethod
    def _failed(cls, exc: Exception) -> NoReturn:
        """The end of a command (or of the group's own --help) that `exc`, handled by the caller, ended."""
        if isinstance(exc, BrokenPipeError):  # the reader went away (`graphsurgery schema | head`): not a bug, nothing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # to say; no second error when Python
            sys.exit(BROKEN_PIPE)  # flushes
        line, code = ending(exc)
        if os.environ.get("GRAPHSURGERY_DEBUG") == "1" and (code == INTERNAL_ERROR or isinstance(exc, Warning)):
            raise exc
        if isinstance(exc, OSError) and exc.errno in DISK_ERRORS and exc.filename is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # standard output full: Python must
            # not flush it again
        cls._end(line, code)

    @classmethod
    def _usage_error(cls, exc: click.UsageError) -> None:
        """Click's usage errors in one line like every other refusal (they were three: usage, a hint, the error),
        with the usage in the fix. `graphsurgery` alone still shows the help."""
        if isinstance(exc, click.exceptions.NoArgsIsHelpError) or exc.ctx is None:
            raise exc
        usage = " ".join(exc.ctx.get_usage().split()).removeprefix("Usage: ")
        cls._end(f"error: {printable(exc.format_message())} — fix: {usage} (see `{exc.ctx.command_path} -h`)",
                 exc.exit_code)

    @staticmethod
    def _end(line: str, code: int) -> NoReturn:
        """The command's last line and exit code, which a signal arriving now no longer changes."""
        with signals_ignored(code):
            try:
                click.echo(line, err=True)
            except (OSError, ValueError):  # standard error full or gone (`2>/dev/full`): the exit code still says it
                pass  # (the OSError escaped: exit 1, which scripts read as "no parity")
            sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="graphsurgery")
def cli() -> None:
    """Splice pre- and post-processing into ONNX models from a YAML recipe, convert them to OpenVINO and prove
    that they give the same answers as the unpatched pipeline."""


def ending(exc: BaseException, what: str = "the command",
           bug: str = "this is a graphsurgery bug: please report it with the command and files; GRAPHSURGERY_DEBUG=1 "
                      "shows the traceback") -> tuple[str, int]:
    """The last line and exit code of a command that `exc` ended (the CLI's, and the example scripts'): a signal
    behind it first (Ctrl-C while onnxruntime's C extension loaded came out as "ImportError: initialization failed"),
    then the user's errors, the process's limits and what the system refused, then a bug (`bug`: how to report it)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return "interrupted", INTERRUPTED
        if isinstance(cause, Terminated):
            return "terminated", TERMINATED
        if isinstance(cause, CpuTimeLimit):
            return CPU_LIMIT_LINE, GraphsurgeryError.exit_code
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, GraphsurgeryError):
        return f"error: {printable(exc)}", exc.exit_code
    if isinstance(exc, OSError) and (gone := lost_folder()) is not None:  # deleted as the command ran: a relative
        return f"error: {printable(gone)}", gone.exit_code  # path resolved in it was a FileNotFoundError
    limited = limit_error(exc, what)  # a resource limit of the process (ulimit -v, -n, -f): the user's to raise
    if limited is not None:
        return f"error: {printable(limited)}", limited.exit_code
    if isinstance(exc, OSError) and exc.errno in (*PATH_ERRORS, *DISK_ERRORS):
        # a path the system cannot take (too long, a symlink loop), wherever it is first touched, or a full disk
        # where no writer expected one (standard output on /dev/full)
        # a name too long may come from a data file (a COCO file_name of 5,000 characters): cut as errors cut values
        where = printable(bounded_words(str(exc.filename))) if exc.filename is not None else "standard output"
        fix = "use a shorter path without symlink loops" if exc.errno in PATH_ERRORS else "free disk space"
        return f"error: {where}: {exc.strerror or exc} — fix: {fix}", GraphsurgeryError.exit_code
    if isinstance(exc, PermissionError) and exc.filename is not None:  # a folder on the path that may be listed but
        # not entered (`chmod 600 DIR`): pathlib's is_dir and exists raise there, and every command that touched a
        # file under it was an internal error (round 26)
        return (f"error: {printable(exc.filename)}: {exc.strerror or exc} — fix: check the permissions of the file "
                "and of each folder on its path (a folder needs x to be entered)", GraphsurgeryError.exit_code)
    if isinstance(exc, Warning):  # a library's warning raised as an exception, as PYTHONWARNINGS=error asks
        shown = printable(" ".join(f"{type(exc).__name__}: {exc}".split())[:200])
        return (f"error: a warning was raised as an error ({shown}), as PYTHONWARNINGS=error or `python -W error` "
                "asks — fix: run the command without that setting (warnings do not change its answers)",
                GraphsurgeryError.exit_code)
    shown = "out of memory" if isinstance(exc, MemoryError) else f"{type(exc).__name__}: {exc}"
    return f"internal error ({printable(' '.join(shown.split())[:300])}) — {bug}", INTERNAL_ERROR


def main() -> None:
    open_standard_streams()  # stdin or stderr closed: opened on /dev/null (`run` was an internal error)
    if not writable(sys.stdout):  # started with standard output closed (`>&-`): every report was lost, with exit
        # code 0; open read-only (`1<&0`) every write was an internal error (EBADF)
        _Group._end("error: standard output is closed (or open only for reading), so the command's report could not "
                    "be written — fix: run it with standard output open for writing (`> /dev/null` discards it)",
                    GraphsurgeryError.exit_code)
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show — or a model's names: in ASCII or escaped,
        if hasattr(stream, "reconfigure"):  # not a crash
            stream.reconfigure(errors=readable_errors())
    cli(prog_name="graphsurgery")


from graphsurgery.cli import bench, chain, convert, patch, run, verify  # noqa: E402  (each module adds its commands to `cli`)


def _after_loading(callback):
    """A command's callback, run once the libraries of the commands are loaded (`launch.load_libraries`): after its
    arguments are parsed, so that its --help needs none of them, and under the supervisor's eye as they load."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        load_libraries()
        return callback(*args, **kwargs)

    return run


for _module in (patch, convert, run, verify, bench, chain):
    for _command in _module.COMMANDS:
        _command.callback = _after_loading(_command.callback)
        cli.add_command(_command)
