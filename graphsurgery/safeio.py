"""Reading small input files safely, and writing results without ever touching what a command reads.

Inputs (recipes, boxes, annotations) must be regular files and are size-capped before they are read: a FIFO would
block forever, `/dev/zero` would fill the memory.

Every command knows its inputs (model and its external data, recipe, images, boxes, annotations, reference). An
output path that names one of them — by another spelling, a symlink or a hard link — is refused, `--force` or not;
so is an existing output that is not a regular file (a device node, a FIFO, a socket). Reports are written to a
temporary file beside the target and renamed over it: they appear whole or not at all.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from graphsurgery.errors import GraphsurgeryError

#: What a path given by the user can make any file call raise: a name too long, a symlink loop.
PATH_ERRORS = (errno.ENAMETOOLONG, errno.ELOOP)

#: The file in a scratch folder that names the process that made it: a folder whose process is gone was left by
#: a kill (SIGKILL, a power cut) and is removed by the next run that writes there.
OWNER = ".graphsurgery-owner"


@contextmanager
def scratch_folder(parent: Path, prefix: str, out: Path) -> Iterator[Path]:
    """A new folder in `parent`, for the output `out`, removed on exit (also on Ctrl-C and SIGTERM, which unwind
    like exceptions): results are written there, then moved into place with os.replace, so they appear whole or
    not at all. Scratch folders of the same prefix that a dead process left behind are removed first, and said so
    on stderr."""
    _remove_stale(parent, prefix)
    try:
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError as exc:
        raise _uncreatable(exc, out) from None
    try:
        try:
            (staging / OWNER).write_text(str(os.getpid()))
        except OSError as exc:  # a full disk: the error names no file, and the CLI took it for standard output's
            raise _uncreatable(exc, out) from None
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_folder(outdir: Path, prefix: str,
                  before_moving: Callable[[list[Path]], None] = lambda produced: None) -> Iterator[Path]:
    """A scratch folder (`scratch_folder`, beside `outdir` or its nearest existing parent) whose files move into
    `outdir`, made if need be, only when the block succeeds, and all together (`signals_held`): a set of results
    (`run -o`, `eval-coco --results`) is never left half new and half old. `before_moving` gets the files produced
    and may refuse them; then nothing moves."""
    anchor = outdir
    while not anchor.exists():
        anchor = anchor.parent
    with scratch_folder(anchor, prefix, outdir) as stage:
        yield stage
        produced = sorted(path for path in stage.iterdir() if path.name != OWNER)
        before_moving(produced)
        with signals_held():  # all of the results, or (interrupted before this) none of them and no folder
            outdir.mkdir(parents=True, exist_ok=True)
            for path in produced:
                os.replace(path, outdir / path.name)


def _uncreatable(exc: OSError, out: Path) -> GraphsurgeryError:
    fix = "free disk space or choose another folder" if exc.errno == errno.ENOSPC else "choose a writable folder"
    return GraphsurgeryError(f"cannot create files in the output folder ({exc.strerror or exc})", path=out, fix=fix)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while a few renames put one output in place (a model and its data file, `run`'s
    results), then acted on: a signal between two renames left a data file without its model, or half of `run`'s
    results. Outside the main thread (an embedding application) signals are not ours to hold."""
    caught: list[int] = []
    previous = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(number) is not None:  # None: a handler not set from Python, which cannot be restored
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
    for folder in parent.glob(f"{prefix}*"):
        try:
            pid = int((folder / OWNER).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        sys.stderr.write(f"note: removed {folder}, left behind by process {pid}, which was killed\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
        with path.open("rb") as stream:
            data = stream.read(limit + 1)  # never more: a larger file is refused on what was read
    except OSError as exc:
        raise error(f"cannot read the {what} ({exc.strerror})", path=path, fix="check its permissions") from None
    if len(data) > limit:
        raise error(f"the {what} is larger than {limit:,} bytes", path=path, fix="check the path")
    return data


def inside(folder: Path, name: str, what: str, source: Path | str) -> Path:
    """`folder / name` when it stays inside `folder` (after resolving `..` and symlinks); a file name from a data file
    (`source`) must not reach files elsewhere (`../secret.jpg`, an absolute path)."""
    if "\x00" in str(name):  # no file has such a name (a ValueError from the system calls: an internal error)
        raise GraphsurgeryError(f"{what} {name!r} holds a NUL character, which no file name can", path=source,
                                fix=f"give the file name of an image in {folder}")
    path = (Path(folder) / name).resolve()
    root = Path(folder).resolve()
    if not str(name) or Path(name).is_absolute() or root not in path.parents:
        raise GraphsurgeryError(f"{what} {name!r} is outside {folder}", path=source,
                                fix=f"name files relative to {folder}, without '..' or absolute paths")
    return path


def utf8_path(path: Path, what: str) -> Path:
    """`path`, when it is UTF-8 text. Linux allows any byte in a name and Python keeps an undecodable one as a lone
    surrogate (b'\\xff' as '\\udcff'), which the C++ libraries cannot take: onnx's checker raised a TypeError
    (an internal error) on such a model or output path."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise GraphsurgeryError(f"the {what}'s path is not UTF-8 text (it holds a byte such as \\xff that onnx "
                                "cannot take)", path=path, fix="rename the file (or folder) to UTF-8") from None
    return path


def output_path(value, what: str = "file") -> Path:
    """An output path given to the Python API, held to what the CLI's options take: a str or os.PathLike that is
    not empty (Path("") is the current folder: `run(..., "")` wrote its results there)."""
    return _given_path(value, f"the output {what}", f"no {what} to write{' into' if what == 'folder' else ''}",
                       f"give a {what} name")


def input_path(value, what: str, error: type[GraphsurgeryError] = GraphsurgeryError) -> Path:
    """An input path (of the `what`, e.g. "model file") given to the Python API, held to what the CLI's arguments
    take: a str or os.PathLike that is not empty (`inspect("")` said ".: is a directory, not an ONNX file")."""
    return _given_path(value, f"the {what}", f"no {what}", f"give the path of the {what}", error)


def _given_path(value, role: str, names: str, fix: str, error: type[GraphsurgeryError] = GraphsurgeryError) -> Path:
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{role} must be a path (str or os.PathLike), not {type(value).__name__}")
    if not os.fspath(value).strip():
        raise error(f"an empty path names {names}", fix=fix)
    return Path(value)


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
        keys.append(str(Path(path).resolve()))
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        keys.append(os.path.abspath(path))
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


def write_text_atomically(path: Path, text: str, inputs: Iterable[Path | str | None] = ()) -> Path:
    """Write `text` to `path` (not an input of the command) via a temporary file and a rename."""
    path = Path(path)
    refuse_overwriting(path, inputs)
    if path.is_dir():
        raise GraphsurgeryError("the output is a directory", path=path, fix="give a file name")
    return write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


def _umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, write: Callable[[BinaryIO], object], what: str = "the file") -> Path:
    """Call `write` on a binary stream to a temporary file beside `path`, then rename it over `path`: the file
    appears whole or not at all (the temporary file is removed on any error, Ctrl-C included)."""
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        try:
            os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would make reports unreadable to others
            with os.fdopen(handle, "wb") as stream:
                write(stream)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError as exc:
        raise GraphsurgeryError(f"cannot write {what} ({exc.strerror or exc})", path=path,
                                fix="choose a writable path (the folder must exist)") from None
    return path
