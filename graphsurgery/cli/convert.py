"""`graphsurgery convert`: ONNX → OpenVINO IR, as a file pair or an OpenVINO Model Server repository."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from graphsurgery.cli.options import existing_file, force_option, json_flag, output_file, output_folder
from graphsurgery.cli.tables import shown
from graphsurgery.errors import GraphsurgeryError, printable_json
from graphsurgery.machine import machine

if TYPE_CHECKING:
    from graphsurgery.irconvert import ConvertResult


@click.command("convert")
@click.argument("model", type=existing_file)
@click.option("-o", "--output", type=output_file, help="IR file to write [default: <model>.xml].")
@click.option("--fp16", is_flag=True, help="Store the weights as FP16 (half the size; ~1 % of HRNet argmaxes move). "
              "Default: FP32.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D1,D2,...",
              help="Fix an input's dynamic dims, e.g. input=1,256,192,3 (? or -1 keeps a dim as it is). Repeatable.")
@click.option("--ovms", "ovms_dir", type=output_folder,
              help="Write an OpenVINO Model Server repository instead: DIR/<name>/1/model.xml.")
@click.option(
    "--name", help="Model name in the --ovms repository [default: the model's file name up to its first dot]."
)
@click.option("--int8", is_flag=True, help="Quantize the network to int8 (NNCF post-training quantization; the "
              "spliced nodes stay float). Needs --calibration or --calibration-random.")
@click.option("--calibration", "calibration_dir", type=existing_file,
              help="--int8: a folder of images, cropped as the patched model's caller would.")
@click.option("--boxes", type=existing_file, help="--int8 --calibration: person boxes per image (as for verify); with "
              "--annotations, person detections as eval-coco --boxes takes them.")
@click.option("--calibration-random", type=int, metavar="N", help="--int8: N random caller inputs instead.")
@click.option("--max-drop", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="X",
              help="--int8: keep layers in float (most sensitive first) until at least 1 - X of the joints stay "
                   "within one heatmap cell of the f32 model's, on the calibration samples; with --annotations, "
                   "until the COCO keypoint AP is at most X below f32's (absolute, e.g. 0.01).")
@click.option("--annotations", type=existing_file, metavar="FILE",
              help="--int8 --calibration DIR --max-drop X: COCO keypoint annotations of the images in DIR; the "
                   "metric becomes COCO keypoint AP (pycocotools, as eval-coco computes it), calibrated and "
                   "validated on eval-coco's crops of the annotated people.")
@click.option("--max-reverts", type=click.IntRange(min=1), metavar="N",
              help="--max-drop: stop after N layers went back to float, the drop met or not.")
@click.option("--ranking-samples", type=click.IntRange(min=1), metavar="N",
              help="--max-drop: rank the layers on the first N samples [default: all]. Ranking reverts and "
                   "validates every layer (again after a revert that did not help): ~20 min on HRNet-W32 with 30 "
                   "samples on 2 cores.")
@force_option
@json_flag
def convert_command(model: Path, output: Path | None, fp16: bool, input_shapes: tuple[str, ...], ovms_dir: Path | None,
                    name: str | None, int8: bool, calibration_dir: Path | None, boxes: Path | None,
                    calibration_random: int | None, max_drop: float | None, annotations: Path | None,
                    max_reverts: int | None, ranking_samples: int | None, force: bool,
                    as_json: bool):
    """Convert the ONNX MODEL (plain or patched) to OpenVINO IR (.xml + .bin), keeping its input/output names."""
    if ovms_dir is not None and output is not None:
        raise GraphsurgeryError("-o and --ovms both say where to write", fix="give only one of them")
    if name is not None and ovms_dir is None:
        raise GraphsurgeryError(
            "--name is the model's name in an --ovms repository", fix="add --ovms DIR, or drop --name"
        )
    from graphsurgery.irconvert import convert_ir, ovms_path, parse_input_shape

    parsed = [parse_input_shape(text) for text in input_shapes]
    names = [input_name for input_name, _ in parsed]
    twice = [input_name for input_name in dict.fromkeys(names) if names.count(input_name) > 1]
    if twice:  # the last one would win silently
        raise GraphsurgeryError(f"--input-shape names {twice[0]!r} twice", fix=f"give one --input-shape for "
                                                                              f"{twice[0]!r}")
    shapes = dict(parsed)
    # `--name ""` (NAME unset) is refused by ovms_path, not replaced by the default
    target = ovms_path(ovms_dir, name if name is not None else model.stem.split(".")[0]) if ovms_dir is not None else (
        output or model.with_suffix(".xml"))
    result = convert_ir(model, target, fp16, shapes, int8=int8, calibration=calibration_dir, boxes=boxes,
                        calibration_random=calibration_random, max_drop=max_drop, max_reverts=max_reverts,
                        ranking_samples=ranking_samples, annotations=annotations,
                        force=force, make_parents=ovms_dir is not None)
    if as_json:
        click.echo(printable_json(result.to_dict(), indent=2))
    else:
        _show(result)
        if ovms_dir is not None:
            Console().print(shown(f"serve it with: ovms --model_name {target.parent.parent.name} --model_path "
                                  f"{target.parent.parent}"), highlight=False)
    if result.int8 and result.int8.drop_met is False:  # written, as NNCF left it, but not what was asked: say so
        sys.exit(1)


def _show(result: ConvertResult) -> None:
    """The table-free report: what was written and, for int8, its price and speed."""
    from graphsurgery.quantize import SPEED_ROUNDS

    console = Console()
    for note in result.notes:
        console.print(shown(f"note: {note}"))
    console.print(shown(f"wrote {', '.join(map(str, result.written))} ({result.weights} weights)"), highlight=False)
    facts = result.int8
    if facts:
        console.print(shown(f"calibrated on {facts.calibration}"))
        console.print(shown(f"{facts.quantized_activations} quantized activations; int8 ran {facts.speedup:.2f}× "
                            f"as fast as f32 here (median of {SPEED_ROUNDS} interleaved runs, {machine()['cpu']})"))
        for output_name, numbers in facts.vs_f32.items():
            console.print(shown(f"int8 vs f32 on those samples: {output_name}: " + ", ".join(
                f"{key.replace('_', ' ')} {value:.4g}" for key, value in numbers.items())))
        if facts.control:
            console.print(shown(facts.control_summary()))


COMMANDS = (convert_command,)
