"""`eval-coco` on a synthetic COCO keypoint set with a model that really finds its joints.

The unpatched pipeline and the patched model must score identical AP/AR on both backends; a wrong patch must not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.coco import STAT_NAMES, evaluate_coco
from graphsurgery.cocoformat import KEYPOINT_NAMES
from graphsurgery.errors import GraphsurgeryError

from examples.synthetic_coco import joint_detector, write_coco_set
from modelkit import POSE_LETTERBOX
from paritykit import CROP_RECIPE, IMAGE_RECIPE, shift_keypoints, wrong_recipe

IMAGES = 8


@pytest.fixture(scope="session")
def coco_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    annotations = write_coco_set(folder / "images", images=IMAGES, seed=0)
    return annotations, folder / "images", joint_detector(folder / "detector.onnx", opset=17)


@pytest.fixture(scope="session")
def reference_ap(coco_set) -> list[float]:
    """AP/AR of the unpatched pipeline on ONNX Runtime (what every wrong patch is measured against)."""
    annotations, images, plain = coco_set
    report = evaluate_coco(CROP_RECIPE, plain, annotations, images, backends=("onnxruntime",))
    return report.pipelines[0].stats


def test_the_synthetic_set_is_valid_coco_keypoints(coco_set):
    from pycocotools.coco import COCO

    annotations, images, _ = coco_set
    data = json.loads(annotations.read_text())
    assert len(data["images"]) == IMAGES and data["categories"][0]["keypoints"] == list(KEYPOINT_NAMES)
    for image in data["images"]:
        assert (images / image["file_name"]).is_file()
    for ann in data["annotations"]:
        points = np.array(ann["keypoints"]).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        assert ann["num_keypoints"] == 17 and (points[:, 2] == 2).all() and ann["area"] == pytest.approx(w * h, 1e-3)
        assert (points[:, 0] >= x).all() and (points[:, 0] <= x + w).all()
        assert (points[:, 1] >= y).all() and (points[:, 1] <= y + h).all()
    COCO(str(annotations))  # pycocotools reads it


def test_the_detector_finds_the_joints(reference_ap):
    assert reference_ap[0] > 0.8  # AP: a real score, so that a wrong patch has something to lose


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("recipe", [CROP_RECIPE, IMAGE_RECIPE], ids=["crop", "image"])
def test_unpatched_and_patched_score_identical_ap_on_both_backends(coco_set, tmp_path, reference_ap, recipe, opset):
    annotations, images, plain = coco_set
    if opset != 17:
        plain = joint_detector(tmp_path / "detector9.onnx", opset=opset)
    report = evaluate_coco(recipe, plain, annotations, images, results_dir=tmp_path / "results")
    assert [p.name for p in report.pipelines] == ["unpatched · onnxruntime", "unpatched · openvino",
                                                  "patched · onnxruntime", "patched · openvino"]
    assert report, [p.stats for p in report.pipelines]
    assert all(p.stats == reference_ap for p in report.pipelines)  # crop and image recipes agree too
    assert all(p.precision == "f32" for p in report.pipelines)
    results = json.loads((tmp_path / "results" / "patched-openvino.json").read_text())
    assert len(results) == report.people and len(results[0]["keypoints"]) == 17 * 3


@pytest.mark.parametrize("mistake", ["colour", "no_std", "off_by_one"])
def test_a_wrong_patch_changes_the_ap(coco_set, tmp_path, reference_ap, mistake):
    annotations, images, plain = coco_set
    if mistake == "off_by_one":
        right = apply(CROP_RECIPE, plain, tmp_path / "right.onnx").output
        patched = shift_keypoints(right, tmp_path / "wrong.onnx", (4.0, 0.0))
    else:
        patched = apply(wrong_recipe(mistake, tmp_path), plain, tmp_path / "wrong.onnx").output
    report = evaluate_coco(CROP_RECIPE, plain, annotations, images, patched=patched, backends=("onnxruntime",))
    unpatched, wrong = report.pipelines
    assert not report
    assert unpatched.stats == reference_ap and wrong.stats[0] != reference_ap[0]


@pytest.mark.parametrize("move", [(1.0, 0.0), (0.0, -1.0)])
def test_a_patch_that_moves_every_keypoint_by_a_pixel_fails_though_its_ap_is_the_same(coco_set, tmp_path,
                                                                                      reference_ap, move):
    """Was PARITY, exit 0 (round 51): moved by 1 px every keypoint scored the unpatched pipeline's AP and AR on
    this set, the verdict's only numbers. The proof per keypoint, `verify` on the crops of some of the people,
    is now part of it."""
    annotations, images, plain = coco_set
    right = apply(CROP_RECIPE, plain, tmp_path / "right.onnx").output
    patched = shift_keypoints(right, tmp_path / "moved.onnx", move)
    report = evaluate_coco(CROP_RECIPE, plain, annotations, images, patched=patched, backends=("onnxruntime",))
    assert report.same_scores and report.pipelines[0].stats == reference_ap  # AP and AR cannot tell
    assert not report and not report.per_keypoint
    assert any("keypoints" in failure and "real mismatch" in failure for failure in report.per_keypoint.failures())
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(images), "--patched", str(patched), "--backends",
                                      "onnxruntime"])
    assert result.exit_code == 1, result.output
    assert "NO PARITY per keypoint" in " ".join(result.output.split())


def test_the_proof_per_keypoint_verifies_people_spread_over_the_set(coco_set, tmp_path, monkeypatch):
    """Its crops are PROVEN_PEOPLE of the people, evenly spread (here 5 of the set's), and its verdict and report
    are eval-coco's: the JSON report carries verify's."""
    from graphsurgery import coco

    annotations, images, plain = coco_set
    monkeypatch.setattr(coco, "PROVEN_PEOPLE", 5)
    out = tmp_path / "coco.json"
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(images), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    proof = data["per_keypoint"]
    assert data["parity"] is True and proof["passed"] is True and proof["samples"] == 5 < data["people"]
    assert proof["backends"] == ["onnxruntime", "openvino"] and data["proven_people"] == 5
    assert "every keypoint of 5 of the people (verify on onnxruntime, openvino)" in " ".join(result.output.split())


def test_cli_prints_the_tables_side_by_side_and_writes_json(coco_set, tmp_path):
    annotations, images, plain = coco_set
    out = tmp_path / "coco.json"
    result = CliRunner().invoke(cli, ["eval-coco", str(IMAGE_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(images), "--limit", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "PARITY" in result.output and result.output.count("unpatched ·") == 2
    data = json.loads(out.read_text())
    ap_row = next(line for line in result.output.splitlines() if line.startswith("│ AP "))
    assert ap_row.count(f"{data['pipelines'][0]['stats']['AP']:.4f}") == 4  # one column per pipeline
    assert data["parity"] is True and data["images"] == 3 and data["boxes"] == "ground truth"
    assert list(data["pipelines"][0]["stats"]) == list(STAT_NAMES)
    assert result.stderr == ""  # no terminal, no progress bar: its empty last line went to logs


def test_cli_exits_1_without_parity(coco_set, tmp_path):
    annotations, images, plain = coco_set
    patched = apply(wrong_recipe("colour", tmp_path), plain, tmp_path / "wrong.onnx").output
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(images), "--patched", str(patched), "--limit", "2",
                                      "--backends", "openvino"])
    assert result.exit_code == 1, result.output
    assert "NO PARITY" in result.output


def test_detection_boxes_with_scores(coco_set, tmp_path):
    annotations, images, plain = coco_set
    data = json.loads(annotations.read_text())
    detections = [{"image_id": a["image_id"], "category_id": 1, "bbox": [v + 3 for v in a["bbox"]], "score": 0.9}
                  for a in data["annotations"]]
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(detections))
    report = evaluate_coco(CROP_RECIPE, plain, annotations, images, boxes=path, backends=("openvino",), limit=4)
    assert report and report.boxes == str(path) and report.images == 4
    assert report.people == sum(1 for d in detections if d["image_id"] in {1, 2, 3, 4})


@pytest.mark.parametrize("args, message", [
    (["--ann", "missing.json", "--images", "."], "no such annotation file"),
    (["--ann", "{ann}", "--images", "nowhere"], "no such image folder"),
    (["--ann", "{ann}", "--images", "{ann}"], "is not a folder"),  # was "no such image folder" for a file or a FIFO
    (["--ann", "{ann}", "--images", "{images}", "--boxes", "{ann}"], "not COCO detection results"),
])
def test_cli_input_errors_exit_2_in_one_line(coco_set, tmp_path, monkeypatch, args, message):
    annotations, images, plain = coco_set
    monkeypatch.chdir(tmp_path)
    args = [a.format(ann=annotations, images=images) for a in args]
    out = tmp_path / "coco.json"
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), *args, "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("escape", ["../outside.png", "/etc/hostname", "sub/../../outside.png"])
def test_file_names_cannot_reach_outside_the_images_folder(coco_set, tmp_path, escape):
    """A file_name in the annotations is a name inside --images: `..` or an absolute path is refused, never read."""
    annotations, images, plain = coco_set
    data = json.loads(annotations.read_text())
    data["images"][0]["file_name"] = escape
    (tmp_path / "images").mkdir()
    for image in images.iterdir():
        (tmp_path / "images" / image.name).write_bytes(image.read_bytes())
    (tmp_path / "outside.png").write_bytes((images / data["images"][1]["file_name"]).read_bytes())
    hostile = tmp_path / "images" / "annotations.json"
    hostile.write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(hostile),
                                      "--images", str(tmp_path / "images"), "--backends", "onnxruntime"])
    assert result.exit_code == 2 and "is outside" in result.output and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("damage", ["no_width", "bbox_strings", "bbox_nan"])
def test_malformed_annotations_are_one_line_errors(coco_set, tmp_path, damage):
    annotations, images, plain = coco_set
    data = json.loads(annotations.read_text())
    if damage == "no_width":
        del data["images"][0]["width"]
    elif damage == "bbox_strings":
        data["annotations"][0]["bbox"] = ["a", "b", "c", "d"]
    else:
        data["annotations"][0]["bbox"][2] = float("nan")
    broken = tmp_path / "annotations.json"
    broken.write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(broken),
                                      "--images", str(images), "--backends", "onnxruntime"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "malformed" in lines[0], result.output


def test_the_top_down_model_scores_as_its_unpatched_pipeline(coco_set, tmp_path, reference_ap):
    """The graph crops the annotation boxes itself (image + boxes in): unpatched and patched score identical AP on
    both backends. Without the flip test it is the crop recipe's AP: the in-graph crop is the authors' crop. (With
    it, the AP drops: the synthetic detector tells joints apart by colour, not anatomy, so the mirrored crop's
    left/right swap puts each joint's partner on top of it; a real network gains from it.)"""
    annotations, images, plain = coco_set
    topdown = CROP_RECIPE.parent / "hrnet_coco_topdown.yaml"
    report = evaluate_coco(topdown, plain, annotations, images)
    assert report, [p.stats for p in report.pipelines]
    assert len(report.pipelines) == 4 and report.pipelines[0].stats[0] < reference_ap[0]
    no_flip = tmp_path / "noflip.yaml"
    no_flip.write_text(topdown.read_text().replace("    - flip_test: {}\n", "").replace("    - flip_average: {}\n", ""))
    report = evaluate_coco(no_flip, plain, annotations, images, backends=("onnxruntime",))
    assert report and report.pipelines[0].stats == reference_ap


def test_a_top_down_recipe_must_map_back_to_image_pixels(coco_set, tmp_path):
    """eval-coco has no crop to map keypoints from when the graph cuts the crops: the recipe must end in to_image
    mode boxes, else a one-line error."""
    from graphsurgery.errors import GraphsurgeryError

    annotations, images, plain = coco_set
    crop_pixels = tmp_path / "crop_pixels.yaml"
    crop_pixels.write_text((CROP_RECIPE.parent / "hrnet_coco_topdown.yaml").read_text().replace(
        "    - to_image: {mode: boxes}", "    - to_image: {mode: crop}"))
    with pytest.raises(GraphsurgeryError, match="its keypoints are not in image pixels"):
        evaluate_coco(crop_pixels, plain, annotations, images, backends=("onnxruntime",))


def test_the_proof_takes_fewer_people_where_verify_could_not_hold_their_crops():
    """verify holds every crop at once and refuses past its cap: 64 people of 1024 × 768 crops (two each with the
    flip test) are past it, and its refusal would have named eval-coco's own scratch files."""
    from types import SimpleNamespace

    from graphsurgery.coco import PROVEN_PEOPLE, PersonBox, _proof_size
    from graphsurgery.recipe import load_recipe
    from graphsurgery.samples import most_samples

    people = [PersonBox(1, "a.jpg", (0.0, 0.0, 50.0, 100.0), 1.0, (640.0, 480.0))] * 100
    recipe = load_recipe(CROP_RECIPE)
    assert _proof_size(recipe, SimpleNamespace(input_size=(192, 256)), people) == PROVEN_PEOPLE
    assert _proof_size(recipe, SimpleNamespace(input_size=(192, 256)), people[:7]) == 7
    big = _proof_size(recipe, SimpleNamespace(input_size=(768, 1024)), people)
    assert 1 <= big < PROVEN_PEOPLE and big == most_samples(2 * 3 * 768 * 1024)


def test_a_damaged_jpeg_is_noted_once_naming_the_users_image(tmp_path):
    """The proof per keypoint reads its people's images again, through links in a scratch folder: the damaged
    JPEG's note came twice, the second naming that scratch link."""
    import cv2

    folder = tmp_path / "images"
    annotations = write_coco_set(folder, images=2, seed=0)
    data = json.loads(annotations.read_text())
    for image in data["images"]:
        png = folder / image["file_name"]
        image["file_name"] = png.with_suffix(".jpg").name
        assert cv2.imwrite(str(folder / image["file_name"]), cv2.imread(str(png)))
        png.unlink()
    annotations.write_text(json.dumps(data))
    damaged = folder / data["images"][0]["file_name"]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size * 3 // 4])
    plain = joint_detector(tmp_path / "detector.onnx")
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(folder), "--backends", "onnxruntime"])
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith(f"note: {damaged}: the JPEG is damaged"), result.stderr


def test_a_proof_that_compared_nothing_is_said(coco_set, monkeypatch):
    """A verify that fails without a failing comparison (it compared nothing) ended eval-coco with exit 1 and no
    line saying why, after identical AP/AR."""
    from graphsurgery import coco
    from graphsurgery.coco import CocoReport, PipelineResult
    from graphsurgery.verification import VerifyReport

    annotations, images, plain = coco_set
    proof = VerifyReport("r.yaml", "p.onnx", "q.onnx", "images", 3, ["onnxruntime"], "f32")
    assert not proof and proof.failures() == []
    stats = [0.5] * len(STAT_NAMES)
    report = CocoReport("ann.json", 2, 3, "ground truth", [PipelineResult(kind, "onnxruntime", "f32", list(stats))
                                                           for kind in ("unpatched", "patched")], proof, 3)
    monkeypatch.setattr(coco, "evaluate_coco", lambda *args, **kwargs: report)
    result = CliRunner().invoke(cli, ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(images)], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "NO PARITY per keypoint (verify of 3 of the people): nothing was compared" in result.output


def test_a_recipe_that_letterboxes_whole_images_is_evaluated_and_proven_on_them(coco_set, tmp_path):
    """Round 55: eval-coco feeds a resizing recipe crops (each crop is its caller's image), and its unpatched
    pipeline's twins were not told the crop's size: "this recipe maps results back to the caller's image, and its
    size is unknown here — fix: pass caller_shape", exit 2. The proof per keypoint runs verify on those people's
    images whole, and the verdict says so."""
    annotations, images, plain = coco_set
    recipe = tmp_path / "letterbox.yaml"
    recipe.write_text(POSE_LETTERBOX)
    result = CliRunner().invoke(cli, ["eval-coco", str(recipe), str(plain), "--ann", str(annotations), "--images",
                                      str(images), "--limit", "2", "--backends", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert "every keypoint of the 2 whole images" in " ".join(result.output.split())


def test_detections_of_nobody_are_no_person_boxes(coco_set, tmp_path):
    """Round 55: `--boxes` of an empty list (valid COCO results of nothing) was "not COCO detection results for these
    annotations (IndexError)": pycocotools' loadRes cannot index an empty list."""
    annotations, images, plain = coco_set
    empty = tmp_path / "none.json"
    empty.write_text("[]")
    with pytest.raises(GraphsurgeryError, match="no person boxes to evaluate"):
        evaluate_coco(CROP_RECIPE, plain, annotations, images, boxes=empty, backends=("onnxruntime",))


def test_results_into_the_image_folder_can_be_written_again(coco_set, tmp_path):
    """Round 55: every file of --images counted as an input, so `--results IMAGES` worked once and was then refused
    ("the output would overwrite an input") by its own earlier results. The inputs are the images read; a results
    file of another tool there is still not replaced."""
    annotations, images, plain = coco_set
    folder = tmp_path / "images"
    folder.mkdir()
    for image in images.glob("*.png"):
        (folder / image.name).write_bytes(image.read_bytes())
    args = ["eval-coco", str(CROP_RECIPE), str(plain), "--ann", str(annotations), "--images", str(folder),
            "--limit", "2", "--backends", "onnxruntime", "--results", str(folder)]
    for _ in range(2):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    (folder / "eval-coco.json").unlink()  # without its record, the results there are another tool's
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "unpatched-onnxruntime.json" in result.output, result.output


@pytest.mark.parametrize("when", ["second pipeline", "before the proof", "during the proof"])
def test_an_image_replaced_while_eval_coco_runs_is_refused(tmp_path, monkeypatch, when):
    """Each pipeline reads the images again, and so does the proof per keypoint: an image replaced in between was
    scored and proven as it was then, the pipelines compared on other pixels (round 55's leftover). It is refused,
    naming the image, and nothing is reported."""
    import cv2

    import graphsurgery.coco

    folder = tmp_path / "images"
    annotations = write_coco_set(folder, images=2, seed=0)
    plain = joint_detector(tmp_path / "detector.onnx")
    image = folder / json.loads(annotations.read_text())["images"][0]["file_name"]
    seen = []

    def replace() -> None:
        other = tmp_path / "other.png"
        assert cv2.imwrite(str(other), 255 - cv2.imread(str(image)))
        other.replace(image)

    def progress(name: str, done: int, total: int) -> None:
        seen.append(name)
        if (when, len(set(seen))) == ("second pipeline", 2) and seen.count(name) == 1 or (
                (when, len(set(seen)), done) == ("before the proof", 4, total)):
            replace()

    def verify_replacing(*args, **kwargs):
        replace()
        return verify(*args, **kwargs)

    verify = graphsurgery.coco.verify
    if when == "during the proof":
        monkeypatch.setattr(graphsurgery.coco, "verify", verify_replacing)
    with pytest.raises(GraphsurgeryError, match="the image changed while the command ran") as caught:
        evaluate_coco(CROP_RECIPE, plain, annotations, folder, progress=progress,
                      backends=("onnxruntime", "openvino"))
    assert caught.value.path == str(image) and len(set(seen)) == (2 if when == "second pipeline" else 4)


def shift_away_from(patched: Path, out: Path, center: np.ndarray, offset: tuple[float, float]) -> Path:
    """Copy of the image-coordinate patched model that moves its keypoints by `offset` for every person but the one
    whose crop is centred at `center`: wrong for all people the proof did not draw."""
    model = onnx.load(str(patched))
    graph = model.graph
    producer = next(node for node in graph.node if "keypoints" in node.output)
    producer.output[list(producer.output).index("keypoints")] = "test/before"
    graph.initializer.extend([numpy_helper.from_array(np.asarray(center, np.float32), "test/center"),
                              numpy_helper.from_array(np.array(offset, np.float32), "test/offset"),
                              numpy_helper.from_array(np.array(0.5, np.float32), "test/half")])
    graph.node.extend([
        helper.make_node("Sub", ["center", "test/center"], ["test/apart"]),
        helper.make_node("Abs", ["test/apart"], ["test/distance"]),
        helper.make_node("ReduceMax", ["test/distance"], ["test/farthest"], keepdims=0),
        helper.make_node("Greater", ["test/farthest", "test/half"], ["test/other"]),
        helper.make_node("Cast", ["test/other"], ["test/moved"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", ["test/moved", "test/offset"], ["test/shift"]),
        helper.make_node("Add", ["test/before", "test/shift"], ["keypoints"])])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def test_a_patch_wrong_only_for_people_the_proof_did_not_draw_fails(coco_set, tmp_path, monkeypatch):
    """A patch right for the people the proof draws and 1 px off for every other scored the same AP/AR and PASSed
    (round 55's leftover: the proof took people spread over the set, not all). Each pipeline has every person's
    answer: the people whose results differ are proven first."""
    from graphsurgery import coco
    from graphsurgery.crops import box_to_center_scale

    annotations, images, plain = coco_set
    monkeypatch.setattr(coco, "PROVEN_PEOPLE", 1)  # the first person only, as 64 of a larger set
    _, _, people = coco.annotated_people(annotations, images)
    right = apply(IMAGE_RECIPE, plain, tmp_path / "right.onnx").output
    patched = shift_away_from(right, tmp_path / "wrong.onnx", box_to_center_scale(people[0].box)[0], (1.0, 0.0))
    report = evaluate_coco(IMAGE_RECIPE, plain, annotations, images, patched=patched, backends=("onnxruntime",))
    assert report.same_scores  # AP and AR cannot tell
    assert not report and any("real mismatch" in failure for failure in report.per_keypoint.failures())
    assert report.differing == report.people - 1 and report.proven == 1
    right_report = evaluate_coco(IMAGE_RECIPE, plain, annotations, images, patched=right, backends=("onnxruntime",))
    assert right_report and right_report.differing == 0


def test_parity_says_how_many_people_differed_and_were_proven_first(coco_set, tmp_path, monkeypatch):
    """Results that differ by more than `DIFFERING` but within verify's tolerances: PARITY, naming the people proven
    first."""
    from graphsurgery import coco
    from graphsurgery.crops import box_to_center_scale

    annotations, images, plain = coco_set
    monkeypatch.setattr(coco, "PROVEN_PEOPLE", 2)
    _, _, people = coco.annotated_people(annotations, images)
    right = apply(IMAGE_RECIPE, plain, tmp_path / "right.onnx").output
    patched = shift_away_from(right, tmp_path / "near.onnx", box_to_center_scale(people[0].box)[0],
                              (1.5 * coco.DIFFERING, 0.0))
    result = CliRunner().invoke(cli, ["eval-coco", str(IMAGE_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(images), "--patched", str(patched), "--backends",
                                      "onnxruntime", "--json", str(tmp_path / "coco.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "coco.json").read_text())
    assert data["differing_people"] == len(people) - 1 and data["proven_people"] == 2
    assert (f"every keypoint of 2 of the people (verify on onnxruntime), first the 2 of the {len(people) - 1} whose "
            "results differ most from the unpatched pipeline's (by more than 0.001)") in " ".join(result.output.split())
