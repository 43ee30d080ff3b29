"""Who may do what: the rules shared by the command line and the HTTP API.

Two app roles exist. **Administrators** manage connections and every export. **Contributors**
may create, change, run and remove exports, but only on connections whose administrator allowed
contributors, and they see only a connection's name, display name and type. A caller with
neither role may do nothing. The command line acts as an administrator (the local user); the
HTTP API builds the caller from App Service Authentication's principal header.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from exporter.errors import PermissionDenied

ADMIN = "Exporter.Admin"
CONTRIBUTOR = "Exporter.Contributor"
ROLES = (ADMIN, CONTRIBUTOR)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a principal (user name / object id) and their app roles."""

    principal: str
    roles: frozenset[str]

    @classmethod
    def local_admin(cls, principal: str) -> Caller:
        """The command line's caller: the local user, an administrator."""
        return cls(principal=principal, roles=frozenset({ADMIN}))

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_contributor(self) -> bool:
        return CONTRIBUTOR in self.roles

    @property
    def view_role(self) -> str:
        """The role whose view of configuration this caller gets (admin wins)."""
        return ADMIN if self.is_admin else CONTRIBUTOR


class ConnectionLike(Protocol):
    """What the rules need to know of a connection."""

    @property
    def name(self) -> str: ...

    @property
    def allow_contributors(self) -> bool: ...


class Action(StrEnum):
    """Operations the rules decide on."""

    CREATE_CONNECTION = "create connection"
    VIEW_CONNECTION = "view connection"
    LIST_CONNECTIONS = "list connections"
    UPDATE_CONNECTION = "change connection"
    VERIFY_CONNECTION = "verify connection"
    DELETE_CONNECTION = "delete connection"
    CREATE_EXPORT = "create export"
    VIEW_EXPORT = "view export"
    LIST_EXPORTS = "list exports"
    UPDATE_EXPORT = "change export"
    RUN_EXPORT = "run export"
    DELETE_EXPORT = "delete export"


ADMIN_ONLY = frozenset(
    {
        Action.CREATE_CONNECTION,
        Action.UPDATE_CONNECTION,
        Action.VERIFY_CONNECTION,
        Action.DELETE_CONNECTION,
    }
)
"""Connection management: administrators only, whatever the connection allows."""


def require_role(caller: Caller) -> None:
    """Any app role at all; raises :class:`PermissionDenied` otherwise."""
    if not (caller.is_admin or caller.is_contributor):
        raise PermissionDenied(
            f"you need the {ADMIN} or {CONTRIBUTOR} app role to use the exporter"
        )


def can_use_connection(caller: Caller, connection: ConnectionLike) -> bool:
    """Whether the caller may see the connection and work with exports on it."""
    return caller.is_admin or (caller.is_contributor and connection.allow_contributors)


def authorize(caller: Caller, action: Action, connection: ConnectionLike | None = None) -> None:
    """Raise :class:`PermissionDenied` unless ``caller`` may do ``action``.

    ``connection`` is the connection acted on, or the one the export uses; ``None`` for
    listings (which the caller filters with :func:`can_use_connection`).
    """
    require_role(caller)
    if caller.is_admin:
        return
    if action in ADMIN_ONLY:
        raise PermissionDenied(f"only administrators may {action.value}s")
    if connection is not None and not connection.allow_contributors:
        raise PermissionDenied(
            f"connection {connection.name!r} is for administrators only; "
            "an administrator can allow contributors on it"
        )
