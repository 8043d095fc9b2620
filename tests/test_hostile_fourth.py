"""A fourth round of hostile or careless inputs (a red-team run): hostile .npz references, files named .xml that are
no OpenVINO IR, and the Python API given what the CLI never passes. Each ran out of memory, ended in an internal
error, handed a web page to every OpenVINO frontend, or silently did something else before it was fixed; now each is
one line and exit 2 (a `GraphsurgeryError` from the API), and no input changes."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import graphsurgery
from clikit import invoke, one_line_exit_2
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.safeio import write_text_atomically

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
CROPS = np.random.default_rng(0).integers(0, 255, (2, 256, 192, 3), dtype=np.uint8)




def npy(descr: str, shape: tuple, payload: bytes = b"") -> bytes:
    """A .npy file whose header says what it likes, whatever its data holds."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def saved(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=True)
    return stream.getvalue()


def write_npz(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(f"{name}.npy", data)
    return path


@pytest.mark.parametrize("entries, needle", [
    # a shape the file does not back: numpy allocated 40 GB first ("internal error (out of memory)")
    ({"input": npy("<f4", (10**10,), b"\0" * 64)}, "declares [10000000000]"),
    ({"input": npy("|u1", (200_000, 256, 192, 3), b"\0" * 64)}, "holds less data"),
    # a header that is no Python literal: tokenize's TokenError escaped numpy
    ({"input": b"\x93NUMPY\x01\x00\x20\x00__import__('os').system('touch PWNED')  \n"}, "TokenError"),
    # arrays without a sample axis, or of no real numbers: concatenation failed, complex compared its real part only
    ({"input": saved(CROPS), "keypoints": saved(np.float32(1))}, "'keypoints' is float32[]"),
    ({"input": saved(CROPS), "scores": saved(np.zeros((2, 17, 1), np.complex64))}, "complex64"),
    ({"input": saved(CROPS), "keypoints": saved(np.array(["a", "b"]))}, "not an array of numbers"),
])
def test_a_reference_is_refused_from_its_headers(plain, tmp_path, entries, needle):
    reference = write_npz(tmp_path / "ref.npz", entries)
    before = reference.read_bytes()
    result = invoke("verify", CROP, plain, "--backends", "onnxruntime", "--reference", reference)
    one_line_exit_2(result, "ref.npz", needle)
    assert reference.read_bytes() == before and not (tmp_path / "PWNED").exists()


def test_a_bare_npy_named_npz_is_refused(plain, tmp_path):
    """np.load returns a bare array for a .npy, whatever its name: `with` on it was an internal error."""
    reference = tmp_path / "ref.npz"
    reference.write_bytes(saved(CROPS))
    one_line_exit_2(invoke("verify", CROP, plain, "--backends", "onnxruntime", "--reference", reference),
                    "not a readable .npz")


def test_a_reference_that_fits_still_verifies(plain, tmp_path):
    reference = write_npz(tmp_path / "ref.npz", {"input": saved(CROPS)})
    answers = graphsurgery.verify(CROP, plain, backends=["onnxruntime"], random=1)  # the loader alone is tested here
    assert answers
    from graphsurgery.reference import load_reference

    assert load_reference(reference)["input"].shape == CROPS.shape


def ir_of(patched, tmp_path):
    xml = tmp_path / "p.xml"
    graphsurgery.convert(patched, xml)
    return xml


@pytest.mark.parametrize("edit", [
    # HTML that mentions <net>: OpenVINO tried every frontend and TensorFlow's parser logged to stderr
    lambda text: "<!DOCTYPE html><html><body><net>not</net></body></html>\n",
    # entity declarations (billion laughs, XXE) have no place in an IR
    lambda text: text.replace("<net", '<!DOCTYPE net [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<net', 1),
])
def test_an_xml_whose_root_is_not_net_is_refused_before_openvino(patched, tmp_path, edit):
    xml = ir_of(patched, tmp_path)
    xml.write_text(edit(xml.read_text()))
    before = xml.read_bytes()
    one_line_exit_2(invoke("run", xml, PHOTO, "-o", tmp_path / "out"), "p.xml", "no <net> element at its start")
    assert xml.read_bytes() == before and not (tmp_path / "out").exists()


def test_an_ir_with_comments_before_net_is_still_read(patched, tmp_path):
    xml = ir_of(patched, tmp_path)
    xml.write_text(xml.read_text().replace("<net", "<!-- made here -->\n<net", 1))
    assert invoke("run", xml, PHOTO, "-o", tmp_path / "out").exit_code == 0


def test_the_api_takes_one_image_path_as_one_path(patched, tmp_path):
    """A str was iterated character by character: "nonexist" ran as the images 'n', 'o', 'n', …"""
    with pytest.raises(GraphsurgeryError, match="nonexist: no such image file"):
        graphsurgery.run(patched, str(tmp_path / "nonexist"), tmp_path / "out")
    summary = graphsurgery.run(patched, str(PHOTO), tmp_path / "out", backend="onnxruntime")
    assert len(summary.images) == 1


@pytest.mark.parametrize("seed", [-1, 2**80, 1.5, True])
def test_the_api_bounds_the_seed_as_the_cli_does(plain, seed):
    """-1 was numpy's ValueError (an internal error); 2^80 and 1.5 went through."""
    with pytest.raises(GraphsurgeryError, match=r"seed .* is not an integer from 0 to 4294967295"):
        graphsurgery.verify(CROP, plain, random=1, seed=seed, backends=["onnxruntime"])


@pytest.mark.parametrize("threads", [2.5, True])
def test_the_api_takes_whole_thread_counts_only(patched, tmp_path, threads):
    with pytest.raises(GraphsurgeryError, match="threads: give a whole number between 1"):
        graphsurgery.run(patched, [PHOTO], tmp_path / "out", backend="onnxruntime", threads=threads)
    assert not (tmp_path / "out").exists()


def test_reports_are_written_with_the_umask_not_private(tmp_path):
    """mkstemp makes 0600 files: `verify --json` gave reports no one else could read (a CI web page, a colleague)."""
    previous = os.umask(0o022)
    try:
        path = write_text_atomically(tmp_path / "r.json", "{}")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("args, needle", [
    (["--max-drop", "nan"], "max_drop=nan (--max-drop) is not a share between 0 and 1"),  # FloatRange lets NaN by
    (["--max-drop", "0.05", "--ranking-samples", "0"], "--ranking-samples"),
])
def test_accuracy_control_numbers_are_checked_before_quantizing(patched, tmp_path, args, needle):
    result = CliRunner().invoke(cli, ["convert", str(patched), "--int8", "--calibration-random", "2", *args, "-o",
                                      str(tmp_path / "q.xml")])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "q.xml").exists() and not (tmp_path / "q.bin").exists()


@pytest.mark.parametrize("options, needle", [
    ({"int8": True, "calibration_random": 2, "max_drop": float("nan")}, "max_drop=nan"),
    ({"int8": True, "calibration_random": 2, "max_drop": 0.1, "max_reverts": 1.5}, "max_reverts (--max-reverts)=1.5"),
    ({"input_shapes": "input=1,2"}, "input_shapes is a str, not a mapping"),
])
def test_the_api_checks_convert_options(patched, tmp_path, options, needle):
    with pytest.raises(GraphsurgeryError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        graphsurgery.convert(patched, tmp_path / "q.xml", **options)
    assert not (tmp_path / "q.xml").exists()


def test_a_fifo_or_an_ir_given_as_the_onnx_model_says_what_it_is(patched, tmp_path):
    """A FIFO was "empty" (its size is 0) and an .xml a protobuf DecodeError: each now says what it is."""
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    one_line_exit_2(invoke("inspect", fifo), "is not a regular file")
    assert invoke("convert", patched, "-o", tmp_path / "ir.xml").exit_code == 0
    one_line_exit_2(invoke("inspect", tmp_path / "ir.xml"), "is an OpenVINO IR; this command reads ONNX")


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_reference_that_is_no_regular_file_says_so(kind, tmp_path):
    """A folder or FIFO given as --reference was "no such reference file", which sends the user looking for it."""
    from graphsurgery.reference import load_reference

    path = tmp_path / "ref.npz"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(GraphsurgeryError, match="is not a regular file"):
        load_reference(path)
    with pytest.raises(GraphsurgeryError, match="no such reference file"):
        load_reference(tmp_path / "missing.npz")
