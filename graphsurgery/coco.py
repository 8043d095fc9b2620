"""COCO keypoint evaluation of the unpatched pipeline and the patched model, side by side (`eval-coco`).

Top-down, as the HRNet authors test: every person box (ground truth, or a COCO detection file) is cropped with
their affine warp (`graphsurgery.crops`); each pipeline turns the crops into keypoints in original-image
coordinates (recipes with `center`/`scale` inputs give them directly; crop-pixel keypoints are mapped back with
the crop's inverse affine transform); results are rescored as the authors do (box score × the mean of the joint
scores above 0.2) and evaluated by pycocotools' COCOeval (iouType "keypoints"). The authors' OKS-NMS is not
applied (it matters little with ground-truth boxes, and both sides would get the same). Parity holds when every
pipeline's AP/AR numbers are identical and `verify` passes on the crops of `PROVEN_PEOPLE` of the people
(`per_keypoint`), first those whose results differ between the pipelines (`_differing_people`): equal AP/AR
alone let a patch that moved every keypoint by 1 px pass (round 51).

Pipelines: the unpatched pipeline (plain model + numpy twins) and the patched model, on each backend (f32). On
OpenVINO the crops stream through asynchronous infer requests (`runners.open_stream`). `convert --int8
--annotations` (`int8_coco`) takes the same boxes, crops, results and AP as its accuracy control's metric.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from graphsurgery import crops
from graphsurgery.api import apply
from graphsurgery.boxes import (
    MAX_COORDINATE,
    MIN_SIZE,
    croppable,
    image_names,
    is_box,
    is_number,
    is_pixel_count,
    json_without_duplicates,
)
from graphsurgery.callables import call_back
from graphsurgery.cocoformat import KEYPOINT_NAMES, PERSON, keypoint_result
from graphsurgery.crops import in_parts
from graphsurgery.errors import GraphsurgeryError, check_callback, check_flags, quoted, whole
from graphsurgery.images import IMAGE_SUFFIXES, read_image
from graphsurgery.longrun import FirstPart, say_long_run, told_by_caller
from graphsurgery.model import ModelFacts
from graphsurgery.modelio import command, file_identity, load_model, model_files, model_paths
from graphsurgery.ownoutputs import earlier_outputs, refresh_record, refuse_replacing
from graphsurgery.recipe import InputTensor, Recipe, as_recipe
from graphsurgery.runners import BACKENDS, backend_list, check_backends, open_runner, open_stream
from graphsurgery.safeio import (
    InputFiles,
    folder_fix,
    input_path,
    inside,
    output_path,
    read_small_file,
    scratch_named,
    staged_folder,
    temporary_folder,
)
from graphsurgery.samples import (
    as_caller_tensor,
    crop_size,
    most_samples,
    patched_inputs,
    plain_input,
    refuse_patched_plain,
    tensor_facet,
)
from graphsurgery.twins import (
    crops_in_graph,
    extra_input_names,
    input_steps,
    preprocess,
    run_in_model_batches,
    unpatched_outputs,
)
from graphsurgery.verification import VerifyReport, verify

STAT_NAMES = ("AP", "AP .50", "AP .75", "AP (M)", "AP (L)", "AR", "AR .50", "AR .75", "AR (M)", "AR (L)")
KEYPOINTS, SCORES = "keypoints", "scores"
KINDS = ("unpatched", "patched")  # the pipelines on each backend
#: in `--results`, the record of the files eval-coco wrote there (those a later run may replace, and no others)
RESULTS_RECORD = "eval-coco.json"
MAX_RECORD_BYTES = 1_000_000  # a few file names
MAX_ANNOTATION_BYTES = 2**30  # COCO's largest keypoint file (train2017) is 238 MB

Progress = Callable[[str, int, int], None]  # (pipeline, done, total)
#: How many people, spread over the data set, eval-coco's verdict also proves keypoint by keypoint (`verify` on their
#: crops: near ties judged on the plain model's maps, the decoder probe, the input steps): AP and AR are sums over
#: people and thresholds, and a patch that moved every keypoint by 1 px (or every score by 0.05) scored identical AP
#: and AR on the synthetic COCO set (round 51)
PROVEN_PEOPLE = 64
#: how far a result may move (a keypoint's x or y in image pixels, a joint score) between the unpatched pipeline and
#: the patched model before the person is proven first (`_differing_people`): float rounding is far below it
DIFFERING = 1e-3


@dataclass(frozen=True)
class PersonBox:
    """A box to crop: its image, [x, y, w, h] and score (1 for ground truth), and the image's width and height as
    the annotations give them (boxes and keypoints are in those pixels: the decoded image must have that size)."""

    image_id: int
    file_name: str
    box: tuple[float, float, float, float]
    score: float
    image_size: tuple[float, float]


@dataclass
class PipelineResult:
    name: str
    backend: str
    precision: str
    stats: list[float]
    results_file: str | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "stats": dict(zip(STAT_NAMES, self.stats))}


@dataclass
class CocoReport:
    """AP/AR per pipeline; `bool(report)` is parity: every pipeline's numbers equal the first's."""

    annotations: str
    images: int
    people: int
    boxes: str
    pipelines: list[PipelineResult] = field(default_factory=list)
    #: `verify` of the patched model on the crops of `proven` of the people (`PROVEN_PEOPLE`): part of the verdict
    per_keypoint: VerifyReport | None = None
    proven: int = 0
    #: how many people's results differ between the unpatched pipeline and the patched model (`_differing_people`)
    differing: int = 0
    #: how many of them the proof took: those whose boxes verify cannot crop (`_provable`) are scored, not proven
    differing_proven: int = 0

    def __bool__(self) -> bool:
        return (self.problem is None and bool(self.pipelines) and self.same_scores and self.per_keypoint is not None
                and bool(self.per_keypoint))

    @property
    def same_scores(self) -> bool:
        """Whether every pipeline's AP/AR numbers equal the first's."""
        return all(p.stats == self.pipelines[0].stats for p in self.pipelines)

    @property
    def problem(self) -> str | None:
        """Why equal numbers prove nothing: the unpatched pipeline scores no AP or AR above 0, and any patch (a NaN
        model, another network's int8 IR) scores the same 0s (round 36: "PARITY", exit 0)."""
        if not self.pipelines or any(value > 0 for value in self.pipelines[0].stats):
            return None
        return (f"{self.pipelines[0].name} scores AP and AR 0 (or none): equal numbers prove nothing; evaluate a "
                "model that finds the annotated keypoints (trained weights), on images with people")

    def to_dict(self) -> dict:
        return {"parity": bool(self), "problem": self.problem, "annotations": self.annotations, "images": self.images,
                "people": self.people, "boxes": self.boxes, "pipelines": [p.to_dict() for p in self.pipelines],
                "proven_people": self.proven, "differing_people": self.differing,
                "per_keypoint": self.per_keypoint.to_dict() if self.per_keypoint is not None else None}


@command
def evaluate_coco(recipe: str | Path | Recipe, plain_model: str | Path, annotations: str | Path,
                  images: str | Path, *, patched: str | Path | None = None, boxes: str | Path | None = None,
                  limit: int | None = None, backends: Iterable[str] = BACKENDS, results_dir: str | Path | None = None,
                  progress: Progress | None = None, upgrade_opset: bool = False) -> CocoReport:
    """Evaluate the unpatched pipeline and the patched model on each backend; results JSON go to `results_dir`."""
    check_flags(upgrade_opset=upgrade_opset)
    results_dir = output_path(results_dir, "folder") if results_dir is not None else None
    recipe = as_recipe(recipe)
    _check_keypoint_recipe(recipe)
    plain = load_model(plain_model)
    facts = ModelFacts.of(plain.proto, recipe)
    backends = check_backends(backend_list(backends), "f32", patched)
    if limit is not None and not (whole(limit) and limit >= 1):  # 2.5 and "2" were TypeErrors, True one image
        raise GraphsurgeryError(f"limit={limit!r} (--limit) is not a positive number of images",
                                fix="give a whole number, 1 or more")
    check_callback("progress", progress, "pipeline, done, total")
    images, annotations = input_path(images, "image folder"), input_path(annotations, "annotation file")
    boxes = input_path(boxes, "detections file") if boxes is not None else None
    patched = input_path(patched, "patched model file") if patched is not None else None
    if patched is not None:  # apply refuses such a PLAIN, but with --patched apply does not run
        refuse_patched_plain(recipe, plain, plain_input(recipe, plain))
    gt, image_ids, people = annotated_people(annotations, images, boxes, limit)
    report = CocoReport(str(annotations), len(image_ids), len(people), str(boxes) if boxes else "ground truth")
    # the images read, not every file of their folder: `--results IMAGES` was refused the second time, its own
    # earlier results counted as inputs (round 55); a file of another tool there is refused as not this command's
    read = [*model_files(plain), recipe.source if recipe.file_sha256 else None, annotations, boxes,
            *(model_paths(patched) if patched is not None else []),
            *(inside(images, name, "the annotation's file_name", annotations)
              for name in dict.fromkeys(person.file_name for person in people))]
    kinds = [(kind, backend) for kind in KINDS for backend in backends]
    with temporary_folder("coco") as tmp, scratch_named(tmp, f"{plain.path} (patched by {recipe.source})"), \
            _results_kept(results_dir, backends, read) as keep:  # errors name the user's model, as verify's do
        patched_path = (
            Path(patched) if patched is not None
            else apply(recipe, plain.path, Path(tmp) / "patched.onnx", upgrade_opset=upgrade_opset).output
        )
        image_input, extras = patched_inputs(patched_path, extra_input_names(recipe), recipe=recipe)
        if image_input.shape[0] not in (None, 1):
            raise GraphsurgeryError(f"eval-coco feeds one crop at a time; the patched model takes batches of "
                                    f"{image_input.shape[0]}", path=patched_path,
                                    fix="export the model with batch 1 or a dynamic batch")
        plain_name = plain_input(recipe, plain)
        top_down = "boxes" in extras
        held = ImagesAsRead()
        if top_down:
            _check_image_pixels(recipe, patched_path)
            whole_images = WholeImages(images, tensor_facet(recipe), image_input.dtype, Path(annotations), held)
        else:
            size = crop_size(image_input, recipe, facts)
            caller = CallerCrops(images, size, tensor_facet(recipe), image_input.dtype, Path(annotations), held)
            in_image_pixels = {"center", "scale"} <= set(extras)
        provable = people if _whole_images(recipe) else _provable(people, Path(annotations))
        proven = _proof_size(recipe, facts, provable)  # verify runs them through two pipelines per backend
        first_part = FirstPart(len(kinds) * (len(people) + proven))  # 150,000 detections ran for an hour in silence
        outcomes: dict[tuple[str, str], list[dict]] = {}
        for kind, backend in kinds:
            name = f"{kind} · {backend}"

            def advance(done: int, name: str = name, first: bool = (kind, backend) == kinds[0]) -> None:
                if progress:
                    call_back(progress, name, done, len(people))
                if first and (seconds := first_part.tick(done)) is not None:  # timed on the first pipeline only
                    _announce_long_run(seconds, len(kinds), len(people), proven, name)

            if top_down:  # the graph crops: each image goes in with its boxes (BOXES_PER_CALL at a time)
                model = plain.path if kind == "unpatched" else patched_path
                answers, precision = _run_whole_images(backend, model, people, whole_images, _top_down_call(
                    recipe, facts, plain_name if kind == "unpatched" else None, image_input.name), advance)
                results = [keypoint_result(p.image_id, kp, sc, p.score) for p, (kp, sc) in zip(people, answers)]
            elif kind == "unpatched":
                answers, precision = _run(
                    backend, plain.path, people, caller, lambda x, _: {plain_name: preprocess(recipe, x, facts)},
                    lambda outputs, more, shape: _named(unpatched_outputs(recipe, facts, outputs, more, shape),
                                                        recipe),
                    extras, advance)
            else:
                answers, precision = _run(backend, patched_path, people, caller,
                                          lambda x, more: {image_input.name: x, **more},
                                          lambda outputs, *_: _named(outputs, recipe), extras, advance)
            if not top_down:
                results = [person_result(person, answer, size, in_image_pixels)
                           for person, answer in zip(people, answers)]
            outcomes[kind, backend] = results
            stats = keypoint_stats(gt, results, image_ids, plain.path)
            report.pipelines.append(PipelineResult(name, backend, precision, stats,
                                                   keep(results_name(kind, backend), results)))
        differing = _differing_people(people, outcomes, backends)
        report.differing = len(differing)
        chosen = _proof_people(provable, proven, differing)
        report.proven = len(chosen)
        report.differing_proven = len({id(person) for person in differing} & {id(person) for person in chosen})
        report.per_keypoint = _verified_people(recipe, plain.path, patched_path, chosen, images, Path(annotations),
                                               backends, Path(tmp), held)
    return report


def _whole_images(recipe: Recipe) -> bool:
    """Whether verify feeds this recipe's images whole: it resizes them in the graph (and crops no boxes)."""
    steps = input_steps(recipe)
    return any(step.frees_caller_size for step in steps) and not crops_in_graph(steps)


def _provable(people: list[PersonBox], annotations: Path) -> list[PersonBox]:
    """The people whose boxes verify takes (`boxes.is_box`): a ground-truth box 1 px wide or less is 0 px wide once
    clipped the authors' way (x2 = x1 + w - 1), which eval-coco crops (the crop pads it to the model's aspect) but
    verify refuses; the proof handed it such a box and the whole evaluation ended in "box [x, y, 0.0, h] for '0.png'
    … fix that box", of a scratch file (round 53). Such people are scored, not proven."""
    provable = [person for person in people if is_box(person.box)]
    if not provable:
        raise GraphsurgeryError(f"no person box the proof per keypoint can crop: all {len(people):,} are 0 px wide "
                                "or high once clipped to their images", path=annotations,
                                fix="evaluate images whose people have boxes over 1 px both ways (--limit, --boxes)")
    return provable


def _proof_size(recipe: Recipe, facts: ModelFacts, people: list[PersonBox]) -> int:
    """How many people the proof per keypoint takes: `PROVEN_PEOPLE`, fewer where verify could not hold their
    crops at once (its cap, `samples.most_samples`: two crops a person with the flip test, 1024 × 768 crops or
    whole 4K images are refused past a few dozen)."""
    if _whole_images(recipe):
        values = 3 * max(math.prod(person.image_size) for person in people)
    else:
        values = 2 * 3 * math.prod(facts.input_size or (192, 256))
    return max(1, min(PROVEN_PEOPLE, len(people), most_samples(int(values))))


def _differing_people(people: list[PersonBox], outcomes: dict[tuple[str, str], list[dict]],
                     backends: Iterable[str]) -> list[PersonBox]:
    """The people whose results differ between the unpatched pipeline and the patched model on a backend beyond
    float rounding (`DIFFERING`: a keypoint, in image pixels, or a joint score), the most different first. Equal
    AP/AR and a proof on people spread over the set let a patch wrong only for people outside that sample PASS
    (round 51's leftover): each pipeline has every person's answer, so the proof takes these first."""
    gaps = np.zeros(len(people))
    for backend in backends:
        unpatched, patched = outcomes["unpatched", backend], outcomes["patched", backend]
        for index, (before, after) in enumerate(zip(unpatched, patched)):  # finite: a lost joint is at 0, score 0
            gap = np.abs(np.subtract(after["keypoints"], before["keypoints"])).max(initial=0.0)
            gaps[index] = max(gaps[index], float(gap))
    return [people[index] for index in np.argsort(-gaps, kind="stable") if gaps[index] > DIFFERING]


def _proof_people(provable: list[PersonBox], proven: int, differing: list[PersonBox]) -> list[PersonBox]:
    """The `proven` people the proof per keypoint verifies: those whose results differ first (`_differing_people`,
    the provable ones), then people spread evenly over the set."""
    spread = [provable[round(i)] for i in np.linspace(0, len(provable) - 1, proven)]
    taken = {id(person) for person in provable}
    chosen = list({id(person): person for person in [*(p for p in differing if id(p) in taken), *spread]}.values())
    return chosen[:proven]


def _verified_people(recipe: Recipe, plain: Path, patched: Path, chosen: list[PersonBox], images: Path,
                     annotations: Path, backends: list[str], tmp: Path, held: ImagesAsRead) -> VerifyReport:
    """`verify` of `patched` on the crops of the `chosen` people (`_proof_people`), cut as verify cuts a boxes
    file's; their images are linked into a folder of their own under `tmp`, so that verify reads no other image of
    the set, and held to what the pipelines read (`held`: checked before they are linked or copied and after
    verify read them). A recipe that resizes whole images gets them whole (verify takes no boxes for it)."""
    folder = tmp / "proven"
    folder.mkdir()
    linked: dict[str, str] = {}
    sources: list[Path] = []  # the images linked, checked again once verify read them
    boxes: dict[str, list[list[float]]] = {}
    for person in chosen:
        if person.file_name not in linked:
            source = inside(images, person.file_name, "the annotation's file_name", annotations)
            suffix = source.suffix.lower() if source.suffix.lower() in IMAGE_SUFFIXES else ".jpg"  # verify lists these
            linked[person.file_name] = name = f"{len(linked)}{suffix}"
            held.check(source)
            _link(source.resolve(), folder / name, tmp)
            held.check(source, linked=True)
            sources.append(source)
        boxes.setdefault(linked[person.file_name], []).append(list(person.box))
    boxes_file = None
    if not _whole_images(recipe):
        boxes_file = tmp / "proven.json"
        boxes_file.write_text(json.dumps(boxes))
    with told_by_caller():  # eval-coco's own note counted these crops
        report = verify(recipe, plain, patched=patched, images=folder, boxes=boxes_file, backends=backends)
    for source in sources:
        held.check(source)
    return report


def _link(source: Path, link: Path, tmp: Path) -> None:
    """`link` naming the image `source` for the proof: a symbolic link, else (a $TMPDIR on a file system without
    them: FAT, exFAT, some network shares) a hard link, else a copy. The symbolic link alone failed there with
    "…/proven/0.png: Operation not permitted — fix: check the permissions", after all four pipelines (round 53)."""
    try:
        link.symlink_to(source)
        return
    except OSError:
        pass
    try:
        try:
            os.link(source, link)
        except OSError:
            shutil.copyfile(source, link)
    except OSError as exc:
        raise GraphsurgeryError(f"cannot link or copy the image {source.name} into the temporary folder for the "
                                f"proof per keypoint ({exc.strerror or exc})", path=tmp,
                                fix="free disk space there or set TMPDIR to another folder") from None


def _announce_long_run(seconds: float, pipelines: int, people: int, proven: int, first: str) -> None:
    """One line on stderr when the whole evaluation, extrapolated from its first pipeline's first seconds, will
    take over a minute (`longrun`, as run and bench say it): not a hang, and how to make it shorter. The per-keypoint
    proof's `proven` crops (`_verified_people`) count as boxes of their own."""
    say_long_run(seconds, f"{pipelines} pipelines × {people:,} person boxes to run, and {proven:,} of them again "
                          "for the proof per keypoint",
                 f"{seconds / pipelines / (people + proven) * 1000:.1f} ms a box, measured on {first}",
                 "--limit fewer images, fewer --backends, or fewer detections in --boxes")


def results_name(kind: str, backend: str) -> str:
    """The name of a pipeline's COCO results file in `--results` (kind: one of KINDS)."""
    return f"{kind}-{backend}.json"


def results_files(folder: Path, backends: Iterable[str]) -> list[Path]:
    """Every file evaluate_coco writes into `folder` (`--results`): each pipeline's results, and the record."""
    return [*(Path(folder) / results_name(kind, backend) for kind in KINDS for backend in backends),
            Path(folder) / RESULTS_RECORD]


@contextlib.contextmanager
def _results_kept(results_dir: Path | None, backends: Iterable[str], read: list
                  ) -> Iterator[Callable[[str, list[dict]], str | None]]:
    """`keep(name, results)`: write one pipeline's results file, returning the path it will have in `results_dir`
    (without one, nothing is kept: None). The files move into `results_dir` together once every pipeline has run
    (`safeio.staged_folder`): a failure or Ctrl-C halfway left this run's first files beside an earlier run's
    others. Checked before the work and again before the move: none may land on a file the command reads, on a
    symlink, on a folder, or on a file no earlier run wrote (another tool's results of that name): the record,
    RESULTS_RECORD, lists the files each run wrote and those of earlier runs still there, which it may replace."""
    if results_dir is None:
        yield lambda name, results: None
        return
    if results_dir.exists() and not results_dir.is_dir():
        raise GraphsurgeryError("the results folder is a file", path=results_dir,
                                fix="give a folder for the results (results_dir, --results)")
    inputs = InputFiles(read)

    def refuse(names: list[str]) -> None:
        for name in names:
            if (results_dir / name).is_dir() and not (results_dir / name).is_symlink():
                raise GraphsurgeryError("a folder has the name of a results file", path=results_dir / name,
                                        fix="move that folder away, or choose another folder for the results")
        refuse_replacing(results_dir, names, inputs, _earlier_results(results_dir),
                         "move that file away, or choose another folder for the results (results_dir, --results)")

    def before_moving(produced: list[Path]) -> None:  # under the folder's lock: as it is now, with any other
        refuse([path.name for path in produced])  # eval-coco's results placed while this one ran
        refresh_record(produced, RESULTS_RECORD, "earlier_results", results_dir, _earlier_results(results_dir))

    refuse([path.name for path in results_files(results_dir, backends)])
    written: list[str] = []
    try:
        with staged_folder(results_dir, ".graphsurgery-coco-", before_moving) as stage:

            def keep(name: str, results: list[dict]) -> str:
                (stage / name).write_text(json.dumps(results))
                written.append(name)
                return str(results_dir / name)

            yield keep
            (stage / RESULTS_RECORD).write_text(json.dumps({
                "written_by": "graphsurgery eval-coco", "results": sorted(written),
                "earlier_results": []}))  # `before_moving` lists them
    except OSError as exc:
        raise GraphsurgeryError(f"cannot write the COCO results ({exc.strerror or exc})", path=results_dir,
                                fix=f"{folder_fix(exc)} for the results (results_dir, --results)") from None


def _earlier_results(results_dir: Path) -> set[str]:
    """The files in `results_dir` that earlier runs wrote, as the last one's record says: those a run may replace."""
    if not results_dir.is_dir():
        return set()
    return earlier_outputs(results_dir / RESULTS_RECORD, MAX_RECORD_BYTES, _recorded_results)


def _recorded_results(record: dict) -> list[str]:
    """The results files an eval-coco record (RESULTS_RECORD) lists as its run's or as earlier runs' still there."""
    return [*record["results"], *record["earlier_results"]]


# --- boxes ---------------------------------------------------------------------------------------------------


def annotated_people(annotations: str | Path, images: Path, boxes: str | Path | None = None,
                     limit: int | None = None, images_option: str = "--images") -> tuple[object, list[int],
                                                                                          list[PersonBox]]:
    """pycocotools' ground truth, the ids of the images with people (the first `limit`) and their person boxes
    (ground truth, or the detections in `boxes`); every image they are in must be in the folder `images` (given
    as `images_option`), checked before any of them is read."""
    if not images.is_dir():  # a file, a FIFO or a device is named so, not called missing
        what = "no such image folder" if not images.exists() else "is not a folder"
        raise GraphsurgeryError(what, path=images, fix="give the folder of the COCO images")
    gt = _load_coco(Path(annotations))
    image_ids = sorted(gt.getImgIds(catIds=[PERSON]))[:limit]
    try:
        people = _detections(gt, Path(boxes), image_ids) if boxes is not None else _ground_truth(gt, image_ids)
    except (KeyError, TypeError, ValueError) as exc:  # an image without width, a bbox of strings, ...
        raise GraphsurgeryError(f"a missing or malformed field ({type(exc).__name__}: {exc})",
                                path=boxes or annotations,
                                fix="each image needs file_name, width and height, each box four numbers "
                                    "[x, y, w, h] and a finite score, each person 17 × 3 keypoint values") from None
    if not people and boxes is not None:
        raise GraphsurgeryError("no person boxes to evaluate", path=boxes,
                                fix="check that the file has person (category 1) boxes for these images")
    if not people:
        raise GraphsurgeryError("no person with keypoints to evaluate", path=annotations,
                                fix="give a COCO keypoints file (person_keypoints_*.json): person (category 1) "
                                    "annotations with keypoints")
    for file_name in dict.fromkeys(person.file_name for person in people):
        image = inside(images, file_name, "the annotation's file_name", annotations)
        if image.is_file():
            continue
        if image.exists():  # a FIFO, a folder, a device (links are resolved): "not in" misled
            raise GraphsurgeryError(f"the annotation's file_name {quoted(file_name)} names no image file but a "
                                    f"{_kind(image)}", path=image, fix="put the JPEG or PNG image there")
        raise GraphsurgeryError(f"the annotation's file_name {quoted(file_name)} is not in {images} "
                                f"({images_option})", path=annotations,
                                fix=f"give {images_option} the folder of the annotated images")
    return gt, image_ids, people


def _kind(path: Path) -> str:
    """What stands at `path` where an image file was expected (round 48: a FIFO or a folder was "not in --images")."""
    kinds = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"),
             (stat.S_ISBLK, "device"))
    mode = path.stat().st_mode
    return next((name for test, name in kinds if test(mode)), "special file")


def _load_coco(path: Path):
    """pycocotools' COCO of an annotation file read here (a regular file, size-capped; a UTF-8 byte order mark, as
    Notepad and PowerShell write, is allowed: pycocotools' own json.load refused it)."""
    from pycocotools.coco import COCO

    raw = read_small_file(path, MAX_ANNOTATION_BYTES, "annotation file")
    try:
        dataset = json_without_duplicates(raw, path, "images or annotations")
        if not isinstance(dataset, dict):
            raise TypeError(f"a JSON {type(dataset).__name__}, not an object")
        _check_ground_truth(dataset, path)
        image_names(dataset, path)  # an image id listed twice, an annotation of an image not listed: refused
        gt = COCO()
        gt.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:  # Recursion: [[[[… 10^5 deep
        raise GraphsurgeryError(f"not a COCO annotation file ({type(exc).__name__})", path=path,
                                fix="give a COCO keypoints annotation file (images, annotations, categories)") from None


def _check_ground_truth(dataset: dict, path: Path) -> None:
    """The fields pycocotools and COCOeval read, checked before they do: they ended deep inside (an internal error:
    an iscrowd of "yes", keypoints of strings, no num_keypoints, an image id of "a" among numbers, a file_name of
    null) or counted wrong in silence (a negative area overflows the OKS, an annotation id given twice drops one,
    a negative width clips every box away)."""
    def refuse(problem: str, fix: str) -> None:
        raise GraphsurgeryError(problem, path=path, fix=fix)

    images, annotations = dataset.get("images") or [], dataset.get("annotations") or []
    if not isinstance(images, list) or not isinstance(annotations, list):
        refuse("'images' and 'annotations' are not lists", "give a COCO keypoints annotation file")
    for image in images:
        image_id = image.get("id") if isinstance(image, dict) else None
        if not whole(image_id):
            refuse(f"image id {repr(image_id)[:40]} is not a whole number", "COCO image ids are integers")
        if not isinstance(image.get("file_name"), str):
            refuse(f"image {image_id} has file_name {image.get('file_name')!r}", "give each image its file name")
        for side in ("width", "height"):
            if not is_pixel_count(image.get(side)):
                refuse(f"image {image_id} has {side} {image.get(side)!r}, not a number of pixels",
                       "give each image its width and height in pixels")
    _check_person_category(dataset, annotations, path)
    seen: set[int] = set()
    with_keypoints = any(isinstance(a, dict) and a.get("keypoints") is not None for a in annotations)
    for ann in annotations:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not _annotation_id(ann_id) or ann_id in seen:
            refuse(f"annotation id {repr(ann_id)[:40]} is "
                   f"{'given twice' if ann_id in seen else 'not a whole number other than 0 (within ±2^53)'} "
                   "(pycocotools keeps one annotation per id; COCOeval stores the ids it matches as floats, and 0 "
                   "as no match)", "give each annotation its own whole-number id, from 1")
        seen.add(ann_id)
        if not whole(ann.get("category_id")):  # "1" was skipped as not a person, in silence (round 93)
            refuse(f"annotation {ann_id} has category_id {repr(ann.get('category_id'))[:40]}, not a whole number",
                   f"give each annotation its category's id ({PERSON} for a person)")
        if ann["category_id"] != PERSON:
            continue
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
            refuse(f"annotation {ann_id} has iscrowd {ann.get('iscrowd')!r}, not 0 or 1", "set iscrowd to 0 or 1")
        if not (is_number(ann.get("area")) and 0 <= ann["area"] <= MAX_COORDINATE**2):  # 10**400 overflowed
            refuse(f"annotation {ann_id} has area {str(ann.get('area'))[:40]}, not a number ≥ 0 (pixels, at most "
                   f"{MAX_COORDINATE**2:g}: COCOeval divides the keypoint distances by it)",
                   "give the person's area in pixels (w × h of the box will do)")
        if not with_keypoints:
            continue  # no keypoints at all: said later as "no person with keypoints"
        keypoints = ann.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) != 3 * len(KEYPOINT_NAMES):
            count = f"{len(keypoints)} keypoint values" if isinstance(keypoints, list) else f"keypoints {keypoints!r}"
            refuse(f"annotation {ann_id} has {count}, not {3 * len(KEYPOINT_NAMES)} (x, y, v for each of the "
                   f"{len(KEYPOINT_NAMES)} joints)", "give every person annotation its 17 × 3 keypoint values")
        if not all(is_number(v) and abs(v) <= MAX_COORDINATE for v in keypoints):  # NaN fails this too
            refuse(f"annotation {ann_id} has keypoint values that are not finite numbers of pixels (within "
                   f"±{MAX_COORDINATE:g}: 1e300 overflowed COCOeval's distances)",
                   "give every keypoint as x, y, v numbers (0, 0, 0 for a joint not annotated)")
        if not whole(ann.get("num_keypoints")) or ann["num_keypoints"] < 0:
            refuse(f"annotation {ann_id} has num_keypoints {ann.get('num_keypoints')!r}",
                   "give the number of annotated joints (v > 0) as num_keypoints")
        labelled = sum(1 for visible in keypoints[2::3] if visible > 0)
        if (ann["num_keypoints"] == 0) != (labelled == 0):  # COCOeval ignores a person of num_keypoints 0, the
            # crops do not: every person so written scored AP -1, "NO PARITY" (exit 1), of a file's mistake
            refuse(f"annotation {ann_id} has num_keypoints {ann['num_keypoints']} and {labelled} joints labelled "
                   "(v > 0): COCOeval ignores a person of num_keypoints 0, and crops every person with a labelled "
                   "joint", "give the number of annotated joints (v > 0) as num_keypoints")


def _check_person_category(dataset: dict, annotations: list, path: Path) -> None:
    """Person annotations need the person category listed in 'categories': COCOeval evaluates only the listed
    categories, so `categories: []` or the person listed under another id scored AP and AR -1 on every pipeline,
    and eval-coco said "NO PARITY" (exit 1) and blamed the model for a mistake of the file (round 60)."""
    if not any(isinstance(ann, dict) and ann.get("category_id") == PERSON for ann in annotations):
        return  # no person at all: said later as "no person with keypoints"
    categories = dataset.get("categories")
    listed = [c.get("id") for c in categories if isinstance(c, dict)] if isinstance(categories, list) else []
    if PERSON not in listed:
        raise GraphsurgeryError(f"the person annotations are of category {PERSON}, which 'categories' does not list "
                                f"(its ids: {listed[:5]}): COCOeval evaluates the listed categories only, and would "
                                "score every pipeline -1", path=path,
                                fix=f"add the person category ({{\"id\": {PERSON}, \"name\": \"person\", ...}}) of "
                                    "person_keypoints_val2017.json to 'categories'")


def _annotation_id(value) -> bool:
    """A whole number other than 0 that a float holds exactly: COCOeval keeps the ids of the annotations it matches
    in float arrays, where 0 means "no match" (a person of id 0 counted every detection of it as a false positive:
    AP 0.984 became 0.840 on both sides, in silence) and 10^400 ended the evaluation, after every pipeline had run,
    in an OverflowError (an internal error)."""
    return whole(value) and value != 0 and abs(value) <= 2**53


def _ground_truth(gt, image_ids: list[int]) -> list[PersonBox]:
    """The authors' ground-truth boxes: non-crowd people with annotated keypoints, clipped to the image."""
    people = []
    for image_id in image_ids:
        info = gt.imgs[image_id]
        width, height = info["width"], info["height"]
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=image_id, catIds=[PERSON], iscrowd=False)):
            if max(ann.get("keypoints") or [0]) == 0 or ann.get("area", 0) <= 0:
                continue
            x, y, w, h = (_finite(v, "a bbox") for v in ann["bbox"])
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1)), min(height - 1.0, y1 + max(0.0, h - 1))
            if x2 >= x1 and y2 >= y1:
                if not croppable(x2 - x1, y2 - y1):  # the authors' affine map would be singular
                    raise ValueError(f"annotation {ann.get('id')} has a box of {x2 - x1:g} × {y2 - y1:g} px once "
                                     f"clipped to its image, less than {MIN_SIZE:g} px both ways")
                people.append(PersonBox(image_id, info["file_name"], (x1, y1, x2 - x1, y2 - y1), 1.0,
                                        (width, height)))
    return people


def _finite(value, where: str) -> float:
    """A finite JSON number: not true (a box side or score of 1) nor "12" (float() took it). numpy's numbers are
    pycocotools' own (a box it computes from keypoint detections: [10, 10, 0, 0] of np.int64 was "10 in a bbox")."""
    value = value.item() if isinstance(value, (np.integer, np.floating)) else value
    try:
        number = float(value) if is_number(value) else math.nan
    except OverflowError:  # an integer of 400 digits
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{str(value)[:40]} in {where}")
    return number


def _detections(gt, path: Path, image_ids: list[int]) -> list[PersonBox]:
    """PersonBox detections from a COCO results file ([{image_id, category_id, bbox, score}])."""
    raw = read_small_file(path, MAX_ANNOTATION_BYTES, "detections file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            detections = json_without_duplicates(raw, path, "detection fields")
            if not isinstance(detections, list):  # a JSON string would be taken by loadRes as a file name to open
                raise TypeError(f"a JSON {type(detections).__name__}, not a list")
            for det in detections:
                if not isinstance(det, dict) or not whole(det.get("image_id")):  # `true` and 1.0 were image 1
                    raise TypeError("a detection's image_id is not a whole number")
                if not whole(det.get("category_id")):  # "1" was not a person: the box dropped in silence
                    raise TypeError("a detection's category_id is not a whole number")
                if "bbox" not in det and "segmentation" in det:  # loadRes took the boxes from the masks, each
                    # RLE decoded in pycocotools' C code (a size of -5: OverflowError, an internal error)
                    raise KeyError("a detection with a segmentation but no bbox")
            if not detections:  # valid results of nothing, which loadRes cannot index (round 55: IndexError)
                return []
            dt = gt.loadRes(detections)
    except (ValueError, KeyError, TypeError, IndexError, AssertionError, RecursionError, OverflowError) as exc:
        raise GraphsurgeryError(
            f"not COCO detection results for these annotations ({type(exc).__name__})",
            path=path,
            fix="give [{image_id, category_id, bbox, score}, ...] with image ids of the annotations",
        ) from None
    people = []
    for image_id in image_ids:
        info = gt.imgs[image_id]
        for det in dt.loadAnns(dt.getAnnIds(imgIds=image_id, catIds=[PERSON])):
            x, y, w, h = (_finite(v, "a bbox") for v in det["bbox"])
            score = _finite(det.get("score", 1), "a score")  # a NaN score would drop the box from the AP silently
            if max(map(abs, (x, y, w, h))) > MAX_COORDINATE:  # dropped with the tiny ones: "no person boxes"
                raise ValueError(f"a bbox {[x, y, w, h]} of image {image_id} beyond {MAX_COORDINATE:,.0f} px")
            if is_box((x, y, w, h)):  # smaller both ways: no person, and no crop can be cut from it
                people.append(PersonBox(image_id, info["file_name"], (x, y, w, h), score,
                                        (info["width"], info["height"])))
    return people


# --- pipelines -----------------------------------------------------------------------------------------------


class ImagesAsRead:
    """Each image as eval-coco's first read of it found it (`file_identity`): every pipeline reads the images again,
    and so does the proof per keypoint, and an image replaced in between was scored and proven as it was then
    (round 55's leftover): the pipelines compared saw other pixels."""

    def __init__(self) -> None:
        self.identities: dict[str, tuple[int, ...] | None] = {}

    def read(self, path: Path) -> np.ndarray:
        self.check(path)
        image = read_image(path)
        self.check(path)  # replaced while it was decoded
        return image

    def check(self, path: Path, linked: bool = False) -> None:
        """Refuses the image at `path` if it is not the file the first read found there. `linked`: the proof has just
        made a hard link to it, which changes its change time (ctime) and nothing else: held to the rest, and to
        the identity it has now from here on."""
        try:
            found = file_identity(path)
        except OSError:  # removed: `read_image` says so on a first read
            found = None
        held = self.identities.setdefault(os.path.realpath(path), found)
        if linked and held is not None and found is not None and held[:4] == found[:4]:  # (dev, inode, size, mtime)
            self.identities[os.path.realpath(path)] = held = found
        if held != found:
            raise GraphsurgeryError("the image changed while the command ran (rewritten or replaced after a "
                                    "pipeline read it)", path=path,
                                    fix="run the command again once nothing writes to the images")


def _annotated_image(folder: Path, person: PersonBox, annotations: Path, held: ImagesAsRead) -> np.ndarray:
    """The decoded image `person` is in, of the size the annotations give it: a folder of resized (or rotated)
    copies put every box and keypoint in the wrong pixels, and both pipelines agreed on the wrong AP. An EXIF
    orientation tag is not a rotation: the stored pixels are decoded (`read_image`)."""
    path = inside(folder, person.file_name, "the annotation's file_name", annotations)
    image = held.read(path)
    (width, height), (real_width, real_height) = person.image_size, image.shape[1::-1]
    if (real_width, real_height) != (width, height):
        raise GraphsurgeryError(f"image {path} is {real_width} × {real_height} px, but the annotations give it "
                                f"{width:g} × {height:g}", path=annotations,
                                fix="give the folder of the annotated images themselves (not resized or rotated "
                                    "copies), or correct the image's width and height in the annotations")
    return image


@dataclass
class CallerCrops:
    """Each person's crop as the patched model's caller feeds it, with its center and scale (one image decoded at
    a time, so memory does not grow with the data set)."""

    folder: Path
    size: tuple[int, int]
    tensor: InputTensor
    dtype: str
    annotations: Path  # where the file names come from (named in errors)
    held: ImagesAsRead = field(default_factory=ImagesAsRead)  # shared by a command's pipelines

    def __call__(self, people: list[PersonBox]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        loaded: tuple[str, np.ndarray] | None = None
        for person in people:
            if loaded is None or loaded[0] != person.file_name:
                loaded = (person.file_name, _annotated_image(self.folder, person, self.annotations, self.held))
            center, scale, crop = crops.person_crop(loaded[1], person.box, self.size)
            yield as_caller_tensor(crop, self.tensor, self.dtype)[None], center[None], scale[None]


@dataclass
class WholeImages:
    """Each image whole, as the caller of a model that crops in the graph feeds it ([1, H, W, C]), with its boxes."""

    folder: Path
    tensor: InputTensor
    dtype: str
    annotations: Path  # where the file names come from (named in errors)
    held: ImagesAsRead = field(default_factory=ImagesAsRead)  # shared by a command's pipelines

    def __call__(self, people: list[PersonBox]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each image with its boxes, at most BOXES_PER_CALL of them at a time: the graph crops every box it is
        given (twice, with the flip test) in one call, and 2,000 people in one image ran out of memory after 46 s
        (each box's answer is its own: the calls do not change them)."""
        for _, group in itertools.groupby(people, key=lambda person: person.file_name):
            group = list(group)
            image = as_caller_tensor(_annotated_image(self.folder, group[0], self.annotations, self.held), self.tensor,
                                     self.dtype)[None]
            boxes = np.array([person.box for person in group], np.float32).reshape(-1, 4)
            for part in in_parts(boxes):
                yield image, part


def _check_image_pixels(recipe: Recipe, path: Path) -> None:
    """A model that crops in the graph must also map back in the graph: eval-coco has no crop to map from."""
    from graphsurgery.steps.to_image import ToImage

    steps = recipe.output.steps if recipe.output else ()
    if not any(isinstance(step, ToImage) and step.mode == "boxes" for step in steps):
        raise GraphsurgeryError("the recipe crops person boxes in the graph but its keypoints are not in image "
                                "pixels", path=path, fix="end its output steps with `to_image: {mode: boxes}`")


TopDownCall = Callable[[Callable, np.ndarray, np.ndarray], dict[str, np.ndarray]]


def _top_down_call(recipe: Recipe, facts: ModelFacts, plain_name: str | None, image_name: str) -> TopDownCall:
    """(run, image, boxes) → keypoints and scores: the patched model takes them as they are; the unpatched
    pipeline (`plain_name` given) runs the twins around the plain model, in the model's own batch size."""

    def patched(run, image, boxes):
        return _named(run({image_name: image, "boxes": boxes}), recipe)

    def unpatched(run, image, boxes):
        extras = {"boxes": boxes}
        outputs = run_in_model_batches(run, plain_name, preprocess(recipe, image, facts, extras), {}, facts)
        return _named(unpatched_outputs(recipe, facts, outputs, extras), recipe)

    return patched if plain_name is None else unpatched


def _run_whole_images(backend: str, model: Path, people: list[PersonBox], whole: WholeImages, call: TopDownCall,
                      advance: Callable[[int], None]) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Every image with its boxes, up to BOXES_PER_CALL a call (people come grouped by image): ([K, 2] keypoints,
    [K] scores) per person, in image pixels."""
    answers = []
    with open_runner(backend, model) as run:
        for image, boxes in whole(people):
            answers += box_keypoints(call(run, image, boxes), model)
            advance(len(answers))
    return answers, run.precision


def _check_keypoint_recipe(recipe: Recipe) -> None:
    """A recipe whose output steps make something else than keypoints and scores (a detector's boxes, a
    classifier's indices) has nothing COCO keypoint AP could score: the YOLOv8 recipe ended in the twins' "pass
    caller_shape", an API argument, after the annotations were read (round 44). A recipe without output steps is
    taken: the model's own outputs may be keypoints and scores."""
    made = recipe.output.output_names() if recipe.output else {}
    if recipe.output and not {KEYPOINTS, SCORES} <= set(made):
        raise GraphsurgeryError(f"the recipe's output steps make {', '.join(made) or 'no outputs'}, not keypoints "
                                "and scores, which COCO keypoint AP scores", path=recipe.source,
                                fix="eval-coco needs a pose recipe whose output steps produce keypoints and scores "
                                    "(heatmap_argmax, to_image), e.g. recipes/hrnet_coco_pose.yaml")


def box_keypoints(outputs: dict[str, np.ndarray], model: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """([K, 2] keypoints, [K] scores) of each box of one image, in image pixels."""
    missing = [name for name in (KEYPOINTS, SCORES) if name not in outputs]
    if missing:
        raise GraphsurgeryError(f"the pipeline has no {' or '.join(missing)} output", path=model,
                                fix="eval-coco needs keypoints and scores outputs")
    return [(np.asarray(kp, np.float64), np.asarray(sc, np.float64).reshape(-1))
            for kp, sc in zip(outputs[KEYPOINTS], outputs[SCORES])]


Answer = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # keypoints [K, 2], scores [K], center, scale


def _run(backend: str, model: Path, people: list[PersonBox], caller: CallerCrops,
         feed: Callable[[np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]],
         read: Callable[[dict[str, np.ndarray], dict[str, np.ndarray], tuple[int, ...]], dict[str, np.ndarray]],
         extras: list[str], advance: Callable[[int], None]) -> tuple[list[Answer], str]:
    """Stream every crop through `model`: `feed(x, extras)` makes a request, `read(outputs, extras, x's shape)` the
    results (the crop is the caller's image of a recipe that maps back to it: round 55's whole-image letterbox with
    `to_image: {mode: image}` ended in the twins' "pass caller_shape")."""
    boxes: list[dict[str, np.ndarray]] = []
    shapes: list[tuple[int, ...]] = []

    def requests():
        for x, center, scale in caller(people):
            boxes.append({"center": center, "scale": scale})
            shapes.append(x.shape)
            yield feed(x, {name: boxes[-1][name] for name in extras})

    answers = []
    with open_stream(backend, model) as run:
        for index, outputs in enumerate(run(requests())):
            box = boxes[index]
            keypoints, scores = crop_keypoints(read(outputs, {name: box[name] for name in extras}, shapes[index]))
            answers.append((keypoints, scores, box["center"][0], box["scale"][0]))
            advance(index + 1)
    return answers, run.precision


def _named(outputs: dict[str, np.ndarray], recipe: Recipe) -> dict[str, np.ndarray]:
    """The keypoints and scores results under their step names, whatever the recipe calls the graph outputs."""
    names = recipe.output.output_names() if recipe.output else {}
    return {key: outputs[names.get(key, key)] for key in (KEYPOINTS, SCORES) if names.get(key, key) in outputs}


def crop_keypoints(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """([K, 2] keypoints, [K] scores) of the single crop."""
    missing = [name for name in (KEYPOINTS, SCORES) if name not in outputs]
    if missing:
        raise GraphsurgeryError(f"the pipeline has no {' or '.join(missing)} output", fix="eval-coco needs a pose "
                                "recipe whose output steps produce keypoints and scores (heatmap_argmax, to_image)")
    return (np.asarray(outputs[KEYPOINTS][0], np.float64), np.asarray(outputs[SCORES][0], np.float64).reshape(-1))


def person_result(person: PersonBox, answer: Answer, size: tuple[int, int], in_image_pixels: bool) -> dict:
    """One COCO keypoint result in original-image pixels, rescored as the authors do."""
    keypoints, scores, center, scale = answer
    if not in_image_pixels:
        keypoints = crops.to_original(keypoints, center, scale, size)
    return keypoint_result(person.image_id, keypoints, scores, person.score)


def keypoint_stats(gt, results: list[dict], image_ids: list[int], model: Path | None = None) -> list[float]:
    """COCO keypoint AP and AR of `results`. A person of another number of joints than COCO's 17 (a 16-joint MPII
    model) is refused naming `model`: pycocotools' OKS failed on it, an internal error (round 49)."""
    from pycocotools.cocoeval import COCOeval

    joints = next((len(r["keypoints"]) // 3 for r in results if len(r["keypoints"]) != 3 * len(KEYPOINT_NAMES)),
                  None)
    if joints is not None:
        raise GraphsurgeryError(f"the pipeline gives {joints} joints per person; COCO keypoint AP scores "
                                f"COCO's {len(KEYPOINT_NAMES)}", path=model,
                                fix=f"evaluate a model with {len(KEYPOINT_NAMES)} heatmaps in COCO's joint order")

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        evaluation = COCOeval(gt, dt, "keypoints")
        evaluation.params.imgIds = image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]
