"""Calling the CLI in tests, and the contract for bad input: one line, exit 2, no traceback, no internal error."""

from __future__ import annotations

from click.testing import CliRunner

from graphsurgery.cli import cli


def invoke(*args):
    """`graphsurgery ARGS...` in this process (paths and numbers given as they are)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_exit_2(result, *needles):
    """A refusal as the contract wants it, its one line holding every needle."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
