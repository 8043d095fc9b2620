"""Round 86: OpenVINO inference from two threads froze the whole process.

Round 85 saw two threads' `graphsurgery.verify(..., backends=["openvino"])` hang for ever, both in OpenVINO's
input copy (`tensor.data[:] = inputs[:]`). Native stacks (gdb) showed a lock-order inversion inside OpenVINO's
Python binding, not in graphsurgery: the first `Tensor.data` of a process builds a static dtype table, and building
it has pybind11 load numpy's C API, which lets go of the GIL inside the table's C++ initialization guard; the
other thread's first `Tensor.data` then waits for that guard holding the GIL, and the first waits for the GIL.
8 fresh processes in 40 froze (a pair of threaded verifies each). `runners.openvino` now builds the table once,
alone, under a lock, before any OpenVINO object graphsurgery makes. Here the first thread is made to pause (a slow
`__import__`) exactly where pybind11 loads numpy's C API, so the freeze is certain without the fix.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent

#: Two OpenVINO runners opened, then run from two threads; the first pauses inside its first `Tensor.data`, where
#: pybind11 imports numpy's C API (a fresh process: that happens once per process).
TWO_THREADS = """
import builtins, sys, threading, time
from contextlib import ExitStack

import numpy as np

from graphsurgery.runners import open_runner

model, out = sys.argv[1], sys.argv[2]
feeds = [np.random.default_rng(seed).random((1, 3, 8, 8), dtype=np.float32) for seed in (1, 2)]
results = [None, None]
with ExitStack() as stack:
    runs = [stack.enter_context(open_runner("openvino", model)) for _ in feeds]
    real_import, inside = builtins.__import__, threading.Event()

    def slow_import(name, *args, **kwargs):
        if threading.current_thread().name == "first" and name.startswith("numpy") and not inside.is_set():
            inside.set()
            time.sleep(0.5)  # the GIL is free: the second thread runs
        return real_import(name, *args, **kwargs)

    def run(index):
        if index:
            inside.wait(1)
        results[index] = runs[index]({"input": feeds[index]})["heatmaps"]

    builtins.__import__ = slow_import
    threads = [threading.Thread(target=run, args=(i,), name=("first", "second")[i]) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    builtins.__import__ = real_import
np.savez(out, *feeds, *results)
"""


def _conv_by_numpy(model: Path, x: np.ndarray) -> np.ndarray:
    """`pose_model`'s Conv (kernel = stride = 4, no padding) on [1, 3, H, W], by numpy alone."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    w, b = weights["conv.weight"], weights["conv.bias"]
    n, c, h, wid = x.shape
    patches = x.reshape(n, c, h // 4, 4, wid // 4, 4)
    return np.einsum("ncyaxb,kcab->nkyx", patches, w) + b[None, :, None, None]


def in_fresh_python(script: str, *args: Path, timeout: float) -> subprocess.CompletedProcess:
    """`script` run with `args` in a new Python process that imports this checkout's graphsurgery: what these tests
    look at happens once per process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_two_threads_first_openvino_inference_does_not_freeze(tmp_path):
    model = pose_model(tmp_path / "m.onnx", input_hw=(8, 8))
    out = tmp_path / "out.npz"
    try:
        proc = in_fresh_python(TWO_THREADS, model, out, timeout=40)
    except subprocess.TimeoutExpired:
        raise AssertionError("two threads' first OpenVINO inferences froze the process") from None
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = np.load(out)
    feeds, results = [saved[f"arr_{i}"] for i in (0, 1)], [saved[f"arr_{i}"] for i in (2, 3)]
    for feed, result in zip(feeds, results):
        assert result.shape == (1, 17, 2, 2)
        np.testing.assert_allclose(result, _conv_by_numpy(model, feed), rtol=1e-4, atol=1e-5)
    assert not np.allclose(results[0], results[1])  # each thread got its own input's answer


def test_graphsurgery_reaches_openvino_only_through_runners_openvino():
    """Every OpenVINO object graphsurgery makes starts from `runners.openvino` (its numpy bridge built first): a
    module importing `openvino` itself could make the first `Tensor.data` race again."""
    direct = [f"{path.name}:{number}" for path in sorted((ROOT / "graphsurgery").glob("*.py"))
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if re.match(r"\s*(import openvino\b|from openvino(\.runtime)? import)", line)]
    assert direct == ["runners.py:" + str(_line_of("runners.py", "    import openvino as ov"))]


def _line_of(module: str, text: str) -> int:
    lines = (ROOT / "graphsurgery" / module).read_text(encoding="utf-8").splitlines()
    assert lines.count(text) == 1
    return lines.index(text) + 1


#: An OpenVINO runner opened in a fresh process, noting whether OpenVINO's telemetry sender was silenced when `openvino`
#: was first imported
TELEMETRY_AT_IMPORT = """
import sys

seen = []


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "openvino" and not seen:
            from graphsurgery.limits import _send_nothing
            from openvino_telemetry.utils.sender import TelemetrySender

            seen.append(TelemetrySender.send is _send_nothing)
        return None


sys.meta_path.insert(0, Watch())
from graphsurgery.runners import open_runner

with open_runner("openvino", sys.argv[1]):
    print(seen)
"""


def test_openvino_is_imported_with_its_telemetry_off(tmp_path):
    """The CLI silenced OpenVINO's telemetry as a command started; the Python API never did, and `import openvino`
    sends an event from a forked child (the project sends nothing at run time)."""
    model = pose_model(tmp_path / "m.onnx", input_hw=(8, 8))
    done = in_fresh_python(TELEMETRY_AT_IMPORT, model, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[True]", (done.stdout, done.stderr[-2000:])
