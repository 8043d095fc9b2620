"""The command runs in a child process that a light parent watches: a death by signal becomes one line.

ONNX Runtime's and OpenVINO's kernels die by a signal on some values a model computes at run time (a Range with a
step of zero, the smallest integer divided by -1, indices past 2^31), and no check before the run can see those
values; a bug in a native parser (protobuf, OpenCV) does the same. In one process that was a death by SIGFPE or
SIGSEGV: no line, a core file, scratch folders left behind. Here the parent, which loads nothing but this module,
waits for the child and turns such a death into one line naming what the child was doing (`doing`), exit 2, and
removes the scratch folders the child had made (`scratch`). It also stops a child stuck in one such step for more
than GRAPHSURGERY_TIME_LIMIT seconds (30 by default): a model OpenVINO compiles in quadratic time or a Loop whose
trip count comes from the input ran for ever, and no check before the step can tell how long it takes.

The parent forwards Ctrl-C and SIGTERM sent to it alone (`kill PID`, a test harness); a terminal's Ctrl-C reaches
both processes, so it is not sent twice. Every other signal that ends a process by default (SIGHUP, SIGQUIT, the
real-time signals: `PASSED_ON`) is passed on to the child at once, which ends in one line from here, 128 + its
number; so is a crash signal another process sends (`kill -SEGV PID`: not a crash of the command's own). When the
parent is killed, the child is killed too. A command that runs past a minute without saying how long it takes is
said to be at work, now and then (the time limit bounds each step, not their sum). Where a child cannot be made
(`ulimit -u`), the command runs in this process as before.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from graphsurgery.longrun import LONG_RUN_SECONDS, duration

#: the exit code for a command that died by a crash in native code: a bad input, like every other refusal
CRASHED = 2
#: the seconds one step in native code (`doing`: loading, compiling, converting a model, one run) may take: HRNet-W32
#: compiles in 1 s and runs a batch of 8 in 2 s on 2 cores; the chains that OpenVINO compiles in quadratic time
#: (5,000 ReLUs: 90 s) and Loops whose trip count comes from the input ran for ever
TIME_LIMIT = 30
TIME_LIMIT_VARIABLE = "GRAPHSURGERY_TIME_LIMIT"
#: signals a crash in native code dies by (the others are a kill from outside)
_CRASHES = {signal.SIGSEGV, signal.SIGFPE, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGSYS,
            signal.SIGTRAP}
#: signals that end a process by default, passed on to the child (unwatched, `kill -HUP PID` or a closed terminal
#: killed the parent alone: a death by signal, and its child went on to say "terminated"; round 32: SIGPWR,
#: SIGPROF, SIGVTALRM, SIGIO, SIGSTKFLT and the real-time signals did so still, and the child, killed with the
#: parent, left its scratch folder); safeio holds them back while it puts outputs in place. Not here: SIGINT and
#: SIGTERM (unwound, below), the crashes, SIGPIPE and SIGXFSZ (Python ignores them), SIGXCPU (launch's handler)
PASSED_ON = {signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM,
             signal.SIGPROF, signal.SIGIO, *(getattr(signal, name) for name in ("SIGPWR", "SIGSTKFLT")
                                             if hasattr(signal, name)),
             *range(signal.SIGRTMIN, signal.SIGRTMAX + 1)}
#: passed on at once, as the child's own handlers end it in one line: SIGXCPU sent to the parent ran its handler
#: (`launch.quit_now`, set before the fork), which said the CPU-limit line and left the child's scratch folder
_AT_ONCE = PASSED_ON | {signal.SIGXCPU}
#: a crash signal waited for here was sent by another process (`kill -SEGV PID`): one of the parent's own faults is
#: never queued (the kernel kills a process whose fault signal is blocked). Unwatched, it killed the parent silently
#: (exit -11) and the child with it, its scratch folder left (round 35); now the child ends by a stand-in that
#: safeio holds back around its renames (`_stand_in`), and the parent says the signal sent, 128 + its number
_WATCHED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, *_AT_ONCE, *_CRASHES}
_PR_SET_PDEATHSIG = 1
#: si_code of a signal sent by kill() or sigqueue() to this process (a terminal's Ctrl-C is SI_KERNEL, > 0)
_SENT_BY_A_PROCESS = 0
#: the exit code of a child the system's dynamic loader gave up on ("cannot allocate memory for thread-local data:
#: ABORT" while a runtime started a thread under `ulimit -v`): it skipped the command's cleanup and its last line
_LOADER_GAVE_UP = 127
#: the activity while the child imports the CLI (`launch`): a library may end the process from C there (OpenBLAS's
#: "Memory allocation still failed", exit 1 under `ulimit -v 100000`: the parity-failure code, with no line)
LOADING = "graphsurgery was loading its libraries (numpy, onnx, the runtimes)"
#: how the activity of the user's own Python code starts (`users_code`): not timed, and an exit from inside it is said
USERS_CODE = "running the user's code: "
#: the exit codes by which the child says its own last line while it loads (`launch`: a signal, a limit)
_SAID_WHILE_LOADING = {2, 130, 143}
#: the seconds between the parent's looks at the child
_WAKE = 1.0
#: the seconds a child has to unwind after Ctrl-C or SIGTERM: Python acts on a signal only once native code returns,
#: and a compile or a Loop that never returns (no time limit, or not in a `doing` step) made the command deaf to both
_GRACE = 5.0

#: in the child: the shared file (memfd) where it keeps what it is doing and its scratch folders, for the parent
_channel: int | None = None
_serial = 0
_ending = False
_code: int | None = None  # the exit code the child's last line goes with, once it is known (`last_line`)
_announced = False
_users_ran = False  # the user's own code has run in this process (`users_code`): its threads and handlers may linger
_doing: list[str] = []
_aliases: list[tuple[str, str]] = []  # (scratch folder, the name its files go by: `shown_as`)
_scratch: list[str] = []
_made: list[str] = []  # folders made for an output (`made`), deepest first
#: how a made folder's line starts in the shared file, apart from the scratch folders' (no path holds a NUL)
_MADE = b"\0"


def supervise(cpu_limit_line: str) -> None:
    """Fork: return in the child, which runs the command; in the parent, wait for it and exit as it did. Called
    before anything heavy is imported, so that the fork is cheap and no runtime thread exists yet."""
    global _channel
    time_limit = _time_limit()
    if not _light():
        return
    try:
        channel = os.memfd_create("graphsurgery-supervisor")
    except (AttributeError, OSError):  # not Linux, or no descriptor left: the command goes on, unwatched
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    # SIGCHLD ignored by the caller (inherited through exec: a daemon, a runner that sets it so) makes the kernel
    # reap the child itself: wait4 found none, and the parent's last line was a traceback, exit 1, after the child's
    # PASS (round 35). The parent waits with the default; the child keeps what it was given
    unreaped = signal.getsignal(signal.SIGCHLD) is signal.SIG_IGN
    if unreaped:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    parent = os.getpid()
    try:
        child = os.fork()
    except OSError:  # `ulimit -u`: no process to spare
        if unreaped:
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(channel)
        return
    if child == 0:
        if unreaped:
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        # unblocked, as the parent waits for them: a caller's blocked mask (inherited through exec from a thread
        # that blocks signals) made SIGHUP sent to the command a no-op, and SIGTERM wait for the parent's grace
        signal.pthread_sigmask(signal.SIG_SETMASK, mask - _WATCHED)
        _channel = channel
        _die_with(parent)
        return
    _watch(child, channel, cpu_limit_line, time_limit)


def _time_limit() -> int:
    """GRAPHSURGERY_TIME_LIMIT: the seconds one step in native code may take (`TIME_LIMIT` unless set; 0: none)."""
    text = os.environ.get(TIME_LIMIT_VARIABLE, "").strip()
    if not text:
        return TIME_LIMIT
    if not text.isdecimal() or len(text) > 9:  # isdigit() let '²' and '①' by, which int() refuses (a traceback)
        _say(f"error: {TIME_LIMIT_VARIABLE}={text[:40]!r} is not a number of seconds — fix: set it to a whole number "
             f"of seconds from 0 (no limit) to 999999999, or unset it (default {TIME_LIMIT} s)")
        os._exit(2)
    return int(text)


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
    global _serial
    _doing.append(shown(activity))
    _serial += 1
    _publish()
    try:
        yield
    finally:
        _doing.pop()
        _serial += 1
        _publish()


@contextmanager
def users_code(name: str) -> Iterator[None]:
    """The child runs the user's own function `name` (`--reference-pipeline`, `--torch`; as it imports its module
    too): one that left the process itself (`os._exit(0)`, a library's `exit()`) skipped the command's last line,
    and verify ended with exit 0, no line, having compared nothing (round 89); the parent now says so, exit 2. Not
    timed: the user's code may rightly take longer than a step in native code."""
    global _users_ran
    _users_ran = True
    with doing(USERS_CODE + name):
        yield


def forked() -> None:
    """In a process the child forks (the user's `multiprocessing` workers): it is not the command, and tells the
    parent nothing; its activities and exit written in the shared file were taken for the command's."""
    global _channel
    _channel = None


def users_code_ran() -> bool:
    """Whether the user's own code has run in this process (`users_code`)."""
    return _users_ran


@contextmanager
def shown_as(folder: os.PathLike | str, name: str) -> Iterator[None]:
    """Activities naming a file in the scratch `folder` name `name` instead (`safeio.scratch_named`): the parent's
    line on verify's patched model, too slow to compile, named /tmp/graphsurgery-verify-…/patched.onnx, a file the
    user never gave and that is gone when they read it (round 34)."""
    _aliases.append((os.fspath(folder), name))
    try:
        yield
    finally:
        _aliases.pop()


def shown(activity: str) -> str:
    """`activity` with the paths of files in scratch folders replaced by the names they go by (`shown_as`)."""
    for folder, name in _aliases:
        activity = re.sub(re.escape(folder) + r"/\S*", lambda _, name=name: name, activity)
    return activity


def again() -> None:
    """The next of many short steps of the current activity begins (a calibration sample, one of a series of runs):
    the time limit bounds each step, not the series, which may rightly take longer (NNCF on HRNet-W32: 27 s)."""
    global _serial
    if _channel is None or not _doing:
        return
    _serial += 1
    _publish()


def last_line(code: int | None = None) -> None:
    """The child is about to say its last line (`launch.say`, `launch.signals_ignored`), or exit with `code`: past
    the grace after Ctrl-C or SIGTERM, the parent ends it without saying one of its own, and exits with `code`
    when it is known. A signal after the line no longer changes the exit code, however slowly the child then exits
    (round 44: `inspect none.onnx` said its refusal, and a SIGTERM during Python's shutdown on a busy machine,
    longer than the grace, made the parent exit 143 instead of 2)."""
    global _ending, _code
    if _channel is None or _ending and (code is None or code == _code):
        return
    _ending, _code = True, code if code is not None else _code
    _publish()


def announced() -> None:
    """The user is shown how long the command takes (a long-run note, a progress bar on a terminal): the parent's
    note on a long run (`_long_run_line`) would only repeat it, or garble the bar."""
    global _announced
    if _channel is None or _announced:
        return
    _announced = True
    _publish()


def each(items: Iterable) -> Iterator:
    """`items`, each one the start of a new step of the current activity (`again`)."""
    for item in items:
        again()
        yield item


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


@contextmanager
def made(folders: Iterable[os.PathLike]) -> Iterator[None]:
    """Name the folders (deepest first) the child makes for an output (`convert --ovms`'s NAME/1/), which the parent
    removes if a signal kills the child while they are empty: SIGHUP mid-conversion (the child ends by it, unwound by
    nothing) left an empty version folder in the OVMS repository, where Ctrl-C removed it (round 84). Only removed
    when empty, they need no owner marker: a folder holding anything (the output placed) stays."""
    if _channel is None:
        yield
        return
    named = [os.fspath(folder) for folder in folders]
    _made.extend(named)
    _publish()
    try:
        yield
    finally:
        del _made[len(_made) - len(named):]
        _publish()


def _publish() -> None:
    """Write the state whole at the start of the shared file: a line with the activity's serial number (a new one
    for each activity, even of the same text), whether the last line is said (`last_line`), whether the run's length
    is shown (`announced`), whether the user's code has run (`users_code`), the exit code that line goes with (empty
    while unknown) and the text, then one scratch folder a line, then one made folder a line (after a NUL, `_MADE`).
    Paths are written as bytes (surrogateescape) so that any name the file system allows comes back unchanged."""
    code = "" if _code is None else _code
    activity = os.fsencode(f"{_serial}\t{int(_ending)}\t{int(_announced)}\t{int(_users_ran)}\t{code}\t"
                           f"{_doing[-1] if _doing else ''}").replace(b"\n", b" ")
    state = b"\n".join([activity, *map(os.fsencode, _scratch), *(_MADE + os.fsencode(folder) for folder in _made)])
    try:
        os.pwrite(_channel, state, 0)
        os.ftruncate(_channel, len(state))
    except OSError:  # a report the parent cannot read costs only its detail
        pass


def _die_with(parent: int) -> None:
    """The child is killed when the parent dies (a `kill -9` of the command's PID), as the one process was before.
    SIGKILL, not SIGTERM: a child in native code (a Loop counted by the input) or stopped (Ctrl-Z) never acted on
    SIGTERM, and with no parent left to kill it, it ran on, orphaned, for over an hour. Its scratch folders name
    it, and the next command that writes there removes them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGKILL)


def _watch(child: int, channel: int, cpu_limit_line: str, time_limit: int) -> None:
    """Wait for the child, forwarding signals sent to this process, and stop it if one activity outlasts
    `time_limit` seconds of its running (time it spent stopped, by Ctrl-Z, does not count); then exit as it did."""
    forwarded: set[int] = set()
    watched, spent, last = "", 0.0, time.monotonic()
    asked: tuple[int, float] | None = None  # the first Ctrl-C or SIGTERM, and when it came
    # ignored by the user (`nohup`, a script's background job): the child ignores them too; blocked, they still come
    ignored = {number for number in _WATCHED if signal.getsignal(number) is signal.SIG_IGN}
    sent: tuple[int, int] | None = None  # a crash signal another process sent, and its sender
    stand_in = _stand_in(ignored)
    running, note_at = 0.0, LONG_RUN_SECONDS  # the child's running time, and when the next long-run note is due
    while True:
        info = signal.sigtimedwait(_WATCHED, _WAKE)  # wakes each second to time the activity
        if info is not None and info.si_signo not in _WATCHED:  # CPython's answer when a stop (Ctrl-Z) interrupted
            info = None  # the wait past its timeout: an unfilled siginfo, and os.kill(child, garbage) a traceback
        if info is not None and info.si_signo != signal.SIGCHLD:
            if info.si_signo in ignored:
                continue
            if info.si_signo in _CRASHES:
                if sent is None:  # a stopped child ends once continued, or after the grace
                    sent = info.si_signo, info.si_pid if info.si_code <= _SENT_BY_A_PROCESS else 0
                    asked = asked or (info.si_signo, time.monotonic())
                    os.kill(child, stand_in)
                continue
            if info.si_signo not in _AT_ONCE:  # those kill the child at once, even in native code
                asked = asked or (info.si_signo, time.monotonic())
            if info.si_code <= _SENT_BY_A_PROCESS and info.si_signo not in forwarded:
                forwarded.add(info.si_signo)  # sent to the process group too, the child has it already
                os.kill(child, info.si_signo)
            continue
        pid, status, usage = os.wait4(child, os.WNOHANG)
        if pid:
            break
        now, (serial, activity, _, said, shown, code, _) = time.monotonic(), _last_state(channel)
        # stuck in native code: the signal would wait for it to return. A child that says its last line is left
        # one more grace to exit (round 32: one that had said "interrupted" just as the grace ran out, still
        # exiting — a large address space is freed before the process is gone — heard the line said again), and
        # ends with the code that line goes with: the signal came after the outcome was decided
        if asked and now - asked[1] > _GRACE * (1 + said):
            _kill(child, channel)
            if said:
                os._exit(128 + asked[0] if code is None else code)
            _say_and_exit(asked[0], "", [], cpu_limit_line, child, sent)
        # a gap longer than two wakes is time this process spent stopped (Ctrl-Z stops both): not counted (capped at
        # two wakes, the step was stopped at once after a long pause, or within a second of resuming)
        gap = (now - last if now - last <= 2 * _WAKE else 0.0) * (not _stopped(child))
        spent = spent + gap if serial == watched else 0.0
        watched, last, running = serial, now, running + gap
        # steps each under the limit add up: say the run is long
        if running > note_at and not (said or shown) and _takes_a_line_now():
            _say(_long_run_line(running, activity, time_limit))
            note_at *= 2
        # LOADING is published to say an exit from C while the libraries load, not as a step to time: its length is
        # the disk's and the machine's (a cold cache, a busy machine), not the model's; timed, a slow import was
        # stopped as "the model is too slow for this step" (round 28, under GRAPHSURGERY_TIME_LIMIT=2)
        if activity and activity != LOADING and not activity.startswith(USERS_CODE) and time_limit and \
                spent > time_limit:
            _kill(child, channel)
            _say(f"error: {activity} for more than {time_limit} s, and was stopped — fix: the model is too slow for "
                 f"this step (very long chains of elementwise ops slow OpenVINO's compiler; a Loop whose trip count "
                 f"comes from the input never ends); if it is sound and only large, allow more time with "
                 f"{TIME_LIMIT_VARIABLE}=<seconds> (0: no limit)")
            os._exit(CRASHED)
    code = os.waitstatus_to_exitcode(status)
    _, activity, folders, said, _, told, users_ran = _last_state(channel)
    if code < 0 and -code not in _CRASHES and said and told is not None:  # a signal after the last line (SIGHUP
        _remove(folders, child)  # while Python shut down): the outcome was decided and said; no second line
        os._exit(told)
    if code == _LOADER_GAVE_UP or activity == LOADING and code >= 0 and code not in _SAID_WHILE_LOADING:
        _remove(folders, child)  # a library's or the loader's own line ("cannot allocate memory for thread-local
        where = f" while {activity}" if activity else ""  # data: ABORT") said neither what nor why
        _say(f"error: the command's process ended abruptly (exit {code}){where} — fix: "
             + _memory_fix("free memory, then run the command again"))
        os._exit(CRASHED)
    if code >= 0 and said and told is not None and code != told and (code == 0 or users_ran):  # a failure said,
        # then exit 0 from code run after it: the user's atexit handler or thread calling os._exit(0) turned verify's
        _remove(folders, child)  # FAIL into a success (round 89), and os._exit(1) or (3) its PASS into a parity
        os._exit(told)  # failure or an internal error (round 91); the outcome the last line went with stands
    if code >= 0 and not said and activity.startswith(USERS_CODE):  # os._exit in the user's function
        _remove(folders, child)
        _say(f"error: the command's process ended (exit {code}) while {activity}, before the command finished — "
             "fix: return from the function instead of ending the process (os._exit, or a library's exit())")
        os._exit(CRASHED)
    if code >= 0 and not said and users_ran:  # a thread or handler of it, after the function returned: exit 0
        _remove(folders, child)  # with nothing compared (round 89's leftover)
        _say(f"error: the command's process ended (exit {code}) before the command finished, after running the "
             "user's code (--reference-pipeline, --torch) — fix: end no process from that code's threads or "
             "handlers (os._exit, a library's exit()); return, and let the command finish")
        os._exit(CRASHED)
    if code >= 0:
        os._exit(code)
    number = signal.SIGXCPU if -code == signal.SIGKILL and _out_of_cpu_time(usage) else -code
    if sent and number in (sent[0], stand_in):  # by the stand-in, or by the same signal sent to the process group
        number = sent[0]
    else:
        sent = None
    _say_and_exit(number, activity, folders, cpu_limit_line, child, sent)


def _long_run_line(running: float, activity: str, time_limit: int) -> str:
    """The parent's note on a command that has run for over a minute with no word on its length: the time limit
    bounds each step, not the command: `verify --random 1` on a model of 11–24 s a call ran its 4 pipelines for a
    minute, `run` on 8 images in a log for 90 s, without a line, and with 199 boxes (under the 200 crops it times)
    it would run for over half an hour (round 35)."""
    now = f", now while {activity}" if activity else ""
    limit = (f"each step is stopped after {time_limit} s ({TIME_LIMIT_VARIABLE}), but many steps add up"
             if time_limit else f"no step has a time limit ({TIME_LIMIT_VARIABLE}=0)")
    if activity.startswith(USERS_CODE):  # not timed ("not stuck: each step is stopped after 30 s" was untrue)
        return (f"note: still at work after {duration(running)}{now} — that code has no time limit (it may be slow, "
                "or stuck); Ctrl-C stops the command")
    return (f"note: still at work after {duration(running)}{now} — not stuck: {limit}; Ctrl-C stops the "
            f"command")


def _takes_a_line_now() -> bool:
    """Whether standard error takes a short line without waiting (a pipe has room for PIPE_BUF bytes): blocked on
    a full pipe whose reader stopped reading, the parent, its signals blocked, would be deaf to SIGTERM."""
    import select

    try:
        return bool(select.select([], [2], [], 0)[1])
    except (OSError, ValueError):
        return False


def _stand_in(ignored: set[int]) -> int:
    """The signal that ends the child for a crash signal sent to the parent: one the child dies by at once and
    safeio holds back while it puts an output in place (SIGSEGV itself would split its renames, and its own death
    would read as a crash in native code); not one the user ignores (`nohup`)."""
    return next((number for number in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
                 if number not in ignored), signal.SIGKILL)


def _out_of_cpu_time(usage) -> bool:
    """Whether the child's CPU time reached the hard limit, where the kernel kills it by SIGKILL without a SIGXCPU
    first: `ulimit -t 60` sets both limits, and the death was blamed on memory. (The kernel's clock for the limit
    runs ahead of the rusage that wait4 reports: 1.82–1.92 s at a limit of 2 s on a loaded machine; hence the
    slack.)"""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    return hard != resource.RLIM_INFINITY and usage.ru_utime + usage.ru_stime >= 0.9 * hard - 0.2


def _kill(child: int, channel: int) -> None:
    """End the child now and remove its scratch folders: SIGKILL, as SIGTERM would wait for its native code."""
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    _remove(_last_state(channel)[2], child)


def _last_state(channel: int) -> tuple[str, str, list[bytes], bool, bool, int | None, bool]:
    """The child's activity (its serial number and text), scratch folders, whether it says its last line, whether
    it showed the run's length (`announced`), the exit code its last line goes with and whether the user's code has
    run, as it last published them."""
    try:
        state = os.pread(channel, os.fstat(channel).st_size, 0)
    except OSError:
        return "", "", [], False, False, None, False
    activity, *folders = state.split(b"\n")
    serial, ending, shown, users, code, text = (activity.decode("utf-8", "backslashreplace").split("\t", 5)
                                                + ["", "", "", "", ""])[:6]
    return (serial, text, [folder for folder in folders if folder], ending == "1", shown == "1",
            int(code) if code.lstrip("-").isdecimal() else None, users == "1")


def _stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (Ctrl-Z, SIGSTOP) or traced."""
    return process_state(pid) in (b"T", b"t")


def process_state(pid: int) -> bytes | None:
    """Process `pid`'s state letter from /proc (b"R" running, b"Z" a zombie, b"T" stopped), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0]  # after the command name, which may hold ") "
    except (OSError, IndexError):
        return None


def _say_and_exit(number: int, activity: str, folders: list[bytes], cpu_limit_line: str, child: int,
                  sent: tuple[int, int] | None = None) -> None:
    """The child died by signal `number` (`sent`: a crash signal that another process sent to the command, and its
    sender, 0 if unknown): remove its scratch folders, say why in one line, exit."""
    _remove(folders, child)
    if number in (signal.SIGINT, signal.SIGTERM):  # before its handlers were set (Python's first milliseconds)
        _say("interrupted" if number == signal.SIGINT else "terminated")
        os._exit(128 + number)
    if number == signal.SIGXCPU:
        _say(cpu_limit_line)
        os._exit(2)
    name = f"{signal_name(number)}, {signal.strsignal(number) or 'a signal'}"
    where = f" while {activity}" if activity else ""
    if sent:
        sender = f"process {sent[1]}" if sent[1] else "another process"
        _say(f"error: the command was ended by {name}, sent by {sender} (not a crash of its own){where}")
        os._exit(128 + number)
    if number in _CRASHES and activity.startswith(USERS_CODE):
        _say(f"error: the command crashed ({name}){where} — fix: the crash is in that code or a library it calls: "
             "run it alone to find it")
        os._exit(CRASHED)
    if number in _CRASHES:
        _say(f"error: the command crashed in native code ({name}){where} — fix: " + _memory_fix(
             "the model, or an input, holds values this code cannot take (see SECURITY.md, \"Kernels that die on "
             "values computed at run time\"); check the model, or report the crash with the model to the runtime's "
             "authors"))
        os._exit(CRASHED)
    if number == signal.SIGKILL:  # not by `ulimit -v`/`-d`: the kernel refuses an allocation past them, it kills
        # nobody (a `--torch` module's own SIGKILL was blamed on the limit, round 62)
        _say(f"error: the command was killed ({name}){where}, by the system running out of memory or by another "
             "process — fix: free memory or give the command a smaller model or fewer inputs, and run it again")
        os._exit(CRASHED)
    _say(f"error: the command was ended by {name}{where}")
    os._exit(128 + number)


def signal_name(number: int) -> str:
    """"SIGHUP", or "SIGRTMIN+1" for a real-time signal: `signal.Signals` has no member for those between SIGRTMIN
    and SIGRTMAX (`kill -RTMIN+1` made the parent's last line a ValueError's traceback, round 32)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN < number < signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return f"signal {number}"


def _memory_fix(otherwise: str) -> str:
    """The fix for a death in native code: under a memory limit (`ulimit -v`) most likely that limit (cv2's import
    died by SIGSEGV under `ulimit -v 500000`, and the line blamed the model), else `otherwise`."""
    from graphsurgery.limits import memory_limit

    limit = memory_limit()
    if limit is None:
        return otherwise
    return (f"the process's memory limit of {limit} is the likely cause: raise it (`ulimit -v unlimited`) and run "
            f"the command again; if it happens again: {otherwise}")


def _remove(folders: list[bytes], child: int) -> None:
    """The child's scratch folders, each only if it still names the child (`safeio.OWNER`); then the folders it
    made for an output (`made`), deepest first, if they are empty (its scratch folder was in the deepest)."""
    if not folders:
        return
    from graphsurgery.safeio import owner, remove_scratch

    for folder in folders:
        if not folder.startswith(_MADE) and owner(folder) == child:
            remove_scratch(folder)
    for folder in folders:
        if folder.startswith(_MADE):
            try:
                os.rmdir(folder[len(_MADE):])
            except OSError:  # not empty (the output is in it), or gone
                pass


def _say(line: str) -> None:
    """`launch.say`, with what came from the child (the names in its activity) made printable."""
    from graphsurgery.errors import printable
    from graphsurgery.launch import say

    say(printable(line))
