"""Round 74: does verify's exactness hold on the other CPU kind? The project runs on an AVX-512 Xeon or Zen 4 and on
an AVX2-only EPYC, and OpenVINO's CPU kernels differ between them; verify compares some tensors exactly on OpenVINO
(where a top-down crop samples, for 8,192 boxes: atol = rtol = 0). Two environment variables, read once when the
process starts, emulate the other machine on an AVX-512 one: `ONEDNN_MAX_CPU_ISA=AVX2` caps the kernels OpenVINO
takes from oneDNN (Eltwise, fused Subgraph, Convolution, Softmax), `OV_CPU_MAX_ISA=AVX2` those of the plugin's own
nodes (Reduce, TopK, ...); either alone leaves the other kind AVX-512 (openvino PR #38189). MLAS's MatMul
picks its kernels itself and stays uncapped. Under both, a ReduceSum over 1,000 values differs in 221 of 256 sums
from the AVX-512 one: the emulation is real. Both tests guard unchanged behaviour (no test of the project failed
under the caps): they pass on the code before too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the caps: oneDNN's kernels, the plugin's own
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "OV_CPU_MAX_ISA": "AVX2"}
#: kernels the caps reach, by OpenVINO's layer type (oneDNN's: Eltwise, Subgraph, Convolution; the plugin's: the rest)
CAPPED_LAYERS = ("Eltwise", "Subgraph", "Convolution", "Reduce", "TopK")

#: prints {layer type: [primitive types]} of every model compiled by what runs after it (appended to a script)
RECORD_KERNELS = """
import atexit, collections, json
import openvino as ov
kernels = collections.defaultdict(set)
compile_model = ov.Core.compile_model
def recording(self, *args, **kwargs):
    compiled = compile_model(self, *args, **kwargs)
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kernels[info["layerType"].astype(str)].add(info["primitiveType"].astype(str))
    return compiled
ov.Core.compile_model = recording
atexit.register(lambda: print("KERNELS", json.dumps({k: sorted(v) for k, v in kernels.items()})))
"""


def _on_avx2(script: str, folder: Path) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
    """`script` run in a fresh Python whose OpenVINO kernels are capped at AVX2 (read once, at start: the caps
    cannot be set in the test's own process), and the kernels its compiled models ran."""
    env = {**os.environ, **AVX2,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", RECORD_KERNELS + script], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("KERNELS ")]
    return done, json.loads(lines[-1].removeprefix("KERNELS ")) if lines else {}


def _capped(kernels: dict[str, list[str]]) -> list[str]:
    """The kernels of CAPPED_LAYERS compiled for AVX-512 (none when the cap holds)."""
    return [kind for layer in CAPPED_LAYERS for kind in kernels.get(layer, []) if "avx512" in kind]


def test_the_isa_caps_reach_openvinos_kernels(tmp_path):
    """The emulation's premise: under the caps, a Convolution, a Mul+Add chain, a ReduceSum and a TopK run AVX2
    kernels, not AVX-512 ones (on an AVX-512 machine without them: `brgconv_avx512_f32`, `jit_avx512_f32`). If a
    new OpenVINO stopped reading a variable, the next test would emulate less: this one says so."""
    done, kernels = _on_avx2("""
import numpy as np
from openvino import opset13 as ops
x = ops.parameter([1, 8, 16, 16], np.float32)
weights = ops.constant(np.ones((8, 8, 3, 3), np.float32))
scaled = ops.add(ops.multiply(x, ops.constant(np.float32(1.1))), ops.constant(np.float32(0.3)))
convolved = ops.convolution(x, weights, [1, 1], [1, 1], [1, 1], [1, 1])
sums = ops.reduce_sum(convolved, ops.constant(np.array([3], np.int64)), False)
top = ops.topk(sums, ops.constant(np.int64(2)), 2, "max", "value", "i64")
outputs = [ops.result(tensor) for tensor in (scaled.output(0), top.output(0), top.output(1))]
ov.Core().compile_model(ov.Model(outputs, [x]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
""", tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"Convolution", "Reduce", "TopK"} <= set(kernels) and ({"Eltwise", "Subgraph"} & set(kernels)), kernels
    assert not _capped(kernels), kernels


def test_verify_of_a_topdown_recipe_passes_exactly_on_avx2_kernels(tmp_path):
    """Verify of the top-down recipe on OpenVINO under the caps: the crop positions of 8,192 boxes still equal the
    twin's exactly (elementwise float32 work, each value rounded alike whatever the vector width: FMA is on both
    kinds), and every other comparison passes (heatmap_argmax's reductions and the rest), every kernel AVX2."""
    done, kernels = _on_avx2(f"""
from pathlib import Path
from modelkit import pose_model
from graphsurgery.verification import verify
plain = pose_model(Path("plain.onnx"), opset=17, dynamic_batch=True)
report = verify(Path({str(ROOT / "recipes" / "hrnet_coco_topdown.yaml")!r}), plain, backends=["openvino"])
print("VERDICT", bool(report), json.dumps([pair["passed"] for pair in report.to_dict()["crop_positions"]]))
""", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "VERDICT True [true]" in done.stdout, done.stdout[-3000:]
    assert kernels.get("Eltwise") and kernels.get("Reduce") and not _capped(kernels), kernels
