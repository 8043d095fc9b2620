"""`graphsurgery chain`: a patched detector and a patched top-down pose model as one graph."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table
from rich.text import Text

from graphsurgery.cli.options import backends_option, existing_file, force_option, output_file
from graphsurgery.cli.tables import print_table, shown
from graphsurgery.errors import GraphsurgeryError

#: the largest difference the chained model may show against the two models run one after the other (the same
#: nodes in one graph; measured 0 on both runtimes)
CHAIN_TOLERANCE = 1e-4
#: verify_chain's differences, each held to CHAIN_TOLERANCE (round 66: `detector`, the detector part's every row;
#: `random_boxes`, the pose part on random boxes; round 71: `crop_positions`, where its crops sample, on many boxes)
COMPARED = ("boxes", "scores", "keypoints", "keypoint_scores", "detector", "random_boxes", "crop_positions")
#: those of COMPARED held to 0: where the crops sample, which the same nodes compute alike on one runtime, and a wrong
#: crop arithmetic moves by one float32 step (6e-5 at 500 px, within CHAIN_TOLERANCE)
EXACT = ("crop_positions",)


@click.command("chain")
@click.argument("detector", type=existing_file)
@click.argument("pose", type=existing_file)
@click.option("-o", "--output", required=True, type=output_file, help="The chained model (.onnx).")
@click.option("--person-class", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
              help="The detector's class index of a person (COCO: 0).")
@click.option("--check", "check_images", type=existing_file,
              help="Images (a folder or files): compare the chained model with the two models run one after the "
                   "other on each, on each of --backends; exit 1 if they differ or the detector finds "
                   "nobody (the chained model stays written, for a look at where).")
@backends_option
@force_option
def chain_command(detector: Path, pose: Path, output: Path, person_class: int, check_images: Path | None,
                  backends: tuple[str, ...], force: bool):
    """Chain DETECTOR (patched with a detector recipe: image → boxes, scores, classes, count) into POSE (patched
    with recipes/hrnet_coco_topdown.yaml: image + boxes → keypoints): one model, the image in once, every person's
    box, score and keypoints in image pixels out."""
    from graphsurgery.chaining import RANDOM_BOXES, chain, parts_difference, verify_chain
    from graphsurgery.crop_positions import MANY_BOXES
    from graphsurgery.images import list_images, read_image

    # without --check no backend runs: `--backends openvino` taken in silence reads as a check that never ran
    if check_images is None and click.get_current_context().get_parameter_source("backends") \
            is not ParameterSource.DEFAULT:
        raise GraphsurgeryError("--backends chooses where --check runs the chained model, and no --check was given",
                                fix="add --check IMAGES, or drop --backends")
    # the images first: the model is not written among them, nor left behind when one of them is unreadable
    paths = [] if check_images is None else list_images([check_images])
    images = [read_image(path)[None] for path in paths]
    result = chain(detector, pose, output, person_class=person_class, force=force, also_reads=paths)
    console = Console()
    console.print(shown(f"wrote {output}: image → {', '.join(result.outputs)}"), highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    if check_images is None:
        return
    unlike = parts_difference(output, detector, pose)
    rows = verify_chain(output, detector, pose, images, person_class=person_class, backends=backends)
    table = Table("backend", "image", "people", "max |Δ| boxes", "scores", "keypoints", "keypoint scores",
                  "detector (all rows)", f"{RANDOM_BOXES} random boxes", f"crop positions ({MANY_BOXES:,} boxes)",
                  title="chained model vs the two models one after the other", title_justify="left")
    for row in rows:
        table.add_row(row["backend"], str(row["image"]), str(row["people"]),
                      *("not compared" if row[key] is None else f"{row[key]:.3g}" for key in COMPARED))
    print_table(console, table)
    unread = rows[0]["crop_positions_unread"]
    if unread:  # round 78: a pose model whose crop nodes are renamed FAILed as "differs by up to inf"
        console.print(shown(f"note: where the crops sample was not compared on {MANY_BOXES:,} boxes ({unread}): "
                            "the parts check compares the pose part's nodes with the pose model's"), highlight=False)
    if unlike:  # after the table: where the answers differ, if they do, is worth a look too
        console.print(Text.assemble(("FAIL", "bold red"), shown(f": the chained model is not the two models "
                                                                 f"joined: {unlike}")))
    ran = ", ".join(dict.fromkeys(row["backend"] for row in rows))  # what the verdict stands on (round 81)
    worst = max(row[key] for row in rows for key in COMPARED if row[key] is not None)
    moved = max((row[key] for row in rows for key in EXACT if row[key] is not None), default=0.0)
    differs = worst > CHAIN_TOLERANCE or moved > 0
    if differs:
        exact = f" (where its crops sample, which must not differ at all: by {moved:.3g})" if moved > 0 else ""
        console.print(f"[bold red]FAIL[/]: the chained model differs by up to {worst:.3g}{exact} (compared on {ran})")
    if unlike or differs:
        raise SystemExit(1)
    if not any(row["people"] for row in rows):  # as verify's detections: agreement on nothing PASSed (round 34)
        console.print(f"[bold red]FAIL[/]: the detector found nobody (class {person_class}) in the {len(images)} "
                      "image(s), so no keypoints were compared and agreement proves nothing; check with images of "
                      "people (--check)")
        raise SystemExit(1)
    console.print(f"[bold green]PASS[/]: the chained model gives the two models' answers on {ran} "
                  f"({len(images)} images, {sum(row['people'] for row in rows[:len(images)])} people; "
                  f"its detector part's every row, its pose part on {RANDOM_BOXES} random boxes"
                  f"{'' if unread else f' and where its crops sample on {MANY_BOXES:,}'}; its two parts are the two "
                  "models node for node)")


COMMANDS = (chain_command,)
