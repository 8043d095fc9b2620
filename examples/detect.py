"""`make detect`: a YOLOv8-shaped detector with ultralytics' pre- and post-processing inside the graph, end to end.

Export the zoo's YOLOv8-shaped detector (seeded stand-in weights) → splice recipes/yolov8_detector.yaml (letterbox
in; boxes, NMS and the map back to the image's pixels out) → OpenVINO IR (FP32) → CPU inference on examples/images
with the boxes drawn → parity against the plain model + numpy processing on ONNX Runtime and OpenVINO, detections
compared as sets. Exit code 0 when every parity row passes, 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if __name__ == "__main__":  # Ctrl-C or SIGTERM while torch and the runtimes load: one line, not a traceback
    from examples.entry import guard

    guard()

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from graphsurgery.api import apply  # noqa: E402
from graphsurgery.compare import DetectionResult  # noqa: E402
from graphsurgery.errors import GraphsurgeryError  # noqa: E402
from graphsurgery.images import list_images, read_image  # noqa: E402
from graphsurgery.irconvert import convert  # noqa: E402
from graphsurgery.runners import open_runner  # noqa: E402
from graphsurgery.safeio import write_atomically  # noqa: E402
from graphsurgery.verification import verify  # noqa: E402

from examples.entry import Parser, summary  # noqa: E402
from examples.entry import run as run_example  # noqa: E402
from examples.outfolder import claim  # noqa: E402
from examples.zoo.export import export_zoo  # noqa: E402

RECIPE = ROOT / "recipes" / "yolov8_detector.yaml"
IMAGES = ROOT / "examples" / "images"
PRESETS = {"yolov8": "yolov8", "tiny": "yolov8-tiny"}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=summary(__doc__, "make detect: a YOLOv8-shaped detector with its processing inside."))
    parser.add_argument("--variant", default="yolov8", choices=sorted(PRESETS), help="model size (tiny: for tests)")
    parser.add_argument("--out", default=str(ROOT / "out" / "detect"), help="where everything is written")
    args = parser.parse_args(argv)
    return run_example(lambda: _detect(PRESETS[args.variant], args.out, Console(width=130)))


def _detect(preset: str, out: str, console: Console) -> int:
    images = list_images([IMAGES])
    out = claim(out, "make detect", [f"{preset}{end}" for end in (".onnx", ".patched.onnx", ".patched.onnx.data",
                                                                    ".patched.xml", ".patched.bin")]
                + [f"{path.stem}_boxes.jpg" for path in images])
    console.print(f"[bold]1/5 export[/] {preset} with SEEDED weights (untrained: the boxes are not meaningful, "
                  "parity is)", highlight=False)
    plain = export_zoo(out / f"{preset}.onnx", preset, opset=17, force=True)  # the folder is ours (`claim`)
    console.print(f"[bold]2/5 apply[/] {RECIPE.name}", highlight=False)
    patched = apply(RECIPE, plain, out / f"{preset}.patched.onnx", force=True).output
    console.print("[bold]3/5 convert[/] to OpenVINO IR, FP32 weights")
    xml = out / f"{preset}.patched.xml"
    convert(patched, xml, force=True)
    console.print(f"[bold]4/5 run[/] OpenVINO CPU inference on {IMAGES}, boxes drawn", highlight=False)
    drawn = []
    with open_runner("openvino", xml) as run:
        for path in images:
            image = read_image(path)
            found = run({"image": image[None]})
            drawn.append(_draw(image, found, out / f"{path.stem}_boxes.jpg"))
    console.print("[bold]5/5 parity[/] against the plain model + numpy processing (detections compared as sets)")
    onnx_report = verify(RECIPE, plain, patched=patched, images=IMAGES, backends=("onnxruntime", "openvino"))
    ir_report = verify(RECIPE, plain, patched=xml, images=IMAGES, backends=("openvino",))
    table = Table(title=f"{preset}, {onnx_report.samples} images from {IMAGES.name}/ at their own sizes",
                  title_justify="left")
    for column in ("comparison", "verdict", "detections (input steps: the network input)"):
        table.add_column(column)
    rows = [(pair.name, pair) for pair in [*onnx_report.pairs, *onnx_report.input_steps]]
    rows.append((f"{ir_report.pairs[0].name} (IR)", ir_report.pairs[0]))
    for name, pair in rows:
        result = next((r for r in pair.results if isinstance(r, DetectionResult)), pair.results[0])
        table.add_row(name, "[green]PASS[/]" if pair else "[red]FAIL[/]", result.summary())
    console.print(table)
    for path, count in drawn:
        console.print(f"  {path}: {count} detections", highlight=False)
    passed = bool(onnx_report) and bool(ir_report)
    console.print("[bold green]parity: all rows pass[/]" if passed else "[bold red]parity FAILED[/]: "
                  + "; ".join(onnx_report.failures() + ir_report.failures()))
    return 0 if passed else 1


def _draw(image: np.ndarray, found: dict[str, np.ndarray], path: Path) -> tuple[Path, int]:
    """The image with each detection's box and class index; returns the file written and the count."""
    from graphsurgery.images import opencv

    cv2 = opencv()  # OpenCV's settings checked first: one it cannot parse aborted the process as cv2 loaded

    canvas = image.copy()
    count = int(found["count"][0])
    for (x1, y1, x2, y2), label, score in zip(found["boxes"][0, :count], found["classes"][0], found["scores"][0]):
        cv2.rectangle(canvas, (round(x1), round(y1)), (round(x2), round(y2)), (0, 200, 255), 2)
        cv2.putText(canvas, f"{label} {score:.2f}", (round(x1), max(12, round(y1) - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 200, 255), 1)
    ok, jpeg = cv2.imencode(".jpg", canvas)
    if not ok:
        raise GraphsurgeryError("OpenCV could not encode the image with boxes", path=path, fix="report this")
    # whole or not at all (cv2.imwrite wrote in place: Ctrl-C left half a JPEG, and a failed write said nothing)
    write_atomically(path, lambda stream: stream.write(jpeg.tobytes()), "the image with boxes")
    return path, count


if __name__ == "__main__":
    sys.exit(main())
