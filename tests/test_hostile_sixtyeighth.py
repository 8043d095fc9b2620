"""Hostile round 68: a detector's decode wrong where nms keeps nothing. Verify compared the detections (what nms
keeps) and the decoder probe's (some anchors scored), so a YOLOX grid entry swapped inside a level FAILed only at
the seeds whose probe drew it (anchors 37, 150, 330 and 395 of the zoo head's 420: 1 to 3 seeds of 7, never seed 0),
and a DFL level's stride × 0.99 only where a detection landed on it. Verify now also compares, at every anchor, the
candidates and class scores the patched graph's nms reads with the twins' (`nms_reads`), on the samples and on the
probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphsurgery.api import apply
from graphsurgery.verification import verify


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """(recipe, plain model, right patch) of the zoo YOLOv8's head as YOLOX, and of its raw head (DFL)."""
    from test_hostile_fortythird import recipe_for, transposed_head

    from modelkit import zoo_model

    folder = tmp_path_factory.mktemp("heads")
    v8 = zoo_model(folder / "v8.onnx", "yolov8-tiny", opset=17)
    plains = {"yolox": transposed_head(v8, "yolox", folder / "yolox.onnx"),
              "dfl": zoo_model(folder / "raw.onnx", "yolov8-tiny-raw", opset=17)}
    found = {}
    for fmt, plain in plains.items():
        recipe = recipe_for(fmt, folder)
        found[fmt] = recipe, plain, apply(recipe, plain, folder / f"{fmt}_right.onnx").output
    return found


def changed(right: Path, name: str, edit, path: Path) -> Path:
    """The right patch with its constant `name` changed by `edit`."""
    model = onnx.load(str(right))
    [tensor] = [tensor for tensor in model.graph.initializer if tensor.name == name]
    tensor.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(tensor).copy()), name))
    onnx.save(model, str(path))
    return path


def before_nms(report) -> list[str]:
    return [line for line in report.failures() if "before nms" in line]


@pytest.mark.parametrize("anchor", [37, 150, 330, 395])
def test_a_yolox_grid_wrong_inside_a_level_fails_at_the_default_seed(heads, tmp_path, anchor):
    """Round 61/64's leftover: a cell's column and row swapped at one anchor inside a level."""
    recipe, plain, right = heads["yolox"]

    def swap(grid: np.ndarray) -> np.ndarray:
        flat = grid.reshape(-1, 2)
        flat[anchor] = flat[anchor, ::-1]
        return grid

    wrong = changed(right, "graphsurgery/post/yolo_boxes/cells", swap, tmp_path / "wrong.onnx")
    report = verify(recipe, plain, patched=wrong, backends=["onnxruntime"])
    assert not report and any("output steps before nms: candidates" in line for line in before_nms(report)), \
        report.failures()


def test_a_dfl_level_stride_off_fails_before_nms(heads, tmp_path):
    recipe, plain, right = heads["dfl"]

    def middle_level(strides: np.ndarray) -> np.ndarray:
        levels = np.unique(strides)
        return np.where(strides == levels[1], strides * np.float32(0.99), strides).astype(strides.dtype)

    wrong = changed(right, "graphsurgery/post/dfl_boxes/stride", middle_level, tmp_path / "wrong.onnx")
    report = verify(recipe, plain, patched=wrong, backends=["onnxruntime"])
    failed = before_nms(report)
    assert not report and any("before nms: candidates" in line for line in failed), report.failures()
    assert any("probe output" in line for line in failed), failed  # the probe's head too


def test_class_scores_wrong_where_nothing_is_kept_fail(heads, tmp_path):
    """A score changed after the decode at one anchor, below every threshold (1e-3 added): no detection moves."""
    recipe, plain, right = heads["yolox"]
    model = onnx.load(str(right))
    makers = {name: node for node in model.graph.node for name in node.output}
    read = {name for node in model.graph.node if node.name.startswith("graphsurgery/post/nms/") for name in node.input}
    # what the nms reads from yolo_boxes, not its corners (a Concat)
    [scores] = [name for name in read if name in makers and makers[name].op_type != "Concat"
                and makers[name].name.startswith("graphsurgery/post/yolo_boxes/")]
    nudge = np.zeros((1, 80, 420), np.float32)
    nudge[0, 3, 200] = 1e-3
    model.graph.initializer.append(numpy_helper.from_array(nudge, "nudge"))
    first = next(index for index, node in enumerate(model.graph.node) if node.name.startswith("graphsurgery/post/nms/"))
    for node in model.graph.node[first:]:
        if node.name.startswith("graphsurgery/post/nms/"):
            node.input[:] = ["nudged" if name == scores else name for name in node.input]
    model.graph.node.insert(first, onnx.helper.make_node("Add", [scores, "nudge"], ["nudged"]))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
    assert not report and before_nms(report), report.failures()


@pytest.mark.parametrize("fmt", ["yolox", "dfl"])
def test_right_patches_pass_before_nms_on_samples_and_probe(heads, fmt):
    recipe, plain, right = heads[fmt]
    report = verify(recipe, plain, patched=right, backends=["onnxruntime"])
    assert report, report.failures()
    names = [pair.name for pair in report.before_nms]
    assert "onnxruntime: output steps before nms" in names and any("probe" in name for name in names), names
    assert all(len(pair.results) == 2 for pair in report.before_nms)
    assert report.to_dict()["before_nms"]


def test_a_patched_ir_is_said_to_be_compared_on_its_detections_alone(heads, tmp_path):
    """An IR cannot be cut where nms reads: no such row, and a note that says only the detections were compared."""
    from graphsurgery.irconvert import convert

    recipe, plain, right = heads["dfl"]
    ir = tmp_path / "right.xml"
    convert(right, ir)
    report = verify(recipe, plain, patched=ir, backends=["openvino"])
    assert report and report.before_nms == []
    assert any("a patched IR cannot be cut" in note and "only the detections were" in note for note in report.notes)


def test_what_nms_reads_of_another_shape_than_the_twins_fails_as_such(tmp_path):
    """A graph whose two tensors fit the twins' candidates and class scores neither way round fails each, saying
    both shapes, rather than comparing what does not correspond."""
    from graphsurgery.nms_reads import NmsCut, reads_results
    from graphsurgery.steps.base import Comparison

    cut = NmsCut(tmp_path / "cut.onnx", "output", np.dtype(np.float32), ("a", "b"), Comparison("float"))
    graph = [{"a": np.zeros((1, 5, 4), np.float32), "b": np.zeros((1, 2, 5), np.float32)}]
    twins = {"candidates": np.zeros((1, 6, 4)), "class_scores": np.zeros((1, 2, 6))}
    results = reads_results(cut, graph, twins)
    assert [result.output for result in results] == ["candidates", "class_scores"] and not any(results)
    assert "[1, 5, 4] and [1, 2, 5]" in results[0].problem and "[1, 6, 4]" in results[0].problem
