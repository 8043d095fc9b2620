"""The top-down graph against the authors' Python pipeline, end to end: a 640×480 image and 1 or 4 person boxes in,
keypoints in image pixels out; and what the flip test costs.

    python benchmarks/topdown_latency.py hrnet_w32.onnx --rounds 30 --threads 2

Pipelines, on ONNX Runtime and OpenVINO (f32):
- authors: their Python code around the plain model (static batch 1, as they export it): `_xywh2cs`,
  `get_affine_transform` + `cv2.warpAffine`, BGR→RGB, /255, mean/std, the model on each crop and on its mirror,
  flip_back + shift + average, get_final_preds (`tests/authorskit.py`);
- graph: the model patched with recipes/hrnet_coco_topdown.yaml, one call with the image and the boxes;
- graph, no flip: the same recipe without flip_test / flip_average (what the flip test costs).
Every round runs every pipeline once in a fresh random order; ratios are medians of per-round ratios
(`graphsurgery.ratios`), so the load of a shared machine cancels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import authorskit  # noqa: E402
from graphsurgery.api import apply  # noqa: E402
from graphsurgery.machine import machine  # noqa: E402
from graphsurgery.ratios import interleaved, ratio_entry  # noqa: E402
from graphsurgery.runners import open_runner  # noqa: E402

RECIPE = ROOT / "recipes" / "hrnet_coco_topdown.yaml"
FRAME = (480, 640)  # (H, W)


def boxes(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    sizes = rng.uniform((80, 160), (240, 440), (n, 2))
    corners = rng.uniform(0, 1, (n, 2)) * (np.array(FRAME[::-1]) - sizes)
    return np.concatenate([corners, sizes], axis=1).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="plain HRNet ONNX, static batch 1 (examples/hrnet/export.py)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 256, (*FRAME, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        no_flip = Path(tmp) / "noflip.yaml"
        no_flip.write_text(RECIPE.read_text().replace("    - flip_test: {}\n", "").replace(
            "    - flip_average: {}\n", ""))
        graphs = {"graph": apply(RECIPE, args.model, Path(tmp) / "topdown.onnx").output,
                  "graph, no flip": apply(no_flip, args.model, Path(tmp) / "noflip.onnx").output}
        with ExitStack() as stack:
            calls = {}
            for backend in ("onnxruntime", "openvino"):
                run_plain = stack.enter_context(open_runner(backend, args.model, threads=args.threads, spin=False))
                for n in (1, 4):
                    calls[f"{backend} · authors · {n} box"] = (
                        lambda n=n, run=run_plain: authorskit.top_down(image, boxes(n), lambda x: run({"input": x})[
                            "heatmaps"]))
                for name, path in graphs.items():
                    run = stack.enter_context(open_runner(backend, path, threads=args.threads, spin=False))
                    for n in (1, 4):
                        calls[f"{backend} · {name} · {n} box"] = (
                            lambda n=n, run=run: run({"image": image[None], "boxes": boxes(n)}))
            samples = interleaved(calls, args.rounds, warmup=2)
    result = {"machine": machine(), "rounds": args.rounds, "threads": args.threads, "model": str(args.model),
              "median_ms": {name: float(np.median(v)) for name, v in samples.items()}, "ratios": {}}
    for backend in ("onnxruntime", "openvino"):
        for n in (1, 4):
            for over, label in (("authors", "graph / authors"), ("graph, no flip", "graph / graph without flip")):
                a, b = samples[f"{backend} · graph · {n} box"], samples[f"{backend} · {over} · {n} box"]
                result["ratios"][f"{backend} · {n} box · {label}"] = ratio_entry(a, b)
    for name, value in result["median_ms"].items():
        print(f"{name:45s} {value:9.1f} ms")
    for name, value in result["ratios"].items():
        print(f"{name:55s} {value['median']:.3f} ({value['ci95'][0]:.3f}–{value['ci95'][1]:.3f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
