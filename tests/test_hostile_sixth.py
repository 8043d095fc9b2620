"""A sixth round of hostile or careless inputs (a red-team run), and the fifth round's leftovers: annotation files
with a byte order mark, models saved with every tensor external, an empty `run -o`, a torch network whose forward
fails, COCO boxes whose image ids or names do not add up, and the accuracy control's wording under COCO AP. Each
ended in a wrong refusal, an internal error or a vague line before it was fixed; now each works or is one line and
exit 2, and no input changes."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError

from conftest import RECIPES, ROOT
from examples.synthetic_coco import write_coco_set
from modelkit import pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"




@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco6")
    annotations = write_coco_set(folder / "images", images=2, seed=0)
    return annotations, folder / "images"


def snapshot(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# --- leftover 1: a COCO annotation file with a byte order mark ----------------------------------------------------

def test_annotations_with_a_byte_order_mark_are_read(coco, tmp_path):
    """pycocotools' json.load refused it: 'not a COCO annotation file (JSONDecodeError)'."""
    from graphsurgery.coco import annotated_people

    annotations, images = coco
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + annotations.read_bytes())
    _, ids, people = annotated_people(bom, images)
    _, plain_ids, plain_people = annotated_people(annotations, images)
    assert ids == plain_ids and people == plain_people and len(people) > 0


def test_detections_with_a_byte_order_mark_are_read_and_a_json_string_is_no_file_name(coco, tmp_path):
    """loadRes took a JSON string as the name of a file to open."""
    from graphsurgery.coco import annotated_people

    annotations, images = coco
    data = json.loads(annotations.read_text())
    detections = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
                  for a in data["annotations"]]
    path = tmp_path / "det.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(detections).encode())
    assert len(annotated_people(annotations, images, path)[2]) == len(detections)
    path.write_text(json.dumps(str(annotations)))
    with pytest.raises(GraphsurgeryError, match="not COCO detection results"):
        annotated_people(annotations, images, path)


# --- leftover 2: every tensor in external data, shape constants included -------------------------------------------

def all_external(folder):
    """A valid model whose Reshape's shape is saved as external data (size_threshold=0): onnx's shape inference
    and onnxruntime cannot read it from there."""
    folder.mkdir()
    path = folder / "m.onnx"
    proto = onnx.load(str(pose_model(path)))
    graph = proto.graph
    graph.node[0].output[0] = "conv_out"
    graph.initializer.append(numpy_helper.from_array(np.array([1, 17, 64, 48], np.int64), "shape"))
    graph.node.append(helper.make_node("Reshape", ["conv_out", "shape"], ["heatmaps"]))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    return path


def test_a_model_with_every_tensor_external_is_patched_and_verified(tmp_path):
    """It was refused as failing the ONNX checker ('re-export it'), and onnxruntime could not load it either."""
    model = all_external(tmp_path / "m")
    before = snapshot(tmp_path)
    out = tmp_path / "out" / "p.onnx"
    out.parent.mkdir()
    assert invoke("apply", CROP, model, "-o", out).exit_code == 0
    result = invoke("verify", CROP, model, "--patched", out, "--random", 2, "--backends", "onnxruntime")
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    assert snapshot(tmp_path / "m") == {k: v for k, v in before.items()}
    shape = next(t for t in onnx.load(str(out), load_external_data=False).graph.initializer if t.name == "shape")
    assert shape.data_location == onnx.TensorProto.DEFAULT  # small tensors come out inline


def test_an_output_never_lands_on_a_data_file_whose_tensors_were_read_inline(tmp_path):
    from graphsurgery.modelio import load_model, model_files

    model = all_external(tmp_path / "m")
    assert model.parent / "m.data" in model_files(load_model(model))
    before = (model.parent / "m.data").read_bytes()
    one_line_exit_2(invoke("apply", CROP, model, "-o", model.parent / "m.data", "--force"), "overwrite an input")
    assert (model.parent / "m.data").read_bytes() == before


# --- leftover 3: run -o '' --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["run", "{patched}", PHOTO, "-o", ""],
                                  ["eval-coco", CROP, "{plain}", "--ann", "a.json", "--images", ".", "--results", " "]])
def test_an_empty_output_folder_is_refused(patched, plain, tmp_path, monkeypatch, args):
    """`run -o "$OUT"` with OUT unset wrote its results into the current folder."""
    monkeypatch.chdir(tmp_path)
    result = invoke(*[str(a).format(patched=patched, plain=plain) for a in args])
    assert result.exit_code == 2 and "names no folder to write into" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


# --- leftover 4: a torch network whose forward pass fails ----------------------------------------------------------

TORCH_NETS = '''
import torch


class Boom(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("size mismatch in layer3")


class Flat(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 5)


def boom():
    return Boom()


def flat():
    return Flat()
'''


@pytest.mark.parametrize("function, needles", [
    ("boom", ["sixthnets:boom()'s network raised RuntimeError: size mismatch in layer3"]),
    ("flat", ["shape [1, 5]", "output 'heatmaps' is [?, 17, 64, 48]"]),
])
def test_a_torch_network_whose_forward_fails_is_the_users_to_fix(plain, tmp_path, monkeypatch, function, needles):
    pytest.importorskip("torch")
    (tmp_path / "sixthnets.py").write_text(TORCH_NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("bench", CROP, plain, "--torch", f"sixthnets:{function}", "--iterations", 1, "--warmup", 0)
    one_line_exit_2(result, "the torch network (--torch)", *needles)


# --- leftover 5: COCO boxes whose ids or names do not add up -------------------------------------------------------

def coco_boxes(images, annotations):
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


ASTRONAUT = {"id": 1, "file_name": "astronaut.jpg", "width": 512, "height": 512}
BOX = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 200]}


@pytest.mark.parametrize("data, needles", [
    (coco_boxes([ASTRONAUT], [{**BOX, "image_id": 2}]),
     ["annotation 7 is of image id 2, which 'images' does not list", "add that image"]),
    (coco_boxes([ASTRONAUT, {**ASTRONAUT, "file_name": "other.jpg"}], [BOX]),
     ["image id 1 is listed twice in 'images'", "its own id"]),
    (coco_boxes([ASTRONAUT, {**ASTRONAUT, "id": 2, "file_name": "./astronaut.jpg"}], [BOX, {**BOX, "image_id": 2}]),
     ["'astronaut.jpg' and './astronaut.jpg' name the same image", "under one name"]),
    ({"astronaut.jpg": [[1, 1, 50, 50]], "./astronaut.jpg": [[5, 5, 50, 50]]},
     ["'astronaut.jpg' and './astronaut.jpg' name the same image"]),
])
def test_boxes_whose_image_ids_or_names_do_not_add_up(patched, tmp_path, data, needles):
    """A missing id was 'unexpected structure (KeyError: 2)'; an id listed twice, or one image under two names,
    merged or dropped boxes silently."""
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(data))
    result = invoke("run", patched, PHOTO, "--boxes", boxes, "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, "boxes.json", *needles)
    assert not (tmp_path / "out").exists()


def test_eval_coco_refuses_annotations_of_images_it_does_not_list(coco, tmp_path):
    from graphsurgery.coco import annotated_people

    annotations, images = coco
    data = json.loads(annotations.read_text())
    data["images"] = data["images"][1:]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GraphsurgeryError, match="which 'images' does not list"):
        annotated_people(path, images)


# --- leftover 6: the accuracy control speaks of the metric it controls ---------------------------------------------

def test_max_drop_is_explained_in_terms_of_coco_ap_when_that_is_the_metric():
    from graphsurgery.quantize import AccuracyControl

    with pytest.raises(GraphsurgeryError) as caught:
        AccuracyControl(math.nan, metric=object())
    assert "COCO keypoint AP" in str(caught.value) and "cell" not in str(caught.value)
    with pytest.raises(GraphsurgeryError, match="leave their f32 cell"):
        AccuracyControl(1.5)


# --- round six: models ---------------------------------------------------------------------------------------------

def test_a_domain_imported_at_two_opsets_is_refused_as_the_models_fault(tmp_path):
    """onnx's checker lets it by; the patched model then failed the checker, reported as a graphsurgery bug."""
    proto = onnx.load(str(pose_model(tmp_path / "m.onnx")))
    proto.opset_import.append(helper.make_opsetid("", 11))
    model = tmp_path / "twice.onnx"
    model.write_bytes(proto.SerializeToString())
    result = invoke("apply", CROP, model, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "twice.onnx", "imports opset 17 and opset 11 of domain 'ai.onnx'")
    assert not (tmp_path / "out.onnx").exists()


def test_an_error_listing_thousands_of_outputs_stays_short(tmp_path):
    """2,000 outputs made an error line of 17,000 characters."""
    proto = onnx.load(str(pose_model(tmp_path / "m.onnx")))
    for index in range(2000):
        proto.graph.node.append(helper.make_node("Relu", ["heatmaps"], [f"o{index}"]))
        proto.graph.output.append(onnx.helper.make_tensor_value_info(f"o{index}", onnx.TensorProto.FLOAT,
                                                                          [1, 17, 64, 48]))
    model = tmp_path / "wide.onnx"
    model.write_bytes(proto.SerializeToString())
    result = invoke("apply", CROP, model, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "the model has 2001 outputs", "… (2,001 in all)", "set output.target")
    assert len(result.output) < 600


# --- round six: recipes --------------------------------------------------------------------------------------------

def test_a_recipe_with_thousands_of_steps_is_refused_before_the_graph_is_built(plain, tmp_path):
    """3,000 steps recursed past Python's limit in onnx-graphsurgeon's sort (an internal error); 20,000 took two
    minutes to get there."""
    recipe = tmp_path / "loop.yaml"
    recipe.write_text(CROP.read_text().replace("    - cast: {}\n", "    - cast: {}\n" + "    - scale: {divide: 1}\n"
                                               * 3000))
    result = invoke("apply", recipe, plain, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "loop.yaml", "input.steps: 3,005 steps, more than 100")
    assert not (tmp_path / "out.onnx").exists()


# --- round six: COCO ground truth ----------------------------------------------------------------------------------

def _damage(coco, tmp_path, edit):
    annotations, images = coco
    data = json.loads(annotations.read_text())
    edit(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, images


def _set_first_image(data, key, value):
    data["images"][0][key] = value


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["annotations"][0].update(iscrowd="yes"), "has iscrowd 'yes', not 0 or 1"),  # internal error
    (lambda d: d["annotations"][0].update(iscrowd=2), "has iscrowd 2, not 0 or 1"),
    (lambda d: d["annotations"][0].update(area=-5), "has area -5, not a number ≥ 0"),  # overflow warning, wrong AP
    (lambda d: d["annotations"][0].update(area=math.nan), "has area nan"),
    (lambda d: d["annotations"][0].update(keypoints=["1"] * 51), "keypoint values that are not finite numbers"),
    (lambda d: d["annotations"][0].update(keypoints=None), "has keypoints None, not 51"),  # internal error
    (lambda d: d["annotations"][0].pop("num_keypoints"), "has num_keypoints None"),  # internal error
    # COCOeval ignored the person, the crops did not: with every person so, AP -1 and "NO PARITY" (round 50)
    (lambda d: d["annotations"][0].update(num_keypoints=0), "has num_keypoints 0 and 17 joints labelled"),
    (lambda d: d["annotations"][0].update(num_keypoints=3, keypoints=[0] * 51), "has num_keypoints 3 and 0 joints"),
    (lambda d: [a.update(id=1) for a in d["annotations"]], "annotation id 1 is given twice"),  # silently dropped
    (lambda d: _set_first_image(d, "id", "a"), "image id 'a' is not a whole number"),  # internal error
    (lambda d: _set_first_image(d, "file_name", None), "has file_name None"),  # internal error
    (lambda d: _set_first_image(d, "width", -640), "has width -640, not a number of pixels"),  # boxes clipped away
])
def test_eval_coco_checks_the_ground_truth_fields_before_pycocotools(coco, tmp_path, edit, needle):
    from graphsurgery.coco import annotated_people

    path, images = _damage(coco, tmp_path, edit)
    with pytest.raises(GraphsurgeryError, match="ann.json: ") as caught:
        annotated_people(path, images)
    assert needle in str(caught.value) and "fix: " in str(caught.value)


def test_eval_coco_cli_refuses_a_crowd_flag_of_yes_in_one_line(coco, plain, tmp_path):
    path, images = _damage(coco, tmp_path, lambda d: d["annotations"][0].update(iscrowd="yes"))
    before = path.read_bytes()
    result = invoke("eval-coco", CROP, plain, "--ann", path, "--images", images, "--backends", "onnxruntime")
    one_line_exit_2(result, "ann.json", "iscrowd 'yes'")
    assert path.read_bytes() == before
