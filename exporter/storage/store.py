"""The storage seam: a small object store that the local directory and Azure Blob Storage share.

Paths are ``/``-separated and relative, and their first segment names a *container*
(``config``, ``runs``, ``state``, ``snapshots``). The local store maps them to folders under its
root; the blob store (:mod:`exporter.adapters.blob_store`) maps the first segment to a blob
container and the rest to the blob name. Everything above this module (configuration, run
reports, chunks, export state) talks only to :class:`Store`.

Writes are atomic (readers see the old or the new object, never half of one). Where two writers
could race, callers pass ``if_match`` (the ETag they read) or ``if_none_match=True`` (create
only); a lost race raises :class:`PreconditionFailed`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from exporter.errors import ExporterError

CONTAINERS = ("config", "runs", "state", "snapshots")


class StoreError(ExporterError):
    """A storage operation failed."""


class ObjectNotFound(StoreError):
    """The object does not exist."""


class PreconditionFailed(StoreError):
    """An ETag condition did not hold: another writer got there first."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing says of one object."""

    path: str
    size: int
    modified: datetime
    etag: str


@runtime_checkable
class Store(Protocol):
    """An object store with atomic writes and ETag conditions."""

    def read_bytes(self, path: str) -> bytes:
        """The whole object. Raises :class:`ObjectNotFound`."""
        ...

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        """The whole object and its current ETag. Raises :class:`ObjectNotFound`."""
        ...

    def open_read(self, path: str) -> BinaryIO:
        """A readable binary stream for large objects (snapshots, chunks). Caller closes it."""
        ...

    def write_bytes(
        self,
        path: str,
        data: bytes | bytearray,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Write atomically and return the new ETag.

        ``if_match``: only if the current ETag is this one. ``if_none_match``: only if the
        object does not exist yet. Raises :class:`PreconditionFailed` otherwise.
        """
        ...

    def write_file(self, path: str, source: str | os.PathLike[str]) -> str:
        """Upload a local file (streaming, for large chunks/reports). Returns the ETag."""
        ...

    def move_file(self, path: str, source: str | os.PathLike[str]) -> None:
        """Store the local file ``source`` as ``path`` and take it over (it is gone after a
        successful call): for write-once artefacts such as chunks, where neither a copy nor
        an ETag is needed."""
        ...

    def info(self, path: str) -> ObjectInfo:
        """Size, modification time and ETag. Raises :class:`ObjectNotFound`."""
        ...

    def exists(self, path: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose path starts with ``prefix`` (a container name, or deeper), by path."""
        ...

    def list_folder(self, folder: str) -> Iterator[str]:
        """The names directly inside ``folder`` (a path ending in ``/``), in name order: objects
        by name, sub-folders by name plus ``/``. One level only, no sizes or ETags: cheap however
        many objects the sub-folders hold (a run's chunks)."""
        ...

    def delete(self, path: str, *, missing_ok: bool = True) -> None: ...


def _folder_path(folder: str) -> str:
    """``folder`` (which must end in ``/``) without its slash, validated."""
    if not folder.endswith("/"):
        raise StoreError(f"invalid store folder {folder!r}: it must end with '/'")
    return _validate_path(folder[:-1])


def _validate_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid store path {path!r}")
    if parts[0] not in CONTAINERS:
        raise StoreError(f"store path {path!r} must start with one of {', '.join(CONTAINERS)}")
    return path


class LocalStore:
    """A :class:`Store` over a local directory: the embedded default for the command line.

    ETags are content hashes, so a condition holds exactly when the content is unchanged.
    Atomicity comes from writing a temporary file in the same folder and ``os.replace``.
    A per-store lock file serialises conditional writes between processes.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _file(self, path: str) -> Path:
        return self.root / _validate_path(path)

    @staticmethod
    def _etag(data: bytes | bytearray) -> str:
        return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'

    def _etag_of_file(self, file: Path) -> str:
        digest = hashlib.blake2b(digest_size=12)
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return '"' + digest.hexdigest() + '"'

    def read_bytes(self, path: str) -> bytes:
        return self.read_with_etag(path)[0]

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        file = self._file(path)
        try:
            data = file.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {path}") from None
        return data, self._etag(data)

    def open_read(self, path: str) -> BinaryIO:
        file = self._file(path)
        try:
            return file.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {path}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        lock_path = self.root / ".lock"
        with lock_path.open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _check(self, path: str, file: Path, if_match: str | None, if_none_match: bool) -> None:
        if if_none_match and file.exists():
            raise PreconditionFailed(f"{path} already exists")
        if if_match is not None:
            if not file.exists():
                raise PreconditionFailed(f"{path} no longer exists")
            if self._etag_of_file(file) != if_match:
                raise PreconditionFailed(f"{path} was changed by another writer")

    def _replace_from(
        self, file: Path, writer: BinaryIO | None, data: bytes | bytearray | None
    ) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix="." + file.name)
        try:
            with os.fdopen(fd, "wb") as out:
                if data is not None:
                    out.write(data)
                elif writer is not None:
                    for block in iter(lambda: writer.read(1 << 20), b""):
                        out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def write_bytes(
        self,
        path: str,
        data: bytes | bytearray,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        file = self._file(path)
        if if_match is None and not if_none_match:
            self._replace_from(file, None, data)
        else:
            with self._locked():
                self._check(path, file, if_match, if_none_match)
                self._replace_from(file, None, data)
        return self._etag(data)

    def write_file(self, path: str, source: str | os.PathLike[str]) -> str:
        file = self._file(path)
        with open(source, "rb") as src:
            self._replace_from(file, src, None)
        return self._etag_of_file(file)

    def move_file(self, path: str, source: str | os.PathLike[str]) -> None:
        # A rename on the same file system: no copy and no hash of a file that can be hundreds
        # of megabytes (together ~10% of prepare's CPU when chunks were copied and hashed).
        file = self._file(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            os.replace(source, file)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            with open(source, "rb") as src:
                self._replace_from(file, src, None)
            os.unlink(source)

    def info(self, path: str) -> ObjectInfo:
        file = self._file(path)
        try:
            st = file.stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object at {path}") from None
        if not file.is_file():
            raise ObjectNotFound(f"no object at {path}")
        return ObjectInfo(
            path=path,
            size=st.st_size,
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
            etag=self._etag_of_file(file),
        )

    def exists(self, path: str) -> bool:
        return self._file(path).is_file()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        container = prefix.split("/", 1)[0]
        _validate_path(container)
        base = self.root / container
        if not base.is_dir():
            return
        found: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    found.append(rel)
        for rel in sorted(found):
            with contextlib.suppress(ObjectNotFound):
                yield self.info(rel)

    def list_folder(self, folder: str) -> Iterator[str]:
        base = self._file(_folder_path(folder))
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return
        names = (
            e.name + "/" if e.is_dir() else e.name
            for e in entries
            if not e.name.startswith((".tmp-", ".lock"))
        )
        yield from sorted(names)

    def delete(self, path: str, *, missing_ok: bool = True) -> None:
        try:
            self._file(path).unlink()
        except FileNotFoundError:
            if not missing_ok:
                raise ObjectNotFound(f"no object at {path}") from None
