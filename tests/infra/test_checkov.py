"""Checkov's Azure policies over every template, offline: no failed check.

A check may be skipped only in the template, next to the resource, with a written reason
(``// checkov:skip=CKV_AZURE_XX: reason``); docs/deploy.md lists why each applies.
"""

from __future__ import annotations

import re
from typing import Any

from .conftest import BICEP_FILES, INFRA

SKIP = re.compile(r"//\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?P<rest>.*)$")


def test_checkov_reports_no_failed_check(checkov_report: list[dict[str, Any]]) -> None:
    bicep = [report for report in checkov_report if report.get("check_type") == "bicep"]
    assert len(bicep) == 1, f"no bicep report in checkov's output: {checkov_report!r:.500}"
    summary = bicep[0]["summary"]
    results = bicep[0]["results"]
    # A template checkov cannot parse would be silently left out of the checks.
    assert summary["parsing_errors"] == 0, results.get("parsing_errors")
    scanned = {
        check["file_path"].lstrip("/")
        for key in ("passed_checks", "failed_checks", "skipped_checks")
        for check in results.get(key, [])
    }
    # Checkov has policies for these resource types; the other templates hold none it checks.
    assert {"core/storage.bicep", "core/keyvault.bicep", "app/function.bicep"} <= scanned
    failed = [
        f"{check['check_id']} {check['file_path']} {check['resource']}: {check['check_name']}"
        for check in results.get("failed_checks", [])
    ]
    assert summary["failed"] == 0, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["passed"] > 0


def test_every_skipped_check_has_a_reason() -> None:
    skips = 0
    for path in BICEP_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            match = SKIP.search(line)
            if match is None:
                continue
            skips += 1
            reason = match["rest"].lstrip(":").strip()
            where = f"{path.relative_to(INFRA)}:{number}"
            assert match["rest"].startswith(":"), f"{where}: write `{match['id']}: reason`"
            assert len(reason.split()) >= 5, f"{where}: skip {match['id']} without a real reason"
    assert skips > 0
