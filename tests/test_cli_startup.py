"""The command line starts light: help is built without the model libraries (numpy, onnx, pydantic, the runtimes),
which only the commands that read a model load (BENCHMARKS.md, "CLI start-up"; round 96: every `--help` took about
0.5 s of CPU, most of it in onnx, numpy and the steps' pydantic models)."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODEL_LIBRARIES = ("numpy", "onnx", "onnxruntime", "openvino", "pydantic", "yaml", "cv2", "torch", "scipy")

#: the command line run in a fresh interpreter, as the supervisor's child runs it; prints what it had loaded
LOADED = """
import sys
sys.argv = ["graphsurgery", *sys.argv[1:]]
try:
    from graphsurgery.cli import main
    main()
except SystemExit as exc:
    code = exc.code
print("EXIT", code, file=sys.stderr)
print("LOADED", *sorted(name for name in {libraries!r} if name in sys.modules), file=sys.stderr)
"""


def loaded(*args: str, code: int = 0) -> tuple[str, set[str]]:
    """The command's standard output (and error) and the model libraries it loaded; it ended with `code`."""
    done = subprocess.run([sys.executable, "-c", LOADED.format(libraries=MODEL_LIBRARIES), *args],
                          capture_output=True, text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert f"EXIT {code}" in lines, done.stderr
    return done.stdout + done.stderr, set(next(line for line in lines if line.startswith("LOADED")).split()[1:])


@pytest.mark.parametrize("command", ["", "apply", "inspect", "schema", "steps", "convert", "run", "verify",
                                     "eval-coco", "bench", "chain"])
def test_help_loads_no_model_library(command):
    output, libraries = loaded(*command.split(), "--help")
    assert "Usage: graphsurgery" in output
    assert not libraries, f"`graphsurgery {command} --help` loaded {sorted(libraries)}"


def test_version_loads_no_model_library():
    output, libraries = loaded("--version")
    assert output.startswith("graphsurgery, version") and not libraries


def test_a_usage_error_loads_no_model_library():
    """Refused while its options are parsed: before the libraries load (`launch.load_libraries`)."""
    output, libraries = loaded("verify", "--bogus", code=2)
    assert "No such option '--bogus'" in output and not libraries


def test_a_command_that_needs_them_still_loads_them():
    """The other side: `steps` lists the steps' models (pydantic), so the laziness is where it should be."""
    output, libraries = loaded("steps")
    assert "resize" in output and "pydantic" in libraries
