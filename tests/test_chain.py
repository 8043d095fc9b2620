"""`graphsurgery chain`: a patched detector feeding a patched top-down pose model in one graph (image in, every
person's box, score and keypoints out), against the two models run one after the other, on both runtimes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from graphsurgery.api import apply
from graphsurgery.chaining import chain, verify_chain
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.images import read_image
from graphsurgery.runners import BACKENDS, open_runner

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "examples" / "images"


@pytest.fixture(scope="module")
def patched(chain_patched) -> dict[str, Path]:
    return chain_patched


def photos() -> list[np.ndarray]:
    return [read_image(IMAGES / name)[None] for name in ("astronaut.jpg", "cameraman.jpg")]


def test_the_chained_model_gives_the_two_models_answers(patched, tmp_path):
    chained = chain(patched["detector"], patched["pose"], tmp_path / "chained.onnx").written[-1]
    rows = verify_chain(chained, patched["detector"], patched["pose"], photos())
    assert {row["backend"] for row in rows} == set(BACKENDS)
    assert all(row["people"] > 0 for row in rows)
    assert max(max(row[k] for k in ("boxes", "scores", "keypoints", "keypoint_scores")) for row in rows) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_people_are_the_detectors_person_rows_in_its_order(patched, tmp_path, backend):
    """Independent of the glue's twin: the detector's own outputs, read row by row."""
    chained = chain(patched["detector"], patched["pose"], tmp_path / "chained.onnx").written[-1]
    image = photos()[0]
    with open_runner(backend, patched["detector"]) as detect, open_runner(backend, chained) as run:
        found, got = detect({"image": image}), run({"image": image})
    people = [row for row in range(int(found["count"][0])) if found["classes"][0, row] == 0]
    assert len(people) > 0 and got["person_boxes"].shape == (len(people), 4)
    np.testing.assert_array_equal(got["person_boxes"], found["boxes"][0, people])
    np.testing.assert_array_equal(got["person_scores"], found["scores"][0, people])
    assert got["keypoints"].shape == (len(people), 17, 2) and got["keypoint_scores"].shape == (len(people), 17, 1)


def test_another_class_and_a_class_never_found(patched, tmp_path):
    for person_class, expected_people in ((1, None), (79, 0)):  # 79: a class the stand-in detector never fires
        chained = chain(patched["detector"], patched["pose"], tmp_path / f"chained{person_class}.onnx",
                        person_class=person_class).written[-1]
        rows = verify_chain(chained, patched["detector"], patched["pose"], photos(), person_class=person_class)
        assert max(max(row[k] for k in ("boxes", "keypoints")) for row in rows) == 0.0
        if expected_people is not None:
            assert all(row["people"] == expected_people for row in rows)
            with open_runner("openvino", chained) as run:
                got = run({"image": photos()[0]})
            assert got["person_boxes"].shape == (0, 4) and got["keypoints"].shape == (0, 17, 2)


def test_a_check_on_images_where_the_detector_finds_nobody_fails(patched, tmp_path):
    """Agreement on no person compares no keypoints: it PASSed (a head of 1e37 boxes found nobody, round 34)."""
    args = ["chain", str(patched["detector"]), str(patched["pose"]), "-o", str(tmp_path / "c.onnx"), "--check",
            str(IMAGES / "astronaut.jpg")]
    nobody = CliRunner().invoke(cli, [*args, "--person-class", "79"])  # a class the stand-in never fires
    assert nobody.exit_code == 1 and "found nobody (class 79)" in nobody.output, nobody.output
    assert "PASS" not in nobody.output and (tmp_path / "c.onnx").exists()
    people = CliRunner().invoke(cli, [*args, "--force"])
    assert people.exit_code == 0 and "PASS" in people.output, people.output


def test_refusals_name_the_fix_and_leave_the_inputs_alone(patched, tmp_path):
    digests = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in patched.items()}
    with pytest.raises(GraphsurgeryError, match="not a patched detector"):
        chain(patched["pose"], patched["pose"], tmp_path / "x.onnx")
    with pytest.raises(GraphsurgeryError, match="not a patched top-down pose model"):
        chain(patched["detector"], patched["plain_pose"], tmp_path / "x.onnx")
    out = tmp_path / "exists.onnx"
    out.write_bytes(b"keep")
    with pytest.raises(GraphsurgeryError, match="exists"):
        chain(patched["detector"], patched["pose"], out)
    assert out.read_bytes() == b"keep" and not (tmp_path / "x.onnx").exists()
    assert digests == {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in patched.items()}


def test_cli_chains_checks_and_the_result_converts(patched, tmp_path):
    out = tmp_path / "chained.onnx"
    result = CliRunner().invoke(cli, ["chain", str(patched["detector"]), str(patched["pose"]), "-o", str(out),
                                      "--check", str(IMAGES)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "PASS: the chained model gives the two models' answers" in result.output
    converted = CliRunner().invoke(cli, ["convert", str(out), "-o", str(tmp_path / "chained.xml")])
    assert converted.exit_code == 0, converted.output
    with open_runner("openvino", tmp_path / "chained.xml") as run:
        got = run({"image": photos()[1]})
    assert got["keypoints"].shape[0] == got["person_boxes"].shape[0] > 0


def test_run_takes_the_chained_model_whole_images_alone(patched, tmp_path):
    import json

    chained = chain(patched["detector"], patched["pose"], tmp_path / "chained.onnx").written[-1]
    result = CliRunner().invoke(cli, ["run", str(chained), str(IMAGES), "-o", str(tmp_path / "out"),
                                      "--backend", "onnxruntime"], terminal_width=200)
    assert result.exit_code == 0, result.output
    people = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    with open_runner("onnxruntime", chained) as run:
        found = [run({"image": image})["person_boxes"] for image in photos()]
    assert len(people) == sum(len(boxes) for boxes in found) > 0
    x1, y1, x2, y2 = found[0][0]  # the first person of the first image (astronaut.jpg, image id 1), as COCO x, y, w, h
    first = next(p for p in people if p["image_id"] == 1)
    np.testing.assert_allclose(first["bbox"], [x1, y1, x2 - x1, y2 - y1], rtol=1e-6)
    assert len(first["keypoints"]) == 17 * 3
    refused = CliRunner().invoke(cli, ["run", str(chained), str(IMAGES), "-o", str(tmp_path / "again"), "--boxes",
                                       str(tmp_path / "out" / "keypoints.json")])
    assert refused.exit_code == 2 and "finds the people itself" in refused.output


def test_models_of_two_opsets_are_refused(patched, tmp_path):
    from modelkit import pose_model

    older = apply(ROOT / "recipes" / "hrnet_coco_topdown.yaml", pose_model(tmp_path / "pose13.onnx", opset=13),
                  tmp_path / "pose13.patched.onnx").output
    with pytest.raises(GraphsurgeryError, match="the detector has opset 17 and the pose model 13"):
        chain(patched["detector"], older, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def _edited(path: Path, out: Path, edit) -> Path:
    import onnx

    model = onnx.load(str(path))
    edit(model.graph)
    onnx.save(model, str(out))
    return out


def test_outputs_the_chain_leaves_out_are_named_in_a_note(patched, tmp_path):
    """A pose model's second output (here `peaks`, a copy of its keypoints) is not in the chained model: it was
    dropped without a word (round 49)."""
    from onnx import TensorProto, helper

    def with_peaks(graph):
        graph.node.append(helper.make_node("Identity", ["keypoints"], ["peaks"]))
        graph.output.append(helper.make_tensor_value_info("peaks", TensorProto.FLOAT, ["people", 17, 2]))

    pose = _edited(patched["pose"], tmp_path / "peaks.onnx", with_peaks)
    result = chain(patched["detector"], pose, tmp_path / "chained.onnx")
    assert ("the chained model gives person_boxes, person_scores, keypoints, keypoint_scores; it leaves out the pose "
            "model's peaks (run the models one after the other for those)") in result.notes
    assert not any("leaves out" in note for note in chain(patched["detector"], patched["pose"],
                                                          tmp_path / "plain.onnx").notes)


def test_images_of_other_dims_are_refused_with_the_export_to_make(patched, tmp_path):
    """A pose model taking [N, H, W, 3] beside the detector's [1, H, W, 3]: the fix said to patch both with recipes
    that take the same image, which they were (round 49)."""
    def any_batch(graph):
        graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"

    pose = _edited(patched["pose"], tmp_path / "batch_n.onnx", any_batch)
    with pytest.raises(GraphsurgeryError, match=r"different images: .* fix: export both at the same image size, "
                                                r"batch 1"):
        chain(patched["detector"], pose, tmp_path / "chained.onnx")


def test_a_body_reading_the_graph_around_it_is_refused_in_one_line(patched, tmp_path):
    """A pose model whose keypoints pass through an If whose branches read a constant and a node's output of the
    main graph (valid for onnx's checker): onnx.compose misnamed the one and dropped the other's node, and `chain`
    ended in an internal error (round 75)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def through_if(graph):
        for node in graph.node:
            node.output[:] = ["raw" if name == "keypoints" else name for name in node.output]
        graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                                  numpy_helper.from_array(np.array(True), "yes")])
        branches = {key: helper.make_graph([helper.make_node(op, ["raw", "one"], ["out"])], op, [],
                                           [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
                    for key, op in (("then_branch", "Mul"), ("else_branch", "Div"))}
        graph.node.append(helper.make_node("If", ["yes"], ["keypoints"], name="wrap", **branches))

    pose = _edited(patched["pose"], tmp_path / "if.onnx", through_if)
    with pytest.raises(GraphsurgeryError, match=r"if.onnx: a body of an If, Loop or Scan \('Mul'\) reads 'one' from "
                                                r"the graph around it.* fix: export the model without control flow"):
        chain(patched["detector"], pose, tmp_path / "chained.onnx")
    assert not (tmp_path / "chained.onnx").exists()


def test_the_people_are_declared_under_one_name(patched, tmp_path):
    """Was: `person_boxes` and `person_scores` declared [people, …], `keypoints` and `keypoint_scores` [N, …] (the
    pose model's name for its boxes' count): one count under two names (round 99's leftover)."""
    import onnx

    chained = chain(patched["detector"], patched["pose"], tmp_path / "chained.onnx").written[-1]
    first = {value.name: value.type.tensor_type.shape.dim[0].dim_param for value in onnx.load(str(chained)).graph.output
             if value.name != "image"}
    assert first == dict.fromkeys(("person_boxes", "person_scores", "keypoints", "keypoint_scores"), "people")
    result = CliRunner().invoke(cli, ["inspect", str(chained)], terminal_width=200)
    assert result.exit_code == 0 and "'N'" not in result.output, result.output
