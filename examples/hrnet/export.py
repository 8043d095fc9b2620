"""Export HRNet to a plain ONNX model: `input` float32 [1,3,256,192] -> `heatmaps` [1,17,64,48], no processing inside.

Uses the TorchScript exporter (`dynamo=False`): it is deprecated since PyTorch 2.9 but still the only one that
emits opset 9; the torch.export-based exporter starts at opset 18 and, asked for 9, fails to down-convert and
returns an opset-18 model anyway.

    python examples/hrnet/export.py -o hrnet.onnx                      # seeded stand-in weights, opset 17
    python examples/hrnet/export.py --checkpoint pose_hrnet_w32_256x192.pth --opset 9 --dynamic-batch -o hrnet.onnx
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples.hrnet` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import onnx
import torch

from examples.hrnet.model import PRESETS, build_hrnet, load_checkpoint
from graphsurgery.errors import GraphsurgeryError

INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
OPSETS = range(9, 21)  # 20 is the TorchScript exporter's maximum


def export_hrnet(
    path: str | Path,
    variant: str = "w32",
    checkpoint: str | Path | None = None,
    opset: int = 17,
    dynamic_batch: bool = False,
    seed: int = 0,
) -> Path:
    """Write the plain model to `path` atomically (no reader sees half a file); `seed` only without a checkpoint."""
    path = Path(path)
    if opset not in OPSETS:
        raise GraphsurgeryError(f"opset {opset} is not supported", fix=f"use an opset from {OPSETS[0]} to {OPSETS[-1]}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise GraphsurgeryError(
            "checkpoint file not found", path=checkpoint, fix="check the path, or omit --checkpoint for seeded weights"
        )
    if not path.parent.is_dir():
        raise GraphsurgeryError("output directory does not exist", path=path, fix="create it first")

    model = build_hrnet(variant, seed=None if checkpoint is not None else seed)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    height, width = model.config.input_size

    # Same directory, so os.replace is an atomic rename; not mkstemp, whose 0600 mode would outlive the rename.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            # Deliberate use of the legacy exporter, and nearest upsampling by integer factors is exact at opset 9.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message="The feature will be removed")
            warnings.filterwarnings("ignore", message="You are trying to export the model with onnx:Upsample")
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, height, width),),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}} if dynamic_batch else None,
            )
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--checkpoint", type=Path, help="official pose_hrnet_w32_256x192.pth (default: seeded weights)")
    parser.add_argument("--variant", choices=sorted(PRESETS), default="w32")
    parser.add_argument("--opset", type=int, default=17, help=f"{OPSETS[0]}-{OPSETS[-1]} (default 17)")
    parser.add_argument("--dynamic-batch", action="store_true", help='symbolic batch dimension "N"')
    parser.add_argument("--seed", type=int, default=0, help="seed for the stand-in weights (ignored with --checkpoint)")
    args = parser.parse_args(argv)

    try:
        out = export_hrnet(args.output, args.variant, args.checkpoint, args.opset, args.dynamic_batch, args.seed)
    except GraphsurgeryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
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
