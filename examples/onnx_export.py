"""Write a torch network as a plain ONNX model, atomically: the step both example export scripts share.

Uses the TorchScript exporter (`dynamo=False`): it is deprecated since PyTorch 2.9 but still the only one that
emits opsets below 18; the torch.export-based exporter, asked for an older opset, fails to down-convert and
returns an opset-18 model anyway.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from graphsurgery.errors import GraphsurgeryError, whole
from graphsurgery.limits import write_fix
from graphsurgery.modelio import check_output_path, output_exists, staging_folder
from graphsurgery.safeio import output_path, place, placing

INPUT_NAME = "input"
OPSETS = range(9, 21)  # 20 is the TorchScript exporter's maximum
SEEDS = range(-(2**63), 2**64)  # what torch.Generator.manual_seed takes (2**64 was a RuntimeError, a traceback)


def check_request(path, opset: int, seed: int = 0, inputs: Iterable[Path | str | None] = (),
                  force: bool = False) -> Path:
    """Refuse what would fail only after the (slow) network build: an unsupported opset or seed, and an output the
    graphsurgery commands would refuse too (an input such as the checkpoint, a device such as /dev/null, which
    os.replace replaced when run as root, a folder, a missing or unwritable folder, a file there without --force)."""
    if not whole(opset) or opset not in OPSETS:
        raise GraphsurgeryError(f"opset {opset} is not supported", fix=f"use an opset from {OPSETS[0]} to {OPSETS[-1]}")
    if not whole(seed) or seed not in SEEDS:
        raise GraphsurgeryError(f"seed {seed} is out of range", fix="use a seed from 0 to 2**64 - 1")
    path = output_path(path, "model")
    if not path.parent.is_dir():
        raise GraphsurgeryError("output directory does not exist", path=path, fix="create it first")
    check_output_path(path, [Path(source) for source in inputs if source is not None], force)
    return path


def export_plain(model, path: Path, input_size: tuple[int, int], output_name: str | tuple[str, ...], opset: int,
                 dynamic_batch: bool, force: bool = False) -> Path:
    """Export `model` ([1|N,3,H,W] `input` -> `output_name`, or several outputs) to `path`; no reader ever sees half
    a file, and a signal or a kill leaves no file behind (a scratch folder the next export removes)."""
    outputs = [output_name] if isinstance(output_name, str) else list(output_name)
    import onnx
    import torch

    # A scratch folder beside `path`, so the final move is an atomic rename (a bare `.tmp` file outlived SIGTERM).
    with staging_folder(path) as staging:
        try:
            _export_to(torch, onnx, model, staging / path.name, input_size, outputs, opset, dynamic_batch)
            with placing(path.parent):
                place([(staging / path.name, path)], replace=force)
        except FileExistsError:  # placed by another writer since the check
            raise output_exists(path, path) from None
        except OSError as exc:
            raise GraphsurgeryError(f"cannot write the model ({exc.strerror or exc})", path=path,
                                    fix=write_fix(exc, "free disk space or choose another folder")) from None
    return path


def _export_to(torch, onnx, model, tmp: Path, input_size: tuple[int, int], outputs: list[str], opset: int,
               dynamic_batch: bool) -> None:
    """The TorchScript export itself, checked by onnx."""
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
