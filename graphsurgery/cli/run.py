"""`graphsurgery run`: pose on photos with a patched model, labelled with backend and precision."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from graphsurgery.cli.options import existing_file, output_folder, threads_option
from graphsurgery.cli.tables import print_table, printable, progress_bar, shown
from graphsurgery.defaults import BACKENDS, DEFAULT_BATCH, DEFAULT_MIN_SCORE, PRECISIONS


@click.command("run")
@click.argument("model", type=existing_file)
@click.argument("images", nargs=-1, required=True, type=existing_file)
@click.option("-o", "--output", "outdir", required=True, type=output_folder,
              help="Folder for keypoints.json, run.json and the debug images (created if missing).")
@click.option("--backend", type=click.Choice(BACKENDS), default="openvino", show_default=True)
@click.option("--boxes", type=existing_file, help="Person boxes: {file_name: [[x, y, w, h], ...]} or a COCO annotation "
              "file [default: the whole image is one person].")
@click.option("--precision", type=click.Choice(PRECISIONS), default="f32", show_default=True,
              help="Inference precision (OpenVINO only; the CPU may run f32 anyway, and run.json says so).")
@threads_option
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
              help="Crops per model call (dynamic-batch models; a static batch is used as it is).")
@click.option("--min-score", type=float, default=DEFAULT_MIN_SCORE, show_default=True,
              help="Draw only joints scoring above this (HRNet heatmap peaks are ~0–1).")
def run_command(model: Path, images: tuple[Path, ...], outdir: Path, backend: str, boxes: Path | None, precision: str,
                threads: int | None, batch: int, min_score: float):
    """Estimate poses with the patched MODEL (.onnx or OpenVINO .xml) on IMAGES (JPEG/PNG files or folders).

    Each person box (or the whole image) is cropped like the HRNet authors do; keypoints are written as COCO results
    (OUTDIR/keypoints.json), with OUTDIR/run.json labelling backend and precision, and debug images
    OUTDIR/<stem>_pose.jpg (skeleton) and OUTDIR/<stem>_heatmaps.jpg (heatmaps, when the model keeps them).
    Latency is the model's time per image (all its crops), without decoding or drawing.
    """
    from graphsurgery.images import list_images
    from graphsurgery.pose import run_pose
    from graphsurgery.runners import onnxruntime_alone

    paths = list_images(list(images))
    console = Console()
    with progress_bar(len(paths) > 1) as progress, onnxruntime_alone("--backend onnxruntime"):
        task = progress.add_task("pose", total=len(paths))
        summary = run_pose(model, paths, outdir, backend=backend, boxes=boxes, precision=precision, threads=threads,
                           batch=batch, min_score=min_score,
                           on_image=lambda entry: progress.update(task, advance=1,
                                                                  description=printable(entry.file_name)))
    title = f"{model.name} · {summary.label}"
    table = Table("image", "persons", "latency ms", title=shown(title), title_justify="left", min_width=len(title))
    for entry in summary.images:
        table.add_row(shown(entry.file_name), str(entry.persons), f"{entry.latency_ms:.1f}")
    print_table(console, table)
    for note in ([summary.precision_note] if summary.precision_note else []) + summary.notes:
        console.print(f"note: {printable(note)}", highlight=False, markup=False)
    console.print(shown(f"wrote {summary.keypoints}, {Path(summary.keypoints).with_name('run.json')} and debug "
                        f"images in {outdir}"), highlight=False, soft_wrap=True)


COMMANDS = (run_command,)
