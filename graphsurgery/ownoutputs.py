"""Which files in an output folder a command may replace: its own earlier outputs, as the record it left there
lists them (`run -o`: run.json; `eval-coco --results`: eval-coco.json). Any other file of an output's name is
somebody else's (a photo named like a debug image, another tool's results) and is refused, not replaced."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError
from graphsurgery.safeio import InputFiles, read_small_file, refuse_another_users, refuse_overwriting


def earlier_outputs(record: Path, max_bytes: int, names_in: Callable[[object], Iterable[str]]) -> set[str]:
    """The file names (the record's own among them) that the run which left `record` wrote beside it, as
    `names_in` reads them from its JSON; none when there is no such record or it is not one of ours (not a regular
    file, too large, not JSON, not of the record's shape)."""
    if not record.is_file() or record.is_symlink():
        return set()
    try:
        content = json.loads(read_small_file(record, max_bytes, record.name).decode("utf-8"))
        return {record.name, *(Path(name).name for name in names_in(content))}
    except (GraphsurgeryError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError,
            AttributeError):
        return set()


def carried_forward(outdir: Path, earlier: set[str], written: Iterable[str]) -> list[str]:
    """The `earlier` outputs still in `outdir` that this run does not rewrite. Its record lists them too, so that a
    later run may still replace them (`run a.jpg b.jpg`, then `run a.jpg`, then `run b.jpg` into one folder: b's
    debug images were refused as nobody's)."""
    return sorted(name for name in earlier - set(written)
                  if (outdir / name).is_file() and not (outdir / name).is_symlink())


def refresh_record(produced: Iterable[Path], record: str, key: str, outdir: Path, earlier: set[str],
                   indent: int | None = None) -> None:
    """Rewrite the staged record (the file named `record` among `produced`) so that its `key` lists the earlier
    outputs still in `outdir` as the folder is when the files move (`carried_forward`; call it under
    `safeio.placing`'s lock, from `staged_folder`'s `before_moving`). Computed before the lock, a command that
    placed its files meanwhile (two runs into one folder at once) was missing from it: its files stayed,
    listed nowhere, and the next run refused them as nobody's."""
    produced = list(produced)
    path = next((path for path in produced if path.name == record), None)
    if path is None:  # no record staged: nothing to refresh
        return
    content = json.loads(path.read_text(encoding="utf-8"))
    content[key] = carried_forward(outdir, earlier, [path.name for path in produced])
    path.write_text(json.dumps(content, indent=indent), encoding="utf-8")


def refuse_replacing(outdir: Path, names: Iterable[str], inputs: InputFiles, earlier: set[str], fix: str) -> None:
    """Refuse outputs (file names in `outdir`) that would land on one of the command's inputs, on a symlink, or on
    a file that is not among the `earlier` outputs."""
    for name in names:
        refuse_overwriting(outdir / name, inputs)
        refuse_another_users(outdir / name)
        if (outdir / name).is_symlink() or ((outdir / name).exists() and name not in earlier):
            raise GraphsurgeryError("a file of that name is already there and is not the output of an earlier run",
                                    path=outdir / name, fix=fix)
