"""Round 105: the docs against the behaviour, for rounds 100–104's changes.

A demanding new user read README.md, docs/verify.md, SECURITY.md and every command's `--help` and `steps NAME`, and
followed each new refusal's fix line literally. A `reverse_channels` the model does itself was refused with "drop the
`reverse_channels` step", and the recipe so fixed was refused again ("the model wants BGR — fix: add a
`reverse_channels: {}` step"): a loop. `apply --help` said `--force` replaces an output or applies a recipe again,
not that it also applies input steps the model already does (and `chain` / `convert --help` said it applied a
recipe); `inspect --help` did not name what it now shows of the model's own input; `steps yolo_boxes` did not say a
decoded YOLOX head is refused; the int8 IR's stored agreement line said "count 100.0% equal to f32" where bench and
convert say how many detections f32 made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper

from clikit import invoke
from graphsurgery.quantize import agreement_line
from test_hostile_hundredfirst import BGR_RECIPE, _reversals, build, refused
from test_hostile_hundredsecond import CLASSIFIER, classifier, suppressed_detector, top_five

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("prelude", _reversals()[:2], ids=["Gather", "Slice"])
def test_the_fix_line_of_a_doubled_channel_reversal_works_when_followed_literally(tmp_path, prelude):
    plain = build(tmp_path / "flip.onnx", prelude)
    refused(BGR_RECIPE, plain, tmp_path, "drop the `reverse_channels` step from input.steps and set "
            "`model: {color: RGB}` in the input section")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(BGR_RECIPE.replace("    - reverse_channels: {}\n", "").replace("color: BGR", "color: RGB"))
    result = invoke("apply", fixed, plain, "-o", tmp_path / "fixed.onnx")
    assert result.exit_code == 0, result.output
    bgr_caller = tmp_path / "bgr.yaml"  # the colour the fix names is the caller's, whichever it is
    bgr_caller.write_text(BGR_RECIPE.replace("color: RGB}\n  model", "color: BGR}\n  model")
                          .replace("model: {layout: NCHW, color: BGR}", "model: {layout: NCHW, color: RGB}"))
    refused(bgr_caller.read_text(), plain, tmp_path, "set `model: {color: BGR}` in the input section")


def test_apply_help_says_what_force_does_and_chain_and_convert_apply_no_recipe():
    said = " ".join(invoke("apply", "--help").output.split())
    assert "apply a recipe again" in said and "input steps the model already does itself" in said, said
    for command in ("chain", "convert"):
        said = " ".join(invoke(command, "--help").output.split())
        assert "Replace an existing output." in said and "apply a recipe again" not in said, said


def test_inspect_help_names_what_it_shows_of_the_models_own_input():
    said = " ".join(invoke("inspect", "--help").output.split())
    assert "what it does to its own input" in said and "own_input_steps" in said, said


def test_steps_yolo_boxes_says_a_head_the_model_decodes_is_refused():
    said = " ".join(invoke("steps", "yolo_boxes").output.split())
    assert "decode_in_inference: exp(wh) · stride in the graph) is refused: read it with v5" in said, said


def test_the_int8_agreement_line_of_a_detector_says_how_many_detections_f32_made():
    """`convert --int8` stores this line in the IR and `run` prints it: "count 100.0% equal to f32" on inputs where
    f32 found nothing was agreement on padding, as bench's said before round 100."""
    line = agreement_line({"boxes": {"mean_abs_diff": 0.0}, "count": {"equal": 1.0, "f32_detections": 0.0}},
                          "16 random caller inputs")
    assert "count 100.0% equal to f32 (f32 detections 0)" in line, line
    assert "(f32" not in agreement_line({"label": {"equal": 1.0}}, "3 crops")


def test_the_readme_tells_what_to_do_for_each_new_refusal():
    """Each output-side refusal of rounds 102–104 has its fix in "Choose a recipe", and `--force`'s meanings are in
    the command table."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| your model | change in the recipe |"):readme.index("The splice tells you when")]
    for fix in ("refuses `softmax` and `topk` (drop both, or export the scores its TopK reads as an output",
                "`dfl_boxes: {bin_scores: none}`", "`scores: none`", "`yolo_boxes: {format: v5}`",
                "no `yolo_boxes` / `dfl_boxes`, `nms` or `boxes_to_image`", "`model: {color: ...}`"):
        assert fix in table, fix
    assert "`--force` replaces an existing output, applies a recipe again and applies input steps" in readme


def test_the_steps_table_shows_each_summary_as_written():
    """center_crop's summary "Cut the centre [height, width] out of the image" lost its brackets to rich's markup."""
    said = " ".join(invoke("steps").output.split())
    assert "Cut the centre [height, width] out of the image" in said, said


def _top_five_and_its_scores(nodes, inits):
    """The model's own top five, and the softmax its TopK reads exported as an output too."""
    return [*top_five(nodes, inits), helper.make_tensor_value_info("softmax", TensorProto.FLOAT, ["N", 10])]


def test_the_fix_line_of_topk_on_a_topk_output_names_a_target_apply_takes(tmp_path):
    """"set output.target to the scores the model's TopK reads" could not be followed: a target is a model output,
    and those scores were none ("the model has no output named 'softmax'")."""
    refused(CLASSIFIER % "  target: prob\n", classifier(tmp_path / "top5.onnx", top_five), tmp_path,
            "or export the scores the model's TopK reads as a model output and set output.target to them")
    recipe = tmp_path / "scores.yaml"
    recipe.write_text(CLASSIFIER % "  target: softmax\n")
    result = invoke("apply", recipe, classifier(tmp_path / "both.onnx", _top_five_and_its_scores), "-o",
                    tmp_path / "both-p.onnx")
    assert result.exit_code == 0, result.output


def test_the_fix_line_of_a_decode_after_the_models_own_nms_works_on_the_shipped_detector_recipe(tmp_path):
    """"drop the decode and nms steps" left boxes_to_image, refused in turn ("needs boxes, scores, classes … fix: add
    the step that produces it earlier (e.g. heatmap_argmax)"): the whole output section goes."""
    recipe = (ROOT / "recipes" / "yolov8_detector.yaml").read_text()
    plain = suppressed_detector(tmp_path / "nms.onnx")
    refused(recipe, plain, tmp_path, "drop the decode and nms steps, and boxes_to_image: the whole output section "
            "where that is all of it")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(recipe[:recipe.index("\noutput:")] + "\n")
    result = invoke("apply", fixed, plain, "-o", tmp_path / "fixed.onnx")
    assert result.exit_code == 0, result.output


def test_a_step_missing_what_it_reads_is_told_the_step_that_writes_it(tmp_path):
    """boxes_to_image without nms was told "(e.g. heatmap_argmax)"; the example is now a step that writes what is
    missing (the registry's steps, built with their defaults)."""
    recipe = (ROOT / "recipes" / "yolov8_detector.yaml").read_text()
    for line in ("    - yolo_boxes: {format: v8}\n", "    - nms: {iou_threshold: 0.7, score_threshold: 0.25, "
                 "max_detections: 300, best_class_only: true}\n"):
        assert line in recipe
        recipe = recipe.replace(line, "")
    refused(recipe, suppressed_detector(tmp_path / "nms.onnx"), tmp_path, "boxes_to_image needs boxes, scores, "
            "classes, which no earlier step produces", "fix: add the step that produces it earlier (e.g. nms)")


def test_a_softmax_over_a_models_top_k_is_refused(tmp_path):
    """Round 105's leftover: with `topk` dropped as its refusal says, the softmax of the model's five best scores
    (rank order) was applied without a word and passed as the classes' probabilities."""
    names = "{probabilities: probabilities}"
    recipe = CLASSIFIER.replace("    - topk: {k: 3}\n", "").replace("{indices: indices, scores: scores}", names)
    recipe %= "  target: prob\n"
    refused(recipe, classifier(tmp_path / "top5.onnx", top_five), tmp_path,
            "softmax: the model output 'prob' is already made by a TopK node", "fix: drop the `softmax` step")
