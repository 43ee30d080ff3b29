"""host.json and local.settings.sample.json agree with the code that reads them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from blueprints import orchestration as orch
from exporter.reading.limits import ReadLimits
from exporter.run.engine import Engine
from exporter.settings import APP_SETTING_NAMES, DEFAULT_SCHEDULE, FunctionSettings
from exporter.storage.store import LocalStore
from tests.functions.fake_durable import make_runtime

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / name).read_text(encoding="utf-8"))
    return data


def test_the_sample_settings_name_every_app_setting_and_hold_no_secret() -> None:
    values = load("local.settings.sample.json")["Values"]
    assert [n for n in APP_SETTING_NAMES if n not in values] == []
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["EXPORTER_TIMER_SCHEDULE"] == DEFAULT_SCHEDULE
    for name, value in values.items():
        assert "AccountKey=" not in value, name
        assert not re.search(r"[0-9a-fA-F]{32,}", value), name
    settings = FunctionSettings.from_env(values)
    assert settings.storage_connection_string == "UseDevelopmentStorage=true"
    assert settings.keyvault_url is None, "locally keys come from the environment"


def test_host_json_bounds_the_per_worker_concurrency_and_outlasts_a_confirm(
    tmp_path: Path,
) -> None:
    host = load("host.json")
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    durable = host["extensions"]["durableTask"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,49}", durable["hubName"])
    # One worker can host a whole pipelined step of a run (pushes and confirms).
    assert durable["maxConcurrentActivityFunctions"] >= 2 * orch.MAX_WAVE_WIDTH
    hours, minutes, seconds = (int(p) for p in host["functionTimeout"].split(":"))
    timeout = hours * 3600 + minutes * 60 + seconds
    engine: Engine = make_runtime(LocalStore(tmp_path)).engine
    assert timeout > engine.poll.deadline, "a confirm activity may poll until its deadline"


def test_the_snapshot_limits_are_app_settings_too() -> None:
    """The ``EXPORTER_MAX_*`` settings an input error names raise the limit in Azure as on
    the command line: the worker's engine reads snapshots with them."""
    settings = FunctionSettings.from_env({"EXPORTER_MAX_COLUMNS": "7"})
    assert settings.read_limits.max_columns == 7
    assert FunctionSettings.from_env({}).read_limits == ReadLimits()
