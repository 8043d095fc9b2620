"""Where the time of a patched model goes: the runtimes' own per-node counters, spliced nodes vs the network.

    python benchmarks/profile_layers.py recipes/hrnet_coco_pose.yaml hrnet_w32.onnx --runs 20 --threads 2

ONNX Runtime: its session profiler (`enable_profiling`, kernel time per node). OpenVINO: the CPU plugin's
performance counters (`PERF_COUNT`), per executed layer after its graph transformations (fused layers keep the
name of one of the nodes they came from, so a network Conv fused with the last spliced step may appear under a
`graphsurgery/...` name: its layer type is shown in brackets). Nodes the splice added are named
`graphsurgery/pre/...` and `graphsurgery/post/...`; everything else is the network. Each layer's time is its
median over the runs (this machine is shared: a mean picks up the other tenants' bursts).

The plain model is profiled too (its one input fed the same way). OpenVINO reorders the network's input into the
layout its first convolution wants, in the plain model as in the patched one, and names that Reorder after the
layer feeding it: in the patched model a spliced one. Such a Reorder (same layouts, same consumer as one in the
plain model) is network time, and is reported on its own line ("shared input reorder"), not as spliced time.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
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
    """Microseconds per run (median), by node name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):  # one warm-up run
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    times: dict[str, list[float]] = collections.defaultdict(list)
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"].removesuffix("_kernel_time")].append(event["dur"])
    trace.unlink()
    return {name: float(np.median(us[1:] or us)) for name, us in times.items()}


def openvino_nodes(model: Path, feeds: dict, runs: int, threads: int) -> dict[str, float]:
    """Microseconds per run (median), by executed layer (f32, as `bench` runs it)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", {**openvino_config("f32", threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    times: dict[str, list[float]] = collections.defaultdict(list)
    request.infer(feeds)
    for _ in range(runs):
        request.infer(feeds)
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                times[f"{info.node_name} [{info.node_type}]"].append(info.real_time.total_seconds() * 1e6)
    return {name: float(np.median(us)) for name, us in times.items()}


#: OpenVINO names an inserted Reorder "<producer>_<from layout>_<to layout>_<consumer>"
REORDER = re.compile(r"_([a-z]+)_([a-z]+)_(.+) \[Reorder\]$")


def shared_reorders(patched: dict[str, float], plain: dict[str, float]) -> set[str]:
    """Spliced-named Reorders that the plain model has too (same layouts into the same network layer)."""
    plain_keys = {match.groups() for name in plain if (match := REORDER.search(name))}
    return {name for name in patched
            if name.startswith(SPLICED) and (match := REORDER.search(name)) and match.groups() in plain_keys}


def summarise(times: dict[str, float], plain: dict[str, float]) -> dict:
    shared = shared_reorders(times, plain)
    spliced = {name: us for name, us in times.items() if name.startswith(SPLICED) and name not in shared}
    total = sum(times.values())
    part = {side: sum(us for name, us in spliced.items() if name.startswith(f"{SPLICED}{side}/"))
            for side in ("pre", "post")}
    return {"total_us": total, "plain_total_us": sum(plain.values()), "spliced_us": sum(spliced.values()),
            "pre_us": part["pre"], "post_us": part["post"], "shared_input_reorder_us": sum(times[n] for n in shared),
            "spliced_share": sum(spliced.values()) / total if total else 0.0,
            "spliced": sorted(spliced.items(), key=lambda item: -item[1])}


def plain_feeds(model: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    return {value.name: rng.uniform(-2, 2, [d if isinstance(d, int) else 1 for d in value.shape]).astype(np.float32)
            for value in ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=8, help="spliced layers listed per backend")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        patched = Path(folder) / "patched.onnx"
        apply(args.recipe, args.model, patched)
        feeds, plain = feeds_for(patched), plain_feeds(args.model)
        result = {backend: summarise(measure(patched, feeds, args.runs, args.threads),
                                     measure(args.model, plain, args.runs, args.threads))
                  for backend, measure in (("onnxruntime", onnxruntime_nodes), ("openvino", openvino_nodes))}
    for backend, summary in result.items():
        print(f"{backend}: {summary['total_us'] / 1000:.2f} ms of node time per run (plain model "
              f"{summary['plain_total_us'] / 1000:.2f}), of which spliced nodes {summary['spliced_us'] / 1000:.3f} ms "
              f"({summary['spliced_share']:.2%}): pre {summary['pre_us']:.0f} µs, post {summary['post_us']:.0f} µs"
              + (f"; shared input reorder {summary['shared_input_reorder_us']:.0f} µs"
                 if summary["shared_input_reorder_us"] else ""))
        for name, us in summary["spliced"][:args.top]:
            print(f"    {us:8.1f} µs  {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
