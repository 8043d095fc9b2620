"""`graphsurgery bench` smoke tests on the tiny pose model: structure of the results, labels, chart; no timings."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from graphsurgery.benchmark import REFERENCE, BenchResult, Settings, precision_notes
from graphsurgery.cli import cli
from graphsurgery.ratios import interleaved, paired_ratio
from graphsurgery.targets import TARGETS

from conftest import RECIPES

ROWS = {"torch-eager", "onnxruntime-plain", "onnxruntime-patched", "openvino-plain", "openvino-patched-f32",
        "openvino-patched-bf16"}


def tiny_torch():
    """The torch twin of modelkit's pose model (a stride-4 conv), for --torch test_bench:tiny_torch."""
    import torch

    return torch.nn.Conv2d(3, 17, 4, stride=4)


@pytest.fixture(scope="module")
def latency(tiny_pose_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    json_path, chart = folder / "bench.json", folder / "bench.png"
    result = CliRunner().invoke(cli, ["bench", str(RECIPES / "hrnet_coco_pose_image.yaml"),
                                      str(tiny_pose_models[(17, False)]), "--iterations", "2", "--warmup", "1",
                                      "--threads", "1", "--torch", "test_bench:tiny_torch",
                                      "--json", str(json_path), "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(json_path.read_text()), chart


def test_every_pipeline_is_timed_and_labelled(latency):
    output, data, _ = latency
    rows = {row["key"]: row for row in data["pipelines"]}
    assert set(rows) == ROWS and len(data["pipelines"]) == len(ROWS)
    assert len({row["label"] for row in rows.values()}) == len(ROWS)
    for row in rows.values():
        assert row["label"] in output
        for kind in ("model_ms", "end_to_end_ms"):
            assert 0 < row[kind]["min"] <= row[kind]["median"] <= row[kind]["p90"]
            assert len(row[kind]["samples"]) == 2
        per_round = [t / m for t, m in zip(row["end_to_end_ms"]["samples"], row["model_ms"]["samples"])]
        assert row["end_to_end_over_model"] == pytest.approx(sum(per_round) / 2, rel=1e-3)
    assert rows[REFERENCE]["vs_reference"] == {"model_ms": 1.0, "end_to_end_ms": 1.0}
    for key in ("onnxruntime-patched", "openvino-patched-f32"):  # nothing runs outside a patched model
        assert rows[key]["model_ms"] == rows[key]["end_to_end_ms"]
    for key in ("torch-eager", "onnxruntime-plain", "openvino-plain"):  # the numpy twins run outside the model
        assert rows[key]["processing"] == "numpy" and rows[key]["end_to_end_over_model"] > 1


def test_reduced_precision_is_labelled_with_what_really_ran(latency):
    output, data, _ = latency
    bf16 = next(row for row in data["pipelines"] if row["key"] == "openvino-patched-bf16")
    assert "reduced precision" in bf16["label"] and bf16["precision_requested"] == "bf16"
    assert bf16["precision"] in ("bf16", "f32")  # f32 where the CPU has no bf16: then the table says so
    assert bf16["reduced_precision"] == (bf16["precision"] != "f32")
    if bf16["precision"] == "f32":
        assert "this CPU lacks bf16, OpenVINO ran f32" in " ".join(output.split())
        assert data["notes"] == []
    else:  # bf16 really ran: its time against f32, measured in this run, and the CPU caveat
        ratio = paired_ratio(bf16["model_ms"]["samples"], next(
            row for row in data["pipelines"] if row["key"] == "openvino-patched-f32")["model_ms"]["samples"])
        assert data["notes"][0].startswith(f"OpenVINO bf16 took {ratio:.2f}× the time of f32 here")
        assert "not faster on every CPU" in data["notes"][1] and "not faster on every CPU" in output
    assert all(row["precision"] == "f32" for row in data["pipelines"] if row is not bf16)


def test_precision_notes_say_slower_or_faster():
    def row(key, precision, samples):
        return {"key": key, "precision": precision, "model_ms": {"samples": samples}}

    f32 = row("openvino-patched-f32", "f32", [10.0, 10.0, 10.0])
    assert precision_notes([f32, row("openvino-patched-bf16", "bf16", [14.0, 15.0, 13.0])])[0] == (
        "OpenVINO bf16 took 1.40× the time of f32 here (slower)")
    assert "(faster)" in precision_notes([f32, row("openvino-patched-bf16", "bf16", [5.0, 6.0, 5.5])])[0]
    assert precision_notes([f32, row("openvino-patched-bf16", "f32", [10.0, 10.0, 10.0])]) == []  # no bf16 here


def test_settings_machine_and_targets(latency):
    output, data, _ = latency
    assert data["mode"] == "latency"
    assert data["settings"]["iterations"] == 2 and data["settings"]["threads"] == 1
    assert data["settings"]["input"] == {"name": "input", "dtype": "uint8", "shape": [1, 256, 192, 3]}
    assert data["machine"]["cpu"] and data["machine"]["versions"]["onnxruntime"]
    assert len(data["load_average"]["before"]) == 3
    assert [t["name"] for t in data["targets"]] == [t.name for t in TARGETS]
    for target in data["targets"]:
        assert isinstance(target["ratio"], float) and target["met"] == (
            target["ratio"] <= target["limit"] if target["at_most"] else target["ratio"] >= target["limit"])
        assert target["name"] in output
        assert target["ci95"][0] <= target["ratio"] <= target["ci95"][1]


def test_chart_is_a_png(latency):
    _, _, chart = latency
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
        image.load()  # decodes every pixel


def test_bench_result_to_dict_is_its_attributes(latency, tiny_pose_models):
    """`graphsurgery.bench` returns a BenchResult: `to_dict()` is JSON made of its attributes, and leaves out the
    latency-only `targets` and `notes` (and `int8`, `bf16`) when they are None; `bench --json` wrote the same dict."""
    import graphsurgery

    _, data, _ = latency
    assert BenchResult(**data).to_dict() == data
    result = graphsurgery.bench(RECIPES / "hrnet_coco_pose.yaml", tiny_pose_models[(17, False)],
                                Settings(iterations=1, warmup=0, threads=1, throughput=True))
    assert (result.mode, result.targets, result.notes, result.int8) == ("throughput", None, None, None)
    fields = ("mode", "recipe", "model", "settings", "machine", "load_average", "pipelines") + (
        ("bf16",) if result.bf16 is not None else ())  # bf16's agreement, where the CPU ran bf16
    assert json.loads(json.dumps(result.to_dict())) == {name: getattr(result, name) for name in fields}


def test_throughput_mode(tiny_pose_models, tmp_path):
    json_path, chart = tmp_path / "t.json", tmp_path / "t.png"
    result = CliRunner().invoke(cli, ["bench", str(RECIPES / "hrnet_coco_pose.yaml"), str(tiny_pose_models[(17, True)]),
                                      "--throughput", "--batch", "2", "--iterations", "1", "--warmup", "0",
                                      "--json", str(json_path), "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    data = json.loads(json_path.read_text())
    assert data["mode"] == "throughput" and "targets" not in data
    assert {row["key"] for row in data["pipelines"]} == ROWS - {"torch-eager"}
    assert data["settings"]["input"]["shape"][0] == 2
    for row in data["pipelines"]:
        assert row["frames_per_second"]["median"] >= row["frames_per_second"]["p10"] > 0
    with Image.open(chart) as image:
        image.load()


@pytest.mark.parametrize("args, message", [
    (["--batch", "2"], "batch is fixed at 1"),
    (["--torch", "no_colon_here"], "is not MODULE:FUNCTION"),
    (["--torch", "no_such_module_xyz:build"], "cannot import"),
    (["--torch", "test_bench:ROWS"], "has no function"),
])
def test_errors_are_one_line_and_write_nothing(tiny_pose_models, tmp_path, args, message):
    json_path = tmp_path / "out.json"
    result = CliRunner().invoke(cli, ["bench", str(RECIPES / "hrnet_coco_pose.yaml"),
                                      str(tiny_pose_models[(17, False)]), "--iterations", "1",
                                      "--json", str(json_path), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not json_path.exists()


def test_decode_cost_script_times_one_runtime_and_a_saved_model(tmp_path, capsys):
    """benchmarks/decode_cost.py: --runtimes limits the rounds to one runtime, --compare times a saved model too."""
    import importlib.util

    import onnx

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("decode_cost", ROOT / "benchmarks" / "decode_cost.py")
    decode_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decode_cost)
    saved = tmp_path / "exact.onnx"
    onnx.save(decode_cost.models()["exact"], str(saved))
    assert decode_cost.main(["--rounds", "3", "--runtimes", "onnxruntime", "--compare", str(saved)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["onnxruntime", "exact"], ["onnxruntime", "argmax"],
                                                    ["onnxruntime", "compare"]]
    with pytest.raises(SystemExit):
        decode_cost.main(["--runtimes", "tensorrt"])


def test_int8_is_timed_beside_f32_with_its_price(tiny_pose_models, tmp_path):
    """--int8 N: the patched model quantized on N random caller crops is one more OpenVINO pipeline, labelled int8;
    its speed against f32 is a note and its agreement with f32 is reported."""
    json_path = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", str(RECIPES / "hrnet_coco_pose.yaml"),
                                      str(tiny_pose_models[(17, False)]), "--iterations", "2", "--warmup", "1",
                                      "--threads", "1", "--int8", "4", "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    rows = {row["key"]: row for row in report["pipelines"]}
    assert rows["openvino-patched-int8"]["precision"] == "int8" and rows["openvino-patched-int8"]["reduced_precision"]
    assert any(note.startswith("OpenVINO int8 took") for note in report["notes"])
    assert report["int8"]["calibration"] == "4 random crops (seed 0)"
    assert set(report["int8"]["vs_f32"]["keypoints"]) == {"mean_distance", "within_one_cell", "cell_pixels"}
    assert "keypoints vs f32: mean distance" in result.output


def test_bf16_that_ran_is_reported_with_its_agreement_with_f32(tiny_pose_models, tmp_path):
    """Where OpenVINO really runs bf16 (AMX, avx512_bf16), bench reports its agreement with f32 on BF16_SAMPLES
    random caller crops, checked here against the two precisions run by hand; where it ran f32, nothing is claimed."""
    import numpy as np
    import openvino as ov

    from graphsurgery.api import apply
    from graphsurgery.benchmark import BF16_SAMPLES

    plain, json_path = tiny_pose_models[(17, False)], tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", str(RECIPES / "hrnet_coco_pose.yaml"), str(plain), "--iterations", "2",
                                      "--warmup", "1", "--threads", "1", "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    ran = {row["key"]: row["precision"] for row in report["pipelines"]}["openvino-patched-bf16"]
    if ran != "bf16":
        assert "bf16" not in report and "bf16: measured on" not in result.output
        return
    patched = apply(RECIPES / "hrnet_coco_pose.yaml", plain, tmp_path / "patched.onnx").output
    fed = report["settings"]["input"]
    assert fed["dtype"] == "uint8"
    rng = np.random.default_rng(0)
    feeds = [{fed["name"]: rng.integers(0, 256, fed["shape"], dtype=np.uint8)} for _ in range(BF16_SAMPLES)]
    core = ov.Core()
    f32, bf16 = (core.compile_model(str(patched), "CPU", {"INFERENCE_PRECISION_HINT": hint})
                 for hint in ("f32", "bf16"))
    a = np.concatenate([f32(feed)["keypoints"] for feed in feeds])
    b = np.concatenate([bf16(feed)["keypoints"] for feed in feeds])
    distance = np.sqrt(((a.astype(np.float64) - b) ** 2).sum(axis=-1))
    shape = "×".join(str(side) for side in fed["shape"])
    assert report["bf16"]["samples"] == f"{BF16_SAMPLES} random inputs of {shape} (seed 0)"
    assert report["bf16"]["vs_f32"]["keypoints"]["within_one_cell"] == pytest.approx(np.mean(distance <= 4.0))
    assert report["bf16"]["vs_f32"]["keypoints"]["mean_distance"] == pytest.approx(distance.mean())
    assert "bf16: measured on" in result.output


def test_interleaved_times_every_call_each_round_after_the_warm_up():
    seen = []
    calls = {name: (lambda name=name: seen.append(name)) for name in "abc"}
    samples = interleaved(calls, rounds=4, warmup=2)
    assert {name: len(ms) for name, ms in samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert sorted(seen) == sorted("abc" * 6)  # warm-up rounds run too, untimed
    assert len({tuple(seen[i:i + 3]) for i in range(0, 18, 3)}) > 1  # the order changes from round to round
    assert all(ms >= 0 for values in samples.values() for ms in values)
