"""Fixtures for the Azurite-backed tests: a fresh blob store per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from exporter.adapters.blob_store import BlobStore
from tests.azure.support import fresh_blob_store


@pytest.fixture
def blob_service(azurite: str) -> Iterator[BlobServiceClient]:
    """A plain SDK client on the session's Azurite, for looking behind the store's back."""
    with BlobServiceClient.from_connection_string(azurite) as service:
        yield service


@pytest.fixture
def blob_store(azurite: str) -> Iterator[BlobStore]:
    """A BlobStore whose containers no other test shares."""
    with fresh_blob_store(azurite) as store:
        yield store
