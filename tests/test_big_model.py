"""Models over 2 GB: `inspect` and `apply` work through external data, never loading the weights.

The big model is the tiny pose model plus one 2.15 GB float32 initializer (more than 2^31 bytes) kept in an external
data file that is *sparse*: a few islands of real bytes and holes elsewhere, so it costs no disk. `apply` copies
the islands (in the kernel, with copy_file_range) and keeps the holes as holes; the tests check every island
arrives at its place, that the output's data file stays sparse, and that peak memory stays far below the size of
the weights (measured with getrusage in a fresh process).

`python tests/test_big_model.py [--dense]` prints the measurements for BENCHMARKS.md (--dense fills the 2.15 GB
with random bytes first: it then costs 4.3 GB of disk while it runs).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graphsurgery.api import apply  # noqa: E402
from graphsurgery.model import provenance  # noqa: E402
from graphsurgery.modelio import load_model  # noqa: E402

from modelkit import pose_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
HEATMAP = (1, 17, 64, 48)
BIG_COLUMNS = 10_300  # [1, 17, 64, 48·10300] float32 = 2,151,628,800 bytes > 2^31
MEMORY_BOUND_MIB = 512  # a quarter of the weights: loading them anywhere would exceed it

#: Peak RSS and wall time of one command, measured in a fresh process (RUSAGE_CHILDREN of that process only).
MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
                  "seconds": time.perf_counter() - start,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def islands(nbytes: int) -> dict[int, bytes]:
    """Real bytes at the start, at an odd offset in the middle and at the very end; holes everywhere else."""
    rng = np.random.default_rng(7)
    middle = nbytes // 2 + 12_345
    return {0: rng.bytes(1 << 20), middle: rng.bytes(3 << 20), nbytes - 12_289: rng.bytes(12_289)}


def big_model(folder: Path, columns: int = BIG_COLUMNS, dense: bool = False) -> Path:
    """The pose model whose heatmaps get a bias sliced from a [1, 17, 64, 48·columns] external initializer."""
    path = pose_model(folder / "big.onnx")
    proto = onnx.load(str(path))
    shape = [*HEATMAP[:3], HEATMAP[3] * columns]
    nbytes = int(np.prod(shape)) * 4
    table = TensorProto(name="bias_table", data_type=TensorProto.FLOAT, dims=shape,
                        data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "big.weights"), ("offset", "0"), ("length", str(nbytes))):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    proto.graph.initializer.extend([
        table,
        numpy_helper.from_array(np.array([0], np.int64), "slice_start"),
        numpy_helper.from_array(np.array([HEATMAP[3]], np.int64), "slice_end"),
        numpy_helper.from_array(np.array([3], np.int64), "slice_axis"),
    ])
    proto.graph.node[0].output[0] = "conv_out"
    proto.graph.node.extend([
        helper.make_node("Slice", ["bias_table", "slice_start", "slice_end", "slice_axis"], ["bias"], name="slice"),
        helper.make_node("Add", ["conv_out", "bias"], ["heatmaps"], name="add"),
    ])
    onnx.save(proto, str(path))
    with open(folder / "big.weights", "wb") as data:
        data.truncate(nbytes)  # a hole: no disk blocks
        if dense:
            block = np.random.default_rng(3).bytes(64 << 20)
            for start in range(0, nbytes, len(block)):
                data.write(block[: nbytes - start])
        for offset, content in islands(nbytes).items():
            data.seek(offset)
            data.write(content)
    return path


def measured(*args) -> dict:
    done = subprocess.run([str(PYTHON), "-c", MEASURE, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def graphsurgery(*args) -> dict:
    return measured(PYTHON, "-m", "graphsurgery", *args)


def external_entry(proto: onnx.ModelProto, name: str) -> dict[str, str]:
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    return {e.key: e.value for e in tensor.external_data}


def assert_islands_copied(source: Path, target: Path, offset: int, nbytes: int) -> None:
    with open(source, "rb") as src, open(target, "rb") as dst:
        for at, content in islands(nbytes).items():
            src.seek(at)
            assert src.read(len(content)) == content
            dst.seek(offset + at)
            assert dst.read(len(content)) == content, f"island at {at} not copied"
        dst.seek(offset + 4096 * 300)  # inside the first hole
        assert dst.read(4096) == bytes(4096)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return big_model(tmp_path_factory.mktemp("big"))


def test_the_big_model_exceeds_2_gb_and_costs_no_disk(big):
    data = big.parent / "big.weights"
    assert data.stat().st_size > 2**31
    assert data.stat().st_blocks * 512 < 64 << 20  # sparse, if the file system supports it (tmpfs, ext4, xfs do)
    assert big.stat().st_size < 1 << 20


def test_inspect_reads_the_big_model_without_loading_its_weights(big):
    result = graphsurgery("inspect", "--json", big)
    assert result["returncode"] == 0, result["stderr"]
    info = json.loads(result["stdout"])
    assert info["external_data"] == 1 and info["op_types"] == {"Conv": 1, "Slice": 1, "Add": 1}
    assert [o["name"] for o in info["outputs"]] == ["heatmaps"]
    assert result["peak_rss_mib"] < MEMORY_BOUND_MIB, result


def test_apply_streams_the_big_model_into_the_output(big, tmp_path):
    out = tmp_path / "patched.onnx"
    result = graphsurgery("apply", RECIPE, big, "-o", out)
    assert result["returncode"] == 0, result["stderr"]
    assert result["peak_rss_mib"] < MEMORY_BOUND_MIB, result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patched.onnx", "patched.onnx.data"]

    patched = onnx.load(str(out), load_external_data=False)
    entry = external_entry(patched, "bias_table")
    nbytes = (big.parent / "big.weights").stat().st_size
    assert entry["location"] == "patched.onnx.data" and int(entry["length"]) == nbytes
    data = tmp_path / "patched.onnx.data"
    assert data.stat().st_size == int(entry["offset"]) + nbytes
    assert_islands_copied(big.parent / "big.weights", data, int(entry["offset"]), nbytes)
    assert data.stat().st_blocks * 512 < 64 << 20  # holes stayed holes
    onnx.checker.check_model(str(out), full_check=True)
    assert [e["recipe"] for e in provenance(load_model(out).proto)] == ["hrnet-coco-pose"]
    assert [o.name for o in patched.graph.output] == ["keypoints", "scores", "heatmaps"]


# --- the copy under each fallback, on a small sparse model (in-process) ---------------------------------------

SMALL_COLUMNS = 80  # 16.7 MB: several islands and holes, quick to copy densely


def _no_copy_file_range(*args):
    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))


def _lseek_without_holes(real):
    def lseek(fd, position, how):
        if how in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, position, how)
    return lseek


@pytest.mark.parametrize("fallback", ["kernel copy", "no copy_file_range", "no SEEK_DATA"])
def test_external_data_copy_is_exact_under_every_fallback(fallback, tmp_path, monkeypatch):
    model = big_model(tmp_path, columns=SMALL_COLUMNS)
    nbytes = (tmp_path / "big.weights").stat().st_size
    if fallback == "no copy_file_range":
        monkeypatch.setattr(os, "copy_file_range", _no_copy_file_range)
    elif fallback == "no SEEK_DATA":
        monkeypatch.setattr(os, "lseek", _lseek_without_holes(os.lseek))
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "patched.onnx"
    apply(RECIPE, model, out)
    monkeypatch.undo()
    offset = int(external_entry(onnx.load(str(out), load_external_data=False), "bias_table")["offset"])
    assert (tmp_path / "out" / "patched.onnx.data").read_bytes()[offset:] == (tmp_path / "big.weights").read_bytes()
    assert_islands_copied(tmp_path / "big.weights", tmp_path / "out" / "patched.onnx.data", offset, nbytes)


# --- measurements for BENCHMARKS.md -------------------------------------------------------------------------


def main(dense: bool) -> None:
    """Print table rows: the big model, and the tiny model as the baseline (process start and imports)."""
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        (Path(folder) / "tiny").mkdir()
        models = {"tiny (3.5 KB)": pose_model(Path(folder) / "tiny" / "tiny.onnx"),
                  f"2.15 GB external, {'dense' if dense else 'sparse'}": big_model(Path(folder), dense=dense)}
        for label, model in models.items():
            for name, args in (("inspect", ("inspect", "--json", model)),
                               ("apply", ("apply", RECIPE, model, "-o", model.with_name("patched.onnx")))):
                result = graphsurgery(*args)
                assert result["returncode"] == 0, result["stderr"]
                print(f"| {label} | {name} | {result['seconds']:.1f} s | {result['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main(dense="--dense" in sys.argv)
