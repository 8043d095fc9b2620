"""A second round of hostile or careless inputs (a red-team run): each ended in an internal error, a silent
misreading or a run without end before it was fixed; now each is one line and exit 2, and nothing is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clikit import invoke
from graphsurgery.boxes import load_boxes
from graphsurgery.errors import GraphsurgeryError, RecipeError
from graphsurgery.yamlsource import read_yaml

from conftest import RECIPES
from modelkit import pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return pose_model(tmp_path_factory.mktemp("second") / "plain.onnx", dynamic_batch=True)


@pytest.mark.parametrize("text, needle", [
    ("name: !!binary aGVsbG8=\n", "!!binary"),  # the safe loader makes it the name "hello"
    ("steps: !!set {a, b}\n", "!!set"),
    ("steps: !!omap [{a: 1}]\n", "!!omap"),
])
def test_tags_that_make_bytes_or_sets_are_refused(text, needle):
    with pytest.raises(RecipeError, match=f"line 1: .*YAML tag {needle} not allowed"):
        read_yaml(text, "r.yaml")


def test_an_integer_of_5000_digits_is_a_recipe_error_not_an_internal_one(plain, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(CROP.read_text().replace("version: 1", "version: 1" + "0" * 5000))
    result = invoke("apply", recipe, plain, "-o", tmp_path / "p.onnx")
    assert result.exit_code == 2, result.output
    assert "cannot be read as a number" in result.output and "internal error" not in result.output
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("box", ["1234", [True, True, True, True], {"0": 1, "1": 2, "3": 40, "4": 50},
                                 ["10", "10", "40", "40"]])
def test_boxes_that_only_iterate_into_four_numbers_are_refused(tmp_path, box):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a.jpg": [box]}))
    with pytest.raises(GraphsurgeryError, match="boxes.json: .*(not \\[x, y, w, h\\]|is not a number)"):
        load_boxes(path)


def test_a_detection_with_a_nan_score_is_refused_not_dropped(tmp_path):
    path = tmp_path / "detections.json"
    path.write_text('[{"image_id": 1, "bbox": [10, 10, 50, 80], "score": NaN, "category_id": 1}]')
    with pytest.raises(GraphsurgeryError, match="score nan, not a finite number"):
        load_boxes(path, images={1: "a.jpg"})
    path.write_text('[{"image_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9, "category_id": 1}]')
    assert load_boxes(path, images={1: "a.jpg"}) == {"a.jpg": [(10.0, 10.0, 50.0, 80.0)]}


def test_an_empty_reference_file_is_refused(plain, tmp_path):
    (tmp_path / "ref.npz").write_bytes(b"")
    result = invoke("verify", CROP, plain, "--reference", tmp_path / "ref.npz", "--backends", "onnxruntime")
    assert result.exit_code == 2 and "not a readable .npz" in result.output, result.output


def test_a_person_class_beyond_int64_is_refused(tmp_path):
    from graphsurgery.chaining import chain

    result = invoke("chain", tmp_path / "d.onnx", tmp_path / "p.onnx", "-o", tmp_path / "c.onnx",
                    "--person-class", "9" * 30)
    assert result.exit_code == 2 and "--person-class" in result.output
    with pytest.raises(GraphsurgeryError, match="not a class index"):
        chain(tmp_path / "d.onnx", tmp_path / "p.onnx", tmp_path / "c.onnx", person_class=2**70)


def test_an_input_shape_given_twice_is_refused(plain, tmp_path):
    result = invoke("convert", plain, "-o", tmp_path / "m.xml", "--input-shape", "input=1,3,256,192",
                    "--input-shape", "input=2,3,256,192")
    assert result.exit_code == 2 and "names 'input' twice" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("chart, json_name, needle", [
    ("bench.out", None, "cannot be written as '.out'"),  # was an internal error from matplotlib after the timing
    ("bench.png", "bench.png", "--chart and --json name the same file"),
    ("missing/bench.png", None, "folder does not exist"),
])
def test_bench_refuses_a_chart_it_cannot_write_before_timing(plain, tmp_path, monkeypatch, chart, json_name, needle):
    def timing(*args, **kwargs):
        raise AssertionError("the chart must be refused before the timing")

    monkeypatch.setattr("graphsurgery.benchmark.run_bench", timing)
    extra = ["--json", tmp_path / json_name] if json_name else []
    result = invoke("bench", CROP, plain, "--iterations", "1", "--warmup", "0", "--chart", tmp_path / chart, *extra)
    assert result.exit_code == 2 and needle in result.output, result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--iterations", "--warmup"])
def test_bench_rounds_are_bounded(plain, option):
    result = invoke("bench", CROP, plain, option, "9" * 30)
    assert result.exit_code == 2 and option in result.output and "100000" in result.output


def test_the_chart_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import matplotlib.figure

    from graphsurgery.chart import write_chart

    result = SimpleNamespace(pipelines=[{"label": "a", "precision": "f32", "precision_requested": "f32",
                                         "frames_per_second": {"median": 10.0}}], settings={"batch": 1, "threads": 1,
                                                                                          "iterations": 1},
                             mode="throughput", load_average={"after": [0.0]}, model="m.onnx", recipe="r")
    out = tmp_path / "c.png"
    assert write_chart(result, out) == out and out.read_bytes().startswith(b"\x89PNG")
    before = out.read_bytes()

    def half(self, stream, **kwargs):
        stream.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half)
    with pytest.raises(GraphsurgeryError, match="cannot write the chart"):
        write_chart(result, out)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.png"]


@pytest.mark.parametrize("command", ["apply", "verify"])
def test_an_output_ending_in_a_slash_is_not_written_as_a_file(plain, tmp_path, command):
    target = str(tmp_path / "out") + "/"
    args = (["apply", CROP, plain, "-o", target] if command == "apply" else
            ["verify", CROP, plain, "--random", "1", "--backends", "onnxruntime", "--json", target])
    result = invoke(*args)
    assert result.exit_code == 2 and "names a folder" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_numbers_in_boxes_still_load(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a.jpg": [[1, 2.5, 30, np.float64(40).item()]]}))
    assert load_boxes(path) == {"a.jpg": [(1.0, 2.5, 30.0, 40.0)]}


def _coco_set(tmp_path):
    from examples.synthetic_coco import write_coco_set

    annotations = write_coco_set(tmp_path / "images", images=2, seed=5)
    return annotations, json.loads(annotations.read_text())


def test_eval_coco_refuses_keypoint_lists_of_the_wrong_length(plain, tmp_path):
    """50 values instead of 17 × 3 used to end inside COCOeval as an internal error (exit 3)."""
    annotations, data = _coco_set(tmp_path)
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:50]
    annotations.write_text(json.dumps(data))
    result = invoke("eval-coco", CROP, plain, "--ann", annotations, "--images", tmp_path / "images")
    assert result.exit_code == 2 and "50 keypoint values, not 51" in result.output, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_eval_coco_refuses_a_detection_with_a_nan_score(plain, tmp_path):
    """A NaN score used to be taken as it is: the run reported parity at AP 0."""
    annotations, data = _coco_set(tmp_path)
    image = data["images"][0]
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps([{"image_id": image["id"], "category_id": 1, "bbox": [1, 1, 20, 30],
                                       "score": float("nan")}]))  # json writes NaN, as numpy-based writers do
    result = invoke("eval-coco", CROP, plain, "--ann", annotations, "--images", tmp_path / "images",
                    "--boxes", detections)
    assert result.exit_code == 2 and "nan in a score" in result.output, result.output


def test_verify_refuses_more_random_samples_than_it_can_hold(plain, tmp_path):
    """`--random 10000` was within the option's range but ran out of memory (every sample is made at once): the
    count is now bounded by the samples' size, up front, in one line."""
    from graphsurgery.samples import MAX_RANDOM_BYTES

    most = MAX_RANDOM_BYTES // (8 * 256 * 192 * 3)  # crops of the model's size, drawn as int64
    result = invoke("verify", CROP, plain, "--random", 10000, "--backends", "onnxruntime")
    assert result.exit_code == 2 and f"give between 1 and {most:,}" in result.output, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert invoke("verify", CROP, plain, "--random", 2, "--backends", "onnxruntime").exit_code == 0


def test_an_xml_that_is_no_ir_is_refused_before_openvino_reads_it(tmp_path):
    """OpenVINO tries every frontend on a file it cannot read (TensorFlow's logs native lines to stderr) and its
    report starts with a source location: a file without <net> is refused first, and reports say their reason."""
    from PIL import Image

    from graphsurgery.runners import _first_line

    xml = tmp_path / "model.xml"
    xml.write_text("hello, not xml at all\n")
    xml.with_suffix(".bin").write_bytes(b"\0" * 16)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    result = invoke("run", xml, image, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not an OpenVINO IR (no <net> element" in result.output, result.output
    assert not (tmp_path / "out").exists()
    report = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\nException from src/inference/src/"
                          "model_reader.cpp:148:\nUnable to read the model: \"m.xml\"\n\n")
    assert _first_line(report) == 'Unable to read the model: "m.xml"'
