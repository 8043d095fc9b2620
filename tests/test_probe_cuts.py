"""verify's probes share one cut of the patched graph and one runner per way of cutting it (`ProbeCuts`).

The decoder probe, its cell probes and those of every other caller size cut the same graph after the network; each
was cut, saved and opened on its own, 93 times in one verify of a letterbox recipe (half its time, and an OpenVINO
compile each where OpenVINO probed). Sharing must change no answer: each probe is checked against a runner of its
own, and the right patch still passes while probes reach every size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphsurgery import decoder_probe
from graphsurgery.api import apply
from graphsurgery.runners import open_runner
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model


@pytest.fixture(scope="module")
def letterbox_pose(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(recipe, plain model, right patch) of a pose model fed whole images through a letterbox: cell probes at
    every caller size."""
    folder = tmp_path_factory.mktemp("probe_cuts")
    plain, recipe = pose_model(folder / "plain.onnx", input_hw=(128, 160)), folder / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX)
    return recipe, plain, apply(recipe, plain, folder / "right.onnx").output


def test_the_probes_of_every_size_share_one_cut_and_one_runner(letterbox_pose, monkeypatch):
    recipe, plain, right = letterbox_pose
    cuts, opened, runs = [], [], []
    real_cut, real_open, real_run = decoder_probe.cut_between, decoder_probe.open_runner, decoder_probe.ProbeCuts.run
    monkeypatch.setattr(decoder_probe, "cut_between", lambda *args: cuts.append(args[-1]) or real_cut(*args))
    monkeypatch.setattr(decoder_probe, "open_runner", lambda backend, path: opened.append(path) or real_open(backend,
                                                                                                             path))
    monkeypatch.setattr(decoder_probe.ProbeCuts, "run", lambda self, path, feeds: runs.append(
        tuple(value.shape for _, value in sorted(feeds.items()))) or real_run(self, path, feeds))
    report = verify(recipe, plain, patched=right, backends=["onnxruntime"], random=4)
    assert report, report.failures()
    assert len(set(report.sizes)) == 4 and len(runs) > 4 * 2, runs  # a probe and cell probes at each caller size
    assert len(set(runs)) == 4  # fed as many image sizes
    assert len(cuts) == 1 and opened == cuts, (cuts, opened)


@pytest.mark.parametrize(("backend", "sizes"), [("openvino", 1), ("onnxruntime", 3)])
def test_a_shared_runner_answers_each_probe_as_a_runner_of_its_own(letterbox_pose, monkeypatch, backend, sizes):
    """On one size for OpenVINO: a runner of its own for each probe is a compile each (what sharing saves)."""
    recipe, plain, right = letterbox_pose
    real_run, compared = decoder_probe.ProbeCuts.run, []

    def run_and_check(self, path, feeds):
        shared = real_run(self, path, feeds)
        with open_runner(self.backend, path) as own:
            alone = own(feeds)
        assert shared.keys() == alone.keys()
        for name in shared:
            np.testing.assert_array_equal(shared[name], alone[name], err_msg=name)
        compared.append(path)
        return shared

    monkeypatch.setattr(decoder_probe.ProbeCuts, "run", run_and_check)
    report = verify(recipe, plain, patched=right, backends=[backend], random=sizes)
    assert report, report.failures()
    assert len(compared) > 3 * sizes and len(set(compared)) == 1
