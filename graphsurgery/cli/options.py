"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

from graphsurgery.defaults import MAX_THREADS
from graphsurgery.safeio import blank_path, file_as_folder, names_folder


class _GivenPath(click.Path):
    """A path the user must spell out: an empty one (`-o "$OUT"` with OUT unset) is refused (`safeio.blank_path`):
    Path("") is the current folder ("." was written into, or read as ".: is a directory"). `names` and `fix` make
    the message."""

    names, fix, reading = "no file or folder to read", "give its path", True

    def convert(self, value, param, ctx):
        blank = isinstance(value, str) and blank_path(value, self.names, self.reading)
        if blank:
            self.fail(f"{blank}; {self.fix}", param, ctx)
        if value == "-" and not self.reading:  # `--json -` wrote a file named "-" where stdout was meant (round 44)
            self.fail("'-' would be a file named '-': outputs are written to files, not to standard output; "
                      f"{self.fix} (./- for that very name)", param, ctx)
        return super().convert(value, param, ctx)


class InputPath(_GivenPath):
    """A file or folder to read; its existence is checked by the loaders, with their messages."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, dir_okay=True)

    def convert(self, value, param, ctx):
        as_folder = isinstance(value, str) and file_as_folder(value)
        if as_folder:
            self.fail(f"{as_folder}; drop what follows the file's name", param, ctx)
        return super().convert(value, param, ctx)


existing_file = InputPath()


class OutputFile(_GivenPath):
    """A file to write. `out/` and `out/.` name a folder: pathlib drops the slash and the '.', and a file `out` would
    be written instead (`safeio.names_folder`)."""

    names, fix, reading = "no file to write", "give a file name", False

    def __init__(self) -> None:
        super().__init__(path_type=Path)  # an existing folder is refused by the writers, naming the file

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "/" in value and names_folder(value):  # `.` alone: said by the writers
            self.fail(f"{value!r} ends in '/', '/.' or '/..', so it names a folder, not a file to write; give a file "
                      "name", param, ctx)
        return super().convert(value, param, ctx)


output_file = OutputFile()


class OutputFolder(_GivenPath):
    """A folder to write into (created if missing). An existing file is left to the writers to refuse, naming it
    (`file_okay=False`: click refuses it)."""

    names, fix, reading = "no folder to write into", "give a folder name", False

    def __init__(self, file_okay: bool = True) -> None:
        super().__init__(path_type=Path, file_okay=file_okay)


output_folder = OutputFolder()

force_option = click.option("--force", is_flag=True, help="Replace an existing output.")
#: apply's --force does more than replace: the README's "Choose a recipe" and SECURITY.md say so, and so does its help
apply_force_option = click.option("--force", is_flag=True,
                                  help="Replace an existing output; apply a recipe again; apply input steps the model "
                                       "already does itself (a note says so; verify the result with --patched).")
json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _backend_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from graphsurgery.defaults import BACKENDS

    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown:
        raise click.BadParameter(f"{unknown[0]!r} is not a backend" if unknown else "no backend given; "
                                 f"choose from {','.join(BACKENDS)}")
    return names


backends_option = click.option("--backends", default="onnxruntime,openvino", show_default=True, callback=_backend_list,
                               metavar="NAME[,NAME]", help="Comma-separated backends to run on.")
patched_option = click.option("--patched", type=existing_file, help="The patched model to check (.onnx, or an "
                              "OpenVINO .xml with --backends openvino) [default: RECIPE applied to the plain model in "
                              "a temporary folder].")
json_report_option = click.option("--json", "json_report", type=output_file,
                                  metavar="REPORT", help="Also write the report as JSON to this file.")
upgrade_opset_option = click.option("--upgrade-opset", is_flag=True,
                                    help="Convert the model to the opset a step needs, if newer.")
threads_option = click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS),
                              help=f"Inference threads (at most {MAX_THREADS}, 4 per CPU) [default: the backend's "
                                   "choice, or every usable CPU for bench].")
seed_option = click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True,
                           help="Seed of the random crops and boxes.")


def refuse_repeats(command: click.Command, ctx: click.Context, args: list[str]) -> None:
    """Refuse an option given twice that keeps one value: click keeps the last silently, and `--patched a.onnx …
    --patched b.onnx` checked b alone (round 89's leftover: `chain --check` twice). Options that collect
    (`--tolerance`), count, or are a plain flag (the same answer twice) may repeat; an on/off pair may not. Asked
    for help, the command shows it (round 91: `verify -h --random 1 --random 2` was refused)."""
    options = args[:args.index("--")] if "--" in args else args
    if any(arg in ctx.help_option_names for arg in options):
        return
    try:
        _, _, order = command.make_parser(ctx).parse_args(args=list(args))
    except click.UsageError:  # the command's own parse says what is wrong, in its words
        return
    seen: set[str] = set()
    for param in order:
        if not isinstance(param, click.Option) or param.multiple or param.count or (
                param.is_flag and not param.secondary_opts):
            continue
        if param.name in seen:
            raise click.UsageError(f"{'/'.join(param.opts + param.secondary_opts)} is given more than once, and only "
                                   "one value is used; give it once", ctx)
        seen.add(param.name)
