"""Shared fixtures: small models written once per session, and a FIFO put where a file was checked."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `examples` is importable in tests
sys.path.insert(0, str(ROOT / "tests"))  # helper kits (modelkit, ...)

# The Ctrl-C tests start commands as a user's terminal does, with SIGINT's default action. A suite started as a
# background job (bash ignores SIGINT for it) passed the ignored SIGINT on to every command, which graphsurgery
# keeps ignored by design (a script's background job): each Ctrl-C test then waited 60 s for a command that ran on,
# and failed. A Python handler is reset to the default action in the commands the tests start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from modelkit import pose_model  # noqa: E402

RECIPES = ROOT / "recipes"


@pytest.fixture(scope="session", autouse=True)
def onnxruntime_waits_without_spinning():
    """`make test` runs two workers on two CPUs: ONNX Runtime's idle threads spin-waiting after each run (its
    default, and graphsurgery's outside `bench`) took the other worker's CPU. How an idle thread waits changes no
    result; without spinning, ONNX Runtime-heavy test files took 15-20 % less time (BENCHMARKS.md). The CLI tests'
    subprocesses still run the default."""
    from graphsurgery import runners

    loading = runners._onnxruntime
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runners, "_onnxruntime", lambda model, threads, spin=True: loading(model, threads, False))
        yield


@pytest.fixture(scope="session")
def tiny_pose_models(tmp_path_factory) -> dict:
    """Tiny HRNet-shaped models keyed by (opset, dynamic_batch)."""
    folder = tmp_path_factory.mktemp("pose_models")
    return {(opset, dyn): pose_model(folder / f"pose_{opset}_{'dyn' if dyn else 'static'}.onnx", opset=opset,
                                     dynamic_batch=dyn)
            for opset in (9, 11, 13, 17, 18) for dyn in (False, True)}


@pytest.fixture(scope="module")
def plain(tiny_pose_models):
    """The tiny HRNet-shaped model at opset 17 with a dynamic batch (a test file may define its own `plain`)."""
    return tiny_pose_models[(17, True)]


@pytest.fixture(scope="module")
def patched(plain, tmp_path_factory):
    """`plain` patched with recipes/hrnet_coco_pose.yaml (a test file may define its own `patched`)."""
    from graphsurgery.api import apply

    return apply(RECIPES / "hrnet_coco_pose.yaml", plain, tmp_path_factory.mktemp("patched") / "p.onnx").output


@pytest.fixture(scope="module")
def ocr_cls(tmp_path_factory) -> tuple[Path, Path]:
    """(plain, right patch) of a two-class stand-in of RapidOCR's orientation classifier (dynamic batch) with
    recipes/rapidocr_cls.yaml: a top-1, where rounds 94 and 95 found patches wrong only at a batch of two."""
    from graphsurgery.api import apply

    from quirkykit import classifier

    folder = tmp_path_factory.mktemp("ocr-cls")
    plain = classifier(folder / "plain.onnx", opset=13, ir_version=7, hw=(48, 192), classes=2, seed=1)
    return plain, apply(RECIPES / "rapidocr_cls.yaml", plain, folder / "right.onnx").output


@pytest.fixture(scope="session")
def chain_patched(tmp_path_factory) -> dict[str, Path]:
    """`chainkit.chain_models`, made once per session: the chain tests of several files only read these models."""
    from chainkit import chain_models

    return chain_models(tmp_path_factory.mktemp("chain"))


@pytest.fixture
def fifo_after_the_checks(tmp_path, monkeypatch):
    """A FIFO at a path whose checks (is_file, stat) see the regular file that was there a moment before, as a
    file replaced between the checks and the open looks; a writer opens it after 10 s, so that a reader blocked in
    open() goes on (and the test ends)."""
    real_is_file, real_stat = Path.is_file, Path.stat
    made = []

    def make(name: str, like: Path) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        monkeypatch.setattr(Path, "is_file", lambda self: True if self == path else real_is_file(self))
        monkeypatch.setattr(Path, "stat", lambda self, **kw: like.stat() if self == path else real_stat(self, **kw))
        timer = threading.Timer(10.0, lambda: os.close(os.open(path, os.O_RDWR)))
        timer.start()
        made.append(timer)
        return path

    yield make
    for timer in made:
        timer.cancel()
