"""What the command line costs before it does anything: each command below, run as a user runs it (`python -m
graphsurgery …`, the supervisor included), against `python -c pass` and `python -c "import graphsurgery"`, the runs
interleaved round by round so that a busy neighbour slows every line alike. CPU time (user + system, the children's)
is the measure; wall time is shown beside it. The tests start about a thousand such commands (BENCHMARKS.md, "CLI
start-up").

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cli_startup.py --rounds 10

Each command's modules are counted in a second pass, run in-process without the supervisor (`graphsurgery.cli.main`),
with the heavy libraries among them named.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("numpy", "onnx", "pydantic", "yaml", "onnxruntime", "openvino", "cv2", "torch", "scipy", "rich")

def command_lines(tiny: Path) -> dict[str, list[str]]:
    """What each line runs after `python`: the two baselines, then the commands (an early refusal: exit 2)."""
    return {
        "python -c pass": ["-c", "pass"],
        "import graphsurgery": ["-c", "import graphsurgery"],
        "--help": ["-m", "graphsurgery", "--help"],
        "verify --help": ["-m", "graphsurgery", "verify", "--help"],
        "steps": ["-m", "graphsurgery", "steps"],
        "schema": ["-m", "graphsurgery", "schema"],
        "apply missing (exit 2)": ["-m", "graphsurgery", "apply", "missing.yaml", "missing.onnx"],
        "inspect tiny.onnx": ["-m", "graphsurgery", "inspect", str(tiny)],
    }


COUNT_MODULES = """
import sys
sys.argv = ["graphsurgery", *sys.argv[1:]]
try:
    from graphsurgery.cli import main
    main()
except SystemExit:
    pass
heavy = [name for name in {heavy!r} if name in sys.modules]
print(len(sys.modules), ",".join(heavy) or "-", file=sys.__stderr__)
"""


def tiny_model(folder: Path) -> Path:
    """An Identity model of one float input: what `inspect` reads."""
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny", [value], [out])
    path = folder / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def timed(argv: list[str], folder: Path) -> tuple[float, float, int]:
    """CPU seconds (user + system) and wall seconds of one run, and its exit code."""
    before, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    code = subprocess.run([sys.executable, *argv], cwd=folder, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall, code


def modules(argv: list[str], folder: Path) -> str:
    """How many modules the command imports, and which heavy ones (in-process, without the supervisor)."""
    if argv[0] == "-c":
        code = f"import sys\n{argv[1]}\nprint(len(sys.modules), ','.join(n for n in {HEAVY!r} if n in sys.modules) " \
               "or '-', file=sys.stderr)"
        args = []
    else:
        code, args = COUNT_MODULES.format(heavy=HEAVY), argv[2:]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=folder, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="runs of each line, interleaved (default 10)")
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="cli_startup_") as scratch:
        folder = Path(scratch)
        lines = command_lines(tiny_model(folder))
        cpu: dict[str, list[float]] = {name: [] for name in lines}
        wall: dict[str, list[float]] = {name: [] for name in lines}
        codes: dict[str, int] = {}
        for _ in range(rounds):
            for name, argv in lines.items():
                seconds, elapsed, codes[name] = timed(argv, folder)
                cpu[name].append(seconds)
                wall[name].append(elapsed)
        counted = {name: modules(argv, folder) for name, argv in lines.items()}
    bare, package = statistics.median(cpu["python -c pass"]), statistics.median(cpu["import graphsurgery"])
    print(f"{rounds} interleaved rounds; {os.cpu_count()} CPUs; python {sys.version.split()[0]}; medians")
    print(f"{'command':24} {'exit':>4} {'CPU ms':>7} {'wall ms':>8} {'÷ pass':>7} {'÷ import':>8}  modules, heavy ones")
    for name in lines:
        median = statistics.median(cpu[name])
        print(f"{name:24} {codes[name]:>4} {median * 1000:7.0f} {statistics.median(wall[name]) * 1000:8.0f} "
              f"{median / bare:7.2f} {median / package:8.2f}  {counted[name]}")


if __name__ == "__main__":
    main()
