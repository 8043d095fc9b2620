"""`graphsurgery convert`: ONNX → OpenVINO IR, as a file pair or an OpenVINO Model Server repository."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from graphsurgery.cli.options import existing_file, force_option, json_flag
from graphsurgery.cli.tables import shown
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.irconvert import convert, ovms_path, parse_input_shape
from graphsurgery.model import openvino_caveats
from graphsurgery.modelio import load_model


@click.command("convert")
@click.argument("model", type=existing_file)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="IR file to write [default: <model>.xml].")
@click.option("--fp16", is_flag=True, help="Store the weights as FP16 (half the size; ~1 % of HRNet argmaxes move). "
              "Default: FP32.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D1,D2,...",
              help="Fix an input's dynamic dims, e.g. input=1,256,192,3 (? keeps a dim as it is). Repeatable.")
@click.option("--ovms", "ovms_dir", type=click.Path(path_type=Path),
              help="Write an OpenVINO Model Server repository instead: DIR/<name>/1/model.xml.")
@click.option(
    "--name", help="Model name in the --ovms repository [default: the model's file name up to its first dot]."
)
@force_option
@json_flag
def convert_command(model: Path, output: Path | None, fp16: bool, input_shapes: tuple[str, ...], ovms_dir: Path | None,
                    name: str | None, force: bool, as_json: bool):
    """Convert the ONNX MODEL (plain or patched) to OpenVINO IR (.xml + .bin), keeping its input/output names."""
    if ovms_dir is not None and output is not None:
        raise GraphsurgeryError("-o and --ovms both say where to write", fix="give only one of them")
    if name is not None and ovms_dir is None:
        raise GraphsurgeryError(
            "--name is the model's name in an --ovms repository", fix="add --ovms DIR, or drop --name"
        )
    shapes = dict(parse_input_shape(text) for text in input_shapes)
    if ovms_dir is not None:
        target = ovms_path(ovms_dir, name or model.stem.split(".")[0])
        written = convert(model, target, fp16, shapes, force=force, make_parents=True)
    else:
        written = convert(model, output or model.with_suffix(".xml"), fp16, shapes, force=force)
    notes = openvino_caveats(load_model(model).proto)  # checked once already: this only parses it again
    if as_json:
        click.echo(json.dumps({"written": [str(p) for p in written], "weights": "FP16" if fp16 else "FP32",
                               "notes": notes}, indent=2, ensure_ascii=False))
        return
    console = Console()
    for note in notes:
        console.print(shown(f"note: {note}"))
    console.print(f"wrote {', '.join(map(str, written))} ({'FP16' if fp16 else 'FP32'} weights)", highlight=False)
    if ovms_dir is not None:
        console.print(
            f"serve it with: ovms --model_name {target.parent.parent.name} --model_path {target.parent.parent}",
            highlight=False,
        )


COMMANDS = (convert_command,)
