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

from graphsurgery.errors import GraphsurgeryError
from graphsurgery.safeio import read_small_file

Box = tuple[float, float, float, float]
MAX_BOXES_BYTES = 256 * 2**20
MAX_BOXES = 100_000
MAX_COORDINATE = 1e6  # pixels: larger than any image a pose model is run on


def load_boxes(path: Path, images: dict[int, str] | None = None, min_score: float = 0.0) -> dict[str, list[Box]]:
    """Boxes by image file name (base name)."""
    path = Path(path)
    raw = read_small_file(path, MAX_BOXES_BYTES, "boxes file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise GraphsurgeryError(f"not a readable JSON file ({type(exc).__name__})", path=path,
                                fix="give a JSON file of COCO-style boxes") from None
    try:
        if isinstance(data, dict) and "annotations" in data:
            names = {img["id"]: img["file_name"] for img in data["images"]}
            return _group(((names[a["image_id"]], a["bbox"]) for a in data["annotations"]
                           if a.get("category_id", 1) == 1 and not a.get("iscrowd", 0)), path)
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


def _is_number(value) -> bool:
    """A JSON number: not a bool (True is 1 to Python), not a string of digits."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value) -> float:
    if not _is_number(value):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _score(detection: dict, path: Path) -> float:
    """A detection's score; NaN or a non-number would drop the box silently (NaN >= x is false)."""
    score = detection.get("score", 1.0)
    if not _is_number(score) or not math.isfinite(score):
        raise GraphsurgeryError(f"detection of image {detection.get('image_id')!r} has score {score!r}, not a finite "
                                "number", path=path, fix="fix that detection's score")
    return score


def _group(pairs, path: Path) -> dict[str, list[Box]]:
    grouped: dict[str, list[Box]] = {}
    for name, box in pairs:
        # a box is a list of numbers: "1234" or {"0": 1, ...} would iterate into four numbers, true would be 1
        values = tuple(map(_number, box)) if isinstance(box, list) else ()
        if (len(values) != 4 or not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in values)
                or values[2] <= 0 or values[3] <= 0):
            raise GraphsurgeryError(f"box {list(box)[:4]} for {name!r} is not [x, y, w, h] of finite pixels with "
                                    f"w, h > 0", path=path, fix="fix that box")
        if sum(map(len, grouped.values())) >= MAX_BOXES:
            raise GraphsurgeryError(f"more than {MAX_BOXES:,} boxes", path=path,
                                    fix="keep the person boxes (filter detections by score first)")
        grouped.setdefault(Path(name).name, []).append(values)
    return grouped
