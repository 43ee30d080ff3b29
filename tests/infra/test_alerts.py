"""The alerts and the workbook (infra/core/monitoring.bicep) against the code that feeds them.

The run statuses come from the code (the report's ``RunStatus``, the store's ``FINAL_STATUSES``),
so a status added there without an alert fails here. Every ``customDimensions`` key and every
``customMetrics`` name the queries read is one the code really writes: the records are produced
by :mod:`exporter.telemetry` itself and captured, not restated.
"""

from __future__ import annotations

import json
import logging
import re
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from exporter import telemetry
from exporter.run.report import RunReport, RunStatus
from exporter.storage.runs import FINAL_STATUSES

from .conftest import ROOT, Template, body, only, resources, walk

MONITORING = "core/monitoring.bicep"
RULE = "Microsoft.Insights/scheduledQueryRules"
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve(text: str, variables: dict[str, Any]) -> str:
    """``text`` with every ``${variable}`` replaced by that (string) variable's value (a
    parameter's or a loop item's interpolation is left as written)."""

    def value(match: re.Match[str]) -> str:
        if match[1] not in variables:
            return match[0]
        found = variables[match[1]]["value"]
        assert isinstance(found, str), match[1]
        return resolve(found, variables)

    return INTERPOLATION.sub(value, text)


def query_of(criterion: dict[str, Any], variables: dict[str, Any]) -> str:
    """A criterion's query: a variable's name or an (interpolated) string."""
    query = criterion["query"]
    if query in variables:
        query = variables[query]["value"]
    return resolve(query, variables)


def rules(template: Template) -> Iterator[tuple[str, Template]]:
    for name, resource in template["resources"].items():
        if resource["type"] == RULE:
            yield name, body(resource)


@pytest.fixture(scope="module")
def monitoring(templates: dict[str, Template]) -> Template:
    return templates[MONITORING]


@pytest.fixture(scope="module")
def written() -> dict[str, set[str]]:
    """The attribute names of the records the code writes at a run's start and end."""
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Capture()
    handler.addFilter(telemetry.RunDimensions())
    logger = logging.getLogger("exporter.telemetry")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with telemetry.run_scope(export="e", run_id="r", phase="prepare"):
            telemetry.bind_run(connection="c", account="a.api-us1.com")
            telemetry.run_started(_Request())  # type: ignore[arg-type]
            report = RunReport(export="e", run_id="r", snapshot="s", started_at="", status="failed")
            telemetry.run_ended(report)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    plain = set(vars(logging.LogRecord("x", 0, "", 0, "", None, None)))
    out: dict[str, set[str]] = {}
    for record in captured:
        out[record.event] = set(vars(record)) - plain  # type: ignore[attr-defined]
    assert set(out) == {telemetry.RUN_STARTED, telemetry.RUN_ENDED}
    return out


class _Request:
    export = "e"
    run_id = "r"
    requested_by = "http:someone@example.com"


# --- statuses ---------------------------------------------------------------------------------


def test_the_status_lists_of_the_code_agree() -> None:
    statuses = set(typing.get_args(RunStatus))
    assert statuses == FINAL_STATUSES | {"running"}
    assert telemetry.BAD_ENDINGS | telemetry.GOOD_ENDINGS == FINAL_STATUSES
    assert not telemetry.BAD_ENDINGS & telemetry.GOOD_ENDINGS


def test_every_bad_ending_has_its_alert(monitoring: Template) -> None:
    endings = monitoring["variables"]["badEndings"]["value"]
    assert {e["status"] for e in endings} == telemetry.BAD_ENDINGS
    assert len(endings) == len(telemetry.BAD_ENDINGS)
    (loop,) = [
        r for r in resources(monitoring, RULE) if "loop_type" in r["config"]
    ]  # one rule per ending
    assert loop["config"]["loop_type"]["detail"] == {
        "item_name": "ending",
        "array_name": "badEndings",
    }
    rule = body(loop)["properties"]
    assert rule["enabled"] is True
    (criterion,) = rule["criteria"]["allOf"]
    variables = monitoring["variables"]
    for ending in endings:
        assert ending["severity"] in (1, 2) and ending["title"] and len(ending["description"]) > 40
        query = query_of(criterion, variables).replace("${ending.status}", ending["status"])
        assert f'where status == "{ending["status"]}"' in query
        assert f'customDimensions["event"]) == "{telemetry.RUN_ENDED}"' in query
    assert [s for s in telemetry.BAD_ENDINGS if s == "failed"] and any(
        e["status"] == "failed" and e["severity"] == 1 for e in endings
    )
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
    assert [d["name"] for d in criterion["dimensions"]] == ["export_name"]


def test_no_alert_parses_log_text(monitoring: Template) -> None:
    variables = monitoring["variables"]
    for name, rule in rules(monitoring):
        for criterion in rule["properties"]["criteria"]["allOf"]:
            query = query_of(criterion, variables)
            assert "message" not in query, name
            assert "extract(" not in query, name


def test_every_rule_is_on_and_notifies_the_action_group(monitoring: Template) -> None:
    names = [name for name, _rule in rules(monitoring)]
    assert sorted(names) == ["runEndedAlerts", "stuckRunAlert", "throttledAlert"]
    for name, rule in rules(monitoring):
        props = rule["properties"]
        assert props["enabled"] is True, name
        assert props["autoMitigate"] is False, name
        assert "actionGroup" in json.dumps(props["actions"]["actionGroups"]), name
        assert "applicationInsights" in json.dumps(props["scopes"]), name
    group = only(monitoring, "Microsoft.Insights/actionGroups")["properties"]
    assert "alertEmail" in json.dumps(group["emailReceivers"])


def test_a_run_without_a_report_within_n_hours_is_reported_stuck(monitoring: Template) -> None:
    rule = body(monitoring["resources"]["stuckRunAlert"])["properties"]
    (criterion,) = rule["criteria"]["allOf"]
    query = query_of(criterion, monitoring["variables"])
    assert f'== "{telemetry.RUN_STARTED}"' in query and f'== "{telemetry.RUN_ENDED}"' in query
    assert "join kind=leftanti ended on run_id" in query
    # Each evaluation looks at the starts of one hour, N hours back: each stuck run fires once.
    assert "between (ago(${stuckAfterHours + 1}h) .. ago(${stuckAfterHours}h))" in query
    assert rule["evaluationFrequency"] == "PT1H"
    param = monitoring["parameters"]["stuckAfterHours"]
    limits = {d["type"]: d.get("argument") for d in param["decorators"]}
    # The window (two days, the most a log alert allows) must reach back past N + 1 hours.
    assert rule["windowSize"] == "P2D" and limits["max_value"] + 1 <= 48
    # The longest run measured (10 million contacts at 100 bulk requests a minute: ~6.7 h) fits.
    assert param["default"] >= 10_000_000 / (250 * 100) / 60 + 1
    assert [d["name"] for d in criterion["dimensions"]] == ["export_name"]


def test_throttled_answers_above_zero_alert_per_account(monitoring: Template) -> None:
    rule = body(monitoring["resources"]["throttledAlert"])["properties"]
    (criterion,) = rule["criteria"]["allOf"]
    query = query_of(criterion, monitoring["variables"])
    assert 'name == "exporter.throttled_answers"' in query
    assert criterion["metricMeasureColumn"] == "throttled" and "throttled = valueSum" in query
    assert criterion["timeAggregation"] == "Total"
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
    assert [d["name"] for d in criterion["dimensions"]] == ["account"]


# --- what the queries read exists ---------------------------------------------------------------


def _all_queries(monitoring: Template) -> list[str]:
    variables = monitoring["variables"]
    found = [
        query_of(c, variables)
        for _n, r in rules(monitoring)
        for c in r["properties"]["criteria"]["allOf"]
    ]
    found += [
        resolve(variables[n]["value"], variables)
        for n in variables
        if n.endswith("Query") or n == "endedRuns"
    ]
    return found


def test_every_dimension_a_query_reads_is_written_by_the_code(
    monitoring: Template, written: dict[str, set[str]]
) -> None:
    keys = set()
    for query in _all_queries(monitoring):
        keys |= set(re.findall(r'customDimensions\["([a-z_]+)"\]', query))
    assert {"event", "status", "export", "run_id", "connection", "account"} <= keys
    metric_keys = {"account"}  # the metrics' attributes (checked in tests/test_telemetry.py)
    log_keys = written[telemetry.RUN_ENDED] | written[telemetry.RUN_STARTED]
    assert keys <= log_keys | metric_keys, keys - log_keys - metric_keys
    # Both records carry the run's dimensions, and the start names no principal.
    for attrs in written.values():
        assert set(telemetry.DIMENSIONS) <= attrs
    assert "requested_by" in written[telemetry.RUN_STARTED]


def test_every_metric_a_query_reads_is_an_instrument_of_the_code(monitoring: Template) -> None:
    code = (ROOT / "exporter" / "telemetry.py").read_text(encoding="utf-8")
    instruments = set(re.findall(r'create_(?:counter|histogram)\(\s*"([a-z_.]+)"', code))
    assert {"exporter.throttled_answers", "exporter.budget_used"} <= instruments
    read = set()
    for query in _all_queries(monitoring):
        read |= set(re.findall(r'customMetrics \| where name == "([a-z_.]+)"', query))
    assert read and read <= instruments, read - instruments


# --- the workbook ---------------------------------------------------------------------------------


def test_the_workbook_shows_run_history_per_export_and_budget_use_per_account(
    monitoring: Template,
) -> None:
    workbook = only(monitoring, "Microsoft.Insights/workbooks")
    assert workbook["kind"] == "shared"
    props = workbook["properties"]
    assert props["category"] == "workbook" and props["displayName"]
    assert "applicationInsights" in json.dumps(props["sourceId"])
    assert props["serializedData"] == {
        "function": {"type": "string", "parameters": {"value_to_convert": "workbookContent"}}
    }
    assert workbook["name"]["function"]["type"] == "guid"  # a workbook's name is a GUID
    variables = monitoring["variables"]
    content = variables["workbookContent"]["value"]
    assert content["version"] == "Notebook/1.0"
    queries = {
        item["name"]: resolve(variables[item["content"]["query"]]["value"], variables)
        for item in content["items"]
        if item["type"] == 3
    }
    history = queries["run-history"]
    assert f'== "{telemetry.RUN_ENDED}"' in history
    assert "order by export_name" in history
    for column in ("status", "rows_read", "sent", "confirmed", "rejected", "failed"):
        assert f"{column}," in history or f"{column} " in history
    budget = queries["budget-use"]
    assert 'name == "exporter.budget_used"' in budget and "by account" in budget
    assert all(
        item["content"]["resourceType"] == "microsoft.insights/components"
        for item in content["items"]
        if item["type"] == 3
    )
    # Bicep's string() of this object must be valid workbook JSON: only plain values in it.
    for node in walk(content["items"]):
        assert not (isinstance(node, dict) and ("operator" in node or "function" in node))
