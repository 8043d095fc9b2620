"""Model-local functions expanded for OpenVINO, which converts no call of one.

torch's `export_modules_as_functions` writes each chosen module as a model-local function (`__main__.Head`) and the
graph as calls of them. ONNX Runtime runs such a model; OpenVINO 2026.4 has "no conversion rule" for the calls, so
`convert`, `run`, `bench` and verify's OpenVINO side refused it (round 97's leftover). OpenVINO now reads a copy with
every call expanded into the nodes of its function (`onnx.inliner`), made in a scratch folder: the user's file stays
as it is, and so does the patched model `apply` writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnx.inliner

from graphsurgery.safeio import temporary_folder


@contextmanager
def for_openvino(model: Path, proto: onnx.ModelProto | None = None) -> Iterator[tuple[Path, onnx.ModelProto | None]]:
    """The ONNX model at `model` (`proto`, where the caller read it) as OpenVINO should read it: itself, or where it
    holds model-local functions, an inlined copy (path and proto) alive within the block. An IR, or a model onnx
    cannot inline, is given as it is (OpenVINO's own refusal then names the call)."""
    from graphsurgery.modelio import load_model, save_model
    from graphsurgery.runners import model_signature

    if model.suffix.lower() != ".onnx" or not (proto.functions if proto is not None
                                               else model_signature(model).local_functions):
        yield model, proto
        return
    loaded = load_model(model)
    try:
        inlined = onnx.inliner.inline_local_functions(loaded.proto)
    except Exception:  # noqa: BLE001 — onnx's inliner refusing a model it checked: OpenVINO says what it cannot read
        yield model, proto
        return
    with temporary_folder("openvino") as folder:
        copy = folder / "inlined.onnx"
        save_model(inlined, copy, external_base=loaded.base_dir, check=False, made=False)
        yield copy, inlined
