"""Shared fixtures. Feature-specific fixtures live in the conftest of their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = ROOT.parent / "shared" / "reference"
OPENAPI_PATH = SHARED_REFERENCE / "activecampaign-v3-openapi.subset.json"


@pytest.fixture
def local_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from exporter.storage.store import LocalStore

    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Connection string of a real Azurite (blob, queue, table on free ports), one per worker.

    Fails (never skips) when Azurite is not installed: ``make test`` installs it. Give each test
    its own containers (``tests.azure.support.fresh_blob_store``) so tests stay independent.
    """
    from tests.azurite import running_azurite

    with running_azurite(tmp_path_factory.mktemp("azurite"), all_services=True) as instance:
        yield instance.connection_string
