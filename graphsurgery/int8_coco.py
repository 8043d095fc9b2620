"""COCO keypoint AP as the metric of `convert --int8 --max-drop` when `--annotations` is given.

The calibration samples are eval-coco's (`graphsurgery.coco`): one crop per person cut the authors' way, or each
image whole with its boxes for a model that crops in the graph, from the images of the calibration folder that
the annotation file lists, with eval-coco's person boxes (ground truth, or `--boxes` detections). NNCF validates
a model on any subset of them: their keypoints become COCO results as eval-coco makes them, and pycocotools gives
the AP on their images; on all of them, it is eval-coco's AP. The drop is AP(f32) − AP(int8), absolute.

convert has the patched model and no recipe, so the keypoints' frame comes from the graph, as eval-coco takes it
from the recipe: with `center`/`scale` inputs they are in image pixels; a model that crops in the graph (a
`boxes` input) must map them back itself (its spliced to_image step reads the boxes); any other model gives crop
pixels (a to_image step), which are mapped back through the crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphsurgery.coco import (
    KEYPOINTS,
    SCORES,
    CallerCrops,
    PersonBox,
    WholeImages,
    annotated_people,
    box_keypoints,
    crop_keypoints,
    keypoint_stats,
    person_result,
)
from graphsurgery.cocoformat import KEYPOINT_NAMES, keypoint_result
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.modelio import load_model
from graphsurgery.quantize import CALLER, MAX_CALIBRATION, Calibration, crop_size, image_input
from graphsurgery.runners import ModelSignature, model_signature
from graphsurgery.scopes import step_nodes
from graphsurgery.supervisor import each

#: the spliced to_image step's nodes (`Emitter` scopes every step's nodes under its name)
TO_IMAGE = step_nodes("output", "to_image")


@dataclass(frozen=True)
class _Sample:
    """The people one calibration feed holds; a crop's center and scale (None for a whole image)."""

    people: tuple[PersonBox, ...]
    center: np.ndarray | None = None
    scale: np.ndarray | None = None


@dataclass(frozen=True)
class CocoAP:
    """COCO keypoint AP of a model on the calibration samples (`feeds`, one `_Sample` each)."""

    gt: object  # pycocotools' COCO
    image_ids: list[int]
    feeds: list[dict[str, np.ndarray]]
    samples: list[_Sample]
    size: tuple[int, int] | None  # (W, H) of the crops; None for a model that crops in the graph
    in_image_pixels: bool
    model: Path
    description: str

    def ap(self, model, indices) -> float:
        """AP of the compiled `model` on the samples `indices`, on their images (all: eval-coco's images)."""
        indices = list(indices)
        results = [result for i in each(indices) for result in self._results(model, i)]  # each run a timed step
        images = self.image_ids if len(indices) == len(self.samples) else sorted(
            {person.image_id for i in indices for person in self.samples[i].people})
        return keypoint_stats(self.gt, results, images)[0]

    def validate(self, model, indices) -> tuple[float, None]:
        """NNCF's validation function: the AP, and no per-sample values (NNCF then validates samples one by one)."""
        return self.ap(model, indices), None

    def pair(self, compiled: list) -> tuple[float, float]:
        """AP of `quantize.compile_pair`'s [f32, int8] on all the samples."""
        f32, int8 = (self.ap(model, range(len(self.samples))) for model in compiled)
        return f32, int8

    def _results(self, model, index: int) -> list[dict]:
        sample = self.samples[index]
        answer = model(self.feeds[index])
        outputs = {name: np.asarray(answer[model.output(name)]) for name in (KEYPOINTS, SCORES)}
        if sample.center is None:
            return [keypoint_result(person.image_id, keypoints, scores, person.score)
                    for person, (keypoints, scores) in zip(sample.people, box_keypoints(outputs, self.model))]
        keypoints, scores = crop_keypoints(outputs)
        return [person_result(sample.people[0], (keypoints, scores, sample.center, sample.scale), self.size,
                              self.in_image_pixels)]


def coco_calibration(model: Path, images: Path, annotations: Path, boxes: str | Path | None = None
                     ) -> tuple[Calibration, CocoAP]:
    """The calibration samples eval-coco would feed the patched `model` (ONNX) from the annotated `images`, and the
    AP metric on them."""
    signature = model_signature(model)
    image = image_input(list(signature.inputs), model)
    names = {port.name for port in signature.inputs}
    in_image_pixels = _keypoints_in_image_pixels(model, signature)
    try:
        gt, image_ids, people = annotated_people(annotations, images, boxes, images_option="--calibration")
    except GraphsurgeryError as exc:  # eval-coco's own words, said of this command's option
        option = "--boxes" if boxes is not None and exc.path == str(boxes) else "--annotations"
        raise GraphsurgeryError(f"{option}: {exc}") from None
    if len(people) > MAX_CALIBRATION:
        raise GraphsurgeryError(f"{len(people)} person boxes: int8 calibrates on at most {MAX_CALIBRATION} samples",
                                path=boxes or annotations,
                                fix="give --annotations a subset of the images (a few hundred people calibrate a "
                                    "pose model)")
    feeds: list[dict[str, np.ndarray]] = []
    samples: list[_Sample] = []
    if "boxes" in names:  # whole images, each with its boxes, in the order of `people`
        size, start = None, 0
        for tensor, image_boxes in WholeImages(images, CALLER, image.dtype, annotations)(people):
            samples.append(_Sample(tuple(people[start:start + len(image_boxes)])))
            feeds.append({image.name: tensor, "boxes": image_boxes})
            start += len(image_boxes)
        # images, not feeds: an image of many people is fed in parts (crops.BOXES_PER_CALL)
        how = f"{len({person.file_name for person in people})} whole images with {len(people)} person boxes"
    else:
        size = crop_size(image, model)
        extras = [name for name in ("center", "scale") if name in names]
        for person, (tensor, center, scale) in zip(people, CallerCrops(images, size, CALLER, image.dtype,
                                                                       annotations)(people)):
            samples.append(_Sample((person,), center[0], scale[0]))
            box = {"center": center.astype(np.float32), "scale": scale.astype(np.float32)}
            feeds.append({image.name: tensor, **{name: box[name] for name in extras}})
        how = f"{len(feeds)} person crops"
    source = f"{len(image_ids)} images of {annotations.name}"
    boxes_from = f"boxes of {Path(boxes).name}" if boxes is not None else "ground-truth boxes"
    metric = CocoAP(gt, image_ids, feeds, samples, size, in_image_pixels, model,
                    f"{len(people)} people in {source} ({boxes_from})")
    return Calibration(feeds, f"{how} from {images}, {source} ({boxes_from})"), metric


def _keypoints_in_image_pixels(model: Path, signature: ModelSignature) -> bool:
    """Whether the model's COCO keypoints are in image pixels (else crop pixels); refused when they are neither."""
    outputs = {port.name: port for port in signature.outputs}
    keypoints = outputs.get(KEYPOINTS)
    joints = len(KEYPOINT_NAMES)
    if (keypoints is None or SCORES not in outputs or len(keypoints.shape) != 3
            or keypoints.shape[1] not in (joints, None) or keypoints.shape[2] not in (2, None)):
        shown = ", ".join(f"{port.name} {list(port.shape)}" for port in signature.outputs)
        raise GraphsurgeryError(f"--annotations scores COCO keypoints: the model needs outputs `keypoints` "
                                f"[N, {joints}, 2] and `scores`; it has {shown}", path=model,
                                fix="patch the model with a COCO pose recipe (e.g. recipes/hrnet_coco_pose.yaml), "
                                    "or drop --annotations")
    read = {name for node in load_model(model).proto.graph.node if node.name.startswith(TO_IMAGE)
            for name in node.input}
    inputs = {port.name for port in signature.inputs}
    if not read or ("boxes" in inputs and "boxes" not in read):
        where = "image pixels" if "boxes" in inputs else "crop or image pixels"
        raise GraphsurgeryError(f"--annotations maps the model's keypoints to the image as eval-coco does; they are "
                                f"not in {where} (no spliced to_image step{' reads the boxes' * bool(read)})",
                                path=model, fix="end the recipe's output steps with `to_image` (mode boxes for a "
                                                "recipe that crops in the graph), or drop --annotations")
    return {"center", "scale"} <= inputs or "boxes" in inputs
