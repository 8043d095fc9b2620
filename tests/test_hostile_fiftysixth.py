"""Hostile round 56: the day's detector checks on heads that are not float32.

Round 56 attacked the corner tolerance of matched detections, the probe at every image size, the exact-half sizes
of `side_rounding: round` and eval-coco's inputs with right patches of quirky models and mutants of them. A
detector head cast to float16 rounds its coordinates where the head has them, so through a letterbox's padding and a
downscale its boxes moved up to 3.7 caller pixels on OpenVINO (which computes the cast as no rounding), a box a few
pixels wide lost IoU 0.99, and a box all but in the padding was kept on one side only: right patches FAILed. A
float16 or float64 head had no decoder probe at all, so a patch suppressing at another IoU PASSed. And the sizes of
exact halves were left out wherever verify's fixed sizes already told floor, round and ceil apart, so a geometry
record rounding halves up PASSed again. An edited node of a `--patched` file was an internal error (exit 3). Each
test here failed before its fix; the wrong patches the checks were made for still fail.
"""

from __future__ import annotations

import functools
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, numpy_helper

from detectorkit import DETECTOR_RECIPE, wider, with_nms, yolo_head
from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.verification import VerifyReport, verify

from modelkit import POSE_LETTERBOX, pose_model

ROOT = Path(__file__).resolve().parent.parent
PROBE = "output steps on a probe output"


def detector(path: Path, head: int, *, h: int = 48, w: int = 320, anchors: int = 200, v5: bool = False) -> Path:
    """A YOLOv8-shaped head [1, 4 + 3, A] of type `head` for an h × w image: boxes of all sizes (a few pixels wide
    too) over the whole image, moved by its 2 × 2 means; class scores a sigmoid of them (many detections).
    `v5`: YOLOv5's layout (`detectorkit.yolo_head`)."""
    return yolo_head(path, h=h, w=w, classes=3, anchors=anchors, grid=2,
                     bounds=((0, w), (0, h), (2, w / 3), (2, h / 3)), head=head, v5=v5)


@pytest.fixture(scope="module")
def right_head(tmp_path_factory):
    """`right_head(head)`: the detector of a head type, its right patch and verify's report on that patch, made once
    per type (two tests read the float16 one)."""
    folder = tmp_path_factory.mktemp("heads")

    @functools.cache
    def made(head: int) -> tuple[Path, Path, VerifyReport]:
        plain = detector(folder / f"head_{head}.onnx", head)
        right = apply(DETECTOR_RECIPE, plain, folder / f"right_{head}.onnx").output
        return plain, right, verify(DETECTOR_RECIPE, plain, patched=right)
    return made


def test_a_float16_head_is_judged_by_its_own_step_in_the_callers_pixels(right_head, tmp_path):
    """Was: corners within 2^-10 × the box's largest coordinate in the caller's pixels, and IoU ≥ 0.99; a 48 × 320
    model letterboxes every image with wide padding, so a box near the caller's origin carries the float16 rounding
    of a head coordinate of up to 320 (0.64 px at the random sizes, 3.7 px on 4000 px photos), and a box a few pixels
    wide lost IoU 0.99: '219 detection(s) on one side only' on OpenVINO for the right patch. Now each corner may lie
    a float16 step of its anchor's head coordinates, carried to the caller's pixels, from the other side. A box one
    edge 0.5 % wider still fails."""
    plain, right, report = right_head(TensorProto.FLOAT16)
    assert report, report.failures()
    assert not verify(DETECTOR_RECIPE, plain, patched=wider(right, tmp_path / "wider.onnx"), random=4)


@pytest.mark.parametrize("head", [TensorProto.DOUBLE, TensorProto.FLOAT16], ids=["float64", "float16"])
def test_a_head_of_float16_or_float64_is_probed(right_head, tmp_path, head):
    """Was: the decoder probe was written for float32 network outputs only and left any other out without a note,
    so a patch suppressing at IoU 0.75 for 0.7 (or keeping scores above 0.3 for 0.25) PASSed on a float64 head.
    The probe is now written in float32 and fed in the head's own type; right patches pass it."""
    plain, _, report = right_head(head)
    assert report and report.probes, report.failures()
    for change in ({"iou_threshold": 0.75}, {"score_threshold": 0.3}):
        wrong = apply(with_nms(tmp_path, **change), plain, tmp_path / "wrong.onnx", force=True).output
        report = verify(DETECTOR_RECIPE, plain, patched=wrong, backends=("onnxruntime",))
        assert not report and [line for line in report.failures() if PROBE in line], (head, change)


def test_the_exact_halves_lead_even_where_the_fixed_sizes_tell_floor_round_and_ceil_apart(tmp_path):
    """Was: the sizes of exact halves (`Resize._half_sizes`) were only fed where 400×300 and 353×481 did not already
    tell floor, round and ceil apart; for a 33 × 17 letterbox they did, so no size made the kept side an integer and
    a half, and a patch whose geometry record (or resize) rounded halves by another rule (its Mod made a Div)
    PASSed `verify` and `--random 4`. Halves up and down now count among the roundings the fixed sizes must tell
    apart."""
    plain = pose_model(tmp_path / "pose.onnx", input_hw=(33, 17), stride=1, joints=5)
    (tmp_path / "recipe.yaml").write_text(POSE_LETTERBOX)
    recipe = tmp_path / "recipe.yaml"
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    report = verify(recipe, plain, patched=right, random=4)
    assert report, report.failures()
    for step in ("geometry", "resize"):
        model = onnx.load(str(right))
        next(node for node in model.graph.node if node.name == f"graphsurgery/pre/{step}/Mod").op_type = "Div"
        onnx.save(model, str(tmp_path / "wrong.onnx"))
        assert not verify(recipe, plain, patched=tmp_path / "wrong.onnx", random=2, backends=("onnxruntime",)), step


def test_a_box_all_but_in_the_padding_leaves_an_order_of_ties_to_explain_the_rest(tmp_path):
    """Was: a float16 YOLOv5 head gave an anchor two class scores that round to one float16 value (its box in the
    first class for the twins, in the other on OpenVINO, which computes the cast as no rounding), and in the same
    image a box 0.003 px inside the letterbox padding that the twins drop; the order of ties, which explains the
    class, found no candidate for that box, so both rows were real mismatches of the right patch. Now such a box is
    a near tie and the order of ties leaves it out. A box one edge 0.5 % wider still fails."""
    plain = detector(tmp_path / "v5.onnx", TensorProto.FLOAT16, h=64, w=96, anchors=150, v5=True)
    recipe = with_nms(tmp_path, "v5")
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    report = verify(recipe, plain, patched=right)
    assert report, report.failures()
    assert not verify(recipe, plain, patched=wider(right, tmp_path / "wider.onnx"), random=4)


def test_a_spliced_node_edited_in_a_patched_file_fails_in_one_line_naming_it(tmp_path):
    """Was: verify cuts a `--patched` file to its input steps and runs the copy first; that copy, written by this
    process, counted as made here, so a graphsurgery node the user's file holds edited (a Gather index out of range
    at run time) was "internal error … this is a graphsurgery bug", exit 3, where the file itself gives one line.
    The copy is made here only when the file is; the line names the file."""
    plain = pose_model(tmp_path / "pose.onnx", input_hw=(33, 17), stride=1, joints=5)
    (tmp_path / "recipe.yaml").write_text(POSE_LETTERBOX)
    right = apply(tmp_path / "recipe.yaml", plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    axis = next(tensor for tensor in model.graph.initializer if tensor.name == "graphsurgery/pre/resize/channel_axis")
    axis.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(axis) + 1, axis.name))
    onnx.save(model, str(tmp_path / "edited.onnx"))
    with pytest.raises(GraphsurgeryError, match="onnxruntime cannot run the model") as raised:
        verify(tmp_path / "recipe.yaml", plain, patched=tmp_path / "edited.onnx", random=1)
    assert "edited.onnx" in str(raised.value)
