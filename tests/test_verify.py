"""`verify`: the patched model against the unpatched pipeline (plain model + numpy twins), per output and backend.

It must pass on the HRNet recipes (tiny HRNet-shaped models and the tiny HRNet, opsets 9 and 17, ONNX Runtime and
OpenVINO), and fail loudly on a wrong patch, naming the output and the size of the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphsurgery import verify
from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.tolerances import MODEL_FLOAT_FLOOR

from examples.synthetic_coco import write_coco_set
from paritykit import CROP_RECIPE, IMAGE_RECIPE, shift_keypoints, wrong_recipe

BOTH = ("onnxruntime", "openvino")


@pytest.fixture(scope="session")
def hrnet_tiny(tmp_path_factory) -> dict[int, object]:
    """The tiny HRNet variant (seeded weights), plain, at opsets 9 and 17."""
    from modelkit import hrnet_model

    folder = tmp_path_factory.mktemp("hrnet_tiny")
    return {opset: hrnet_model(folder / f"hrnet_tiny_{opset}.onnx", opset=opset) for opset in (9, 17)}


@pytest.fixture(scope="session")
def wrong_patches(tmp_path_factory, tiny_pose_models) -> dict[str, object]:
    """The opset-17 pose model patched wrongly: colour order not swapped, std omitted, keypoints one cell off."""
    folder = tmp_path_factory.mktemp("wrong_patches")
    plain = tiny_pose_models[(17, False)]
    patches = {mistake: apply(wrong_recipe(mistake, folder), plain, folder / f"{mistake}.onnx").output
               for mistake in ("colour", "no_std")}
    right = apply(CROP_RECIPE, plain, folder / "right.onnx").output
    patches["off_by_one"] = shift_keypoints(right, folder / "off_by_one.onnx", (4.0, 0.0))  # one heatmap cell in x
    return patches


@pytest.mark.parametrize("recipe", [CROP_RECIPE, IMAGE_RECIPE], ids=["crop", "image"])
@pytest.mark.parametrize("opset", [9, 17])
def test_verify_passes_on_the_hrnet_recipes(tiny_pose_models, recipe, opset):
    report = verify(recipe, tiny_pose_models[(opset, False)], random=3, backends=BOTH)
    assert report, report.failures()
    names = [pair.name for pair in report.pairs]
    assert names == ["onnxruntime: unpatched → patched", "openvino: unpatched → patched",
                     "patched: onnxruntime → openvino"]
    for pair in report.pairs:
        assert {r.output for r in pair.results} == {"keypoints", "scores", "heatmaps"}
        keypoints = next(r for r in pair.results if r.output == "keypoints")
        assert keypoints.positions == 3 * 17 and keypoints.mismatches == 0


@pytest.mark.parametrize("opset", [9, 17])
def test_verify_passes_on_the_tiny_hrnet(hrnet_tiny, opset):
    report = verify(IMAGE_RECIPE, hrnet_tiny[opset], random=2, backends=BOTH)
    assert report, report.failures()
    assert len(report.pairs) == 3 and report.samples == 2


@pytest.mark.parametrize("mistake, failing", [
    ("colour", {"keypoints", "scores", "heatmaps"}),
    ("no_std", {"keypoints", "scores", "heatmaps"}),
    ("off_by_one", {"keypoints"}),
])
def test_verify_catches_a_wrong_patch(tiny_pose_models, wrong_patches, mistake, failing):
    report = verify(CROP_RECIPE, tiny_pose_models[(17, False)], patched=wrong_patches[mistake], random=3,
                    backends=BOTH)
    assert not report
    for pair in report.pairs[:2]:  # unpatched → patched, on each backend
        assert {r.output for r in pair.results if not r} == failing
    assert report.pairs[2]  # the wrong patch is at least the same on both backends
    keypoints = next(r for r in report.pairs[0].results if r.output == "keypoints")
    assert keypoints.mismatches > 0 and keypoints.near_ties == 0
    lines = report.failures()
    assert any(line.startswith("onnxruntime: unpatched → patched: keypoints: ") and "px" in line for line in lines)
    if mistake == "off_by_one":  # the size of the difference: exactly one heatmap cell (4 crop pixels)
        assert keypoints.max_distance == 4.0 and keypoints.matches < keypoints.positions
    else:
        heatmaps = next(r for r in report.pairs[0].results if r.output == "heatmaps")
        assert heatmaps.max_abs > 0.01 and f"would pass with atol ≥ {heatmaps.passing_atol:.3g}" in heatmaps.summary()
    if mistake != "off_by_one":
        assert any("not with this recipe" in note for note in report.notes)


def test_per_output_tolerances(tiny_pose_models, wrong_patches):
    loose = verify(CROP_RECIPE, tiny_pose_models[(17, False)], patched=wrong_patches["no_std"], random=2,
                   backends=("onnxruntime",), tolerances={"*": (100.0, 0.0)})
    results = {r.output: r for r in loose.pairs[0].results}
    assert results["heatmaps"] and results["scores"] and results["heatmaps"].atol == 100.0
    assert not results["keypoints"] and not loose  # "*" loosens float outputs, not the near-tie test of keypoints
    assert results["keypoints"].tie_atol == MODEL_FLOAT_FLOOR.atol


def test_float_tolerances_are_raised_to_the_model_floor_unless_set_by_name(tiny_pose_models):
    report = verify(CROP_RECIPE, tiny_pose_models[(17, False)], random=1, backends=("onnxruntime",),
                    tolerances={"scores": (1e-7, 1e-7)})
    results = {r.output: r for r in report.pairs[0].results}
    assert (results["heatmaps"].atol, results["heatmaps"].rtol) == (MODEL_FLOAT_FLOOR.atol, MODEL_FLOAT_FLOOR.rtol)
    assert (results["scores"].atol, results["scores"].rtol) == (1e-7, 1e-7)
    assert results["keypoints"].atol == 0.0  # coordinates keep their declared (exact) comparison
    # the raise is said, with what was declared: heatmaps (declared 1e-5) yes, scores (set by name) no
    (note,) = [n for n in report.notes if "allowance for one float32 network" in n]
    assert "heatmaps (declared atol 1e-05, rtol 1e-05)" in note and "scores" not in note


def test_precision_bf16_is_reported_as_reduced_precision_or_as_not_available(tiny_pose_models):
    report = verify(CROP_RECIPE, tiny_pose_models[(17, False)], random=2, backends=("openvino",), precision="bf16")
    assert report.precision == "bf16"
    pair = report.pairs[0]
    if pair.reduced_precision is None:  # this CPU has no bf16: OpenVINO quietly runs f32, and the report says so
        assert any("no bf16 support" in note for note in report.notes) and report
    else:
        assert pair.reduced_precision == "bf16" and "at bf16" in pair.name
        assert any("reduced precision" in note for note in report.notes)
        assert any("not faster on every CPU" in note for note in report.notes)


def test_verify_on_image_crops_with_boxes_feeds_center_and_scale(tiny_pose_models, tmp_path):
    annotations = write_coco_set(tmp_path / "set", images=3, seed=3)
    boxes = len(json.loads(annotations.read_text())["annotations"])
    report = verify(IMAGE_RECIPE, tiny_pose_models[(9, False)], images=annotations.parent, boxes=annotations,
                    backends=("onnxruntime",))
    assert report, report.failures()
    assert report.samples == boxes and "person boxes" in report.inputs
    whole = verify(CROP_RECIPE, tiny_pose_models[(9, False)], images=annotations.parent, backends=("openvino",))
    assert whole and whole.samples == 3 and "whole images" in whole.inputs


def test_verify_an_openvino_ir(tiny_pose_models, tmp_path):
    from graphsurgery.irconvert import convert

    patched = apply(CROP_RECIPE, tiny_pose_models[(17, False)], tmp_path / "patched.onnx").output
    convert(patched, tmp_path / "patched.xml")
    report = verify(CROP_RECIPE, tiny_pose_models[(17, False)], patched=tmp_path / "patched.xml", random=2,
                    backends=("openvino",))
    assert report and report.patched.endswith("patched.xml")


# --- CLI -----------------------------------------------------------------------------------------------------


def test_cli_pass_writes_a_json_report(tiny_pose_models, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["verify", str(CROP_RECIPE), str(tiny_pose_models[(17, False)]), "--random", "2",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "keypoints" in result.output
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["samples"] == 2 and len(data["pairs"]) == 3
    assert data["pairs"][0]["outputs"][0]["output"] == "keypoints"
    # no resize: crops at the model's size, and nothing to compare with OpenCV
    assert data["sizes"] == [{"width": 192, "height": 256}] and data["informational"] == {"vs_library": []}
    assert "(2 crops)" in result.output and "OpenCV" not in result.output


def test_cli_parity_failure_exits_1_naming_the_output(tiny_pose_models, wrong_patches, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["verify", str(CROP_RECIPE), str(tiny_pose_models[(17, False)]), "--patched",
                                      str(wrong_patches["off_by_one"]), "--random", "2", "--backends", "onnxruntime",
                                      "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "(keypoints)" in result.output and "real mismatch" in result.output
    assert json.loads(out.read_text())["passed"] is False


@pytest.mark.parametrize("args, message", [
    (["--tolerance", "keypoints"], "is not OUTPUT=ATOL[,RTOL]"),
    (["--tolerance", "nothing=1,1"], "no output named 'nothing'"),
    (["--tolerance", "*=nan"], "finite numbers ≥ 0"),  # NaN would pass every comparison
    (["--tolerance", "scores=1,inf"], "finite numbers ≥ 0"),
    (["--patched", "missing.onnx"], "no such patched model file"),
    (["--boxes", "boxes.json"], "boxes need images"),
    (["--patched", "model.xml", "--backends", "onnxruntime"], "onnxruntime cannot run OpenVINO IR"),
    (["--precision", "bf16", "--backends", "onnxruntime"], "applies to OpenVINO only"),
    (["--images", "."], "holds no .jpg/.jpeg/.png images"),
])
def test_cli_usage_errors_exit_2_in_one_line_writing_nothing(tiny_pose_models, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["verify", str(CROP_RECIPE), str(tiny_pose_models[(17, False)]), *args,
                                      "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_rejects_an_unknown_backend(tiny_pose_models):
    result = CliRunner().invoke(cli, ["verify", str(CROP_RECIPE), str(tiny_pose_models[(17, False)]),
                                      "--backends", "tensorrt"])
    assert result.exit_code == 2 and "'tensorrt' is not a backend" in result.output


def test_verify_checks_each_model_once(tiny_pose_models, tmp_path, monkeypatch):
    """The plain model is checked when loaded, the patched one when written; every later load of either (apply,
    signatures, provenance, each runner) reuses that check."""
    import shutil

    import onnx

    plain = Path(shutil.copy(tiny_pose_models[(17, False)], tmp_path / "fresh.onnx"))  # a file no test checked yet
    checked: list[str] = []
    real = onnx.checker.check_model

    def counting(model, *args, **kwargs):
        if not str(model).endswith("exposed.onnx"):  # verify's own copy cut to the input steps (`staged`)
            checked.append(str(model))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.checker, "check_model", counting)
    report = verify(CROP_RECIPE, plain, random=2)
    assert report, report.failures()
    assert len(checked) == 2 and checked[0] == str(plain), checked
    plain.write_bytes(plain.read_bytes())  # rewritten: a new identity, checked again
    verify(CROP_RECIPE, plain, random=1, backends=("onnxruntime",))
    assert len(checked) == 4
