"""Reading small input files safely, and writing results without ever touching what a command reads.

Inputs (recipes, boxes, annotations) must be regular files and are size-capped before they are read: a FIFO would
block forever, `/dev/zero` would fill the memory. They are judged on the file opened (`open_regular`), not only on
the path checked a moment before.

Every command knows its inputs (model and its external data, recipe, images, boxes, annotations, reference). An
output path that names one of them — by another spelling, a symlink or a hard link — is refused, `--force` or not;
so is an existing output that is not a regular file (a device node, a FIFO, a socket). Reports are written in a
scratch folder beside the target and renamed over it: they appear whole or not at all.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import glob
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from graphsurgery import supervisor
from graphsurgery.errors import ArgumentError, GraphsurgeryError, printable, quoted, say_note
from graphsurgery.limits import file_size_fix, file_size_limit, write_fix

#: What a path given by the user can make any file call raise: a name too long, a symlink loop.
PATH_ERRORS = (errno.ENAMETOOLONG, errno.ELOOP)
#: Linux's limits on a name and a whole path (with its NUL), in bytes: a path past them names no file
NAME_MAX, PATH_MAX = 255, 4096

#: The file in a scratch folder that names the process that made it: a folder whose process is gone was left by
#: a kill (SIGKILL, a power cut) and is removed by the next run that writes there.
OWNER = ".graphsurgery-owner"
#: Beside it, where that process ID means something: the kernel's boot and the PID namespace. A folder shared with
#: a container (a bind mount) or another machine (NFS) holds scratch folders of processes this one cannot see.
SCOPE = ".graphsurgery-scope"

#: The start of the name of every scratch folder a command makes in the system's temporary folder ($TMPDIR).
TEMPORARY_PREFIX = "graphsurgery-"


@contextmanager
def scratch_folder(parent: Path, prefix: str, out: Path,
                   uncreatable: Callable[[OSError, Path], GraphsurgeryError] | None = None,
                   stale: str | None = None) -> Iterator[Path]:
    """A new folder in `parent`, for the output `out`, removed on exit (also on Ctrl-C and SIGTERM, which unwind
    like exceptions): results are written there, then moved into place with os.replace, so they appear whole or
    not at all. Scratch folders named `stale` (`prefix` by default) that a dead process left behind are removed
    first, and said so on stderr. `uncreatable` makes the error for a folder that cannot be made (`_uncreatable` by
    default)."""
    uncreatable = uncreatable or _uncreatable
    _refuse_append_only(parent, out, uncreatable)
    _remove_stale(parent, prefix if stale is None else stale)
    with _owned_folder(parent, prefix, out, uncreatable) as staging:
        try:  # the folder, held open: when it is renamed while the command runs (`mv out out.old` during `run -o
            held = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)  # out`), the scratch folder goes with it and is
        except OSError:  # found there
            held = None
        try:
            try:
                yield staging
            except OSError:
                if not staging.is_dir():  # deleted under the command (its output folder removed or replaced mid-run)
                    raise GraphsurgeryError(f"the scratch folder {staging.name} was removed while the command ran "
                                            "(the output folder was deleted or moved)", path=out,
                                            fix="run the command again and leave the output folder alone until it "
                                                "ends") from None
                raise
        finally:
            # not cut short by Ctrl-C or SIGTERM: a signal halfway through (SIGTERM just after `convert --ovms` placed
            # its IR) left the folder without its owner marker, which no later command removes; acted on once it is
            # gone
            with signals_held():
                remove_scratch(staging)
                if held is not None:  # through the descriptor, which follows the folder wherever it was moved: by
                    try:  # its old path the scratch folder was not found, and stayed in the moved folder (round 26)
                        remove_scratch(f"/proc/self/fd/{held}/{staging.name}")
                    finally:
                        os.close(held)


@contextmanager
def _owned_folder(parent: Path, prefix: str, out: Path,
                  uncreatable: Callable[[OSError, Path], GraphsurgeryError]) -> Iterator[Path]:
    """mkdtemp's folder in `parent` with its owner marker, made with the signals held (`signals_held`) until the
    supervisor knows it too (`supervisor.scratch`, which removes it if a signal kills this process): a closed
    terminal's SIGHUP between the folder and its marker left an empty folder that no later command can tell from a
    live command's, for good (round 60); acted on before the supervisor knew it, it killed the process with the
    folder left (the demo's SIGHUP test). The folder is removed here if the signal or an error unwinds (Ctrl-C)."""
    staging = None
    with ExitStack() as known:
        try:
            with signals_held():
                try:
                    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
                except OSError as exc:
                    raise uncreatable(exc, out) from None
                _usable_under_umask(staging, out)
                try:
                    scope = _scope()
                    if scope is not None:  # first: a folder is removable only once its owner marker is there
                        (staging / SCOPE).write_text(scope)
                    (staging / OWNER).write_text(str(os.getpid()))
                except OSError as exc:  # a full disk: the error names no file, and the CLI took it for standard
                    raise uncreatable(exc, out) from None  # output's
                known.enter_context(supervisor.scratch(staging))  # removed by the parent if a crash kills this one
        except BaseException:
            if staging is not None:
                remove_scratch(staging)
            raise
        yield staging


def scratch_prefix(out: Path) -> str:
    """The name of `out`'s scratch folders up to mkdtemp's 8 characters, cut so that the whole stays a legal file
    name whenever the output's is: a 245-character output name was refused for its staging folder's sake, and cut
    at 200 characters, a name of 125 `é` (255 bytes, legal) still was, as "cannot create files in the output
    folder (File name too long) — fix: choose a writable folder" (round 57). Cut at 200 bytes, on a character."""
    return "." + os.fsencode(out.name)[:200].decode("utf-8", "ignore") + "."


def _usable_under_umask(staging: Path, out: Path) -> None:
    """Refuse a umask that takes the owner's own read, write or search permission (round 53: `umask 0477`, `0177`):
    mkdtemp's folder came out unreadable or not enterable for a user other than root, the marker or the patched
    model could not be written or read back ("fails the ONNX checker … a graphsurgery bug", "cannot create files in
    the output folder" of a writable folder), and the scratch folder, which could not be listed, stayed behind."""
    refused = umask_refusal(staging, out)
    if refused is not None:
        with suppress(OSError):
            os.rmdir(staging)  # still empty: removed whatever its mode
        raise refused


def umask_refusal(made: Path, out: Path) -> GraphsurgeryError | None:
    """The refusal of the umask, when it takes the owner's own read, write or search permission and the folder
    `made` under it (for the output `out`) came out unusable (root reads and writes whatever the umask leaves)."""
    mask = _umask()
    if not mask & 0o700 or os.access(made, os.R_OK | os.W_OK | os.X_OK):
        return None
    return GraphsurgeryError(f"the umask {mask:04o} takes the owner's own permissions from the files and folders "
                             "the command writes (they could not be read back)", path=out,
                             fix="set a umask that leaves the owner read, write and search permission, e.g. "
                                 "`umask 022`")


@contextmanager
def staged_folder(outdir: Path, prefix: str,
                  before_moving: Callable[[list[Path]], None] = lambda produced: None) -> Iterator[Path]:
    """A scratch folder (`scratch_folder`: in `outdir` when it exists, else beside it, in its nearest existing
    parent) whose files move into `outdir` only when the block succeeds, and all together (`placing`): a set
    of results (`run -o`, `eval-coco --results`) is never left half new and half old. A new `outdir` is the scratch
    folder renamed, so that even a kill leaves all of the results or none. `before_moving` gets the files produced
    and may refuse them, under `placing`'s lock (the folder as it is then); then nothing moves."""
    anchor = beside = _existing(outdir.parent)
    if present(outdir):
        anchor = outdir
        _remove_stale(beside, prefix)  # left by a run killed while `outdir` did not exist yet
    with scratch_folder(anchor, prefix, outdir) as stage:
        yield stage
        produced = sorted(path for path in stage.iterdir() if path.name not in (OWNER, SCOPE))
        # all of the results, or (interrupted before this) none of them and no folder; decided under the lock of
        # the folder's parent, so that two runs into one new folder do not both take it for new, and what may be
        # replaced is judged on the folder as it is now (a file put there while this command worked is refused)
        with placing(_existing(outdir.parent)):
            before_moving(produced)
            moves: list[tuple[Path, Path]] = []
            try:
                if not present(outdir) and anchor == _existing(outdir.parent):
                    # a new folder: the scratch folder becomes it in one rename, so even a kill (SIGKILL) leaves
                    # every result or none (moved one by one, a kill left half of them in a new folder)
                    (stage / OWNER).unlink()
                    (stage / SCOPE).unlink(missing_ok=True)
                    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp's 0700
                    outdir.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(stage, outdir)
                    return
                moves = [(path, outdir / path.name) for path in produced]
                new = [move for move in moves if not present(move[1])]  # the others passed `before_moving`
                placed = place(new, replace=False)
                try:
                    place([move for move in moves if move not in new], replace=True)
                except BaseException:  # all or none: the new names go too (round 53: they stayed beside the old)
                    for target in placed:
                        with suppress(OSError):
                            target.unlink()
                    raise
            except OSError as exc:  # the output folder replaced by a file, or deleted, while the command ran
                stuck = next(((target, kind) for _, target in moves if (kind := _unreplaceable(target))), None)
                if stuck is not None:  # an earlier result made immutable (round 53): the folder was left alone
                    raise GraphsurgeryError(f"{stuck[0].name} in the output folder is {stuck[1]} (chattr), so no "
                                            "command may replace it; no result was moved", path=outdir,
                                            fix=f"`chattr -i -a` {stuck[0].name}, or choose another folder") from None
                # EPERM: an earlier result of another user's in a sticky folder (/tmp), which "run again" never moved
                raise GraphsurgeryError(f"cannot move the results into the output folder ({exc.strerror or exc})",
                                        path=outdir, fix=write_fix(exc, "run the command again and leave the output "
                                                                        "folder alone until it ends")) from None


@contextmanager
def temporary_folder(purpose: str) -> Iterator[Path]:
    """A scratch folder in the system's temporary folder ($TMPDIR) for files a command makes and drops (the patched
    model verify compares, bench's models, NNCF's intermediate models): removed on exit, and, when a kill (SIGKILL)
    left it behind, by the next command that makes one (tempfile's folders stayed for good)."""
    def uncreatable(exc: OSError, folder: Path) -> GraphsurgeryError:
        return GraphsurgeryError(f"cannot create files in the temporary folder ({exc.strerror or exc})", path=folder,
                                 fix="free disk space there or set TMPDIR to another folder"
                                 if exc.errno == errno.ENOSPC else "set TMPDIR to a writable folder")

    _refuse_append_only_tmpdir(uncreatable)
    try:
        parent = Path(tempfile.gettempdir())
    except OSError:  # none of $TMPDIR, /tmp, /var/tmp, /usr/tmp and the current folder takes files
        if file_size_limit() == 0:  # `ulimit -f 0`: no folder takes a byte, and TMPDIR was blamed (round 35)
            raise GraphsurgeryError("no file can be written: the process's file size limit is 0 bytes (ulimit -f)",
                                    fix=file_size_fix()) from None
        raise GraphsurgeryError("no writable temporary folder: $TMPDIR, /tmp, /var/tmp and the current folder all "
                                "refuse new files", fix="set TMPDIR to a writable folder") from None
    try:  # the models made there go to onnx and OpenVINO: TMPDIR=/tmp/$'\xff' failed verify and bench telling the
        utf8_path(parent, "temporary folder")  # user to rename "the output", a path they never gave (round 26)
    except GraphsurgeryError as exc:
        raise GraphsurgeryError(exc.message, path=parent, fix=exc.fix if "PYTHONUTF8" in exc.fix
                                else "set TMPDIR to a folder whose path is UTF-8") from None
    with scratch_folder(parent, f"{TEMPORARY_PREFIX}{purpose}-", parent, uncreatable,
                        stale=TEMPORARY_PREFIX) as folder:
        yield folder


@contextmanager
def scratch_named(folder: Path, name: str) -> Iterator[None]:
    """Errors about a file in the scratch `folder` (verify's patched model) name `name` instead: the line named
    `/tmp/graphsurgery-verify-…/patched.onnx`, a file the user never gave and that is gone when they read it."""
    try:
        with supervisor.shown_as(folder, name):
            yield
    except GraphsurgeryError as exc:
        if exc.path is None or not Path(exc.path).is_relative_to(folder):
            raise
        if any(full in exc.message for full in ("No space left", "Disk quota")):  # the temporary folder's disk, not
            raise GraphsurgeryError(exc.message, path=name, fix=f"free disk space in {folder.parent}, or set TMPDIR "
                                    "to a folder on another disk") from None  # the model's (round 26)
        raise exc.about(name) from None


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest parent that exists."""
    while not present(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def folder_fix(exc: OSError) -> str:
    """The fix for a folder that files cannot be written into: a full disk, one not writable, or a file grown past
    `ulimit -f` ("free disk space" with gigabytes free)."""
    return write_fix(exc, "free disk space or choose another folder" if exc.errno == errno.ENOSPC
                     else "choose a writable folder")


def _uncreatable(exc: OSError, out: Path) -> GraphsurgeryError:
    return GraphsurgeryError(f"cannot create files in the output folder ({exc.strerror or exc})", path=out,
                             fix=folder_fix(exc))


#: Seconds a command waits for another one placing its outputs in the same folder (renames take milliseconds; a
#: command stopped by SIGSTOP midway would hold the folder for ever).
PLACING_WAIT = 30.0


@contextmanager
def placing(folder: Path) -> Iterator[None]:
    """The renames that put one output in place (a model and its data file, an IR's .xml and .bin, a set of
    results): not split by Ctrl-C or SIGTERM (`signals_held`), nor interleaved with another command placing outputs
    in `folder` at the same moment (two `apply -o m.onnx --force` at once could leave one's model beside the
    other's data file). The second waits on an exclusive lock of the folder (flock; a file system without locks
    goes unlocked)."""
    try:
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        handle = None  # the renames say what is wrong with the folder
    try:
        if handle is not None:
            _lock(handle, folder)
        with signals_held():
            yield
    finally:
        if handle is not None:
            os.close(handle)  # and with it the lock


def _lock(handle: int, folder: Path) -> None:
    deadline = time.monotonic() + PLACING_WAIT
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise GraphsurgeryError(f"another command has been placing its outputs in this folder for "
                                        f"{PLACING_WAIT:.0f} s", path=folder,
                                        fix="wait for it (or end it) and run this command again") from None
            time.sleep(0.01)
        except OSError:  # no locks on this file system (some network mounts)
            return


def place(moves: Sequence[tuple[Path, Path]], replace: bool) -> list[Path]:
    """Move each staged file onto its target (a rename within one file system), under `placing`'s lock: the targets
    placed, or on any error none of them (a data file without its model is removed). Without `replace` (no --force)
    no target may exist, and that is decided here, under the lock, not only when the command started: two commands
    started together both found the output free, and the later one's silently replaced the earlier one's. Nor is
    a file that a writer taking no lock made meanwhile replaced: a hard link fails on an existing name, where
    os.rename replaces it. An existing target is a FileExistsError naming it."""
    taken = [target for _, target in moves if not replace and present(target)]
    if taken:  # checked for all before any moves: nothing of this command's lands beside the other's
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(taken[0]))
    placed: list[tuple[Path, Path | None]] = []  # each target, and a link to the file it replaced
    try:
        for index, (staged, target) in enumerate(moves):
            if replace:
                previous = _kept(target, staged.parent / f".previous-{index}")
                try:
                    os.replace(staged, target)
                except BaseException:
                    if previous is not None:
                        with suppress(OSError):
                            previous.unlink()
                    raise
                placed.append((target, previous))
            else:
                _place_new(staged, target)
                placed.append((target, None))
    except BaseException:
        # round 53: the replaced files were unlinked too, so a failure halfway (an earlier result made immutable)
        # lost the earlier run's results, and its record, without placing the new ones; they are put back
        for target, previous in placed:
            with suppress(OSError):
                if previous is not None:
                    os.replace(previous, target)
                else:
                    target.unlink()
        raise
    for _, previous in placed:
        if previous is not None:
            with suppress(OSError):
                previous.unlink()
    return [target for target, _ in placed]


def _kept(target: Path, keep: Path) -> Path | None:
    """A hard link `keep` (in the scratch folder) to the file `target` names, before it is replaced, so that `place`
    can put it back; None when there is none, or no hard link can be made (another file system, FAT)."""
    try:
        os.link(target, keep, follow_symlinks=False)
    except OSError:
        return None
    return keep


def _place_new(staged: Path, target: Path) -> None:
    """`staged` moved to `target`, which must not exist (a hard link, then the staged name removed)."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        # no hard links on this file system (FAT, some FUSE mounts): checked, then renamed, still under the lock
        if present(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.rename(staged, target)
        return
    with suppress(OSError):  # the target is whole; the staged name goes with its scratch folder anyway
        os.unlink(staged)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while a few renames put one output in place (a model and its data file, `run`'s
    results), then acted on: a signal between two renames left a data file without its model, or half of `run`'s
    results. Also the signals that end a process by default (`kill -HUP`, a closed terminal, SIGQUIT, SIGUSR1, passed
    on by the supervisor, and SIGXCPU): SIGHUP between the renames of `apply --force` left the new data file beside
    the old model; re-raised after the renames, each ends the process as before, with every output whole. Outside
    the main thread (an embedding application) signals are not ours to hold."""
    caught: list[int] = []
    previous = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGXCPU, *sorted(supervisor.PASSED_ON)):
            # None: a handler not set from Python, which cannot be restored; an ignored signal (`nohup`) stays so
            if signal.getsignal(number) not in (None, signal.SIG_IGN):
                previous[number] = signal.signal(number, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if caught:
            signal.raise_signal(caught[0])  # now: KeyboardInterrupt, or the CLI's Terminated, on the way out


def _remove_stale(parent: Path, prefix: str) -> None:
    """Remove the scratch folders in `parent` whose owner marker names a dead process. Output scratch folders are
    hidden (`.NAME.`, `.graphsurgery-run-`), and any hidden one of a killed command goes, whatever output it was
    for (only the same output's were: `apply -o b.onnx` left a killed `-o a.onnx`'s 100 MB behind). Markers are
    read by `owner` (a FIFO in a shared $TMPDIR, anyone's, blocked every command)."""
    pattern = "." if prefix.startswith(".") else prefix
    for folder in parent.glob(f"{glob.escape(pattern)}*"):  # `[` in an output's name is no pattern
        if folder.is_symlink():  # no scratch folder is a link: one to a folder holding a dead process's marker had
            continue  # that folder's files removed through it (`.x -> ~/project`, `$TMPDIR/graphsurgery-x -> …`)
        pid = owner(folder)
        if pid is None or _alive(pid):  # not ours, still being made, or its process runs
            continue
        if remove_scratch(folder):  # another user's (a shared folder) stays: "removed" was said of it on every run
            say_note(f"note: removed {printable(folder)}, left behind by process {pid}, which was killed")


def owner(folder: str | bytes | os.PathLike) -> int | None:
    """The process ID a scratch folder's marker names, or None: no marker, or not a small regular file holding a
    process ID (a FIFO in its place blocked every command; a number past any process ID was os.kill's
    OverflowError, an internal error; 0 and negatives name process groups). None too for a folder made under another
    boot or PID namespace (`SCOPE`): its process ID names no process here, and a container sharing the folder
    removed the host's live scratch folder as a dead process's."""
    folder = Path(os.fsdecode(folder))
    try:
        pid = int(read_small_file(folder / OWNER, 64, "owner marker"))
        if present(folder / SCOPE) and read_small_file(folder / SCOPE, 256, "scope marker").decode() != _scope():
            return None
    except (OSError, ValueError, GraphsurgeryError):
        return None
    return pid if 0 < pid < 2**31 else None


@functools.cache
def _scope() -> str | None:
    """Where this process's ID means something: the kernel's boot and the PID namespace; None where /proc does not
    say (then folders that name a scope are left alone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot} pid:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def remove_scratch(folder: str | bytes | os.PathLike) -> bool:
    """Remove a scratch folder, its owner marker last: a removal cut short (SIGKILL, a file that would not go) left
    folders holding a model but no marker, which no later command can tell from a stranger's and remove (seven of
    12–114 MB had piled up in this machine's $TMPDIR). Entries that stay keep the marker with them. Whether the
    folder is gone."""
    folder = os.fsdecode(folder)
    try:
        with os.scandir(folder) as entries:
            payload = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in entries
                       if entry.name not in (OWNER, SCOPE)]
    except OSError:
        return not os.path.lexists(folder)
    for path, is_folder in payload:
        try:
            shutil.rmtree(path) if is_folder else os.unlink(path)
        except OSError:
            pass
    try:
        if set(os.listdir(folder)) <= {OWNER, SCOPE}:  # where the process ID holds goes with it, just before
            for marker in (SCOPE, OWNER):
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, marker))
        os.rmdir(folder)
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    """Whether process `pid` runs. A zombie is dead: a command killed together with the process that watched it
    (graphsurgery.supervisor) waits as one until an init reaps it, and a container's init may never do so."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return supervisor.process_state(pid) not in (b"Z", b"X")  # unknown (no /proc): alive, as os.kill said


def read_small_file(path: Path, limit: int, what: str, error: type[GraphsurgeryError] = GraphsurgeryError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; a one-line error (`error`) for anything else."""
    path = input_path(path, what, error)
    a = "an" if what[:1] in tuple("aeiou") else "a"
    try:
        path.stat()
    except OSError as exc:  # the Python API got an OSError for a 300-character name (the CLI said it in one line)
        if exc.errno in PATH_ERRORS:
            raise error(f"no such {what} ({exc.strerror})", path=path,
                        fix="use a shorter path without symlink loops") from None
    if not path.exists():
        raise error(f"no such {what}", path=path, fix="check the path")
    if path.is_dir():
        raise error(f"is a directory, not {a} {what}", path=path, fix=f"give the path of the {what}")
    if not path.is_file():
        raise error(f"is not a regular file (a FIFO, device or socket), so it is not read as {a} {what}", path=path,
                    fix=f"save the {what} as a file and give its path")
    try:
        with open_regular(path, f"{a} {what}", error) as stream:
            # never more than limit + 1: a larger file is refused on what was read. Python allocates what read()
            # asks for, so the size comes first (1 GiB for a 4 kB annotation file failed under `ulimit -v`)
            size = os.fstat(stream.fileno()).st_size
            data = stream.read(min(limit, size) + 1)
            if len(data) > size:  # it grew since: read on to the limit
                data += stream.read(limit + 1 - len(data))
    except OSError as exc:
        raise error(f"cannot read the {what} ({exc.strerror})", path=path, fix="check its permissions") from None
    if len(data) > limit:
        raise error(f"the {what} is larger than {limit:,} bytes", path=path, fix="check the path")
    return data


def open_regular(path: Path, what: str, error: type[GraphsurgeryError] = GraphsurgeryError) -> BinaryIO:
    """`path` opened for reading when the file opened is a regular file, judged on the open file itself: a file
    checked and then replaced by a FIFO blocked the command for ever in open() (or a device was read). Opening does
    not wait (O_NONBLOCK, which reads from a regular file ignore). `what` names it in the error ("an image")."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"is not a regular file (a FIFO, device or socket), so it is not read as {what}", path=path,
                    fix="give the path of a file (it was replaced while the command ran?)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def inside(folder: Path, name: str, what: str, source: Path | str) -> Path:
    """`folder / name` when it stays inside `folder` (after resolving `..` and symlinks); a file name from a data file
    (`source`) must not reach files elsewhere (`../secret.jpg`, an absolute path)."""
    if "\x00" in str(name):  # no file has such a name (a ValueError from the system calls: an internal error)
        raise GraphsurgeryError(f"{what} {quoted(name)} holds a NUL character, which no file name can", path=source,
                                fix=f"give the file name of an image in {folder}")
    try:
        os.fsencode(name)
    except UnicodeEncodeError:  # a JSON escape `\ud800`: the system calls' UnicodeEncodeError was an internal error
        raise GraphsurgeryError(f"{what} {quoted(name)} holds a lone surrogate (a JSON escape such as \\ud800), "
                                "which no file name can", path=source,
                                fix=f"give the file name of an image in {folder}") from None
    try:
        path = (Path(folder) / name).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): an internal error
        raise GraphsurgeryError(f"{what} {quoted(name)} names no file (a symbolic link loop)", path=source,
                                fix=f"give the file name of an image in {folder}") from None
    root = Path(folder).resolve()
    if not str(name) or Path(name).is_absolute() or root not in path.parents:
        raise GraphsurgeryError(f"{what} {quoted(name)} is outside {folder}", path=source,
                                fix=f"name files relative to {folder}, without '..' or absolute paths")
    return path


def utf8_path(path: Path, what: str) -> Path:
    """`path`, when the C++ libraries find it: they take the name as UTF-8, and it must be the name's bytes. Linux
    allows any byte in a name and Python keeps an undecodable one as a lone surrogate (b'\\xff' as '\\udcff'):
    onnx's checker raised a TypeError (an internal error) on such a model or output path. Under a locale of another
    encoding (LC_ALL=en_US.ISO-8859-1, round 39) Python reads a UTF-8 name `é` as `Ã©`, whose UTF-8 names another
    file: the checker said a model named so "fails the ONNX checker — re-export it"."""
    name = os.fsencode(path)
    with suppress(UnicodeEncodeError):  # a lone surrogate has no UTF-8
        if os.fspath(path).encode("utf-8") == name:
            return path
    try:  # UTF-8 read in another encoding: as ASCII under LC_ALL=C with PYTHONUTF8=0 ("rename it to UTF-8", it was)
        name.decode("utf-8")
    except UnicodeDecodeError:
        raise GraphsurgeryError(f"the {what}'s path is not UTF-8 text (it holds a byte such as \\xff that onnx "
                                "cannot take)", path=path, fix="rename the file (or folder) to UTF-8") from None
    raise GraphsurgeryError(f"the {what}'s path is UTF-8, but Python reads file names as "
                            f"{sys.getfilesystemencoding()} here (a locale of another encoding, or C with UTF-8 mode "
                            "off)", path=path, fix="run with PYTHONUTF8=1 or a UTF-8 locale (LC_ALL=C.UTF-8)") from None


def utf8_text(text: str) -> str:
    """`text` with the lone surrogates of a name that is not UTF-8 (b'\\xff' is held as '\\udcff') written as
    `\\udcff`, which C++ libraries and UTF-8 files can take (verify --json and OpenVINO's rt_info raised
    UnicodeEncodeError on a folder so named, an internal error). In a JSON string it reads back as the same name."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def output_path(value, what: str = "file") -> Path:
    """An output path given to the Python API, held to what the CLI's options take: a str or os.PathLike that is
    not empty (Path("") is the current folder: `run(..., "")` wrote its results there). A file's path must end in a
    name: `-o .` or `-o /` (no name at all) was an internal error (ValueError from pathlib) in apply, convert, chain;
    `o.onnx/` and `o.onnx/.` were written as `o.onnx` (round 60)."""
    return _given_path(value, f"the output {what}", f"no {what} to write{' into' if what == 'folder' else ''}",
                       f"give a {what} name", reading=False, file=what != "folder")


def names_folder(text: str) -> bool:
    """Whether a path spells a folder: a last '/', or a last name '.' or '..'. pathlib drops the slash and the '.',
    so `out.onnx/` and `out.onnx/.` were written as the file `out.onnx` (round 60: the CLI refused only the slash,
    the Python API neither)."""
    return text.endswith(("/", os.sep)) or os.path.basename(text) in (".", "..")


def file_as_folder(text: str) -> str | None:
    """Why an input spelled as a folder (`recipe.yaml/`, `pose.onnx/.`) is refused, or None: pathlib drops the last
    '/' and '.', so such a path was read as the file, where the system says "Not a directory" (round 60)."""
    if not names_folder(text):
        return None
    try:
        os.stat(text)
    except NotADirectoryError:
        return f"{quoted(printable(text))}: Not a directory (a file's name followed by '/')"
    except (OSError, ValueError):  # missing, too long, a NUL: said where the path is read
        pass
    return None


def input_path(value, what: str, error: type[GraphsurgeryError] = GraphsurgeryError) -> Path:
    """An input path (of the `what`, e.g. "model file") given to the Python API, held to what the CLI's arguments
    take: a str or os.PathLike that is not empty (`inspect("")` said ".: is a directory, not an ONNX file")."""
    return _given_path(value, f"the {what}", f"no {what}", f"give the path of the {what}", error)


def _given_path(value, role: str, names: str, fix: str, error: type[GraphsurgeryError] = GraphsurgeryError, *,
                reading: bool = True, file: bool = False) -> Path:
    """The path, read once from `value`: an os.PathLike whose __fspath__ raises, or returns bytes or a number, is
    refused in one line (they were the object's own exception, or a TypeError from pathlib), and so is a NUL
    character (a ValueError from the first system call). A `file` to write may not be spelled as a folder
    (`names_folder`)."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise ArgumentError(f"{role} must be a path (str or os.PathLike), not {type(value).__name__}")
    try:
        text = os.fspath(value)
    except Exception as exc:  # the caller's own object
        raise ArgumentError(f"{role}: {type(value).__name__}.__fspath__ raised {type(exc).__name__}: {exc}",
                            fix="give a str or a pathlib.Path") from None
    if not isinstance(text, str):
        raise ArgumentError(f"{role}: {type(value).__name__}.__fspath__ returned {type(text).__name__}, not str",
                            fix="give a str or a pathlib.Path")
    text = str.__str__(text)  # a plain str: a subclass's own __len__, __eq__ or __hash__ (raising) ran on every use
    blank = blank_path(text, names, reading)
    if blank:
        raise error(blank, fix=fix)
    if "\x00" in text:
        raise error(f"{role}'s path {text!r} holds a NUL character, which no file name can", fix=fix)
    if file and names_folder(text):
        raise error(f"{role} names a folder, not a file", path=text, fix=fix)
    if reading and (as_folder := file_as_folder(text)):
        raise error(as_folder, fix="drop what follows the file's name")
    longest = max(map(len, os.fsencode(text).split(b"/")))
    if longest > NAME_MAX or len(os.fsencode(text)) >= PATH_MAX:  # the API raised the system's OSError (ENAMETOOLONG)
        what = f"a name of {longest:,} bytes" if longest > NAME_MAX else f"{len(os.fsencode(text)):,} bytes"
        head = f"no such {role.removeprefix('the ')}" if reading else f"cannot write {role}"
        raise error(f"{head} (File name too long: {what}; the system takes at most {NAME_MAX} a name, "
                    f"{PATH_MAX - 1:,} in all): {quoted(printable(text))}", fix="use a shorter path")
    return Path(text)


def blank_path(text: str, names: str, reading: bool) -> str | None:
    """Why `text` names `names` (e.g. "no file to write"), or None: an empty path is the current folder to Python
    (`-o "$OUT"` with OUT unset wrote there). A name of only blanks is a file that exists to read, or else a slip:
    refused as an output, where nobody would see it in a listing."""
    if not text:
        return f"an empty path names {names}"
    if not text.strip() and not (reading and os.path.lexists(text)):
        return f"a path of only blanks ({text!r}) names {names}"
    return None


def present(path: Path) -> bool:
    """Whether something is at `path` (a file, a folder, a symlink even dangling); False for a name too long for
    the system, where nothing can be (a 255-byte output's `<name>.data` was an error about a file never asked for)."""
    try:
        return path.exists() or path.is_symlink()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same (device, inode) when both exist, else the same resolved path."""
    return not set(_identities(a)).isdisjoint(_identities(b))


def _identities(path: Path) -> list:
    """What names a file, as keys: the (device, inode) of an existing one, and its resolved path (a symlink loop,
    which names no file, its absolute path)."""
    keys: list = []
    try:
        status = os.stat(path)
        keys.append((status.st_dev, status.st_ino))
    except (OSError, ValueError):
        pass
    try:
        resolved = str(Path(path).resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        resolved = os.path.abspath(path)
    keys.append(resolved)
    try:  # the folder's entry: a file not written yet has no inode, and its folder seen through a bind mount (or
        folder = os.stat(os.path.dirname(resolved) or "/")  # two) resolves to another path: `bench --json d/b.png
        keys.append(("entry", folder.st_dev, folder.st_ino, os.path.basename(resolved)))  # --chart bind/b.png`
    except (OSError, ValueError):  # wrote the report over the chart (round 53)
        pass
    return keys


class InputFiles:
    """A command's inputs, indexed once: whether an output names one of them (as `same_file` judges) is a lookup,
    not a pass over them all (`run` on 3,000 images checked each of its 6,000 results against every image: 18
    million comparisons, minutes before anything was written)."""

    def __init__(self, inputs: Iterable[Path | str | None]):
        self.index: dict = {}
        for source in inputs:
            if source is not None:
                for key in _identities(Path(source)):
                    self.index.setdefault(key, source)

    def find(self, out: Path) -> Path | str | None:
        """The input that `out` names, if any."""
        return next((self.index[key] for key in _identities(out) if key in self.index), None)


def refuse_overwriting(out: Path, inputs: Iterable[Path | str | None] | InputFiles) -> None:
    """Refuse an output that is one of the command's inputs, or an existing file that is not a regular file."""
    out = Path(out)
    source = (inputs if isinstance(inputs, InputFiles) else InputFiles(inputs)).find(out)
    if source is not None:
        raise GraphsurgeryError(f"the output would overwrite an input of this command ({source})", path=out,
                                fix="choose another output path: inputs are never modified")
    if out.exists() and not out.is_file() and not out.is_dir():
        raise GraphsurgeryError("the output exists and is not a regular file (a device, FIFO or socket)", path=out,
                                fix="choose a path that is a regular file or does not exist yet")
    if out.is_symlink() and Path(os.readlink(out)).parts[:2] == ("/", "proc"):  # /dev/stdout → /proc/self/fd/1
        raise GraphsurgeryError("the output is a link to an open file of the process (as /dev/stdout is), which "
                                "would be replaced by a file", path=out, fix="give the path of a file to write")


def check_report_path(out: Path, inputs: Iterable[Path | str | None] | InputFiles) -> None:
    """Before the work, what `write_text_atomically` refuses after it (`verify --json`, `bench --json`): an input, a
    folder, a folder that does not exist or is a file (the whole report was printed, then the error: many lines,
    exit 2, after the timing or the runs)."""
    out = Path(out)
    _refuse_as_report(out, inputs)
    check_output_folder(out)
    check_folder_writable(out)


def check_folder_writable(out: Path) -> None:
    """Before the work, the folder of a report or chart takes files (round 53: `bench --json`, `--chart`, `verify
    --json` and `eval-coco --json` into a read-only file system, or a folder the user may not write, ran the whole
    timing or comparison, printed it, and then said "cannot write the file")."""
    if not os.access(out.parent, os.W_OK):
        raise GraphsurgeryError("the output folder is not writable" + (" (a read-only file system)"
                                                                       if _read_only_mount(out.parent) else ""),
                                path=out, fix="choose a writable folder")
    _refuse_append_only(out.parent, out, _uncreatable)
    refuse_another_users(out)
    if (kind := _unreplaceable(out)) is not None:  # `chattr +i`: refused at the rename, root too, after the work
        raise GraphsurgeryError(f"the output is {kind} (chattr), so no command may replace it", path=out,
                                fix="choose another path, or `chattr -i -a` the file first")


def refuse_another_users(out: Path) -> None:
    """Refuse, before the work, an output that this user may not replace because its folder is sticky (/tmp's mode
    1777) and neither the file nor the folder is theirs: `bench --json` over another user's report there ran the
    whole timing (`run -o` every image) and then said "Operation not permitted" (round 62; os.access sees only the
    folder's write permission)."""
    try:
        folder, target = os.stat(out.parent), os.lstat(out)
    except OSError:
        return
    if folder.st_mode & stat.S_ISVTX and os.geteuid() not in (0, folder.st_uid, target.st_uid):
        raise GraphsurgeryError("the output is another user's file in a sticky folder (as /tmp is), where only its "
                                "owner may replace it", path=out, fix="choose another path")


#: FS_IOC_GETFLAGS, and its immutable and append-only flags (linux/fs.h)
_GETFLAGS, _IMMUTABLE, _APPEND = 0x80086601, 0x10, 0x20


def _unreplaceable(path: Path) -> str | None:
    """"an immutable file" or "an append-only file" when the regular file at `path` is one (a rename over it is
    refused, whoever runs the command); None otherwise, or where the file system keeps no such flags."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    flags = _inode_flags(fd)
    return "an immutable file" if flags & _IMMUTABLE else "an append-only file" if flags & _APPEND else None


def _refuse_append_only(folder: Path, out: Path, uncreatable: Callable[[OSError, Path], GraphsurgeryError]) -> None:
    """Refuse a `folder` made append-only (`chattr +a`: files can be made in it, none removed or renamed away, root
    included): each command wrote its output there and left its scratch folder, which no later one could remove,
    and a replacement (--force) was refused after the work (round 55)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    if _inode_flags(fd) & _APPEND:
        raise uncreatable(OSError(errno.EPERM, "it is append-only (chattr +a): nothing made there can be removed, "
                                               "the command's scratch folder included"), out)


def _refuse_append_only_tmpdir(uncreatable: Callable[[OSError, Path], GraphsurgeryError]) -> None:
    """Refuse an append-only temporary folder before Python's tempfile first looks for its folder: it writes a
    probe file in each candidate and removes it, which such a folder refuses, so every command left a 4-byte file
    there and went on in the next without a word (round 55's leftover). tempfile's own candidates, in its order:
    with $TMPDIR, $TEMP and $TMP unset, an append-only /tmp was probed the same way (round 67)."""
    if tempfile.tempdir is not None:  # chosen already: no probe again
        return
    for folder in tempfile._candidate_tempdir_list():  # $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp, the cwd
        _refuse_append_only(Path(folder), Path(folder), uncreatable)
        if os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
            return  # the one tempfile takes


def _inode_flags(fd: int) -> int:
    """The inode flags (FS_IOC_GETFLAGS) of the file open as `fd`, which is closed; 0 where the file system keeps
    none (ENOTTY)."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, _GETFLAGS, bytes(8))[:4], sys.byteorder)
    except OSError:
        return 0
    finally:
        os.close(fd)


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_output_folder(out: Path) -> None:
    """The folder the output `out` goes in is there and is a folder: not a file (the fix was "create plain.onnx
    first", of a file that exists), not missing, not a symbolic link to nowhere (a loop was "create loopa first",
    round 35)."""
    if out.parent.exists() and not out.parent.is_dir():
        raise GraphsurgeryError(f"{out.parent} is a file, not a folder", path=out, fix="choose an output in a folder")
    if out.parent.is_symlink() and not out.parent.exists():
        raise GraphsurgeryError(f"the output folder {out.parent} is a symbolic link to nothing (a loop, or its "
                                "target is gone)", path=out, fix="point the link at a folder, or choose another output")
    if not out.parent.is_dir():
        raise GraphsurgeryError("the output folder does not exist", path=out, fix=f"create {out.parent} first")


def write_text_atomically(path: Path, text: str, inputs: Iterable[Path | str | None] = ()) -> Path:
    """Write `text` to `path` (not an input of the command) via a temporary file and a rename."""
    path = Path(path)
    _refuse_as_report(path, inputs)
    return write_atomically(path, lambda stream: stream.write(utf8_text(text).encode("utf-8")))


def _refuse_as_report(out: Path, inputs: Iterable[Path | str | None] | InputFiles) -> None:
    """What no report may replace: an input of the command, anything but a regular file, a folder."""
    refuse_overwriting(out, inputs)
    if out.is_dir():
        raise GraphsurgeryError("the output is a directory", path=out, fix="give a file name")
    refuse_symlink_loop(out)


def refuse_symlink_loop(out: Path) -> None:
    """Refuse an output (a report, `bench --chart`) that is a symlink loop: such a link "does not exist" and was
    replaced, while `apply -o loop` refuses it without --force, and reports and charts have no --force."""
    try:
        out.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise GraphsurgeryError("the output is a symlink loop (a link that leads back to itself), not a regular "
                                    "file", path=out, fix="remove the link, or choose another path") from None


def _umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, write: Callable[[BinaryIO], object], what: str = "the file") -> Path:
    """Call `write` on a binary stream to a file in a scratch folder beside `path` (`scratch_folder`), then rename
    it over `path`: the file appears whole or not at all. The scratch folder is removed on any error, Ctrl-C
    included, and after a kill (SIGKILL) by the next command writing there (a bare temporary file stayed for
    good)."""
    path = Path(path)

    def unwritable(exc: OSError, out: Path) -> GraphsurgeryError:
        return GraphsurgeryError(f"cannot write {what} ({exc.strerror or exc})", path=out,
                                 fix=write_fix(exc, "choose a writable path (the folder must exist)"))

    try:
        with scratch_folder(path.parent, scratch_prefix(path), path, unwritable) as staging:
            with open(staging / path.name, "xb") as stream:  # the umask's mode (mkstemp's 0600 hid reports)
                write(stream)
            os.replace(staging / path.name, path)
    except OSError as exc:
        raise unwritable(exc, path) from None
    return path
