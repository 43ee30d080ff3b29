"""The layers hold: every import of the code (module level and inside functions) is walked
with ``ast`` and checked against the rules of docs/architecture.md.

- ``exporter/`` (the core) never imports the Functions host (``azure.functions``,
  ``azure.durable_functions``), the host's adapters (``blueprints``, ``function_app``) nor the
  ``sandbox``;
- only ``exporter/adapters/`` and ``blueprints/`` import an Azure SDK (``azure.*``);
  ``bench/durable/`` (the Durable host's stand-in the tests and the benchmarks drive the
  orchestrations with) may import the Functions host's SDKs (``azure.functions``,
  ``azure.durable_functions``) and nothing else of ``azure``;
- ``exporter/`` uses only the OpenTelemetry API, never its SDK, exporters or instrumentations;
- ``sandbox/`` (a separate program, the ActiveCampaign emulator) never imports ``exporter``;
- ``function_app.py`` only imports blueprints, builds the app and registers them.

"Every import" means ``import`` and ``from … import`` statements anywhere (inside functions,
``if TYPE_CHECKING:`` blocks, ``try``) and ``importlib.import_module("…")`` /
``__import__("…")`` with a literal name.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST = ("azure.functions", "azure.durable_functions")
HOST_STAND_IN = "bench/durable/"
"""Plays the Durable host over the SDK's replay engine: may import the host's SDKs only."""
OTEL_SDK = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")
"""The core may use the OpenTelemetry API (``opentelemetry.metrics``) to produce telemetry; only
the edge (``blueprints/telemetry.py``) installs an SDK, exporters and instrumentations."""


def imports(tree: ast.AST) -> Iterator[str]:
    """Every module an AST imports, wherever the import statement stands."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # ``from azure import functions`` imports azure.functions
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value


def _is_dynamic_import(func: ast.expr) -> bool:
    """``importlib.import_module``, a bare ``import_module`` or ``__import__``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


SKIPPED_DIRS = frozenset({"tests", "node_modules", "__pycache__"})
"""Not walked: the tests (they drive Azurite and the SDKs on purpose) and what is not ours."""


def python_files(root: Path) -> Iterator[Path]:
    """The project's Python files, without descending into skipped or hidden folders (a
    virtual environment in the checkout holds tens of thousands of files)."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if d not in SKIPPED_DIRS and not d.startswith((".", "venv"))
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder) / name


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def violations(root: Path) -> list[str]:
    """Each broken rule as ``file: what``, for the tree at ``root``."""
    found: list[str] = []
    for path in python_files(root):
        rel = path.relative_to(root).as_posix()
        top = rel.split("/")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        names = set(imports(tree))
        in_core = rel.startswith("exporter/")
        may_use_azure = rel.startswith(("exporter/adapters/", "blueprints/"))
        plays_the_host = rel.startswith(HOST_STAND_IN)
        for name in sorted(names):
            if plays_the_host and _under(name, *HOST):
                continue
            if in_core and _under(name, *HOST):
                found.append(f"{rel}: the core imports the Functions host ({name})")
            if in_core and _under(name, "sandbox"):
                found.append(f"{rel}: the core imports the sandbox ({name})")
            if in_core and _under(name, "blueprints", "function_app"):
                found.append(f"{rel}: the core imports the host's adapters ({name})")
            if in_core and _under(name, *OTEL_SDK):
                found.append(f"{rel}: the core configures telemetry ({name}); use the API")
            if not may_use_azure and _under(name, "azure"):
                found.append(f"{rel}: an Azure SDK outside adapters and blueprints ({name})")
            if top == "sandbox" and _under(name, "exporter"):
                found.append(f"{rel}: the sandbox imports the exporter ({name})")
        if rel == "function_app.py":
            found.extend(f"function_app.py: {p}" for p in _app_problems(tree, names))
    return found


def _app_problems(tree: ast.Module, names: set[str]) -> list[str]:
    problems = [f"imports {n}" for n in sorted(names) if not _under(n, "blueprints")]
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if _is_app_assignment(node) or _is_registration(node):
            continue
        problems.append(f"line {node.lineno} does more than register blueprints")
    return problems


def _is_app_assignment(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["app"]
        and isinstance(node.value, ast.Call)
        and not node.value.args
        and not node.value.keywords
    )


def _is_registration(node: ast.stmt) -> bool:
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    call = node.value
    return (
        isinstance(call.func, ast.Attribute)
        and call.func.attr == "register_functions"
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "app"
        and len(call.args) == 1
        and isinstance(call.args[0], ast.Attribute)
        and call.args[0].attr == "bp"
    )


def test_the_project_keeps_its_boundaries() -> None:
    walked = {p.relative_to(ROOT).as_posix() for p in python_files(ROOT)}
    # The walk reaches every area the rules speak of (a moved root would pass vacuously).
    for expected in (
        "function_app.py",
        "exporter/cli.py",
        "exporter/adapters/keyvault.py",
        "blueprints/triggers.py",
        "sandbox/server.py",
    ):
        assert expected in walked
    assert not any(p.startswith("tests/") for p in walked)
    assert violations(ROOT) == []


PLANTED = [
    ("exporter/x.py", "import azure.functions as func\n", "the core imports the Functions host"),
    (
        "exporter/x.py",
        "def f():\n    from azure.durable_functions import DFApp\n",
        "Functions host",
    ),
    ("exporter/x.py", "from azure import functions\n", "Functions host"),
    ("exporter/x.py", "from sandbox import Sandbox\n", "the core imports the sandbox"),
    (
        "exporter/run/x.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sandbox.api\n",
        "the core imports the sandbox",
    ),
    ("exporter/x.py", "import importlib\nimportlib.import_module('sandbox')\n", "sandbox"),
    ("exporter/x.py", "__import__('azure.functions')\n", "Functions host"),
    ("exporter/x.py", "from blueprints.runtime import get_runtime\n", "host's adapters"),
    ("exporter/x.py", "def f():\n    import function_app\n", "host's adapters"),
    ("exporter/x.py", "from azure.storage.blob import BlobClient\n", "Azure SDK outside"),
    ("bench/x.py", "import azure.identity\n", "Azure SDK outside"),
    ("bench/x.py", "import azure.durable_functions\n", "Azure SDK outside"),
    ("bench/durable/x.py", "import azure.storage.blob\n", "Azure SDK outside"),
    ("exporter/x.py", "from opentelemetry.sdk.metrics import MeterProvider\n", "telemetry"),
    ("exporter/x.py", "import azure.monitor.opentelemetry\n", "Azure SDK outside"),
    ("exporter/run/x.py", "def f():\n    import opentelemetry.exporter.otlp\n", "use the API"),
    ("sandbox/x.py", "from exporter.errors import ConfigError\n", "the sandbox imports"),
    ("sandbox/x.py", "def f():\n    import exporter.masking\n", "the sandbox imports"),
    ("function_app.py", "import azure.functions\n", "imports azure.functions"),
    ("function_app.py", "from blueprints import x\nprint('hi')\n", "does more than register"),
    ("function_app.py", "from blueprints import x\napp = make(1)\n", "does more than register"),
    ("function_app.py", "import os\n", "imports os"),
    (
        "function_app.py",
        "from blueprints import x\nif x:\n    app.register_functions(x.bp)\n",
        "does more than register",
    ),
    ("function_app.py", "from blueprints import x\ndef f():\n    pass\n", "does more"),
    ("function_app.py", "from blueprints import x\napp.register_functions(x)\n", "does more"),
]


@pytest.mark.parametrize(("file", "code", "expected"), PLANTED)
def test_each_rule_catches_a_planted_violation(
    tmp_path: Path, file: str, code: str, expected: str
) -> None:
    target = tmp_path / file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(code)
    found = violations(tmp_path)
    assert any(expected in v for v in found), found


def test_adapters_and_blueprints_may_use_the_sdks(tmp_path: Path) -> None:
    files = {
        "exporter/adapters/x.py": "import azure.storage.blob\nfrom azure.identity import X\n",
        "blueprints/x.py": "import azure.functions\nimport azure.durable_functions\n",
        "bench/durable/x.py": "import azure.functions\nimport azure.durable_functions\n",
        "blueprints/y.py": "import azure.monitor.opentelemetry\nimport opentelemetry.sdk\n",
        "exporter/z.py": "from opentelemetry import metrics\n",
    }
    for file, code in files.items():
        target = tmp_path / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    assert violations(tmp_path) == []


def test_skipped_folders_are_not_walked(tmp_path: Path) -> None:
    for folder in ("tests", ".venv/lib", "node_modules/x", "exporter/__pycache__"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "x.py").write_text("import azure.functions\n")
    assert violations(tmp_path) == []
