"""The output folder of `make demo` and `make detect`: theirs to replace files in, and nobody else's.

The examples replace their own file names (`hrnet_w32.onnx`, `astronaut_boxes.jpg`) on every run without asking;
`--out ~/models` replaced a user's own model of that name. A folder is theirs when it is new or empty, or holds
the marker an earlier run left; a folder that holds one of those names without the marker is refused before
anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError
from graphsurgery.safeio import folder_fix, output_path, present, utf8_path, write_text_atomically

#: the file that marks a folder as an example's own output
MARKER = ".graphsurgery-example"
#: the repository's `out/`, where the examples write by default: theirs whatever it holds (runs from before the
#: marker left their files there without it, and `make demo` refused its own folder)
OWN = Path(__file__).resolve().parent.parent / "out"


def claim(out, example: str, names: Iterable[str], given: str = "with --out") -> Path:
    """`out`, made if need be and marked as `example`'s; refused (one line) when it is a file, cannot be made, or
    holds any of `names` without the marker (a file the example did not write). `given` says in the fix how the
    user names the folder (synthetic_coco.py takes it as an argument, not --out)."""
    out = utf8_path(output_path(out, "folder"), "output folder")
    if present(out) and not out.is_dir():
        raise GraphsurgeryError("the output folder is a file", path=out, fix=f"give a folder {given}")
    if not (out / MARKER).is_file() and not out.resolve().is_relative_to(OWN):
        found = [name for name in names if present(out / name)]
        if found:
            raise GraphsurgeryError(f"the output folder holds {found[0]}, which {example} did not write and would "
                                    "replace", path=out, fix=f"give a new or empty folder {given}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MARKER).is_file():
            write_text_atomically(out / MARKER, f"output of {example}: its files here are replaced on every run\n")
    except OSError as exc:
        raise GraphsurgeryError(f"cannot create the output folder ({exc.strerror or exc})", path=out,
                                fix=folder_fix(exc)) from None
    return out
