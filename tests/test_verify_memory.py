"""verify holds every pipeline's outputs for all samples and compares them in float64; the samples' own cap counts
their inputs only. A model of 21 × 512 × 512 outputs took 24 GB at `--random 85` (which that cap allows) until the
system killed it, 77 s in. The first batch's outputs now say, before the rest run, whether all of them fit in half
of the machine's memory; a count that does not is refused with the count that does."""

from __future__ import annotations

import onnx
import pytest
from click.testing import CliRunner

from graphsurgery import machine, verification
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.verification import HELD_PER_PIPELINE, verify

from conftest import RECIPES

CROP = RECIPES / "hrnet_coco_pose.yaml"
#: the tiny pose model's heatmaps: 17 × 64 × 48 float32 a sample
OUTPUT_BYTES = 17 * 64 * 48 * 4
#: a machine whose half holds the outputs of 3 samples through verify's 4 pipelines, not 4
MACHINE = int(2 * 3.5 * OUTPUT_BYTES * HELD_PER_PIPELINE * 4)


@pytest.fixture
def small_machine(monkeypatch):
    monkeypatch.setattr(verification, "usable_memory", lambda: MACHINE)


def test_more_samples_than_the_machine_holds_are_refused_with_the_count_that_fits(tiny_pose_models, small_machine):
    plain = tiny_pose_models[(17, True)]
    with pytest.raises(GraphsurgeryError) as refused:
        verify(CROP, plain, random=8)
    assert refused.value.path == str(plain)
    assert "8 crops" in refused.value.message and "held by 4 pipelines" in refused.value.message
    assert "--random 3" in refused.value.fix
    assert verify(CROP, plain, random=3), "the count the refusal offers must pass"


def test_one_backend_holds_half_as_much(tiny_pose_models, small_machine):
    """Two pipelines, not four: 6 samples fit where 4 pipelines held 3."""
    plain = tiny_pose_models[(17, True)]
    assert verify(CROP, plain, random=6, backends=["onnxruntime"])
    with pytest.raises(GraphsurgeryError, match="--random 6"):
        verify(CROP, plain, random=8, backends=["onnxruntime"])


def test_the_cli_refuses_in_one_line(tiny_pose_models, small_machine):
    plain = tiny_pose_models[(17, False)]
    result = CliRunner().invoke(cli, ["verify", str(CROP), str(plain), "--random", "8"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {plain}: 8 crops") and "fix: give at most 3 samples" in lines[0], lines


def test_a_machine_of_unknown_memory_is_not_refused(tiny_pose_models, monkeypatch):
    monkeypatch.setattr(verification, "usable_memory", lambda: 0)
    assert verify(CROP, tiny_pose_models[(17, True)], random=8)


@pytest.mark.parametrize("limit, expected", [("max\n", None), ("9223372036854771712\n", None),
                                             ("1073741824\n", 2**30)])
def test_a_containers_memory_limit_is_the_machines_memory(tmp_path, monkeypatch, limit, expected):
    """In a container of 1 GiB on a machine of 24 GiB, 12 GiB of outputs were allowed (cgroup v2 here; "max" and
    v1's near-2^63 mean no limit)."""
    (tmp_path / "memory.max").write_text(limit)
    monkeypatch.setattr(machine, "CGROUP_MEMORY_LIMITS", (tmp_path / "memory.max", tmp_path / "absent"))
    assert machine.usable_memory() == (expected or machine.physical_memory()) > 0


def static_batch(tiny_pose_models, folder, batch: int):
    model = onnx.load(tiny_pose_models[(17, True)])
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, folder / f"batch{batch}.onnx")
    return folder / f"batch{batch}.onnx"


def test_samples_in_one_batch_are_weighed_before_the_other_pipelines(tiny_pose_models, small_machine, tmp_path):
    """A model of static batch 8 takes the 8 samples in one call: the first pipeline holds a quarter of what all
    four and the comparisons will. Not even one batch fits: the fix is the model's batch."""
    with pytest.raises(GraphsurgeryError, match="8 crops.*held by 4 pipelines") as refused:
        verify(CROP, static_batch(tiny_pose_models, tmp_path, 8), random=8)
    assert refused.value.fix.startswith("export the model with a dynamic batch, or one under its 8"), refused.value


def test_the_count_offered_is_whole_batches(tiny_pose_models, small_machine, tmp_path):
    """Two pipelines hold 7 samples here; a static batch of 2 takes 6 (7 would be refused: batches must be whole)."""
    plain = static_batch(tiny_pose_models, tmp_path, 2)
    with pytest.raises(GraphsurgeryError, match="--random 6"):
        verify(CROP, plain, random=8, backends=["onnxruntime"])
    assert verify(CROP, plain, random=6, backends=["onnxruntime"])


def test_the_memory_benchmark_runs(capsys):
    """benchmarks/verify_memory.py (BENCHMARKS.md's numbers) on one sample: verify passes in its fresh process."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("verify_memory", ROOT / "benchmarks" / "verify_memory.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main(["--samples", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[:2] == ["1", "0"], row  # one sample, verify exited 0 (PASS)
