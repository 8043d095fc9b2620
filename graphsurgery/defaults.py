"""The defaults and bounds the command line's help shows, in a module that imports nothing heavy: `graphsurgery
--help` (and each command's) is built from them without numpy, onnx or a runtime (about 0.3 s a command). Their
modules (runners, pose, samples, benchmark) take them from here, under the same names."""

from __future__ import annotations

import os
from dataclasses import dataclass

# runners
BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16", "f16")
#: More threads than a few per CPU only slow a runtime down; far more crashed OpenVINO (100 000: SIGSEGV).
MAX_THREADS = 4 * (os.cpu_count() or 1)

# pose (`run`)
DEFAULT_MIN_SCORE = 0.2
DEFAULT_BATCH = 8

# samples (`verify --random`)
MAX_RANDOM = 10_000  # random samples are made up front: 10 000 crops of 256 × 192 are 1.5 GB

# benchmark (`bench`)
REFERENCE = "openvino-patched-f32"  # every row's time is also given relative to this one
TORCH_EXAMPLE = "examples.hrnet.model:build_hrnet"
#: Rounds at most (timed or warm-up): 100,000 rounds of HRNet-W32 take days; a mistyped count must not run forever.
MAX_ROUNDS = 100_000


@dataclass(frozen=True)
class Settings:
    iterations: int = 50
    warmup: int = 5
    threads: int | None = None  # None: every CPU this process may use
    batch: int = 1
    torch: str | None = None  # "module:function" returning an nn.Module that takes the plain model's input
    throughput: bool = False
    upgrade_opset: bool = False  # convert the patched model to the opset a step needs
    int8: int | None = None  # also an int8 IR (convert --int8), calibrated on this many random caller inputs
