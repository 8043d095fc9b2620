"""Commands that prove parity: verify (per output, per backend) and eval-coco (COCO keypoint AP).

Exit codes: 0 parity, 1 parity failure, 2 usage or input error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from graphsurgery.callables import source_file
from graphsurgery.cli.options import (
    OutputFolder,
    backends_option,
    existing_file,
    json_report_option,
    patched_option,
    seed_option,
    upgrade_opset_option,
)
from graphsurgery.cli.tables import print_table, progress_bar, shown
from graphsurgery.defaults import MAX_RANDOM, PRECISIONS
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.safeio import check_report_path, refuse_overwriting, same_file, write_text_atomically

PARITY_FAILURE = 1
DETAILS_SHOWN = 3


@click.command("verify")
@click.argument("recipe", type=existing_file)
@click.argument("plain", type=existing_file)
@patched_option
@click.option("--images", type=existing_file, help="Folder of JPEG/PNG images, cropped as `run` does (one crop per "
              "person box, or the whole image); fed whole, at their own sizes, when the recipe resizes.")
@click.option("--random", "random_count", type=click.IntRange(min=1, max=MAX_RANDOM),
              help="Number of random uint8 crops, or images of several sizes when the recipe resizes [default: 8 "
                   "when no --images; for a recipe that resizes, one of each size, at least 8].")
@click.option("--boxes", type=existing_file, help="Person boxes for --images: {file_name: [[x, y, w, h], ...]} or a "
              "COCO annotation file.")
@backends_option
@click.option("--precision", type=click.Choice([*PRECISIONS, "int8"]), default="f32", show_default=True,
              help="OpenVINO inference precision of the patched model; bf16/f16 measure what the faster mode costs in "
                   "agreement (the reference stays f32). int8: the patched int8 IR (--patched X.xml from convert "
                   "--int8, or quantized here on 30 random samples): its agreement with f32 is measured, and its "
                   "own decode (keypoints from its own network output) decides.")
@click.option("--tolerance", "tolerances", multiple=True, metavar="OUTPUT=ATOL[,RTOL]",
              help="Tolerance for one output (* = every float output); coordinates use ATOL only; a detector's "
                   "boxes: their corners in pixels, ATOL + RTOL × the box's largest coordinate. Repeatable.")
@seed_option
@click.option("--reference", type=existing_file, metavar="FILE.npz",
              help="Your own pipeline, recorded: its inputs under the patched model's input names and its answers "
                   "under its output names (numpy.savez). Compared against instead of the recipe's numpy twins; "
                   "outputs it lacks are held to the twins of the output steps on the model output it records.")
@click.option("--reference-pipeline", metavar="MODULE:FUNCTION",
              help="Your own pipeline, called live on random samples: FUNCTION(inputs by the patched model's input "
                   "names) returns its answers by output name. Compared against instead of the numpy twins.")
@upgrade_opset_option
@json_report_option
def verify_command(recipe: Path, plain: Path, patched: Path | None, images: Path | None, random_count: int | None,
                   boxes: Path | None, backends: tuple[str, ...], precision: str, tolerances: tuple[str, ...],
                   seed: int, reference: Path | None, reference_pipeline: str | None, upgrade_opset: bool,
                   json_report: Path | None):
    """Prove that the patched model gives the answers of the unpatched pipeline: PLAIN (the model without
    processing) between RECIPE's numpy twins, on every backend, output by output; and that the backends agree.

    Float outputs fail where a difference exceeds both atol and rtol; keypoints must match (exactly, or within
    their step's tolerance), and each mismatch is told apart as a near tie (the heatmap values at the two positions
    tie within the float tolerance) or a real mismatch. Exit code 0 when every output agrees, 1 when one does not,
    2 on a usage or input error. For each resize step the report also says how far it is from the closest
    library call (`cv2.resize`, or PIL's `Image.resize` for lanczos and antialiased modes) on the first sample
    (informational: not part of the verdict).
    """
    from graphsurgery.verification import verify

    inputs = _inputs(recipe, plain, patched, images, boxes, reference, source_file(reference_pipeline))
    if json_report is not None:
        check_report_path(json_report, inputs)  # before the work, not after it (a missing folder too)
    report = verify(recipe, plain, patched=patched, images=images, boxes=boxes, random=random_count,
                    backends=backends, precision=precision, tolerances=_tolerances(tolerances), seed=seed,
                    upgrade_opset=upgrade_opset, reference=reference, reference_pipeline=reference_pipeline)
    if json_report is not None:
        _write_json(json_report, report.to_dict(), inputs)
    console = Console()
    table = Table(
        "pair",
        "output",
        "kind",
        "verdict",
        "stats",
        title=shown(f"{report.inputs} · recipe {report.recipe}"),
        title_justify="left",
    )
    for pair in report.compared:
        for index, result in enumerate(pair.results):
            verdict = "[green]pass[/]" if result else "[bold red]FAIL[/]"
            if pair.informational:
                verdict = "same" if result else "[yellow]differs[/] (measured)"
            elif not result and pair.reduced_precision:
                verdict += f" ({pair.reduced_precision})"
            table.add_row(pair.name if index == 0 else "", shown(result.output), result.kind, verdict, result.summary(),
                          end_section=index == len(pair.results) - 1)
    print_table(console, table)
    for pair in report.compared:
        for result in pair.results:
            for detail in getattr(result, "details", [])[:DETAILS_SHOWN] if not (result or pair.informational) else []:
                if isinstance(detail, dict):  # a detection on one side only (compare_detections): was AttributeError
                    console.print(shown(
                        f"  {pair.name}: {result.output}: image {detail['image']}: class {detail['class']}, score "
                        f"{detail['score']:.4g}, box {_point(detail['box'])} only in the {detail['only_in']} "
                        f"({'near tie' if detail['near_tie'] else 'mismatch'})"))
                    continue
                kind = detail.verdict
                gap = f", reference values differ by {detail.gap:.3g}" if detail.gap is not None else ""
                if detail.wobble is not None:
                    gap += f", rounding moves the reference by {detail.wobble:.3g}"
                console.print(
                    shown(
                        f"  {pair.name}: {result.output}{detail.index}: expected {_point(detail.expected)}, "
                        f"got {_point(detail.actual)} ({detail.distance:.4g} apart{gap}): {kind}"
                    )
                )
    if report.vs_library:
        console.print(_library_table(report.vs_library))
        for entry in report.vs_library:
            console.print(f"  {entry['step']} ≈ {entry['library_call']}; |Δ| in the caller's units", highlight=False)
    for note in report.notes:
        console.print(Text.assemble(("note:", "yellow"), " ", shown(note)))
    if report and any(pair.informational for pair in report.pairs):
        console.print(f"[bold green]PASS[/]: the int8 model decodes its own network output exactly "
                      f"({report.samples} {report.unit}); its agreement with f32 is in the notes", highlight=False)
        return
    if report:
        console.print(Text.assemble(("PASS", "bold green"), shown(
            f": the patched model agrees with {report.compared_with} on {', '.join(report.backends)} "
            f"({report.samples} {report.unit})")))
        return
    if report.problem:
        console.print(Text.assemble(("FAIL", "bold red"), shown(f": {report.problem}")))
        raise SystemExit(PARITY_FAILURE)
    failed = [r for pair in report.compared for r in pair.results if not r]
    total = sum(len(pair.results) for pair in report.compared)
    names = ", ".join(dict.fromkeys(r.output for r in failed))
    console.print(
        Text.assemble(("FAIL", "bold red"), shown(f": {len(failed)} of {total} comparisons differ ({names})"))
    )
    raise SystemExit(PARITY_FAILURE)


@click.command("eval-coco")
@click.argument("recipe", type=existing_file)
@click.argument("plain", type=existing_file)
@click.option("--ann", "annotations", required=True, type=existing_file,
              help="COCO keypoint annotations, e.g. person_keypoints_val2017.json.")
@click.option("--images", required=True, type=existing_file, help="Folder of the annotated images, e.g. val2017/.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images with people (sorted by id).")
@click.option("--boxes", type=existing_file, help="Person detections (COCO results JSON: image_id, bbox, score) "
              "[default: the ground-truth boxes].")
@patched_option
@backends_option
@click.option("--results", "results_dir", type=OutputFolder(file_okay=False),
              help="Keep each pipeline's COCO results JSON in this folder, with eval-coco.json, the record of the "
                   "files it wrote: only those are ever replaced [default: a temporary folder].")
@upgrade_opset_option
@json_report_option
def eval_coco_command(recipe: Path, plain: Path, annotations: Path, images: Path, limit: int | None,
                      boxes: Path | None, patched: Path | None, backends: tuple[str, ...], results_dir: Path | None,
                      upgrade_opset: bool, json_report: Path | None):
    """COCO keypoint AP/AR of the unpatched pipeline (PLAIN + RECIPE's numpy twins) and of the patched model, on
    each backend at f32, top-down with the HRNet authors' crops. Parity holds when the numbers are identical and
    verify passes on 64 of the people, first those whose results differ (exit code 0; 1 when it does not hold, 2 on
    a usage or input error)."""
    from graphsurgery.coco import DIFFERING, STAT_NAMES, evaluate_coco, results_files

    inputs = _inputs(recipe, plain, patched, images, boxes, annotations)
    if json_report is not None:
        results = results_files(results_dir, backends) if results_dir is not None else []
        if any(same_file(json_report, written) for written in results):  # the report replaced a results file
            raise GraphsurgeryError("--json names a COCO results file that --results writes", path=json_report,
                                    fix="give the report another name or folder")
        if results_dir is not None and json_report.parent.resolve() == results_dir.resolve():
            refuse_overwriting(json_report, inputs)  # in the results folder, which the command makes
        else:
            check_report_path(json_report, inputs)
    with progress_bar() as progress:
        tasks: dict[str, int] = {}

        def advance(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        report = evaluate_coco(recipe, plain, annotations, images, patched=patched, boxes=boxes, limit=limit,
                               backends=backends, results_dir=results_dir, progress=advance,
                               upgrade_opset=upgrade_opset)
    if json_report is not None:
        _write_json(json_report, report.to_dict(), inputs)
    console = Console()
    table = Table("metric", *(p.name for p in report.pipelines),
                  title=f"{report.images} images, {report.people} people ({report.boxes} boxes)", title_justify="left")
    reference = report.pipelines[0].stats
    for index, metric in enumerate(STAT_NAMES):
        cells = []
        for pipeline in report.pipelines:
            value = f"{pipeline.stats[index]:.4f}"
            cells.append(value if pipeline.stats[index] == reference[index] else f"[bold red]{value}[/]")
        table.add_row(metric, *cells)
    print_table(console, table)
    for pipeline in report.pipelines:
        if pipeline.results_file:
            console.print(shown(f"{pipeline.name}: {pipeline.results_file}"), highlight=False)
    proof = report.per_keypoint
    proven = f"every keypoint of {report.proven} of the people (verify on {', '.join(proof.backends)})"
    if proof.unit == "images":  # a recipe that resizes whole images: verify ran the images the people are in
        proven = (f"every keypoint of the {proof.samples} whole images {report.proven} of the people are in "
                  f"(verify on {', '.join(proof.backends)})")
    if report.differing_proven:  # not min(differing, proven): people whose boxes verify cannot crop are not proven
        first = report.differing_proven
        proven += (f", first the {first}{'' if first == report.differing else f' of the {report.differing}'} whose "
                   f"results differ most from the unpatched pipeline's (by more than {DIFFERING:g})")
    elif report.differing:
        proven += (f"; the {report.differing} whose results differ from the unpatched pipeline's (by more than "
                   f"{DIFFERING:g}) are not among them: their boxes are too thin for verify to crop")
    if report:
        console.print(f"[bold green]PARITY[/]: identical AP/AR for all {len(report.pipelines)} pipelines, and "
                      f"{proven}", highlight=False)
        return
    if report.problem:
        console.print(Text.assemble(("NO PARITY", "bold red"), shown(f": {report.problem}")))
        raise SystemExit(PARITY_FAILURE)
    if not report.same_scores:
        differing = [p.name for p in report.pipelines if p.stats != reference]
        console.print(f"[bold red]NO PARITY[/]: {', '.join(differing)} differ from {report.pipelines[0].name} "
                      f"(AP {', '.join(f'{p.stats[0]:.4f}' for p in report.pipelines)})", highlight=False)
    # verify without a failing comparison fails when it compared nothing: say so rather than end without a word
    for failure in (proof.failures() or ["nothing was compared"]) if not proof else ():
        console.print(Text.assemble(("NO PARITY", "bold red"), shown(f" per keypoint (verify of {report.proven} of "
                                                                     f"the people): {failure}")))
    from graphsurgery.quantize import is_int8

    if patched is not None and is_int8(patched):  # round 55: NO PARITY of f32 tolerances, without a word on why
        console.print("The patched model is int8 (convert --int8): it is not held to f32's answers, and its AP "
                      "beside f32's is what int8 costs; `graphsurgery verify RECIPE PLAIN --precision int8 --patched "
                      "IR` proves its decode.", highlight=False)
    raise SystemExit(PARITY_FAILURE)


def _tolerances(texts: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Each --tolerance OUTPUT=ATOL[,RTOL], one per output: the last of two for one output won silently."""
    parsed = [_tolerance(text) for text in texts]
    names = [name for name, _ in parsed]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise GraphsurgeryError(f"--tolerance names {twice!r} twice", fix=f"give one --tolerance for {twice!r}")
    return dict(parsed)


def _tolerance(text: str) -> tuple[str, tuple[float, float]]:
    """OUTPUT=ATOL[,RTOL] → (output, (atol, rtol))."""
    name, sep, values = text.partition("=")
    try:
        numbers = [float(v) for v in values.split(",")] if sep else []
    except ValueError:
        numbers = []
    if not name or len(numbers) not in (1, 2):
        raise GraphsurgeryError(
            f"--tolerance {text!r} is not OUTPUT=ATOL[,RTOL]", fix="e.g. --tolerance scores=1e-5,1e-4"
        )
    return name, (numbers[0], numbers[1] if len(numbers) == 2 else 0.0)


def _library_table(entries: list[dict]) -> Table:
    """The geometry steps against the library call they imitate (`cv2.resize`, PIL's `Image.resize`,
    `cv2.warpAffine`): what changed against a pipeline written with that library."""
    table = Table("step", "caller image", "library equivalent", "max |Δ|", "mean |Δ|",
                  title="input steps vs the library they imitate (informational, not part of the verdict)",
                  title_justify="left")
    for entry in entries:
        image = f"{entry['image']['width']}×{entry['image']['height']} {entry['image_dtype']}"
        table.add_row(entry["step"], image, entry["equivalent"], f"{entry['max_abs_diff']:.4g}",
                      f"{entry['mean_abs_diff']:.4g}")
    return table


def _point(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")" if len(values) > 1 else f"{values[0]:g}"


def _inputs(*paths: Path | None) -> list[Path]:
    """The files a command reads (the images of a folder included): what its reports must never overwrite. An
    empty or missing folder is left to the command, which says what is wrong with it in its own order."""
    from graphsurgery.images import IMAGE_SUFFIXES
    from graphsurgery.modelio import model_paths

    found = []
    for path in paths:
        if path is not None:
            found += model_paths(path) if path.suffix.lower() in (".onnx", ".xml") else [path]
            if path.is_dir():
                found += [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return found


def _write_json(path: Path, data: dict, inputs: list[Path]) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, ensure_ascii=False), inputs)


COMMANDS = (verify_command, eval_coco_command)
