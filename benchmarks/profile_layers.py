"""Where the time of a patched model goes: the runtimes' own per-node counters, spliced nodes vs the network.

    python benchmarks/profile_layers.py recipes/hrnet_coco_pose.yaml hrnet_w32.onnx --runs 20 --threads 2

ONNX Runtime: its session profiler (`enable_profiling`, kernel time per node). OpenVINO: the CPU plugin's
performance counters (`PERF_COUNT`), per executed layer after its graph transformations (fused layers keep the
name of one of the nodes they came from, so a network Conv fused with the last spliced step may appear under a
`graphsurgery/...` name: its layer type is shown in brackets). Nodes the splice added are named `graphsurgery/pre/...` and
`graphsurgery/post/...`; everything else is the network. Counters are sums over the runs, divided by the runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphsurgery.api import apply  # noqa: E402
from graphsurgery.runners import openvino_config  # noqa: E402

SPLICED = "graphsurgery/"


def feeds_for(patched: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {}
    for value in ort.InferenceSession(str(patched), providers=["CPUExecutionProvider"]).get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in value.shape]
        feeds[value.name] = (rng.integers(0, 256, shape, dtype=np.uint8) if value.type == "tensor(uint8)"
                             else rng.uniform(1, 2, shape).astype(np.float32))
    return feeds


def onnxruntime_nodes(model: Path, feeds: dict, runs: int, threads: int) -> dict[str, float]:
    """Microseconds per run, by node name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)  # warm-up, counted below only through the division (one of runs + 1)
    for _ in range(runs):
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    times: collections.Counter = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"].removesuffix("_kernel_time")] += event["dur"]
    trace.unlink()
    return {name: us / (runs + 1) for name, us in times.items()}


def openvino_nodes(model: Path, feeds: dict, runs: int, threads: int) -> dict[str, float]:
    """Microseconds per run, by executed layer (f32, as `bench` runs it)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", {**openvino_config("f32", threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    times: collections.Counter = collections.Counter()
    request.infer(feeds)
    for _ in range(runs):
        request.infer(feeds)
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                times[f"{info.node_name} [{info.node_type}]"] += info.real_time.total_seconds() * 1e6
    return {name: us / runs for name, us in times.items()}


def summarise(times: dict[str, float]) -> dict:
    spliced = {name: us for name, us in times.items() if name.startswith(SPLICED)}
    total = sum(times.values())
    return {"total_us": total, "spliced_us": sum(spliced.values()),
            "spliced_share": sum(spliced.values()) / total if total else 0.0,
            "top_spliced": sorted(spliced.items(), key=lambda item: -item[1])[:8]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        patched = Path(folder) / "patched.onnx"
        apply(args.recipe, args.model, patched)
        feeds = feeds_for(patched)
        result = {backend: summarise(measure(patched, feeds, args.runs, args.threads))
                  for backend, measure in (("onnxruntime", onnxruntime_nodes), ("openvino", openvino_nodes))}
    for backend, summary in result.items():
        print(f"{backend}: {summary['total_us'] / 1000:.2f} ms of node time per run, of which spliced nodes "
              f"{summary['spliced_us'] / 1000:.3f} ms ({summary['spliced_share']:.2%})")
        for name, us in summary["top_spliced"]:
            print(f"    {us:8.1f} µs  {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
