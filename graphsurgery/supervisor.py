"""The command runs in a child process that a light parent watches: a death by signal becomes one line.

ONNX Runtime's and OpenVINO's kernels die by a signal on some values a model computes at run time (a Range with a
step of zero, the smallest integer divided by -1, indices past 2^31), and no check before the run can see those
values; a bug in a native parser (protobuf, OpenCV) does the same. In one process that was a death by SIGFPE or
SIGSEGV: no line, a core file, scratch folders left behind. Here the parent, which loads nothing but this module,
waits for the child and turns such a death into one line naming what the child was doing (`doing`), exit 2, and
removes the scratch folders the child had made (`scratch`).

The parent forwards Ctrl-C and SIGTERM sent to it alone (`kill PID`, a test harness); a terminal's Ctrl-C reaches
both processes, so it is not sent twice. When the parent is killed, the child gets SIGTERM and unwinds. Where a child
cannot be made (`ulimit -u`), the command runs in this process as before.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: the exit code for a command that died by a crash in native code: a bad input, like every other refusal
CRASHED = 2
#: signals a crash in native code dies by (the others are a kill from outside)
_CRASHES = {signal.SIGSEGV, signal.SIGFPE, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGSYS,
            signal.SIGTRAP}
_WATCHED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1
#: si_code of a signal sent by kill() or sigqueue() to this process (a terminal's Ctrl-C is SI_KERNEL, > 0)
_SENT_BY_A_PROCESS = 0

#: in the child: the shared file (memfd) where it keeps what it is doing and its scratch folders, for the parent
_channel: int | None = None
_doing: list[str] = []
_scratch: list[str] = []


def supervise(cpu_limit_line: str) -> None:
    """Fork: return in the child, which runs the command; in the parent, wait for it and exit as it did. Called
    before anything heavy is imported, so that the fork is cheap and no runtime thread exists yet."""
    global _channel
    if not _light():
        return
    try:
        channel = os.memfd_create("graphsurgery-supervisor")
    except (AttributeError, OSError):  # not Linux, or no descriptor left: the command goes on, unwatched
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    parent = os.getpid()
    try:
        child = os.fork()
    except OSError:  # `ulimit -u`: no process to spare
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(channel)
        return
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _channel = channel
        _die_with(parent)
        return
    _watch(child, channel, cpu_limit_line)


def _light() -> bool:
    """Whether this process is safe to fork: one thread and no multiprocessing children. A caller that imported a
    runtime before `launch.main` (OpenVINO starts threads and its telemetry's process at import) would hand the child
    half-copied threads, and multiprocessing's exit hook in the child tried to join the parent's process (a
    traceback after the command's last line); such a command runs unwatched."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc: the thread count is unknown
        return False
    return threads == 1 and "multiprocessing" not in sys.modules


@contextmanager
def doing(activity: str) -> Iterator[None]:
    """Say what the child is about to do in native code ("OpenVINO runs model.xml"), for the line the parent
    prints if that kills it. Nested activities stack; outside the command line this does nothing."""
    if _channel is None:
        yield
        return
    _doing.append(activity)
    _publish()
    try:
        yield
    finally:
        _doing.pop()
        _publish()


@contextmanager
def scratch(folder: os.PathLike) -> Iterator[None]:
    """Name a scratch folder the parent removes if the child dies by a signal while the folder exists (the folder
    holds the child's process ID, checked before removal)."""
    if _channel is None:
        yield
        return
    _scratch.append(os.fspath(folder))
    _publish()
    try:
        yield
    finally:
        _scratch.remove(os.fspath(folder))
        _publish()


def _publish() -> None:
    """Write the state whole at the start of the shared file: a line of activity, then one scratch folder a line.
    Paths are written as bytes (surrogateescape) so that any name the file system allows comes back unchanged."""
    state = b"\n".join([os.fsencode(_doing[-1] if _doing else "").replace(b"\n", b" "),
                        *map(os.fsencode, _scratch)])
    try:
        os.pwrite(_channel, state, 0)
        os.ftruncate(_channel, len(state))
    except OSError:  # a report the parent cannot read costs only its detail
        pass


def _die_with(parent: int) -> None:
    """The child gets SIGTERM when the parent dies (a `kill -9` of the command's PID), and unwinds."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _watch(child: int, channel: int, cpu_limit_line: str) -> None:
    """Wait for the child, forwarding signals sent to this process; then exit as it did."""
    forwarded: set[int] = set()
    while True:
        info = signal.sigtimedwait(_WATCHED, 1.0)  # the timeout: a SIGCHLD lost would not hang the parent
        if info is not None and info.si_signo != signal.SIGCHLD:
            if info.si_code <= _SENT_BY_A_PROCESS and info.si_signo not in forwarded:
                forwarded.add(info.si_signo)  # sent to the process group too, the child has it already
                os.kill(child, info.si_signo)
            continue
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        os._exit(code)
    _say_and_exit(-code, *_last_state(channel), cpu_limit_line, child)


def _last_state(channel: int) -> tuple[str, list[bytes]]:
    try:
        state = os.pread(channel, os.fstat(channel).st_size, 0)
    except OSError:
        return "", []
    activity, *folders = state.split(b"\n")
    return activity.decode("utf-8", "backslashreplace"), [folder for folder in folders if folder]


def _say_and_exit(number: int, activity: str, folders: list[bytes], cpu_limit_line: str, child: int) -> None:
    """The child died by signal `number`: remove its scratch folders, say why in one line, exit."""
    _remove(folders, child)
    if number in (signal.SIGINT, signal.SIGTERM):  # before its handlers were set (Python's first milliseconds)
        _say("interrupted" if number == signal.SIGINT else "terminated")
        os._exit(128 + number)
    if number == signal.SIGXCPU:
        _say(cpu_limit_line)
        os._exit(2)
    name = f"{signal.Signals(number).name}, {signal.strsignal(number) or 'a signal'}"
    where = f" while {activity}" if activity else ""
    if number in _CRASHES:
        _say(f"error: the command crashed in native code ({name}){where} — fix: the model, or an input, holds "
             f"values this code cannot take (see SECURITY.md, \"Kernels that die on values computed at run time\"); "
             f"check the model, or report the crash with the model to the runtime's authors")
        os._exit(CRASHED)
    if number == signal.SIGKILL:
        _say(f"error: the command was killed ({name}){where} — fix: the system may have run out of memory: free "
             f"memory or give the command a smaller model or fewer inputs")
        os._exit(CRASHED)
    _say(f"error: the command was ended by {name}{where}")
    os._exit(128 + number)


def _remove(folders: list[bytes], child: int) -> None:
    """The child's scratch folders, each only if it still names the child (`safeio.OWNER`)."""
    if not folders:
        return
    import shutil

    from graphsurgery.safeio import OWNER

    for folder in folders:
        try:
            with open(os.path.join(folder, os.fsencode(OWNER)), "rb") as owner:
                if int(owner.read()) != child:
                    continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _say(line: str) -> None:
    from graphsurgery.errors import printable

    try:
        sys.stderr.write(printable(line) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
