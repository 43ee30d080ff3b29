"""The updated-since mark is taken by ActiveCampaign's clock (its ``Date`` header), less a
second, written in the account's own offset."""

from __future__ import annotations

import pytest

from exporter.activecampaign.list_members import server_mark


@pytest.mark.parametrize(
    ("date", "account_date", "expected"),
    [
        ("Sat, 05 Dec 2026 15:44:42 GMT", None, "2026-12-05T15:44:41+00:00"),
        ("Sat, 05 Dec 2026 15:44:42 GMT", "2026-01-02T03:04:05-05:00", "2026-12-05T10:44:41-05:00"),
        ("Sat, 05 Dec 2026 00:00:00 GMT", "2026-01-02T03:04:05+01:00", "2026-12-05T00:59:59+01:00"),
        ("Sat, 05 Dec 2026 15:44:42 GMT", "not a date", "2026-12-05T15:44:41+00:00"),
        (None, "2026-01-02T03:04:05-05:00", None),
        ("", None, None),
        ("garbage", None, None),
    ],
)
def testserver_mark(date: str | None, account_date: object, expected: str | None) -> None:
    assert server_mark(date, account_date) == expected
