"""The HRNet example: official checkpoint layout, safe loader, plain ONNX export, realistic seeded weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from graphsurgery.errors import GraphsurgeryError

from examples.hrnet.export import export_hrnet
from examples.hrnet.model import build_hrnet, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def noise_image(batch: int = 1, seed: int = 1) -> torch.Tensor:
    pixels = torch.rand(batch, 3, 256, 192, generator=torch.Generator().manual_seed(seed))
    return (pixels - MEAN) / STD


def photo() -> torch.Tensor:
    """astronaut.jpg, centre-cropped to 3:4 and resized to 192x256, ImageNet-normalised."""
    image = Image.open(ROOT / "examples/images/astronaut.jpg").convert("RGB")
    w, h = image.size
    cw, ch = min(w, h * 3 // 4), min(h, w * 4 // 3)
    left, top = (w - cw) // 2, (h - ch) // 2
    image = image.crop((left, top, left + cw, top + ch)).resize((192, 256))
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    return (pixels - MEAN) / STD


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return build_hrnet("tiny", seed=0)


# --- W32 layout: expectations read off the authors' lib/models/pose_hrnet.py + w32_256x192 YAML -------------------


def test_w32_state_dict_matches_official_layout():
    state = build_hrnet("w32", seed=None).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    # 878 parameters + 292 BatchNorms x 3 buffers (running_mean, running_var, num_batches_tracked)
    assert len(shapes) == 1754
    assert sum(k.endswith("num_batches_tracked") for k in shapes) == 292
    assert sum(p.numel() for p in build_hrnet("w32", seed=None).parameters()) == 28_536_113
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "bn2.running_var": (64,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.3.conv3.weight": (256, 64, 1, 1),
        "transition1.0.0.weight": (32, 256, 3, 3),  # branch 0 changes width 256 -> 32
        "transition1.1.0.0.weight": (64, 256, 3, 3),  # new 1/8 branch: one stride-2 conv
        "transition2.2.0.0.weight": (128, 64, 3, 3),
        "transition3.3.0.1.running_mean": (256,),
        "stage2.0.branches.1.3.conv2.weight": (64, 64, 3, 3),
        "stage2.0.fuse_layers.0.1.0.weight": (32, 64, 1, 1),  # 1/8 -> 1/4: 1x1 conv, then upsample
        "stage3.3.fuse_layers.2.0.1.0.weight": (128, 32, 3, 3),  # 1/4 -> 1/16: second stride-2 conv
        "stage4.1.fuse_layers.3.0.0.0.weight": (32, 32, 3, 3),  # 1/4 -> 1/32: first of three
        "stage4.1.fuse_layers.3.0.2.0.weight": (256, 32, 3, 3),
        "stage4.2.fuse_layers.0.3.0.weight": (32, 256, 1, 1),
        "stage4.2.branches.3.3.bn2.bias": (256,),
        "final_layer.weight": (17, 32, 1, 1),
        "final_layer.bias": (17,),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    # Identity paths (None in the authors' code) own no keys; stage 4's last module only outputs the 1/4 branch.
    assert not any(k.startswith(("transition2.0.", "transition2.1.", "stage4.2.fuse_layers.1.")) for k in shapes)
    top_level = "conv1 bn1 conv2 bn2 layer1 transition1 stage2 transition2 stage3 transition3 stage4 final_layer"
    assert {k.split(".")[0] for k in shapes} == set(top_level.split())
    assert {int(k.split(".")[1]) for k in shapes if k.startswith("stage")} == {0, 1, 2, 3}  # at most 4 modules


# --- checkpoint loader ---------------------------------------------------------------------------------------------


def _one_line_error(path: Path, contains: str, exc: pytest.ExceptionInfo) -> None:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and contains in message, message


@pytest.mark.parametrize("layout", ["bare", "wrapped_dataparallel", "legacy_pytorch_1_0"])
def test_loader_accepts_official_layouts(tiny, tmp_path, layout):
    state = tiny.state_dict()
    if layout == "wrapped_dataparallel":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 210}
    if layout == "legacy_pytorch_1_0":  # the 2019 release: pre-zip serialization, maybe no num_batches_tracked
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        torch.save(state, tmp_path / "ckpt.pth", _use_new_zipfile_serialization=False)
    else:
        torch.save(state, tmp_path / "ckpt.pth")
    fresh = build_hrnet("tiny", seed=None)
    load_checkpoint(fresh, tmp_path / "ckpt.pth")
    for key, value in tiny.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(fresh.state_dict()[key], value), key


class _Hostile:
    """Unpickling this calls a function: weights_only=True must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    ("case", "contains"),
    [
        ("missing", "2 missing keys: final_layer.weight, final_layer.bias"),
        ("unexpected", "1 unexpected keys: head.weight"),
        ("shape", "1 shape mismatches (checkpoint vs model): final_layer.weight (16, 8, 1, 1) vs (17, 8, 1, 1)"),
        ("w32", "unexpected keys"),
        ("random_bytes", "not a PyTorch checkpoint"),
        ("hostile_pickle", "getcwd"),  # refused by name, never called
        ("not_tensors", "not a state dict of tensors"),
    ],
)
def test_loader_rejects_wrong_checkpoints(tiny, tmp_path, case, contains):
    path = tmp_path / f"{case}.pth"
    state = dict(tiny.state_dict())
    if case == "missing":
        del state["final_layer.weight"], state["final_layer.bias"]
    elif case == "unexpected":
        state["head.weight"] = torch.zeros(1)
    elif case == "shape":
        state["final_layer.weight"] = torch.zeros(16, 8, 1, 1)
    elif case == "w32":
        state = build_hrnet("w32", seed=None).state_dict()
    elif case == "not_tensors":
        state = {"state_dict": {"conv1.weight": [1.0, 2.0]}}
    if case == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        torch.save({"payload": _Hostile()} if case == "hostile_pickle" else state, path)
    with pytest.raises(GraphsurgeryError) as exc:
        load_checkpoint(build_hrnet("tiny", seed=None), path)
    _one_line_error(path, contains, exc)


# --- export ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_export_matches_torch(tiny, tmp_path, opset, dynamic_batch):
    path = export_hrnet(tmp_path / "hrnet.onnx", variant="tiny", opset=opset, dynamic_batch=dynamic_batch)
    assert os.listdir(tmp_path) == ["hrnet.onnx"]  # no temporary file left behind

    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    batch = "N" if dynamic_batch else 1
    io = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
          for v in [*model.graph.input, *model.graph.output]}
    assert io == {"input": [batch, 3, 256, 192], "heatmaps": [batch, 17, 64, 48]}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # Plain network: no pre/post-processing ops (BatchNorm is folded into the convs by the exporter).
    assert {n.op_type for n in model.graph.node} <= {"Conv", "Relu", "Add", "Upsample", "Resize", "Constant"}

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = noise_image(3 if dynamic_batch else 1)
    (heatmaps,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = tiny(x).numpy()
    assert heatmaps.shape == expected.shape
    np.testing.assert_allclose(heatmaps, expected, rtol=1e-4, atol=1e-5)


def test_export_uses_the_checkpoint(tmp_path):
    trained = build_hrnet("tiny", seed=7)
    torch.save(trained.state_dict(), tmp_path / "ckpt.pth")
    path = export_hrnet(tmp_path / "hrnet.onnx", "tiny", checkpoint=tmp_path / "ckpt.pth", seed=0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = noise_image()
    with torch.no_grad():
        expected = trained(x).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, rtol=1e-4, atol=1e-5)


def test_export_missing_checkpoint_is_a_clean_error(tmp_path):
    with pytest.raises(GraphsurgeryError) as exc:
        export_hrnet(tmp_path / "x.onnx", "tiny", checkpoint=tmp_path / "missing.pth")
    _one_line_error(tmp_path / "missing.pth", "not found", exc)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("opset, folder, contains", [(8, ".", "opset 8 is not supported"),
                                                     (17, "missing", "output directory does not exist")])
def test_export_refuses_before_building(tmp_path, opset, folder, contains):
    out = tmp_path / folder / "x.onnx"
    with pytest.raises(GraphsurgeryError) as exc:
        export_hrnet(out, "tiny", opset=opset)
    assert "\n" not in str(exc.value) and contains in str(exc.value), exc.value
    assert os.listdir(tmp_path) == []


# --- seeded weights --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["noise", "photo"])
def test_seeded_heatmaps_have_realistic_magnitudes(tiny, image):
    with torch.no_grad():
        heatmaps = tiny(noise_image() if image == "noise" else photo())[0].flatten(1)  # (17, 64*48)
    peaks = heatmaps.max(dim=1).values
    assert (peaks > 0.05).sum() >= 15  # a trained model peaks at ~0.5-1 where it sees a joint
    assert 0.2 < peaks.median() < 2.0
    assert heatmaps.abs().max() < 5.0
    assert 0.05 < heatmaps.std() < 1.0
    assert ((heatmaps == peaks[:, None]).sum(dim=1) == 1).all()  # argmax is unambiguous for every joint


def test_seeded_weights_are_deterministic(tiny):
    again = build_hrnet("tiny", seed=0).state_dict()
    assert all(torch.equal(again[k], v) for k, v in tiny.state_dict().items())
    assert not torch.equal(build_hrnet("tiny", seed=1).final_layer.weight, tiny.final_layer.weight)
    # Non-trivial BN statistics: the exporter's conv+BN folding is really exercised.
    norms = [m for m in tiny.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert np.mean([m.running_mean.abs().mean().item() for m in norms]) > 0.1
    assert np.mean([(m.running_var.log().abs() > 0.5).float().mean().item() for m in norms]) > 0.3


# --- the script ------------------------------------------------------------------------------------------------------


def _run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples/hrnet/export.py"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )


def test_script_exports_tiny(tmp_path):
    result = _run_script("--variant", "tiny", "--opset", "9", "--dynamic-batch", "-o", str(tmp_path / "t.onnx"))
    assert result.returncode == 0, result.stderr
    assert "weights: seeded (seed 0)" in result.stdout
    assert result.stderr == ""
    assert [d.dim_param for d in onnx.load(tmp_path / "t.onnx").graph.input[0].type.tensor_type.shape.dim][0] == "N"


def test_script_missing_checkpoint_exits_2(tmp_path):
    missing = tmp_path / "nope.pth"
    result = _run_script("--variant", "tiny", "--checkpoint", str(missing), "-o", str(tmp_path / "t.onnx"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "nope.pth" in result.stderr and "not found" in result.stderr
    assert not (tmp_path / "t.onnx").exists()
