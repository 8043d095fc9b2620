"""What `verify` holds for a model of large outputs: peak resident memory and wall time of `graphsurgery verify` on a
stand-in segmentation model (one 1×1 convolution, 3 → 21 channels at 512 × 512: 22 MB of float32 outputs a sample)
at a few sample counts, each in a fresh process; and the ratio of the peak to the outputs of every sample, against
what verify's memory check assumes (`verification.HELD_PER_PIPELINE` × its 4 pipelines).

    python benchmarks/verify_memory.py                   # 8 and 16 random samples (≈ 2 min)
    python benchmarks/verify_memory.py --samples 8 16 32

The driver imports only the standard library: Linux carries the parent's peak RSS into an exec'ed child's
`ru_maxrss`, and a driver holding numpy or onnx would inflate every number. Each child's peak comes from `os.wait4`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES, SIDE = 21, 512
OUTPUT_BYTES = CLASSES * SIDE * SIDE * 4

MAKE_MODEL = f"""
import numpy as np, onnx, sys
from onnx import TensorProto, helper, numpy_helper
weights = numpy_helper.from_array(np.random.default_rng(0).normal(size=({CLASSES}, 3, 1, 1)).astype(np.float32), "w")
graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "segmentation-stand-in",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, {SIDE}, {SIDE}])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", {CLASSES}, {SIDE}, {SIDE}])],
                          [weights])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, sys.argv[1])
"""

RECIPE = """version: 1
name: segmentation-stand-in
input:
  tensor: {dtype: uint8, layout: NHWC, color: RGB}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - scale: {divide: 255}
    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
"""

HELD = ("from graphsurgery.verification import HELD_PER_PIPELINE as held\n"
        "from graphsurgery.machine import usable_memory\nprint(held, usable_memory())")


def measured(command: list[str]) -> tuple[int, float, int, str]:
    """Exit code, wall seconds, peak RSS in bytes and the last line of a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in output.splitlines() if line.strip()]
    return process.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024, lines[-1] if lines else ""


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[8, 16], help="random sample counts to run")
    args = parser.parse_args(argv)
    held, usable = map(float, subprocess.run([sys.executable, "-c", HELD], capture_output=True, text=True,
                                             check=True).stdout.split())
    with tempfile.TemporaryDirectory(prefix="graphsurgery-verify-memory-") as folder:
        model, recipe = Path(folder) / "segmentation.onnx", Path(folder) / "segmentation.yaml"
        subprocess.run([sys.executable, "-c", MAKE_MODEL, str(model)], check=True)
        recipe.write_text(RECIPE)
        print(f"{machine()}; {usable / 2**30:.1f} GiB usable; outputs {OUTPUT_BYTES / 2**20:.1f} MiB a sample; "
              f"verify assumes {held:g} × 4 pipelines = {4 * held:g} × the outputs")
        print(f"{'samples':>7}  {'exit':>4}  {'wall':>7}  {'peak RSS':>9}  {'peak / outputs':>14}  last line")
        for count in args.samples:
            code, seconds, peak, last = measured([sys.executable, "-m", "graphsurgery", "verify", str(recipe),
                                                  str(model), "--random", str(count)])
            print(f"{count:>7}  {code:>4}  {seconds:>6.1f}s  {peak / 2**30:>7.2f} G  "
                  f"{peak / (count * OUTPUT_BYTES):>14.1f}  {last[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
