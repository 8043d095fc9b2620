"""A small COCO keypoint set made on the spot (no download), and a model that can read it.

Each image holds one to three stick figures drawn with OpenCV at known keypoints: limbs as grey lines, every
joint as a soft dot of its own colour. The colours are chosen in the space the HRNet loader produces (RGB, /255,
ImageNet mean/std): joint k's colour normalises to 1.6·d_k, with the 17 directions d_k spread over a sphere, and
the background normalises to about 0. `joint_detector` is then a one-layer HRNet stand-in (a 4×4 stride-4
convolution, heatmap k = d_k · pixel) whose heatmaps peak on the joints: real keypoints, a real AP, and every
preprocessing mistake (colour order, missing std, a decoding shift) changes the answer.

The annotation file has what pycocotools' keypoint evaluation needs: person boxes, areas, 17 keypoints with
visibility 2, num_keypoints, and the COCO person category with its skeleton.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__":  # Ctrl-C or SIGTERM while numpy and onnx load: one line, not a traceback
    from examples.entry import guard

    guard()

import numpy as np  # noqa: E402

from graphsurgery.cocoformat import KEYPOINT_NAMES, SKELETON  # noqa: E402

#: A standing person facing the camera, (x, y) in units of the person's height (x from the body's axis; the
#: person's left is the image's right).
POSE = np.array([(0.0, 0.07), (0.045, 0.035), (-0.045, 0.035), (0.085, 0.06), (-0.085, 0.06), (0.13, 0.19),
                 (-0.13, 0.19), (0.19, 0.36), (-0.19, 0.36), (0.22, 0.52), (-0.22, 0.52), (0.09, 0.53),
                 (-0.09, 0.53), (0.11, 0.75), (-0.11, 0.75), (0.11, 0.97), (-0.11, 0.97)])

MEAN = np.array([0.485, 0.456, 0.406])  # RGB, the HRNet loader's
STD = np.array([0.229, 0.224, 0.225])
RADIUS = 1.6  # |normalised joint colour|


def joint_directions(joints: int = 17) -> np.ndarray:
    """Unit vectors spread evenly over the sphere (a Fibonacci lattice), one per joint: [K, 3] in RGB order."""
    i = np.arange(joints) + 0.5
    z = 1 - 2 * i / joints
    angle = np.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z ** 2)
    return np.stack([r * np.cos(angle), r * np.sin(angle), z], axis=1)


def joint_colors_bgr() -> np.ndarray:
    """The dot colour of each joint as OpenCV draws it (uint8 BGR): normalises to RADIUS · direction."""
    rgb = (MEAN + STD * RADIUS * joint_directions()) * 255
    return np.round(rgb[:, ::-1]).astype(np.uint8)


BACKGROUND_BGR = np.round(MEAN[::-1] * 255).astype(np.uint8)  # normalises to ~0
LIMB_BGR = (96, 100, 104)


def write_coco_set(folder: str | Path, images: int = 8, seed: int = 0, size: tuple[int, int] = (640, 480)) -> Path:
    """Write `images` PNGs and `person_keypoints.json` into `folder`; returns the annotation file's path."""
    from graphsurgery.images import opencv

    cv2 = opencv()  # OpenCV's settings checked first: one it cannot parse aborted the process as cv2 loaded

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco = {"info": {"description": "graphsurgery synthetic stick figures"}, "licenses": [], "images": [],
            "annotations": [],
            "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
                            "skeleton": [[a + 1, b + 1] for a, b in SKELETON]}]}
    for image_id in range(1, images + 1):
        canvas = np.empty((size[1], size[0], 3), np.uint8)
        canvas[:] = BACKGROUND_BGR
        file_name = f"{image_id:012d}.png"
        for keypoints in _place_people(rng, size, count=int(rng.integers(1, 4))):
            _draw_person(canvas, keypoints)
            coco["annotations"].append(_annotation(len(coco["annotations"]) + 1, image_id, keypoints, size))
        noise = rng.normal(0, 2.0, canvas.shape)
        canvas = np.clip(canvas + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / file_name), canvas)
        coco["images"].append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]})
    path = folder / "person_keypoints.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def _place_people(rng: np.random.Generator, size: tuple[int, int], count: int) -> list[np.ndarray]:
    """Up to `count` figures whose padded crop regions (aspect 0.75, × 1.25) lie inside the image, apart."""
    placed, regions = [], []
    for _ in range(200):
        if len(placed) == count:
            break
        height = rng.uniform(90, 0.55 * size[1])
        region = np.array([0.75 * 1.25 * 1.1 * height, 1.25 * 1.1 * height])  # crop region (w, h), with room
        centre = rng.uniform(region / 2, np.array(size) - region / 2)
        box = np.concatenate([centre - region / 2, centre + region / 2])
        if any(
            box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3] for other in regions
        ):
            continue
        jitter = rng.normal(0, 0.012, POSE.shape)
        top_left = centre - np.array([0.0, height / 2])
        placed.append(top_left + (POSE + jitter) * height)
        regions.append(box)
    return placed


def _draw_person(canvas: np.ndarray, keypoints: np.ndarray) -> None:
    from graphsurgery.images import opencv

    cv2 = opencv()

    height = keypoints[:, 1].max() - keypoints[:, 1].min()
    shift = 4  # sub-pixel drawing: coordinates in 1/16 pixel

    def point(p: np.ndarray) -> tuple[int, int]:
        return int(round(p[0] * 16)), int(round(p[1] * 16))

    for a, b in SKELETON:
        cv2.line(canvas, point(keypoints[a]), point(keypoints[b]), LIMB_BGR, max(1, int(height / 60)),
                 cv2.LINE_AA, shift)
    radius = max(2.0, 0.022 * height)
    for color, p in zip(joint_colors_bgr().astype(float), keypoints):
        for step in np.linspace(radius, 0.5, 8):  # a soft dot: full colour in the middle, fading outwards
            weight = 1.0 - 0.8 * step / radius
            shade = BACKGROUND_BGR + weight * (color - BACKGROUND_BGR)
            cv2.circle(canvas, point(p), int(round(step * 16)), tuple(float(c) for c in shade), -1, cv2.LINE_AA, shift)


def _annotation(ann_id: int, image_id: int, keypoints: np.ndarray, size: tuple[int, int]) -> dict:
    height = keypoints[:, 1].max() - keypoints[:, 1].min()
    low = np.maximum(keypoints.min(axis=0) - [0.05 * height, 0.06 * height], 0)
    high = np.minimum(keypoints.max(axis=0) + [0.05 * height, 0.03 * height], np.array(size) - 1)
    w, h = high - low
    triples = np.concatenate([keypoints, np.full((len(keypoints), 1), 2.0)], axis=1)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "bbox": [round(float(v), 2) for v in (*low, w, h)], "area": round(float(w * h), 2),
            "num_keypoints": len(keypoints), "keypoints": [round(float(v), 2) for v in triples.reshape(-1)],
            "segmentation": []}


def joint_detector(path: str | Path, *, opset: int = 17, input_hw: tuple[int, int] = (256, 192)) -> Path:
    """A plain HRNet stand-in for the synthetic set: `input` [1,3,H,W] normalised RGB → `heatmaps` [1,17,H/4,W/4].

    Heatmap k is the 4×4 mean of d_k · pixel, largest on joint k's dot (see the module docstring).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directions = joint_directions().astype(np.float32)
    weight = np.repeat(np.repeat(directions[:, :, None, None], 4, axis=2), 4, axis=3) / 16
    h, w = input_hw
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight"], ["heatmaps"], name="detect", kernel_shape=[4, 4],
                          strides=[4, 4])],
        "joint_detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, len(directions), h // 4, w // 4])],
        [numpy_helper.from_array(weight.astype(np.float32), "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graphsurgery")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return Path(path)


#: `--images` at most: ~0.4 MB a PNG (10^8 ran for hours without a word and filled the disk)
MAX_IMAGES = 10_000


def main(argv: list[str] | None = None) -> int:
    """`python examples/synthetic_coco.py FOLDER`: the set in FOLDER/images, the model as FOLDER/joint_detector.onnx.
    The examples' command-line contract (`examples.entry`): `--images 0` or `-3` wrote an empty set ("-3 images"),
    `--seed -1` and a FOLDER that is a file were tracebacks, `--opset 99` a model every command refuses, and a
    folder of the user's (`examples/images`) got the set written into it."""
    from examples.entry import Parser, run

    parser = Parser(description=(main.__doc__ or "").split("\n")[0])
    parser.add_argument("folder", metavar="FOLDER")
    parser.add_argument("--images", type=int, default=8, help=f"number of images, 1 to {MAX_IMAGES:,} (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opset", type=int, default=17, help="opset of the model (default 17)")
    args = parser.parse_args(argv)
    return run(lambda: _write(args.folder, args.images, args.seed, args.opset))


def _write(folder: str, images: int, seed: int, opset: int) -> int:
    """Checked before anything is written, in a folder that is new or the script's own (`outfolder.claim`)."""
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.samples import check_seed

    from examples.onnx_export import OPSETS
    from examples.outfolder import claim

    if not 1 <= images <= MAX_IMAGES:
        raise GraphsurgeryError(f"--images {images} is not a number of images from 1 to {MAX_IMAGES:,}",
                                fix="give e.g. --images 8")
    if opset not in OPSETS:
        raise GraphsurgeryError(f"opset {opset} is not supported", fix=f"use an opset from {OPSETS[0]} to {OPSETS[-1]}")
    check_seed(seed)
    out = claim(folder, "synthetic_coco.py", ["images", "joint_detector.onnx"], "as FOLDER")
    annotations = write_coco_set(out / "images", images, seed)
    model = joint_detector(out / "joint_detector.onnx", opset=opset)
    print(f"wrote {annotations} ({images} images beside it) and {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
