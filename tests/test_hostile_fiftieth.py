"""Hostile round 50: output steps in an order their keypoints do not fit, a boxes file of thousands of people for
the top-down graph, a tolerance that ties every heatmap value, an input named like a spliced tensor, and
parse_recipe given a path.

A second `to_image` (or a refinement after one, or a second refinement) read keypoints in other units
than it was written for, and its numpy twin did the same, so `verify` passed keypoints 4× too far (and a second
`boxes_to_image` other boxes); `verify --images
--boxes` on the top-down recipe held every box's crops at once (5,000 boxes in one image: killed for memory after
more than a minute); `--tolerance heatmaps=1e30` made every keypoint mismatch a near tie and passed a wrong decode;
`input.name: graphsurgery/pre/cast/Cast_output_0` made a graph that failed the checker ("a graphsurgery bug");
`parse_recipe(Path(...))` was an AttributeError.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from clikit import invoke, one_line_exit_2

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
POSE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
TOPDOWN = ROOT / "recipes" / "hrnet_coco_topdown.yaml"
IMAGES = ROOT / "examples" / "images"

HEAD = """version: 1
name: order
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: RGB}
  steps: [layout: {to: NCHW}, reverse_channels: {}, cast: {}, scale: {divide: 255}]
output:
  steps:
"""


def _recipe(tmp_path: Path, steps: list[str]) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + "".join(f"    - {step}\n" for step in steps))
    return path


@pytest.mark.parametrize(("steps", "needle"), [
    (["heatmap_argmax: {}", "to_image: {mode: crop}", "to_image: {mode: crop}"], "output.steps[2].to_image"),
    (["heatmap_argmax: {}", "to_image: {mode: crop}", "quarter_offset: {}"], "output.steps[2].quarter_offset"),
    (["heatmap_argmax: {}", "to_image: {mode: crop}", "dark_refine: {}"], "output.steps[2].dark_refine"),
    (["heatmap_argmax: {}", "quarter_offset: {}", "quarter_offset: {}"], "refines the keypoints again"),
    (["heatmap_argmax: {}", "dark_refine: {}", "dark_refine: {}"], "refines the keypoints again"),
    (["heatmap_argmax: {}", "to_image: {mode: boxes, units: crop}"], "heatmap cells"),
    (["heatmap_argmax: {}", "to_image: {mode: boxes}", "to_image: {mode: boxes, units: crop}"], "image pixels"),
])
def test_keypoint_steps_in_units_they_do_not_read_are_refused(tmp_path, steps, needle):
    plain = pose_model(tmp_path / "plain.onnx")
    result = invoke("apply", _recipe(tmp_path, steps), plain, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, needle, "line ")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("steps", [
    ["heatmap_argmax: {}", "quarter_offset: {}", "to_image: {mode: crop}"],
    ["heatmap_argmax: {}", "to_image: {mode: crop}", "to_image: {mode: boxes, units: crop}"],
])
def test_keypoint_steps_in_their_units_still_apply(tmp_path, steps):
    plain = pose_model(tmp_path / "plain.onnx")
    result = invoke("apply", _recipe(tmp_path, steps), plain, "-o", tmp_path / "out.onnx", "--dry-run")
    assert result.exit_code == 0, result.output


def test_recipe_object_with_a_second_to_image_is_refused(tmp_path):
    from graphsurgery.api import apply
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.recipe import load_recipe

    recipe = load_recipe(POSE)
    object.__setattr__(recipe.output, "steps", recipe.output.steps + recipe.output.steps[1:])
    with pytest.raises(GraphsurgeryError, match="to_image"):
        apply(recipe, pose_model(tmp_path / "plain.onnx"), tmp_path / "out.onnx")


def test_verify_refuses_more_boxes_than_the_graph_crops_it_can_hold(tmp_path):
    plain = pose_model(tmp_path / "plain.onnx")
    images = tmp_path / "images"
    images.mkdir()
    (images / "astronaut.jpg").write_bytes((IMAGES / "astronaut.jpg").read_bytes())
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"astronaut.jpg": [[10, 10, 50, 80]] * 5000}))
    result = invoke("verify", TOPDOWN, plain, "--images", images, "--boxes", boxes)
    one_line_exit_2(result, "5,000 crops", "at most 227", "boxes.json")


def test_a_tolerance_that_ties_every_heatmap_value_does_not_pass_a_wrong_decode(tmp_path):
    plain = pose_model(tmp_path / "plain.onnx", dynamic_batch=True)
    wrong_recipe = tmp_path / "minus_one.yaml"
    wrong_recipe.write_text(POSE.read_text().replace("heatmap_argmax: {}", "heatmap_argmax: {invalid: minus_one}"))
    wrong = tmp_path / "wrong.onnx"
    assert invoke("apply", wrong_recipe, plain, "-o", wrong).exit_code == 0
    common = ("--random", "4", "--backends", "onnxruntime", "--tolerance", "heatmaps=1e30")
    failed = invoke("verify", POSE, plain, "--patched", wrong, *common)
    assert failed.exit_code == 1, failed.output
    assert "lets every value of it" in " ".join(failed.output.split())
    assert invoke("verify", POSE, plain, *common).exit_code == 0


@pytest.mark.parametrize("raw", [5, POSE, {"version": 1}])
def test_parse_recipe_refuses_what_is_not_text(raw):
    from graphsurgery.errors import ArgumentError
    from graphsurgery.recipe import parse_recipe

    with pytest.raises(ArgumentError, match="load_recipe"):
        parse_recipe(raw)


@pytest.mark.parametrize("name", ["graphsurgery/pre/cast/Cast_output_0", "graphsurgery/pre/layout/Transpose_output_0"])
def test_an_input_named_like_a_spliced_tensor_is_patched(tmp_path, name):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(POSE.read_text().replace("input:\n", f"input:\n  name: {name}\n"))
    out = tmp_path / "out.onnx"
    result = invoke("apply", recipe, pose_model(tmp_path / "plain.onnx"), "-o", out)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [v.name for v in model.graph.input] == [name]


DETECTOR = ROOT / "recipes" / "yolov8_detector.yaml"
ONCE = "    - boxes_to_image: {}\n"


def test_a_second_boxes_to_image_is_refused():
    from graphsurgery.errors import RecipeError
    from graphsurgery.recipe import parse_recipe

    with pytest.raises(RecipeError, match="line 33") as refused:
        parse_recipe(DETECTOR.read_text().replace(ONCE, ONCE * 2))
    assert "output.steps[3].boxes_to_image" in str(refused.value)
    again = DETECTOR.read_text().replace(ONCE, ONCE + "    - nms: {}\n" + ONCE)  # a new nms: boxes of the model again
    with pytest.raises(RecipeError, match="line 32") as refused:  # which throws the first mapping away
        parse_recipe(again)
    assert "output.steps[2].boxes_to_image: the results of boxes_to_image" in str(refused.value)


# --- round 50's leftover: steps whose results nothing uses ---------------------------------------------------

CLASSIFIER = ROOT / "recipes" / "imagenet_classifier.yaml"


@pytest.mark.parametrize(("recipe", "old", "new", "refused"), [
    (POSE, "    - to_image: {mode: crop}\n", "    - to_image: {mode: crop}\n    - heatmap_argmax: {}\n",
     "output.steps[1].to_image: the results of to_image (keypoints) are never used: heatmap_argmax after it writes "
     "keypoints again before any step reads it — fix: drop the step, or move it after heatmap_argmax"),
    (DETECTOR, ONCE, ONCE + "    - nms: {}\n",
     "output.steps[2].boxes_to_image: the results of boxes_to_image (boxes, scores, classes, count) are never used: "
     "nms after it writes boxes again"),
    (DETECTOR, "    - nms:", "    - yolo_boxes: {format: v8}\n    - nms:",
     "output.steps[0].yolo_boxes: the results of yolo_boxes (candidates, class_scores) are never used: yolo_boxes "
     "after it writes candidates again before any step reads it — fix: keep one yolo_boxes"),
    (CLASSIFIER, "    - topk: {k: 5}\n", "    - topk: {k: 5}\n    - topk: {k: 3}\n", "fix: keep one topk"),
    (CLASSIFIER, "    - softmax: {}\n", "    - softmax: {}\n    - softmax: {}\n", "fix: keep one softmax"),
    (POSE, "    - heatmap_argmax: {}\n", "    - softmax: {}\n    - heatmap_argmax: {}\n",
     "output.steps[0].softmax: the results of softmax (probabilities) are never used: no later step reads them and "
     "output.names leaves them out — fix: drop the step, or name its results under output.names"),
], ids=["argmax-after-to_image", "nms-after-boxes_to_image", "yolo_boxes-twice", "topk-twice", "softmax-twice",
        "softmax-unnamed"])
def test_a_step_whose_results_nothing_uses_is_refused_at_its_line(recipe, old, new, refused):
    """Each was applied, and verified, in silence: its twin threw the same work away (nms after boxes_to_image gave
    the detections in the model input's pixels)."""
    from graphsurgery.errors import RecipeError
    from graphsurgery.recipe import parse_recipe

    text = recipe.read_text()
    assert old in text
    with pytest.raises(RecipeError, match=r"line \d+: ") as raised:
        parse_recipe(text.replace(old, new, 1))
    assert refused in " ".join(str(raised.value).split())


def test_a_result_named_or_read_is_used():
    """A softmax whose probabilities are named is kept (beside the heatmap decode), as is the classifier's softmax
    that topk reads."""
    from graphsurgery.recipe import load_recipe, parse_recipe

    text = POSE.read_text().replace("    - heatmap_argmax: {}\n", "    - softmax: {}\n    - heatmap_argmax: {}\n")
    named = text.replace("names: {keypoints: keypoints, scores: scores}",
                         "names: {keypoints: keypoints, scores: scores, probabilities: probabilities}")
    assert [step.step_name for step in parse_recipe(named).output.steps][0] == "softmax"
    assert [step.step_name for step in load_recipe(CLASSIFIER).output.steps] == ["softmax", "topk"]
