"""Finding snapshots: the newest of a segment, one named in the store, or a local file."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from exporter.errors import InputError, NotFoundError
from exporter.management.config import Export
from exporter.reading.snapshot import (
    SnapshotFile,
    SnapshotRef,
    find_snapshots,
    local_lister,
    local_opener,
    open_snapshot,
)
from exporter.storage.store import Store


def newest_snapshot(store: Store, export: Export) -> SnapshotRef:
    """The newest snapshot of the export's segment (a folder, a file or a glob)."""
    segment = export.segment
    glob_at = min((segment.find(ch) for ch in "*?[" if ch in segment), default=-1)
    if glob_at >= 0:
        base = segment[:glob_at].rpartition("/")[0] + "/"
    elif segment.endswith("/") or not store.exists(segment):
        base = segment if segment.endswith("/") else segment + "/"
    else:
        base = segment
    refs = [r for r in find_snapshots(store, base) if export.segment_matches(r.path)]
    if not refs:
        raise NotFoundError(f"no snapshot under {segment} (export {export.name!r})")
    return refs[-1]


def store_snapshot(store: Store, path: str) -> SnapshotRef:
    """A snapshot in the store named by path: a CSV, a model.json, or a folder (newest)."""
    if path.endswith("/") or not store.exists(path):
        refs = find_snapshots(store, path if path.endswith("/") else path + "/")
        if not refs:
            raise NotFoundError(f"no snapshot at {path}")
        return refs[-1]
    for ref in find_snapshots(store, path.rpartition("/")[0] + "/"):
        if ref.path == path:
            return ref
    raise NotFoundError(f"{path} is not a snapshot (a .csv file or a model.json)")


def local_snapshot(path: str | os.PathLike[str]) -> SnapshotRef:
    """A snapshot on the local disk (read in place, never copied): a CSV file, a
    model.json, or a folder holding a model.json. Identity: paths, sizes, mtimes."""
    p = Path(path).resolve()
    if p.is_dir():
        p = p / "model.json"
    if not p.is_file():
        raise InputError("file not found", file=str(path))
    if p.name == "model.json":
        with open_snapshot(str(p), opener=local_opener, lister=local_lister) as reader:
            sources = list(reader.sources)
        paths = [str(p), *sources]
        kind = "cdm"
    else:
        paths, kind = [str(p)], "csv"
    files = []
    latest = 0.0
    for item in paths:
        st = os.stat(item)
        latest = max(latest, st.st_mtime)
        files.append(SnapshotFile(item, st.st_size, f"{st.st_size}-{st.st_mtime_ns}"))
    return SnapshotRef(
        kind=kind,  # type: ignore[arg-type]
        path=str(p),
        files=tuple(files),
        modified=datetime.fromtimestamp(latest, UTC),
    )
