"""The caller-side inputs that verify and eval-coco feed both pipelines, and which model inputs they go to.

Random uint8 crops (or images of several sizes, for recipes that resize), crops cut from images exactly as the
HRNet authors cut them (`graphsurgery.crops`: one per person box, or the whole image), or whole images at their own
sizes; the output steps' extra inputs (`center`, `scale`) come from the same boxes (random plausible boxes for
random crops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphsurgery.defaults import MAX_RANDOM
from graphsurgery.errors import GraphsurgeryError, whole
from graphsurgery.model import ModelFacts, applied_before
from graphsurgery.modelio import LoadedModel
from graphsurgery.recipe import InputTensor, Recipe
from graphsurgery.runners import Port, model_signature
from graphsurgery.steps.base import ExtraInput, InputStep
from graphsurgery.steps.resize import Resize
from graphsurgery.steps.to_image import ToImage

#: The image random boxes are drawn in (pixels), for the `center` / `scale` inputs of random crops.
RANDOM_IMAGE_SIZE = (640, 480)
DEFAULT_RANDOM = 8
#: What the random samples of one verify may take at once (drawn as int64, then kept with their float twins and
#: outputs): beyond it the count is refused up front, not ended by the memory running out.
MAX_RANDOM_BYTES = 512 << 20
#: The crops of one model call made at once (`run` with a static batch, `bench --batch`): 2^40 ran out of memory
MAX_BATCH_BYTES = 512 << 20
#: (W, H) of random images when the recipe resizes: landscape and portrait, odd sides, smaller and larger than a
#: 224 or 256 model, and one equal to a 224 model's size (led by two of the model's own when the first two do not
#: tell the resize's side roundings apart: `resize_sizes`).
RESIZE_SIZES = ((400, 300), (353, 481), (224, 224), (640, 480))
#: How much smaller than the model `_upscaled_size`'s image is, at least (per side)
UPSCALED = 10

@dataclass
class Samples:
    """Caller-side inputs in groups of one size each (a batch has one size): tensors as the patched model takes
    them ([n, ...]) with their extra inputs by name; what they are, and what one of them is called."""

    groups: list[tuple[np.ndarray, dict[str, np.ndarray]]]
    description: str
    unit: str = "crops"
    #: how many samples there are when groups are parts of them (an image's boxes in parts: `box_image_samples`)
    count: int | None = None
    #: what the samples leave out: sizes verify feeds by default (`random_samples`), boxes of no image here
    note: str | None = None

    def __len__(self) -> int:
        return self.count if self.count is not None else sum(len(tensors) for tensors, _ in self.groups)

    @property
    def extras(self) -> dict[str, np.ndarray]:
        """Every group's extra inputs, concatenated in order (as the outputs are)."""
        return concat([extras for _, extras in self.groups])

    def sizes(self, layout: str) -> list[tuple[int, int]]:
        """The distinct (W, H) of the samples, in order."""
        return list(dict.fromkeys(width_height(tensors[0], layout) for tensors, _ in self.groups))

    def grey(self, layout: str) -> bool:
        """Whether every sample has three colour channels and they are equal (grey pictures, which OpenCV expands
        to three): any order of the channels then gives the same tensor."""
        axis = 3 if layout == "NHWC" else 1
        for tensors, _ in self.groups:
            if tensors.ndim != 4 or tensors.shape[axis] != 3:
                return False
            first = np.take(tensors, [0], axis=axis)
            if not all(np.array_equal(np.take(tensors, [c], axis=axis), first) for c in (1, 2)):
                return False
        return True


def random_samples(n: int, image_input: Port, sizes: Sequence[tuple[int, int]], layout: str, extras: list[str],
                   model_size: tuple[int, int], batch: int = 1, seed: int = 0,
                   resizes: Sequence[InputStep] = ()) -> Samples:
    """`n` random images (values 0–255 in the input's dtype), a new size from `sizes` (W, H) every `batch` images,
    grouped by size; random plausible boxes (padded to the aspect of `model_size`) for the extra inputs. Each size
    fed is held to `check_resized` through the recipe's `resizes`, as a folder's images are.

    One size: crops at the model's size. Several: images for a recipe that resizes them."""
    from graphsurgery.crops import box_to_center_scale

    sizes = fed_sizes(image_input, sizes, layout)
    _check_count(n, max(math.prod(_sample_shape(image_input, size, layout)) for size in sizes), image_input)
    rng = np.random.default_rng(seed)
    size_of = [sizes[(index // batch) % len(sizes)] for index in range(n)]
    members = {size: [i for i, s in enumerate(size_of) if s == size] for size in dict.fromkeys(size_of)}
    for width, height in members:
        check_resized(resizes, (height, width), 3, None)
    tensors = [rng.integers(0, 256, (len(m), *_sample_shape(image_input, size, layout))).astype(image_input.dtype)
               for size, m in members.items()]
    width, height = RANDOM_IMAGE_SIZE
    boxes = []
    for _ in range(n):
        w, h = rng.uniform(40, width / 2), rng.uniform(80, height - 10)
        boxes.append((rng.uniform(0, width - w), rng.uniform(0, height - h), w, h))
    centers, scales = (np.stack(v) for v in zip(*(box_to_center_scale(b, model_size[0] / model_size[1])
                                                  for b in boxes)))
    groups = [(t, _extras(extras, centers[m], scales[m])) for t, m in zip(tensors, members.values())]
    if len(sizes) == 1:
        return Samples(groups, f"{n} random crops (seed {seed})")
    shown = ", ".join(f"{w}×{h}" for w, h in members)
    unfed = ", ".join(f"{w}×{h}" for w, h in sizes if (w, h) not in members)
    # each size was added because a wrong patch PASSed without it: a PASS on fewer proves nothing of the others
    note = (f"{n} random images fed {len(members)} of the {len(sizes)} caller sizes verify has; not fed, so not "
            f"proven: W×H {unfed} (no --random, or --random {len(sizes)}, feeds each where they fit the memory)"
            ) if unfed else None
    return Samples(groups, f"{n} random images of {len(members)} sizes, W×H {shown} (seed {seed})", "images",
                   note=note)


def random_caller_samples(n: int | None, image_input: Port, recipe: Recipe, facts: ModelFacts,
                          steps: Sequence[InputStep], extras: list[str], batch: int = 1, seed: int = 0) -> Samples:
    """Random caller inputs as verify feeds them: `n` (default `DEFAULT_RANDOM`) crops at the model's size, or
    images of `resize_sizes` when one of the (bound) input `steps` frees the caller's size: by default as many as
    take each size once, where they fit as many values as `DEFAULT_RANDOM` of the largest (round 58: a letterbox
    pose recipe had 10 sizes, and the default 8 samples never fed the fixed two, nor would a recipe of more leading
    sizes its upscaled image)."""
    layout = tensor_facet(recipe).layout
    resizes = [step for step in steps if step.frees_caller_size]
    if resizes:
        model_size = resizes[-1].output_size()[::-1]  # (W, H) of the last resize: the model's
        sizes = resize_sizes(resizes[0])
        to_image = [step for step in (recipe.output.steps if recipe.output else ())
                    if isinstance(step, ToImage) and step.mode == "image"]
        if isinstance(resizes[0], Resize) and to_image:
            upscaled = _upscaled_size(resizes[0], sizes, to_image[-1].cell_spacing(facts))  # the first third:
            # `--random 3` feeds it
            sizes = (*sizes[:2], *upscaled[:1], *sizes[2:], *upscaled[1:])
        if n is None:  # each size once where so many fit (`most_samples`), else the usual count
            largest = max(math.prod(_sample_shape(image_input, size, layout)) for size in sizes)
            every = max(DEFAULT_RANDOM, len(sizes) * batch)
            n = every if every <= most_samples(largest) else DEFAULT_RANDOM
        return random_samples(n, image_input, sizes, layout, extras, model_size, batch, seed, resizes)
    size = crop_size(image_input, recipe, facts)
    return random_samples(n or DEFAULT_RANDOM, image_input, [size], layout, extras, size, batch, seed)


def resize_sizes(first: InputStep) -> tuple[tuple[int, int], ...]:
    """The sizes (W, H) of random images for a recipe whose `first` step freeing the caller's size sees them:
    RESIZE_SIZES, led by two that give floor, round and ceil each their own resized sides, so that `--random 2`
    tells them apart (round 41: a patch rounding another way PASSed): its first two where they do (round 58: the
    offset sizes came first there, and `--random 2` fed the ImageNet crop two that did not), else two from the
    model's; then by
    `_aspect_sizes` where the leading sizes are not both wider and taller than the model, by the sizes that give a
    centre cut's or pad's offset each rounding (`Resize.offset_sizes`), by `_shrinking_size` where no size is
    larger than the model on both sides, and last by `_thin_sizes`."""
    if not isinstance(first, Resize):
        return RESIZE_SIZES
    rounding = RESIZE_SIZES[:2] if first.roundings_told_apart(RESIZE_SIZES[:2]) else first.rounding_sizes()
    leading = (*rounding, *_aspect_sizes(first, (*rounding, *RESIZE_SIZES)[:2]))
    leading = (*leading, *first.offset_sizes((*leading, *RESIZE_SIZES)))
    sizes = (*leading, *_shrinking_size(first, (*leading, *RESIZE_SIZES)), *RESIZE_SIZES)
    return tuple(dict.fromkeys((*sizes, *_thin_sizes(first, sizes))))


def _aspect_sizes(resize: Resize, leading: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """An image wider than the model's aspect, (2·W + 1) × H, and one taller, W × (2·H + 1), where none of the
    `leading` sizes is: only across the model's aspect do the fits part (crop and letterbox scale by the other
    side, height caps the width). Round 42: a text-line classifier of 192 × 48 (4:1) saw no image wider than 4:3,
    and a patch letterboxing where its pipeline scales to the height PASSed (a 300 × 40 image: probabilities 0.41
    apart)."""
    if resize.fit == "stretch":
        return ()
    th, tw = resize.target_size()
    sides = {int(np.sign(w * th - tw * h)) for w, h in leading}
    return tuple(size for side, size in ((1, (2 * tw + 1, th)), (-1, (tw, 2 * th + 1))) if side not in sides)


def _shrinking_size(resize: Resize, sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """An image half as large again as the model on both sides, where none of `sizes` is larger on both: only a
    resize that shrinks filters (antialias, area, lanczos read more than the two nearest pixels there). Round 45:
    a 480 × 640 text detector saw nothing larger than 640 × 481, and a patch antialiasing where its pipeline
    resizes with cv2's bilinear PASSed (on pages of text its map was 0.96 off). Left out where `DEFAULT_RANDOM`
    such images (of up to 4 channels) would not fit in MAX_RANDOM_BYTES: the default count is never refused."""
    th, tw = resize.target_size()
    if any(w > tw and h > th for w, h in sizes):
        return ()
    size = (tw + tw // 2 + 1, th + th // 2 + 1)
    return (size,) if 8 * math.prod(size) * 4 * DEFAULT_RANDOM <= MAX_RANDOM_BYTES else ()


def _thin_sizes(resize: Resize, sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """For a letterbox (or fit height), an image two pixels high and more than four times the model's width long,
    and one two pixels wide and more than four times its height tall, each where none of `sizes` gives that side a
    single pixel: only there does the side scale below one, and the fit keep it at one pixel (`Resize.resized_hw`),
    resampled from two (half_pixel and pytorch_half_pixel part only there). Round 61: verify's images never did, and
    patches keeping it at 2, or recording 0 for the geometry that `to_image` maps back through (keypoints hundreds
    of pixels off on a 1 × 385 image), PASSed."""
    if resize.fit not in ("letterbox", "height"):
        return ()
    th, tw = resize.target_size()
    thin = {0: (4 * tw + 1, 2), 1: (2, 4 * th + 1)}  # by the axis of the side they scale below a pixel
    return tuple(size for axis, size in thin.items() if (axis or resize.fit == "letterbox")
                 and all(resize.resized_hw(h, w)[axis] > 1 for w, h in sizes))


def _upscaled_size(resize: Resize, sizes: Sequence[tuple[int, int]], spacing: tuple[float, float] | None = None
                   ) -> tuple[tuple[int, int], ...]:
    """An image UPSCALED times smaller than the model or more, for a recipe that maps keypoints back to the caller's
    pixels (`to_image` mode image), where none of `sizes` is: only there does a model pixel lie within a tenth of a
    caller pixel of the image's edge. Round 56: verify's images were all larger than a pose model, and a patch that
    took keypoints up to half a pixel inside the image for padding (`to_image`'s first_centre 0 for −0.5), or
    0.05 px of the padding for the image (×1.1), PASSed. Narrower than the model's aspect, so that a letterbox pads
    the width, where it can so that a cell lies within half a model pixel outside the image's left edge
    (`ToImage.edge_cells` puts a peak there); then, where it ends the image otherwise, up to two with a cell within
    half a model pixel past and short of its right edge (round 59: its one image had neither on a 160 × 128 model,
    and a patch whose last_centre moved 0.05 caller px either way PASSed); then the same across the height, from
    images wider than the model's aspect, where one is found (round 64: every upscaled image filled the height, and
    patches moving the top or bottom boundary 0.05 or 0.5 caller px PASSed). Cells every `spacing` (x, y) model
    pixels (`ToImage.cell_spacing`): 8 where it is unknown or a whole divisor of 8, one size then serving maps of 1,
    2, 4 or 8 pixels a cell (a pad of 1 modulo 8); UDP's ratio (160 / 39) puts them off whole pixels, and such a pad
    had none near the edge. The first follows the two leading sizes (round 59: last of 12, `--random 8` or 11 never
    fed it, and a first_centre of 0 PASSed), the others come last."""
    th, tw = resize.target_size()
    if any(w * UPSCALED <= tw and h * UPSCALED <= th for w, h in sizes) or min(th, tw) < UPSCALED:
        return ()
    small = [(w, h) for h in range(th // UPSCALED, 0, -1) for w in range(tw // UPSCALED, 0, -1)
             if min(resize.forward_map((h, w))[0]) >= UPSCALED]
    narrow = [(w, h) for w, h in small if w * th <= tw * h]  # the width padded
    # the height padded, narrowest (most upscaled) first: at ten times a cell a model pixel short of the bottom edge
    # lies exactly 0.05 caller px inside, where a boundary moved 0.05 px ties (and PASSed on 160 × 128)
    wide = sorted((size for size in small if size not in narrow), key=lambda size: (size[0], -size[1]))
    x, y = spacing or (None, None)
    sized = (*_edge_sizes(resize, narrow, 0, x, anyway=True), *_edge_sizes(resize, wide, 1, y))
    return tuple(dict.fromkeys(size for size in sized if size is not None))


def _edge_sizes(resize: Resize, candidates: Sequence[tuple[int, int]], axis: int, spacing: float | None,
                anyway: bool = False) -> list[tuple[int, int] | None]:
    """For `_upscaled_size`, along `axis` (0: x, 1: y), the first of `candidates` (W, H) with a cell lying within
    half a model pixel before the image's first edge (in the pad), else (`anyway`) the first of them, else None;
    then, where that one ends the image otherwise, the first with a cell just past its last edge and the first with
    one just short of it (where the image does not end at the model's edge: no padding follows there). Cells every
    `spacing` model pixels."""
    side = resize.target_size()[1 - axis]
    grids = [np.arange(0, side, 8.0)] if spacing is None or (float(spacing).is_integer() and 8 % spacing == 0) else []
    if spacing is not None and spacing != 8:  # its own cells, where 8's find no size (a 48-pixel-wide model)
        grids.append(np.arange(math.ceil(side / spacing)) * np.float32(spacing))

    def cell_between(size: tuple[int, int], edge: str, band: tuple[float, float], cells: np.ndarray) -> bool:
        """Whether one of `cells` lies in [edge + low, edge + high] model pixels, for the first edge (the pad) or
        the last one."""
        w, h = size
        start = float(resize.forward_map((h, w))[1][axis])
        at = start if edge == "first" else start + resize.resized_hw(h, w)[1 - axis]
        return (edge == "first" or at < side) and bool(((cells >= at + band[0]) & (cells <= at + band[1])).any())

    def best(edge: str, band: tuple[float, float]) -> tuple[int, int] | None:
        return next((size for cells in grids for size in candidates if cell_between(size, edge, band, cells)), None)

    first = best("first", (-1.0, -0.51)) or (next(iter(candidates), None) if anyway else None)  # just in the pad
    return [first, *(best("last", band) for band in ((-0.49, 0.0), (-1.0, -0.5))  # just past the end, just short
                     if first is None or not any(cell_between(first, "last", band, cells) for cells in grids))]


def random_box_samples(n: int, image_input: Port, layout: str, seed: int = 0) -> Samples:
    """`n` random images (sizes from `RESIZE_SIZES`, in turn), each with 1–4 random person boxes for a recipe that
    crops them in the graph: boxes inside the image, partly outside it, and tiny ones, in turn."""
    sizes = fed_sizes(image_input, RESIZE_SIZES, layout)
    _check_count(n, max(math.prod(_sample_shape(image_input, size, layout)) for size in sizes), image_input)
    rng = np.random.default_rng(seed)
    groups, boxes_made = [], 0
    for index in range(n):
        width, height = sizes[index % len(sizes)]
        image = rng.integers(0, 256, (1, *_sample_shape(image_input, (width, height), layout)))
        boxes = random_person_boxes(rng, (width, height), int(rng.integers(1, 5)), boxes_made)
        boxes_made += len(boxes)
        groups.append((image.astype(image_input.dtype), {"boxes": boxes}))
    shown = ", ".join(f"{w}×{h}" for w, h in dict.fromkeys(sizes[i % len(sizes)] for i in range(n)))
    return Samples(groups, f"{n} random images of W×H {shown} with {boxes_made} random person boxes (inside, partly "
                           f"outside, tiny; seed {seed})", "images")


def random_person_boxes(rng: np.random.Generator, size: tuple[int, int], count: int, made: int = 0) -> np.ndarray:
    """`count` random COCO x, y, w, h boxes [count, 4] float32 on an image of `size` (W, H): inside it, partly
    outside it and tiny, in turn (`made`: how many came before, for the turn). An image under 20 × 40 px (chain
    --check's photo of 1 × 1, or of 65,535 × 1) bounds the sizes by its own (round 69: numpy's "high - low < 0",
    an internal error)."""
    width, height = size
    boxes = []
    for kind in (index % 3 for index in range(made, made + count)):
        w, h = (rng.uniform(2, 8), rng.uniform(2, 8)) if kind == 2 else (rng.uniform(min(20, width), width),
                                                                         rng.uniform(min(40, height), height))
        w, h = min(w, width), min(h, height)
        margin = 0.5 if kind == 1 else 0.0  # partly outside: the box may start half its size before the image
        boxes.append((rng.uniform(-margin * w, width - (1 - margin) * w),
                      rng.uniform(-margin * h, height - (1 - margin) * h), w, h))
    return np.array(boxes, np.float32).reshape(-1, 4)


#: (W, H) of the images `many_person_boxes` draws boxes for: verify's random images, and a small one (whose boxes
#: are a few to 40 pixels wide, at coordinates of a few pixels)
MANY_BOX_SIZES = (*RESIZE_SIZES, (40, 30))


def many_person_boxes(count: int, seed: int) -> np.ndarray:
    """`count` random person boxes [count, 4] float32: `random_person_boxes` (inside, partly outside, tiny) of each
    image of MANY_BOX_SIZES in turn, half of them then made 2 to 16 times wider or taller than high or wide (their
    other side kept), and each kept as drawn, rounded to two decimals and to integers, in turn (a detector's floats,
    a text file's, COCO's ground truth): a wrong crop arithmetic shows on its own few boxes of one kind or another
    (rounds 61 and 64), some only on boxes far from the crop's aspect (round 71)."""
    rng = np.random.default_rng(seed)
    boxes, sizes = np.empty((count, 4), np.float32), len(MANY_BOX_SIZES)
    for index, size in enumerate(MANY_BOX_SIZES):  # the sizes in turn
        boxes[index::sizes] = random_person_boxes(rng, size, len(range(index, count, sizes)))
    thin = rng.uniform(size=count) < 0.5
    side = rng.integers(2, 4, count)  # which side is shortened: the height (a wide box) or the width (a tall one)
    boxes[thin, side[thin]] = boxes[thin, 5 - side[thin]] / np.exp(rng.uniform(np.log(2), np.log(16), count))[thin]
    rounding = np.arange(count) // 3 % 3  # every kind of every size in each rounding
    for turn, decimals in ((1, 2), (2, 0)):
        boxes[rounding == turn] = np.round(boxes[rounding == turn], decimals)
    return boxes


def box_image_samples(folder: Path, boxes_file: Path | str | None, image_input: Port, tensor: InputTensor,
                      crop_values: int | None = None) -> Samples:
    """Each image of the folder whole with its person boxes (or the whole-image box without a boxes file), for a
    recipe that crops them in the graph; images without boxes are left out. An image's boxes go in parts of at most
    BOXES_PER_CALL, one group each (the graph crops every box of a call at once: 3,000 boxes in one image ran out
    of memory); each box's answer is its own, so the parts do not change them. `crop_values`: the values the graph
    cuts for one box (the flip test's mirror included), where every box's crops are held at once (verify: its
    network inputs), refused past `most_samples` of them before an image is read."""
    from graphsurgery.boxes import load_boxes, unmatched_note
    from graphsurgery.crops import in_parts, whole_image_box
    from graphsurgery.images import list_images, read_image

    boxes = load_boxes(Path(boxes_file)) if boxes_file is not None else None
    paths = list_images([folder])
    if crop_values is not None:  # 5,000 boxes in one image held 2N crops' network inputs twice: killed for memory
        count = sum(len(boxes.get(path.name) or ()) for path in paths) if boxes is not None else len(paths)
        most = most_samples(crop_values)
        if count > most:
            raise GraphsurgeryError(f"the boxes make {count:,} crops of {crop_values:,} values each in the graph; "
                                    f"verify holds them all at once, at most {most:,}", path=boxes_file or folder,
                                    fix=f"give fewer boxes or images: {FEW}")
    groups, used, count = [], 0, 0
    for path in paths:
        if boxes is not None and not boxes.get(path.name):
            continue
        image = read_image(path)
        if boxes is not None:
            boxes.check_image(path, image)
        check_taken(image, image_input, tensor.layout, path)
        people = boxes[path.name] if boxes is not None else [whole_image_box(image)]
        caller = as_caller_tensor(image, tensor, image_input.dtype)[None]
        array = np.array([list(box)[:4] for box in people], np.float32)
        groups += [(caller, {"boxes": part}) for part in in_parts(array)]
        used += 1
        count += len(array)
    if not groups:
        raise GraphsurgeryError("no image in the folder has boxes in the boxes file", path=boxes_file,
                                fix="check that the boxes file names the images by file name")
    how = "person boxes" if boxes is not None else "whole-image boxes"
    return Samples(groups, f"{used} whole images from {folder} with {count} {how}", "images", used,
                   unmatched_note(boxes, paths, Path(boxes_file)) if boxes is not None else None)


def image_samples(folder: Path, boxes_file: Path | str | None, image_input: Port, size: tuple[int, int],
                  tensor: InputTensor, extras: list[str]) -> Samples:
    """One crop per person box (or per whole image without a boxes file), cut as the HRNet authors cut them."""
    from graphsurgery.boxes import load_boxes, unmatched_note
    from graphsurgery.crops import person_crop, whole_image_box
    from graphsurgery.images import list_images, read_image

    paths = list_images([folder])
    boxes = load_boxes(Path(boxes_file)) if boxes_file is not None else None
    count = sum(len(boxes[path.name]) for path in paths if path.name in boxes) if boxes is not None else len(paths)
    most = most_samples(math.prod(_sample_shape(image_input, size, tensor.layout)))
    if count > most:  # every crop is held at once, with its twins and outputs: 10,000 images ran out of memory
        raise GraphsurgeryError(f"the images make {count:,} crops; they are held all at once, at most {most:,} of "
                                f"{size[0]} × {size[1]}", path=boxes_file or folder, fix=f"give fewer images: {FEW}")
    tensors, centers, scales = [], [], []
    used = 0
    for path in paths:
        if boxes is not None and path.name not in boxes:
            continue
        image = read_image(path)
        if boxes is not None:
            boxes.check_image(path, image)
        used += 1
        for box in boxes[path.name] if boxes is not None else [whole_image_box(image)]:
            center, scale, crop = person_crop(image, box, size)
            tensors.append(as_caller_tensor(crop, tensor, image_input.dtype))
            centers.append(center)
            scales.append(scale)
    if not tensors:
        raise GraphsurgeryError("no image in the folder has boxes in the boxes file", path=boxes_file,
                                fix="check that the boxes file names the images by file name")
    how = "person boxes" if boxes is not None else "whole images"
    return Samples([(np.stack(tensors), _extras(extras, np.stack(centers), np.stack(scales)))],
                   f"{len(tensors)} crop{'s' * (len(tensors) != 1)} from {used} image{'s' * (used != 1)} in {folder} "
                   f"({how})",
                   note=unmatched_note(boxes, paths, Path(boxes_file)) if boxes is not None else None)


def whole_images(folder: Path, image_input: Port, tensor: InputTensor, extras: list[str],
                 model_size: tuple[int, int], resizes: Sequence[InputStep] = ()) -> Samples:
    """Each image of the folder whole, at its own size, as the caller feeds it: one group per image. Extra inputs
    come from the whole-image box (padded to the aspect of `model_size`, W / H). Each is refused, before anything
    is resized, when the recipe's `resizes` would make it larger than MAX_BATCH_BYTES (`check_resized`)."""
    from graphsurgery.crops import box_to_center_scale, whole_image_box
    from graphsurgery.images import list_images, read_image

    groups = []
    for path in list_images([folder]):
        image = read_image(path)
        check_taken(image, image_input, tensor.layout, path)
        check_resized(resizes, image.shape[:2], image.shape[2] if image.ndim == 3 else 1, path)
        center, scale = box_to_center_scale(whole_image_box(image), model_size[0] / model_size[1])
        groups.append((as_caller_tensor(image, tensor, image_input.dtype)[None],
                       _extras(extras, center[None], scale[None])))
    sizes = list(dict.fromkeys(width_height(t[0], tensor.layout) for t, _ in groups))
    shown = ", ".join(f"{w}×{h}" for w, h in sizes)
    return Samples(groups, f"{len(groups)} whole images from {folder} at their own sizes, W×H {shown}", "images",
                   note=_padding_unexercised(resizes, sizes))


def _padding_unexercised(resizes: Sequence[InputStep], sizes: Sequence[tuple[int, int]]) -> str | None:
    """What images (W, H) that all fill the model's input after a letterbox (or `fit: height`) leave unproven: its
    padding, so its `pad_anchor` and `pad_value`. Round 100: nudenet's patch with the letterbox anchored at the
    centre for the top-left PASSed on two square photos, without a word."""
    padded = [step for step in resizes if getattr(step, "fit", None) in ("letterbox", "height")]
    if not padded or not sizes:
        return None
    step = padded[-1]
    if any(step.resized_hw(h, w) != step.target_size() for w, h in sizes):
        return None
    th, tw = step.target_size()
    return (f"every image fills the model's {tw}×{th} input after the {step.fit} resize: its padding, pad_anchor and "
            "pad_value were not exercised (add images of other aspect ratios, or --random)")


def check_taken(image: np.ndarray, image_input: Port, layout: str, path: Path) -> None:
    """Refuse a decoded image, fed whole, of another size than a static height or width of `image_input` takes
    (`fed_sizes`): a recipe fixing the caller's size (`tensor: {shape: [1, 480, 640, 3]}`) given a folder of
    512 × 512 photos was the runtime's "Got invalid dimensions for input", an internal error (round 75), in verify
    and in `run` alike."""
    size = (image.shape[1], image.shape[0])
    taken = fed_sizes(image_input, [size], layout)[0]
    if taken != size:
        raise GraphsurgeryError(f"the image is {size[0]} × {size[1]} pixels; the patched model's input "
                                f"{image_input.name!r} takes {taken[0]} × {taken[1]} only", path=path,
                                fix="give images of that size, or a recipe that leaves the caller's size free (no "
                                    "input.tensor.shape)")


def check_resized(resizes: Sequence[InputStep], hw: tuple[int, int], channels: int, path: Path | None) -> None:
    """Refuse an image of `hw` (H, W) that the recipe's resizes (`resizes`, in order) would make larger than
    MAX_BATCH_BYTES as float32, or whose filtered resize would need weights that large, naming the image (None: a
    random one): before anything is allocated (round 44: a 5000 × 1 line scan through a recipe resizing its short
    side to 256 was 256 × 1,280,000 pixels, gigabytes in the twin and the runtime, and the command ran out of
    memory; round 87: a recipe resizing to 40000 × 40000 was an internal error "out of memory" in verify and bench,
    on random images). The image is one model call's input, so the bound is the one for what a model call is given
    at once (MAX_BATCH_BYTES), not MAX_RANDOM_BYTES (random samples verify makes)."""
    h, w = hw
    for step in resizes:
        if not isinstance(step, Resize):
            continue
        rh, rw = step.resized_hw(h, w)
        values = max(rh * rw * channels, rh * h + rw * w if step.filtered else 0)  # a filter's two weight matrices
        if 4 * values > MAX_BATCH_BYTES:
            raise GraphsurgeryError(
                f"the recipe's resize makes {'it' if path else 'a random image'} {rw:,} × {rh:,} pixels (W × H) "
                f"from {w:,} × {h:,}, {4 * values / 2**30:.1f} GiB as float32, more than the "
                f"{MAX_BATCH_BYTES >> 20} MiB one model call is given", path=path,
                fix="crop or pad such images first (to an aspect nearer the model's), or leave them out" if path
                else "give the resize a smaller size (no model call this large is run)")
        h, w = step.output_size() or (rh, rw)


def as_caller_tensor(crop_bgr: np.ndarray, tensor: InputTensor, dtype: str) -> np.ndarray:
    """A uint8 HWC BGR crop (or image) as the recipe's caller feeds it: its colour order, layout and element type
    (no batch)."""
    x = crop_bgr[..., ::-1] if tensor.color == "RGB" else crop_bgr
    x = np.transpose(x, (2, 0, 1)) if tensor.layout == "NCHW" else x
    return np.ascontiguousarray(x).astype(dtype)


def _extras(names: list[str], centers: np.ndarray, scales: np.ndarray) -> dict[str, np.ndarray]:
    known = {"center": centers.astype(np.float32), "scale": scales.astype(np.float32)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GraphsurgeryError(f"verify cannot make values for the extra input(s) {', '.join(map(repr, unknown))}",
                                fix="verify knows `center` and `scale`; compare such models with your own inputs")
    return {name: known[name] for name in names}


#: The seeds `--seed` takes; the Python API is held to the same (-1 was numpy's ValueError, an internal error)
MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> int:
    """A seed numpy takes and the CLI could have been given: an int from 0 to MAX_SEED."""
    if not whole(seed) or not 0 <= seed <= MAX_SEED:
        raise GraphsurgeryError(f"seed {seed!r} (--seed) is not an integer from 0 to {MAX_SEED}",
                                fix="give a seed such as 0")
    return seed


#: How many samples to give, for verify and for convert --int8 (`convert --int8 --calibration` of 1,200 images was
#: told to "verify on a folder of a few dozen images")
FEW = ("verify needs a few dozen images or samples, int8 calibration (convert --int8) a few hundred; eval-coco "
       "measures a data set")


def check_random(n: int | None) -> int | None:
    """A number of random samples (--random) as the CLI takes it: None (the default) or a whole number from 1 to
    MAX_RANDOM (the Python API took True as one sample, 0 as the default, 2.5 and "3" as a TypeError)."""
    if n is not None and (not whole(n) or not 1 <= n <= MAX_RANDOM):
        raise GraphsurgeryError(f"{n!r} random samples (--random): give a whole number between 1 and {MAX_RANDOM:,}",
                                fix=FEW)
    return n


def most_samples(values_per_sample: int) -> int:
    """How many samples of this size verify makes or cuts at once: at most MAX_RANDOM, within MAX_RANDOM_BYTES at
    8 bytes a value."""
    return max(1, min(MAX_RANDOM, MAX_RANDOM_BYTES // (8 * values_per_sample)))


def _check_count(n: int, values_per_sample: int, image_input: Port) -> None:
    """1 ≤ n ≤ `most_samples`: random samples are drawn at once."""
    check_random(n)
    if 8 * values_per_sample > MAX_RANDOM_BYTES:  # even one: a static input of 3 × 100,000 × 100,000 was made
        raise GraphsurgeryError(f"one sample of the model's input {image_input.name!r} "
                                f"{list(image_input.shape)} holds {values_per_sample:,} values, more than "
                                f"verify makes at once ({MAX_RANDOM_BYTES >> 20} MiB at 8 bytes a value)",
                                fix="export the model with a smaller input size")
    most = most_samples(values_per_sample)
    if not 1 <= n <= most:
        raise GraphsurgeryError(f"{n} random samples: give between 1 and {most:,}" + (
            f" (samples of {values_per_sample:,} values are all made at once)" if most < MAX_RANDOM else ""),
                                fix=FEW)


def tensor_facet(recipe: Recipe) -> InputTensor:
    return recipe.input.tensor if recipe.input else InputTensor()


def _sample_shape(image_input: Port, size: tuple[int, int], layout: str) -> tuple[int, ...]:
    """One sample's dims in the caller's layout, dynamic ones filled from the crop size (W, H) and 3 channels."""
    dims = _image_dims(image_input)
    wanted = (size[1], size[0], 3) if layout == "NHWC" else (3, size[1], size[0])
    return tuple(d or fill for d, fill in zip(dims, wanted))


def fed_sizes(image_input: Port, sizes: Sequence[tuple[int, int]], layout: str) -> tuple[tuple[int, int], ...]:
    """`sizes` (W, H) as images fed to `image_input` have them, each once: its static height or width (a recipe's
    `tensor.shape`, or a patched model's own) is the only one it takes. Round 75: verify fed a recipe fixing 640 × 480
    nothing else and said it fed "W×H 400×300, 353×481, 224×224, 640×480"."""
    shapes = (_sample_shape(image_input, size, layout) for size in sizes)
    return tuple(dict.fromkeys((w, h) for h, w in (shape[:2] if layout == "NHWC" else shape[1:] for shape in shapes)))


def _image_dims(image_input: Port) -> tuple:
    """The dims of one sample of a 4-D image batch (an output-only recipe on a model whose input is no image
    reached the crop size's unpacking: an internal error)."""
    dims = tuple(image_input.shape[1:])
    if len(dims) != 3:
        raise GraphsurgeryError(f"the patched input {image_input.name!r} has {len(dims) + 1} dims; verify makes "
                                f"4-D image batches", fix="verify image models (a 4-D input)")
    return dims


def width_height(sample: np.ndarray, layout: str) -> tuple[int, int]:
    """(W, H) of one sample (no batch) in the caller's layout."""
    h, w = sample.shape[:2] if layout == "NHWC" else sample.shape[1:]
    return int(w), int(h)


def crop_size(image_input: Port, recipe: Recipe, facts: ModelFacts) -> tuple[int, int]:
    """(W, H) of the crops: the patched input's static size, else the plain model's."""
    layout = tensor_facet(recipe).layout
    dims = _image_dims(image_input)
    h, w = dims[:2] if layout == "NHWC" else dims[1:]
    if isinstance(h, int) and isinstance(w, int):
        return (w, h)
    if facts.input_size is None:
        raise GraphsurgeryError("neither the patched nor the plain model has a static input size",
                                fix="fix the caller's size in the recipe (`input.tensor.shape`, its height and width "
                                    "as numbers) or resize to one (a `resize` step with `size`), or export the "
                                    "model with a fixed input size")
    return facts.input_size


def takes_extra(port: Port, extra: ExtraInput) -> bool:
    """Whether a patched model's input `port` is the recipe's `extra` as splice declares it: its element type, and
    each dim the number the recipe gives, dynamic where the recipe names it (`N` boxes: as many as the caller has),
    either where the recipe leaves it to the model (an output step's batch). `run` holds a top-down model's `boxes` to
    it too (round 75: [N, 5], or a fixed count of 1 fed 2 boxes, was an internal error)."""
    return port.dtype == np.dtype(extra.dtype).name and len(port.shape) == len(extra.shape) and all(
        got == want if isinstance(want, int) else got is None or want is None
        for got, want in zip(port.shape, extra.shape))


def dims_shown(shape: tuple) -> str:
    return f"[{', '.join('?' if dim is None else str(dim) for dim in shape)}]"


def patched_inputs(path: Path, extra_names: list[str], other_names: Sequence[str] = (), recipe: Recipe | None = None
                   ) -> tuple[Port, list[str]]:
    """The patched model's image input, and the extra inputs (of the recipe) it takes; it must also take the plain
    model's `other_names` and, with an input section in `recipe`, the element type its caller feeds (the plain
    model given as the patched one failed deep inside the recipe's twins)."""
    if not path.exists():
        raise GraphsurgeryError("no such patched model file", path=path, fix="check the path")
    inputs = model_signature(path).inputs
    besides = [*extra_names, *other_names]
    images = [p for p in inputs if p.name not in besides]
    extras = [p.name for p in inputs if p.name in extra_names]
    if len(images) != 1:  # was "has 2 inputs besides none"
        expected = "one image input" + (f" besides {', '.join(map(repr, besides))}" if besides else "")
        raise GraphsurgeryError(f"the patched model takes the inputs {', '.join(repr(p.name) for p in inputs)}; a "
                                f"model patched with this recipe takes {expected}", path=path,
                                fix="give the model patched with this recipe, or the recipe this model was patched "
                                    "with")
    missing = sorted(set(besides) - {p.name for p in inputs})
    if missing:
        raise GraphsurgeryError(f"the patched model lacks the input(s) {missing} the recipe adds or the plain model "
                                f"has", path=path, fix="give the model patched with this recipe")
    caller = recipe.input.tensor.dtype if recipe is not None and recipe.input else images[0].dtype
    if images[0].dtype != caller:
        raise GraphsurgeryError(f"the patched model takes {images[0].dtype} at {images[0].name!r}; the recipe's caller "
                                f"feeds {caller}", path=path, fix="give the model patched with this recipe")
    for extra in recipe.extra_inputs() if recipe is not None else ():  # round 73: fed as the recipe makes them,
        # others (boxes as float64, or a fixed number of them) were an internal error deep in verify
        port = next((p for p in inputs if p.name == extra.name), None)
        if port is not None and not takes_extra(port, extra):
            raise GraphsurgeryError(f"the patched model takes {port.dtype} {dims_shown(port.shape)} at "
                                    f"{extra.name!r}; a model patched with this recipe takes "
                                    f"{np.dtype(extra.dtype).name} {dims_shown(extra.shape)}", path=path,
                                    fix="give the model patched with this recipe")
    if not images[0].shape:  # an IR's input of dynamic rank (`shape="..."`): verify ended in an IndexError
        raise GraphsurgeryError(f"the patched model's image input {images[0].name!r} has no known rank (a tensor "
                                "of any shape)", path=path, fix="give the model patched with this recipe: its image "
                                                                "input has the rank and dims its input section says")
    return images[0], extras


def plain_input(recipe: Recipe, plain: LoadedModel) -> str:
    """The plain model's input the recipe patches: its input.target, else the model's only input; refused in apply's
    words (`splice.pick`: round 44, "has 0 inputs — fix: name the one to patch", of a model with none)."""
    from graphsurgery.splice import pick_input

    return pick_input(plain.proto, recipe.input.target if recipe.input else None, str(plain.path), "plain model")


def check_plain_input(recipe: Recipe, plain: LoadedModel, input_name: str) -> None:
    """The plain model's input the input steps feed, held to what apply holds it to (`splice.check_image_input`)
    before the steps are bound to it: verify (whose --patched apply does not run first) ended a model of a 1-D
    input in "internal error (IndexError)" (round 58)."""
    from graphsurgery.splice import check_image_input

    if recipe.input is None:
        return
    value = next(v for v in plain.proto.graph.input if v.name == input_name)
    tensor = value.type.tensor_type
    try:
        element = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type) if tensor.elem_type else None
    except (KeyError, ValueError):  # a type numpy has no name for: refused below as of no float type
        element = None
    shape = [d.dim_value or d.dim_param or None for d in tensor.shape.dim] if tensor.HasField("shape") else None
    check_image_input(input_name, element, shape, str(plain.path))


def refuse_patched_plain(recipe: Recipe, plain: LoadedModel, input_name: str) -> None:
    """A patched model given as PLAIN with --patched (verify, eval-coco: apply, which refuses it, does not run then)
    reached the runtime with the twins' float crops at its uint8 input: an internal error (exit 3)."""
    fix = "give the model without processing as PLAIN and the patched one as --patched"
    if applied_before(recipe, plain.proto):
        raise GraphsurgeryError(f"recipe {recipe.name!r} was already applied to this model", path=plain.path,
                                fix=fix)
    value = next((v for v in plain.proto.graph.input if v.name == input_name), None)
    element = value.type.tensor_type.elem_type if value is not None else onnx.TensorProto.UNDEFINED
    if recipe.input is not None and element not in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.FLOAT,
                                                    onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        kind = onnx.TensorProto.DataType.Name(element).lower()
        raise GraphsurgeryError(f"input {input_name!r} is {kind}; the recipe's input steps feed PLAIN float",
                                path=plain.path, fix=fix)


def chunks(samples: Samples, batch: int):
    """Batches of `batch` samples, each of one size. A group of exactly one batch comes whole, extras included
    (an image with its boxes: the boxes are not one per image)."""
    if any(len(tensors) % batch for tensors, _ in samples.groups):
        if len(samples.groups) > 1:  # "2 images do not divide into batches of 2": two images of two sizes
            counts = ", ".join(f"{len(tensors)}" for tensors, _ in samples.groups)
            raise GraphsurgeryError(f"the model takes batches of {batch}, each of one size; the {len(samples)} "
                                    f"{samples.unit} are of {len(samples.groups)} sizes ({counts} of each), not all a "
                                    f"multiple of {batch}",
                                    fix=f"use {samples.unit} of one size, {batch} or a multiple of {batch} of each "
                                        f"size, or export the model with a dynamic batch")
        raise GraphsurgeryError(f"the model takes batches of {batch}; {len(samples)} {samples.unit} do not divide "
                                f"into them", fix=f"use a multiple of {batch} {samples.unit}")
    yield from runs_of(samples, batch)


def runs_of(samples: Samples, most: int):
    """Up to `most` samples of one size at a time, their extras alike; a group of no more comes whole, extras
    included (an image with its boxes: the boxes are not one per image)."""
    for tensors, extras in samples.groups:
        if len(tensors) <= most:
            yield tensors, extras
            continue
        for start in range(0, len(tensors), most):
            end = start + most
            yield tensors[start:end], {k: v[start:end] for k, v in extras.items()}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The parts' arrays joined along their first axis, name by name (batches into one answer)."""
    return {name: joined([part[name] for part in parts]) for name in parts[0]}


def joined(arrays: list[np.ndarray]) -> np.ndarray:
    """One output's answers to several calls joined along their first axis, a scalar (a model's extra output of no
    dims) as one value a call: it was numpy's "zero-dimensional arrays cannot be concatenated", an internal error of
    verify and of bench's bf16 price (round 95). Answers of other shapes past the first axis (an output of a
    data-dependent size; a wrong patch folding a whole image's boxes into one row, [1, 17·M, 2]) were numpy's "all
    the input array dimensions except for the concatenation axis must match", an internal error: they are joined
    flat, values in order, a shape no answer of one shape past its first axis has (`ragged` names them)."""
    parts = [np.atleast_1d(array) for array in arrays]
    if len({part.shape[1:] for part in parts}) > 1:
        return np.concatenate([part.ravel() for part in parts])
    return np.concatenate(parts)


def ragged(parts: list[dict[str, np.ndarray]]) -> dict[str, str]:
    """The outputs whose answers to the calls `parts` are of several shapes past the first axis (joined flat by
    `joined`), each with those shapes, as a report shows them."""
    shapes = {name: list(dict.fromkeys(np.atleast_1d(part[name]).shape for part in parts)) for name in parts[0]}
    return {name: ", ".join(str(list(shape)) for shape in found) for name, found in shapes.items() if
            len({shape[1:] for shape in found}) > 1}
