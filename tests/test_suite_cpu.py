"""benchmarks/suite_cpu.py: the per-test CPU of a suite run (plugin) and its summary (BENCHMARKS.md's numbers)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

BUSY = """
import time

def test_busy():
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass

def test_idle():
    time.sleep(0.3)
"""


def test_the_plugin_counts_cpu_not_waiting(tmp_path):
    (tmp_path / "test_two.py").write_text(BUSY)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks"), "SUITE_CPU": str(tmp_path / "cpu")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "suite_cpu", "-p", "no:cacheprovider",
                           "-o", "addopts=", str(tmp_path / "test_two.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [written] = (tmp_path / "cpu").glob("*.tsv")
    rows = {test.split("::")[1]: (float(cpu), float(wall))
            for test, cpu, wall in (line.split("\t") for line in written.read_text().splitlines())}
    assert set(rows) == {"test_busy", "test_idle"}
    assert rows["test_busy"][0] >= 0.3 and rows["test_idle"][0] < 0.15 <= 0.3 <= rows["test_idle"][1]


def test_the_summary_adds_up_by_cost_file_and_test(tmp_path):
    (tmp_path / "1.tsv").write_text("tests/test_a.py::one\t6.0\t7.0\ntests/test_a.py::two\t3.0\t3.5\n")
    (tmp_path / "2.tsv").write_text("tests/test_b.py::three\t0.25\t0.5\n")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite_cpu.py"), str(tmp_path), "--top", "1"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "3 tests, 9 s of CPU in the test processes"
    by_cost = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip("│").split("│")]
                                                 for line in lines) if len(cells) == 4}
    assert by_cost["≥ 5 s"] == ["1", "6", f"{6 / 9.25:.0%}"] and by_cost["2–5 s"] == ["1", "3", f"{3 / 9.25:.0%}"]
    assert "tests/test_a.py" in done.stdout and "tests/test_b.py" not in done.stdout  # the top file only
    assert "test_a.py::one" in done.stdout and "::two" not in done.stdout
    (tmp_path / "empty").mkdir()
    empty = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite_cpu.py"), str(tmp_path / "empty")],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "no *.tsv files" in empty.stderr and "Traceback" not in empty.stderr
