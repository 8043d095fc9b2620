"""Export HRNet to a plain ONNX model: `input` float32 [1,3,256,192] -> `heatmaps` [1,17,64,48], no processing inside.

The export itself (TorchScript exporter, atomic write) is examples/onnx_export.py, shared with the zoo.

    python examples/hrnet/export.py -o hrnet.onnx                      # seeded stand-in weights, opset 17
    python examples/hrnet/export.py --checkpoint pose_hrnet_w32_256x192.pth --opset 9 --dynamic-batch -o hrnet.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples.hrnet` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
if __name__ == "__main__":  # Ctrl-C or SIGTERM while torch loads: one line, not a traceback
    from examples.entry import guard

    guard()

from graphsurgery.errors import GraphsurgeryError  # noqa: E402
from graphsurgery.safeio import input_path, present  # noqa: E402

from examples.entry import Parser, run, summary  # noqa: E402
from examples.hrnet.model import PRESETS, build_hrnet, load_checkpoint  # noqa: E402
from examples.onnx_export import INPUT_NAME, OPSETS, check_request, export_plain  # noqa: E402

OUTPUT_NAME = "heatmaps"


def export_hrnet(
    path: str | Path,
    variant: str = "w32",
    checkpoint: str | Path | None = None,
    opset: int = 17,
    dynamic_batch: bool = False,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write the plain model to `path` atomically (no reader sees half a file); `seed` only without a checkpoint.
    An existing `path` is replaced only with `force`; the checkpoint never is."""
    if checkpoint is not None:
        checkpoint = input_path(checkpoint, "checkpoint")
        if not present(checkpoint):
            raise GraphsurgeryError("checkpoint file not found", path=checkpoint,
                                    fix="check the path, or omit --checkpoint for seeded weights")
    path = check_request(path, opset, seed, [checkpoint], force)
    model = build_hrnet(variant, seed=None if checkpoint is not None else seed)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return export_plain(model, path, model.config.input_size, OUTPUT_NAME, opset, dynamic_batch, force)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=summary(__doc__, "Export HRNet to a plain ONNX model."))
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument("--checkpoint", help="official pose_hrnet_w32_256x192.pth (default: seeded weights)")
    parser.add_argument("--variant", choices=sorted(PRESETS), default="w32")
    parser.add_argument("--opset", type=int, default=17, help=f"{OPSETS[0]}-{OPSETS[-1]} (default 17)")
    parser.add_argument("--dynamic-batch", action="store_true", help='symbolic batch dimension "N"')
    parser.add_argument("--seed", type=int, default=0, help="seed for the stand-in weights (ignored with --checkpoint)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    return run(lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    out = export_hrnet(args.output, args.variant, args.checkpoint, args.opset, args.dynamic_batch, args.seed,
                       args.force)
    config, batch = PRESETS[args.variant], "N" if args.dynamic_batch else "1"
    h, w = config.input_size
    print(
        f"wrote {out}: HRNet-{args.variant}, opset {args.opset}, "
        f"{INPUT_NAME} [{batch},3,{h},{w}] -> {OUTPUT_NAME} [{batch},{config.num_joints},{h // 4},{w // 4}]"
    )
    if args.checkpoint is not None:
        print(f"weights: checkpoint {args.checkpoint}")
    else:
        print(f"weights: seeded (seed {args.seed}), an untrained stand-in: heatmaps do not locate real joints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
