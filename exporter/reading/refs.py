"""What a snapshot is, as the readers and discovery see it: its files and identity, how one
file is read (:class:`Part`), and how files are reached (:data:`Opener`, :data:`Lister`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Literal

from exporter.errors import InputError
from exporter.storage.store import ObjectNotFound

MODEL_JSON = "model.json"
SNAPSHOT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".gz")
"""File names discovery treats as plain CSV snapshots."""

Opener = Callable[[str], BinaryIO]
"""Opens a path (local file or store path) as a binary stream; raises ``FileNotFoundError`` or
:class:`~exporter.storage.store.ObjectNotFound` when it does not exist."""
Lister = Callable[[str], Iterable[str]]
"""Every path under a prefix (recursively), e.g. ``store.list``'s paths."""


@dataclass(frozen=True)
class SnapshotFile:
    """One object of a snapshot as listed: identity is (path, size, etag)."""

    path: str
    size: int
    etag: str


@dataclass(frozen=True)
class SnapshotRef:
    """A discovered snapshot: one CSV file, or a CDM ``model.json`` with its partitions."""

    kind: Literal["csv", "cdm"]
    """``csv``: a plain (possibly gzipped) CSV with a header; ``cdm``: a Customer Insights
    folder."""
    path: str
    """The CSV file, or the ``model.json``."""
    files: tuple[SnapshotFile, ...]
    """Everything read: the CSV; or model.json followed by the partitions in model order."""
    modified: datetime
    """Latest modification time of any of ``files``."""
    entity: str | None = None
    """CDM: the entity (table) read from model.json."""

    @property
    def identity(self) -> str:
        """Stable id of exactly these bytes (paths + sizes + etags): equal ids, same snapshot,
        so a run for an already-processed snapshot can be recognised."""
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.kind}\0{self.path}\0{self.entity or ''}".encode())
        for f in self.files:
            h.update(f"\0{f.path}\0{f.size}\0{f.etag}".encode())
        return h.hexdigest()

    @property
    def partitions(self) -> tuple[str, ...]:
        """The data files, in read order."""
        return tuple(f.path for f in (self.files[1:] if self.kind == "cdm" else self.files))


@dataclass(frozen=True)
class Part:
    """One file to read: where, how it is delimited, and whether it starts with a header."""

    path: str
    delimiter: str | None
    header: bool
    encoding: str


def open_raw(source: str, opener: Opener) -> BinaryIO:
    try:
        return opener(source)
    except IsADirectoryError:
        raise InputError("is a folder, not a file", file=source) from None
    except (FileNotFoundError, ObjectNotFound, NotADirectoryError):
        raise InputError("file not found", file=source) from None


def is_snapshot_file(path: str) -> bool:
    name = path.rpartition("/")[2]
    if name.startswith((".", "_")):
        return False
    return name.lower().endswith(SNAPSHOT_SUFFIXES)
