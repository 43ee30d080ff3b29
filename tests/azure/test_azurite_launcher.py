"""The Azurite launcher fails loudly (never skips) when the emulator is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.azurite as launcher


def test_a_missing_binary_fails_and_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(launcher, "BIN", tmp_path / "no-node-modules")
    with (
        pytest.raises(pytest.fail.Exception, match="make test"),
        launcher.running_azurite(tmp_path / "data"),
    ):
        pass


def test_the_connection_string_names_every_started_service(tmp_path: Path) -> None:
    instance = launcher.Azurite(tmp_path, blob_port=1, queue_port=2, table_port=3)
    parts = dict(p.split("=", 1) for p in instance.connection_string.rstrip(";").split(";"))
    assert parts["BlobEndpoint"] == "http://127.0.0.1:1/devstoreaccount1"
    assert parts["QueueEndpoint"] == "http://127.0.0.1:2/devstoreaccount1"
    assert parts["TableEndpoint"] == "http://127.0.0.1:3/devstoreaccount1"
    blob_only = launcher.Azurite(tmp_path, blob_port=1).connection_string
    assert "QueueEndpoint" not in blob_only
