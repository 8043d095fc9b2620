"""ONNX Runtime and OpenVINO behind one small interface.

A runner is a context manager: `with open_runner("openvino", path) as run: outputs = run({"input": x})`, giving a
dict of numpy arrays by output name. OpenVINO runs at f32 unless a reduced precision is asked for explicitly (its
CPU plugin would otherwise pick bf16 on this kind of CPU). Backends are imported only when a runner is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from graphsurgery.errors import GraphsurgeryError

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16", "f16")

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@contextmanager
def open_runner(backend: str, model: str | Path, *, precision: str = "f32", threads: int | None = None) -> Iterator[Run]:
    """Load `model` (.onnx, or .xml for OpenVINO) on `backend`; yield a function feeding inputs by name."""
    model = Path(model)
    if backend == "onnxruntime":
        if precision != "f32":
            raise GraphsurgeryError(f"onnxruntime runs at f32 only, not {precision}", path=model,
                                    fix="use --precision f32 or --backend openvino")
        yield _onnxruntime(model, threads)
    elif backend == "openvino":
        yield _openvino(model, precision, threads)
    else:
        raise GraphsurgeryError(f"unknown backend {backend!r}", fix=f"choose one of {', '.join(BACKENDS)}")


def _onnxruntime(model: Path, threads: int | None) -> Run:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise GraphsurgeryError(f"onnxruntime cannot load the model: {_first_line(exc)}", path=model,
                                fix="check the model with `graphsurgery inspect`") from None
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feeds)))

    return run


def openvino_config(precision: str, threads: int | None) -> dict:
    """The CPU plugin configuration: an explicit inference precision (f32 unless asked) and thread count."""
    if precision not in PRECISIONS:
        raise GraphsurgeryError(f"unknown precision {precision!r}", fix=f"choose one of {', '.join(PRECISIONS)}")
    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _openvino(model: Path, precision: str, threads: int | None) -> Run:
    import openvino as ov

    config = openvino_config(precision, threads)
    try:
        compiled = ov.Core().compile_model(str(model), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line reports
        raise GraphsurgeryError(f"OpenVINO cannot compile the model: {_first_line(exc)}", path=model,
                                fix="check the model with `graphsurgery inspect`") from None
    request = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = request.infer(feeds)
        return {name: np.array(result[output]) for name, output in zip(names, compiled.outputs)}

    return run


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
