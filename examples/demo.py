"""`make demo`: the pipeline this project exists for, on an embedded default, in one command.

Export HRNet-W32 (the official checkpoint when models/pytorch/pose_hrnet_w32_256x192.pth exists, else seeded
weights) → splice recipes/hrnet_coco_pose.yaml → OpenVINO IR (FP32) → CPU inference on examples/images with
debug images → parity against the plain model + numpy processing on ONNX Runtime and OpenVINO, and a table.
Exit code 0 when every parity row passes, 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if __name__ == "__main__":  # Ctrl-C or SIGTERM while torch and the runtimes load: one line, not a traceback
    from examples.entry import guard

    guard()

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from graphsurgery.api import apply  # noqa: E402
from graphsurgery.benchmark import Settings, checked_settings, run_bench  # noqa: E402
from graphsurgery.compare import PositionResult  # noqa: E402
from graphsurgery.irconvert import convert  # noqa: E402
from graphsurgery.pose import run_pose  # noqa: E402
from graphsurgery.verification import verify  # noqa: E402

from examples.entry import Parser, summary  # noqa: E402
from examples.entry import run as run_example  # noqa: E402
from examples.hrnet.export import export_hrnet  # noqa: E402
from examples.outfolder import claim  # noqa: E402

RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
IMAGES = ROOT / "examples" / "images"
CHECKPOINT = ROOT / "models" / "pytorch" / "pose_hrnet_w32_256x192.pth"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=summary(__doc__, "make demo: export HRNet, patch, convert, run, check parity."))
    parser.add_argument("--variant", default="w32", choices=["w32", "tiny"], help="HRNet size (tiny: for tests)")
    parser.add_argument("--out", default=str(ROOT / "out" / "demo"), help="where everything is written")
    parser.add_argument("--iterations", type=int, default=10, help="timed rounds per pipeline")
    args = parser.parse_args(argv)
    return run_example(lambda: _demo(args.variant, args.out, args.iterations, Console(width=130)))


def _demo(variant: str, out: str, iterations: int, console: Console) -> int:
    # checked before the work: `--iterations 0` was refused at step 5/5, after minutes of export and conversion
    timing_settings = checked_settings(Settings(iterations=iterations, warmup=2, threads=2))
    stem = f"hrnet_{variant}"
    out = claim(out, "make demo", [f"{stem}{end}" for end in (".onnx", ".patched.onnx", ".patched.onnx.data",
                                                               ".patched.xml", ".patched.bin")] + ["run"])
    checkpoint = CHECKPOINT if CHECKPOINT.is_file() and variant == "w32" else None
    console.print(f"[bold]1/5 export[/] HRNet-{variant} with "
                  + (f"the official checkpoint {checkpoint}" if checkpoint else
                     "SEEDED weights (untrained: keypoints are not meaningful, parity is; put "
                     f"pose_hrnet_w32_256x192.pth in {CHECKPOINT.parent} for real ones)"), highlight=False)
    plain = export_hrnet(out / f"hrnet_{variant}.onnx", variant=variant, checkpoint=checkpoint, opset=17,
                         dynamic_batch=True, force=True)  # the folder is the demo's (`claim`)
    console.print(f"[bold]2/5 apply[/] {RECIPE.name}", highlight=False)
    patched = apply(RECIPE, plain, out / f"hrnet_{variant}.patched.onnx", force=True).output
    console.print("[bold]3/5 convert[/] to OpenVINO IR, FP32 weights")
    xml = out / f"hrnet_{variant}.patched.xml"
    convert(patched, xml, force=True)
    console.print(f"[bold]4/5 run[/] OpenVINO CPU inference on {IMAGES}", highlight=False)
    run = run_pose(xml, [IMAGES], out / "run", backend="openvino")
    console.print(f"[bold]5/5 parity[/] against the plain model + numpy processing, and latency ({iterations} rounds)")
    onnx_report = verify(RECIPE, plain, patched=patched, images=IMAGES, backends=("onnxruntime", "openvino"))
    ir_report = verify(RECIPE, plain, patched=xml, images=IMAGES, backends=("openvino",))
    timing = run_bench(RECIPE, plain, timing_settings)

    parity = {pair.name: pair for pair in onnx_report.compared}
    parity["ir"] = ir_report.pairs[0]
    latency = {row["key"]: row for row in timing.pipelines}
    table = Table(title=f"HRNet-{variant}, {onnx_report.samples} crops from {IMAGES.name}/, 2 threads, "
                        "median end-to-end ms (uint8 crop → keypoints)", title_justify="left")
    for column in ("pipeline", "backend", "latency ms", "parity vs plain + numpy"):
        table.add_column(column)
    rows = [
        ("plain ONNX + numpy", "onnxruntime", "onnxruntime-plain", None),
        ("patched ONNX", "onnxruntime", "onnxruntime-patched", parity["onnxruntime: unpatched → patched"]),
        ("its input steps vs numpy", "onnxruntime", None, parity["onnxruntime: input steps"]),
        ("plain ONNX + numpy", "openvino f32", "openvino-plain", None),
        ("patched ONNX", "openvino f32", "openvino-patched-f32", parity["openvino: unpatched → patched"]),
        ("its input steps vs numpy", "openvino f32", None, parity["openvino: input steps"]),
        ("patched IR (FP32 weights)", "openvino f32", None, parity["ir"]),
        ("patched, ORT vs OpenVINO", "both", None, parity["patched: onnxruntime → openvino"]),
    ]
    for name, backend, key, pair in rows:
        ms = f"{latency[key]['end_to_end_ms']['median']:.1f}" if key in latency else "—"
        verdict = "reference" if pair is None else (
            "[green]PASS[/] " + _summary(pair) if pair else "[red]FAIL[/] " + _summary(pair))
        table.add_row(name, backend, ms, verdict)
    console.print(table)
    ir_ms = sorted(image.latency_ms for image in run.images)
    console.print(
        f"IR on OpenVINO ({run.label}): {', '.join(f'{ms:.1f}' for ms in ir_ms)} ms per image", highlight=False
    )
    console.print(f"debug images (skeletons, heatmap montages): {out / 'run'}", highlight=False)
    for image in run.images:
        console.print(f"  {image.pose_image}", highlight=False)
    passed = bool(onnx_report) and bool(ir_report)
    console.print("[bold green]parity: all rows pass[/]" if passed else "[bold red]parity FAILED[/]: "
                  + "; ".join(onnx_report.failures() + ir_report.failures()))
    return 0 if passed else 1


def _summary(pair) -> str:
    """The most telling number of a pair: exact keypoints, and the largest score (or network input) difference."""
    parts = []
    for result in pair.results:
        if isinstance(result, PositionResult):
            parts.append(f"{result.output} {result.matches}/{result.positions} exact")
        elif result.output == "scores" or result.output.endswith("(network input)"):
            parts.append(f"{result.output} max |Δ| {result.max_abs:.1e}")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
