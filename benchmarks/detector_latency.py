"""The detector graph against an application's own ultralytics-style pipeline, end to end: a photo in, boxes in its
pixels out.

    python benchmarks/detector_latency.py yolov8.onnx --rounds 100 --threads 2

Pipelines, on ONNX Runtime and OpenVINO (f32), on examples/images/astronaut.jpg at 512×512 (as it is) and
upscaled to 1920×1080:
- application: `tests/ultralyticskit.py` around the plain model: cv2 letterbox, BGR→RGB, /255, the model, best
  class per anchor, cv2.dnn.NMSBoxesBatched, scale_boxes;
- graph: the model patched with recipes/yolov8_detector.yaml, one call with the image.
Every round runs every pipeline once in a fresh random order; ratios are medians of per-round ratios
(`graphsurgery.ratios`), so the load of a shared machine cancels. The detections found are printed too (the
seeded zoo detector finds ~100 on the photo: the suppression has work to do).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from graphsurgery.api import apply  # noqa: E402
from graphsurgery.images import read_image  # noqa: E402
from graphsurgery.machine import machine  # noqa: E402
from graphsurgery.model import ModelFacts  # noqa: E402
from graphsurgery.modelio import load_model  # noqa: E402
from graphsurgery.ratios import interleaved, ratio_entry  # noqa: E402
from graphsurgery.recipe import load_recipe  # noqa: E402
from graphsurgery.runners import open_runner  # noqa: E402

import ultralyticskit  # noqa: E402

RECIPE = ROOT / "recipes" / "yolov8_detector.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="plain YOLOv8 ONNX (examples/zoo/export.py yolov8)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    photo = read_image(PHOTO)
    images = {"512×512": photo, "1920×1080": cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_CUBIC)}
    facts = ModelFacts.of(load_model(args.model).proto, load_recipe(RECIPE))
    size, plain_input = facts.input_size[::-1], load_model(args.model).proto.graph.input[0].name
    counts = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        patched = apply(RECIPE, args.model, Path(tmp) / "patched.onnx").output
        calls = {}
        for backend in ("onnxruntime", "openvino"):
            plain = stack.enter_context(open_runner(backend, args.model, threads=args.threads, spin=False))
            graph = stack.enter_context(open_runner(backend, patched, threads=args.threads, spin=False))
            for label, image in images.items():
                calls[f"{backend} · application · {label}"] = (
                    lambda image=image, plain=plain: ultralyticskit.predict(
                        image, lambda x: next(iter(plain({plain_input: x}).values())), size))
                calls[f"{backend} · graph · {label}"] = lambda image=image, graph=graph: graph({"image": image[None]})
        for name, call in calls.items():
            counts[name] = int(call()["count"][0])
        samples = interleaved(calls, args.rounds, warmup=2)
    result = {"machine": machine(), "rounds": args.rounds, "threads": args.threads, "model": str(args.model),
              "detections": counts, "median_ms": {name: float(np.median(v)) for name, v in samples.items()},
              "ratios": {}}
    for backend in ("onnxruntime", "openvino"):
        for label in images:
            a, b = samples[f"{backend} · graph · {label}"], samples[f"{backend} · application · {label}"]
            result["ratios"][f"{backend} · {label} · graph / application"] = ratio_entry(a, b)
    for name, value in result["median_ms"].items():
        print(f"{name:45s} {value:8.2f} ms  ({counts[name]} detections)")
    for name, value in result["ratios"].items():
        print(f"{name:50s} {value['median']:.3f} ({value['ci95'][0]:.3f}–{value['ci95'][1]:.3f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
