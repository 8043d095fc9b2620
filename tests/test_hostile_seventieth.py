"""Round 70: the hostile review of verify's comparison of what a detector's nms reads (`nms_reads`), of boxes files
(`boxes.Boxes`), and a fresh hostile set."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from detectorkit import DETECTOR_RECIPE

from conftest import RECIPES


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """(plain zoo YOLOv8, its right patch by the shipped detector recipe)."""
    from graphsurgery.api import apply

    from modelkit import zoo_model

    folder = tmp_path_factory.mktemp("detector")
    plain = zoo_model(folder / "v8.onnx", "yolov8-tiny", opset=17)
    return plain, apply(DETECTOR_RECIPE, plain, folder / "right.onnx").output


def nms_read(model: onnx.ModelProto) -> list[str]:
    """The two tensors the right patch's nms step reads from the decode (what `nms_reads` cuts at)."""
    from graphsurgery.steps.nms import nms_reads

    return sorted(nms_reads(model.graph))


def read_through(model: onnx.ModelProto, tensor: str, nodes: list[onnx.NodeProto], made: str) -> None:
    """`model`'s nms nodes made to read `made` for `tensor`, `nodes` (which make `made` from it) put just after the
    node that makes `tensor`: a patch as a third-party tool or a hand edit leaves it."""
    for node in model.graph.node:
        if node.name.startswith("graphsurgery/post/nms/"):
            node.input[:] = [made if name == tensor else name for name in node.input]
    after = 1 + next(index for index, node in enumerate(model.graph.node) if tensor in node.output)
    for node in reversed(nodes):
        model.graph.node.insert(after, node)


def plus_the_images_batch_less_one(model: onnx.ModelProto, tensor: str) -> None:
    """`tensor` + (the image's batch − 1), a zero that reads the caller's image: a step before nms that needs more
    than the network output."""
    image = model.graph.input[0].name
    model.graph.initializer.extend([numpy_helper.from_array(np.array([0]), "r70_zero"),
                                    numpy_helper.from_array(np.array([1]), "r70_one")])
    read_through(model, tensor, [helper.make_node("Shape", [image], ["r70_shape"]),
                                 helper.make_node("Slice", ["r70_shape", "r70_zero", "r70_one"], ["r70_batch"]),
                                 helper.make_node("Sub", ["r70_batch", "r70_one"], ["r70_none"]),
                                 helper.make_node("Cast", ["r70_none"], ["r70_nothing"], to=TensorProto.FLOAT),
                                 helper.make_node("Add", [tensor, "r70_nothing"], ["r70_read"])], "r70_read")


def through_an_if(model: onnx.ModelProto, tensor: str) -> None:
    """`tensor` passed through an If (always true) whose bodies read it from outside, as bodies do."""
    def body(name: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Identity", [tensor], [name])], name, [],
                                 [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)])

    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "r70_true"))
    read_through(model, tensor, [helper.make_node("If", ["r70_true"], ["r70_read"], then_branch=body("r70_then"),
                                                  else_branch=body("r70_else"))], "r70_read")


def test_a_right_patch_whose_steps_before_nms_need_more_than_the_network_output_passes_with_a_note(
        detector, tmp_path):
    """Was (round 70): verify cut the patched graph from the network output to what nms reads with onnx's
    Extractor, which follows node inputs only; a cut that also needed the caller's image was an invalid model, and
    a right patch was refused, exit 2, "onnxruntime cannot load the model … /tmp/graphsurgery-verify-…/
    nms_reads.onnx: Node input 'image' is not a graph input". Such a graph is now not cut there: a note says so,
    and its detections are compared as before round 68. (A tensor an If body reads from outside, also not cut here
    until round 81, is cut with the body since: tests/test_hostile_eightyfirst.py.)"""
    from graphsurgery.verification import verify

    plain, right = detector
    model = onnx.load(str(right))
    plus_the_images_batch_less_one(model, nms_read(model)[0])
    patched = tmp_path / "equivalent.onnx"
    onnx.save(model, str(patched))
    digest = hashlib.sha256(patched.read_bytes()).hexdigest()
    report = verify(DETECTOR_RECIPE, plain, patched=patched, backends=["onnxruntime"])
    assert report, report.failures()
    assert report.before_nms == [] and any("needs more than the network output" in note for note in report.notes)
    # the decoder probe's cut is fed the caller's image too: it runs
    assert report.probes and not any("output steps were not probed" in note for note in report.notes)
    assert hashlib.sha256(patched.read_bytes()).hexdigest() == digest


def test_a_wrong_step_before_nms_that_needs_only_the_network_output_still_fails_there(detector, tmp_path):
    """The check that a cut reads only what it is fed lets the ordinary cut through: candidates rounded through
    float16 before nms (the detections may not move) FAIL on what nms reads. Guards unchanged behaviour: passes
    before round 70 too."""
    from graphsurgery.verification import verify

    plain, right = detector
    model = onnx.load(str(right))
    tensor = nms_read(model)[0]
    read_through(model, tensor, [helper.make_node("Cast", [tensor], ["r70_half"], to=TensorProto.FLOAT16),
                                 helper.make_node("Cast", ["r70_half"], ["r70_read"], to=TensorProto.FLOAT)],
                 "r70_read")
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(DETECTOR_RECIPE, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    assert not report and any("before nms" in line for line in report.failures()), report.failures()


def test_outer_reads_are_what_a_graph_reads_but_does_not_define():
    """An If body's reads from the graph around it count, the names it makes itself do not (node_reads took every
    name a body read, its own too)."""
    from graphsurgery.model import node_reads, outer_reads

    body = helper.make_graph([helper.make_node("Relu", ["outside"], ["inner"]),
                              helper.make_node("Neg", ["inner"], ["body_out"])], "body", [],
                             [helper.make_tensor_value_info("body_out", TensorProto.FLOAT, None)])
    branch = helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body)
    assert node_reads(branch) == {"cond", "outside"}
    graph = helper.make_graph([branch, helper.make_node("Add", ["y", "w"], ["z"])], "cut",
                              [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.float32(1), "w")])
    assert outer_reads(graph) == {"outside"}


IMAGE = {"id": 1, "file_name": "a.png", "width": 32, "height": 48}
PERSON = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 40]}


@pytest.fixture(scope="module")
def pose_photo(patched, tmp_path_factory):
    """(the tiny patched pose model, a folder holding one 32 × 48 photo)."""
    folder = tmp_path_factory.mktemp("photo")
    cv2.imwrite(str(folder / "a.png"), np.random.default_rng(70).integers(0, 256, (48, 32, 3), np.uint8))
    return patched, folder


def coco_boxes(folder: Path, image: dict) -> Path:
    """A COCO annotation file of `image` with one person in it."""
    path = folder / "boxes.json"
    path.write_text(json.dumps({"images": [image], "annotations": [PERSON]}))
    return path


@pytest.mark.parametrize("size, shown", [({"width": "32"}, 'width "32"'), ({"height": True}, "height true"),
                                         ({"width": None}, "width null"), ({"width": [32]}, "width [32]"),
                                         ({"width": 0}, "width 0"), ({"height": float("nan")}, "height NaN"),
                                         ({"width": 10**400}, "width " + "1" + "0" * 39 + "…")])
def test_a_coco_boxes_file_whose_image_size_is_not_a_number_of_pixels_is_refused(pose_photo, tmp_path, size, shown):
    """Was (round 69's leftover): a `--boxes` COCO file whose image width was a string, a bool or null skipped the
    check that the image has the size the file gives it, and run went on (eval-coco refuses the same file); and
    (round 70) a width of 10^400 was an internal error ("int too large to convert to float") saying the sizes."""
    model, photos = pose_photo
    boxes = coco_boxes(tmp_path, {**IMAGE, **size})
    digest = hashlib.sha256(boxes.read_bytes()).hexdigest()
    result = invoke("run", model, photos, "--boxes", boxes, "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, str(boxes), f"image 'a.png' has {shown}, not a number of pixels", "in pixels, or neither")
    assert not (tmp_path / "out").exists() and hashlib.sha256(boxes.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("size, exit_code", [({}, 0), ({"width": 32.0}, 0), ({"width": 33}, 2)])
def test_a_coco_boxes_file_with_numbers_or_no_sizes_is_checked_as_before(pose_photo, tmp_path, size, exit_code):
    """Sizes given as numbers are checked (33 px for a 32 px wide photo is refused), and a file that gives none
    is used as it is. Guards unchanged behaviour: passes before round 70 too."""
    model, photos = pose_photo
    image = {**IMAGE, **size}
    if not size:
        del image["width"], image["height"]
    result = invoke("run", model, photos, "--boxes", coco_boxes(tmp_path, image), "-o", tmp_path / "out",
                    "--backend", "onnxruntime")
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("boxes", [
    {},
    {"a.png": []},
    {"images": [IMAGE], "annotations": [{**PERSON, "iscrowd": 1}]},
    {"images": [IMAGE], "annotations": [{**PERSON, "category_id": "1"}]},
])
@pytest.mark.parametrize("command", ["run", "verify"])
def test_a_boxes_file_of_no_person_says_so(pose_photo, plain, tmp_path, boxes, command):
    """Was (round 70): a boxes file holding no person box (empty, crowds only, a category_id of "1") made run say
    "the boxes file has boxes for none of the 1 images (it names e.g. nothing)" and verify "no image in the folder
    has boxes in the boxes file … names the images by file name": the names were right, the boxes were none."""
    model, photos = pose_photo
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(boxes))
    args = ([model, photos, "-o", tmp_path / "out", "--backend", "onnxruntime"] if command == "run" else
            [RECIPES / "hrnet_coco_pose.yaml", plain, "--images", photos, "--backends", "onnxruntime"])
    result = invoke(command, *args, "--boxes", path)
    one_line_exit_2(result, str(path), "holds no person box", "category_id 1, iscrowd 0")


#: a reference pipeline with right answers (the patched model's own) that changes the current folder
CHANGES_FOLDER = """import os
import onnxruntime as ort


def answers(inputs):
    session = ort.InferenceSession({model!r}, providers=["CPUExecutionProvider"])
    found = session.run(None, inputs)
    os.chdir({elsewhere!r})
    return {{output.name: value for output, value in zip(session.get_outputs(), found)}}
"""


def test_a_reference_pipeline_that_changes_the_current_folder_does_not_move_verify(plain, patched, tmp_path,
                                                                                   monkeypatch):
    """Was (round 69's leftover, round 70): a pipeline that called os.chdir made verify's relative --patched "no such
    model file", and with an absolute one the --json report was written into the pipeline's folder, over a file of
    that name. The current folder is given back after the user's code."""
    import shutil

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.json").write_text("the user's own")
    (tmp_path / "changes_folder.py").write_text(CHANGES_FOLDER.format(model=str(patched), elsewhere=str(elsewhere)))
    shutil.copy(patched, tmp_path / "patched.onnx")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("verify", RECIPES / "hrnet_coco_pose.yaml", plain, "--patched", "patched.onnx", "--random", 2,
                    "--backends", "onnxruntime", "--reference-pipeline", "changes_folder:answers", "--json",
                    "report.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report.json").read_text())["passed"]
    assert (elsewhere / "report.json").read_text() == "the user's own"


def cut_reading_a_and_b(tmp_path):
    from graphsurgery.nms_reads import NmsCut
    from graphsurgery.steps.base import Comparison

    return NmsCut(tmp_path / "cut.onnx", "output", np.dtype(np.float32), ("a", "b"), Comparison("float"))


def test_what_nms_reads_is_compared_a_batch_at_a_time(tmp_path, monkeypatch):
    """Was (round 70): the graph's reads of every batch were joined and compared as one part, whose float64 copies
    (`compare_float_parts` makes them a part at a time) took 1 GB more on a YOLOv8n-sized head (80 × 8,400 class
    scores, 27 samples, both backends: 2.9 GB at most, 1.8 GB without the comparison; 2.2 GB now)."""
    import graphsurgery.compare as compare
    import graphsurgery.nms_reads as nms_reads

    seen = []
    real = compare.compare_float_parts

    def recording(name, parts, **tolerances):
        seen.append((name, [actual.shape for actual, _ in parts]))
        return real(name, parts, **tolerances)

    monkeypatch.setattr(compare, "compare_float_parts", recording)
    rng = np.random.default_rng(70)
    twins = {"candidates": rng.random((3, 6, 4)), "class_scores": rng.random((3, 2, 6))}
    graph = [{"a": twins["candidates"][rows].astype(np.float32), "b": twins["class_scores"][rows].astype(np.float32)}
             for rows in (slice(0, 2), slice(2, 3))]
    results = nms_reads.reads_results(cut_reading_a_and_b(tmp_path), graph, twins)
    assert all(results) and [result.elements for result in results] == [72, 36]
    assert seen == [("candidates", [(2, 6, 4), (1, 6, 4)]), ("class_scores", [(2, 2, 6), (1, 2, 6)])]


def test_a_scalar_that_nms_reads_fails_as_a_shape_not_an_internal_error(tmp_path):
    """A hostile graph whose nms reads a scalar: numpy's "zero-dimensional arrays cannot be concatenated" was an
    internal error; it fails as a read of another shape."""
    from graphsurgery.nms_reads import reads_results

    twins = {"candidates": np.zeros((1, 6, 4)), "class_scores": np.zeros((1, 2, 6))}
    graph = [{"a": np.zeros((1, 6, 4), np.float32), "b": np.float32(0)}]
    results = reads_results(cut_reading_a_and_b(tmp_path), graph, twins)
    assert not any(results) and "[1, 6, 4] and [1]" in results[0].problem
