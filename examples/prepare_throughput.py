"""Throughput and peak memory of the engine's *prepare* phase on a synthetic segment.

Runs prepare twice over the same snapshot in a temporary store: the first time every contact
is new (chunks are written), the second time after a committed state (every contact is
unchanged). Prints rows/s for each and the process's peak RSS; ``--profile`` prints the top
functions of a cProfile of the first pass.

    .venv/bin/python -m examples.prepare_throughput --rows 200000 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from examples import synthetic
from exporter.incremental import state as state_mod
from exporter.incremental import update as update_mod
from exporter.management.config import parse_export
from exporter.management.secrets import LocalSecretProvider
from exporter.planning.preparer import Preparer
from exporter.reading.snapshot import local_lister, local_opener, open_snapshot
from exporter.run.engine import Engine
from exporter.settings import HostPolicy
from exporter.storage.store import LocalStore

EXPORT = {
    "name": "bench",
    "display_name": "Bench",
    "connection": "bench-conn",
    "segment": "snapshots/bench/",
    "list_id": "1",
    "email": "Email",
    "first_name": "FirstName",
    "last_name": "LastName",
    "phone": "Phone",
    "fields": [
        {"column": "City", "field": "1", "field_id": "1", "field_type": "text"},
        {"column": "Birthday", "field": "2", "field_id": "2", "field_type": "date"},
        {"column": "Tier", "field": "3", "field_id": "3", "field_type": "dropdown"},
    ],
}


def _prepare(store: LocalStore, csv_path: Path, run_id: str) -> tuple[dict[str, object], float]:
    export = parse_export(EXPORT)
    state, _etag = state_mod.load(store, export.name)
    ref = Engine.local_snapshot(csv_path)
    reader = open_snapshot(ref, opener=local_opener, lister=local_lister)
    preparer = Preparer(
        store,
        export,
        run_id,
        state=state,
        full_resync=False,
        allow_shrink=False,
        dry_run=False,
        chunk_batches=40,
        progress=lambda _e: None,
    )
    started = time.process_time()
    manifest = preparer.run(reader, ref.path)
    return manifest, time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--second-pass", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.second_pass:
        _second_pass(Path(args.second_pass), args.rows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = synthetic.write_csv(Path(tmp) / "segment.csv", args.rows)
        store = LocalStore(Path(tmp) / "home")
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        manifest, seconds = _prepare(store, csv_path, "20260101T000000Z-00000001")
        if profiler:
            profiler.disable()
        print(f"first pass (all new): {args.rows / seconds:,.0f} rows/s ({seconds:.2f} CPU s)")
        print(f"peak RSS after the first pass {_peak_mb():.0f} MB")
        _commit_everything(store, manifest)
        # A fresh process, so its peak memory is prepare's own (with a full state loaded).
        cmd = [sys.executable, "-m", "examples.prepare_throughput", "--rows", str(args.rows)]
        subprocess.run([*cmd, "--second-pass", tmp], check=True)  # noqa: S603 - our own module
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def _second_pass(tmp: Path, rows: int) -> None:
    store = LocalStore(tmp / "home")
    _manifest, seconds = _prepare(store, tmp / "segment.csv", "20260101T000001Z-00000001")
    print(f"second pass (unchanged): {rows / seconds:,.0f} rows/s ({seconds:.2f} CPU s)")
    print(f"peak RSS of the second pass {_peak_mb():.0f} MB")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _commit_everything(store: LocalStore, manifest: dict[str, object]) -> None:
    """Pretend every prepared contact was confirmed: commit them to the state."""
    engine = Engine(store, LocalSecretProvider({}), host_policy=HostPolicy())
    update = update_mod.StateUpdate(snapshot_count=int(manifest["snapshot_count"]))  # type: ignore[call-overload]
    for info in manifest["chunks"]:  # type: ignore[attr-defined]
        for batch in engine.read_chunk(info["path"]):
            for contact in batch.contacts:
                update.confirm_sent(contact)
    state, etag = state_mod.load(store, "bench")
    state_mod.save(store, "bench", update_mod.apply(state, update), if_match=etag)


if __name__ == "__main__":
    main()
