"""Loading a PyTorch checkpoint (.pth) from a stranger into an HRNet, trusting nothing in it.

`weights_only=True` refuses to unpickle arbitrary objects, so a hostile .pth cannot run code. Around it: the file
must be a regular file (a FIFO or /dev/zero was "not found"); a .pth is a zip whose entries torch.save stores
uncompressed, so entries that inflate far past the file's size (a 12 MB zip bomb asked for 12 GB) are refused
before torch reads them; and the tensors must fit the model in name, shape and kind, hold finite numbers and
non-negative BatchNorm variances: an integer or complex checkpoint was cast in silence, NaN weights exported a
model whose NaN outputs then passed parity ("34/34 exact"), a sparse tensor or a non-string key was a traceback.
Every refusal is one GraphsurgeryError line.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor, nn

from graphsurgery.errors import GraphsurgeryError, quoted
from graphsurgery.safeio import input_path, open_regular

#: where training scripts nest the state dict: mmpose and the HRNet authors' "state_dict", others' "model"
NESTS = ("state_dict", "model")
#: how far a .pth may inflate: torch.save stores its entries, so uncompressed they are the file's size
MAX_EXPANSION = 4
#: zip records a .pth may hold: one per tensor storage (HRNet-W32: ~1,800) and a few of torch's own
MAX_RECORDS = 20_000
#: torch's boilerplate after its one useful sentence
_BOILERPLATE = (". This is an internal miniz error", "Please file", "Check the doc")


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load an official-layout state dict (bare, under "state_dict" or "model", with or without DataParallel's
    "module." prefix) into `model`; any other file is one GraphsurgeryError line naming it."""
    variant = getattr(getattr(model, "config", None), "name", "HRNet")
    fix = f"pass the official pose_hrnet_w32_256x192.pth, or a state_dict saved from this model (--variant {variant})"
    path = input_path(path, "checkpoint")
    state = _state_dict(_read(path, fix), path, fix)
    problems = _problems(model.state_dict(), state)
    if problems:
        raise GraphsurgeryError(f"not an HRNet-{variant} checkpoint: " + "; ".join(problems), path=path, fix=fix)
    model.load_state_dict(dict(state), strict=True)


def _read(path: Path, fix: str):
    """What torch.load makes of the file opened (a regular file, judged on the open file), safely."""
    if path.is_dir():
        raise GraphsurgeryError("is a directory, not a checkpoint", path=path, fix="give the path of the .pth file")
    try:
        stream = open_regular(path, "a checkpoint")
    except FileNotFoundError:
        raise GraphsurgeryError("checkpoint file not found", path=path, fix="check the --checkpoint path") from None
    except OSError as exc:
        raise GraphsurgeryError(f"cannot read the checkpoint ({exc.strerror})", path=path,
                                fix="check its permissions") from None
    with stream:
        _refuse_zip_bomb(stream, path, fix)
        try:
            return torch.load(stream, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's message is boilerplate around one useful line, and suggests weights_only=False: never do that.
            lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
            detail = next((line for line in lines if not line.startswith(_BOILERPLATE)), "bad pickle")
            raise GraphsurgeryError(f"not a PyTorch checkpoint of plain tensors ({detail[:160]})", path=path,
                                    fix=fix) from None
        except Exception as exc:  # torch.load raises many types (RuntimeError, EOFError, OSError, zip errors)
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            for boilerplate in _BOILERPLATE:
                detail = detail.split(boilerplate)[0]
            raise GraphsurgeryError(f"not a PyTorch checkpoint ({detail[:160]})", path=path, fix=fix) from None


def _refuse_zip_bomb(stream: BinaryIO, path: Path, fix: str) -> None:
    """Refuse a zip whose entries claim far more bytes than the file holds (torch inflates each one whole in
    memory); the legacy, non-zip format and unreadable zips are left to torch.load to judge."""
    size = os.fstat(stream.fileno()).st_size
    try:
        if zipfile.is_zipfile(stream):
            stream.seek(0)
            entries = zipfile.ZipFile(stream).infolist()
            if len(entries) > MAX_RECORDS:  # torch.load reads each: 100,000 took 15 s, 10^6 minutes without a word
                raise GraphsurgeryError(f"the checkpoint holds {len(entries):,} records; an HRNet's has a few "
                                        "thousand", path=path, fix=fix)
            claimed = sum(entry.file_size for entry in entries)
            if claimed > MAX_EXPANSION * size + (1 << 20):
                raise GraphsurgeryError(f"the checkpoint's zip entries inflate to {claimed:,} bytes from {size:,} "
                                        "(a zip bomb: torch.save stores its tensors uncompressed)", path=path, fix=fix)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError):
        pass
    finally:
        stream.seek(0)


def _state_dict(loaded, path: Path, fix: str) -> dict[str, Tensor]:
    """The name → tensor mapping inside `loaded`, with DataParallel's "module." prefix removed."""
    state = loaded
    if isinstance(state, Mapping):
        state = next((state[key] for key in NESTS if isinstance(state.get(key), Mapping)), state)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise GraphsurgeryError("checkpoint is not a state dict of tensors", path=path, fix=fix)
    odd = next((k for k in state if not isinstance(k, str)), None)
    if odd is not None:
        raise GraphsurgeryError(f"checkpoint has a key that is not a parameter name: {quoted(odd)}", path=path,
                                fix=fix)
    odd = next((k for k, v in state.items() if v.layout != torch.strided or v.is_quantized or v.is_meta), None)
    if odd is not None:
        raise GraphsurgeryError(f"checkpoint tensor {quoted(odd)} is not a dense tensor of numbers", path=path,
                                fix=fix)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def _problems(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    """What keeps `state` from being `expected`'s weights: keys, shapes, kinds and values, a few of each."""
    # Pre-0.4.1 checkpoints lack BN's num_batches_tracked; load_state_dict fills it in, so it is not "missing".
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    common = [(k, state[k], v) for k, v in expected.items() if k in state]
    mismatched = [f"{k} {tuple(t.shape)} vs {tuple(v.shape)}" for k, t, v in common if t.shape != v.shape]
    # float16/64 load into float32 exactly enough; integers, booleans and complex numbers were cast in silence
    kinds = [f"{k} {t.dtype} vs {v.dtype}" for k, t, v in common
             if t.is_floating_point() != v.is_floating_point() or t.is_complex()]
    floats = [(k, t) for k, t, v in common if t.is_floating_point() and v.is_floating_point()]
    # judged as the model will hold them: a float64 1e300 is finite, and infinite once loaded into float32
    non_finite = [k for k, t in floats if not bool(torch.isfinite(t.to(expected[k].dtype)).all())]
    negative = [k for k, t in floats if k.endswith("running_var") and bool((t < 0).any())]
    return [
        f"{len(items)} {label}: {', '.join(map(str, items[:3]))}{', ...' if len(items) > 3 else ''}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs model)", mismatched),
            ("type mismatches (checkpoint vs model)", kinds),
            ("tensors holding NaN or infinity", non_finite),
            ("BatchNorm variances below zero", negative),
        )
        if items
    ]
