"""A tenth round of hostile or careless inputs (a red-team run of `chain`, `run` on large and odd image folders, and
OpenVINO IRs whose .bin is missing or another's). Found: `chain --check a.jpg -o a.jpg --force` wrote the model over
the image (the --check images were not inputs), and an unreadable --check image left the chained model behind; a
detector whose outputs the glue cannot take (boxes of 5 values, a float or [1, 1] `count`, `scores` of other rows
than `boxes`, a batch of 2) was "the patched model fails the ONNX checker — report this" naming the output (or,
under --check, an internal error), one of constants made OpenVINO die of SIGFPE, and a pose model taking one box at
a time went through; `run` checked each of its results against every input image (3,000 images: 18 million
comparisons, past a minute before anything was written) and refused a result landing on an image (`-o` on the image
folder, run twice) only after every image had run; a `--json` report named like the model's external data file
(`verify`, `bench`) or an IR's .bin (`verify --patched m.xml --json m.bin`) replaced the weights with the report,
and `run` replaced a result hard-linked to its IR's .bin; an IR whose .bin is missing, a FIFO or a folder was "no
such IR" (its .xml is there). Each is now one line and exit 2, with no input changed."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.pose import run_pose

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


# --- chain --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain_models(chain_patched) -> tuple:
    """The patched detector (80 classes) and top-down pose model (conftest's `chain_patched`)."""
    return chain_patched["detector"], chain_patched["pose"]


@pytest.mark.parametrize("spelling", ["the image", "a symlink to it", "the image in a --check folder"])
def test_chain_never_writes_over_a_check_image(chain_models, tmp_path, spelling):
    image = tmp_path / "a.jpg"
    shutil.copy(PHOTO, image)
    out, check = image, image
    if spelling == "a symlink to it":
        out = tmp_path / "chained.onnx"
        out.symlink_to(image)
    elif spelling == "the image in a --check folder":
        check = tmp_path
    before = digest(image, *chain_models)
    one_line_exit_2(invoke("chain", *chain_models, "-o", out, "--check", check, "--force"),
                    "the output would overwrite an input of this command", str(image))
    assert digest(image, *chain_models) == before


def test_chain_reads_its_check_images_before_writing(chain_models, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a JPEG")
    one_line_exit_2(invoke("chain", *chain_models, "-o", tmp_path / "chained.onnx", "--check", bad),
                    str(bad), "not a readable JPEG or PNG image")
    assert not (tmp_path / "chained.onnx").exists()


def test_chain_api_takes_the_files_it_must_not_replace(chain_models, tmp_path):
    from graphsurgery.chaining import chain

    shutil.copy(PHOTO, tmp_path / "a.jpg")
    with pytest.raises(GraphsurgeryError, match="would overwrite an input"):
        chain(*chain_models, tmp_path / "a.jpg", force=True, also_reads=[tmp_path / "a.jpg"])
    assert (tmp_path / "a.jpg").read_bytes() == PHOTO.read_bytes()


def _detector(path, **outputs):
    """A detector-shaped model: the four outputs as constants (`live`: boxes, scores, classes and count plus 0 × the
    image's mean, so that they depend on it)."""
    from onnx import TensorProto, helper, numpy_helper

    values = {"boxes": np.array([[[10, 10, 50, 80], [0, 0, 5, 5]]], np.float32),
              "scores": np.array([[0.9, 0.5]], np.float32), "classes": np.array([[0, 1]], np.int64),
              "count": np.array([2], np.int64)}
    values.update(outputs)
    live = values.pop("live", True)
    nodes = [helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["pixels"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    for name, value in values.items():
        nodes.append(helper.make_node("Constant", [], [f"{name}_c" if live else name],
                                      value=numpy_helper.from_array(value, name)))
        if live:
            nothing = "nothing" if value.dtype == np.float32 else f"{name}_nothing"
            if nothing != "nothing":
                nodes.append(helper.make_node("Cast", ["nothing"], [nothing], to=TensorProto.INT64))
            nodes.append(helper.make_node("Add", [f"{name}_c", nothing], [name]))
    graph = helper.make_graph(
        nodes, "detector", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "H", "W", 3])],
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
         for name, value in values.items()], [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("outputs, needle", [
    ({"boxes": np.zeros([1, 2, 5], np.float32)}, "'boxes' is float32 [1, D, 4] in a chain, not float32 [1, 2, 5]"),
    ({"count": np.array([2.0], np.float32)}, "output 'count' is int64 [1] in a chain, not float32 [1]"),
    ({"count": np.array([[2]], np.int64)}, "output 'count' is int64 [1] in a chain, not int64 [1, 1]"),
    ({"scores": np.zeros([1, 3], np.float32)}, "output 'scores' is float32 [1, D = 2] in a chain, not float32 [1, 3]"),
    ({"boxes": np.zeros([2, 2, 4], np.float32)}, "'boxes' is float32 [1, D, 4] in a chain, not float32 [2, 2, 4]"),
    ({"live": False}, "the detector's output 'boxes' does not depend on its image"),
], ids=["boxes-of-5", "float-count", "count-rank-2", "rows-differ", "batch-2", "constants"])
def test_chain_names_what_is_wrong_with_the_detectors_outputs(chain_models, tmp_path, outputs, needle):
    detector = _detector(tmp_path / "detector.onnx", **outputs)
    one_line_exit_2(invoke("chain", detector, chain_models[1], "-o", tmp_path / "chained.onnx"), str(detector),
                    needle)
    assert not (tmp_path / "chained.onnx").exists()


def test_a_detector_shaped_model_that_reads_the_image_chains(chain_models, tmp_path):
    detector = _detector(tmp_path / "detector.onnx")
    assert invoke("chain", detector, chain_models[1], "-o", tmp_path / "chained.onnx").exit_code == 0


def test_chain_names_a_pose_model_whose_boxes_the_glue_cannot_feed(chain_models, tmp_path):
    from onnx import TensorProto

    model = onnx.load(str(chain_models[1]))
    boxes = next(value for value in model.graph.input if value.name == "boxes")
    boxes.type.tensor_type.shape.dim[0].dim_value = 1  # one person at a time: the detector finds any number
    onnx.save(model, str(tmp_path / "pose.onnx"))
    assert boxes.type.tensor_type.elem_type == TensorProto.FLOAT
    one_line_exit_2(invoke("chain", chain_models[0], tmp_path / "pose.onnx", "-o", tmp_path / "chained.onnx"),
                    str(tmp_path / "pose.onnx"), "input 'boxes' is float32 [?, 4] in a chain, not float32 [1, 4]")


# --- run on many images, and into its own image folder --------------------------------------------------------------

def test_run_checks_its_results_against_its_inputs_in_linear_time(patched, tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    tiny = Image.new("RGB", (4, 4), (10, 20, 30))
    count = 150
    for index in range(count):
        tiny.save(folder / f"i{index:04d}.jpg")
    calls = []
    resolve = pathlib.Path.resolve
    monkeypatch.setattr(pathlib.Path, "resolve", lambda self, *a, **k: calls.append(1) or resolve(self, *a, **k))
    run_pose(patched, folder, tmp_path / "out", backend="onnxruntime")
    assert len(list((tmp_path / "out").glob("*_pose.jpg"))) == count
    assert len(calls) < 20 * count  # each of 300 results against each of 150 images: 2 × 45,000 before


def test_run_into_its_image_folder_again_is_refused_before_the_work(patched, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "a.jpg")
    run_pose(patched, folder, folder, backend="onnxruntime")  # a_pose.jpg and a_heatmaps.jpg are images now
    before = digest(*sorted(folder.iterdir()))
    seen = []
    with pytest.raises(GraphsurgeryError, match="would overwrite an input"):
        run_pose(patched, folder, folder, backend="onnxruntime", on_image=seen.append)
    assert seen == [] and digest(*sorted(folder.iterdir())) == before


# --- an IR's .bin, and models' external data, as inputs ------------------------------------------------------------

@pytest.fixture(scope="module")
def ir(patched, tmp_path_factory):
    xml = tmp_path_factory.mktemp("ir10") / "m.xml"
    assert invoke("convert", patched, "-o", xml).exit_code == 0
    return xml


@pytest.mark.parametrize("bin_file, needle", [
    (None, "the IR's weights file m.bin is missing"),
    (os.mkfifo, "the IR's weights file m.bin is not a regular file"),
    (pathlib.Path.mkdir, "the IR's weights file m.bin is not a regular file"),
], ids=["missing", "fifo", "folder"])
def test_an_ir_without_its_bin_names_the_bin(ir, tmp_path, bin_file, needle):
    shutil.copy(ir, tmp_path / "m.xml")
    if bin_file is not None:
        bin_file(tmp_path / "m.bin")
    one_line_exit_2(invoke("run", tmp_path / "m.xml", PHOTO, "-o", tmp_path / "out"), str(tmp_path / "m.xml"),
                    needle)
    assert not (tmp_path / "out").exists()


def test_run_never_replaces_a_result_linked_to_its_irs_bin(ir, tmp_path):
    for name in ("m.xml", "m.bin"):
        shutil.copy(ir.with_name(name), tmp_path / name)
    out = tmp_path / "out"
    assert invoke("run", tmp_path / "m.xml", PHOTO, "-o", out).exit_code == 0
    (out / "keypoints.json").unlink()
    os.link(tmp_path / "m.bin", out / "keypoints.json")  # an earlier run's result, now the IR's weights
    before = digest(tmp_path / "m.xml", tmp_path / "m.bin")
    one_line_exit_2(invoke("run", tmp_path / "m.xml", PHOTO, "-o", out), "would overwrite an input",
                    str(tmp_path / "m.bin"))
    assert digest(tmp_path / "m.xml", tmp_path / "m.bin") == before and os.path.samefile(out / "keypoints.json",
                                                                                          tmp_path / "m.bin")


def test_verify_report_never_replaces_an_irs_bin(plain, ir, tmp_path):
    for name in ("m.xml", "m.bin"):
        shutil.copy(ir.with_name(name), tmp_path / name)
    before = digest(tmp_path / "m.xml", tmp_path / "m.bin")
    one_line_exit_2(invoke("verify", CROP, plain, "--patched", tmp_path / "m.xml", "--backends", "openvino",
                           "--random", 2, "--json", tmp_path / "m.bin"), "would overwrite an input")
    assert digest(tmp_path / "m.xml", tmp_path / "m.bin") == before


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_reports_never_replace_a_models_external_data(plain, tmp_path, command):
    model = tmp_path / "p.onnx"
    onnx.save(onnx.load(str(plain)), str(model), save_as_external_data=True, location="p.data", size_threshold=0)
    before = digest(model, tmp_path / "p.data")
    extra = ["--random", 2] if command == "verify" else ["--iterations", 1, "--warmup", 0]
    one_line_exit_2(invoke(command, CROP, model, *extra, "--json", tmp_path / "p.data"), "would overwrite an input",
                    str(tmp_path / "p.data"))
    assert digest(model, tmp_path / "p.data") == before
