"""Hostile round 27: a seeded mutation fuzzer over the files commands read (ONNX models at the protobuf and byte
level, recipes, images, boxes and COCO files), each mutant of a valid input run through the CLI.

What it found: an external data entry with a key ONNX does not define made onnx print a warning on stderr each
time the entry was read (four lines around a successful `inspect`), and ONNX Runtime refused the model later
("model format error!"); one bit flipped in a field's tag made OpenVINO take the model for no ONNX and its
TensorFlow frontend log seven lines; a patched model damaged after apply wrote it (a Reshape's shape, an index)
failed in a `graphsurgery/…` node at run time, which `run` and `verify --patched` called "a graphsurgery bug".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError

from modelkit import damaged_patched, pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


# --- an external data entry with a key ONNX does not define ---------------------------------------------------


def _external_with_key(tmp_path: Path, key: str) -> Path:
    model = onnx.load(str(pose_model(tmp_path / "plain.onnx", dynamic_batch=True)))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    model.graph.initializer[0].external_data.add(key=key, value="1")
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    return tmp_path / "m.onnx"


def test_unknown_external_data_key_is_one_line_before_onnx_warns(tmp_path):
    model = _external_with_key(tmp_path, "bogus")
    before = model.read_bytes(), (tmp_path / "m.data").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # onnx's "Ignoring unknown external data key(s)" would be raised here
        one_line_exit_2(invoke("inspect", model), "m.onnx", "external data key 'bogus'", "conv.weight")
        one_line_exit_2(invoke("apply", RECIPES / "hrnet_coco_pose.yaml", model, "-o", tmp_path / "o.onnx"),
                        "external data key 'bogus'")
    assert (model.read_bytes(), (tmp_path / "m.data").read_bytes()) == before
    assert not (tmp_path / "o.onnx").exists()


def test_model_paths_reads_locations_without_warning(tmp_path):
    from graphsurgery.modelio import model_paths

    model = _external_with_key(tmp_path, "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model_paths(model) == [model, tmp_path / "m.data"]


# --- a patched model damaged after apply wrote it ----------------------------------------------------------------


def test_run_of_a_damaged_patched_model_is_the_files_fault_not_an_internal_error(tmp_path):
    _, damaged = damaged_patched(tmp_path)
    before = damaged.read_bytes()
    result = invoke("run", damaged, ROOT / "examples" / "images" / "astronaut.jpg", "-o", tmp_path / "out",
                    "--backend", "onnxruntime")
    one_line_exit_2(result, "damaged.onnx", "onnxruntime cannot run the model",
                    "graphsurgery/post/heatmap_argmax/Reshape", "apply the recipe to the plain model again")
    assert damaged.read_bytes() == before and not (tmp_path / "out").exists()


def test_a_failing_node_of_a_model_this_process_wrote_stays_a_bug(tmp_path):
    """The line above is for files the user gives; in a model the command itself made, graphsurgery's node failing
    is still an internal error (exc goes on)."""
    import shutil

    import pytest

    from graphsurgery.modelio import made_here
    from graphsurgery.runners import failed_run

    patched, _ = damaged_patched(tmp_path)
    copy = tmp_path / "copy.onnx"
    shutil.copy(patched, copy)
    assert made_here(patched) and not made_here(copy)
    feeds = {"input": np.zeros((1, 256, 192, 3), np.uint8)}
    failure = RuntimeError("Non-zero status code returned while running Reshape node. "
                           "Name:'graphsurgery/post/heatmap_argmax/Reshape'")
    with pytest.raises(RuntimeError):
        failed_run(failure, "onnxruntime", patched, feeds)
    with pytest.raises(GraphsurgeryError, match="apply the recipe to the plain model again"):
        failed_run(failure, "onnxruntime", copy, feeds)


# --- a field ONNX does not define at the top of the model --------------------------------------------------------


def test_model_with_an_unknown_field_is_refused_before_openvino_tries_its_other_frontends(tmp_path):
    """One bit flipped in the tag of `producer_name` (field 2 → field 10): onnx and ONNX Runtime skip the field,
    OpenVINO took the file for no ONNX model, and its TensorFlow frontend logged seven lines on stderr."""
    data = bytearray(pose_model(tmp_path / "plain.onnx").read_bytes())
    assert data[2] == 0x12  # ir_version (2 bytes), then producer_name's tag
    data[2] = 0x52
    model = tmp_path / "m.onnx"
    model.write_bytes(bytes(data))
    onnx.load(str(model))  # still parses
    one_line_exit_2(invoke("inspect", model), "m.onnx", "field ONNX does not define (number 10")
    assert model.read_bytes() == bytes(data)
