"""`graphsurgery run`: COCO keypoint results that pycocotools accepts and that match the plain model + numpy twins,
debug images, labels (backend, precision, weights), static/dynamic batching, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphsurgery import crops
from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.images import read_image
from graphsurgery.irconvert import convert
from graphsurgery.model import ModelFacts
from graphsurgery.recipe import load_recipe
from graphsurgery.runners import open_runner
from graphsurgery.twins import run_unpatched

from conftest import RECIPES, ROOT

ov = pytest.importorskip("openvino")
cv2 = pytest.importorskip("cv2")

CROP = RECIPES / "hrnet_coco_pose.yaml"
IMAGE = RECIPES / "hrnet_coco_pose_image.yaml"
PHOTOS = ROOT / "examples" / "images"
CROP_W, CROP_H = 192, 256
#: Person boxes on the sample photos: two on astronaut.jpg, one on cameraman.jpg (grayscale).
BOXES = {"astronaut.jpg": [(60.0, 20.0, 300.0, 480.0), (300.0, 150.0, 200.0, 350.0)],
         "cameraman.jpg": [(100.0, 40.0, 260.0, 420.0)]}
#: COCO image ids, given as file names the COCO way (000000000042.jpg is image 42).
IDS = {"astronaut.jpg": 42, "cameraman.jpg": 7}
RESULT_KEYS = {"image_id", "file_name", "category_id", "keypoints", "score", "bbox"}


@pytest.fixture(scope="session")
def models(tiny_pose_models, tmp_path_factory) -> dict[str, Path]:
    """Patched pose models: crop recipe (dynamic batch) as ONNX, FP32 IR, FP16 IR and static-batch-2 IR; image
    recipe (static batch 1) as ONNX; and their plain models."""
    folder = tmp_path_factory.mktemp("run_models")
    crop = apply(CROP, tiny_pose_models[(17, True)], folder / "crop.onnx").output
    image = apply(IMAGE, tiny_pose_models[(9, False)], folder / "image.onnx").output
    convert(crop, folder / "crop.xml")
    convert(crop, folder / "crop_fp16.xml", fp16=True)
    convert(crop, folder / "crop_b2.xml", input_shapes={"input": (2, None, None, None)})
    return {"crop.onnx": crop, "crop.xml": folder / "crop.xml", "crop_fp16.xml": folder / "crop_fp16.xml",
            "crop_b2.xml": folder / "crop_b2.xml", "image.onnx": image,
            "crop.plain": tiny_pose_models[(17, True)], "image.plain": tiny_pose_models[(9, False)]}


def _coco_photos(folder: Path) -> Path:
    """The sample photos named by COCO id, and a COCO annotation file with their person boxes (and made-up
    ground-truth keypoints, so that COCOeval has something to score)."""
    folder.mkdir()
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for name, image_id in IDS.items():
        file_name = f"{image_id:012d}.jpg"
        shutil.copy(PHOTOS / name, folder / file_name)
        height, width = read_image(PHOTOS / name).shape[:2]
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for x, y, w, h in BOXES[name]:
            joints = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2)], axis=1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "bbox": [x, y, w, h], "area": w * h, "num_keypoints": 17,
                                "keypoints": joints.reshape(-1).tolist()})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": [str(i) for i in range(17)],
                            "skeleton": [[1, 2]]}]}
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def _reference(plain: Path, recipe_path: Path, image: np.ndarray, boxes: list) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints in image pixels and scores from the plain model + the recipe's numpy twins, on crops cut the
    authors' way; crop pixels are mapped back with the authors' transform_preds formula (rotation 0)."""
    recipe = load_recipe(recipe_path)
    centers, scales = zip(*(crops.box_to_center_scale(box) for box in boxes))
    batch = np.stack([crops.crop(image, c, s) for c, s in zip(centers, scales)])
    center, scale = np.stack(centers), np.stack(scales)
    with open_runner("onnxruntime", plain) as run_plain:
        outputs = [run_unpatched(recipe, ModelFacts.of(onnx.load(str(plain)), recipe),
                                 lambda x: run_plain({"input": x}), batch[i:i + 1],
                                 {"center": center[i:i + 1], "scale": scale[i:i + 1]}) for i in range(len(boxes))]
    keypoints = np.concatenate([o["keypoints"] for o in outputs]).astype(np.float64)
    scores = np.concatenate([o["scores"] for o in outputs])[..., 0]
    if recipe_path == CROP:
        pixel = scale[:, :1, None] * 200.0 / CROP_W
        keypoints = center[:, None, :] + (keypoints - [CROP_W / 2, CROP_H / 2]) * pixel
    return keypoints, scores


def _check_results(results: list, name: str, image_id: int, want: tuple[np.ndarray, np.ndarray], boxes: list) -> None:
    mine = [r for r in results if r["image_id"] == image_id]
    assert len(mine) == len(boxes)
    for result, box, keypoints, scores in zip(mine, boxes, *want):
        assert set(result) == RESULT_KEYS and result["file_name"] == name and result["category_id"] == 1
        assert result["bbox"] == list(box)
        triples = np.array(result["keypoints"]).reshape(17, 3)
        np.testing.assert_allclose(triples[:, :2], keypoints, rtol=0, atol=1e-3)
        np.testing.assert_allclose(triples[:, 2], scores, rtol=1e-5, atol=0)
        visible = triples[:, 2][triples[:, 2] > 0.2]  # the authors' rescoring: joints above TEST.IN_VIS_THRE
        assert result["score"] == pytest.approx(float(visible.mean()) if visible.size else 0.0, rel=1e-9)


def _run(*args: str):
    result = CliRunner().invoke(cli, ["run", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_coco_results_debug_images_and_labels(models, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    photos = _coco_photos(tmp_path / "photos")
    out = tmp_path / "out"
    result = _run(models["crop.xml"], photos, "-o", out, "--boxes", photos / "annotations.json")

    results = json.loads((out / "keypoints.json").read_text())
    for name, image_id in IDS.items():
        image = read_image(PHOTOS / name)
        want = _reference(models["crop.plain"], CROP, image, BOXES[name])
        _check_results(results, f"{image_id:012d}.jpg", image_id, want, BOXES[name])
        stem = f"{image_id:012d}"
        pose = cv2.imread(str(out / f"{stem}_pose.jpg"))
        assert pose.shape == image.shape
        montage = cv2.imread(str(out / f"{stem}_heatmaps.jpg"))
        assert montage.shape == (len(BOXES[name]) * 3 * CROP_H // 2, 6 * CROP_W // 2, 3)
    assert len(results) == sum(map(len, BOXES.values()))

    gt = COCO(str(photos / "annotations.json"))
    evaluation = COCOeval(gt, gt.loadRes(str(out / "keypoints.json")), "keypoints")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats.shape == (10,) and np.isfinite(evaluation.stats).all()

    run = json.loads((out / "run.json").read_text())
    assert (run["backend"], run["precision"], run["precision_requested"], run["weights"]) == (
        "openvino", "f32", "f32", "FP32")
    assert {(i["file_name"], i["image_id"], i["persons"]) for i in run["images"]} == {
        (f"{i:012d}.jpg", i, len(BOXES[n])) for n, i in IDS.items()}
    title = result.output.splitlines()[0]
    assert "openvino" in title and "f32" in title and "FP32" in title
    assert all(f"{i:012d}.jpg" in result.output for i in IDS.values())


def test_whole_image_and_static_batch(models, tmp_path):
    """No --boxes: one person per image, the whole image; a static batch of 2 is padded for 3 crops."""
    _run(models["crop.xml"], PHOTOS, "-o", tmp_path / "whole")
    results = json.loads((tmp_path / "whole" / "keypoints.json").read_text())
    assert [r["file_name"] for r in results] == ["astronaut.jpg", "cameraman.jpg"]
    for r in results:
        image = read_image(PHOTOS / r["file_name"])
        assert r["bbox"] == [0.0, 0.0, float(image.shape[1]), float(image.shape[0])]
        want = _reference(models["crop.plain"], CROP, image, [crops.whole_image_box(image)])
        _check_results(results, r["file_name"], r["image_id"], want, [tuple(r["bbox"])])

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"astronaut.jpg": [*BOXES["astronaut.jpg"], [0, 0, 512, 512]]}))
    _run(models["crop_b2.xml"], PHOTOS / "astronaut.jpg", PHOTOS / "cameraman.jpg", "-o", tmp_path / "b2",
         "--boxes", boxes)
    results = json.loads((tmp_path / "b2" / "keypoints.json").read_text())
    astronaut = [*BOXES["astronaut.jpg"], (0.0, 0.0, 512.0, 512.0)]
    want = _reference(models["crop.plain"], CROP, read_image(PHOTOS / "astronaut.jpg"), astronaut)
    _check_results(results, "astronaut.jpg", 1, want, astronaut)
    run = json.loads((tmp_path / "b2" / "run.json").read_text())
    assert run["batch"] == 2 and [i["persons"] for i in run["images"]] == [3, 0]


def test_onnxruntime_backend_with_center_scale_inputs(models, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(BOXES))
    result = _run(models["image.onnx"], PHOTOS / "astronaut.jpg", "-o", tmp_path / "out", "--boxes", boxes,
                  "--backend", "onnxruntime", "--threads", "1")
    results = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    image = read_image(PHOTOS / "astronaut.jpg")
    _check_results(results, "astronaut.jpg", 1, _reference(models["image.plain"], IMAGE, image,
                                                           BOXES["astronaut.jpg"]), BOXES["astronaut.jpg"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (run["backend"], run["precision"], run["weights"], run["threads"]) == ("onnxruntime", "f32", "FP32", 1)
    assert "onnxruntime" in result.output.splitlines()[0]


def test_fp16_weights_and_bf16_precision_are_labelled(models, tmp_path):
    result = _run(models["crop_fp16.xml"], PHOTOS, "-o", tmp_path / "out", "--precision", "bf16")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    with open_runner("openvino", models["crop_fp16.xml"], precision="bf16") as runner:
        computed = runner.precision  # f32 on CPUs without bf16: the label must say what really ran
    assert (run["weights"], run["precision_requested"], run["precision"]) == ("FP16", "bf16", computed)
    assert (run["precision_note"] is not None) == (computed == "bf16")  # bf16's speed is the CPU's: said when it ran
    assert ("not faster on every CPU" in " ".join(result.output.split())) == (computed == "bf16")
    title = result.output.splitlines()[0]
    assert "FP16" in title and "bf16" in title and computed in title
    results = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert len(results) == 2 and all(len(r["keypoints"]) == 51 for r in results)


def test_errors_exit_2_with_one_line(models, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    boxes = tmp_path / "boxes.json"
    boxes.write_text("{not json")
    other_boxes = tmp_path / "other_boxes.json"
    other_boxes.write_text(json.dumps({"someone_else.jpg": [[0, 0, 10, 10]]}))
    cases = {
        "bad image": ([models["crop.xml"], bad], "not a readable JPEG or PNG"),
        "missing image": ([models["crop.xml"], tmp_path / "absent.jpg"], "no such image"),
        "unpatched model": ([models["crop.plain"], PHOTOS], "not a patched pose model"),
        "missing model": ([tmp_path / "absent.xml", PHOTOS], "no such IR"),
        "bf16 on onnxruntime": ([models["crop.onnx"], PHOTOS, "--backend", "onnxruntime", "--precision", "bf16"],
                                "onnxruntime runs at f32 only"),
        "bad boxes": ([models["crop.xml"], PHOTOS, "--boxes", boxes], "not a readable JSON"),
        "boxes for other images": ([models["crop.xml"], PHOTOS, "--boxes", other_boxes], "none of the 2 images"),
    }
    for case, (args, expected) in cases.items():
        out = tmp_path / case.replace(" ", "_")
        result = CliRunner().invoke(cli, ["run", *map(str, args), "-o", str(out)])
        message = result.output.strip()
        assert result.exit_code == 2, (case, message)
        assert "Traceback" not in result.output and len(message.splitlines()) == 1, (case, message)
        assert expected in message, (case, message)
        assert not (out / "keypoints.json").exists() and not (out / "run.json").exists(), case


def test_output_folder_refusing_new_files_is_a_clean_error(models):
    """/proc refuses new files even to root (a chmod-ed folder would not)."""
    out = Path("/proc/graphsurgery-run-out")
    result = CliRunner().invoke(cli, ["run", str(models["crop.onnx"]), str(PHOTOS), "--backend", "onnxruntime",
                                      "-o", str(out)])
    message = result.output.strip()
    assert result.exit_code == 2 and len(message.splitlines()) == 1 and "Traceback" not in result.output, message
    assert "cannot create files" in message and str(out) in message, message
    assert not out.exists()


def test_many_boxes_keep_only_a_batch_of_crops_in_memory(models):
    """Crops are made one batch at a time; crops and heatmaps stay only for the persons the montage shows."""
    from graphsurgery.draw import MONTAGE_MAX_PERSONS
    from graphsurgery.pose import PoseModel, estimate
    from graphsurgery.runners import model_signature

    image = read_image(PHOTOS / "astronaut.jpg")
    boxes = [(float(x), 20.0, 100.0, 200.0) for x in range(0, 400, 10)]  # 40 boxes
    model = PoseModel.of(model_signature(models["crop.onnx"]), models["crop.onnx"])
    with open_runner("onnxruntime", models["crop.onnx"]) as run:
        persons, _ = estimate(run, model, image, boxes, batch=8)
        alone, _ = estimate(run, model, image, boxes[25:26], batch=1)
    assert len(persons) == 40 and all(p.keypoints.shape == (17, 2) for p in persons)
    assert all(p.crop is not None for p in persons[:MONTAGE_MAX_PERSONS])
    assert all(p.crop is None and p.heatmaps is None for p in persons[MONTAGE_MAX_PERSONS:])
    np.testing.assert_array_equal(persons[25].keypoints, alone[0].keypoints)  # batching does not change answers
