"""Names of the Key Vault secrets the app makes for connections' API keys.

A key typed into the management API (or the console) is written to Key Vault under a name made
here, ``ac-<connection>-<8 hex digits>``. The random part matters in a soft-delete vault: a
deleted secret's name stays reserved until it is purged (90 days by default), so a connection
deleted with its secret and created again under the same name must not reuse the old name, and
the app's identity is not given purge rights. Only secrets with such a name, made for that very
connection, are the app's own to overwrite: a new key for a connection whose reference is one
of them becomes a new version of that secret; any other reference (an operator's secret, maybe
shared by several connections) is left alone and a fresh name is made (:func:`ref_for_new_key`).
The management service refuses to store a key under any other reference, and the Key Vault
provider checks its ownership tag before overwriting or deleting
(:mod:`exporter.adapters.keyvault`).
"""

from __future__ import annotations

import re
import secrets

KEY_SECRET_PREFIX = "ac-"  # noqa: S105 - a name prefix, not a secret
"""Key Vault secret names made here: ``ac-<connection>-<8 hex digits>``."""


def new_key_ref(connection: str) -> str:
    """A fresh Key Vault reference for a connection's key."""
    return f"keyvault:{KEY_SECRET_PREFIX}{connection}-{secrets.token_hex(4)}"


def is_generated_key_ref(ref: object, connection: str) -> bool:
    """Whether ``ref`` is a reference :func:`new_key_ref` made for ``connection``."""
    pattern = rf"keyvault:{KEY_SECRET_PREFIX}{re.escape(connection)}-[0-9a-f]{{8}}"
    return isinstance(ref, str) and re.fullmatch(pattern, ref) is not None


def ref_for_new_key(connection: str, current: object = None) -> str:
    """The reference a new key for ``connection`` is stored under: ``current`` when it is one
    made for this connection (the key becomes a new version of that secret), else a fresh one
    (``current`` is ``None`` for a new connection)."""
    if isinstance(current, str) and is_generated_key_ref(current, connection):
        return current
    return new_key_ref(connection)
