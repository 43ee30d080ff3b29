"""Secret providers: where a connection's API key comes from.

A connection stores only a *reference* to its key (``env:NAME``, ``file:/path``, or
``keyvault:NAME`` / a bare secret name in Azure). Providers resolve references; nothing else
in the exporter ever holds a key for longer than a request needs it.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from exporter.errors import SecretError
from exporter.settings import KEYVAULT_URL as KEYVAULT_URL_SETTING

log = logging.getLogger(__name__)


@runtime_checkable
class SecretProvider(Protocol):
    """Resolves, stores and forgets secrets by reference."""

    def get(self, ref: str) -> str:
        """The value. Raises :class:`exporter.errors.SecretError` (never with the value)."""
        ...

    def set(self, ref: str, value: str, *, owner: str) -> None:
        """Store a secret for connection ``owner`` (Key Vault ``set_secret``), refusing to
        overwrite a secret the app did not create for ``owner``. Local providers refuse."""
        ...

    def delete(self, ref: str, *, owner: str) -> None:
        """Delete connection ``owner``'s secret (optional when it is removed), refusing any
        secret the app did not create for ``owner``."""
        ...

    def invalidate(self, ref: str) -> None:
        """Forget any cached value, so the next :meth:`get` re-reads it (after a 403)."""
        ...


# --- References ---------------------------------------------------------------------------------

ENV = "env"
FILE = "file"
KEYVAULT = "keyvault"
REF_KINDS = (ENV, FILE, KEYVAULT)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_KEYVAULT_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
# ActiveCampaign keys are 72 hex characters; anything this key-shaped is refused as a
# reference so a key pasted into the wrong box is never stored in plain configuration.
_KEY_SHAPED = re.compile(r"[0-9a-fA-F]{32,}")


@dataclass(frozen=True)
class SecretRef:
    """A parsed secret reference: ``kind`` is ``env``, ``file`` or ``keyvault``."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_ref(ref: str) -> SecretRef:
    """Parse ``env:NAME``, ``file:/absolute/path`` or ``keyvault:NAME``.

    Raises :class:`SecretError` with a message that never repeats the input: a user who pasted
    the key itself must not see it echoed into a log or an HTTP response.
    """
    kind, sep, name = ref.partition(":")
    if not sep or kind not in REF_KINDS:
        if _KEY_SHAPED.search(ref) or not sep:
            raise SecretError(
                "expected a reference to the API key (env:NAME, file:/path or keyvault:NAME), "
                "never the key itself"
            )
        raise SecretError("the reference must start with env:, file: or keyvault:")
    if _KEY_SHAPED.fullmatch(name):
        raise SecretError(
            "this looks like an API key, not the name of where it is kept; "
            "store the key in an environment variable, a file or Key Vault and name that"
        )
    if kind == ENV and not _ENV_NAME.fullmatch(name):
        raise SecretError("env: needs an environment variable name (letters, digits, _)")
    if kind == KEYVAULT and not _KEYVAULT_NAME.fullmatch(name):
        raise SecretError("keyvault: needs a Key Vault secret name (letters, digits, -)")
    if kind == FILE and (not name.startswith("/") or "\x00" in name):
        raise SecretError("file: needs an absolute path, e.g. file:/home/me/.ac-key")
    return SecretRef(kind, name)


# --- The local provider ---------------------------------------------------------------------------


class LocalSecretProvider:
    """Resolves ``env:`` refs from an injected mapping and ``file:`` refs from the disk.

    Used by the command line (which passes ``os.environ`` at the edge) and by a Functions app
    without Key Vault. Local keys are set by the user, so :meth:`set` and :meth:`delete` refuse
    with a message saying what to do instead.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, ref: str) -> str:
        parsed = parse_ref(ref)
        if parsed.kind == ENV:
            return self._from_env(parsed.name)
        if parsed.kind == FILE:
            return self._from_file(Path(parsed.name))
        raise SecretError(
            f"{parsed} needs Key Vault ({KEYVAULT_URL_SETTING}); locally, keep the key in an "
            "environment variable (env:NAME) or a file (file:/path)"
        )

    def _from_env(self, name: str) -> str:
        value = self._env.get(name)
        if value is None:
            raise SecretError(f"environment variable {name} is not set (it should hold the key)")
        value = value.strip()
        if not value:
            raise SecretError(f"environment variable {name} is empty")
        return value

    def _from_file(self, path: Path) -> str:
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretError(f"key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"key file {path} cannot be read ({type(exc).__name__})") from None
        if mode & stat.S_IROTH:
            log.warning("key file %s is readable by every user; chmod 600 it", path)
        value = text.rstrip("\r\n")
        if not value.strip():
            raise SecretError(f"key file {path} is empty")
        return value

    def set(self, ref: str, value: str, *, owner: str) -> None:
        parsed = parse_ref(ref)
        if parsed.kind == KEYVAULT:
            raise SecretError(f"{parsed} needs Key Vault ({KEYVAULT_URL_SETTING}) to store a key")
        where = (
            f"set the environment variable {parsed.name}"
            if parsed.kind == ENV
            else f"write it to {parsed.name} (chmod 600)"
        )
        raise SecretError(f"local keys are kept by you, not by the exporter: {where}")

    def delete(self, ref: str, *, owner: str) -> None:
        parsed = parse_ref(ref)
        if parsed.kind == KEYVAULT:
            raise SecretError(f"{parsed} needs Key Vault ({KEYVAULT_URL_SETTING}) to delete a key")
        raise SecretError(f"the exporter does not delete local keys; remove {parsed} yourself")

    def invalidate(self, ref: str) -> None:
        """Nothing is cached: every :meth:`get` reads the environment or the file again."""
