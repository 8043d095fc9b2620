"""Hostile round 57: what the checks read one way and the runtimes another, and names at the system's limits.

External data offsets written as Python reads numbers but C++ does not (`1_6`, ` 16`, `+16`, `١٦`), keys given
twice, sparse initializers whose external data no check saw (and `--force` replaced), tensors whose values sit in
a typed field one too long or in a `segment`, output names of 255 bytes in multi-byte characters, a COCO
`file_name` holding a lone surrogate, a PNG declaring a 2 GB chunk, a JPEG of 200,000 scans, and an output that is
a mount point. Each test failed on the code before its fix.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.limits import write_fix

from examples.synthetic_coco import write_coco_set
from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"


def _external_weight(folder: Path, offset: str, length: str | None = None, extra=()) -> Path:
    """The pose model with its conv weight in `w.bin` after 16 bytes of padding, at the offset written `offset`
    (and the external data entries `extra` after its own)."""
    model = onnx.load(pose_model(folder / "plain.onnx"))
    weight = next(t for t in model.graph.initializer if t.name == "conv.weight")
    data = numpy_helper.to_array(weight).tobytes()
    (folder / "w.bin").write_bytes(bytes(16) + data)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="w.bin")
    weight.external_data.add(key="offset", value=offset)
    weight.external_data.add(key="length", value=str(len(data)) if length is None else length)
    for key, value in extra:
        weight.external_data.add(key=key, value=value)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("offset", ["1_6", " 16", "+16", "16 ", "١٦"])
def test_an_external_data_offset_is_plain_decimal_digits(tmp_path, offset):
    """Was (round 57): Python's int() read each as 16, so every check passed and `apply` wrote a patched model (its
    offsets rewritten as digits), while ONNX Runtime refused the plain model in verify ("check the model with
    `graphsurgery inspect`", which found nothing) and OpenVINO read `1_6` as 1: `convert` wrote an IR of other
    weights, exit 0, and `verify --backends openvino` compared garbage."""
    model = _external_weight(tmp_path, offset)
    before = model.read_bytes()
    one_line_exit_2(invoke("apply", RECIPE, model, "-o", tmp_path / "out.onnx"), "offset or length", "not a number")
    one_line_exit_2(invoke("convert", model, "-o", tmp_path / "out.xml"), "offset or length")
    assert model.read_bytes() == before and not (tmp_path / "out.onnx").exists() and not (tmp_path / "out.xml").exists()


def test_an_external_data_length_is_plain_decimal_digits_and_digits_are_taken(tmp_path):
    one_line_exit_2(invoke("apply", RECIPE, _external_weight(tmp_path, "16", "8_16"), "-o", tmp_path / "o.onnx"),
                    "offset or length")
    good = _external_weight(tmp_path, "16")
    assert invoke("apply", RECIPE, good, "-o", tmp_path / "o.onnx").exit_code == 0


@pytest.mark.parametrize(("extra", "needle"), [
    ((("location", "sub/w.bin"),), "'location' twice"),
    ((("offset", "0"),), "'offset' twice"),
    ((("basepath", "/tmp"),), "'basepath'"),
])
def test_an_external_data_key_given_twice_or_onnx_runtime_refuses_is_refused(tmp_path, extra, needle):
    """Was (round 57): of two `location` entries onnx's checker checked the first file and graphsurgery the last
    (`sub/w.bin`, then `w.bin`: two files, each judged by one reader), and ONNX Runtime refused the model in verify
    ("duplicate 'location' entries — fix: check the model with `graphsurgery inspect`", which found nothing); a
    `basepath` entry (onnx's Python reader takes it, onnx.proto does not define it) was "model format error!" there.
    `apply` wrote both models, exit 0."""
    model = _external_weight(tmp_path, "16", extra=extra)
    one_line_exit_2(invoke("apply", RECIPE, model, "-o", tmp_path / "out.onnx"), "conv.weight", needle)
    one_line_exit_2(invoke("inspect", model), needle)


def _sparse_external(folder: Path, length: int = 16) -> Path:
    """The pose model beside an unused sparse initializer whose 4 values are the first `length` bytes of data.bin."""
    (folder / "data.bin").write_bytes(bytes(16))
    model = onnx.load(pose_model(folder / "plain.onnx"))
    values = helper.make_tensor("sparse.values", TensorProto.FLOAT, [4], [0.0] * 4)
    values.ClearField("float_data")
    values.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "data.bin"), ("offset", "0"), ("length", str(length))):
        values.external_data.add(key=key, value=value)
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [17]))
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(("command", "out"), [("apply", "data.bin"), ("convert", "data.xml")])
def test_a_sparse_initializers_data_file_is_an_input(tmp_path, command, out):
    """Was (round 57): onnx's list of tensors leaves sparse ones out, so their data files were no input of the
    command: `apply m.onnx -o data.bin --force` replaced the sparse initializer's data with the patched model, and
    `convert -o data.xml --force` with the IR's weights, exit 0."""
    model = _sparse_external(tmp_path)
    before = (tmp_path / "data.bin").read_bytes()
    args = ("apply", RECIPE, model) if command == "apply" else ("convert", model)
    one_line_exit_2(invoke(*args, "-o", tmp_path / out, "--force"), "would overwrite an input")
    assert (tmp_path / "data.bin").read_bytes() == before
    assert invoke("apply", RECIPE, model, "-o", tmp_path / "o.onnx").exit_code == 0


def test_a_sparse_initializer_reading_past_its_data_file_is_refused(tmp_path):
    """Was (round 57): `inspect`, `apply` and `convert` took it (exit 0); ONNX Runtime refused the model in verify
    ("size to read: 32 given file_length: 16 — fix: check the model with `graphsurgery inspect`")."""
    one_line_exit_2(invoke("inspect", _sparse_external(tmp_path, length=32)), "sparse.values", "reads past the end")


def test_a_sparse_initializers_values_are_held_to_their_dims(tmp_path):
    """Was (round 57): values of 2 floats with 4 bytes more passed (only dense tensors were held to their dims);
    ONNX Runtime refused the plain model in verify ("raw_data size (12) does not match …")."""
    model = onnx.load(pose_model(tmp_path / "plain.onnx"))
    values = numpy_helper.from_array(np.array([1, 2], np.float32), "sparse.values")
    values.raw_data += bytes(4)
    indices = numpy_helper.from_array(np.array([0, 1], np.int64), "")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [17]))
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    one_line_exit_2(invoke("apply", RECIPE, tmp_path / "m.onnx", "-o", tmp_path / "o.onnx"), "sparse.values",
                    "12 bytes", "needs 8")


def _bias_changed(folder: Path, change) -> Path:
    model = onnx.load(pose_model(folder / "plain.onnx"))
    change(next(t for t in model.graph.initializer if t.name == "conv.bias"))
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_a_typed_field_holding_one_value_too_many_is_refused(tmp_path):
    """Was (round 57): only raw_data was held to the tensor's dims; a bias of 17 floats in float_data with an 18th
    passed the checker and `apply` (exit 0), then ONNX Runtime refused the plain model in verify and OpenVINO the
    patched one in convert ("change or remove that node"). Refused where raw_data's extra bytes are."""
    def one_more(tensor):
        values = numpy_helper.to_array(tensor).tolist()
        tensor.ClearField("raw_data")
        tensor.float_data.extend([*values, 1.0])

    model = _bias_changed(tmp_path, one_more)
    one_line_exit_2(invoke("apply", RECIPE, model, "-o", tmp_path / "out.onnx"), "conv.bias", "72 bytes", "needs 68")
    assert not (tmp_path / "out.onnx").exists()


def test_values_in_their_typed_field_are_taken(tmp_path):
    def typed(tensor):
        values = numpy_helper.to_array(tensor).tolist()
        tensor.ClearField("raw_data")
        tensor.float_data.extend(values)

    assert invoke("apply", RECIPE, _bias_changed(tmp_path, typed), "-o", tmp_path / "out.onnx").exit_code == 0


def test_a_tensor_stored_as_a_segment_is_refused(tmp_path):
    """Was (round 57): a tensor with a `segment` passed the checker, `inspect` and `apply`; OpenVINO refused the
    plain and the patched model ("Loading input model — fix: check the model with `graphsurgery inspect`")."""
    def segment(tensor):
        tensor.segment.begin, tensor.segment.end = 0, 5

    model = _bias_changed(tmp_path, segment)
    one_line_exit_2(invoke("apply", RECIPE, model, "-o", tmp_path / "out.onnx"), "conv.bias", "segment")
    one_line_exit_2(invoke("inspect", model), "segment")


@pytest.mark.parametrize("name", ["é" * 125 + ".onnx", "€" * 83 + ".onnx"])
def test_an_output_name_of_up_to_255_bytes_in_multibyte_characters_is_written(tmp_path, name):
    """Was (round 57): the scratch folder's name kept 200 *characters* of the output's, so a legal name of 125 `é`
    (255 bytes) made a scratch name of over 400 bytes: "cannot create files in the output folder (File name too
    long) — fix: choose a writable folder", of a writable folder. Cut at 200 bytes now; IRs and reports too."""
    assert len(name.encode()) <= 255
    plain = pose_model(tmp_path / "plain.onnx")
    result = invoke("apply", RECIPE, plain, "-o", tmp_path / name)
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).is_file()
    xml = "é" * 123 + "a.xml"
    assert invoke("convert", plain, "-o", tmp_path / xml).exit_code == 0 and (tmp_path / xml).is_file()
    report = "é" * 124 + "a.json"
    result = invoke("verify", RECIPE, plain, "--random", 1, "--backends", "onnxruntime", "--json", tmp_path / report)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / report).read_text())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_coco_file_name_holding_a_lone_surrogate_is_one_line(tmp_path):
    """Was (round 57): JSON's `\\ud800` escape gives a str no file name can hold, and eval-coco ended in "internal
    error (UnicodeEncodeError: … surrogates not allowed)", exit 3. (`\\udcff` is the byte 0xff, a name Linux
    allows, and is looked for as such.)"""
    annotations = write_coco_set(tmp_path / "coco", images=1, seed=0)
    data = json.loads(annotations.read_text())
    data["images"][0]["file_name"] = "\ud800.png"
    annotations.write_text(json.dumps(data))
    result = invoke("eval-coco", RECIPE, pose_model(tmp_path / "plain.onnx"), "--ann", annotations,
                    "--images", tmp_path / "coco", "--backends", "onnxruntime")
    one_line_exit_2(result, "person_keypoints.json", "lone surrogate")


def test_a_png_declaring_a_chunk_past_its_end_is_refused_before_opencv_allocates_it(tmp_path):
    """Was (round 57): a 141-byte PNG (its header 200 × 300) whose IDAT declares 2,147,483,647 bytes made OpenCV
    allocate the chunk before reading it: 2.2 GB for a file of 141 bytes (under a container's memory limit, the OOM
    killer), then "not a readable JPEG or PNG image (decoding failed)"."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(buffer, "PNG")
    good = buffer.getvalue()
    (tmp_path / "bomb.png").write_bytes(good[:33] + struct.pack(">I", 2**31 - 1) + b"IDAT" + bytes(100))
    (tmp_path / "good.png").write_bytes(good)
    patched = apply(RECIPE, pose_model(tmp_path / "plain.onnx"), tmp_path / "patched.onnx").output
    result = invoke("run", patched, tmp_path / "bomb.png", "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, "bomb.png", "IDAT chunk declares 2,147,483,647 bytes", "memory bomb")
    result = invoke("run", patched, tmp_path / "good.png", "-o", tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output


def test_a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded(tmp_path):
    """Was (round 57): libjpeg decodes every scan over the whole image, warning of nothing; a 2.9 MB progressive JPEG
    of 4000 × 4000 repeating its last scan 200,000 times held `run` in OpenCV for a minute (not a step the time
    limit bounds; hours at 100 million pixels). Here 64 × 64 and 1,100 copies, refused up front."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    (tmp_path / "scans.jpg").write_bytes(data[:last] + data[last:-2] * 1100 + b"\xff\xd9")
    (tmp_path / "progressive.jpg").write_bytes(data)
    patched = apply(RECIPE, pose_model(tmp_path / "plain.onnx"), tmp_path / "patched.onnx").output
    result = invoke("run", patched, tmp_path / "scans.jpg", "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, "scans.jpg", "more than 1,000 scans")
    result = invoke("run", patched, tmp_path / "progressive.jpg", "-o", tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output


def test_an_output_that_is_a_mount_point_is_not_told_to_free_disk_space():
    """Was (round 57): `apply --force -o out.onnx` over a bind-mounted file (EBUSY) said "free disk space or choose
    another folder"."""
    fix = write_fix(OSError(errno.EBUSY, "Device or resource busy"), "free disk space or choose another folder")
    assert "mount point" in fix and "disk space" not in fix


@pytest.mark.parametrize("held_in", ["int32_data", "raw_data"])
def test_a_bfloat16_tensor_held_in_int32_data_is_a_caveat_of_openvino(tmp_path, held_in):
    """Round 57's leftover: OpenVINO reads a bfloat16 tensor held in int32_data (as the spec allows) as integers, and
    `convert` wrote that IR without a word (exit 0). It says so now, as of antialias; raw_data is read alike."""
    values = np.array([1.5, -2.25, 3.0, 1000.0], np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    tensor = TensorProto(name="b", data_type=TensorProto.BFLOAT16, dims=[4])
    if held_in == "int32_data":
        tensor.int32_data.extend(bits.astype(np.int32).tolist())
    else:
        tensor.raw_data = bits.tobytes()
    graph = helper.make_graph(
        [helper.make_node("Cast", ["b"], ["c"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "c"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [tensor])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bf.onnx"))
    result = invoke("convert", tmp_path / "bf.onnx", "-o", tmp_path / "bf.xml")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert ("OpenVINO reads the bfloat16 tensor 'b', held in int32_data, as integers" in said) == (
        held_in == "int32_data"), said


def _rewritten(path: Path) -> None:
    """`path` replaced by a file of the same size and other bytes (a new inode, as an editor or a copy leaves it)."""
    data = bytearray(path.read_bytes())
    data[-4:] = bytes(4) if data[-4:] != bytes(4) else b"\x01" * 4
    path.with_name("swap.tmp").write_bytes(bytes(data))
    os.replace(path.with_name("swap.tmp"), path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_runner_refuses_a_model_whose_external_data_changed_since_it_was_read(tmp_path, backend):
    """Round 57's leftover: the model file was held to its identity from its read to the runtimes' reads, but not
    its external data: one replaced in between was read as it was then, other weights than the checks saw."""
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.modelio import load_model, one_command
    from graphsurgery.runners import open_runner

    model = _external_weight(tmp_path, "16")
    with one_command():
        load_model(model)
        _rewritten(tmp_path / "w.bin")
        with pytest.raises(GraphsurgeryError, match="external data file changed while the command ran") as raised, \
                open_runner(backend, model):
            pass
    assert "w.bin" in str(raised.value)


def test_convert_refuses_external_data_replaced_while_openvino_reads_it(tmp_path, monkeypatch):
    import openvino

    model = _external_weight(tmp_path, "16")
    real = openvino.convert_model

    def swapping(*args, **kwargs):
        converted = real(*args, **kwargs)
        _rewritten(tmp_path / "w.bin")
        return converted

    monkeypatch.setattr(openvino, "convert_model", swapping)
    result = invoke("convert", model, "-o", tmp_path / "m.xml")
    one_line_exit_2(result, "w.bin", "external data file changed while the command ran")
    assert not (tmp_path / "m.xml").exists()


def test_within_a_command_external_data_left_as_read_is_run(tmp_path):
    from graphsurgery.modelio import load_model, one_command
    from graphsurgery.runners import open_runner

    model = _external_weight(tmp_path, "16")
    with one_command():
        load_model(model)
        with open_runner("onnxruntime", model) as run:
            assert run({"input": np.zeros((1, 3, 256, 192), np.float32)})["heatmaps"].shape == (1, 17, 64, 48)


def test_apply_refuses_external_data_replaced_before_it_copies_it(tmp_path, monkeypatch):
    """`apply` copies the model's external data into its output: a data file replaced since the model was read
    was copied as it was then, weights no check saw."""
    import graphsurgery.modelio as modelio

    model = _external_weight(tmp_path, "16")
    real = modelio._stage_external_data

    def swapping(*args, **kwargs):
        _rewritten(tmp_path / "w.bin")
        return real(*args, **kwargs)

    monkeypatch.setattr(modelio, "_stage_external_data", swapping)
    result = invoke("apply", RECIPE, model, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, "w.bin", "external data file changed while the command ran")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("recipe", ["hrnet_coco_pose", "imagenet_classifier", "yolov8_detector"])
@pytest.mark.parametrize("patched", [False, True])
def test_verify_of_a_model_whose_input_is_no_image_is_one_line(tmp_path, recipe, patched):
    """Found beside round 57: verify bound the input steps to the plain model's input before apply looked at it, and
    a model of a 1-D input was "internal error (IndexError: tuple index out of range)" (with --patched too, where
    apply does not run). It is apply's line now."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    result = invoke("verify", ROOT / "recipes" / f"{recipe}.yaml", model, *(["--patched", model] if patched else []))
    one_line_exit_2(result, "flat.onnx", "input 'x' is float32[4]; input steps need a 4-D float image tensor",
                    "fix: patch another input with input.target")


@pytest.mark.parametrize("command", ["verify", "convert"])
def test_a_complex_tensor_openvino_cannot_read_is_named(tmp_path, command):
    """Round 57's leftover: an unused complex64 initializer made OpenVINO refuse the model as "Loading input model",
    and the fix pointed at `inspect`, which found nothing. The tensor is named now."""
    model = onnx.load(pose_model(tmp_path / "plain.onnx"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1 + 2j], np.complex64), "unused_cx"))
    onnx.save(model, str(tmp_path / "cx.onnx"))
    args = ["verify", RECIPE, tmp_path / "cx.onnx"] if command == "verify" else [
        "convert", tmp_path / "cx.onnx", "-o", tmp_path / "cx.xml"]
    result = invoke(*args)
    one_line_exit_2(result, "cx.onnx", "OpenVINO cannot read the complex64 tensor 'unused_cx'",
                    "fix: remove that tensor")


def test_verify_of_a_patched_model_given_as_plain_says_so(tmp_path):
    """Found beside round 57: without --patched, verify bound the input steps to a patched model's uint8 input before
    apply (which says "already applied") ran, and its line was the binding's ("resize does not know its size")."""
    from modelkit import POSE_LETTERBOX

    recipe = tmp_path / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX)
    patched = apply(recipe, pose_model(tmp_path / "plain.onnx"), tmp_path / "patched.onnx").output
    result = invoke("verify", recipe, patched)
    one_line_exit_2(result, "patched.onnx", "recipe 'pose-letterbox' was already applied to this model",
                    "fix: use the unpatched model")


def test_a_data_file_removed_after_its_offsets_were_checked_is_a_model_changed_while_read(tmp_path, monkeypatch):
    """Between the checks of a model's external data (offsets against the file's size) and the identity it is held
    to, the file can go: that is the model changing while it was read, not an internal FileNotFoundError."""
    import graphsurgery.modelio as modelio

    model = _external_weight(tmp_path, "16")
    real = modelio._check_tensor_sizes

    def removing(*args, **kwargs):
        real(*args, **kwargs)
        os.replace(tmp_path / "w.bin", tmp_path / "moved.bin")

    monkeypatch.setattr(modelio, "_check_tensor_sizes", removing)
    result = invoke("apply", RECIPE, model, "-o", tmp_path / "out.onnx")
    one_line_exit_2(result, str(model), "the model file changed while it was read")
    assert not (tmp_path / "out.onnx").exists()
