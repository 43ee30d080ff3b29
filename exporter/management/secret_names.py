"""Names of the Key Vault secrets the app makes for connections' API keys.

A key typed into the management API (or the console) is written to Key Vault under a name made
here, ``ac-<connection>-<8 hex digits>``: the random suffix means a re-created connection never
collides with a soft-deleted secret of the same name. Only secrets with such a name, made for
that very connection, are the app's own to overwrite or delete.
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
