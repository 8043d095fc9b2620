"""Round 73: a review of rounds 69-71 (the current folder kept across user code, node-name scopes, what nms reads
a batch at a time, cuts that read what they are not fed, the crop positions compared exactly on 8,192 boxes). A
`--boxes` COCO annotation file whose image gives its width but no height (or its height but no width) skipped the
size check in silence, as round 69's width of "640" did, and eval-coco refused the same file; a `--patched` model
taking the recipe's `boxes` as float64, or a fixed number of them, was an internal error (verify feeds them as the
recipe makes them, and so does round 71's crop-positions cut, 8,192 at once); and guards that `compare._compared`'s
shortcut for identical floats reports what the full comparison reported, and that an output step's inputs at a
model's static batch are still taken."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
TOPDOWN = ROOT / "recipes" / "hrnet_coco_topdown.yaml"


def _annotation(path: Path, image: dict) -> Path:
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": PHOTO.name, **image}],
                                "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 200, 300],
                                                 "category_id": 1}], "categories": []}))
    return path


@pytest.mark.parametrize(("given", "missing"), [("width", "height"), ("height", "width")])
def test_boxes_of_an_annotation_file_whose_image_gives_one_side_only_are_refused(tmp_path, given, missing):
    """Was: the image's size was not checked at all (`Boxes.sizes` empty), so a folder of resized copies was cropped
    at the annotation's pixels, exit 0; eval-coco refused the file ("has height None")."""
    from graphsurgery.boxes import load_boxes

    boxes = _annotation(tmp_path / "ann.json", {given: 640})
    with pytest.raises(GraphsurgeryError, match=rf"'astronaut.jpg' has a {given} but no {missing}") as caught:
        load_boxes(boxes)
    assert caught.value.path == str(boxes)
    assert "or neither" in caught.value.fix


def test_boxes_of_an_annotation_file_giving_both_sides_or_neither_are_read(tmp_path):
    """Guards unchanged behaviour (passes on the code before too): both sides are the size checked, neither none."""
    from graphsurgery.boxes import load_boxes

    assert load_boxes(_annotation(tmp_path / "both.json", {"width": 512, "height": 512})).sizes == {
        PHOTO.name: (512, 512)}
    assert load_boxes(_annotation(tmp_path / "neither.json", {})).sizes == {}


EDGES = np.array([0.0, -0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 1e-45, 3e38], np.float32)


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float32, np.float64), (np.float64, np.float32)])
def test_identical_floats_report_what_the_full_comparison_reports(dtypes):
    """Guards round 71's shortcut (passes on the code before too): identical floats, NaN against NaN, ±inf and
    -0.0 against 0.0 report what the element-wise comparison reports, and one NaN or one ulp apart is still
    measured in full."""
    from graphsurgery.compare import compare_float_parts, compare_floats

    expected = EDGES.astype(dtypes[1])
    actual = np.where(expected == 0, -expected, expected).astype(dtypes[0])  # -0.0 against 0.0
    finite = expected[np.isfinite(expected)].astype(np.float64)
    for result in (compare_floats("x", actual[None], expected[None], atol=0.0, rtol=0.0),
                   compare_float_parts("x", [(actual[:4], expected[:4]), (actual[4:], expected[4:])], atol=0.0,
                                       rtol=0.0)):
        assert result and result.elements == EDGES.size and result.failed == result.nan_mismatches == 0
        assert (result.max_abs, result.max_rel, result.passing_atol, result.passing_rtol) == (0.0, 0.0, 0.0, 0.0)
        assert result.largest == float(np.abs(finite).max()) and not any(result.worst_index)
    moved = expected.copy()
    moved[2] = np.nextafter(moved[2], np.inf)
    assert not compare_floats("x", actual, moved, atol=0.0, rtol=0.0)
    moved[4] = 1.0
    assert compare_floats("x", expected, moved, atol=1.0, rtol=0.0).nan_mismatches == 1


@pytest.fixture(scope="module")
def topdown(plain, tmp_path_factory) -> Path:
    """`plain` patched with the top-down recipe."""
    from graphsurgery.api import apply

    return apply(TOPDOWN, plain, tmp_path_factory.mktemp("boxes73") / "right.onnx").output


def _in_float64(model: onnx.ModelProto) -> None:
    """`boxes` taken as float64 and cast to float32 at once: the same crops."""
    next(value for value in model.graph.input if value.name == "boxes").type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in model.graph.node:
        node.input[:] = ["boxes_f32" if name == "boxes" else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("Cast", ["boxes"], ["boxes_f32"], to=TensorProto.FLOAT, name="cast"))


def _twenty(model: onnx.ModelProto) -> None:
    """`boxes` fixed at 20 (as a tool that fixes every dynamic dim leaves them)."""
    dim = next(value for value in model.graph.input if value.name == "boxes").type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = 20


@pytest.mark.parametrize(("edit", "taken"), [(_in_float64, "float64 [?, 4]"), (_twenty, "float32 [20, 4]")],
                         ids=["float64", "twenty boxes"])
def test_a_patched_model_taking_the_recipes_boxes_otherwise_is_refused(plain, topdown, tmp_path, edit, taken):
    """Was: exit 3, "internal error (InvalidArgument: … Unexpected input data type. Actual: (tensor(float)) ,
    expected: (tensor(double)))" or "… Got invalid dimensions for input: boxes … Got: 3 Expected: 20" — "this is a
    graphsurgery bug" (the image input was checked against the recipe, not the inputs its steps add)."""
    model = onnx.load(str(topdown))
    edit(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    one_line_exit_2(invoke("verify", TOPDOWN, plain, "--patched", tmp_path / "edited.onnx"),
                    "edited.onnx", f"takes {taken} at 'boxes'", "this recipe takes float32 [N, 4]")


def test_a_patched_model_taking_an_output_steps_inputs_at_its_static_batch_is_verified(tiny_pose_models, tmp_path):
    """Guards what the check above must let through (passes on the code before too): `to_image` mode original on a
    model of batch 1 takes `center` and `scale` as [1, 2], the recipe's [batch, 2] at the model's batch."""
    from graphsurgery.api import apply
    from graphsurgery.verification import verify

    recipe, plain = ROOT / "recipes" / "hrnet_coco_pose_image.yaml", tiny_pose_models[(17, False)]
    patched = apply(recipe, plain, tmp_path / "image.onnx").output
    assert [dim.dim_value for value in onnx.load(str(patched)).graph.input if value.name == "center"
            for dim in value.type.tensor_type.shape.dim] == [1, 2]
    assert verify(recipe, plain, patched=patched, backends=("onnxruntime",), random=2)
