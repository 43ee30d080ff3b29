"""API keys typed into the local console, kept in files beside the local store.

In Azure a key typed into the console or the API goes to Key Vault under a name the app makes
(:mod:`exporter.management.secret_names`, ``keyvault:ac-<connection>-<hex>``). Locally there is
no Key Vault, so :class:`LocalKeyStore` keeps exactly those secrets as files in
``<home>/keys/`` (mode 600, folder 700): the same references, the same ownership rule (only a
name made for that connection is written or deleted), and the command line reads them too.
``env:`` and ``file:`` references behave as with :class:`LocalSecretProvider`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from exporter.errors import SecretError
from exporter.management.secret_names import is_generated_key_ref
from exporter.management.secrets import KEYVAULT, LocalSecretProvider, parse_ref


class LocalKeyStore(LocalSecretProvider):
    """:class:`LocalSecretProvider` plus the app's own key secrets as files in ``keys_dir``."""

    def __init__(self, env: Mapping[str, str], keys_dir: str | os.PathLike[str]) -> None:
        super().__init__(env)
        self.keys_dir = Path(keys_dir)

    def _path(self, ref: str) -> Path | None:
        parsed = parse_ref(ref)
        if parsed.kind != KEYVAULT:
            return None
        return self.keys_dir / parsed.name

    def get(self, ref: str) -> str:
        path = self._path(ref)
        if path is None:
            return super().get(ref)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise SecretError(
                f"{parse_ref(ref)} is not stored here: type the key again in the console"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"the stored key cannot be read ({type(exc).__name__})") from None
        if not value:
            raise SecretError("the stored key is empty")
        return value

    def _own(self, ref: str, owner: str) -> Path:
        path = self._path(ref)
        if path is None or not is_generated_key_ref(ref, owner):
            raise SecretError(
                "only a key secret the exporter made for this connection is written or deleted"
            )
        return path

    def set(self, ref: str, value: str, *, owner: str) -> None:
        path = self._own(ref, owner)
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(value)
        os.replace(tmp, path)

    def delete(self, ref: str, *, owner: str) -> None:
        self._own(ref, owner).unlink(missing_ok=True)
