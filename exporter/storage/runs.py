"""Where a run keeps its files, how runs are named, and the small records between phases.

Everything a run writes lives under ``runs/<export>/<run_id>/``::

    prepared.json          the manifest: counts, chunk list, state ETag (prepare → the rest)
    rejected.csv           rejected rows (API rejections appended by finalize)
    plan.csv               dry run only: what would be sent
    leavers-kept.txt       leavers forgotten without unsubscribing (finalize drops them)
    chunks/<n>.jsonl       prepared batches, one per line
    sent/<n>.json          what push did with chunk n (idempotency record)
    confirmed/<n>.json     what confirm learned about chunk n (idempotency record)
    commit.json            digest of the state finalize writes (a retried finalize recognises it)
    report.json            the final report

Per export, ``state/<export>/last_run.json`` remembers the last finished run (for the timer)
and ``state/<export>/active_run.json`` the run in progress (so an interrupted run resumes).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal, get_args

from exporter.errors import ConfigError
from exporter.storage.records import LOCAL as LOCAL
from exporter.storage.records import STORE as STORE
from exporter.storage.records import LastRun, read_record
from exporter.storage.store import Store

RunStatus = Literal[
    "running",
    "completed",
    "completed_with_failures",
    "failed",
    "dry_run",
    "guarded",
    "cancelled",
    "terminated",
    "abandoned",
]
"""A run report's status. ``terminated``: its orchestration was force-terminated;
``abandoned``: its host stopped (a crash, a killed process) and another run of the export, or
the timer's sweep, closed it."""
EndedStatus = Literal["terminated", "abandoned"]
"""The statuses of a run closed by someone else than itself."""
FINAL_STATUSES = frozenset(get_args(RunStatus)) - {"running"}
"""Report statuses of a finished run (``running`` is the only other one)."""

_RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}(?:-[0-9]+)?")


def run_dir(export: str, run_id: str) -> str:
    """Store folder of one run (no trailing slash)."""
    return f"runs/{export}/{run_id}"


def manifest_path(export: str, run_id: str) -> str:
    return f"{run_dir(export, run_id)}/prepared.json"


def report_path(export: str, run_id: str) -> str:
    return f"{run_dir(export, run_id)}/report.json"


def rejected_path(export: str, run_id: str) -> str:
    return f"{run_dir(export, run_id)}/rejected.csv"


def plan_path(export: str, run_id: str) -> str:
    return f"{run_dir(export, run_id)}/plan.csv"


def kept_path(export: str, run_id: str) -> str:
    return f"{run_dir(export, run_id)}/leavers-kept.txt"


def commit_path(export: str, run_id: str) -> str:
    return f"{run_dir(export, run_id)}/commit.json"


def chunk_path(export: str, run_id: str, n: int) -> str:
    return f"{run_dir(export, run_id)}/chunks/{n:05d}.jsonl"


def chunk_number(chunk: str) -> int:
    """``…/chunks/00012.jsonl`` → 12."""
    name = chunk.rpartition("/")[2]
    return int(name.partition(".")[0])


def sent_path(export: str, run_id: str, chunk: str) -> str:
    return f"{run_dir(export, run_id)}/sent/{chunk_number(chunk):05d}.json"


def confirmed_path(export: str, run_id: str, chunk: str) -> str:
    return f"{run_dir(export, run_id)}/confirmed/{chunk_number(chunk):05d}.json"


def last_run_path(export: str) -> str:
    return f"state/{export}/last_run.json"


def pending_path(export: str) -> str:
    """Where a trigger leaves the snapshot to run after the export's current run."""
    return f"state/{export}/pending.json"


def schedule_path(export: str) -> str:
    """Where the timer keeps the export's last scheduled slot."""
    return f"state/{export}/schedule.json"


def active_run_path(export: str) -> str:
    return f"state/{export}/active_run.json"


KEPT_AFTER_DELETE = "report.json"
"""What stays of a deleted export's runs: each run's report (counts and outcomes, no addresses)."""


def forget_export(store: Store, export: str) -> int:
    """Delete the personal data a deleted export left in the store; returns how many objects
    went. That is all of ``state/<export>/`` (``state.bin``, every address it ever sent, and the
    pending, active and last-run records) and every file of its runs except ``report.json``
    (chunks, sent/confirmed records, ``rejected.csv``, ``plan.csv``, leavers kept). Idempotent:
    call it again after cancelling runs that were still writing."""
    removed = 0
    doomed = [info.path for info in store.list(f"state/{export}/")]
    doomed += [
        info.path
        for info in store.list(f"runs/{export}/")
        if info.path.rpartition("/")[2] != KEPT_AFTER_DELETE
    ]
    for path in doomed:
        store.delete(path)
        removed += 1
    return removed


def new_run_id(now: datetime, snapshot_identity: str) -> str:
    """``20261125T183000Z-<8 hex of the snapshot identity>``: sortable, and recognisable."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{snapshot_identity[:8]}"


def check_run_id(run_id: str) -> str:
    """A well-formed run id, or :class:`ConfigError` (run ids become store paths)."""
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError("is not a run id such as 20261125T183000Z-1a2b3c4d", field="run_id")
    return run_id


MAX_TIMER_ATTEMPTS = 3
"""Runs in a row the timer makes over one snapshot whose runs keep stopping (see
:attr:`LastRun.retry`); after that it waits for a new snapshot (the alert has fired each time)."""


def read_last_run(store: Store, export: str) -> LastRun | None:
    """The export's last finished run, or ``None``."""
    return read_record(store, last_run_path(export), LastRun)
