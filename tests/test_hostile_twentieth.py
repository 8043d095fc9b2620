"""Hostile round 20: the examples' entry points (examples/hrnet/export.py, demo.py, detect.py, zoo/export.py).

Checkpoints that are not files, zip bombs, tensors of the wrong kind or holding NaN, a state dict under "model";
outputs that are the checkpoint, a device, or a user's file in the demo's folder; argparse's usage block, `python
-OO`, Ctrl-C and SIGTERM. Tiny checkpoints are built here with torch.save; the slow paths are not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
import torch

from graphsurgery.errors import GraphsurgeryError

from conftest import ROOT
from examples.hrnet.export import export_hrnet
from examples.hrnet.model import build_hrnet, load_checkpoint
from examples.outfolder import MARKER, claim

PY = sys.executable


@pytest.fixture(scope="module")
def state() -> dict:
    return build_hrnet("tiny", seed=None).state_dict()


def _refused(path, contains: str) -> str:
    with pytest.raises(GraphsurgeryError) as exc:
        load_checkpoint(build_hrnet("tiny", seed=None), path)
    message = str(exc.value)
    assert "\n" not in message and contains in message, message
    return message


def _changed(state: dict, key: str, value) -> dict:
    return {**state, key: value}


@pytest.mark.parametrize("case, contains", [
    ("int", "type mismatches"), ("bool", "type mismatches"), ("complex", "type mismatches"),
    ("nan", "NaN or infinity: final_layer.bias"), ("inf", "NaN or infinity: conv1.weight"),
    ("negative_var", "variances below zero: bn1.running_var"),
    ("sparse", "not a dense tensor"), ("int_key", "not a parameter name"),
])
def test_checkpoints_of_the_wrong_kind_are_one_line(tmp_path, state, case, contains):
    """They were cast in silence (int, bool, complex), exported NaN that passed parity, or were a traceback."""
    bias = state["final_layer.bias"]
    hostile = {
        "int": lambda: {k: v.long() for k, v in state.items()},
        "bool": lambda: _changed(state, "conv1.weight", state["conv1.weight"] > 0),
        "complex": lambda: _changed(state, "final_layer.bias", bias.to(torch.complex64)),
        "nan": lambda: _changed(state, "final_layer.bias", torch.full_like(bias, float("nan"))),
        "inf": lambda: _changed(state, "conv1.weight", torch.full_like(state["conv1.weight"], float("inf"))),
        "negative_var": lambda: _changed(state, "bn1.running_var", -torch.ones_like(state["bn1.running_var"])),
        "sparse": lambda: _changed(state, "final_layer.bias", bias.to_sparse()),
        "int_key": lambda: {**state, 1: torch.zeros(1)},
    }[case]()
    torch.save(hostile, tmp_path / "c.pth")
    _refused(tmp_path / "c.pth", contains)


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev_zero"])
def test_checkpoints_that_are_not_files(tmp_path, kind):
    """A FIFO or /dev/zero was "checkpoint file not found"; opened, a FIFO would block."""
    path = {"fifo": tmp_path / "c.pth", "directory": tmp_path / "d.pth", "dev_zero": "/dev/zero"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "directory":
        path.mkdir()
    _refused(path, "directory" if kind == "directory" else "not a regular file")
    with pytest.raises(GraphsurgeryError, match="directory|not a regular file"):
        export_hrnet(tmp_path / "x.onnx", "tiny", checkpoint=path)
    assert not (tmp_path / "x.onnx").exists()


def test_zip_bomb_is_refused_before_torch_inflates_it(tmp_path, state):
    """A .pth is a zip: 12 MB of deflated zeros made torch allocate 12 GB."""
    path = tmp_path / "bomb.pth"
    torch.save(state, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo("bomb/data/999"), b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2 << 20
    _refused(path, "zip bomb")


@pytest.mark.parametrize("nest", ["model", "model+module"])
def test_state_dict_under_model_loads(tmp_path, state, nest):
    """Checkpoints that keep the weights under "model" were "not a state dict of tensors"."""
    inner = {f"module.{k}": v for k, v in state.items()} if "module" in nest else state
    torch.save({"model": inner, "epoch": 3}, tmp_path / "c.pth")
    load_checkpoint(build_hrnet("tiny", seed=None), tmp_path / "c.pth")


def test_export_never_replaces_its_checkpoint_nor_a_device(tmp_path, state):
    """`-o ck.pth --checkpoint ck.pth` replaced the checkpoint; `-o /dev/null` as root replaced the device node."""
    checkpoint = tmp_path / "ck.pth"
    torch.save(state, checkpoint)
    before = checkpoint.read_bytes()
    (tmp_path / "link.onnx").symlink_to(checkpoint)
    for out in (checkpoint, tmp_path / "link.onnx"):
        with pytest.raises(GraphsurgeryError, match="overwrite an input"):
            export_hrnet(out, "tiny", checkpoint=checkpoint, force=True)
    assert checkpoint.read_bytes() == before
    os.mkfifo(tmp_path / "fifo.onnx")
    with pytest.raises(GraphsurgeryError, match="not a regular file"):
        export_hrnet(tmp_path / "fifo.onnx", "tiny", force=True)
    (tmp_path / "mine.onnx").write_text("mine")
    with pytest.raises(GraphsurgeryError, match="the output exists"):
        export_hrnet(tmp_path / "mine.onnx", "tiny")
    assert (tmp_path / "mine.onnx").read_text() == "mine"


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_seed_out_of_range_is_one_line(tmp_path, seed):
    with pytest.raises(GraphsurgeryError, match="seed .* out of range"):
        export_hrnet(tmp_path / "x.onnx", "tiny", seed=seed)


def test_demo_folder_with_a_users_file_is_refused(tmp_path):
    """`make demo --out ~/models` replaced the user's own hrnet_w32.onnx."""
    (tmp_path / "hrnet_w32.onnx").write_text("mine")
    with pytest.raises(GraphsurgeryError, match="did not write"):
        claim(tmp_path, "make demo", ["hrnet_w32.onnx"])
    assert (tmp_path / "hrnet_w32.onnx").read_text() == "mine"
    fresh = claim(tmp_path / "new", "make demo", ["hrnet_w32.onnx"])
    (fresh / "hrnet_w32.onnx").write_text("the demo's")
    assert claim(fresh, "make demo", ["hrnet_w32.onnx"]) == fresh and (fresh / MARKER).is_file()
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", ""):
        with pytest.raises(GraphsurgeryError):
            claim(out, "make demo", [])


def test_the_repositorys_own_out_folder_stays_the_demos(tmp_path, monkeypatch):
    """A clone that ran `make demo` before the marker existed holds out/demo/hrnet_w32.onnx unmarked: the default
    folder is the examples' own, and the demo must not refuse it."""
    import examples.outfolder as outfolder

    monkeypatch.setattr(outfolder, "OWN", tmp_path / "out")
    earlier = tmp_path / "out" / "demo"
    earlier.mkdir(parents=True)
    (earlier / "hrnet_w32.onnx").write_text("an earlier run's")
    assert claim(earlier, "make demo", ["hrnet_w32.onnx"]) == earlier and (earlier / MARKER).is_file()


def _script(*args: str, optimize: bool = False, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *(["-OO"] if optimize else []), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize("script, args", [
    ("examples/hrnet/export.py", ["--variant", "W32", "-o", "x.onnx"]),
    ("examples/demo.py", ["--iterations", "many"]),
])
def test_bad_options_are_one_line_even_under_OO(script, args):
    """argparse printed its usage block and the error (several lines); under -OO the scripts died on __doc__."""
    proc = _script(script, *args, optimize=True)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: argument")


def test_sigterm_unwinds_and_ctrl_c_is_one_line(tmp_path):
    """SIGTERM killed the export scripts by the signal (-15), leaving their temporary model; Ctrl-C was a traceback."""
    body = ("import os, signal, sys, time; sys.path.insert(0, {root!r})\n"
            "from pathlib import Path\n"
            "from graphsurgery.safeio import scratch_folder\n"
            "from examples.entry import run\n"
            "def body():\n"
            "    with scratch_folder(Path({folder!r}), '.x.', Path({folder!r}) / 'x'):\n"
            "        os.kill(os.getpid(), signal.{name}); time.sleep(5)\n"
            "sys.exit(run(body))\n")
    for name, code, line in (("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")):
        proc = _script("-c", body.format(root=str(ROOT), folder=str(tmp_path), name=name))
        assert (proc.returncode, proc.stderr) == (code, f"{line}\n")
        assert os.listdir(tmp_path) == []


def test_openvino_converts_under_OO(tmp_path):
    """OpenVINO's converter reads its options from its docstring: under -OO every conversion failed, blamed on the
    model ("'NoneType' object has no attribute 'find'")."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    proc = _script("-m", "graphsurgery", "convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.xml"),
                   optimize=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.xml").exists() and (tmp_path / "m.bin").exists()
