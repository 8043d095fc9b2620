"""Leftovers of the hardening issue (17), each fixed with the test that found it: `eval-coco --results` wrote each
results file atomically but not the set, so a failure or Ctrl-C halfway left this run's first files beside an
earlier run's others; an annotation file whose image width and height are not the image's (a folder of resized
copies) was evaluated in the wrong pixels, both pipelines agreeing on a wrong AP; a model of IR version 3 beside
opset 17 went through in silence; `chain --person-class 1000000` built a chain that finds nobody. Each is now one
line and exit 2 (or all-or-nothing results), with no input changed."""

from __future__ import annotations

import hashlib
import json
import shutil

import cv2
import onnx
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.coco import evaluate_coco
from graphsurgery.errors import GraphsurgeryError, ModelError
from graphsurgery.modelio import load_model

from conftest import RECIPES
from examples.synthetic_coco import joint_detector, write_coco_set

CROP = RECIPES / "hrnet_coco_pose.yaml"
TOPDOWN = RECIPES / "hrnet_coco_topdown.yaml"


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco11")
    annotations = write_coco_set(folder / "images", images=2, seed=0)
    return annotations, folder / "images", joint_detector(folder / "detector.onnx", opset=17)


# --- eval-coco --results: the set, not each file -------------------------------------------------------------------

def _interrupted_at_the_second_pipeline(monkeypatch):
    """Ctrl-C while the second pipeline runs (the first one's results are done)."""
    import graphsurgery.coco as coco_module

    run, calls = coco_module._run, []

    def second_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run(*args, **kwargs)

    monkeypatch.setattr(coco_module, "_run", second_interrupted)


def _earlier_run(coco, results) -> dict[str, str]:
    """The files an earlier, whole run left in `results`, by name, each marked as that run's."""
    annotations, images, detector = coco
    evaluate_coco(CROP, detector, annotations, images, backends=["onnxruntime"], results_dir=results)
    for path in results.glob("*patched-onnxruntime.json"):
        path.write_text(f'["earlier run: {path.name}"]')
    return {path.name: path.read_text() for path in results.iterdir()}


def test_eval_coco_results_of_an_interrupted_run_leave_the_earlier_set_whole(coco, tmp_path, monkeypatch):
    annotations, images, detector = coco
    results = tmp_path / "results"
    earlier = _earlier_run(coco, results)
    _interrupted_at_the_second_pipeline(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_coco(CROP, detector, annotations, images, backends=["onnxruntime"], results_dir=results)
    assert {path.name: path.read_text() for path in results.iterdir()} == earlier  # no mix, no scratch folder


def test_eval_coco_results_folder_appears_only_with_every_result(coco, tmp_path, monkeypatch):
    annotations, images, detector = coco
    results = tmp_path / "new" / "results"
    _interrupted_at_the_second_pipeline(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_coco(CROP, detector, annotations, images, backends=["onnxruntime"], results_dir=results)
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    report = evaluate_coco(CROP, detector, annotations, images, backends=["onnxruntime"], results_dir=results)
    assert sorted(path.name for path in results.iterdir()) == ["eval-coco.json", "patched-onnxruntime.json",
                                                               "unpatched-onnxruntime.json"]
    for pipeline in report.pipelines:
        assert len(json.loads((results / pipeline.results_file).read_text())) == report.people


def test_eval_coco_refuses_a_folder_named_like_a_results_file_before_the_work(coco, tmp_path):
    annotations, images, detector = coco
    results = tmp_path / "results"
    (results / "patched-onnxruntime.json").mkdir(parents=True)
    one_line_exit_2(invoke("eval-coco", CROP, detector, "--ann", annotations, "--images", images, "--backends",
                           "onnxruntime", "--results", results),
                    str(results / "patched-onnxruntime.json"), "a folder has the name of a results file")
    assert [path.name for path in results.iterdir()] == ["patched-onnxruntime.json"]


def test_eval_coco_results_on_a_full_disk_are_one_line_and_leave_the_earlier_set(coco, tmp_path, monkeypatch):
    """A results file that cannot be written (a full disk) is one line naming the folder and the fix; the earlier
    set stays, and no scratch folder."""
    import errno
    from pathlib import Path

    annotations, images, detector = coco
    results = tmp_path / "results"
    earlier = _earlier_run(coco, results)
    write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.endswith("-onnxruntime.json") and self.parent != results:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(GraphsurgeryError, match="cannot write the COCO results .No space left on device.*free disk "
                                                "space or choose another folder for the results") as error:
        evaluate_coco(CROP, detector, annotations, images, backends=["onnxruntime"], results_dir=results)
    assert "\n" not in str(error.value)
    assert {path.name: path.read_text() for path in results.iterdir()} == earlier


# --- eval-coco: the annotations' image sizes are the images' -------------------------------------------------------

@pytest.mark.parametrize("recipe", [CROP, TOPDOWN], ids=["crops", "top-down"])
def test_eval_coco_refuses_annotations_whose_image_size_is_not_the_images(coco, tmp_path, recipe):
    annotations, images, detector = coco
    data = json.loads(annotations.read_text())
    first = min(data["images"], key=lambda image: image["id"])
    first["width"], first["height"] = 1280, 960  # the original's size; the folder holds a copy at 640 × 480
    edited = tmp_path / "person_keypoints.json"
    edited.write_text(json.dumps(data))
    before = digest(edited, *images.iterdir())
    one_line_exit_2(invoke("eval-coco", recipe, detector, "--ann", edited, "--images", images, "--backends",
                           "onnxruntime", "--results", tmp_path / "results"),
                    f"{edited}: image {images / first['file_name']} is 640 × 480 px, but the annotations give it "
                    "1280 × 960", "not resized or rotated copies")
    assert not (tmp_path / "results").exists() and digest(edited, *images.iterdir()) == before


def test_eval_coco_refuses_a_folder_of_resized_copies(coco, tmp_path):
    annotations, images, detector = coco
    small = tmp_path / "small"
    small.mkdir()
    for path in images.glob("*.png"):
        cv2.imwrite(str(small / path.name), cv2.resize(cv2.imread(str(path)), (320, 240)))
    one_line_exit_2(invoke("eval-coco", CROP, detector, "--ann", annotations, "--images", small, "--backends",
                           "onnxruntime"),
                    str(annotations), "is 320 × 240 px, but the annotations give it 640 × 480")


# --- models: an IR version too old for the opset -------------------------------------------------------------------

def _pose(path, opset: int, ir_version: int):
    from quirkykit import pose

    return pose(path, opset=opset, ir_version=ir_version)  # initializers listed as inputs: valid IR 3 otherwise


def test_a_model_whose_ir_version_is_too_old_for_its_opset_is_refused(tmp_path):
    model = _pose(tmp_path / "ir3-opset17.onnx", opset=17, ir_version=3)
    onnx.checker.check_model(str(model), full_check=True)  # onnx's checker lets it by
    before = digest(model)
    one_line_exit_2(invoke("inspect", model), f"{model}: IR version 3 is too old for the opsets its ops come "
                    "from (ai.onnx 17), which need IR version 8", "set its ir_version to 8")
    one_line_exit_2(invoke("apply", CROP, model, "-o", tmp_path / "p.onnx"), "IR version 3 is too old")
    assert digest(model) == before and not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("opset, ir_version", [(9, 3), (17, 7), (17, 8)], ids=["ir3-opset9", "ir7-opset17", "exact"])
def test_an_ir_version_one_behind_its_opset_is_an_exporters_and_loads(tmp_path, opset, ir_version):
    """PyTorch 1.0 wrote IR 3 beside opset 9 (it shipped the opset before onnx released it with IR 4)."""
    assert load_model(_pose(tmp_path / "m.onnx", opset=opset, ir_version=ir_version)).proto.ir_version == ir_version


def test_an_ir_version_too_old_for_another_domain_the_model_uses_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5)],
                              "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 4)])
    model.ir_version = 7  # ai.onnx 13 came with IR 7, ai.onnx.ml 4 with IR 9
    onnx.save(model, str(tmp_path / "ml.onnx"))
    with pytest.raises(ModelError, match=r"IR version 7 is too old .*ai\.onnx\.ml 4\), which need IR version 9"):
        load_model(tmp_path / "ml.onnx")


# --- chain: a person class the detector has -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain_models(chain_patched) -> tuple:
    """The patched detector (80 classes) and top-down pose model (conftest's `chain_patched`)."""
    return chain_patched["detector"], chain_patched["pose"]


@pytest.mark.parametrize("person_class", [80, 1_000_000, 2**63 - 1])
def test_chain_refuses_a_person_class_beyond_the_detectors_classes(chain_models, tmp_path, person_class):
    detector, pose = chain_models
    before = digest(detector, pose)
    one_line_exit_2(invoke("chain", detector, pose, "-o", tmp_path / "chained.onnx", "--person-class", person_class),
                    f"{detector}: person class {person_class} is beyond the detector's classes (0 to 79)",
                    "--person-class")
    assert not (tmp_path / "chained.onnx").exists() and digest(detector, pose) == before


def test_chain_takes_the_detectors_last_class(chain_models, tmp_path):
    result = invoke("chain", *chain_models, "-o", tmp_path / "chained.onnx", "--person-class", 79)
    assert result.exit_code == 0 and "note:" not in result.output, result.output


def test_chain_says_when_it_cannot_check_the_person_class(chain_models, tmp_path):
    """A detector whose suppression is not graphsurgery's (here: its nodes renamed, as another tool may) does not
    say how many classes it has: the chain is written, and a note says the class is not checked."""
    detector = onnx.load(str(chain_models[0]))
    for node in detector.graph.node:
        node.name = node.name.replace("graphsurgery/post/nms/", "own_nms/")
    onnx.save(detector, str(tmp_path / "detector.onnx"))
    shutil.copy(chain_models[1], tmp_path / "pose.onnx")
    result = invoke("chain", tmp_path / "detector.onnx", tmp_path / "pose.onnx", "-o", tmp_path / "chained.onnx",
                    "--person-class", 1_000_000)
    assert result.exit_code == 0, result.output
    assert "note: the detector's class count cannot be read from its graph, so person class 1000000 is not " \
           "checked" in " ".join(result.output.split())
