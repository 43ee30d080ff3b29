"""Shared fixtures. Feature-specific fixtures live in the conftest of their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = ROOT.parent / "shared" / "reference"
OPENAPI_PATH = SHARED_REFERENCE / "activecampaign-v3-openapi.subset.json"


@pytest.fixture
def local_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from exporter.store import LocalStore

    return LocalStore(tmp_path / "store")
