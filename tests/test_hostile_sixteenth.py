"""A sixteenth round of hostile inputs, by structured fuzzing rather than by hand: every shipped recipe and the step
reference mutated (keys deleted, duplicated or swapped, types changed, extreme numbers, empty and 10^4-long lists,
unicode and control characters, steps reordered, repeated, grafted from another recipe or moved to the other side),
boxes JSON and COCO annotation files mutated the same way, and random combinations of every command's options with
boundary values, run in one process with click's CliRunner (seeded; /tmp/hostile16/fuzz.py in the round's report).
Found: a recipe whose input keeps the model input's name while `crop_boxes` adds `boxes` made onnx-graphsurgeon print
eight warning lines ("Found distinct tensors that share the same name") to standard output, on success and before
every refusal (two tensors held the input's name while the steps were built); `input.name: boxes` with `crop_boxes`
made two graph inputs of one name (or blamed a tensor of the model); `flip_test` repeated or without
`flip_average`, `flip_average` without `flip_test`, repeated or after a decoding step were applied in silence (2N or
4N keypoints against N boxes) and `verify` then ended in an internal error (IndexError in the twin of `to_image`);
`udp_refine` after another refinement was an IndexError in its twin (twice) or a false FAIL (after dark_refine or
quarter_offset: the graph and the twin round fractional cells differently); `verify`, `bench` and `eval-coco --json`
into a missing folder or under a file printed the whole report and then the error (bench: after the timing);
`verify --precision int8` quantized the model before it looked for `--images`; a detector's FAIL with detections
on one side only was an internal error (AttributeError) while the CLI printed its details. Each is now one line
naming the step or file and the fix, exit 2, a clean output, or (the detections) the FAIL with its details.
Held: 3,000 mutated boxes and COCO files (run, verify, eval-coco), 6,000 option combinations."""

from __future__ import annotations

import hashlib

import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import RecipeError
from graphsurgery.recipe import parse_recipe

from conftest import RECIPES
from modelkit import pose_model, three_head_model

CROP = RECIPES / "hrnet_coco_pose.yaml"
TOPDOWN = RECIPES / "hrnet_coco_topdown.yaml"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_pose(tmp_path_factory):
    """The tests' pose model at 64 × 48 (crop_boxes needs a static crop size; small is fast)."""
    return pose_model(tmp_path_factory.mktemp("pose") / "pose.onnx", input_hw=(64, 48))


# --- crop_boxes on an input that keeps its name ---------------------------------------------------------------------

#: hrnet_coco_pose.yaml with crop_boxes after cast, the new input keeping the model input's name (`input`)
CROP_BOXES = CROP.read_text().replace("    - cast: {}\n", "    - cast: {}\n    - crop_boxes: {}\n")


def test_crop_boxes_keeping_the_input_name_prints_no_graphsurgeon_warnings(small_pose, tmp_path):
    recipe = tmp_path / "crop_boxes.yaml"
    recipe.write_text(CROP_BOXES)
    result = invoke("apply", recipe, small_pose, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    assert "[W]" not in result.output and "distinct tensors" not in result.output, result.output
    assert result.output.startswith("recipe hrnet-coco-pose")


def test_a_refusal_after_crop_boxes_stays_one_line(tmp_path):
    """three heads and no output.target: refused after the input steps were built (the warnings came first)."""
    model = three_head_model(tmp_path / "three.onnx")
    recipe = tmp_path / "crop_boxes.yaml"
    recipe.write_text(CROP_BOXES)
    before = digest(model)
    one_line_exit_2(invoke("apply", recipe, model, "-o", tmp_path / "out.onnx"), "output.target")
    assert digest(model) == before and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("first", [True, False], ids=["crop_boxes first", "crop_boxes after cast"])
def test_an_input_named_like_the_boxes_input_is_refused(small_pose, tmp_path, first):
    """`input.name: boxes` with crop_boxes first made two graph inputs named `boxes`; after other steps it blamed
    a tensor of the model."""
    text = TOPDOWN.read_text().replace("  name: image", "  name: boxes").replace("hrnet-coco-topdown", "named-boxes")
    if first:
        text = text.replace("    - cast: {}\n    - layout: {to: NCHW}\n    - crop_boxes: {}\n",
                            "    - crop_boxes: {}\n    - cast: {}\n    - layout: {to: NCHW}\n")
        text = text.replace("dtype: uint8", "dtype: float32")
    recipe = tmp_path / "named.yaml"
    recipe.write_text(text)
    one_line_exit_2(invoke("apply", recipe, small_pose, "-o", tmp_path / "out.onnx"), "crop_boxes",
                    "the name of the patched input", "input.name")
    assert not (tmp_path / "out.onnx").exists()


# --- flip_test and flip_average pair up -----------------------------------------------------------------------------

TEXT = TOPDOWN.read_text()
FLIP_TEST, FLIP_AVERAGE = "    - flip_test: {}\n", "    - flip_average: {}\n"
QUARTER = "    - quarter_offset: {}\n"
UNPAIRED = {
    "flip_test twice": (TEXT.replace(FLIP_TEST, FLIP_TEST * 2), "input.steps[7].flip_test", "keep one flip_test"),
    "flip_test alone": (TEXT.replace(FLIP_AVERAGE, ""), "input.steps[6].flip_test", "add `flip_average: {}`"),
    "flip_average alone": (TEXT.replace(FLIP_TEST, ""), "output.steps[0].flip_average", "add `flip_test: {}`"),
    "flip_average twice": (TEXT.replace(FLIP_AVERAGE, FLIP_AVERAGE * 2), "output.steps[1].flip_average",
                           "keep one flip_average"),
    "flip_average after decoding": (TEXT.replace(FLIP_AVERAGE, "").replace(QUARTER, QUARTER + FLIP_AVERAGE),
                                    "output.steps[2].flip_average", "move it to the top of output.steps"),
}


@pytest.mark.parametrize("case", list(UNPAIRED))
def test_unpaired_flip_steps_are_refused_at_their_line(case):
    text, where, fix = UNPAIRED[case]
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text, source="flip.yaml")
    message = str(caught.value)
    assert where in message and fix in message and "line " in message and "\n" not in message, message


def test_a_doubled_flip_test_is_refused_by_apply_and_verify(small_pose, tmp_path):
    """Applied, it made 4N crops for N boxes; verify then was an internal error (IndexError in to_image's twin)."""
    recipe = tmp_path / "flip2.yaml"
    recipe.write_text(UNPAIRED["flip_test twice"][0])
    before = digest(small_pose)
    one_line_exit_2(invoke("apply", recipe, small_pose, "-o", tmp_path / "out.onnx"), "a second flip_test")
    one_line_exit_2(invoke("verify", recipe, small_pose, "--random", "1", "--backends", "onnxruntime"),
                    "a second flip_test")
    assert digest(small_pose) == before and not (tmp_path / "out.onnx").exists()


UDP = (RECIPES / "mmpose_heatmap_udp.yaml").read_text()
UDP_STEP = "    - udp_refine: {blur_kernel_size: 11}\n"


@pytest.mark.parametrize("before", ["    - udp_refine: {}\n", "    - dark_refine: {}\n",
                                    "    - quarter_offset: {gating: mmpose}\n"])
def test_udp_refine_after_another_refinement_is_refused(small_pose, tmp_path, before):
    """udp_refine reads the argmax's integer cells: twice, verify was an internal error (IndexError in its twin);
    after dark_refine or quarter_offset, a FAIL of a graph and a twin that round fractional cells differently."""
    recipe = tmp_path / "udp.yaml"
    recipe.write_text(UDP.replace(UDP_STEP, before + UDP_STEP))
    one_line_exit_2(invoke("apply", recipe, small_pose, "-o", tmp_path / "out.onnx"), "output.steps[2].udp_refine",
                    "right after `heatmap_argmax`")
    assert not (tmp_path / "out.onnx").exists()


def test_flip_steps_on_one_side_only_stay_allowed():
    """A recipe without an input (or output) section leaves the mirroring (or the folding) to the caller."""
    output_only = "version: 1\nname: fold\noutput:\n  steps:\n    - flip_average: {}\n    - heatmap_argmax: {}\n"
    assert parse_recipe(output_only).output.steps[0].step_name == "flip_average"
    shipped = parse_recipe(TEXT)
    assert [s.step_name for s in shipped.output.steps][0] == "flip_average"


# --- report paths are checked before the work -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    from examples.synthetic_coco import joint_detector, write_coco_set

    folder = tmp_path_factory.mktemp("coco")
    annotations = write_coco_set(folder / "images", images=1, seed=0, size=(320, 240))
    return annotations, folder / "images", joint_detector(folder / "detector.onnx", opset=17)


def _report_command(command, small_pose, coco_set):
    if command == "verify":
        return ["verify", CROP, small_pose, "--random", "1", "--backends", "onnxruntime"]
    if command == "bench":
        return ["bench", CROP, small_pose, "--iterations", "1", "--warmup", "0"]
    annotations, images, detector = coco_set
    return ["eval-coco", CROP, detector, "--ann", annotations, "--images", images, "--backends", "onnxruntime"]


@pytest.mark.parametrize("command, where", [(command, where) for command in ("verify", "bench", "eval-coco")
                                             for where in ("missing folder", "under a file")]
                         + [("bench", "a folder")])  # verify's and eval-coco's --json refused a folder already
def test_a_report_that_cannot_be_written_is_refused_before_the_work(small_pose, coco_set, tmp_path, command, where):
    """`--json` into a folder that does not exist, onto a folder or under a file was refused only after the runs (or
    the timing): the whole report printed, then the error, exit 2."""
    (tmp_path / "plain.txt").write_text("x")
    report = {"missing folder": tmp_path / "nowhere" / "r.json", "a folder": tmp_path,
              "under a file": tmp_path / "plain.txt" / "r.json"}[where]
    needle = {"missing folder": "the output folder does not exist", "a folder": "the output is a directory",
              "under a file": "is a file, not a folder"}[where]
    one_line_exit_2(invoke(*_report_command(command, small_pose, coco_set), "--json", report), needle)
    assert (tmp_path / "plain.txt").read_text() == "x"


def test_verify_int8_refuses_missing_images_before_quantizing(small_pose, tmp_path):
    """`verify --precision int8 --images MISSING` quantized the patched model first (NNCF's progress bars printed),
    then said "no such image file"."""
    result = invoke("verify", CROP, small_pose, "--images", tmp_path / "nowhere", "--backends", "openvino",
                    "--precision", "int8")
    one_line_exit_2(result, "no such image file")


def tiny_detector(path, classes: int = 4):
    """A YOLOv8-shaped export ([1, 3, 128, 160] → output0 [1, 4 + C, 80]: boxes cx, cy, w, h and class scores)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (4 + classes, 3, 16, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 4 + classes, 80], np.int64), "shape"),
             numpy_helper.from_array(np.array([4, classes], np.int64), "split"),
             numpy_helper.from_array(np.array(160, np.float32), "size")]
    nodes = [helper.make_node("Conv", ["images", "w"], ["maps"], strides=[16, 16]),
             helper.make_node("Reshape", ["maps", "shape"], ["flat"]),
             helper.make_node("Split", ["flat", "split"], ["raw_boxes", "raw_scores"], axis=1),
             helper.make_node("Sigmoid", ["raw_boxes"], ["unit_boxes"]),
             helper.make_node("Mul", ["unit_boxes", "size"], ["xywh"]),
             helper.make_node("Sigmoid", ["raw_scores"], ["probs"]),
             helper.make_node("Concat", ["xywh", "probs"], ["output0"], axis=1)]
    graph = helper.make_graph(nodes, "detector",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 128, 160])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, 80])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_two_nms_steps_are_refused_in_one_line(tmp_path):
    """Two nms steps declared their selections with one named dim ("selected"): ONNX Runtime planned one buffer for
    both and the patched model failed in NonMaxSuppression ("Shape mismatch attempting to re-use buffer"), an
    internal error of verify. The second reads the candidates again, so the first one's work is thrown away: since
    round 50's leftover such a recipe is refused (`recipe.unused_results`)."""
    detector = tiny_detector(tmp_path / "detector.onnx")
    recipe = tmp_path / "two_nms.yaml"
    recipe.write_text((RECIPES / "yolov8_detector.yaml").read_text().replace(
        "    - boxes_to_image: {}\n", "    - nms: {per_class: false, max_detections: 50}\n    - boxes_to_image: {}\n"))
    one_line_exit_2(invoke("verify", recipe, detector, "--random", "1", "--backends", "onnxruntime"),
                    "output.steps[1].nms: the results of nms (boxes, scores, classes, count) are never used: nms "
                    "after it writes boxes again before any step reads it", "fix: keep one nms")


def test_verify_prints_the_detections_found_on_one_side_only(tmp_path):
    """A detector's FAIL with detections on one side only ended in an internal error (AttributeError: the CLI read
    each detail as a keypoint's); found on a recipe whose input steps were reordered."""
    from graphsurgery.api import apply

    detector = tiny_detector(tmp_path / "detector.onnx")
    loose = tmp_path / "loose.yaml"
    loose.write_text((RECIPES / "yolov8_detector.yaml").read_text().replace("iou_threshold: 0.7", "iou_threshold: 0.3")
                     .replace("score_threshold: 0.25", "score_threshold: 0.2"))
    patched = apply(loose, detector, tmp_path / "loose.onnx").output
    result = invoke("verify", RECIPES / "yolov8_detector.yaml", detector, "--patched", patched, "--random", "1",
                    "--backends", "onnxruntime")
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert "only in the" in result.output and "mismatch)" in result.output, result.output
