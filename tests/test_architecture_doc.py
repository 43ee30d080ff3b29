"""docs/architecture.md matches the code: every ``exporter.…`` module it names exists, and
every module of ``exporter/`` is in its module table."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


def modules_in_code() -> set[str]:
    found = set()
    for path in (ROOT / "exporter").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.add(".".join(parts))
    return found


def table_modules(text: str) -> set[str]:
    return set(re.findall(r"^\| `(exporter(?:\.[A-Za-z_]+)*)` \|", text, flags=re.M))


def named_modules(text: str) -> set[str]:
    """Every dotted ``exporter…`` name in the doc that looks like a module (lower case)."""
    return set(re.findall(r"\bexporter(?:\.[a-z_][a-z0-9_]*)+\b", text))


def test_every_module_is_in_the_table() -> None:
    assert modules_in_code() - table_modules(DOC.read_text()) == set()


def test_every_module_the_doc_names_exists() -> None:
    code = modules_in_code()
    named = named_modules(DOC.read_text()) | table_modules(DOC.read_text())
    assert {n for n in named if n not in code} == set()


def test_the_data_path_is_drawn_once() -> None:
    assert DOC.read_text().count("```") == 2
