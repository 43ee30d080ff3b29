"""Finding snapshots: the newest of a segment, one named in the store, or a local file."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from exporter.errors import ConfigError, InputError, NotFoundError
from exporter.management.config import SNAPSHOTS, Export, snapshot_path
from exporter.reading.cdm import cdm_parts, dirname, load_model
from exporter.reading.refs import MODEL_JSON, SnapshotFile, SnapshotRef, is_snapshot_file
from exporter.reading.snapshot import (
    local_lister,
    local_opener,
    open_snapshot,
    store_opener,
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


def blob_snapshot_path(blob_name: str, container_prefix: str = "") -> str:
    """The store path of a blob a trigger reports (``snapshots/<name>``), held to the rule of
    every snapshot path (:func:`~exporter.management.config.snapshot_path`).

    ``container_prefix`` is the store's container prefix (empty in a deployed app). Raises
    :class:`ConfigError` naming the blob (a blob name is not a secret, and the operator needs
    it) when it is not a readable path under ``snapshots/``.
    """
    name = blob_name.lstrip("/")
    if container_prefix and name.startswith(container_prefix + SNAPSHOTS):
        name = name[len(container_prefix) :]
    try:
        return snapshot_path(name)
    except ValueError as exc:
        raise ConfigError(f"blob {blob_name!r} is not a snapshot path: {exc}") from None


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


def find_snapshots(store: Store, prefix: str) -> list[SnapshotRef]:
    """Every snapshot under ``prefix`` (e.g. ``snapshots/<segment>/``), oldest first.

    A CDM folder is a ``model.json`` plus the partitions it names (one ref per entity); files
    below a ``model.json`` folder that it does not name (older timestamp folders) are ignored.
    Any other ``.csv``/``.csv.gz``/``.tsv``/``.txt``/``.gz`` file is a plain snapshot.
    Raises :class:`InputError` for a model.json that is malformed or names missing partitions
    (a broken newest snapshot must not silently fall back to an older one).
    """
    infos = {o.path: o for o in store.list(prefix)}
    existing = set(infos)
    models = sorted(p for p in infos if p.rpartition("/")[2] == MODEL_JSON)
    cdm_dirs = tuple(dirname(m) for m in models)
    refs: list[SnapshotRef] = []
    opener = store_opener(store)
    for model in models:
        for entity in load_model(model, opener):
            parts = cdm_parts(model, entity, existing, None, None)
            objs = [infos[model]] + [infos[p.path] for p in parts]
            refs.append(
                SnapshotRef(
                    kind="cdm",
                    path=model,
                    files=tuple(SnapshotFile(o.path, o.size, o.etag) for o in objs),
                    modified=max(o.modified for o in objs),
                    entity=entity.name,
                )
            )
    for path, o in infos.items():
        if is_snapshot_file(path) and not path.startswith(cdm_dirs or ("\0",)):
            refs.append(
                SnapshotRef(
                    kind="csv",
                    path=path,
                    files=(SnapshotFile(o.path, o.size, o.etag),),
                    modified=o.modified,
                )
            )
    refs.sort(key=lambda r: (r.modified, r.path, r.entity or ""))
    return refs


def newest_under(store: Store, prefix: str) -> SnapshotRef:
    """The most recently modified snapshot under ``prefix``. Raises :class:`NotFoundError`."""
    refs = find_snapshots(store, prefix)
    if not refs:
        raise NotFoundError(f"no snapshot under {prefix}")
    return refs[-1]
