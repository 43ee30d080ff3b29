"""The run page's figures: pace and time left, and the account's live use from its ledger."""

from __future__ import annotations

import pytest

from exporter.activecampaign.ledger import Book, FileLedger
from exporter.console.runner import LiveRun, LocalRunner, account_usage, pace


@pytest.mark.parametrize(
    ("moved", "total", "elapsed", "expected"),
    [
        (0, 100, 10.0, (None, None)),  # nothing moved yet: no pace to tell
        (50, 100, 10.0, (5.0, 10.0)),
        (50, None, 10.0, (5.0, None)),  # total not known yet
        (120, 100, 10.0, (12.0, 0.0)),  # never a negative time left
        (5, 100, 0.0, (None, None)),
    ],
)
def test_pace(
    moved: int, total: int | None, elapsed: float, expected: tuple[float | None, float | None]
) -> None:
    assert pace(moved, total, elapsed) == expected


def test_account_usage_counts_what_started_lately_not_what_is_reserved_ahead() -> None:
    now = 1_000.0
    book = Book(
        starts={
            "account": [now - 30, *(now - 9.5 + i * 0.2 for i in range(40)), now + 0.5],
            "bulk_multi": [now - 61, *(now - 50 + i for i in range(30)), now + 1],
            "bulk_single": [now - 5],
        }
    )
    usage = account_usage(book, now)
    assert usage == {
        "requests_per_second": 4.0,
        "requests_limit": 5,
        "bulk_last_minute": 31,
        "bulk_limit": 100,
    }
    # A sandbox at time scale 10: its minute is 6 s, its 10 s are 1 s.
    assert account_usage(book, now, time_scale=10)["bulk_last_minute"] == 1  # the single one


def test_the_ledger_is_peeked_without_being_rewritten(tmp_path: object) -> None:
    ledger = FileLedger.for_account(str(tmp_path), "acct.api-us1.com")
    assert ledger.peek().starts == {}
    with ledger.locked(keep_after=0.0) as book:
        book.starts = {"account": [5.0, 6.0]}
    before = ledger.path.stat().st_mtime_ns
    assert ledger.peek().starts == {"account": [5.0, 6.0]}
    assert ledger.path.stat().st_mtime_ns == before


def test_a_running_run_shows_its_accounts_use_and_a_finished_one_does_not() -> None:
    asked: list[str] = []

    def usage(export: str) -> dict[str, float]:
        asked.append(export)
        return {"requests_per_second": 4.8}

    runner = LocalRunner(lambda: None, clock=lambda: 10.0, usage=usage)  # type: ignore[arg-type,return-value]
    live = LiveRun("news", "r1", False, started=0.0)
    runner._live[("news", "r1")] = live
    assert runner.progress("news", "r1")["usage"] == {"requests_per_second": 4.8}  # type: ignore[index]
    live.status = "completed"
    assert runner.progress("news", "r1")["usage"] is None  # type: ignore[index]
    assert asked == ["news", "news"]
