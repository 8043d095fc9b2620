"""Write a torch network as a plain ONNX model, atomically: the step both example export scripts share.

Uses the TorchScript exporter (`dynamo=False`): it is deprecated since PyTorch 2.9 but still the only one that
emits opsets below 18; the torch.export-based exporter, asked for an older opset, fails to down-convert and
returns an opset-18 model anyway.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError

INPUT_NAME = "input"
OPSETS = range(9, 21)  # 20 is the TorchScript exporter's maximum


def check_request(path: Path, opset: int) -> None:
    """Refuse what would fail only after the (slow) network build: an unsupported opset, a missing folder."""
    if opset not in OPSETS:
        raise GraphsurgeryError(f"opset {opset} is not supported", fix=f"use an opset from {OPSETS[0]} to {OPSETS[-1]}")
    if not path.parent.is_dir():
        raise GraphsurgeryError("output directory does not exist", path=path, fix="create it first")


def export_plain(model, path: Path, input_size: tuple[int, int], output_name: str | tuple[str, ...], opset: int,
                 dynamic_batch: bool) -> Path:
    """Export `model` ([1|N,3,H,W] `input` -> `output_name`, or several outputs) to `path`; no reader ever sees half
    a file."""
    outputs = [output_name] if isinstance(output_name, str) else list(output_name)
    import onnx
    import torch

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
                (torch.zeros(1, 3, *input_size),),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes={name: {0: "N"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None,
            )
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
