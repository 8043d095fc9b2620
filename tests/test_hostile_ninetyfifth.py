"""Round 95: wrong patches that show only at a batch of two or more, against round 94's companion samples.

Round 94 fed each sample of a dynamic-batch model first of two (itself, then a companion) and compared its rows.
Found: a patch reading row 0 of the batch (`x[0]` broadcast, a CumSum) read the sample's own row; one answering
[1, 1] to two samples (a Gather or Slice of row 0) was cut to the sample's [1, 1]; and a model whose exporter named
the outputs' batch otherwise than the input's (Paddle2ONNX, RapidOCR's own models) was fed one sample a call, so
round 94's top-1 of no kept dim still PASSed there, as beside an input of fixed dims (a temperature). Now the sample
goes second of four, a declared output of other rows fails, an output of another dynamic first dim is judged by its
rows, and inputs of fixed dims are fed whole with the companions (`batched`). Also: a patched model's extra
output of no dims was an internal error where verify joins the calls' answers (`samples.concat`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import helper

from graphsurgery.api import apply
from graphsurgery.benchmark import Settings, run_bench
from graphsurgery.verification import verify

from modelkit import pose_model
from quirkykit import classifier

ROOT = Path(__file__).resolve().parent.parent
OCR_CLS = ROOT / "recipes" / "rapidocr_cls.yaml"


def _ending(right: Path, target: str, nodes, constants: dict[str, np.ndarray], path: Path) -> Path:
    """The right patch with `nodes` (reading `pre`) inserted before its output `target`; the nodes that read
    `target` inside the graph (the decoding steps, of kept maps) read `pre`, the right value."""
    model = onnx.load(str(right))
    for node in model.graph.node:
        node.output[:] = ["pre" if name == target else name for name in node.output]
        node.input[:] = ["pre" if name == target else name for name in node.input]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(value, name) for name, value in constants.items())
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _no_kept_dim(right: Path, path: Path) -> Path:
    """Round 94's mutant of `right`: topk's ReduceMax keeping no dim (right at a batch of 1)."""
    model = onnx.load(str(right))
    reduction = next(n for n in model.graph.node if n.name == "graphsurgery/post/topk/ReduceMax")
    next(a for a in reduction.attribute if a.name == "keepdims").i = 0
    onnx.save(model, str(path))
    return path


def _top_1_of_no_kept_dim_fails(recipe: Path, plain: Path, right: Path, tmp_path: Path) -> None:
    """Round 94's mutant FAILs on its label or score."""
    mutant = _no_kept_dim(right, tmp_path / "mutant.onnx")
    report = verify(recipe, plain, patched=mutant, backends=["onnxruntime"], random=3)
    assert not report
    assert all(": label: " in line or ": score: " in line for line in report.failures()), report.failures()


ROW_0 = {"gather": ([helper.make_node("Gather", ["pre", "row"], ["score"], axis=0)], {"row": np.array([0])}),
         "slice": ([helper.make_node("Slice", ["pre", "start", "end", "axis"], ["score"])],
                   {"start": np.array([0]), "end": np.array([1]), "axis": np.array([0])})}


@pytest.mark.parametrize("kind", sorted(ROW_0))
def test_an_output_of_one_row_for_two_samples_fails(ocr_cls, tmp_path, kind):
    """Was a PASS: a Gather or Slice of row 0 answers [1, 1] to two samples for its declared [N, 1]; the pair's
    answer was cut to its first row, the sample's [1, 1]. A declared output of other rows than the call's fails."""
    plain, right = ocr_cls
    nodes, constants = ROW_0[kind]
    mutant = _ending(right, "score", nodes, constants, tmp_path / "mutant.onnx")
    report = verify(OCR_CLS, plain, patched=mutant, backends=["onnxruntime"], random=3)
    assert not report
    assert report.failures() and all("score: 1 row for the 4 rows of one call" in line
                                     for line in report.failures()), report.failures()


ROW_0_READERS = {
    "broadcast": ("score", [helper.make_node("Gather", ["pre", "row"], ["first"], axis=0),
                            helper.make_node("Shape", ["pre"], ["shape"]),
                            helper.make_node("Expand", ["first", "shape"], ["score"])], {"row": np.array([0])}),
    "cumsum": ("label", [helper.make_node("CumSum", ["pre", "axis"], ["label"])], {"axis": np.array(0)}),
}


@pytest.mark.parametrize("kind", sorted(ROW_0_READERS))
def test_a_patch_reading_row_0_of_the_batch_fails(ocr_cls, tmp_path, kind):
    """Was a PASS: `x[0]` broadcast to every row, or a CumSum over the batch, is right for the batch's first sample,
    and the sample was fed first; it goes second of four now."""
    plain, right = ocr_cls
    target, nodes, constants = ROW_0_READERS[kind]
    mutant = _ending(right, target, nodes, constants, tmp_path / "mutant.onnx")
    report = verify(OCR_CLS, plain, patched=mutant, backends=["onnxruntime"], random=3)
    assert not report
    assert all(f": {target}: " in line for line in report.failures()), report.failures()


@pytest.fixture(scope="module")
def paddle_named(tmp_path_factory) -> tuple[Path, Path]:
    """The stand-in, its batch named as Paddle2ONNX names RapidOCR's classifier's: `x_0` in, another name out."""
    folder = tmp_path_factory.mktemp("paddle-named")
    plain = classifier(folder / "plain.onnx", opset=13, ir_version=7, hw=(48, 192), classes=2, seed=1)
    model = onnx.load(str(plain))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "x_0"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "save_infer_model/scale_0.tmp_1_0"
    onnx.save(model, str(plain))
    return plain, apply(OCR_CLS, plain, folder / "right.onnx").output


def test_the_outputs_batch_named_otherwise_is_still_fed_with_companions(paddle_named, tmp_path):
    """Was a PASS: round 94's top-1 whose ReduceMax keeps no dim, on a model whose outputs' batch has another name
    than its input's (RapidOCR's own classifier): it was fed one sample a call. Its outputs are judged by their
    rows now, and the right patch still PASSes."""
    plain, right = paddle_named
    assert verify(OCR_CLS, plain, patched=right, backends=["onnxruntime"], random=3)
    _top_1_of_no_kept_dim_fails(OCR_CLS, plain, right, tmp_path)
    # an output of one row for four samples, beside probabilities of a row per sample under its dim's name
    nodes, constants = ROW_0["slice"]
    mutant = _ending(right, "score", nodes, constants, tmp_path / "row_0.onnx")
    report = verify(OCR_CLS, plain, patched=mutant, backends=["onnxruntime"], random=3)
    assert not report
    assert all("score: 1 row for the 4 rows" in line for line in report.failures()), report.failures()


def test_a_model_with_an_input_of_fixed_dims_is_fed_with_companions(tmp_path):
    """Was a PASS: any input beside the image (a temperature [1]) kept the model from companions, and round 94's
    top-1 whose ReduceMax keeps no dim PASSed there. An input of fixed dims is fed whole with them now; the right
    patch still PASSes."""
    plain = classifier(tmp_path / "plain.onnx", opset=13, ir_version=7, hw=(48, 192), classes=2, seed=1,
                       temperature_input=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(OCR_CLS.read_text().replace("input:\n  tensor:", "input:\n  target: 'image:0'\n  tensor:", 1))
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    assert verify(recipe, plain, patched=right, backends=["onnxruntime"], random=3)
    _top_1_of_no_kept_dim_fails(recipe, plain, right, tmp_path)


def test_a_scalar_output_beside_the_recipe_s_is_no_internal_error(ocr_cls, tmp_path):
    """Was an internal error (exit 3): a patched model with an extra output of no dims (a ReduceSum of its scores)
    was numpy's "zero-dimensional arrays cannot be concatenated" where verify joins the calls' answers
    (`samples.concat`); it is one value a call, not compared, and the right patch PASSes."""
    plain, right = ocr_cls
    model = onnx.load(str(right))
    model.graph.node.append(helper.make_node("ReduceSum", ["score"], ["total"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("total", onnx.TensorProto.FLOAT, []))
    onnx.save(model, str(tmp_path / "scalar.onnx"))
    report = verify(OCR_CLS, plain, patched=tmp_path / "scalar.onnx", backends=["onnxruntime"], random=3)
    assert report, report.failures()
    assert any("'total'" in note and "not compared" in note for note in report.notes), report.notes


def test_bench_prices_bf16_beside_a_scalar_output(tmp_path):
    """Was an internal error (exit 3): bench's bf16 price joined each output's answers with numpy, and a plain
    model's extra output of no dims (kept in the patched model) was "zero-dimensional arrays cannot be
    concatenated" (`samples.joined`, as verify's)."""
    plain = pose_model(tmp_path / "plain.onnx", dynamic_batch=True)
    model = onnx.load(str(plain))
    model.graph.node.append(helper.make_node("ReduceSum", ["heatmaps"], ["total"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("total", onnx.TensorProto.FLOAT, []))
    onnx.save(model, str(plain))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((ROOT / "recipes" / "hrnet_coco_pose.yaml").read_text().replace(
        "output:\n", "output:\n  target: heatmaps\n", 1))
    result = run_bench(recipe, plain, Settings(iterations=2, warmup=1))
    assert result.pipelines


def _batch_of_one(path: Path, first_dim: int | None) -> Path:
    """The stand-in whose input declares a named batch but whose logits are reshaped to [1, 2] inside (an export
    of batch 1), the logits declared [first_dim, 2] (None: unnamed)."""
    plain = classifier(path, opset=13, ir_version=7, hw=(48, 192), classes=2, seed=1)
    model = onnx.load(str(plain))
    logits = model.graph.output[0]
    for node in model.graph.node:
        node.output[:] = ["pre" if name == logits.name else name for name in node.output]
    model.graph.node.append(helper.make_node("Shape", ["pre"], ["shape"]))
    model.graph.node.append(helper.make_node("Slice", ["shape", "one", "two"], ["classes"]))
    model.graph.node.append(helper.make_node("Concat", ["one", "classes"], ["one_row"], axis=0))
    model.graph.node.append(helper.make_node("Reshape", ["pre", "one_row"], [logits.name]))
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.array([1]), "one"),
                                    onnx.numpy_helper.from_array(np.array([2]), "two")])
    logits.type.tensor_type.shape.dim[0].Clear()
    if first_dim is not None:
        logits.type.tensor_type.shape.dim[0].dim_value = first_dim
    onnx.save(model, str(path))
    return path


def test_a_model_of_batch_1_under_a_named_input_batch_is_fed_alone(tmp_path):
    """Was refused (exit 2, "cannot run the model") since round 94: the input's batch is named, every output's
    first dim 1, and verify fed the pair the model cannot run. A model none of whose outputs is declared to follow
    the batch is fed one sample a call where it runs no batch (also with its outputs' first dim unnamed, judged by
    rows: on OpenVINO, whose compiled model failed every later shape after one failure); the right patch PASSes."""
    for first_dim in (1, None):
        plain = _batch_of_one(tmp_path / f"plain_{first_dim}.onnx", first_dim)
        right = apply(OCR_CLS, plain, tmp_path / f"right_{first_dim}.onnx").output
        report = verify(OCR_CLS, plain, patched=right, backends=["onnxruntime", "openvino"], random=3)
        assert report, (first_dim, report.failures())


def test_an_ir_given_with_patched_is_fed_with_companions(ocr_cls, tmp_path):
    """After round 95: an OpenVINO IR given with `--patched` was fed one sample a call, and round 94's top-1 of no
    kept dim, converted, PASSed as an IR. Its partial shapes name no dims: each output of a dynamic first dim is
    judged by its rows. The right patch's IR still PASSes."""
    from graphsurgery.irconvert import convert_ir

    plain, right = ocr_cls
    for name, source in (("right", right), ("mutant", _no_kept_dim(right, tmp_path / "mutant.onnx"))):
        ir = convert_ir(source, tmp_path / f"{name}.xml").xml
        report = verify(OCR_CLS, plain, patched=ir, backends=["openvino"], random=3)
        assert bool(report) == (name == "right"), (name, report.failures())


POSE_IMAGE = ROOT / "recipes" / "hrnet_coco_pose_image.yaml"


def _flip_test_recipe(path: Path, source: Path) -> Path:
    """`source` with the flip test: `flip_test` last among the input steps, `flip_average` first among the output's."""
    text = source.read_text()
    text = text.replace("    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n",
                        "    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n"
                        "    - flip_test: {}\n")
    path.write_text(text.replace("    - heatmap_argmax: {}\n", "    - flip_average: {}\n    - heatmap_argmax: {}\n"))
    return path


@pytest.fixture(scope="module")
def pose_image(tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """Per recipe (the shipped one of keypoints in the original image, taking a crop's `center` and `scale`, and
    it with the flip test): the recipe, a dynamic-batch plain model, its right patch."""
    folder = tmp_path_factory.mktemp("pose_image")
    plain = pose_model(folder / "plain.onnx", dynamic_batch=True)
    made = {}
    for name, recipe in (("image", POSE_IMAGE), ("flip", _flip_test_recipe(folder / "flip.yaml", POSE_IMAGE))):
        made[name] = recipe, plain, apply(recipe, plain, folder / f"right_{name}.onnx").output
    return made


def _reading_row_0(name: str, halves: int) -> list:
    """Nodes that give every row of `pre` row 0's value, as `name`; of each half's row 0 where `halves` is 2 (a
    flip test's maps: row 0 of all of them differed from the mirror's at once, alone)."""
    parts = [f"part{index}" for index in range(halves)]
    nodes = [helper.make_node("Split", ["pre"], parts, axis=0)] if halves > 1 else []
    for part, held in zip(parts, parts if halves > 1 else ["pre"]):
        nodes += [helper.make_node("Gather", [held, "row"], [f"{part}_first"], axis=0),
                  helper.make_node("Shape", [held], [f"{part}_shape"]),
                  helper.make_node("Expand", [f"{part}_first", f"{part}_shape"], [f"{part}_read" if halves > 1
                                                                                  else name])]
    return nodes + ([helper.make_node("Concat", [f"{part}_read" for part in parts], [name], axis=0)]
                    if halves > 1 else [])


@pytest.mark.parametrize("recipe", ["image", "flip"])
@pytest.mark.parametrize("target", ["keypoints", "scores", "heatmaps"])
def test_a_patch_reading_row_0_beside_center_and_scale_or_after_a_flip_test_fails(pose_image, tmp_path, recipe,
                                                                                   target):
    """Was a PASS: beside inputs of a row per crop (`center`, `scale`), and after a flip test, each sample was fed
    alone, so an output (or the kept maps) reading row 0 of the batch was right (round 95's leftover: 22 such
    endings PASSed on `hrnet_coco_pose_image`). The inputs of a row per sample get companions of their own now, and
    the kept maps after a flip test are cut in each half (the images', then their mirrors'). The right patch
    PASSes on both backends."""
    recipe_path, plain, right = pose_image[recipe]
    halves = 2 if recipe == "flip" and target == "heatmaps" else 1
    mutant = _ending(right, target, _reading_row_0(target, halves), {"row": np.array([0])}, tmp_path / "mutant.onnx")
    report = verify(recipe_path, plain, patched=mutant, backends=["onnxruntime"], random=3)
    assert not report
    if target == "heatmaps":  # wrong maps failed at the decoder probe already, on the outputs decoded from them
        assert any(f"unpatched → patched: {target}: " in line for line in report.failures()), report.failures()
    else:
        assert all(f": {target}: " in line for line in report.failures()), report.failures()
    right_report = verify(recipe_path, plain, patched=right, backends=["onnxruntime", "openvino"], random=3)
    assert right_report, right_report.failures()


@pytest.mark.parametrize("extra", ["center", "scale"])
def test_a_patch_reading_another_crop_s_center_or_scale_fails(pose_image, tmp_path, extra):
    """Was a PASS: a patch that maps every crop's keypoints with the first crop's `center` (or `scale`) is right
    for one crop, and verify fed one crop a call beside those inputs. Their companions are other values (the
    mirror of the image's companion would keep a centre's two coordinates)."""
    recipe, plain, right = pose_image["image"]
    model = onnx.load(str(right))
    for node in model.graph.node:
        node.input[:] = ["pre" if name == extra else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("Gather", [extra, "row"], ["first"], axis=0))
    model.graph.node.insert(1, helper.make_node("Shape", [extra], ["shape"]))
    model.graph.node.insert(2, helper.make_node("Expand", ["first", "shape"], ["pre"]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0]), "row"))
    onnx.save(model, str(tmp_path / "mutant.onnx"))
    report = verify(recipe, plain, patched=tmp_path / "mutant.onnx", backends=["onnxruntime"], random=3)
    assert not report
    assert all(": keypoints: " in line for line in report.failures()), report.failures()


def test_center_and_scale_after_flip_average_are_declared_under_the_crops_batch(pose_image):
    """Was: after flip_average, `to_image`'s `center` and `scale` were declared under the first dim of the maps
    (twice the crops with the flip test), so the keypoints' batch was unknown (`unk__…`), and the keypoints
    judged by their rows alone. They are declared under the batch of the maps flip_average gives."""
    _, _, right = pose_image["flip"]
    model = onnx.load(str(right))
    first = {value.name: value.type.tensor_type.shape.dim[0].dim_param
             for value in (*model.graph.input, *model.graph.output)}
    assert first["center"] == first["scale"] == first["keypoints"] == first["scores"] == first["input"], first
    assert first["heatmaps"] != first["keypoints"]  # twice as many rows: the crops, then their mirrors
