"""Hostile or careless inputs end in one line and exit 2: files that are not regular files (a FIFO would block
forever, /dev/zero would fill the memory), boxes that are not finite numbers, numbers out of bounds."""

from __future__ import annotations

import json
import os

import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


@pytest.fixture(scope="module")
def patched(tiny_pose_models, tmp_path_factory):
    return apply(CROP, tiny_pose_models[(17, True)], tmp_path_factory.mktemp("hostile") / "p.onnx").output


def test_a_fifo_or_a_device_as_recipe_or_boxes_is_refused_without_reading(tiny_pose_models, patched, tmp_path):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: never, here
    one_line_exit_2(invoke("apply", fifo, tiny_pose_models[(17, False)], "--dry-run"), "not a regular file")
    one_line_exit_2(invoke("apply", "/dev/zero", tiny_pose_models[(17, False)], "--dry-run"), "not a regular file")
    one_line_exit_2(invoke("run", patched, PHOTO, "-o", tmp_path / "out", "--boxes", fifo, "--backend",
                           "onnxruntime"), "not a regular file")


@pytest.mark.parametrize("boxes, needle", [
    ({"astronaut.jpg": [[10, 10, float("nan"), 50]]}, "finite pixels"),
    ({"astronaut.jpg": [[10, 10, float("inf"), 50]]}, "finite pixels"),
    ({"astronaut.jpg": [[10, 10, 1e300, 50]]}, "finite pixels"),
    ({"astronaut.jpg": [["ten", 10, 20, 50]]}, "unexpected structure"),
    ({"astronaut.jpg": [[10, 10, 0, 50]]}, "w, h > 0"),
    ({"astronaut.jpg": [[1, 1, 5, 5]] * 100_001}, "more than 100,000 boxes"),
    ([1, 2, 3], "detection results need image file names"),
])
def test_boxes_that_are_not_finite_positive_numbers(patched, tmp_path, boxes, needle):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(boxes))  # NaN and Infinity are written as JSON allows Python to read them
    one_line_exit_2(invoke("run", patched, PHOTO, "-o", tmp_path / "out", "--boxes", path, "--backend",
                           "onnxruntime"), needle)
    assert not (tmp_path / "out").exists()


def test_deeply_nested_boxes_are_refused(patched, tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    one_line_exit_2(invoke("run", patched, PHOTO, "-o", tmp_path / "out", "--boxes", path, "--backend",
                           "onnxruntime"), "not a readable JSON file")


@pytest.mark.parametrize("args", [["--threads", "100000"], ["--threads", "0"]])
def test_thread_counts_are_bounded(patched, tmp_path, args):
    result = invoke("run", patched, PHOTO, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2 and "--threads" in result.output


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--random", str(10**9)], ["--seed", str(2**40)]])
def test_verify_numbers_are_bounded(tiny_pose_models, args):
    result = invoke("verify", CROP, tiny_pose_models[(17, False)], *args)
    assert result.exit_code == 2 and args[0] in result.output and "internal error" not in result.output


def test_the_python_api_bounds_threads_too(patched):
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.runners import open_runner

    with pytest.raises(GraphsurgeryError, match="100000 threads"):
        with open_runner("onnxruntime", patched, threads=100_000):
            pass


@pytest.mark.parametrize("value", ["[1, null, \"x\", [2]]", "[" * 100_000 + "]" * 100_000, "{\"a\": 1}", "null"])
def test_provenance_metadata_that_is_not_a_list_of_objects(tiny_pose_models, tmp_path, value):
    import onnx

    model = onnx.load(str(tiny_pose_models[(17, False)]))
    model.metadata_props.add(key="graphsurgery.provenance", value=value)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert invoke("inspect", path).exit_code == 0
    assert invoke("apply", CROP, path, "-o", tmp_path / "p.onnx").exit_code == 0


@pytest.mark.parametrize("location, needle", [
    ("weights\x00.bin", "no usable file name"),
    ("w" * 300 + ".bin", "cannot be opened"),  # longer than a file name may be
    ("loop.bin", "cannot be opened"),  # a symbolic link to itself
])
def test_external_data_names_that_are_no_file_names(tiny_pose_models, tmp_path, location, needle):
    import onnx

    model = onnx.load(str(tiny_pose_models[(17, False)]))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    del tensor.float_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    if location == "loop.bin":
        os.symlink("loop.bin", tmp_path / "loop.bin")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    one_line_exit_2(invoke("inspect", path), needle)
    one_line_exit_2(invoke("apply", CROP, path, "-o", tmp_path / "p.onnx"), needle)


def test_an_input_shape_beyond_32_bits_is_refused(tiny_pose_models, tmp_path):
    one_line_exit_2(invoke("convert", tiny_pose_models[(17, True)], "-o", tmp_path / "m.xml", "--input-shape",
                           "input=99999999999999999999,3,256,192"), "dims from 1 to")


def test_a_legal_long_output_name_is_written(tiny_pose_models, tmp_path):
    """245 characters is a legal file name; the staging folder beside it must not make it illegal."""
    out = tmp_path / ("p" * 240 + ".onnx")
    result = invoke("apply", CROP, tiny_pose_models[(17, False)], "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == [out.name]
