"""Round 69's leftovers, closed: a `--boxes` annotation file whose image sizes are not numbers skipped the size
check of `run` and `verify` (eval-coco refused the same file); `to_image: {mode: original, input_size: …}` on
keypoints in heatmap cells took an `input_size` that mode never reads; `bench --int8 N`'s help promised 1000 samples
where a 256 × 192 model takes 455; eval-coco's detections with a box past the coordinate bound were dropped with the
tiny ones, and the file was "no person boxes to evaluate", not the box. And round 67's: a step built in Python with
an unknown keyword of 120,000 characters echoed it whole, and one given a Decimal was held to pydantic's lax mode
alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clikit import invoke
from graphsurgery.errors import GraphsurgeryError

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


def _annotation(path: Path, image: dict) -> Path:
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": PHOTO.name, **image}],
                                "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 200, 300],
                                                 "category_id": 1}], "categories": []}))
    return path


@pytest.mark.parametrize("width", ["512", True, 0, None], ids=["string", "bool", "zero", "null"])
def test_boxes_of_an_annotation_file_whose_image_width_is_not_a_number_are_refused(tmp_path, patched, width):
    """Was: `run` cut the crops at the annotation's pixels without checking the image's size (exit 0)."""
    import graphsurgery

    boxes = _annotation(tmp_path / "ann.json", {"width": width, "height": 512})
    with pytest.raises(GraphsurgeryError, match=r"'astronaut.jpg' has width .*, not a number of pixels") as caught:
        graphsurgery.run(patched, [PHOTO], tmp_path / "out", backend="onnxruntime", boxes=boxes)
    assert caught.value.path == str(boxes)
    assert not (tmp_path / "out").exists()


def test_boxes_of_an_annotation_file_without_image_sizes_are_used_as_before(tmp_path, patched):
    """A file that gives no size at all is not checked (guard: as on the code before)."""
    import graphsurgery

    boxes = _annotation(tmp_path / "ann.json", {})
    assert graphsurgery.run(patched, [PHOTO], tmp_path / "out", backend="onnxruntime",
                            boxes=boxes).images[0].persons == 1


def test_to_image_mode_original_refuses_an_input_size_it_would_not_read(tmp_path, plain):
    """Was: applied, the input_size ignored in silence (the keypoints are mapped by center and scale alone)."""
    import graphsurgery

    recipe = tmp_path / "r.yaml"
    text = (ROOT / "recipes" / "hrnet_coco_pose_image.yaml").read_text()
    recipe.write_text(text.replace("to_image: {mode: original}", "to_image: {mode: original, input_size: [384, 512]}"))
    assert recipe.read_text() != text
    with pytest.raises(GraphsurgeryError, match="input_size is not used by mode original"):
        graphsurgery.apply(recipe, plain, tmp_path / "p.onnx")
    assert not (tmp_path / "p.onnx").exists()


def test_bench_int8_help_names_the_bound_the_samples_have():
    """Was: "--int8 N" with IntRange(1, 1000), and `--int8 1000` refused "give between 1 and 455" for 256 × 192."""
    from graphsurgery.samples import most_samples

    result = invoke("bench", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"{most_samples(3 * 256 * 192)} for a 3 × 256 × 192 input" in text


def test_eval_coco_names_a_detection_past_the_coordinate_bound(tmp_path):
    """Was: "no person boxes to evaluate (category 1)" for a file of person boxes, one of them 10^7 px wide."""
    from graphsurgery.coco import evaluate_coco

    from examples.synthetic_coco import joint_detector, write_coco_set
    from paritykit import CROP_RECIPE

    annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
    first = json.loads(annotations.read_text())["annotations"][0]
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps([{"image_id": first["image_id"], "category_id": 1, "score": 0.9,
                                       "bbox": [10, 10, 1e7, 50]}]))
    with pytest.raises(GraphsurgeryError, match=r"a bbox \[10.0, 10.0, 10000000.0, 50.0\] of image .* beyond 1,0"):
        evaluate_coco(CROP_RECIPE, joint_detector(tmp_path / "d.onnx", opset=17), annotations, tmp_path / "images",
                      boxes=detections, backends=("onnxruntime",))


def test_a_reference_pipeline_that_changes_the_current_folder_does_not_move_relative_paths(tmp_path, monkeypatch):
    """Was: a pipeline that `os.chdir`s to its own folder made a relative `--patched` "no such model file"."""
    import os

    import numpy as np
    import onnxruntime as ort

    from graphsurgery.api import apply
    from graphsurgery.verification import verify

    from modelkit import pose_model
    from paritykit import IMAGE_RECIPE

    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    plain = pose_model(Path("pose.onnx"))
    patched = apply(IMAGE_RECIPE, plain, Path("pose.patched.onnx")).output
    session = ort.InferenceSession(str(patched), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def moves_away(inputs):
        os.chdir(tmp_path / "elsewhere")
        rows = [session.run(None, {k: v[i:i + 1] for k, v in inputs.items()}) for i in range(len(inputs["input"]))]
        return {name: np.concatenate([row[i] for row in rows]) for i, name in enumerate(names)}

    report = verify(IMAGE_RECIPE, plain, patched=Path("pose.patched.onnx"), random=2, backends=("onnxruntime",),
                    reference_pipeline=moves_away)
    assert report, report.failures()
    assert Path.cwd() == tmp_path


def test_a_step_built_with_an_enormous_unknown_keyword_says_so_in_a_short_line():
    """Round 67's leftover: `Resize(**{"a b " * 30_000: 1})` echoed the keyword whole, twice: a 240,000-character
    line (spaced text escapes the cut of long words)."""
    from graphsurgery.errors import StepParameterError
    from graphsurgery.steps.resize import Resize

    with pytest.raises(StepParameterError, match=r"unknown key 'a b a b .*…' \(120,000 characters\)") as caught:
        Resize(**{"a b " * 30_000: 1})
    assert len(str(caught.value)) < 600
    with pytest.raises(StepParameterError, match=r"^Resize\(sise=…\): unknown key 'sise' — fix: did you mean 'size'"):
        Resize(sise=1)


def test_a_step_built_with_a_decimal_is_held_to_what_its_recipe_takes():
    """Round 67's leftover: a Decimal or a Fraction was judged by pydantic's lax mode alone (`antialias=Decimal(1)`
    built antialias=True, which `antialias: 1` in a recipe is refused); the numbers they hold are still taken."""
    from decimal import Decimal
    from fractions import Fraction

    from graphsurgery.errors import StepParameterError
    from graphsurgery.steps.input import Scale
    from graphsurgery.steps.resize import Resize

    with pytest.raises(StepParameterError, match=r"Resize\(antialias=…\): Input should be a valid boolean"):
        Resize(size=(256, 192), antialias=Decimal(1))
    assert Resize(size=(Decimal(256), 192)).size == (256, 192)
    assert Scale(divide=Fraction(1, 4)).divide == 0.25


def test_user_code_runs_where_the_current_folder_cannot_be_held(monkeypatch):
    """Where "." cannot be opened (no folder to return to), the user's function still runs and answers: the
    folder is then not restored, and nothing else changes."""
    import os

    from graphsurgery.callables import call_user

    real_open = os.open

    def refuses_the_current_folder(path, *args, **kwargs):
        if path == ".":
            raise PermissionError(13, "Permission denied", ".")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuses_the_current_folder)
    assert call_user(lambda x: x * 2, "the reference pipeline (--reference-pipeline)", 21) == 42
