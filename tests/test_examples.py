"""The examples run in the test suite (small variant): the demo and the detector example end to end, and the export
scripts."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_demo_runs_end_to_end_on_the_tiny_variant(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--variant", "tiny", "--out",
                           str(tmp_path), "--iterations", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parity: all rows pass" in proc.stdout
    assert proc.stdout.count("PASS") == 6 and "FAIL" not in proc.stdout  # 6: the input steps on both backends
    assert "SEEDED weights" in proc.stdout
    for stem in ("astronaut", "cameraman"):
        assert (tmp_path / "run" / f"{stem}_pose.jpg").stat().st_size > 1000
        assert (tmp_path / "run" / f"{stem}_heatmaps.jpg").exists()
    assert (tmp_path / "hrnet_tiny.patched.xml").exists() and (tmp_path / "hrnet_tiny.patched.bin").exists()


def test_detector_example_runs_end_to_end_on_the_tiny_variant(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "detect.py"), "--variant", "tiny", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parity: all rows pass" in proc.stdout
    assert proc.stdout.count("PASS") == 6 and "FAIL" not in proc.stdout  # 6: the input steps on both backends
    for stem in ("astronaut", "cameraman"):
        assert (tmp_path / f"{stem}_boxes.jpg").stat().st_size > 1000
        assert f"{stem}_boxes.jpg: 0 detections" not in proc.stdout
    assert (tmp_path / "yolov8-tiny.patched.xml").exists() and (tmp_path / "yolov8-tiny.patched.bin").exists()


def test_zoo_export_script_runs(tmp_path):
    out = tmp_path / "resnet.onnx"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "zoo" / "export.py"), "resnet-tiny", "--opset", "11",
                           "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import onnx

    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    assert model.opset_import[0].version == 11


def test_synthetic_coco_script_writes_a_set_and_a_model(tmp_path):
    script = ROOT / "examples" / "synthetic_coco.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "--images", "2"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    annotations = json.loads((tmp_path / "images" / "person_keypoints.json").read_text())
    assert len(annotations["images"]) == 2 and (tmp_path / "joint_detector.onnx").stat().st_size > 0
