"""Export a zoo architecture to a plain ONNX model (no processing inside), with seeded stand-in weights.

Classifiers: `input` float32 [1|N,3,224,224] -> `logits` [.,1000]. Pose: `input` [.,3,384,288] -> `heatmaps`
[.,17,96,72]. SimCC: `input` [.,3,256,192] -> `simcc_x` [.,17,384] and `simcc_y` [.,17,512]. Detectors (named as
ultralytics exports them): `input` [.,3,320,320] -> `output0` [.,84,2100], i.e. [., 4 + 80 classes, anchors].
The export itself (TorchScript exporter, atomic write) is examples/onnx_export.py.

    python examples/zoo/export.py resnet -o resnet.onnx
    python examples/zoo/export.py simplebaseline --opset 11 --dynamic-batch -o simplebaseline.onnx
    python examples/zoo/export.py yolov8 -o yolov8.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples.zoo` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
if __name__ == "__main__":  # Ctrl-C or SIGTERM while torch loads: one line, not a traceback
    from examples.entry import guard

    guard()

from examples.entry import Parser, run, summary  # noqa: E402
from examples.onnx_export import INPUT_NAME, OPSETS, check_request, export_plain  # noqa: E402
from examples.zoo.models import PRESETS, build_zoo_model  # noqa: E402

OUTPUT_NAMES = {"classifier": ("logits",), "pose": ("heatmaps",), "simcc": ("simcc_x", "simcc_y"),
                "detector": ("output0",)}


def export_zoo(path: str | Path, name: str = "resnet", opset: int = 17, dynamic_batch: bool = False,
               seed: int = 0, force: bool = False) -> Path:
    """Write the plain model to `path` atomically (a reader never sees half a file); an existing `path` is
    replaced only with `force`."""
    path = check_request(path, opset, seed, force=force)
    model = build_zoo_model(name, seed=seed)
    return export_plain(model, path, model.config.input_size, OUTPUT_NAMES[model.config.kind], opset, dynamic_batch,
                        force)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=summary(__doc__, "Export a zoo architecture to a plain ONNX model."))
    parser.add_argument("name", choices=sorted(PRESETS), help="architecture (the -tiny ones are for tests)")
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help=f"{OPSETS[0]}-{OPSETS[-1]} (default 17)")
    parser.add_argument("--dynamic-batch", action="store_true", help='symbolic batch dimension "N"')
    parser.add_argument("--seed", type=int, default=0, help="seed for the stand-in weights")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    return run(lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    out = export_zoo(args.output, args.name, args.opset, args.dynamic_batch, args.seed, args.force)
    config = PRESETS[args.name]
    batch, (h, w) = "N" if args.dynamic_batch else "1", config.input_size
    k, ratio = config.joints, config.split_ratio
    anchors = sum((h // s) * (w // s) for s in config.strides)
    shapes = {"classifier": [f"[{batch},{config.classes}]"], "pose": [f"[{batch},{k},{h // 4},{w // 4}]"],
              "simcc": [f"[{batch},{k},{w * ratio}]", f"[{batch},{k},{h * ratio}]"],
              "detector": [f"[{batch},{4 * (1 if config.decoded else config.reg_max) + config.classes},{anchors}]"]
              }[config.kind]
    outputs = ", ".join(f"{name} {shape}" for name, shape in zip(OUTPUT_NAMES[config.kind], shapes))
    print(f"wrote {out}: {args.name}, opset {args.opset}, {INPUT_NAME} [{batch},3,{h},{w}] -> {outputs}")
    print(f"weights: seeded (seed {args.seed}), an untrained stand-in")
    return 0


if __name__ == "__main__":
    sys.exit(main())
