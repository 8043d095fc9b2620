"""Round 48 of issue 17: a fuzz campaign on command-line options, the environment and files (/tmp/r48): 6,948
generated runs — every option of every subcommand with odd values and paths, outputs onto inputs by every spelling,
GRAPHSURGERY_* and library variables, HOME/TMPDIR/locale/terminal settings, closed or full standard streams, rlimits,
damaged images, boxes, COCO files, recipes with odd YAML, reference .npz files, external data and IR .bin files.

FINDINGS

- A `--reference` .npz whose arrays Python's zipfile cannot read was an internal error (exit 3): an entry flagged
  encrypted (RuntimeError, "password required for extraction"), one of a compression method zipfile does not know
  (NotImplementedError) and damaged LZMA data (LZMAError). `reference.load_reference` refuses each in one line.
- A `--reference` that is a .npy followed by a zip's index (a .npz whose first entry header was cut off) passed
  zipfile's test, which reads the end of the file; np.load, which reads its start, returned the bare array, and
  `with` on it was an internal error (TypeError: 'numpy.ndarray' object does not support the context manager
  protocol). The file must start as a zip does.
- `apply` of a model whose external data file runs on past its last tensor (a file grown sparse to 1 TB) ran for an
  hour without a word: the network digest of the provenance read the data file whole. `modelio.network_sha256`
  reads each data file up to the last byte its tensors read (the whole file as onnx writes one: digests of ordinary
  models are unchanged).
- OpenCV reads ~40 settings from the environment as sizes or switches (most while `import cv2` runs): a value its
  parser refuses (`OPENCV_IO_MAX_IMAGE_PIXELS=abc`, `-1` or empty, `OPENCV_TRACE=yes`) threw a C++ exception there,
  and the process died of SIGABRT: "terminate called after throwing an instance of 'std::invalid_argument' what():
  stoull" on stderr above the supervisor's line, which blamed the memory limit or the model (`run`, `verify
  --images`, `eval-coco`, `chain --check`). `images.opencv()` checks them, in one line naming the variable, before
  cv2 is imported (every `import cv2` of the package goes through it); verify, which names its model on a refusal
  that names no file, leaves this one as it is (`errors.SettingError`).
- `bench --chart` under a relative HOME (`HOME=relative`, or a relative XDG_CONFIG_HOME, XDG_CACHE_HOME or
  MPLCONFIGDIR) wrote matplotlib's config folder and font cache into the installed graphsurgery package
  (`graphsurgery/relative/.cache/matplotlib/fontlist-v3.11.0.json`): matplotlib is imported from the package's own
  folder (round 39, to keep a `matplotlibrc` in the current folder from being read), and resolved the relative
  folders there. `chart._without_matplotlibrc` makes them absolute in the folder the command runs in first.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from clikit import invoke, one_line_exit_2

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
POSE_RECIPE = RECIPES / "hrnet_coco_pose.yaml"
IMAGES = ROOT / "examples" / "images"


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return pose_model(tmp_path_factory.mktemp("r48") / "pose.onnx", dynamic_batch=True)


def npz_with_method(method: int | None, *, encrypted: bool = False) -> bytes:
    """A numpy.savez file whose zip headers claim another compression method, or encryption."""
    stream = io.BytesIO()
    np.savez(stream, input=np.zeros((2, 256, 192, 3), np.uint8))
    data = bytearray(stream.getvalue())
    for signature, method_at, flags_at in ((b"PK\x03\x04", 8, 6), (b"PK\x01\x02", 10, 8)):
        at = data.find(signature)
        if method is not None:
            data[at + method_at:at + method_at + 2] = struct.pack("<H", method)
        if encrypted:
            data[at + flags_at] |= 1
    return bytes(data)


@pytest.mark.parametrize("method, encrypted, needle", [
    (None, True, "encrypted or compressed by a method"),  # RuntimeError: File 'input.npy' is encrypted
    (99, False, "encrypted or compressed by a method"),  # NotImplementedError: That compression method ...
    (14, False, "not a readable .npz of numeric arrays (LZMAError)"),  # stored bytes read as LZMA
])
def test_a_reference_zipfile_cannot_read_is_one_line(plain, tmp_path, method, encrypted, needle):
    """Were `internal error (RuntimeError: File 'input.npy' is encrypted, password required for extraction)`,
    `internal error (NotImplementedError: That compression method is not supported)` and `internal error
    (LZMAError: Invalid or unsupported options)`, exit 3."""
    reference = tmp_path / "ref.npz"
    reference.write_bytes(npz_with_method(method, encrypted=encrypted))
    before = reference.read_bytes()
    result = invoke("verify", POSE_RECIPE, plain, "--backends", "onnxruntime", "--reference", reference)
    one_line_exit_2(result, "ref.npz", needle, "fix:")
    assert reference.read_bytes() == before


def test_a_npy_ending_in_a_zip_index_is_no_npz(plain, tmp_path):
    """Was `internal error (TypeError: 'numpy.ndarray' object does not support the context manager protocol)`."""
    stream = io.BytesIO()
    np.savez(stream, input=np.zeros((2, 256, 192, 3), np.uint8))
    whole = stream.getvalue()
    reference = tmp_path / "ref.npz"
    reference.write_bytes(whole[whole.find(b"\x93NUMPY"):])  # the entry's .npy, then the zip's central directory
    result = invoke("verify", POSE_RECIPE, plain, "--backends", "onnxruntime", "--reference", reference)
    one_line_exit_2(result, "ref.npz", "not a readable .npz of numeric arrays", "fix:")


def test_a_data_file_grown_past_its_tensors_is_not_read_to_its_end(plain, tmp_path):
    """Grown sparse to 1 TB, the data file was read whole (an hour of apply); here 4 GB, which the digest read in
    seconds before the fix, and whose zeros changed the model's digest."""
    from graphsurgery.modelio import load_model, network_sha256

    onnx.save(onnx.load(str(plain)), str(tmp_path / "ext.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    digest = network_sha256(load_model(tmp_path / "ext.onnx"))
    with open(tmp_path / "ext.data", "r+b") as stream:
        stream.truncate(4 * 2**30)  # sparse: no disk used
    assert network_sha256(load_model(tmp_path / "ext.onnx")) == digest  # the bytes past the tensors are no tensor's
    started = time.monotonic()
    result = invoke("apply", POSE_RECIPE, tmp_path / "ext.onnx", "-o", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("variable, value", [
    ("OPENCV_IO_MAX_IMAGE_PIXELS", "abc"),  # a size: std::invalid_argument from stoull, as cv2 loads
    ("OPENCV_IO_MAX_IMAGE_WIDTH", ""),
    ("OPENCV_TRACE", "yes"),  # a switch: cv::Exception "Invalid value for parameter", as cv2 loads
])
def test_an_opencv_setting_opencv_cannot_parse_is_one_line(tmp_path, variable, value):
    """Was SIGABRT while cv2 loaded: two lines of the C++ runtime, then "the command crashed in native code (SIGABRT,
    Aborted) — fix: … the model, or an input, holds values this code cannot take"."""
    patched = tmp_path / "patched.onnx"
    assert invoke("apply", POSE_RECIPE, pose_model(tmp_path / "pose.onnx"), "-o", patched).exit_code == 0
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "run", str(patched), str(IMAGES / "astronaut.jpg"),
                           "-o", str(tmp_path / "out"), "--backend", "onnxruntime"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), variable: value})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"{variable}={value!r}" in lines[0] and "fix:" in lines[0] and "unset it" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_the_coco_example_refuses_such_a_setting_in_one_line(tmp_path):
    """examples/synthetic_coco.py drew its set with OpenCV imported directly: SIGABRT as it loaded."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "synthetic_coco.py"), str(tmp_path / "set"),
                           "--images", "1"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OPENCV_TRACE": "yes"})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "OPENCV_TRACE='yes'" in lines[0], done.stderr


def test_opencv_settings_it_can_parse_still_run(tmp_path):
    patched = tmp_path / "patched.onnx"
    assert invoke("apply", POSE_RECIPE, pose_model(tmp_path / "pose.onnx"), "-o", patched).exit_code == 0
    done = subprocess.run([sys.executable, "-m", "graphsurgery", "run", str(patched), str(IMAGES / "astronaut.jpg"),
                           "-o", str(tmp_path / "out"), "--backend", "onnxruntime"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "OPENCV_TRACE": "false",
                                            "OPENCV_IO_MAX_IMAGE_PIXELS": "512MB", "OPENCV_FOR_THREADS_NUM": "0002"})
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert (tmp_path / "out" / "keypoints.json").is_file()


def test_verify_does_not_blame_the_model_for_an_opencv_setting(plain, monkeypatch):
    """The refusal names the variable, not "pose.onnx (patched by …)": verify names its model on a pathless refusal.
    In-process: the check runs before cv2 is imported, so a cv2 loaded here first (as it must be: importing it under
    the setting would end pytest) does not matter."""
    import cv2  # noqa: F401

    monkeypatch.setenv("OPENCV_TRACE", "yes")
    result = invoke("verify", POSE_RECIPE, plain, "--backends", "onnxruntime", "--images", IMAGES)
    one_line_exit_2(result, "OPENCV_TRACE='yes' is no switch OpenCV can read", "fix:")
    assert result.output.startswith("error: OPENCV_TRACE=")


@pytest.mark.parametrize("variable", ["HOME", "MPLCONFIGDIR"])
def test_a_relative_home_does_not_put_matplotlibs_cache_into_the_package(plain, tmp_path, variable):
    """Was `graphsurgery/<HOME>/.cache/matplotlib/fontlist-v3.11.0.json` (and `.config/matplotlib`) written into the
    package folder. A subprocess: matplotlib is imported here already, and the folders are chosen as it loads."""
    name = f"home-r48-{variable.lower()}-{os.getpid()}"
    package = ROOT / "graphsurgery" / name
    try:
        done = subprocess.run([sys.executable, "-m", "graphsurgery", "bench", str(POSE_RECIPE), str(plain),
                               "--iterations", "1", "--warmup", "0", "--chart", "c.png"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT), variable: name})
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "c.png").is_file()
        assert not package.exists(), f"matplotlib wrote {package}"
        assert (tmp_path / name).is_dir()  # where the relative setting names, from the folder the command ran in
    finally:
        shutil.rmtree(package, ignore_errors=True)
