"""Secret providers: where a connection's API key comes from.

A connection stores only a *reference* to its key (``env:NAME``, ``file:/path``, or
``keyvault:NAME`` / a bare secret name in Azure). Providers resolve references; nothing else
in the exporter ever holds a key for longer than a request needs it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SecretProvider(Protocol):
    """Resolves, stores and forgets secrets by reference."""

    def get(self, ref: str) -> str:
        """The value. Raises :class:`exporter.errors.SecretError` (never with the value)."""
        ...

    def set(self, ref: str, value: str) -> None:
        """Store a secret (Key Vault ``set_secret``). Local providers may refuse."""
        ...

    def delete(self, ref: str) -> None:
        """Delete a secret (optional when a connection is removed)."""
        ...

    def invalidate(self, ref: str) -> None:
        """Forget any cached value, so the next :meth:`get` re-reads it (after a 403)."""
        ...
