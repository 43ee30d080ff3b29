"""One phase of a run in a process of its own, so its peak memory is that phase's alone.

    python -m bench.scale_child PHASE HOME [SNAPSHOT]

Phases (the engine's own code, without the wire):

* ``prepare HOME SNAPSHOT``: :meth:`Engine.prepare` of a new run (the run request is kept in
  ``HOME/scale-request.json`` for the phases after it);
* ``wire HOME``: what a push and confirm with every batch accepted and completed would have
  recorded (the records, written chunk by chunk; no request is made);
* ``finalize HOME``: :meth:`Engine.finalize` (tally, state update, state save);
* ``load HOME``: load the export's state, as every activity that needs it does;
* ``members HOME``: the members activity's refresh (:func:`exporter.run.members.refresh`) with a
  list read that finds 1,000 members, so it loads the state to tell them apart.

Prints one JSON object: the phase's wall and CPU seconds and the process's peak RSS
(``VmHWM``; imports included: that is what a worker pays), and the phase's counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import harness
from bench.prepare_child import peak_rss_mb
from exporter.incremental import state as state_mod
from exporter.run import members
from exporter.run.engine import Engine
from exporter.storage import runs
from exporter.storage.records import (
    ConfirmedBatchEntry,
    ConfirmedRecord,
    Manifest,
    RunRequest,
    SentBatchEntry,
    SentRecord,
    read_record,
    write_record,
)
from exporter.storage.store import LocalStore

REQUEST = "scale-request.json"


def _request(home: Path) -> RunRequest:
    return RunRequest.from_dict(json.loads((home / REQUEST).read_text()))


def prepare(engine: Engine, home: Path, snapshot: str | None) -> dict[str, Any]:
    assert snapshot, "prepare needs a snapshot"
    req = engine.new_run(
        harness.EXPORT, snapshot=Engine.local_snapshot(snapshot), snapshot_location=runs.LOCAL
    )
    (home / REQUEST).write_text(json.dumps(req.to_dict()))
    result = engine.prepare(req)
    return {
        "rows": result.counts.get("rows_read", 0),
        "to_send": result.contacts_to_send,
        "leavers": result.leavers_to_unsubscribe,
        "chunks": len(result.chunks),
    }


def wire(engine: Engine, home: Path, _snapshot: str | None) -> dict[str, Any]:
    """Every batch accepted and completed: the records a clean push and confirm leave."""
    req = _request(home)
    store = engine.store
    manifest = read_record(store, runs.manifest_path(req.export, req.run_id), Manifest)
    assert manifest is not None, "the run was not prepared"
    contacts = 0
    for info in manifest.chunks:
        sent, final = [], []
        for batch in engine.read_chunk(info.path):
            n = len(batch.contacts)
            contacts += n
            batch_id = f"bench-{info.path.rsplit('/', 1)[-1]}-{batch.index}"
            sent.append(SentBatchEntry(index=batch.index, batch_id=batch_id, contacts=n, sent=n))
            final.append(
                ConfirmedBatchEntry(
                    index=batch.index,
                    batch_id=batch_id,
                    status="completed",
                    contacts=n,
                    confirmed=n,
                )
            )
        total = sum(b.sent for b in sent)
        write_record(
            store,
            runs.sent_path(req.export, req.run_id, info.path),
            SentRecord(chunk=info.path, batches=sent, sent=total, rejected=0),
        )
        write_record(
            store,
            runs.confirmed_path(req.export, req.run_id, info.path),
            ConfirmedRecord(
                chunk=info.path, batches=final, sent=total, rejected=0, confirmed=total, failed=0
            ),
        )
    return {"contacts": contacts, "chunks": len(manifest.chunks)}


def finalize(engine: Engine, home: Path, _snapshot: str | None) -> dict[str, Any]:
    report = engine.finalize(_request(home))
    assert report.status == "completed", report.status
    return {
        "confirmed": report.confirmed,
        "leavers_unsubscribed": report.leavers_unsubscribed,
        "state_bytes": engine.store.info(state_mod.state_path(harness.EXPORT)).size,
    }


def load(engine: Engine, _home: Path, _snapshot: str | None) -> dict[str, Any]:
    state, _etag = state_mod.load(engine.store, harness.EXPORT)
    return {
        "contacts": len(state),
        "state_bytes": engine.store.info(state_mod.state_path(harness.EXPORT)).size,
        "in_memory_mb": round(state.nbytes() / 1e6, 1),
    }


class _ListRead:
    """A members read that finds ``n`` contacts (what the members activity asks the API)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def iter_list_members(self, _list_id: str, *, after_id: int) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            yield {"id": str(after_id + i + 1), "email": f"someone.{i}@elsewhere.example"}

    def call_client(self, fn: Callable[[Any], int]) -> int:
        return fn(self)


def members_phase(engine: Engine, _home: Path, _snapshot: str | None) -> dict[str, Any]:
    merged = members.refresh(
        engine.store,
        harness.EXPORT,
        harness.LIST_ID,
        lambda: state_mod.load_subscribed(engine.store, harness.EXPORT),
        _ListRead(1_000),  # type: ignore[arg-type]
    )
    return {"members_recorded": len(merged)}


PHASES: dict[str, Callable[[Engine, Path, str | None], dict[str, Any]]] = {
    "prepare": prepare,
    "wire": wire,
    "finalize": finalize,
    "load": load,
    "members": members_phase,
}


def main(argv: list[str] | None = None) -> int:
    """Run one phase and print its figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("phase", choices=sorted(PHASES))
    p.add_argument("home")
    p.add_argument("snapshot", nargs="?")
    args = p.parse_args(argv)
    home = Path(args.home)
    engine = harness.engine_for(LocalStore(home), time_scale=1.0)
    baseline = peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    figures = PHASES[args.phase](engine, home, args.snapshot)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    out = {
        "phase": args.phase,
        **figures,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_mb": round(baseline, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
