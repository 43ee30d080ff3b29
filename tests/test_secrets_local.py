"""The local secret provider: env: from an injected mapping, file: from disk, never the value."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.errors import SecretError
from exporter.management.secrets import LocalSecretProvider, SecretProvider, SecretRef, parse_ref

KEY = "0123456789abcdef" * 4 + "deadbeef"  # 72 hex characters, like a real key


def test_it_is_a_secret_provider() -> None:
    assert isinstance(LocalSecretProvider({}), SecretProvider)


def test_env_refs_come_from_the_injected_mapping_only() -> None:
    provider = LocalSecretProvider({"AC_KEY": f"  {KEY}\n"})
    assert provider.get("env:AC_KEY") == KEY
    with pytest.raises(SecretError, match="OTHER is not set"):
        provider.get("env:OTHER")


def test_empty_env_value_is_an_error() -> None:
    with pytest.raises(SecretError, match="empty"):
        LocalSecretProvider({"AC_KEY": " "}).get("env:AC_KEY")


def test_file_refs_strip_the_trailing_newline(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\r\n")
    key_file.chmod(0o600)
    assert LocalSecretProvider({}).get(f"file:{key_file}") == KEY


def test_world_readable_key_file_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="exporter.management.secrets"):
        assert LocalSecretProvider({}).get(f"file:{key_file}") == KEY
    assert "readable by every user" in caplog.text
    assert KEY not in caplog.text


def test_missing_and_empty_files(tmp_path: Path) -> None:
    provider = LocalSecretProvider({})
    with pytest.raises(SecretError, match="does not exist"):
        provider.get(f"file:{tmp_path / 'nope'}")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        provider.get(f"file:{empty}")


def test_keyvault_refs_need_key_vault() -> None:
    provider = LocalSecretProvider({})
    for call in (
        lambda: provider.get("keyvault:ac-key"),
        lambda: provider.set("keyvault:ac-key", KEY, owner="shop"),
        lambda: provider.delete("keyvault:ac-key", owner="shop"),
    ):
        with pytest.raises(SecretError, match="needs Key Vault") as info:
            call()
        assert KEY not in str(info.value)


def test_set_and_delete_refuse_helpfully_and_never_echo_the_value() -> None:
    provider = LocalSecretProvider({})
    with pytest.raises(SecretError, match="set the environment variable AC_KEY") as info:
        provider.set("env:AC_KEY", KEY, owner="shop")
    assert KEY not in str(info.value)
    with pytest.raises(SecretError, match="/etc/ac"):
        provider.set("file:/etc/ac", KEY, owner="shop")
    with pytest.raises(SecretError, match="yourself"):
        provider.delete("env:AC_KEY", owner="shop")
    provider.invalidate("env:AC_KEY")  # nothing cached: a no-op


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("env:AC_KEY", SecretRef("env", "AC_KEY")),
        ("file:/run/secrets/ac", SecretRef("file", "/run/secrets/ac")),
        ("keyvault:ac-shop-key", SecretRef("keyvault", "ac-shop-key")),
    ],
)
def test_parse_ref(ref: str, parsed: SecretRef) -> None:
    assert parse_ref(ref) == parsed
    assert str(parsed) == ref


@pytest.mark.parametrize(
    "ref",
    [
        KEY,
        f"env:{KEY}",
        f"keyvault:{KEY}",
        "AC_KEY",
        "vault:x",
        "env:1BAD",
        "env:",
        "file:relative/path",
        "keyvault:bad_name",
    ],
)
def test_bad_refs_are_refused_without_echoing_them(ref: str) -> None:
    with pytest.raises(SecretError) as info:
        parse_ref(ref)
    assert ref not in str(info.value) or len(ref) < 12
    assert KEY not in str(info.value)
