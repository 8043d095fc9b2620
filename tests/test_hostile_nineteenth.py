"""A nineteenth round of hostile use, of the supervisor (graphsurgery.supervisor): the light parent that watches the
child running the command. Found: Ctrl-C or SIGTERM while the child was stuck in native code outside a timed step
(NNCF's calibration of a Loop counted by the input) or with GRAPHSURGERY_TIME_LIMIT=0 was never acted on (`timeout`
waited 11 minutes); time spent stopped by Ctrl-Z counted against the limit (the step was stopped on `fg`); a
`kill -TERM -PGID` during start-up said "terminated" twice; SIGHUP, SIGQUIT, SIGUSR1 killed the parent alone (a
death by signal); `convert --int8` and bench's bf16 price compiled and ran the model unwatched (no time limit, a
crash named nothing), and so did the asynchronous requests of `eval-coco` and `bench --throughput`; a limit of '²'
was a traceback; rich's Console ended `graphsurgery steps | head -1` with 1, "no parity"; `launch.main` from a
thread other than the main one was a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from test_hostile_thirteenth import save
from test_supervisor import POSE, command, loop_counted_by_the_input, range_of_step_zero, started_verify

LAUNCH = "from graphsurgery.launch import main\nmain()\n"


def run(args, tmp_path, limit: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    temporary = tmp_path / "tmp"
    temporary.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(temporary)}
    if limit is not None:
        env["GRAPHSURGERY_TIME_LIMIT"] = limit
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path, **kwargs)


def patched(build, tmp_path):
    from graphsurgery.api import apply

    return apply(POSE, save(build(), tmp_path / "plain.onnx"), tmp_path / "bomb.onnx").output


def test_sigterm_reaches_a_command_stuck_in_native_code(tmp_path):
    """No time limit, a Loop that never ends: SIGTERM waited for native code to return, for ever."""
    model = save(loop_counted_by_the_input(), tmp_path / "loop.onnx")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = subprocess.Popen(command("verify", POSE, model, "--random", 1, "--backends", "onnxruntime"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "TMPDIR": str(temporary), "GRAPHSURGERY_TIME_LIMIT": "0"})
    try:
        time.sleep(3)
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    finally:
        os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
    assert process.returncode == 143 and stderr.strip() == "terminated", (process.returncode, stderr)
    assert list(temporary.iterdir()) == []


def test_time_spent_stopped_does_not_count_against_the_limit(tmp_path):
    """Ctrl-Z stops both processes: on `fg` the parent counted the whole pause and stopped the step at once."""
    model = save(loop_counted_by_the_input(), tmp_path / "loop.onnx")
    process = subprocess.Popen(command("verify", POSE, model, "--random", 1, "--backends", "onnxruntime"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "GRAPHSURGERY_TIME_LIMIT": "4"})
    try:
        time.sleep(2.5)  # in the Loop by now
        os.killpg(process.pid, signal.SIGSTOP)
        time.sleep(6)
        os.killpg(process.pid, signal.SIGCONT)
        resumed = time.monotonic()
        _, stderr = process.communicate(timeout=60)
    finally:  # never leave the Loop spinning (it ran on, orphaned, after a failed run of this test)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 2 and "for more than 4 s" in stderr, stderr
    assert time.monotonic() - resumed > 1.5  # the rest of its 4 s, not stopped on the spot


def test_a_second_signal_while_the_first_is_said_is_ignored():
    """The parent forwards a `kill -TERM -PGID` the child has had already: while the CLI loaded, the handler was
    entered again and said "terminated" twice (here the second arrives while the first is written)."""
    script = ("import os, signal\nfrom graphsurgery import launch\nsay = launch.say\n"
              "def twice(word):\n    os.kill(os.getpid(), signal.SIGTERM)\n    say(word)\n"
              "launch.say = twice\nsignal.signal(signal.SIGTERM, launch.quit_now)\n"
              "os.kill(os.getpid(), signal.SIGTERM)\nimport time\ntime.sleep(5)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and done.stderr == "terminated\n", (done.returncode, done.stderr)


def test_sighup_to_the_command_is_one_line_and_leaves_nothing(tiny_pose_models, tmp_path):
    """`kill -HUP PID` (or a closed terminal) killed the parent alone: a death by signal."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process, _, folder = started_verify(tiny_pose_models[(17, False)], temporary)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGHUP and len(stderr.splitlines()) == 1, (process.returncode, stderr)
    assert "SIGHUP" in stderr and not folder.exists()


def test_int8_quantization_is_under_the_time_limit(tmp_path):
    """NNCF's calibration runs the model: a Loop counted by the input ran for ever, unwatched."""
    model = patched(loop_counted_by_the_input, tmp_path)
    done = run(["convert", model, "-o", tmp_path / "out.xml", "--int8", "--calibration-random", 2], tmp_path, "2")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert "NNCF was quantizing" in lines[0] and "bomb.onnx" in lines[0] and "for more than 2 s" in lines[0]
    assert not list(tmp_path.glob("out.*")) and list((tmp_path / "tmp").iterdir()) == []


def test_a_crash_in_asynchronous_requests_names_the_model(tmp_path):
    """eval-coco and bench --throughput stream through OpenVINO's async queue: the kernel died in its threads
    while no step was published, and the line named nothing."""
    from examples.synthetic_coco import write_coco_set

    annotations = write_coco_set(tmp_path / "images", images=4, seed=0)
    model = save(range_of_step_zero(), tmp_path / "plain.onnx")
    done = run(["eval-coco", POSE, model, "--ann", annotations, "--images", tmp_path / "images", "--backends",
                "openvino", "--json", tmp_path / "report.json"], tmp_path)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert "while OpenVINO was running" in lines[0] and "plain.onnx" in lines[0], lines[0]
    assert not (tmp_path / "report.json").exists() and list((tmp_path / "tmp").iterdir()) == []


def test_a_time_limit_of_other_digits_is_one_line(tiny_pose_models, tmp_path):
    for value in ("²", "①"):  # str.isdigit says yes, int() says no
        done = run(["inspect", tiny_pose_models[(17, False)]], tmp_path, value)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert "GRAPHSURGERY_TIME_LIMIT" in done.stderr and "Traceback" not in done.stderr


def test_a_reader_that_goes_away_is_141_not_1(tmp_path):
    """`graphsurgery steps | head -1` under `set -o pipefail`: rich's Console exited 1, "no parity"."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(command("steps"), stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(writer)
    assert done.returncode == 141 and done.stderr == "", (done.returncode, done.stderr)


def test_the_command_line_run_from_a_thread(tiny_pose_models):
    """An application calling `launch.main` from a thread: signal.signal raised there, a traceback."""
    script = ("import sys, threading\nsys.argv = ['graphsurgery', 'inspect', sys.argv[1]]\n"
              "from graphsurgery.launch import main\ncodes = []\n"
              "def go():\n    try:\n        main()\n    except SystemExit as exc:\n        codes.append(exc.code)\n"
              "thread = threading.Thread(target=go)\nthread.start()\nthread.join()\n"
              "sys.exit(codes[0] if codes else 9)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tiny_pose_models[(17, False)])], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.returncode, done.stderr)
    assert "heatmaps" in done.stdout
