"""Round 92: `verify --precision int8` keeping the network outputs in the model it quantizes (c03594c), and Ctrl-C
or SIGTERM at many moments of every command, the user's own code running among them.

Found: the processes the user's code forks (`--reference-pipeline`'s `multiprocessing` workers) kept the command's
signal handlers: each worker `Pool.terminate()` ended (on leaving `with Pool() as pool:`) raised graphsurgery's
Terminated and printed its traceback, on every PASS; Ctrl-C made each user process print KeyboardInterrupt's
traceback, after "interrupted". `verify --precision int8` of a right DARK patch FAILed: the int8 model's own
decode was judged without the refinement's rounding allowance that f32's pairs have; of the top-down recipe, NNCF
had quantized the decode's last op (named after its output, `keypoints`, outside the ignored `graphsurgery/…`
pattern): int8 keypoints 0.2-27 px off.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphsurgery.api import apply
from graphsurgery.verification import verify
from test_hostile_eightyeighth import SIMCC
from test_hostile_ninetyfirst import ANSWERS
from test_simcc import two_head_model

ROOT = Path(__file__).resolve().parent.parent

PIPELINE = ANSWERS + '''
from pathlib import Path


def square(n):
    return n * n


def in_a_pool(feeds):
    import multiprocessing
    with multiprocessing.Pool(2) as pool:
        pool.map(square, range(4))
        pool.map_async(time.sleep, [30, 30])  # abandoned: the workers are still at work as the `with` ends
        time.sleep(1)
    return answers(feeds)


def waits_for_a_process(feeds):
    import multiprocessing
    child = multiprocessing.Process(target=time.sleep, args=(60,))
    child.start()
    Path("child.pid").write_text(str(child.pid))
    child.join()
    return answers(feeds)
'''


@pytest.fixture(scope="module")
def simcc_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("simcc92")
    plain = two_head_model(folder / "plain.onnx")
    return {"plain": plain, "right": apply(SIMCC, plain, folder / "right.onnx").output}


def _start(folder: Path, models: dict, pipeline: str) -> subprocess.Popen:
    """`graphsurgery verify … --reference-pipeline` as a terminal starts it: Ctrl-C's default restored (a background
    shell ignores it), in its own process group, its output in files (the user's processes may hold pipes open)."""
    (folder / "userpipeline.py").write_text(PIPELINE)
    (folder / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "graphsurgery", "verify", str(SIMCC), str(models["plain"]),
                             "--patched", str(models["right"]), "--random", "2", "--backends", "onnxruntime",
                             "--reference-pipeline", pipeline], cwd=folder, start_new_session=True,
                            stdout=open(folder / "out", "w"), stderr=open(folder / "err", "w"),
                            env={**os.environ, "TMPDIR": str(folder / "tmp"), "PLAIN": str(models["plain"])},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _gone(pid: int, seconds: float) -> bool:
    """Whether process `pid` has ended (or is a zombie) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_a_pool_of_the_users_code_ends_without_a_traceback(simcc_models, tmp_path):
    """Was: "PASS: …", and before it a traceback of graphsurgery.launch.Terminated for each pool worker still alive
    as the `with` ended: the workers, forked from the command, kept its SIGTERM handler, and `Pool.terminate()`
    (leaving the `with`) sends them SIGTERM."""
    command = _start(tmp_path, simcc_models, "userpipeline:in_a_pool")
    assert command.wait(timeout=120) == 0
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert "PASS" in out and "Traceback" not in err and "Terminated" not in err, err
    assert not list((tmp_path / "tmp").iterdir())


def test_ctrl_c_while_the_users_process_runs_is_one_line(simcc_models, tmp_path):
    """Was: "interrupted", exit 130, and the user's multiprocessing child printed a traceback of KeyboardInterrupt
    raised by graphsurgery's handler (before or after that line), as a terminal's Ctrl-C reaches the whole group."""
    command = _start(tmp_path, simcc_models, "userpipeline:waits_for_a_process")
    child = None
    try:
        deadline = time.monotonic() + 120
        while child is None and command.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                child = int((tmp_path / "child.pid").read_text())
            time.sleep(0.1)
        assert child is not None, (tmp_path / "err").read_text()
        os.killpg(command.pid, signal.SIGINT)  # a terminal's Ctrl-C
        assert command.wait(timeout=60) == 130
        assert _gone(child, 30)  # its output, if any, is written
        lines = (tmp_path / "err").read_text().splitlines()
        assert lines[-1:] == ["interrupted"] and "Traceback" not in "\n".join(lines), lines
        assert not list((tmp_path / "tmp").iterdir())
    finally:
        with contextlib.suppress(OSError):
            os.killpg(command.pid, signal.SIGKILL)


def test_verify_int8_of_the_dark_recipe_allows_the_refinements_rounding(tmp_path):
    """Was: FAIL, "keypoints: 32/34 within 0.001, max distance 0.04164 px; 2 real mismatches": the int8 model's own
    decode was judged without the rounding allowance f32's pairs have (`stability.Wobbles`), and DARK's Hessian on
    the int8 maps (whose quantized values tie) moves that far under a float rounding. Now "unstable (allowed)"."""
    from modelkit import pose_model

    plain = pose_model(tmp_path / "pose.onnx")
    report = verify(ROOT / "recipes" / "mmpose_heatmap_dark.yaml", plain, random=2, precision="int8")
    assert report, report.failures()
    [keypoints] = [result for result in report.pairs[1].results if result.output == "keypoints"]
    assert keypoints.positions == 2 * 17


def test_the_top_down_graphs_int8_keypoints_are_not_quantized(tmp_path):
    """Was: FAIL, "keypoints: 0/85 within 0.002, max distance 27.57 px": NNCF quantized the last op of `to_image`
    mode boxes (an Add of two computed tensors), which OpenVINO names after its output, `keypoints`, out of reach of
    the ignored `graphsurgery/…` pattern: every int8 top-down model (`convert --int8` too) gave its keypoints on 256
    levels. The decode now stays in float, exact on the int8 network's own heatmaps."""
    from modelkit import pose_model

    plain = pose_model(tmp_path / "pose.onnx")
    report = verify(ROOT / "recipes" / "hrnet_coco_topdown.yaml", plain, random=2, precision="int8")
    assert report, report.failures()
    [keypoints] = [result for result in report.pairs[1].results if result.output == "keypoints"]
    assert keypoints.matches == keypoints.positions > 0
