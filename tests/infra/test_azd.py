"""The Azure Developer CLI project: `azd up` provisions, deploys the code, then wires Event Grid."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from typing import Any

import yaml

from exporter.management.permissions import ROLES

from .conftest import INFRA, ROOT


def azure_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    return loaded


def test_the_app_is_one_python_function_service() -> None:
    project = azure_yaml()
    assert project["name"] == "activecampaign-segment-exporter"
    assert project["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert project["services"] == {
        "api": {"project": ".", "language": "python", "host": "function", "remoteBuild": True}
    }
    # azd finds the function app by this tag, set on the site in app/function.bicep.
    function = (INFRA / "app" / "function.bicep").read_text(encoding="utf-8")
    assert "'azd-service-name': serviceName" in function
    assert "param serviceName string = 'api'" in function


def test_postdeploy_hook_runs_the_event_grid_step() -> None:
    hook = azure_yaml()["hooks"]["postdeploy"]
    posix = ROOT / hook["posix"]["run"]
    windows = ROOT / hook["windows"]["run"]
    assert hook["posix"]["shell"] == "sh" and hook["windows"]["shell"] == "pwsh"
    assert posix.is_file() and os.access(posix, os.X_OK)
    assert windows.is_file()
    for script in (posix, windows):
        content = script.read_text(encoding="utf-8")
        assert "az deployment group create" in content
        assert "eventgrid.bicep" in content
        assert "eventgrid_extension" in content  # waits for the key before subscribing


def test_postdeploy_script_is_valid_sh() -> None:
    sh = shutil.which("sh")
    assert sh is not None
    script = INFRA / "scripts" / "postdeploy.sh"
    completed = subprocess.run([sh, "-n", str(script)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


def test_postdeploy_script_refuses_to_run_without_azd_outputs() -> None:
    script = INFRA / "scripts" / "postdeploy.sh"
    env = {"PATH": os.environ.get("PATH", "")}
    completed = subprocess.run(
        ["sh", str(script)], capture_output=True, text=True, check=False, env=env
    )
    assert completed.returncode != 0
    assert "AZURE_RESOURCE_GROUP" in completed.stderr


def ignored(path: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/"):
            if path == pattern or path.startswith(pattern):
                return True
        elif fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.rstrip("/"), pattern):
            return True
    return False


def test_deployment_package_leaves_out_development_files() -> None:
    lines = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for kept in ("function_app.py", "host.json", "requirements.txt", "exporter/", "blueprints/"):
        assert not ignored(kept, patterns), f"{kept} would be left out of the package"
    for dropped in (".venv/", ".venv-checkov/", "node_modules/", "tests/", "local.settings.json"):
        assert ignored(dropped, patterns), f"{dropped} would be deployed"


def test_app_roles_manifest_matches_the_code() -> None:
    roles = json.loads((INFRA / "entra" / "app-roles.json").read_text(encoding="utf-8"))
    assert sorted(role["value"] for role in roles) == sorted(ROLES)
    assert len({role["id"] for role in roles}) == len(roles)
    assert all(role["isEnabled"] and "User" in role["allowedMemberTypes"] for role in roles)
