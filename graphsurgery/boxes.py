"""Person boxes for top-down pose: `--boxes FILE`.

Accepted forms (boxes are COCO-style [x, y, width, height] in pixels):
- {"file_name.jpg": [[x, y, w, h], ...], ...}
- a COCO annotation file ({"images": [...], "annotations": [...]}): person annotations' `bbox`, by `file_name`;
- COCO detection results ([{"image_id", "bbox", "score", "category_id"}]) together with `images`, a COCO
  annotation file that maps image ids to file names (as `eval-coco --boxes` uses).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError, listed, quoted
from graphsurgery.safeio import read_small_file

Box = tuple[float, float, float, float]
MAX_BOXES_BYTES = 256 * 2**20
MAX_BOXES = 100_000
MAX_COORDINATE = 1e6  # pixels: larger than any image a pose model is run on
#: The smallest larger side a box may have, in pixels: the crop pads the shorter side to the model's aspect, so only
#: a box small both ways makes the crop's affine map singular (at 10^6 px, 0.01 px already does); it holds no person
MIN_SIZE = 1.0


def load_boxes(path: Path, images: dict[int, str] | None = None, min_score: float = 0.0) -> Boxes:
    """Boxes by image file name (base name)."""
    path = Path(path)
    raw = read_small_file(path, MAX_BOXES_BYTES, "boxes file")
    try:
        data = json_without_duplicates(raw, path, "boxes")
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise GraphsurgeryError(f"not a readable JSON file ({type(exc).__name__})", path=path,
                                fix="give a JSON file of COCO-style boxes") from None
    try:
        if isinstance(data, dict) and "annotations" in data:
            names = image_names(data, path)
            people = [a for a in data["annotations"] if a.get("category_id", 1) == 1 and not a.get("iscrowd", 0)]
            return _group(((names[a["image_id"]], a["bbox"]) for a in people), path,
                          _declared_sizes(data, {a["image_id"] for a in people}, path))
        if isinstance(data, list):
            if images is None:
                raise GraphsurgeryError(
                    "detection results need image file names",
                    path=path,
                    fix="use the {file_name: [[x, y, w, h], ...]} form, or pass the annotation file",
                )
            return _group(((images[d["image_id"]], d["bbox"]) for d in data
                           if d.get("category_id", 1) == 1 and _score(d, path) >= min_score), path)
        if isinstance(data, dict):
            return _group(((name, box) for name, boxes in data.items() for box in boxes), path)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:  # a string where a box goes
        raise GraphsurgeryError(f"unexpected structure ({type(exc).__name__}: {exc})", path=path,
                                fix="see `graphsurgery run --help` for the accepted box formats") from None
    raise GraphsurgeryError("unexpected JSON structure", path=path, fix="give {file_name: [[x, y, w, h], ...]}")


class Boxes(dict):
    """Boxes by image file name, read from the file `source`, and `sizes`: the (width, height) in pixels that a
    COCO annotation file gives its images (none for the other forms), which the decoded images must have
    (`check_image`)."""

    def __init__(self, boxes: dict[str, list[Box]], source: Path, sizes: dict[str, tuple[float, float]] | None = None):
        super().__init__(boxes)
        self.source, self.sizes = source, sizes or {}

    def check_image(self, image_path: Path, image) -> None:
        """Refuse a decoded image whose size is not the one the boxes' annotation file gives it: a folder of resized
        (or rotated) copies put every box on other pixels, and `run` and `verify` went on in silence (round 63;
        eval-coco refuses it for its ground truth). Refuse a box of it that lies wholly outside it: its crop is
        padding alone, and `run` wrote a person found there (round 84: x = y = -5000), where 10^12 is refused."""
        declared = self.sizes.get(image_path.name)
        height, width = image.shape[:2]
        if declared is not None and (width, height) != declared:
            raise GraphsurgeryError(f"the image is {width} × {height} pixels, but the boxes file "
                                    f"{quoted(self.source.name)} gives it {declared[0]:g} × {declared[1]:g}: its boxes "
                                    "would fall on other pixels", path=image_path,
                                    fix="give the images that annotation file describes (not resized or rotated "
                                        "copies), or boxes made for these")
        boxes = self.get(image_path.name, [])
        for index, (x, y, w, h) in enumerate(boxes):
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                raise GraphsurgeryError(f"box {index + 1} of {len(boxes)} for {quoted(image_path.name)}, "
                                        f"[{x:g}, {y:g}, {w:g}, {h:g}], lies wholly outside the image ({width} × "
                                        f"{height} pixels): no person can be in it", path=self.source,
                                        fix="fix or drop that box ([x, y, w, h] in the image's pixels)")


def _declared_sizes(data: dict, used: set, path: Path) -> dict[str, tuple[float, float]]:
    """The width and height of each image whose boxes are used (ids `used`; by base name, which `_group` keeps
    unambiguous for them), where the annotation file gives them. A width or height other than a number of pixels
    (`"640"`, `true`, `null`; 0, NaN), or one without the other, is refused, as eval-coco refuses it: each skipped
    the size check in silence (rounds 69 and 73), and 10^400 was an internal error saying the sizes apart (round 70)."""
    sizes = {}
    for image in data.get("images") or []:
        given = [side for side in ("width", "height") if side in image]
        if image["id"] not in used or not given:
            continue
        if wrong := next((side for side in given if not is_pixel_count(image[side])), None):
            shown = json.dumps(image[wrong])  # as the file has it (true, null); a list of 10^5 numbers has spaces
            raise GraphsurgeryError(f"image {quoted(image['file_name'])} has {wrong} "
                                    f"{shown if len(shown) <= 40 else shown[:40] + '…'}, not a number of pixels",
                                    path=path,
                                    fix="give each image its width and height in pixels, or neither")
        if len(given) == 1:  # round 73: the size check was skipped in silence, as for a width of "640"
            raise GraphsurgeryError(f"image {quoted(image['file_name'])} has a {given[0]} but no "
                                    f"{'height' if given[0] == 'width' else 'width'}", path=path,
                                    fix="give each image its width and height in pixels, or neither")
        if isinstance(image.get("file_name"), str):
            sizes[Path(image["file_name"]).name] = (image["width"], image["height"])
    return sizes


def unmatched_note(boxes: dict[str, list[Box]], paths: list[Path], path: Path) -> str | None:
    """What a boxes file and the images do not share, said: boxes are matched by file name, and a name that matches
    no image (`IMG0.JPG` for `img0.jpg`) was dropped without a word, its image given no person (round 60); only a
    file naming none of the images is refused. None where every name and image match."""
    names = {image.name for image in paths}
    stray = [name for name in boxes if name not in names]
    bare = sum(1 for image in paths if not boxes.get(image.name))
    said = ([f"{len(stray):,} of its {len(boxes):,} names match no image here ({listed(stray, 3)}): their boxes are "
             "not used"] if stray else []) + ([f"{bare:,} of the {len(paths):,} images have no boxes in it"]
                                             if bare else [])
    return f"the boxes file {path}: {'; '.join(said)}" if said else None


def json_without_duplicates(raw: bytes, path: Path, what: str) -> object:
    """The JSON in `raw` (UTF-8, a byte order mark allowed: Notepad, PowerShell), where a key given twice in one
    object is a one-line error naming `what` would be lost (JSON keeps the last): boxes files, and COCO annotation
    and detections files (two `annotations` lists in one file, a careless merge, scored the last one alone).
    Other errors are the caller's to word (UnicodeDecodeError, ValueError, RecursionError)."""
    try:
        return json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise GraphsurgeryError(f"the key {exc.args[0][:80]!r} appears twice in one object (JSON keeps the last: "
                                f"the first one's {what} would be lost)", path=path, fix="merge the two") from None


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different: `{"a.jpg": [...], "a.jpg": [...]}` is refused, not half read."""
    data = dict(pairs)
    if len(data) != len(pairs):
        raise _DuplicateKey(next(key for index, (key, _) in enumerate(pairs) if key in dict(pairs[:index])))
    return data


def image_names(data: dict, path: Path) -> dict:
    """Image id → file_name of a COCO annotation file (`data`, at `path`): an id listed twice in `images` (JSON
    keeps both, pycocotools the last) and an annotation of an image that `images` does not list are refused."""
    names: dict = {}
    for image in data.get("images") or []:
        if image["id"] in names:
            raise GraphsurgeryError(f"image id {quoted(image['id'])} is listed twice in 'images' "
                                    f"({quoted(names[image['id']])} and {quoted(image['file_name'])})", path=path,
                                    fix="give each image its own id")
        names[image["id"]] = image["file_name"]
    for annotation in data.get("annotations") or []:
        if annotation["image_id"] not in names:
            raise GraphsurgeryError(f"annotation {annotation.get('id')!r} is of image id {annotation['image_id']!r}, "
                                    "which 'images' does not list", path=path,
                                    fix="add that image (id, file_name, width, height) to 'images', or remove the "
                                        "annotation")
    return names


def croppable(w: float, h: float) -> bool:
    """A crop can be cut from a box of w × h pixels: its larger side is at least MIN_SIZE (the authors' padding to
    the model's aspect grows the other; a box thin one way, e.g. 0.5 × 80 px, crops as well as 60 × 80 px)."""
    return max(w, h) >= MIN_SIZE


def is_box(values: tuple[float, ...]) -> bool:
    """Four finite pixel values [x, y, w, h] within MAX_COORDINATE, w and h above 0 and `croppable`: a person box
    (for `--boxes` files and eval-coco's detections)."""
    return (len(values) == 4 and all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in values)
            and values[2] > 0 and values[3] > 0 and croppable(values[2], values[3]))


def is_number(value) -> bool:
    """A JSON number: not a bool (True is 1 to Python), not a string of digits."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_pixel_count(value) -> bool:
    """An image's width or height as a COCO file may give it: a number from 1 to MAX_COORDINATE (0.5 clipped every
    box away in eval-coco)."""
    return is_number(value) and 1 <= value <= MAX_COORDINATE


def _number(value) -> float:
    if not is_number(value):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _score(detection: dict, path: Path) -> float:
    """A detection's score; NaN or a non-number would drop the box silently (NaN >= x is false)."""
    score = detection.get("score", 1.0)
    if not is_number(score) or not math.isfinite(score):
        raise GraphsurgeryError(f"detection of image {detection.get('image_id')!r} has score {score!r}, not a finite "
                                "number", path=path, fix="fix that detection's score")
    return score


def _group(pairs, path: Path, sizes: dict[str, tuple[float, float]] | None = None) -> Boxes:
    """Boxes by base name (images are matched by file name): two spellings of one name (`a.jpg`, `./a.jpg`,
    `sub/a.jpg`) are refused, not merged into one image's boxes, and a file of none is refused. `sizes`: the images'
    declared sizes."""
    grouped: dict[str, list[Box]] = {}
    spelt: dict[str, str] = {}
    for count, (name, box) in enumerate(pairs):
        if spelt.setdefault(Path(name).name, name) != name:
            raise GraphsurgeryError(f"{quoted(spelt[Path(name).name])} and {quoted(name)} name the same image (boxes "
                                    "are matched to images by file name)", path=path,
                                    fix=f"give the boxes of {quoted(Path(name).name)} under one name")
        # a box is a list of numbers: "1234" or {"0": 1, ...} would iterate into four numbers, true would be 1
        values = tuple(map(_number, box)) if isinstance(box, list) else ()
        if not is_box(values):
            # its first four values only, and how many there are: [10, 10, 100, 150, 0.9] was shown as
            # [10, 10, 100, 150], a box that looked right (round 60)
            shown = (repr(box)[:40] if not isinstance(box, list) else str(box) if len(box) <= 4
                     else f"{str(box[:4])[:-1]}, …] ({len(box):,} values)")
            raise GraphsurgeryError(f"box {shown} for {quoted(name)} is not [x, y, w, h] of finite pixels with "
                                    f"w, h > 0 (the larger at least {MIN_SIZE:g} px)", path=path, fix="fix that box")
        if count >= MAX_BOXES:  # counted as they come: summed over the images for each box, 100,000 boxes of as
            # many images took 5 × 10^9 additions (minutes, a hang to the user)
            raise GraphsurgeryError(f"more than {MAX_BOXES:,} boxes", path=path,
                                    fix="keep the person boxes (filter detections by score first)")
        grouped.setdefault(Path(name).name, []).append(values)
    if not grouped:  # round 70: run said "(it names e.g. nothing)", verify "no image in the folder has boxes"
        raise GraphsurgeryError("the boxes file holds no person box (of a COCO file, those are the annotations of "
                                "category_id 1, iscrowd 0)", path=path, fix="give the person boxes of the images")
    return Boxes(grouped, path, sizes)
