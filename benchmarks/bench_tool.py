"""Benchmark of graphsurgery itself on a big model: `apply` vs a bare `onnx.load` + `onnx.save`, and `convert` vs a
bare `ov.convert_model` + `ov.save_model`: wall time and peak resident memory, each run in a fresh process.

    python benchmarks/bench_tool.py                       # exports HRNet-W32 (114 MB) once if it is missing
    python benchmarks/bench_tool.py --model hrnet_w32.onnx --repeats 3 --json tool.json

Every measurement is a fresh `python` process; its peak RSS comes from `os.wait4` (that child's own rusage:
`getrusage(RUSAGE_CHILDREN)` would report the largest child so far, not each one). This driver imports only the
standard library because Linux carries the parent's peak RSS into an exec'ed child's `ru_maxrss`: a driver
holding onnx or torch would inflate every number. The child reports its RSS after its imports too, so the cost of
the operation itself (peak − imports) is separated from the interpreter's. Tasks are interleaved across repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = Path(tempfile.gettempdir()) / "graphsurgery-bench" / "hrnet_w32.onnx"
DEFAULT_RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
# task: (what it does, the task it is compared with)
TASKS = {
    "load_save": ("onnx.load + onnx.save (bare)", None),
    "apply": ("graphsurgery apply", "load_save"),
    "apply_unchecked": ("graphsurgery apply minus its 2 full checker passes (diagnostic)", "load_save"),
    "convert_bare": ("ov.convert_model + ov.save_model(compress_to_fp16=False) (bare)", None),
    "convert": ("graphsurgery convert", "convert_bare"),
}
TARGET_TIME, TARGET_RSS = 1.5, 2.0  # apply ≤ 1.5 × bare load+save; peak RSS ≤ 2 × the model's size


# ---- child side: one operation in a fresh interpreter --------------------------------------------------------

def child(task: str, model: Path, recipe: Path, out: Path) -> dict:
    """Import what `task` needs, note the RSS, then time the operation alone."""
    import resource

    if task == "load_save":
        import onnx

        def operation():
            onnx.save(onnx.load(str(model)), str(out))
    elif task == "apply":
        from graphsurgery.api import apply

        def operation():
            apply(recipe, model, out, force=True)
    elif task == "apply_unchecked":
        import functools

        from graphsurgery import api, modelio

        modelio._check_consistency = lambda path: None  # the input check in load_model
        api.save_model = functools.partial(modelio.save_model, check=False)  # the output check

        def operation():
            api.apply(recipe, model, out, force=True)
    elif task == "convert_bare":
        import openvino as ov

        def operation():
            ov.save_model(ov.convert_model(str(model)), str(out), compress_to_fp16=False)
    elif task == "convert":
        import openvino  # noqa: F401  (imported before the clock starts, like the bare task)

        from graphsurgery.irconvert import convert

        def operation():
            convert(model, out, force=True)
    elif task == "export":
        sys.path.insert(0, str(ROOT))
        from examples.hrnet.export import export_hrnet

        def operation():
            export_hrnet(out, variant="w32", force=True)
    elif task == "machine":
        from graphsurgery.machine import machine

        return machine()
    else:
        raise SystemExit(f"unknown task {task!r}")
    imports_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    operation()
    return {"seconds": time.perf_counter() - start, "imports_kib": imports_kib}


# ---- driver side: standard library only ----------------------------------------------------------------------

def spawn(task: str, model: Path, recipe: Path, out: Path) -> dict:
    """Run `task` in a fresh interpreter; add its wall time and peak RSS (KiB) as the kernel accounted them."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", task, "--model", str(model),
               "--recipe", str(recipe), "--out", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"{task} failed (exit {process.returncode})")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    return {**result, "wall_seconds": wall, "peak_kib": usage.ru_maxrss}


def measure(model: Path, recipe: Path, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="graphsurgery-tool-bench-", dir=model.parent) as folder:
        folder = Path(folder)
        patched = folder / "patched.onnx"
        outputs = {"load_save": folder / "resaved.onnx", "apply": patched, "apply_unchecked": folder / "unchecked.onnx",
                   "convert_bare": folder / "bare.xml", "convert": folder / "converted.xml"}
        sources = {"load_save": model, "apply": model, "apply_unchecked": model, "convert_bare": patched,
                   "convert": patched}
        runs: dict[str, list[dict]] = {task: [] for task in TASKS}
        for _ in range(repeats):
            for task in TASKS:  # apply runs before the converts: they read its output
                runs[task].append(spawn(task, sources[task], recipe, outputs[task]))
        sizes = {"model": model.stat().st_size, "patched": patched.stat().st_size}
    return {"runs": runs, "sizes": sizes}


def summarise(measured: dict) -> dict:
    rows = {}
    for task, runs in measured["runs"].items():
        rows[task] = {
            "label": TASKS[task][0],
            "seconds": statistics.median(r["seconds"] for r in runs),
            "wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
            "peak_mib": statistics.median(r["peak_kib"] for r in runs) / 1024,
            "imports_mib": statistics.median(r["imports_kib"] for r in runs) / 1024,
        }
        rows[task]["operation_mib"] = rows[task]["peak_mib"] - rows[task]["imports_mib"]
    for task, (_, baseline) in TASKS.items():
        if baseline:
            rows[task]["time_ratio"] = rows[task]["seconds"] / rows[baseline]["seconds"]
            rows[task]["peak_ratio"] = rows[task]["peak_mib"] / rows[baseline]["peak_mib"]
    model_mib = measured["sizes"]["model"] / 2**20
    apply = rows["apply"]
    targets = [
        {"name": "apply / bare load+save, time", "ratio": apply["time_ratio"], "limit": TARGET_TIME},
        {"name": "apply peak RSS / model size", "ratio": apply["peak_mib"] / model_mib, "limit": TARGET_RSS},
        {"name": "apply peak RSS above the imports / model size", "ratio": apply["operation_mib"] / model_mib,
         "limit": TARGET_RSS},
    ]
    for target in targets:
        target["met"] = target["ratio"] <= target["limit"]
    return {"model_mib": model_mib, "patched_mib": measured["sizes"]["patched"] / 2**20, "tasks": rows,
            "targets": targets}


def report(summary: dict, repeats: int) -> str:
    lines = [f"model {summary['model_mib']:.1f} MiB (patched {summary['patched_mib']:.1f} MiB), median of {repeats} "
             "fresh processes each",
             f"{'task':<66} {'op s':>7} {'wall s':>7} {'× bare':>7} {'peak MiB':>9} {'imports':>8} {'op MiB':>7}"]
    for row in summary["tasks"].values():
        ratio = f"{row['time_ratio']:.2f}" if "time_ratio" in row else ""
        lines.append(f"{row['label']:<66} {row['seconds']:>7.2f} {row['wall_seconds']:>7.2f} {ratio:>7} "
                     f"{row['peak_mib']:>9.0f} {row['imports_mib']:>8.0f} {row['operation_mib']:>7.0f}")
    for target in summary["targets"]:
        lines.append(f"  {'✓' if target['met'] else '✗'} {target['name']}: {target['ratio']:.2f} (≤ {target['limit']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help=f"plain ONNX model; HRNet-W32 is exported there if missing (default {DEFAULT_MODEL})")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the measurements and the summary here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.recipe, args.out)))
        return 0

    if not args.model.exists():
        args.model.parent.mkdir(parents=True, exist_ok=True)
        print(f"exporting HRNet-W32 to {args.model} ...", flush=True)
        spawn("export", args.model, args.recipe, args.model)
    load_before = os.getloadavg()
    measured = measure(args.model, args.recipe, args.repeats)
    summary = summarise(measured)
    result = {"model": str(args.model), "recipe": str(args.recipe), "repeats": args.repeats,
              "machine": {key: value for key, value in spawn("machine", args.model, args.recipe, args.model).items()
                          if key not in ("wall_seconds", "peak_kib")},
              "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
              **summary, "runs": measured["runs"]}
    print(report(summary, args.repeats))
    print(f"load average {load_before[0]:.2f} before, {result['load_average']['after'][0]:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
