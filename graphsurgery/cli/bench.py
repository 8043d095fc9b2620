"""`graphsurgery bench`: the same model with its processing in numpy or in the graph, on each runtime, side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from graphsurgery.callables import source_file
from graphsurgery.cli.options import existing_file, output_file, threads_option, upgrade_opset_option
from graphsurgery.cli.tables import print_table, progress_bar, shown
from graphsurgery.defaults import MAX_ROUNDS, REFERENCE, TORCH_EXAMPLE, Settings
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.longrun import long_run_note
from graphsurgery.safeio import check_report_path, refuse_overwriting, same_file, write_text_atomically

if TYPE_CHECKING:
    from graphsurgery.benchmark import BenchResult


@click.command("bench")
@click.argument("recipe", type=existing_file)
@click.argument("model", type=existing_file)
@click.option("--iterations", default=Settings.iterations, show_default=True,
              type=click.IntRange(min=1, max=MAX_ROUNDS),
              help="Timed rounds; each runs every pipeline once, in random order.")
@click.option("--warmup", default=Settings.warmup, show_default=True, type=click.IntRange(min=0, max=MAX_ROUNDS),
              help="Untimed rounds first.")
@threads_option
@click.option("--batch", default=Settings.batch, show_default=True, type=click.IntRange(min=1),
              help="Crops per inference (a batch > 1 needs a model with a dynamic batch); person boxes per "
                   "image for a recipe that crops them in the graph.")
@click.option("--torch", "torch_spec", metavar="MODULE:FUNCTION",
              help=f"Also time PyTorch eager: FUNCTION() returns the nn.Module, e.g. {TORCH_EXAMPLE}.")
@click.option("--throughput", is_flag=True,
              help="Frames per second instead of latency (OpenVINO: parallel streams fed by async requests).")
@click.option("--int8", type=click.IntRange(1, 1000), metavar="N",
              help="Also time the patched model as an int8 IR (convert --int8) calibrated on N random caller inputs, "
                   "and report its agreement with f32. N is at most 1000, and fewer where the inputs are large (they "
                   "are made at once within 512 MiB: 455 for a 3 × 256 × 192 input).")
@click.option("--json", "json_path", type=output_file, help="Write the results here.")
@click.option("--chart", type=output_file, help="Write a PNG bar chart here.")
@upgrade_opset_option
def bench_command(recipe: Path, model: Path, iterations: int, warmup: int, threads: int | None, batch: int,
                  torch_spec: str | None, throughput: bool, int8: int | None, json_path: Path | None,
                  chart: Path | None, upgrade_opset: bool):
    """Time MODEL patched with RECIPE against the plain model + numpy processing, from the caller's crop to the
    recipe's outputs, on ONNX Runtime, OpenVINO (f32 and bf16) and optionally PyTorch, interleaved in one run."""
    settings = Settings(iterations, warmup, threads, batch, torch_spec, throughput, upgrade_opset, int8)
    from graphsurgery.chart import check_chart_path, write_chart
    from graphsurgery.modelio import model_paths
    from graphsurgery.runners import onnxruntime_alone

    # the --torch module's own file is read too: `--torch net:build --json net.py` overwrote the user's code
    inputs = [recipe, *model_paths(model), source_file(torch_spec)] if json_path or chart else []
    for written in (json_path, chart):  # checked before minutes of timing, not after
        if written is not None:
            refuse_overwriting(written, inputs)
    if json_path is not None:
        check_report_path(json_path, inputs)  # a missing folder or a folder was refused after the timing
    if chart is not None:
        check_chart_path(chart)
        if json_path is not None and same_file(chart, json_path):
            raise GraphsurgeryError("--chart and --json name the same file", path=chart,
                                    fix="give the chart its own file name, e.g. bench.png")
    with onnxruntime_alone("`verify --backends onnxruntime` or `run --backend onnxruntime`; bench times OpenVINO too"):
        result = _timed_with_progress(recipe, model, settings)
    console = Console()
    _print(console, result)
    if chart:  # first: drawing it takes a second (matplotlib), and a Ctrl-C or an error in it left the --json
        write_chart(result, chart)  # report of a command that then said "interrupted" (or failed)
    if json_path:
        write_text_atomically(json_path, json.dumps(result.to_dict(), indent=2) + "\n", inputs)
        console.print(shown(f"wrote {json_path}"), highlight=False)
    if chart:
        console.print(shown(f"wrote {chart}"), highlight=False)


def _timed_with_progress(recipe: Path, model: Path, settings: Settings) -> BenchResult:
    """`run_bench` with the rounds and the time left shown on a terminal, and, when the first round shows the whole
    run will take over a minute (`longrun`, shared with run and eval-coco), one line saying how long (logs too):
    with a model of 0.65 s a call, the default 55 rounds took 3 minutes without a word, and one of 25 s (under the
    time limit of each step) would take two hours."""
    with progress_bar() as progress:
        task = progress.add_task("timing rounds", total=None)
        started: list[float] = []

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)
            if done == 0:
                started[:] = [time.monotonic()]
            elif done == 1 and started:
                seconds = (time.monotonic() - started[0]) * total
                if note := long_run_note(seconds, f"{total:,} rounds (--iterations {settings.iterations:,}, "
                                                  f"--warmup {settings.warmup:,}) to time",
                                         f"the first round took {seconds / total * 1000:,.0f} ms",
                                         "fewer --iterations or --warmup"):
                    progress.console.print(note, highlight=False, markup=False, soft_wrap=True)

        from graphsurgery.benchmark import run_bench

        return run_bench(recipe, model, settings, advance)


def _print(console: Console, result: BenchResult) -> None:
    settings, machine = result.settings, result.machine
    console.print(Text.assemble(shown(result.model, "bold"), shown(
        f" with recipe {result.recipe}: {result.mode}, batch {settings['batch']}, {settings['threads']} threads, "
        f"{settings['iterations']} rounds (+{settings['warmup']} warm-up), interleaved")), highlight=False)
    if result.mode == "latency":
        table = Table("pipeline", "precision", "model ms\nmedian", "model ms\np90", "end-to-end\nms median",
                      "end-to-end\nms p90",
                      "end-to-end\n/ model", "time vs\nOV patched")
        for row in result.pipelines:
            table.add_row(row["label"], _precision(row), f"{row['model_ms']['median']:.2f}",
                          f"{row['model_ms']['p90']:.2f}", f"{row['end_to_end_ms']['median']:.2f}",
                          f"{row['end_to_end_ms']['p90']:.2f}", f"{row['end_to_end_over_model']:.3f}",
                          f"{row['vs_reference']['end_to_end_ms']:.2f}×")
    else:
        table = Table("pipeline", "precision", "frames/s\nmedian", "frames/s\n10th pct", "time vs\nOV patched")
        for row in result.pipelines:
            fps = row["frames_per_second"]
            table.add_row(row["label"], _precision(row), f"{fps['median']:.1f}", f"{fps['p10']:.1f}",
                          f"{row['vs_reference']['time']:.2f}×")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    print_table(console, table)
    if result.mode == "latency":
        console.print(f"ratios: medians of the per-round ratios (> 1 is slower); time vs OV patched: end-to-end, "
                      f"over {REFERENCE}", highlight=False)
    else:
        console.print(f"time vs OV patched: {REFERENCE}'s frames/s over each row's (> 1 is slower)", highlight=False)
    for row in result.pipelines:
        if row["precision"] != row["precision_requested"]:
            console.print(f"{row['label']}: this CPU lacks {row['precision_requested']}, OpenVINO ran "
                          f"{row['precision']}", highlight=False)
    for target in result.targets or ():
        if target["ratio"] is None:
            console.print(f"  –  {target['name']}: not measured (pass --torch)", highlight=False)
            continue
        mark = "[green]✓[/]" if target["met"] else "[red]✗[/]"
        where = f" ({target['where']})" if target["where"] else ""
        low, high = target["ci95"]
        console.print(f"  {mark} {target['name']}{where}: {target['ratio']:.3f} (95% CI {low:.3f}–{high:.3f}; "
                      f"target {'≤' if target['at_most'] else '≥'} {target['limit']})", highlight=False)
    for note in result.notes or ():
        console.print(f"note: {note}", highlight=False, markup=False)
    for precision, on in (("bf16", "measured on"), ("int8", "calibrated on")):
        if price := getattr(result, precision):
            console.print(f"{precision}: {on} {price['samples' if precision == 'bf16' else 'calibration']}",
                          highlight=False, markup=False)
            for name, numbers in price["vs_f32"].items():
                if isinstance(numbers, dict):
                    console.print(f"  {name} vs f32: " + ", ".join(f"{key.replace('_', ' ')} {value:.4g}"
                                                                  for key, value in numbers.items()),
                                  highlight=False, markup=False)
    load = result.load_average
    console.print(f"{machine['cpu']} ({', '.join(machine['cpu_flags']) or 'no AVX2'}), {machine['usable_cpus']} CPUs, "
                  f"{machine['ram_gib']} GiB; load average "
                  f"{load['before'][0]:.2f} before, {load['after'][0]:.2f} after", highlight=False)


def _precision(row: dict) -> str:
    """What ran; a hint the CPU could not honour (bf16 without bf16 instructions) is said, not hidden."""
    if row["precision"] != row["precision_requested"]:
        return f"{row['precision']} (asked {row['precision_requested']})"
    return row["precision"]


COMMANDS = (bench_command,)
