"""What heatmap decoding costs on its own: the exact and the classic (ArgMax) `heatmap_argmax` on one set of
HRNet-W32 maps (17 × 64 × 48), against a model that only copies its input, on ONNX Runtime and OpenVINO (f32).

    python benchmarks/decode_cost.py --rounds 3000
    python benchmarks/decode_cost.py --runtimes onnxruntime --compare previous_exact.onnx

No profiler (it charges its own overhead to small nodes): every round calls each model once, in a fresh random
order, and the cost of a decode is the median over rounds of (decode model − copy model), both timed in that round.
Both runtimes are called in every round unless --runtimes names one (their thread pools then share the 2 cores
within a round, which costs each a little more). --compare adds a decode model saved to a file (the input
"output", as here: e.g. another commit's `models()["exact"]`), timed in the same rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from graphsurgery.steps.output import HeatmapArgmax  # noqa: E402

from stepkit import build_model  # noqa: E402

H, W, JOINTS = 64, 48, 17


def models() -> dict[str, onnx.ModelProto]:
    source = (np.float32, ("N", JOINTS, H, W))
    copy = helper.make_graph([helper.make_node("Identity", ["output"], ["copy"])], "copy",
                             [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", JOINTS, H, W])],
                             [helper.make_tensor_value_info("copy", TensorProto.FLOAT, ["N", JOINTS, H, W])])
    copy_model = helper.make_model(copy, opset_imports=[helper.make_opsetid("", 17)])
    copy_model.ir_version = 8
    return {"exact": build_model((HeatmapArgmax(),), source, 17, ("keypoints", "scores")),
            "argmax": build_model((HeatmapArgmax(method="argmax"),), source, 17, ("keypoints", "scores")),
            "copy": copy_model}


def callers(threads: int, runtimes: tuple[str, ...], compare: Path | None) -> dict[str, callable]:
    import onnxruntime as ort
    import openvino as ov

    heatmaps = np.random.default_rng(0).standard_normal((1, JOINTS, H, W)).astype(np.float32)
    chosen = models() | ({"compare": onnx.load(str(compare))} if compare else {})
    calls = {}
    for name, model in chosen.items():
        if "onnxruntime" in runtimes:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            calls[f"onnxruntime {name}"] = lambda session=session: session.run(None, {"output": heatmaps})
        if "openvino" in runtimes:
            core = ov.Core()
            compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                          {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
            request = compiled.create_infer_request()
            calls[f"openvino {name}"] = lambda request=request: request.infer({"output": heatmaps})
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", default="onnxruntime,openvino",
                        help="onnxruntime, openvino or both (comma-separated): the runtimes called in every round")
    parser.add_argument("--compare", type=Path, help="an ONNX decode model (input 'output') to time in the same rounds")
    args = parser.parse_args(argv)
    runtimes = tuple(args.runtimes.split(","))
    if not set(runtimes) <= {"onnxruntime", "openvino"}:
        parser.error(f"--runtimes: {args.runtimes!r} is not onnxruntime, openvino or both")
    calls = callers(args.threads, runtimes, args.compare)
    times = {name: [] for name in calls}
    rng = np.random.default_rng(1)
    for _ in range(args.rounds):
        for name in rng.permutation(list(calls)):
            start = time.perf_counter_ns()
            calls[name]()
            times[name].append(time.perf_counter_ns() - start)
    for runtime in runtimes:
        copy = np.array(times[f"{runtime} copy"])
        for method in ("exact", "argmax") + (("compare",) if args.compare else ()):
            cost = np.median(np.array(times[f"{runtime} {method}"]) - copy) / 1000
            print(f"{runtime:12s} {method:7s} decode: {cost:7.1f} µs per 17×64×48 map set "
                  f"(median of {args.rounds} paired rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
