"""What int8 buys and costs on a patched pose model: OpenVINO f32 IR against int8 IR (`convert --int8`), latency
interleaved in one run, and the agreement of their answers.

    python benchmarks/int8_latency.py hrnet_w32.onnx --calibration-random 64 --rounds 40 --threads 2

The model is patched with recipes/hrnet_coco_pose.yaml, converted to an f32 IR and to an int8 IR calibrated on
random caller crops (no photo set ships with the project: real images calibrate better, `--calibration DIR`).
Every round runs both IRs once in a fresh random order; the ratio is the median of per-round ratios. The price is
measured on held-out random crops (another seed), as `convert --int8` reports it on its calibration samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphsurgery.api import apply  # noqa: E402
from graphsurgery.irconvert import convert  # noqa: E402
from graphsurgery.machine import machine  # noqa: E402
from graphsurgery.quantize import calibration_set, compile_pair, convert_int8, price  # noqa: E402
from graphsurgery.ratios import paired_ratio, paired_ratio_ci  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="plain HRNet ONNX (examples/hrnet/export.py)")
    parser.add_argument("--calibration-random", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        patched = apply(ROOT / "recipes" / "hrnet_coco_pose.yaml", args.model, Path(tmp) / "patched.onnx").output
        convert(patched, Path(tmp) / "f32.xml")
        began = time.perf_counter()
        facts = convert_int8(patched, Path(tmp) / "int8.xml",
                             calibration_set(patched, random=args.calibration_random)).int8
        quantize_s = time.perf_counter() - began
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads}
        models = {name: core.read_model(str(Path(tmp) / f"{name}.xml")) for name in ("f32", "int8")}
        held_out = calibration_set(patched, random=args.held_out, seed=1)
        held_out_price = price(compile_pair(models["f32"], models["int8"]), held_out)
        compiled = {name: core.compile_model(model, "CPU", config) for name, model in models.items()}
        feed = held_out.feeds[0]
        samples = {name: [] for name in compiled}
        order = np.random.default_rng(0)
        for index in range(args.rounds + 3):
            for pick in order.permutation(2):
                name = list(compiled)[pick]
                start = time.perf_counter()
                compiled[name](feed)
                if index >= 3:
                    samples[name].append((time.perf_counter() - start) * 1000)
    result = {"machine": machine(), "model": str(args.model), "rounds": args.rounds, "threads": args.threads,
              "calibration": f"{args.calibration_random} random crops", "quantize_seconds": round(quantize_s, 1),
              "median_ms": {name: float(np.median(v)) for name, v in samples.items()},
              "int8_over_f32": paired_ratio(samples["int8"], samples["f32"]),
              "int8_over_f32_ci95": paired_ratio_ci(samples["int8"], samples["f32"]),
              "price_on_calibration": {"quantizers": facts.quantized_activations, **facts.vs_f32},
              "price_held_out": held_out_price}
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
