"""Round 33 of the hardening issue (17), from rounds 31 and 32's reports: the long runs that were still silent
(`convert --int8`, `chain --check`), and NNCF's own passes timed as the steps they are (its fast bias correction
on HRNet-W32 with 300 samples outlasted the time limit in one piece, and a sound model was stopped as too slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphsurgery import longrun
from graphsurgery.api import apply
from graphsurgery.cli import cli

from conftest import RECIPES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def every_run_long(monkeypatch):
    """These small models are fast: any run is "long", and timed from its second part on."""
    monkeypatch.setattr(longrun, "LONG_RUN_SECONDS", 0.0)
    monkeypatch.setattr(longrun, "SAMPLE_SECONDS", 0.0)


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note:")]


def test_int8_calibration_says_how_long_it_will_take(tiny_pose_models, tmp_path, every_run_long):
    """HRNet-W32 on 300 calibration images: ~12 min on 2 cores with NNCF's progress bars alone."""
    patched = apply(RECIPES / "hrnet_coco_pose.yaml", tiny_pose_models[(17, False)], tmp_path / "p.onnx").output
    result = CliRunner().invoke(cli, ["convert", str(patched), "--int8", "--calibration-random", "6",
                                      "-o", str(tmp_path / "q.xml")])
    assert result.exit_code == 0, result.output
    (note,) = notes(result.stderr)  # once, not once per sample
    assert note.startswith("note: int8 calibration on 6 samples: about") and "--calibration-random" in note, note


def test_chain_check_says_how_long_it_will_take(tmp_path, every_run_long, capsys):
    """A detector of tied scores found 839 people, and the check ran for two minutes without a word."""
    from graphsurgery.chaining import chain, verify_chain
    from graphsurgery.images import read_image

    from modelkit import pose_model, zoo_model

    detector = apply(RECIPES / "yolov8_detector.yaml", zoo_model(tmp_path / "d.onnx", "yolov8-tiny", opset=17),
                     tmp_path / "d.patched.onnx").output
    pose = apply(RECIPES / "hrnet_coco_topdown.yaml", pose_model(tmp_path / "pose.onnx", opset=17),
                 tmp_path / "pose.patched.onnx").output
    chained = chain(detector, pose, tmp_path / "chained.onnx").written[-1]
    images = [read_image(ROOT / "examples" / "images" / name)[None] for name in ("astronaut.jpg", "cameraman.jpg")]
    capsys.readouterr()
    verify_chain(chained, detector, pose, images)
    (note,) = notes(capsys.readouterr().err)
    assert note.startswith("note: 2 images × 2 backends to check: about") and "fewer --check images" in note, note


def test_each_item_of_nncfs_progress_bars_and_pattern_matches_is_a_step_of_its_own(monkeypatch):
    """NNCF's passes that run no sample (fast bias correction: a subgraph per layer; the quantizer set-up: networkx
    matching its patterns) restart the time limit at each item, as the samples do; both are as they were after."""
    import networkx as nx
    from networkx.algorithms.isomorphism import MultiDiGraphMatcher
    from nncf.common.logging.track_progress import track

    import graphsurgery.quantize as quantize

    graph, pattern = nx.MultiDiGraph([(0, 1), (1, 2), (2, 3)]), nx.MultiDiGraph([(0, 1)])

    def matches() -> int:
        return sum(1 for _ in MultiDiGraphMatcher(graph, pattern).subgraph_isomorphisms_iter())

    steps = []
    monkeypatch.setattr(quantize, "again", lambda: steps.append(1))
    with quantize._nncf_steps():
        assert list(track(range(5), description="layers")) == list(range(5)) and len(steps) == 5
        assert matches() == 3 and len(steps) == 8
    assert list(track(range(3), description="after")) == list(range(3)) and matches() == 3 and len(steps) == 8


def test_int8_of_outputs_near_the_float32_limit_prints_no_numpy_warnings(tmp_path):
    """Heatmaps of ~1e38 overflow in NNCF's statistics and in the price (inf − inf): two RuntimeWarnings with
    their source lines on stderr, which said nothing the price does not (round 31)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from modelkit import pose_model

    model = onnx.load(str(pose_model(tmp_path / "huge.onnx")))
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(3e37), weight.name))
    onnx.save(model, str(tmp_path / "huge.onnx"))
    patched = apply(RECIPES / "hrnet_coco_pose.yaml", tmp_path / "huge.onnx", tmp_path / "p.onnx").output
    result = subprocess.run([sys.executable, "-m", "graphsurgery", "convert", str(patched), "--int8",
                             "--calibration-random", "4", "-o", str(tmp_path / "q.xml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "int8 vs f32 on those samples" in result.stdout, result.stderr
