"""Fixtures for the infrastructure tests: the parsed Bicep templates and one checkov run.

No Bicep compiler can be installed here, so the templates are checked structurally: pycep parses
every file (a syntax error fails), the tests assert on the parsed resources, and checkov runs its
policy checks offline.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

Template = dict[str, Any]


def rel(path: Path) -> str:
    """Path of a template relative to infra/, with forward slashes (the keys of ``templates``)."""
    return path.relative_to(INFRA).as_posix()


@pytest.fixture(scope="session")
def templates() -> dict[str, Template]:
    """Every Bicep file under infra/, parsed by pycep, keyed by its path relative to infra/."""
    parser = BicepParser()
    return {rel(path): parser.parse(file_path=path) for path in BICEP_FILES}


def body(resource: Template) -> Template:
    """The resource's own body, unwrapping ``if (...)`` conditions and ``[for ...]`` loops."""
    config: Template = resource["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def resources(template: Template, type_: str, *, existing: bool = False) -> Iterator[Template]:
    """Resources of one type declared (or referenced, with ``existing=True``) in a template."""
    for resource in template.get("resources", {}).values():
        if resource["type"] == type_ and bool(resource.get("existing")) == existing:
            yield resource


def only(template: Template, type_: str) -> Template:
    """The body of the single resource of ``type_`` in ``template``."""
    found = list(resources(template, type_))
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return body(found[0])


def walk(node: Any) -> Iterator[Any]:
    """Every dict, list and scalar nested in a parsed template."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def checkov_binary() -> Path:
    """``$CHECKOV`` (the Makefile sets it), else the project's checkov venv."""
    configured = os.environ.get("CHECKOV")
    return Path(configured) if configured else ROOT / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="session")
def checkov_report() -> list[dict[str, Any]]:
    """One offline checkov run over infra/ (it takes seconds): its JSON report(s)."""
    binary = checkov_binary()
    assert binary.exists(), f"checkov not found at {binary}: run `make setup` (or set CHECKOV)"
    completed = subprocess.run(
        [
            str(binary),
            "--framework",
            "bicep",
            "--skip-download",
            "--directory",
            str(INFRA),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    # Exit code 1 means "failed checks"; anything else non-zero is checkov itself failing.
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    return report if isinstance(report, list) else [report]
