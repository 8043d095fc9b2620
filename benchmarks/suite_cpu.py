"""Where the test suite's CPU goes, per test and per file. The contract wants `make test` well under 15 minutes on 2
cores; on the AVX2-only Zen 1 it takes about 20 (BENCHMARKS.md, "The test suite's CPU"). CPU seconds, not wall
time: on this shared machine a test's wall time measures its neighbours too.

    PYTHONPATH=benchmarks .venv/bin/python -m pytest -n 2 -q -p suite_cpu    # writes suite_cpu/<pid>.tsv
    .venv/bin/python benchmarks/suite_cpu.py suite_cpu                        # the summary

As a pytest plugin (`-p suite_cpu`) it writes one line per test (node id, CPU seconds, wall seconds; setup and
teardown included, so a module's fixtures count for its first test) to a file per worker process in the folder
SUITE_CPU (default `suite_cpu`). The CPU is the worker's, runtime threads included; commands a test starts in a
subprocess are not counted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

_lines: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    _lines.append(f"{item.nodeid}\t{time.process_time() - cpu:.3f}\t{time.perf_counter() - wall:.3f}\n")


def pytest_unconfigure(config):
    if _lines:
        folder = Path(os.environ.get("SUITE_CPU", "suite_cpu"))
        folder.mkdir(exist_ok=True)
        (folder / f"{os.getpid()}.tsv").write_text("".join(_lines))


def summary(folder: Path, top: int) -> None:
    """Totals, the CPU by the tests' cost, and the costliest files and tests."""
    from rich.console import Console
    from rich.table import Table

    rows = [(test, float(cpu), float(wall)) for path in sorted(folder.glob("*.tsv"))
            for test, cpu, wall in (line.split("\t") for line in path.read_text().splitlines())]
    total = sum(cpu for _, cpu, _ in rows)
    console = Console()
    console.print(f"{len(rows):,} tests, {total:,.0f} s of CPU in the test processes")
    by_cost = Table("tests costing", "tests", "CPU s", "share", title="by cost", title_justify="left")
    for low, high in ((5, None), (2, 5), (0.5, 2), (0, 0.5)):
        costs = [cpu for _, cpu, _ in rows if cpu >= low and (high is None or cpu < high)]
        label = f"≥ {low} s" if high is None else f"{low}–{high} s"
        by_cost.add_row(label, str(len(costs)), f"{sum(costs):,.0f}", f"{sum(costs) / total:.0%}")
    console.print(by_cost)
    files: dict[str, list[float]] = {}
    for test, cpu, _ in rows:
        files.setdefault(test.split("::")[0], []).append(cpu)
    costliest = Table("file", "tests", "CPU s", title=f"the {top} costliest files", title_justify="left")
    for name, costs in sorted(files.items(), key=lambda item: -sum(item[1]))[:top]:
        costliest.add_row(name, str(len(costs)), f"{sum(costs):,.1f}")
    console.print(costliest)
    tests = Table("test", "CPU s", "wall s", title=f"the {top} costliest tests", title_justify="left")
    for test, cpu, wall in sorted(rows, key=lambda row: -row[1])[:top]:
        tests.add_row(test, f"{cpu:.1f}", f"{wall:.1f}")
    console.print(tests)


if __name__ == "__main__":
    import click

    @click.command()
    @click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--top", default=20, show_default=True, help="how many files and tests to list")
    def main(folder: Path, top: int) -> None:
        """Summarise the per-test CPU that `pytest -p suite_cpu` wrote to FOLDER."""
        if not any(folder.glob("*.tsv")):  # a usage error, exit 2, as the CLI's
            raise click.BadParameter("no *.tsv files: run the suite with `-p suite_cpu` first", param_hint="FOLDER")
        summary(folder, top)

    main()
