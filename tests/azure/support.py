"""Helpers for tests that talk to Azurite (importable from any test folder)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from exporter.adapters.blob_store import BlobStore
from exporter.storage.store import CONTAINERS


def unique_prefix() -> str:
    """A container prefix no other test uses (``t`` + 10 hex digits + ``-``)."""
    return f"t{uuid.uuid4().hex[:10]}-"


@contextmanager
def fresh_blob_store(
    connection_string: str, *, list_page_size: int | None = None, read_chunk_size: int = 4 << 20
) -> Iterator[BlobStore]:
    """A :class:`BlobStore` on containers of its own; they are deleted afterwards."""
    service = BlobServiceClient.from_connection_string(connection_string)
    prefix = unique_prefix()
    try:
        yield BlobStore(
            service,
            container_prefix=prefix,
            list_page_size=list_page_size,
            read_chunk_size=read_chunk_size,
        )
    finally:
        for container in CONTAINERS:
            with suppress(ResourceNotFoundError):
                service.delete_container(prefix + container)
        service.close()
