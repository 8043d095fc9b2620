"""Top-down pose on photos with a patched model: person boxes → crops (the authors' way) → model → keypoints.

The patched model takes uint8 NHWC BGR crops (recipes/hrnet_coco_pose*.yaml). With `center`/`scale` inputs
(hrnet_coco_pose_image.yaml) it returns keypoints in original-image pixels already; without them, in crop pixels,
which are mapped back here with the crop's inverse affine transform. The top-down model
(hrnet_coco_topdown.yaml) takes the whole image and the `boxes` and does all of it in the graph: no crop is cut
here. The chained model (`graphsurgery chain`: a detector feeding the top-down model) takes the image alone and
finds the people itself. Results become COCO keypoint results (`keypoints.json`), a `run.json` that labels them
(backend, precision, weights), and debug images.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from graphsurgery import crops
from graphsurgery.boxes import Box, load_boxes, unmatched_note
from graphsurgery.callables import call_back
from graphsurgery.cocoformat import keypoint_result
from graphsurgery.defaults import DEFAULT_BATCH, DEFAULT_MIN_SCORE
from graphsurgery.draw import MONTAGE_MAX_PERSONS
from graphsurgery.errors import ArgumentError, GraphsurgeryError, check_callback, finite, printable, whole
from graphsurgery.images import list_images, opencv, read_image
from graphsurgery.limits import write_fix
from graphsurgery.longrun import say_long_run
from graphsurgery.modelio import command, model_paths
from graphsurgery.ownoutputs import carried_forward, earlier_outputs, refresh_record, refuse_replacing
from graphsurgery.quantize import int8_agreement
from graphsurgery.runners import ModelSignature, Port, Runner, model_signature, open_runner, precision_note
from graphsurgery.safeio import (
    NAME_MAX,
    InputFiles,
    input_path,
    output_path,
    same_file,
    staged_folder,
)
from graphsurgery.samples import MAX_BATCH_BYTES, check_taken, dims_shown, takes_extra
from graphsurgery.steps.topdown import BOXES as CROP_BOXES

#: The extra inputs of `to_image mode: original` (recipes/hrnet_coco_pose_image.yaml), and of `crop_boxes`.
CENTER, SCALE, BOXES = "center", "scale", "boxes"
KEYPOINTS, SCORES = "keypoints", "scores"
#: The chained model's outputs (graphsurgery.chaining): people found in the graph, and their keypoints
PERSON_BOXES, KEYPOINT_SCORES = "person_boxes", "keypoint_scores"
MAX_RUN_JSON_BYTES = 50_000_000  # an earlier run's record: one entry per image
MAX_JPEG_SIDE = 65_500  # libjpeg's largest side: a debug image of a 70,000 px wide PNG could not be written


@dataclass(frozen=True)
class PoseModel:
    """How to feed a patched pose model and read it, found from its signature."""

    image_input: str
    crop_size: tuple[int, int]  # (W, H)
    batch: int | None  # the static batch, or None when dynamic
    takes_boxes: bool  # has `center`/`scale` inputs: keypoints come in original-image pixels
    heatmaps: str | None  # the kept heatmap output, if any
    top_down: bool = False  # takes the whole image and `boxes`: crops are cut in the graph
    finds_people: bool = False  # takes the whole image alone: a detector in the graph finds the people (chain)
    whole_image: Port | None = None  # the input a top-down or chained model takes whole images at (their sizes)

    @classmethod
    def of(cls, signature: ModelSignature, path: Path) -> PoseModel:
        images = [p for p in signature.inputs if p.dtype == "uint8" and len(p.shape) == 4 and p.shape[3] == 3]
        others = {p.name for p in signature.inputs} - {p.name for p in images[:1]}
        outputs = {p.name: p for p in signature.outputs}
        if len(images) == 1 and not others and {PERSON_BOXES, KEYPOINTS, KEYPOINT_SCORES} <= set(outputs):
            return cls(images[0].name, (0, 0), None, True, None, top_down=True, finds_people=True,
                       whole_image=images[0])
        if len(images) != 1 or others not in (set(), {CENTER, SCALE}, {BOXES}) or not {KEYPOINTS, SCORES} <= set(
                outputs):
            raise GraphsurgeryError(
                f"not a patched pose model: inputs {_ports(signature.inputs)}, outputs {_ports(signature.outputs)}",
                path=path,
                fix="apply recipes/hrnet_coco_pose.yaml (or hrnet_coco_pose_image.yaml, hrnet_coco_topdown.yaml) to "
                "the plain model first: run needs a uint8 [N,H,W,3] input and keypoints/scores outputs",
            )
        image = images[0]
        if others == {BOXES}:
            port = next(p for p in signature.inputs if p.name == BOXES)
            if not takes_extra(port, CROP_BOXES):
                raise GraphsurgeryError(f"input {BOXES!r} is {port.dtype} {dims_shown(port.shape)}; run feeds each "
                                        f"image's person boxes as {np.dtype(CROP_BOXES.dtype).name} "
                                        f"{dims_shown(CROP_BOXES.shape)}", path=path,
                                        fix="apply recipes/hrnet_coco_topdown.yaml to the plain model and run "
                                            "that (an IR: converted without --input-shape boxes=…)")
            return cls(image.name, (0, 0), None, True, None, top_down=True, whole_image=image)
        height, width = image.shape[1:3]
        if height is None or width is None:
            if _resizes(path):
                raise GraphsurgeryError(
                    f"input {image.name!r} takes images of any size ({_ports([image])}): its recipe resizes (or "
                    "centre-crops) them, and run cuts crops of one fixed size", path=path,
                    fix="patch the plain model with recipes/hrnet_coco_topdown.yaml (crops cut in the graph) or "
                        "hrnet_coco_pose_image.yaml for run, or call this model directly on whole images")
            raise GraphsurgeryError(
                f"the crop size of input {image.name!r} is not fixed ({_ports([image])})",
                path=path,
                fix="export the model with a fixed input size",
            )
        heatmaps = [p.name for p in signature.outputs if p.name not in (KEYPOINTS, SCORES) and len(p.shape) == 4]
        return cls(image.name, (width, height), image.shape[0], bool(others), heatmaps[0] if heatmaps else None)


def _resizes(path: Path) -> bool:
    """Whether the ONNX model's spliced input steps resize or centre-crop (free H × W): its input size is the
    recipe's doing, and "export the model with a fixed input size" was no fix (round 69)."""
    from graphsurgery.modelio import load_model
    from graphsurgery.staged import SPLICED_INPUT

    if Path(path).suffix.lower() != ".onnx":
        return False
    steps = {node.name[len(SPLICED_INPUT):].split("/", 1)[0] for node in load_model(path).proto.graph.node
             if node.name.startswith(SPLICED_INPUT)}
    return bool(steps & {"resize", "center_crop"})


def _ports(ports: Sequence[Port]) -> str:
    return ", ".join(f"{p.name} {p.dtype}[{','.join('?' if d is None else str(d) for d in p.shape)}]" for p in ports)


@dataclass
class Person:
    """One person box and what the model found in its crop (keypoints in original-image pixels)."""

    box: Box
    center: np.ndarray
    scale: np.ndarray
    crop: np.ndarray | None  # kept for the debug montage's persons only
    keypoints: np.ndarray | None = None  # [K, 2]
    scores: np.ndarray | None = None  # [K]
    heatmaps: np.ndarray | None = None  # [K, h, w]


def estimate(run: Runner, model: PoseModel, image: np.ndarray, boxes: Sequence[Box], batch: int, *,
             keep: int = MONTAGE_MAX_PERSONS) -> tuple[list[Person], float]:
    """Crop the boxes one batch at a time, run each batch, map keypoints back to the image; returns persons and
    model ms. Crops and heatmaps are kept for the first `keep` persons only (the debug montage shows no more): an
    image with thousands of boxes then needs the memory of one batch, not of every crop at once."""
    if model.finds_people:
        return _people_in_graph(run, model, image)
    if model.top_down:
        return _estimate_in_graph(run, model, image, boxes, batch)
    size = model.batch or batch
    persons: list[Person] = []
    elapsed = 0.0
    for start in range(0, len(boxes), size):
        chunk = [Person(box, *crops.person_crop(image, box, model.crop_size)) for box in boxes[start:start + size]]
        pad = size - len(chunk) if model.batch else 0  # a static batch is filled up with copies of the last crop
        feeds = {model.image_input: _stacked([p.crop for p in chunk], pad)}
        if model.takes_boxes:
            feeds[CENTER] = _stacked([p.center for p in chunk], pad)
            feeds[SCALE] = _stacked([p.scale for p in chunk], pad)
        began = time.perf_counter()
        outputs = run(feeds)
        elapsed += time.perf_counter() - began
        for index, person in enumerate(chunk):
            points = outputs[KEYPOINTS][index]
            if not model.takes_boxes:  # the authors' transform_preds, sized by the crop instead of the heatmap
                points = crops.to_original(points, person.center, person.scale, model.crop_size)
            person.keypoints = np.asarray(points, dtype=np.float32)
            person.scores = np.asarray(outputs[SCORES][index], dtype=np.float32).reshape(-1)
            if len(persons) + index < keep:
                person.heatmaps = outputs[model.heatmaps][index].copy() if model.heatmaps else None
            else:
                person.crop = None
        persons += chunk
    return persons, elapsed * 1000.0


def _estimate_in_graph(run: Runner, model: PoseModel, image: np.ndarray, boxes: Sequence[Box], batch: int
                       ) -> tuple[list[Person], float]:
    """`estimate` for the top-down model: the image and up to `batch` boxes per call; the graph crops, runs,
    refines and maps back, so keypoints come in image pixels and there are no crops to keep."""
    persons: list[Person] = []
    elapsed = 0.0
    for start in range(0, len(boxes), batch):
        chunk = list(boxes[start:start + batch])
        began = time.perf_counter()
        outputs = run({model.image_input: image[None], BOXES: np.array([list(b)[:4] for b in chunk], np.float32)})
        elapsed += time.perf_counter() - began
        for index, box in enumerate(chunk):
            center, scale = crops.box_to_center_scale(box)
            persons.append(Person(box, center, scale, None, np.asarray(outputs[KEYPOINTS][index], np.float32),
                                  np.asarray(outputs[SCORES][index], np.float32).reshape(-1)))
    return persons, elapsed * 1000.0


def _people_in_graph(run: Runner, model: PoseModel, image: np.ndarray) -> tuple[list[Person], float]:
    """`estimate` for the chained model: the image alone; the graph finds the people (corners x1, y1, x2, y2,
    here COCO x, y, w, h boxes) and their keypoints in image pixels."""
    began = time.perf_counter()
    outputs = run({model.image_input: image[None]})
    elapsed = time.perf_counter() - began
    persons = []
    for corners, keypoints, scores in zip(outputs[PERSON_BOXES], outputs[KEYPOINTS], outputs[KEYPOINT_SCORES]):
        box = (float(corners[0]), float(corners[1]), float(corners[2] - corners[0]), float(corners[3] - corners[1]))
        center, scale = crops.box_to_center_scale(box)
        persons.append(Person(box, center, scale, None, np.asarray(keypoints, np.float32),
                              np.asarray(scores, np.float32).reshape(-1)))
    return persons, elapsed * 1000.0


def _check_found(persons: Sequence[Person], model: Path, image: Path) -> None:
    """The people a chained model found have finite boxes and keypoints: a detector's NaN boxes were an internal
    error while drawing (and would have been NaN, which is not JSON, in keypoints.json)."""
    for person in persons:
        if not (np.isfinite(person.box).all() and np.isfinite(person.keypoints).all()):
            shown = ", ".join(f"{v:g}" for v in person.box)
            raise GraphsurgeryError(f"on {printable(image.name)} the model found a person whose box ({shown}) or "
                                    "keypoints are not finite numbers", path=model,
                                    fix="check the detector chained into it: its boxes must be finite image pixels")


def _stacked(values: list[np.ndarray], pad: int) -> np.ndarray:
    return np.stack(values + values[-1:] * pad)


#: the (height, width) of the blank image fed to a model that crops in the graph, whose signature gives no crop size
#: (`PoseModel.crop_size` is (0, 0)): the graph crops every box to its network's size, whatever the image's
BLANK_HW = (64, 48)


def blank_hw(model: PoseModel) -> tuple[int, int]:
    """BLANK_HW, or the height and width the model's whole-image input fixes (round 75: a top-down model patched by
    a recipe of `tensor: {shape: [1, 480, 640, 3]}` was fed 64 × 48, an internal error)."""
    fixed = model.whole_image.shape[1:3] if model.whole_image is not None else (None, None)
    return tuple(side or blank for side, blank in zip(fixed, BLANK_HW))


def warm_up(run: Runner, model: PoseModel) -> None:
    """One untimed call: the first inference pays for lazy initialisation, which is no image's latency."""
    if model.finds_people:
        run({model.image_input: np.zeros((1, *blank_hw(model), 3), np.uint8)})
        return
    if model.top_down:
        height, width = blank_hw(model)
        run({model.image_input: np.zeros((1, height, width, 3), np.uint8),
             BOXES: np.array([[0, 0, width, height]], np.float32)})
        return
    size = model.batch or 1
    feeds = {model.image_input: np.zeros((size, model.crop_size[1], model.crop_size[0], 3), dtype=np.uint8)}
    if model.takes_boxes:
        feeds[CENTER] = np.zeros((size, 2), dtype=np.float32)
        feeds[SCALE] = np.ones((size, 2), dtype=np.float32)
    run(feeds)


#: Crops past which `run` times one batch first and says how long the run will take, when that is over a minute
#: (`longrun.LONG_RUN_SECONDS`, the threshold `bench` and `eval-coco` share)
LONG_RUN_CROPS = 200


def announce_long_run(run: Runner, model: PoseModel, crop_count: int, batch: int) -> float | None:
    """Seconds `crop_count` crops will take (cropping, the model, mapping back, drawing every joint), estimated on
    one batch of blank crops, written to stderr when over a minute: a run asked to be long (20,000 boxes on one
    photo) is not a hang, but it ran for minutes with nothing on the screen (the progress bar counts images). None
    when there is little to do. The model's time alone (2.6 ms a crop of the tiny HRNet) said a third of the time
    the run took: drawing the skeletons costs as much again."""
    from graphsurgery.draw import draw_skeleton

    if model.finds_people or crop_count <= LONG_RUN_CROPS:
        return None
    size = min(model.batch or batch, crop_count)
    # the top-down model's crop size is (0, 0): on a 0 × 0 image its graph failed its own crop Gather (ONNX Runtime,
    # "a node graphsurgery added fails") or OpenCV drew on it (OpenVINO: an internal error; round 44)
    width, height = model.crop_size if not model.top_down else blank_hw(model)[::-1]
    box = (0.0, 0.0, float(width), float(height))
    blank = np.zeros((height, width, 3), np.uint8)
    times = []
    for _ in range(2):  # the first call at a new batch size pays the runtime's allocations: 2× the rate
        began = time.perf_counter()
        persons, _ = estimate(run, model, blank, [box] * size, batch, keep=0)
        draw_skeleton(blank, [p.box for p in persons], [p.keypoints for p in persons], [p.scores for p in persons],
                      -math.inf)
        times.append(time.perf_counter() - began)
    per_crop = min(times) / size
    seconds = per_crop * crop_count
    say_long_run(seconds, f"{crop_count:,} crops to run", f"{per_crop * 1000:.1f} ms per crop, measured on one batch",
                 "fewer images, or fewer boxes in --boxes")
    return seconds


def coco_results(persons: Sequence[Person], image_id: int, file_name: str) -> list[dict]:
    """COCO keypoint results, scored as eval-coco scores them (`cocoformat`; run's boxes carry no score: 1)."""
    return [keypoint_result(image_id, person.keypoints, person.scores, file_name=file_name,
                            bbox=[float(v) for v in person.box]) for person in persons]


def image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO image ids: the file stems when all are numbers (COCO's own 000000123456.jpg naming), else 1, 2, …"""
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


@dataclass
class ImageSummary:
    file_name: str
    image_id: int
    persons: int
    latency_ms: float
    pose_image: str
    heatmap_image: str | None


@dataclass
class RunSummary:
    """What `run.json` records: the model, how it ran (backend, precision, weights, threads) and each image."""

    model: str
    backend: str
    precision: str  # what the backend computed in
    precision_requested: str
    weights: str  # FP32 / FP16, from the IR's rt_info or the ONNX initializers
    threads: int | None
    batch: int
    min_score: float
    keypoints: str
    images: list[ImageSummary] = field(default_factory=list)
    precision_note: str | None = None  # e.g. bf16 without AMX: slower than f32 (runners.precision_note)
    notes: list[str] = field(default_factory=list)  # e.g. an image given twice, run once
    earlier_outputs: list[str] = field(default_factory=list)  # earlier runs' files still beside it: a run may replace

    @property
    def label(self) -> str:
        """E.g. "openvino f32, FP32 weights", or "openvino bf16 requested, ran f32, FP16 weights"."""
        ran = self.precision if self.precision == self.precision_requested else (
            f"{self.precision_requested} requested, ran {self.precision}")
        return f"{self.backend} {ran}, {self.weights} weights"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@command
def run_pose(model: str | Path, images: Sequence[str | Path], outdir: str | Path, *, backend: str = "openvino",
             boxes: str | Path | None = None, precision: str = "f32", threads: int | None = None,
             batch: int = DEFAULT_BATCH, min_score: float = DEFAULT_MIN_SCORE,
             on_image: Callable[[ImageSummary], None] | None = None) -> RunSummary:
    """Pose on every image; writes OUTDIR/keypoints.json, OUTDIR/run.json and OUTDIR/<stem>_pose.jpg (+ heatmaps)."""
    from graphsurgery.draw import draw_skeleton, heatmap_montage

    model, outdir = input_path(model, "model file"), output_path(outdir, "folder")
    if not whole(batch) or batch < 1:  # 2.5, "8" were TypeErrors, True a batch of 1
        raise GraphsurgeryError(f"batch={batch!r} (--batch) is not a positive number of crops", fix="give 1 or more")
    if not finite(min_score):  # run.json would hold NaN, which is not JSON
        raise GraphsurgeryError(f"min_score={min_score!r} (--min-score) is not a finite number",
                                fix="give a score, e.g. 0.2")
    batch, min_score = int(batch), float(min_score)  # numpy's scalars pass the checks, not into run.json
    threads = int(threads) if whole(threads) else threads  # bounded where the runtime gets it
    check_callback("on_image", on_image, "ImageSummary")
    if isinstance(images, (str, os.PathLike)):  # one path, not a sequence of one-character names
        images = [images]
    if not isinstance(images, Iterable):  # None: "'NoneType' object is not iterable"
        raise ArgumentError(f"images is a path or a list of paths, not {type(images).__name__}")
    boxes = input_path(boxes, "boxes file") if boxes is not None else None
    paths, notes = _distinct(list_images([input_path(p, "image") for p in images]))
    signature = model_signature(model)
    pose_model = PoseModel.of(signature, model)
    if (pose_model.batch or batch) * math.prod(pose_model.crop_size) * 3 > MAX_BATCH_BYTES:  # crops made at once
        width, height = pose_model.crop_size  # --batch 10^12 with 100,000 boxes: 15 GB of crops
        if pose_model.batch:
            raise GraphsurgeryError(f"the model's batch is fixed at {pose_model.batch:,} crops of {width} × {height}, "
                                    f"more than {MAX_BATCH_BYTES >> 20} MiB per call", path=model,
                                    fix="export the model with a dynamic batch or a small one")
        raise GraphsurgeryError(f"batch={batch:,} (--batch) crops of {width} × {height} are more than "
                                f"{MAX_BATCH_BYTES >> 20} MiB per call", path=model, fix=f"give a batch of at most "
                                f"{MAX_BATCH_BYTES // (3 * height * width):,}")
    if pose_model.top_down and batch > crops.BOXES_PER_CALL:
        # the graph crops every box of a call at once, at a size its signature does not give (the bound above reads
        # it as 0 × 0): `--batch 20000` with 20,000 boxes ran out of memory (round 44). As eval-coco and verify do
        notes.append(f"the model crops in the graph: at most {crops.BOXES_PER_CALL} boxes a call, not {batch:,} "
                     f"(--batch)")
        batch = crops.BOXES_PER_CALL
    if pose_model.finds_people and boxes is not None:
        raise GraphsurgeryError("this model finds the people itself (a detector is chained into it)", path=boxes,
                                fix="give no --boxes")
    person_boxes = load_boxes(Path(boxes)) if boxes is not None else None
    if person_boxes is not None and not any(path.name in person_boxes for path in paths):
        raise GraphsurgeryError(f"the boxes file has boxes for none of the {len(paths)} images (it names e.g. "
                                f"{', '.join(map(repr, list(person_boxes)[:3])) or 'nothing'})", path=boxes,
                                fix="key the boxes by the images' file names")
    if person_boxes is not None and (note := unmatched_note(person_boxes, paths, Path(boxes))):
        notes.append(note)
    if outdir.exists() and not outdir.is_dir():
        raise GraphsurgeryError("the output folder is a file", path=outdir, fix="choose a folder with -o")
    inputs = [*model_paths(model), *paths, *([Path(boxes)] if boxes is not None else [])]
    if measured := int8_agreement(model):  # int8's price travels with the IR: say it beside its results
        notes.append(f"int8 IR, as `convert` measured it: {measured}")
    planned = ["keypoints.json", "run.json", *_debug_images(paths, bool(pose_model.heatmaps))]
    with open_runner(backend, model, precision=precision, threads=threads) as run, \
            _staged(outdir, inputs, planned) as stage:
        warm_up(run, pose_model)
        announce_long_run(run, pose_model, len(paths) if person_boxes is None else
                          sum(len(person_boxes.get(path.name, [])) for path in paths), batch)
        summary = RunSummary(str(model), backend, run.precision, precision, signature.weights, threads,
                             pose_model.batch or batch, min_score, str(outdir / "keypoints.json"),
                             precision_note=precision_note(run.precision), notes=notes)
        results: list[dict] = []
        for path, image_id in zip(paths, image_ids(paths)):
            image = read_image(path)
            if person_boxes is not None:
                person_boxes.check_image(path, image)
            if pose_model.whole_image is not None:
                check_taken(image, pose_model.whole_image, "NHWC", path)
            image_boxes = (
                person_boxes.get(path.name, []) if person_boxes is not None else [crops.whole_image_box(image)]
            )
            persons, latency = estimate(run, pose_model, image, image_boxes, batch)
            if pose_model.finds_people:
                _check_found(persons, Path(model), path)
            results += coco_results(persons, image_id, path.name)
            pose_image = f"{path.stem}_pose.jpg"
            _write_image(stage / pose_image, draw_skeleton(image, [p.box for p in persons],
                                                           [p.keypoints for p in persons],
                                                           [p.scores for p in persons], min_score, summary.label))
            heatmap_image = None
            if pose_model.heatmaps and persons:
                heatmap_image = f"{path.stem}_heatmaps.jpg"
                _write_image(stage / heatmap_image,
                             heatmap_montage([p.crop for p in persons[:MONTAGE_MAX_PERSONS]],
                                             [p.heatmaps for p in persons[:MONTAGE_MAX_PERSONS]]))
            entry = ImageSummary(path.name, image_id, len(persons), round(latency, 3), str(outdir / pose_image),
                                 str(outdir / heatmap_image) if heatmap_image else None)
            summary.images.append(entry)
            if on_image:
                call_back(on_image, entry)
        (stage / "keypoints.json").write_text(json.dumps(results))
        summary.earlier_outputs = carried_forward(outdir, _earlier_outputs(outdir), map(os.path.basename, [
            "run.json", *_run_outputs(asdict(summary))]))
        (stage / "run.json").write_text(summary.to_json())
    return summary


@contextmanager
def _staged(outdir: Path, inputs: Sequence[Path], planned: Sequence[str] = ()) -> Iterator[Path]:
    """A scratch folder whose files move into `outdir` only when the whole run succeeded: a bad image halfway
    through a folder leaves no partial output behind, and each file appears whole (a rename in one file system).
    None of them may land on one of the run's `inputs` (`-o` on the image folder, with an image named like a debug
    image), nor on a file an earlier run did not write (its run.json says which it did): then nothing moves. The
    `planned` names are checked before the work too (a second run with `-o` on its image folder, whose first run's
    debug images are now images, was refused only after every image had run)."""
    read = InputFiles(inputs)
    _refuse_replacing(outdir, planned, read)

    def before_moving(produced: list[Path]) -> None:  # under the folder's lock: as it is now, with another run's
        _refuse_replacing(outdir, [path.name for path in produced], read)  # files placed while this one ran
        refresh_record(produced, "run.json", "earlier_outputs", outdir, _earlier_outputs(outdir), indent=2)

    try:
        with staged_folder(outdir, ".graphsurgery-run-", before_moving) as stage:
            yield stage
    except OSError as exc:
        raise GraphsurgeryError(f"could not write the results ({exc.strerror or exc})", path=outdir,
                                fix=write_fix(exc, "free disk space or choose another folder")) from None


def _debug_images(paths: Sequence[Path], heatmaps: bool) -> list[str]:
    """The debug images' names, `<stem>_pose.jpg` (and `<stem>_heatmaps.jpg`), refused naming the image when the
    system cannot hold them: an image named with up to 255 bytes is valid, a debug image's name 13 bytes longer
    is not, and `run` failed after every image had run, saying "could not write the results (File name too long)
    — fix: free disk space" (round 63)."""
    kinds = ("pose", "heatmaps")[:1 + heatmaps]
    most = NAME_MAX - max(len(f"_{kind}.jpg") for kind in kinds)
    for path in paths:
        if len(os.fsencode(path.stem)) > most:
            raise GraphsurgeryError(f"its name is {len(os.fsencode(path.stem))} bytes before the extension, and its "
                                    f"debug images' names ({path.stem[:20]}…_{kinds[-1]}.jpg) would be longer than "
                                    f"the {NAME_MAX} the system takes", path=path,
                                    fix=f"rename the image: at most {most} bytes before its extension")
    return [f"{path.stem}_{kind}.jpg" for path in paths for kind in kinds]


def _refuse_replacing(outdir: Path, names: Sequence[str], inputs: InputFiles) -> None:
    """Refuse results (file names in `outdir`) that would land on an input, or on a file an earlier run did not
    write (as its run.json lists them: those a new run may replace, and no others)."""
    refuse_replacing(outdir, names, inputs, _earlier_outputs(outdir),
                     "write into an empty folder (-o), or move that file away")


def _earlier_outputs(outdir: Path) -> set[str]:
    """The files in `outdir` that earlier runs wrote, as the last one's run.json says: those a run may replace."""
    return earlier_outputs(outdir / "run.json", MAX_RUN_JSON_BYTES, _run_outputs) if outdir.is_dir() else set()


def _run_outputs(summary: dict) -> list[str]:
    """The files a run's record (run.json) says it wrote: the keypoints and each image's debug images, and the
    earlier runs' files it found still there (a record from before those were listed has none)."""
    return [summary["keypoints"], *(image[key] for image in summary["images"]
                                    for key in ("pose_image", "heatmap_image") if image.get(key)),
            *summary.get("earlier_outputs", [])]


def _distinct(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The images, each once, and notes on those given more than once: the same file twice under its name (`run
    a.jpg a.jpg`, or a folder and a file in it) is run once; two files of one name, or whose debug images would
    have one name (a.jpg and a.png both make a_pose.jpg), are refused, since results and boxes refer to images by
    file name."""
    seen: dict[str, Path] = {}
    stems: dict[str, Path] = {}
    kept, notes = [], []
    for path in paths:
        if path.name in seen and same_file(seen[path.name], path):
            notes.append(f"{str(path)!r} is given twice (also as {str(seen[path.name])!r}); it is run once")
            continue
        if path.name in seen:
            raise GraphsurgeryError(f"two images are named {path.name!r} ({seen[path.name]} and {path})", path=path,
                                    fix="rename one: results and boxes refer to images by file name")
        if path.stem in stems:
            raise GraphsurgeryError(f"{stems[path.stem].name!r} and {path.name!r} would both write the debug image "
                                    f"{path.stem}_pose.jpg", path=path, fix="rename one of the two images")
        seen[path.name], stems[path.stem] = path, path
        kept.append(path)
    return kept, notes


def _write_image(path: Path, image: np.ndarray) -> None:
    """A debug JPEG; an image wider or taller than JPEG allows (65,500 px) is shrunk to fit, not refused at the end."""
    cv2 = opencv()

    side = max(image.shape[:2])
    if side > MAX_JPEG_SIDE:
        factor = MAX_JPEG_SIDE / side
        size = (max(1, min(MAX_JPEG_SIDE, round(image.shape[1] * factor))),
                max(1, min(MAX_JPEG_SIDE, round(image.shape[0] * factor))))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise GraphsurgeryError("OpenCV could not encode the debug image", path=path, fix="report this")
    path.write_bytes(encoded.tobytes())
