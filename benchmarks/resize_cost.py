"""What the filtered resize modes cost in the graph, against the libraries they imitate, on a 4000×3000 photo.

    python benchmarks/resize_cost.py --rounds 20 --threads 2

A uint8 RGB 4000×3000 image (examples/images/astronaut.jpg enlarged with INTER_CUBIC) shrunk to 224×224 by a model
that is only `cast` + `resize` (the patched identity model), per mode: antialiased bilinear (PIL BILINEAR),
Lanczos with clamp and round (PIL LANCZOS), area (cv2.INTER_AREA), and for scale the plain bilinear Resize op
(cv2.INTER_LINEAR, no antialiasing). Every round runs every pipeline once in a fresh random order; the ratios are
medians of per-round ratios (`graphsurgery.ratios`).
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
import onnx
from onnx import TensorProto, helper
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphsurgery.api import apply  # noqa: E402
from graphsurgery.images import read_image  # noqa: E402
from graphsurgery.machine import machine  # noqa: E402
from graphsurgery.ratios import interleaved, ratio_entry  # noqa: E402
from graphsurgery.recipe import parse_recipe  # noqa: E402
from graphsurgery.runners import open_runner  # noqa: E402

SIZE = (224, 224)
MODES = {  # name: (resize parameters, the library call)
    "antialiased bilinear": ("{interpolation: linear, antialias: true}",
                             lambda image: Image.fromarray(image).resize(SIZE[::-1], Image.BILINEAR)),
    "lanczos": ("{interpolation: lanczos, clamp: [0, 255], round: true}",
                lambda image: Image.fromarray(image).resize(SIZE[::-1], Image.LANCZOS)),
    "area": ("{interpolation: area}", lambda image: cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_AREA)),
    "bilinear (Resize op)": ("{interpolation: linear}",
                             lambda image: cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_LINEAR)),
}


def patched_models(folder: Path) -> dict[str, Path]:
    shape = [1, *SIZE, 3]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    plain = folder / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(plain))
    models = {}
    for name, (params, _) in MODES.items():
        recipe = parse_recipe(f"""
version: 1
name: resize-cost
input:
  tensor: {{dtype: uint8, layout: NHWC, color: RGB}}
  model: {{layout: NHWC, color: RGB}}
  steps: [{{cast: {{}}}}, {{resize: {params}}}]
""")
        models[name] = apply(recipe, plain, folder / f"{name.split()[0]}.onnx").output
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    photo = np.ascontiguousarray(read_image(ROOT / "examples" / "images" / "astronaut.jpg")[..., ::-1])
    image = cv2.resize(photo, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        calls = {}
        for name, path in patched_models(Path(tmp)).items():
            calls[f"{name} · library"] = lambda library=MODES[name][1]: library(image)
            for backend in ("onnxruntime", "openvino"):
                run = stack.enter_context(open_runner(backend, path, threads=args.threads, spin=False))
                calls[f"{name} · {backend}"] = lambda run=run: run({"x": image[None]})
        samples = interleaved(calls, args.rounds, warmup=1)
    result = {"machine": machine(), "rounds": args.rounds, "threads": args.threads, "image": "4000×3000 → 224×224",
              "median_ms": {name: float(np.median(v)) for name, v in samples.items()}, "ratios": {}}
    for name in MODES:
        for backend in ("onnxruntime", "openvino"):
            a, b = samples[f"{name} · {backend}"], samples[f"{name} · library"]
            result["ratios"][f"{name} · {backend} / library"] = ratio_entry(a, b)
    for name, value in result["median_ms"].items():
        print(f"{name:45s} {value:9.1f} ms")
    for name, value in result["ratios"].items():
        print(f"{name:50s} {value['median']:.2f} ({value['ci95'][0]:.2f}–{value['ci95'][1]:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
