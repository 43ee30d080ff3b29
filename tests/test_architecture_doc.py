"""docs/architecture.md matches the code: every ``exporter.…`` module it names exists, and
every module of ``exporter/`` is in its module table; dotted names that go on past a module
(``blueprints.register.new_app``) name something the module defines, and file paths it gives
(``blueprints/orchestration.py``) exist. The data path is drawn once, with real modules."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("exporter", "blueprints", "sandbox")
"""Top-level packages whose dotted names the doc may use."""


def modules_in_code(package: str = "exporter") -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.add(".".join(parts))
    return found


def table_modules(text: str) -> set[str]:
    return set(re.findall(r"^\| `(exporter(?:\.[A-Za-z_]+)*)` \|", text, flags=re.M))


def dotted_names(text: str) -> set[str]:
    """Every dotted name in the doc that starts with one of our packages."""
    pattern = rf"(?<![\w./-])(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_][A-Za-z0-9_]*)+"
    return set(re.findall(pattern, text))


def file_paths(text: str) -> set[str]:
    """Every ``package/…`` path the doc gives (files ending ``.py`` and folders ending ``/``)."""
    pattern = rf"(?<![\w./<-])(?:{'|'.join(PACKAGES)})/[\w/]*(?:\.py|/)(?![\w<])"
    return set(re.findall(pattern, text))


@functools.cache
def _all_modules() -> frozenset[str]:
    return frozenset().union(*(modules_in_code(p) for p in PACKAGES))


@functools.cache
def _defined(module: str) -> frozenset[str]:
    """The names a module defines at its top level (classes, functions, assignments,
    imports)."""
    path = ROOT / Path(*module.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names: set[str] = set()
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def resolves(name: str) -> bool:
    """``name`` is a module, or a module followed by something it defines."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in _all_modules():
            return cut == len(parts) or parts[cut] in _defined(module)
    return False


def diagram(text: str) -> str:
    return text.split("```")[1]


def test_every_module_is_in_the_table() -> None:
    assert modules_in_code() - table_modules(DOC.read_text()) == set()


def test_every_module_the_doc_names_exists() -> None:
    text = DOC.read_text()
    named = dotted_names(text) | table_modules(text)
    assert {n for n in named if not resolves(n)} == set()


def test_every_path_the_doc_gives_exists() -> None:
    paths = file_paths(DOC.read_text())
    assert "blueprints/orchestration.py" in paths, "the pattern still finds paths"
    assert {p for p in paths if not (ROOT / p).exists()} == set()


def test_the_data_path_is_drawn_once_with_each_phase() -> None:
    text = DOC.read_text()
    assert text.count("```") == 2
    drawn = dotted_names(diagram(text))
    for stage in ("exporter.reading.", "exporter.planning.", "exporter.activecampaign"):
        assert any(n.startswith(stage) for n in drawn), stage
    for phase in ("preparer", "push", "confirm", "finalize"):
        assert any(n.rsplit(".", 1)[-1] == phase for n in drawn), phase


@pytest.mark.parametrize(
    ("name", "real"),
    [
        ("exporter.run.engine", True),
        ("exporter.run.engine.Engine", True),
        ("blueprints.register.new_app", True),
        ("exporter.push", False),
        ("exporter.run.engine.NoSuchThing", False),
        ("blueprints.register.nope", False),
    ],
)
def test_the_checker_tells_real_names_from_stale_ones(name: str, real: bool) -> None:
    assert resolves(name) is real


def test_the_checker_finds_names_and_paths_in_prose() -> None:
    text = "see `exporter.push` and blueprints/nowhere.py, not runs/<export>/x.py or a.exporter.b"
    assert dotted_names(text) == {"exporter.push"}
    assert file_paths(text) == {"blueprints/nowhere.py"}
