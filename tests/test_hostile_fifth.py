"""A fifth round of hostile or careless inputs (a red-team run): models that load but fail inside a runtime, or whose
inputs and outputs are no plain tensors, a report path that is /dev/stdout, a user's function that raises, an
empty output path, and stderr noise on success. Each ended in an internal error, replaced a link it should not have,
or printed other programs' warnings before it was fixed; now each is one line and exit 2 (or silence), and no input
changes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError

from conftest import RECIPES, ROOT
from modelkit import pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"



def runtime_failing_model(path):
    """A valid model (the checker passes) whose Reshape conflicts with its input only at run time: the batch comes
    from Shape, so neither shape inference nor compilation sees that 17·64·48 values cannot fill [N, 52225]."""
    proto = onnx.load(str(pose_model(path, dynamic_batch=True)))
    graph = proto.graph
    graph.node[0].output[0] = "conv_out"
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (
        ("zero", [0]), ("one", [1]), ("bad", [17 * 64 * 48 + 1]), ("hw", [-1, 17, 64, 48])))
    graph.node.extend([helper.make_node("Shape", ["conv_out"], ["s"]),
                       helper.make_node("Slice", ["s", "zero", "one"], ["b"]),
                       helper.make_node("Concat", ["b", "bad"], ["shp"], axis=0),
                       helper.make_node("Reshape", ["conv_out", "shp"], ["flat"], name="flat"),
                       helper.make_node("Relu", ["flat"], ["flat2"]),
                       helper.make_node("Reshape", ["flat2", "hw"], ["heatmaps"])])
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fifth")
    plain = runtime_failing_model(folder / "shaky.onnx")
    return plain, apply(CROP, plain, folder / "shaky_patched.onnx").output


# --- a model that loads but fails at inference (was an internal error) -------------------------------------------

@pytest.mark.parametrize("backend, needle", [("onnxruntime", "cannot be reshaped"),
                                             ("openvino", "conflicts with the reshape pattern")])
def test_a_model_that_fails_inside_a_runtime_is_the_models_fault(failing, tmp_path, backend, needle):
    _, patched = failing
    before = patched.read_bytes()
    result = invoke("run", patched, PHOTO, "-o", tmp_path / "out", "--backend", backend)
    runtime = "onnxruntime" if backend == "onnxruntime" else "OpenVINO"
    one_line_exit_2(result, "shaky_patched.onnx", f"{runtime} cannot run the model", needle,
                    f"runs in {runtime} alone")
    assert patched.read_bytes() == before and not (tmp_path / "out").exists()


def test_verify_names_the_plain_model_that_fails_at_run_time(failing):
    plain, _ = failing
    one_line_exit_2(invoke("verify", CROP, plain, "--random", 1, "--backends", "onnxruntime"), "shaky.onnx",
                    "onnxruntime cannot run the model")


def test_feeds_that_do_not_fit_the_model_stay_a_bug(plain):
    """Inputs of the wrong type are graphsurgery's doing, not the model's: not turned into a user error."""
    from graphsurgery.runners import open_runner

    with open_runner("onnxruntime", plain) as run:
        with pytest.raises(Exception) as caught:
            run({"input": np.zeros((1, 3, 256, 192), np.float64)})
    assert not isinstance(caught.value, GraphsurgeryError)


def test_runtime_reports_are_told_by_their_reason_not_their_source_location():
    from graphsurgery.runners import _first_line

    report = RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:224:\nException from src/plugins/"
                          "intel_cpu/src/node.cpp:794:\n[CPU] Reshape node with name 'flat' Check 'a == b' failed at "
                          "src/x/reshape.cpp:77:\n[cpu]reshape: the shape of input data (1.17) conflicts\n\n")
    assert _first_line(report) == "[cpu]reshape: the shape of input data (1.17) conflicts"
    ort = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. "
                       "Status Message: /onnxruntime_src/onnxruntime/core/reshape_helper.h:91 onnxruntime::Reshape"
                       "Helper::ReshapeHelper(const TensorShape&, bool) size was false. Cannot reshape.")
    assert _first_line(ort) == ("Non-zero status code returned while running Reshape node. Status Message: size was "
                                "false. Cannot reshape.")


# --- models whose inputs or outputs are no plain tensors ---------------------------------------------------------

def _edited(tmp_path, edit):
    proto = onnx.load(str(pose_model(tmp_path / "m.onnx")))
    edit(proto)
    path = tmp_path / "odd.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def _sequence_output(proto):
    proto.graph.node.append(helper.make_node("SequenceConstruct", ["heatmaps"], ["seq"]))
    proto.graph.output.append(helper.make_value_info("seq", helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 17, 64, 48]))))


def _sequence_input(proto):
    proto.graph.input.insert(0, helper.make_value_info("sq", helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [1]))))


@pytest.mark.parametrize("edit, needle", [(_sequence_output, "output 'seq' is a sequence, not a tensor"),
                                          (_sequence_input, "input 'sq' is a sequence, not a tensor")])
def test_inputs_and_outputs_that_are_no_tensors_are_refused(tmp_path, edit, needle):
    """A sequence output was KeyError: 0 in apply; a sequence input went through apply, then run and verify failed."""
    model = _edited(tmp_path, edit)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(CROP.read_text().replace("output:\n", "output:\n  target: heatmaps\n")
                      .replace("input:\n", "input:\n  target: input\n"))
    one_line_exit_2(invoke("apply", recipe, model, "-o", tmp_path / "p.onnx"), "odd.onnx", needle)
    assert not (tmp_path / "p.onnx").exists()


def test_an_input_that_is_also_an_output_is_refused(tmp_path):
    """The pass-through output came out renamed 'graphsurgery/pre/input' (the normalised float tensor), and verify
    then failed a legal model."""
    model = _edited(tmp_path, lambda proto: proto.graph.output.append(
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 192])))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(CROP.read_text().replace("output:\n", "output:\n  target: heatmaps\n"))
    one_line_exit_2(invoke("apply", recipe, model, "-o", tmp_path / "p.onnx"), "input 'input' is also an output",
                    "remove 'input' from the model's outputs")
    assert not (tmp_path / "p.onnx").exists()


# --- paths -------------------------------------------------------------------------------------------------------

def test_a_report_path_linking_to_an_open_file_is_not_replaced(plain, tmp_path):
    """`--json /dev/stdout > file`: /dev/stdout links to /proc/self/fd/1, a regular file then, so the report was
    renamed over the link and /dev/stdout became a file (as root). Here a link of our own stands in for it."""
    with open(tmp_path / "captured.txt", "w") as stream:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{stream.fileno()}")
        result = invoke("verify", CROP, plain, "--random", 1, "--backends", "onnxruntime", "--json", link)
    one_line_exit_2(result, "a link to an open file of the process")
    assert link.is_symlink() and os.readlink(link).startswith("/proc/self/fd/")


@pytest.mark.parametrize("command", ["apply", "chain"])
def test_an_empty_output_path_is_refused(plain, tmp_path, command):
    """`-o "$OUT"` with OUT unset: apply ended in an internal error (PosixPath('.') has an empty name)."""
    args = ["apply", CROP, plain, "-o", ""] if command == "apply" else ["chain", plain, plain, "-o", ""]
    result = invoke(*args)
    assert result.exit_code == 2 and "an empty path names no file" in result.output, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


# --- inputs that are legal but unusual ---------------------------------------------------------------------------

def test_a_boxes_file_with_a_byte_order_mark_is_read(tmp_path):
    """Notepad and PowerShell write UTF-8 with a BOM: it was 'not a readable JSON file'."""
    from graphsurgery.boxes import load_boxes

    path = tmp_path / "boxes.json"
    path.write_bytes(b'\xef\xbb\xbf{"astronaut.jpg": [[10, 10, 100, 100]]}')
    assert [tuple(box) for box in load_boxes(path)["astronaut.jpg"]] == [(10, 10, 100, 100)]


def test_a_reference_pipeline_that_raises_is_the_users_to_fix(plain, tmp_path, monkeypatch):
    (tmp_path / "brokenpipeline.py").write_text("def answers(feeds):\n    raise KeyError('heatmap')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("verify", CROP, plain, "--random", 1, "--backends", "onnxruntime", "--reference-pipeline",
                    "brokenpipeline:answers")
    one_line_exit_2(result, "the reference pipeline (--reference-pipeline): brokenpipeline:answers raised KeyError",
                    "see its traceback")


# --- other programs' noise on stderr -----------------------------------------------------------------------------

def _damaged(data: bytes) -> bytes:
    flipped = bytearray(data)
    for at in range(len(data) // 2, len(data) // 2 + 200, 7):
        flipped[at] ^= 0x55
    return bytes(flipped)


@pytest.mark.parametrize("damage, words", [(lambda data: data[:30_000], "Premature end of JPEG file"),
                                           (_damaged, "Corrupt JPEG data")], ids=["truncated", "corrupt"])
def test_a_damaged_jpeg_decodes_with_one_note_of_ours_not_libjpegs_warning(tmp_path, capfd, damage, words):
    """libjpeg's warning is not printed as it is; the image decodes (its missing part grey, as the authors' loader
    has it), and one line of ours names it, once however often it is read (it was decoded without a word)."""
    from graphsurgery.images import read_image

    path = tmp_path / "cut.jpg"
    path.write_bytes(damage(PHOTO.read_bytes()))
    image = read_image(path)
    read_image(path)
    lines = capfd.readouterr().err.splitlines()
    assert image.ndim == 3
    assert len(lines) == 1 and lines[0].startswith(f"note: {path}: the JPEG is damaged or cut short"), lines
    assert words in lines[0]


def test_a_sound_jpeg_and_a_png_decode_without_a_word(tmp_path, capfd):
    from graphsurgery.images import opencv, read_image

    png = tmp_path / "photo.png"
    png.write_bytes(opencv().imencode(".png", read_image(PHOTO))[1].tobytes())
    assert read_image(png).ndim == 3
    assert capfd.readouterr().err == ""


def test_an_unwritable_home_leaves_stderr_empty(plain, tmp_path):
    """matplotlib warned in two lines that it could not make its config folder, onnxruntime in colour that it could
    not store a telemetry id: a successful bench --chart printed three lines of others' warnings."""
    env = {**os.environ, "HOME": "/proc/nonexistent"}
    env.pop("MPLCONFIGDIR", None)
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "bench", str(CROP), str(plain), "--iterations", "1",
                           "--warmup", "0", "--batch", "1", "--chart", str(tmp_path / "c.png")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "c.png").stat().st_size > 0


def test_a_model_without_joints_is_refused_when_patched(tmp_path):
    """A Conv with 0 output channels gives heatmaps [1, 0, 64, 48]: apply passed, and verify's numpy decode then
    ended in an internal error (cannot reshape an array of size 0)."""
    model = pose_model(tmp_path / "nojoints.onnx", joints=0)
    before = model.read_bytes()
    result = invoke("apply", CROP, model, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "no joints (K = 0)")
    assert not (tmp_path / "out.onnx").exists() and model.read_bytes() == before


def test_without_a_memory_file_a_damaged_jpeg_decodes_in_silence(tmp_path, capfd, monkeypatch):
    """Where os.memfd_create is missing or refused, the decoder's words go to /dev/null: the image still decodes,
    and neither libjpeg's warning nor a note of ours is printed."""
    from graphsurgery import images

    def refused(*args):
        raise OSError("memfd_create refused")

    monkeypatch.setattr(images.os, "memfd_create", refused)
    path = tmp_path / "cut.jpg"
    path.write_bytes(PHOTO.read_bytes()[:30_000])
    assert images.read_image(path).ndim == 3
    assert capfd.readouterr().err == ""
