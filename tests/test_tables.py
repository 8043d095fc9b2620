"""Report tables keep every number readable: as a table when it fits, one block per row when it does not."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from graphsurgery.cli.tables import print_table


def _table() -> Table:
    table = Table("pipeline", "model ms\nmedian", "end-to-end\nms p90", title="latency")
    table.add_row("ONNX Runtime plain + numpy", "92.76", "111.32")
    table.add_row("OpenVINO patched (bf16, reduced precision)", "41.92", "51.30")
    return table


def _printed(width: int) -> str:
    out = io.StringIO()
    print_table(Console(file=out, width=width, color_system=None), _table())
    return out.getvalue()


def test_a_narrow_console_gets_one_block_per_row_with_every_number():
    text = _printed(60)
    assert "…" not in text and "┃" not in text
    assert "OpenVINO patched (bf16, reduced precision)\n  model ms median: 41.92\n  end-to-end ms p90: 51.30" in text
    assert text.startswith("latency\n") and "92.76" in text and "111.32" in text


def test_a_wide_console_gets_the_table():
    text = _printed(200)
    assert "┃" in text and "41.92" in text and "model ms median:" not in text
