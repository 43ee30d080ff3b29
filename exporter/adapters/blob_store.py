"""The :class:`~exporter.storage.store.Store` over Azure Blob Storage (or Azurite).

A store path's first segment picks the blob container (``config``, ``runs``, ``state``,
``snapshots``, each optionally behind ``container_prefix``); the rest is the blob name. ETags
are the service's own, so ``if_match`` / ``if_none_match`` become real HTTP conditions and a lost
race is the service's 412 (or 409 ``BlobAlreadyExists``), raised as
:class:`~exporter.storage.store.PreconditionFailed`.

Containers are created lazily: a write that meets ``ContainerNotFound`` creates the container
and tries once more. That keeps start-up free of round trips, needs no extra permission beyond
*Storage Blob Data Contributor*, and heals a container an operator deleted. Reads and listings
of a missing container behave like an empty one (:class:`~exporter.storage.store.ObjectNotFound`,
or no
items). :meth:`BlobStore.ensure_containers` exists for callers that prefer to create them up
front.

Memory stays bounded for large objects: :meth:`BlobStore.open_read` fetches one ranged chunk at
a time (pinned to the ETag it opened, so a blob replaced mid-read fails instead of splicing two
versions), and :meth:`BlobStore.write_file` hands the SDK a file stream that it stages in
blocks (see ``max_single_put_size`` in :meth:`BlobStore.from_settings`).

Known limit, as with any conditional write over HTTP: if a conditional write succeeds but its
response is lost, the SDK's retry meets its own write and reports :class:`PreconditionFailed`.
Callers treat a lost race as "someone else won" and re-read, which is safe.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient, ExponentialRetry

from exporter.errors import ConfigError
from exporter.settings import STORAGE_BLOB_URI, STORAGE_CONNECTION_STRING, FunctionSettings
from exporter.storage.store import (
    CONTAINERS,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    _folder_path,
    _validate_path,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

READ_CHUNK_SIZE = 4 << 20
"""Bytes fetched per ranged GET by :meth:`BlobStore.open_read`: the reader's memory bound."""
_READ_BUFFER = 64 << 10

_CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_QUERY = re.compile(r"\?[^\s'\"]*")
_ACCOUNT_KEY = re.compile(r"(?i)(AccountKey|SharedAccessSignature)=[^;\s'\"]*")


def _client_options() -> dict[str, Any]:
    """Timeouts, retries and transfer sizes for clients built by :meth:`BlobStore.from_settings`.

    The SDK's default retry waits 15 s before the first retry, too long inside a Functions
    activity; transfers above 8 MiB are staged in 4 MiB blocks so memory stays bounded.
    """
    return {
        "connection_timeout": 10,
        "read_timeout": 60,
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=5),
        "max_single_put_size": 8 << 20,
        "max_block_size": 4 << 20,
        "max_single_get_size": 8 << 20,
        "max_chunk_get_size": 4 << 20,
    }


def _redact(text: str) -> str:
    """Drop query strings (SAS tokens) and key material from an SDK message."""
    return _ACCOUNT_KEY.sub(r"\1=<redacted>", _QUERY.sub("?<redacted>", text))


def _describe(exc: AzureError) -> str:
    """A short, secret-free description of an SDK error (status, code, request id)."""
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or exc.reason or "error"
        headers = getattr(exc.response, "headers", None) or {}
        request_id = headers.get("x-ms-request-id")
        suffix = f", request id {request_id}" if request_id else ""
        return f"HTTP {exc.status_code} {code}{suffix}"
    first_line = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {_redact(first_line)}"


def _is_container_missing(exc: ResourceNotFoundError) -> bool:
    return getattr(exc, "error_code", None) == "ContainerNotFound"


def _normalise_connection_string(value: str) -> str:
    """Accept ``UseDevelopmentStorage=true`` in any letter case (the SDK wants ``true``)."""
    pairs = [part.split("=", 1) for part in value.strip().rstrip(";").split(";") if part]
    flags = {p[0].strip().lower(): p[1].strip().lower() for p in pairs if len(p) == 2}
    if flags.get("usedevelopmentstorage") == "true":
        return "UseDevelopmentStorage=true"
    return value.strip()


class BlobStore:
    """A :class:`~exporter.storage.store.Store` over Azure Blob Storage.

    ``service`` is a ready client (see :meth:`from_settings` for the deployed app's);
    ``container_prefix`` namespaces the four containers (tests, or several installations in one
    account); ``list_page_size`` is the listing page size (``None``: the service's 5000).
    """

    def __init__(
        self,
        service: BlobServiceClient,
        *,
        container_prefix: str = "",
        list_page_size: int | None = None,
        read_chunk_size: int = READ_CHUNK_SIZE,
    ) -> None:
        for container in CONTAINERS:
            if not _CONTAINER_NAME.match(container_prefix + container):
                raise ConfigError(
                    f"{container_prefix + container!r} is not a valid blob container name",
                    field="container_prefix",
                )
        self.service = service
        self.container_prefix = container_prefix
        self.list_page_size = list_page_size
        self.read_chunk_size = read_chunk_size

    # --- construction at the edge -------------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: FunctionSettings,
        credential: TokenCredential | None = None,
        *,
        container_prefix: str = "",
    ) -> BlobStore:
        """The store the Functions app uses.

        A connection string (``EXPORTER_STORAGE``: Azurite, ``UseDevelopmentStorage=true``)
        wins when set, as the Functions host resolves connections; otherwise the identity-based
        ``EXPORTER_STORAGE__blobServiceUri`` with ``credential`` or a
        ``DefaultAzureCredential`` for the app's managed identity.
        """
        options = _client_options()
        if settings.storage_connection_string:
            conn = _normalise_connection_string(settings.storage_connection_string)
            try:
                service = BlobServiceClient.from_connection_string(conn, **options)
            except ValueError:
                # The SDK's message is generic; never echo the value (it holds a key).
                raise ConfigError(
                    "is not a valid storage connection string", field=STORAGE_CONNECTION_STRING
                ) from None
        elif settings.blob_service_uri:
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential(
                    managed_identity_client_id=settings.managed_identity_client_id
                )
            service = BlobServiceClient(settings.blob_service_uri, credential, **options)
        else:
            raise ConfigError(
                f"set {STORAGE_BLOB_URI} (identity-based) or {STORAGE_CONNECTION_STRING}",
                field=STORAGE_BLOB_URI,
            )
        return cls(service, container_prefix=container_prefix)

    def ensure_containers(self) -> None:
        """Create the four containers now instead of on first write (idempotent)."""
        for container in CONTAINERS:
            self._create_container(self._container(container))

    # --- helpers ------------------------------------------------------------------------------

    def _container(self, name: str) -> ContainerClient:
        return self.service.get_container_client(self.container_prefix + name)

    def _blob(self, path: str) -> BlobClient:
        container, _, name = _validate_path(path).partition("/")
        if not name:
            raise StoreError(f"store path {path!r} names a container, not an object")
        return self.service.get_blob_client(self.container_prefix + container, name)

    def _create_container(self, container: ContainerClient) -> None:
        try:
            container.create_container()
            logger.info("created blob container %s", container.container_name)
        except ResourceExistsError:
            pass  # another writer created it first
        except AzureError as exc:
            raise StoreError(
                f"cannot create container {container.container_name}: {_describe(exc)}"
            ) from None

    def _write(self, path: str, upload: Callable[[BlobClient], _T], *, creates: bool) -> _T:
        """Run ``upload``, creating the container once if it is missing."""
        blob = self._blob(path)
        for attempt in range(2):
            try:
                return upload(blob)
            except ResourceModifiedError:  # 412 ConditionNotMet
                raise PreconditionFailed(f"{path} was changed by another writer") from None
            except ResourceExistsError as exc:
                if getattr(exc, "error_code", None) == "BlobAlreadyExists":
                    raise PreconditionFailed(f"{path} already exists") from None
                raise StoreError(f"cannot write {path}: {_describe(exc)}") from None
            except ResourceNotFoundError as exc:
                if not creates:
                    # if_match on an object (or container) that is gone: the race is lost.
                    raise PreconditionFailed(f"{path} no longer exists") from None
                if attempt or not _is_container_missing(exc):
                    raise StoreError(f"cannot write {path}: {_describe(exc)}") from None
                self._create_container(self._container(path.split("/", 1)[0]))
            except AzureError as exc:
                raise StoreError(f"cannot write {path}: {_describe(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _etag_of(result: dict[str, Any], path: str) -> str:
        etag = result.get("etag")
        if not isinstance(etag, str):
            raise StoreError(f"the service returned no ETag for {path}")
        return etag

    # --- the Store protocol -------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        return self.read_with_etag(path)[0]

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        blob = self._blob(path)
        try:
            # The SDK pins every chunk after the first to the first response's ETag.
            downloader = blob.download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            raise ObjectNotFound(f"no object at {path}") from None
        except AzureError as exc:
            raise StoreError(f"cannot read {path}: {_describe(exc)}") from None
        return data, downloader.properties.etag

    def open_read(self, path: str) -> BinaryIO:
        info = self.info(path)
        raw = _RangedBlobReader(self._blob(path), path, info.size, info.etag, self.read_chunk_size)
        return io.BufferedReader(raw, buffer_size=_READ_BUFFER)

    def write_bytes(
        self,
        path: str,
        data: bytes | bytearray,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        conditions: dict[str, Any] = {}
        if if_match is not None:
            conditions = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        elif if_none_match:
            conditions = {"match_condition": MatchConditions.IfMissing}

        def upload(blob: BlobClient) -> dict[str, Any]:
            # A stream over the caller's buffer: a state of ten million contacts is ~330 MB,
            # and neither ``bytes(data)`` nor ``BytesIO(bytearray)`` would spare a copy.
            stream = io.BufferedReader(_BufferReader(data))
            return blob.upload_blob(stream, overwrite=True, length=len(data), **conditions)

        return self._etag_of(self._write(path, upload, creates=if_match is None), path)

    def write_file(self, path: str, source: str | os.PathLike[str]) -> str:
        size = os.path.getsize(source)

        def upload(blob: BlobClient) -> dict[str, Any]:
            # Reopened on each attempt: a failed attempt may have consumed the stream.
            with open(source, "rb") as stream:
                return blob.upload_blob(stream, overwrite=True, length=size)

        return self._etag_of(self._write(path, upload, creates=True), path)

    def move_file(self, path: str, source: str | os.PathLike[str]) -> None:
        self.write_file(path, source)
        os.unlink(source)

    def info(self, path: str) -> ObjectInfo:
        blob = self._blob(path)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            raise ObjectNotFound(f"no object at {path}") from None
        except AzureError as exc:
            raise StoreError(f"cannot read {path}: {_describe(exc)}") from None
        return ObjectInfo(path=path, size=props.size, modified=props.last_modified, etag=props.etag)

    def exists(self, path: str) -> bool:
        blob = self._blob(path)
        try:
            return bool(blob.exists())
        except AzureError as exc:
            raise StoreError(f"cannot read {path}: {_describe(exc)}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        container_name, _, name_prefix = prefix.partition("/")
        _validate_path(container_name)
        container = self._container(container_name)
        # The service lists in byte order of the UTF-8 name, which is Python's str order.
        blobs = container.list_blobs(
            name_starts_with=name_prefix or None, results_per_page=self.list_page_size
        )
        try:
            for blob in blobs:
                yield ObjectInfo(
                    path=f"{container_name}/{blob.name}",
                    size=blob.size,
                    modified=blob.last_modified,
                    etag=blob.etag,
                )
        except ResourceNotFoundError:
            return  # no container yet: nothing was ever written there
        except AzureError as exc:
            raise StoreError(f"cannot list {prefix}: {_describe(exc)}") from None

    def list_folder(self, folder: str) -> Iterator[str]:
        container_name, _, name_prefix = _folder_path(folder).partition("/")
        if name_prefix:
            name_prefix += "/"
        container = self._container(container_name)
        # One level of the virtual hierarchy: the service returns each sub-folder once.
        items = container.walk_blobs(name_starts_with=name_prefix or None, delimiter="/")
        try:
            names = [item.name[len(name_prefix) :] for item in items]
        except ResourceNotFoundError:
            return  # no container yet: nothing was ever written there
        except AzureError as exc:
            raise StoreError(f"cannot list {folder}: {_describe(exc)}") from None
        yield from sorted(names)

    def delete(self, path: str, *, missing_ok: bool = True) -> None:
        blob = self._blob(path)
        try:
            blob.delete_blob()
        except ResourceNotFoundError:
            if not missing_ok:
                raise ObjectNotFound(f"no object at {path}") from None
        except AzureError as exc:
            raise StoreError(f"cannot delete {path}: {_describe(exc)}") from None


class _RangedBlobReader(io.RawIOBase):
    """Reads a blob one ranged GET at a time, each pinned to the ETag seen at open."""

    def __init__(self, blob: BlobClient, path: str, size: int, etag: str, chunk: int) -> None:
        super().__init__()
        self._blob = blob
        self._path = path
        self._size = size
        self._etag = etag
        self._chunk_size = chunk
        self._offset = 0  # of the next range to fetch
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _fetch(self) -> None:
        length = min(self._chunk_size, self._size - self._offset)
        try:
            data = self._blob.download_blob(
                offset=self._offset,
                length=length,
                etag=self._etag,
                match_condition=MatchConditions.IfNotModified,
            ).readall()
        except (ResourceModifiedError, ResourceNotFoundError):
            raise StoreError(f"{self._path} was replaced or deleted while being read") from None
        except AzureError as exc:
            raise StoreError(f"cannot read {self._path}: {_describe(exc)}") from None
        if len(data) != length:
            raise StoreError(f"short read of {self._path} at offset {self._offset}")
        self._offset += length
        self._buffer = memoryview(data)

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed blob reader")
        if not self._buffer:
            if self._offset >= self._size:
                return 0
            self._fetch()
        target = memoryview(buffer).cast("B")
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def readall(self) -> bytes:
        parts = [bytes(self._buffer)]
        self._buffer = memoryview(b"")
        while self._offset < self._size:
            self._fetch()
            parts.append(bytes(self._buffer))
            self._buffer = memoryview(b"")
        return b"".join(parts)

    def close(self) -> None:
        self._buffer = memoryview(b"")
        super().close()


class _BufferReader(io.RawIOBase):
    """A seekable raw stream over a bytes-like object, without copying it."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        buffer[:n] = chunk
        self._pos += n
        return n
