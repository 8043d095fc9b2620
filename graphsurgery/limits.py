"""The process's resource limits (`ulimit`) and standard streams: what the user's shell set, said as such.

A limit too small for the work is the user's to raise, not a fault of the model nor a graphsurgery bug: too few
open files made OpenVINO say "Cannot recognize input model" (and the fix was to change the model), an address-space
limit (`ulimit -v`) failed a library's loading ("failed to map segment from shared object", an internal error or
the model's fault) or an allocation (MemoryError, an internal error), a file size limit (`ulimit -f`) was "free disk
space" with gigabytes free. Each is now one line naming the limit and how to raise it, exit 2.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError

#: open files a command needs at most (OpenVINO's conversion opened ~30: it failed under `ulimit -n 24`)
MIN_OPEN_FILES = 64
#: what a failed allocation or library load says, in the runtimes' and the dynamic loader's words. onnxruntime's
#: arena says "Failed to allocate memory for requested buffer" (`chain --check` with 2,000 people under `ulimit -v`
#: was an internal error), OpenVINO "Failed to allocate N bytes of memory" or "can't alloc" (blamed the model); not
#: a bare "failed to allocate": OpenVINO's JIT says it of registers
_OUT_OF_MEMORY = ("failed to map segment", "cannot allocate memory", "std::bad_alloc", "out of memory",
                  "unable to allocate", "failed to allocate memory", "bytes of memory", "can't alloc")
#: a thread not started (EAGAIN), in onnxruntime's and OpenVINO's words (round 26): under `ulimit -v` no room for
#: its stack (`verify` under `ulimit -v 400000`: "OpenVINO cannot compile the model: Resource temporarily
#: unavailable", fix: check the model), else the user's limit of processes and threads (`run` under `ulimit -u 5`
#: "Failed to create plugin … Resource temporarily unavailable", `verify` onnxruntime's "pthread_create failed").
#: Not Python's own EAGAIN (BlockingIOError: a lock or a non-blocking file)
_NO_THREAD = ("resource temporarily unavailable", "pthread_create failed")
#: processes and threads a command needs at least (the supervisor, OpenBLAS's, onnxruntime's and OpenVINO's pools:
#: on 2 CPUs `verify` failed under `ulimit -u 7`); more CPUs make larger pools, said by `limit_error`
MIN_PROCESSES = 16


def _frontend_missing(text: str) -> bool:
    """OpenVINO's "Unable to read the model … Available frontends: jax ir tf": its ONNX frontend library did not
    load (under `ulimit -v 500000`; graphsurgery hands it only checked ONNX models and IRs), not the model's fault."""
    _, found, frontends = text.partition("available frontends:")
    return bool(found) and "onnx" not in frontends.split("\n", 1)[0]


def _soft(limit: int) -> int | None:
    """The soft limit, or None when there is none."""
    soft = resource.getrlimit(limit)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def byte_size(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB" if count >= 2**20 else f"{count:,} bytes"


def ensure_open_files() -> None:
    """At least MIN_OPEN_FILES descriptors: the soft limit raised towards the hard one, a one-line refusal when even
    the hard limit is below (OpenVINO failed halfway, naming the model)."""
    soft = _soft(resource.RLIMIT_NOFILE)
    if soft is not None and soft < MIN_OPEN_FILES:
        reached = _raised(resource.RLIMIT_NOFILE, soft, MIN_OPEN_FILES)
        if reached < MIN_OPEN_FILES:
            raise GraphsurgeryError(f"the process may open only {reached} files (ulimit -n), fewer than the "
                                    f"{MIN_OPEN_FILES} graphsurgery and its runtimes need",
                                    fix="raise the limit (`ulimit -n 1024`) and run the command again")


def _raised(limit: int, soft: int, minimum: int) -> int:
    """The soft `limit` raised to `minimum`, or as far as the hard limit allows: the value it has now."""
    hard = resource.getrlimit(limit)[1]
    wanted = minimum if hard == resource.RLIM_INFINITY else min(hard, minimum)
    try:
        resource.setrlimit(limit, (wanted, hard))
    except (ValueError, OSError):
        return soft
    return wanted


def memory_limit() -> str | None:
    """The address-space or data limit set on the process, as `ulimit` shows it, or None when there is none."""
    for limit, flag in ((resource.RLIMIT_AS, "-v"), (resource.RLIMIT_DATA, "-d")):
        soft = _soft(limit)
        if soft is not None:
            return f"{byte_size(soft)} (ulimit {flag})"
    return None


def process_limit() -> int | None:
    """How many processes and threads the user may run (`ulimit -u`), or None when there is no limit or it does not
    apply (the kernel does not hold root to it)."""
    return None if os.getuid() == 0 else _soft(resource.RLIMIT_NPROC)


def ensure_processes() -> None:
    """At least MIN_PROCESSES processes and threads for the user: the soft limit raised towards the hard one, a
    one-line refusal when even the hard limit is below (the runtimes' thread pools failed to start, blaming the
    model: "OpenVINO cannot compile the model: Resource temporarily unavailable", round 26)."""
    soft = process_limit()
    if soft is None or soft >= MIN_PROCESSES:
        return
    reached = _raised(resource.RLIMIT_NPROC, soft, MIN_PROCESSES)
    if reached < MIN_PROCESSES:
        raise GraphsurgeryError(f"the user may run only {reached} processes and threads (ulimit -u), fewer than the "
                                f"{MIN_PROCESSES} graphsurgery and its runtimes need",
                                fix="raise the limit (`ulimit -u 4096`) and run the command again")


def limit_error(exc: BaseException, what: str = "the command", path: str | Path | None = None
                ) -> GraphsurgeryError | None:
    """The limit behind `exc`, as a one-line error naming `path` (the model the runtime was at; a file grown too
    large names itself), or None when no limit of the process explains it: an allocation or library load failing
    under a memory limit, a thread not started under the user's process limit, a file grown past `ulimit -f`,
    descriptors run out."""
    text = str(exc).lower()
    no_thread = not isinstance(exc, OSError) and any(sign in text for sign in _NO_THREAD)
    memory = memory_limit()
    if memory and (isinstance(exc, MemoryError) or any(sign in text for sign in _OUT_OF_MEMORY)
                   or _frontend_missing(text) or no_thread):
        return GraphsurgeryError(f"{what} ran out of memory under the process's memory limit of {memory}",
                                 path=path, fix="raise the limit (`ulimit -v unlimited`) and run the command again")
    if no_thread:  # after the memory limit: a process limit is set for every user
        processes = process_limit()  # (tens of thousands by default); a container's pids limit holds root too
        held = (f"the user may run {processes:,} processes and threads (ulimit -u), their other processes included"
                if processes is not None else "the system allows no more processes and threads")
        return GraphsurgeryError(f"{what} could not start a thread: {held}; a container may allow fewer",
                                 path=path, fix="raise the limit (`ulimit -u 4096`) or end other processes, and run "
                                                "the command again")
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE) or "too many open files" in text:
        return GraphsurgeryError(f"{what} ran out of file descriptors (the limit is {_soft(resource.RLIMIT_NOFILE)}, "
                                 "ulimit -n)", path=path,
                                 fix="raise the limit (`ulimit -n 1024`) and run the command again")
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return GraphsurgeryError(file_size_problem(), path=exc.filename, fix=file_size_fix())
    return None


def refuse_if_limited(exc: BaseException, what: str, path: str | Path) -> None:
    """Raise `limit_error`'s one line, naming `path`, when a limit of the process explains `exc` (then it is neither
    the model's fault nor a bug); else return, for the caller's own message. `convert` of a model of static batch
    100,000 under `ulimit -v` named no file."""
    limited = limit_error(exc, what, path)
    if limited is not None:
        raise limited from None


def file_size_limit() -> int | None:
    """The largest file the process may write (`ulimit -f`), or None."""
    return _soft(resource.RLIMIT_FSIZE)


def file_size_problem() -> str:
    limit = file_size_limit()
    return (f"a file grew past the process's file size limit of {byte_size(limit)} (ulimit -f)" if limit is not None
            else "a file grew past the largest size this file system takes")


def file_size_fix() -> str:
    return ("raise the limit (`ulimit -f unlimited`) and run the command again" if file_size_limit() is not None
            else "choose a folder on another file system")


def write_fix(exc: OSError, fix: str) -> str:
    """`fix` for a failed write, unless the file size limit (`ulimit -f`) is what failed it: then raising that
    ("free disk space" sent the user to a disk with gigabytes free), or a refusal to change the file or its folder
    (an immutable or append-only output, `chattr +i`, refuses even root: "free disk space" did too)."""
    if exc.errno in (errno.EPERM, errno.EACCES):
        return ("the output or its folder may not be changed (permissions, or an immutable or append-only file: "
                "see lsattr); choose another path")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # `bench --chart` on a full disk: "choose a writable path (the
        return "free disk space or choose another folder"  # folder must exist)", of a folder that exists (round 26)
    if exc.errno == errno.EBUSY:  # an output that is a mount point (a bind-mounted file): "free disk space" (round 57)
        return "the output is a mount point or in use (see findmnt); choose another path"
    return file_size_fix() if exc.errno == errno.EFBIG else fix


def open_standard_streams() -> None:
    """Standard input and error, when closed (`<&-`, `2>&-`), opened on /dev/null: the next file opened took their
    descriptor, and C libraries' warnings written to descriptor 2 would land in it (with stderr closed `run` was an
    internal error). Standard output is left as it is: the command refuses to run without it."""
    for fd, name in ((0, "stdin"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            quiet = os.open(os.devnull, os.O_RDWR)
            if quiet != fd:
                os.dup2(quiet, fd)
                os.close(quiet)
        if getattr(sys, name) is None:  # Python found it closed at start
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False, errors="backslashreplace"))
    for fd in (1, 2):  # a pipe a parent left non-blocking (O_NONBLOCK, as node.js does): with a slow reader Python
        try:  # dropped what did not fit the pipe, in silence, with exit 0 (`steps` printed 2,378 of 5,357 bytes;
            os.set_blocking(fd, True)  # round 26). Writes now wait for the reader, as on any pipe
        except OSError:  # closed: standard output is refused by the command, standard error was opened above
            pass


def writable(stream) -> bool:
    """Whether `stream` (standard output) can be written: not closed, and not open read-only (`1<&0`, where every
    write failed with EBADF, an internal error). A stream without a descriptor (an embedding application's) can."""
    import fcntl

    if stream is None or getattr(stream, "closed", False):  # `sys.stdout.close()`: its fileno() is a ValueError
        return False
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    try:
        return (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
    except OSError:
        return False


def _not_telemetry(record) -> bool:
    return "openvino_telemetry" not in record.pathname


def openvino_telemetry_off() -> None:
    """OpenVINO's telemetry kept off stderr and off the network (the project sends nothing at run time). With a
    HOME the user cannot write (a container, a read-only file system) every conversion printed three to six
    "WARNING:root:Failed to create openvino_telemetry file" lines on success: its records are dropped from the root
    logger, nobody else's. Its messages went out from a forked child that urlopen kept waiting without a network;
    killed by the parent's SIGTERM after a timeout, the child printed a traceback into the command's stderr
    (`convert` under `ulimit -f`, once in a clean-clone CI run): its sender now sends nothing."""
    import logging

    root = logging.getLogger()
    if _not_telemetry not in root.filters:
        root.addFilter(_not_telemetry)
    try:
        from openvino_telemetry.utils.sender import TelemetrySender
    except ImportError:  # another OpenVINO packaging without it: nothing to silence
        return
    TelemetrySender.send = _send_nothing


def _send_nothing(self, backend, message) -> None:
    """TelemetrySender.send, sending nothing."""
