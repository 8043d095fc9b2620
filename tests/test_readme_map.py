"""README's "Where things are" names every module of the package: the map a newcomer reads first had lost 17 of
them (nms_reads, safeio, supervisor, …) as rounds added modules."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_is_on_the_readme_map():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Where things are"):].split("\n## ")[0]
    named = set(re.findall(r"`(?:graphsurgery/)?([a-z0-9_]+\.py)`", table))
    modules = {path.name for path in (ROOT / "graphsurgery").glob("*.py")} - {"__main__.py"}
    assert modules - named == set()
