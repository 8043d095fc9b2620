"""Round 83: a person's score in the keypoint results `run` and `eval-coco` write is a finite number; verify on
grey pictures alone proves nothing about the colour order.

The score is the mean of the visible joint scores times the box's score. An infinite joint score (a heatmap peak
at inf) was made the largest float, and a mean of such numbers overflowed; so did a huge (finite, accepted) box
score times a mean above 1: keypoints.json and eval-coco's results held `"score": Infinity`, which is no JSON
(jq, JavaScript and every strict parser refuse the file).

A grey picture (cameraman.jpg) has three equal channels, so a patched model with the wrong colour order (made for
RGB callers, verified against the BGR recipe) gave it the BGR recipe's answers: `verify --images` of grey pictures
alone PASSed it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from clikit import invoke
from graphsurgery.api import apply
from graphsurgery.cocoformat import keypoint_result
from graphsurgery.images import read_image

from examples.synthetic_coco import joint_detector, write_coco_set

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
GREY = ROOT / "examples" / "images" / "cameraman.jpg"
BGR_RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
LARGEST = np.finfo(np.float64).max


def _strict(text: str):
    """JSON as RFC 8259 has it: NaN, Infinity and -Infinity are refused."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("joint_scores, box_score, expected", [
    ([np.inf] * 17, 1.0, LARGEST),  # the mean of 17 largest floats overflowed
    ([2.0] * 17, 1e308, LARGEST),  # 2 × 1e308
    ([0.5] * 17, 1e308, 0.5e308),  # no overflow: kept as it is
    ([np.inf, np.nan, -np.inf] + [0.1] * 14, 1.0, LARGEST),  # one visible joint, at the largest float
])
def test_a_person_score_stays_a_finite_json_number(joint_scores, box_score, expected):
    result = keypoint_result(1, np.zeros((17, 2)), np.array(joint_scores, np.float32), box_score)
    _strict(json.dumps(result))
    assert result["score"] == pytest.approx(expected, rel=1e-12)
    triples = np.array(result["keypoints"]).reshape(17, 3)
    expected_joints = np.nan_to_num(np.array(joint_scores, np.float32).astype(np.float64), nan=0.0)  # finite
    np.testing.assert_array_equal(triples[:, 2], expected_joints)


def _infinite_joints(patched: Path, out: Path, joints: tuple[int, ...]) -> Path:
    """`patched` with +inf added to one pixel of its heatmaps' channels `joints` before the decoder: those joints'
    peaks are inf, at a finite place."""
    model = onnx.load(str(patched))
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    peak = np.zeros((1, 17, 64, 48), np.float32)  # the heatmaps of a 256 × 192 crop
    peak[0, list(joints), 5, 7] = np.inf
    model.graph.initializer.append(numpy_helper.from_array(peak, "infinite_joint"))
    add = helper.make_node("Add", [conv.output[0] + "/finite", "infinite_joint"], [conv.output[0]])
    conv.output[0] = add.input[0]
    model.graph.node.insert(list(model.graph.node).index(conv) + 1, add)
    onnx.save(model, str(out))
    return out


def test_run_writes_a_finite_score_for_joints_whose_heatmap_peaks_are_infinite(patched, tmp_path):
    """Was: keypoints.json held `"score": Infinity` (two largest floats overflow a sum). Each infinite joint's own
    score is the largest float; the person's is the mean of the visible joints, computed here by numpy from the
    joint scores written."""
    model = _infinite_joints(patched, tmp_path / "inf.onnx", joints=(3, 4))
    result = invoke("run", model, PHOTO, "-o", tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    people = _strict((tmp_path / "out" / "keypoints.json").read_text())
    assert len(people) == 1
    joints = np.array(people[0]["keypoints"]).reshape(17, 3)[:, 2]
    assert joints[3] == joints[4] == LARGEST
    visible = joints[joints > 0.2]
    assert people[0]["score"] == pytest.approx(float(np.sum(visible / visible.size)), rel=1e-12)


def test_eval_coco_results_hold_no_infinity_for_huge_box_scores(tmp_path):
    """Was: a detection scored 1.7e308 (finite, accepted) times a mean joint score above 1 overflowed, and the
    results files eval-coco keeps in --results held `"score": Infinity`."""
    annotations = write_coco_set(tmp_path / "images", images=2, seed=0)
    plain = joint_detector(tmp_path / "plain.onnx", opset=17)
    detections = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.7e308}
                  for a in json.loads(annotations.read_text())["annotations"]]
    boxes = tmp_path / "detections.json"
    boxes.write_text(json.dumps(detections))
    result = invoke("eval-coco", ROOT / "recipes" / "hrnet_coco_pose.yaml", plain, "--ann", annotations,
                    "--images", tmp_path / "images", "--boxes", boxes, "--backends", "onnxruntime",
                    "--results", tmp_path / "results")
    assert result.exit_code in (0, 1), result.output
    written = sorted((tmp_path / "results").glob("*onnxruntime.json"))
    assert len(written) == 2, written
    for path in written:
        scores = [person["score"] for person in _strict(path.read_text())]
        assert scores and all(np.isfinite(scores)) and max(scores) == LARGEST, (path, scores)


@pytest.fixture(scope="module")
def rgb_patched(plain, tmp_path_factory) -> Path:
    """`plain` patched for RGB callers (no channel swap): the wrong colour order for hrnet_coco_pose.yaml's BGR."""
    folder = tmp_path_factory.mktemp("rgb")
    text = BGR_RECIPE.read_text().replace("color: BGR}", "color: RGB}").replace("    - reverse_channels: {}\n", "")
    assert "reverse_channels" not in text and text.count("color: RGB") == 2
    (folder / "rgb.yaml").write_text(text)
    return apply(folder / "rgb.yaml", plain, folder / "rgb.onnx").output


@pytest.mark.parametrize("photos, right, verdict", [
    ((GREY,), False, 1),  # was: PASS
    ((GREY,), True, 1),  # the grey picture proves nothing for a right patch either
    ((GREY, PHOTO), False, 1),  # a colour photo among them: the wrong order FAILs on it
    ((GREY, PHOTO), True, 0),
])
def test_grey_pictures_alone_prove_nothing_about_the_colour_order(plain, patched, rgb_patched, tmp_path, photos,
                                                                   right, verdict):
    grey = read_image(GREY)
    assert grey.shape[2] == 3 and (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    result = invoke("verify", BGR_RECIPE, plain, "--patched", patched if right else rgb_patched, "--images", folder,
                    "--backends", "onnxruntime")
    said = " ".join(result.output.split())
    assert result.exit_code == verdict, result.output
    assert ("are grey" in said) == (len(photos) == 1), said
