"""Connections and exports kept as JSON documents in the store.

``config/connections/<name>.json`` and ``config/exports/<name>.json``. Writers that read an
object before changing it pass its ETag back (``if_match``), so two people editing the same
export cannot silently overwrite each other; creating passes ``create_only``.
"""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from exporter.errors import ConfigError, ConflictError, NotFoundError
from exporter.management.config import Connection, Export, check_name, config_errors
from exporter.storage.store import ObjectNotFound, PreconditionFailed, Store

log = logging.getLogger(__name__)

CONNECTIONS = "config/connections/"
EXPORTS = "config/exports/"

_M = TypeVar("_M", bound=BaseModel)


def _encode(obj: BaseModel) -> bytes:
    return (json.dumps(obj.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n").encode()


class ConfigRepository:
    """Reads and writes connections and exports; checks ETags and references between them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- generic -----------------------------------------------------------------------------

    def _read(self, folder: str, kind: str, name: str, model: type[_M]) -> tuple[_M, str]:
        check_name(name)
        path = f"{folder}{name}.json"
        try:
            data, etag = self.store.read_with_etag(path)
        except ObjectNotFound:
            raise NotFoundError(f"no {kind} named {name!r}", field="name") from None
        try:
            return model.model_validate_json(data), etag
        except ValidationError as exc:
            # Someone edited the stored document by hand: say which object and which field.
            raise config_errors(exc, prefix=f"{path}:") from None

    def _write(
        self, folder: str, kind: str, obj: Connection | Export, if_match: str | None, create: bool
    ) -> str:
        path = f"{folder}{obj.name}.json"
        try:
            return self.store.write_bytes(
                path, _encode(obj), if_match=if_match, if_none_match=create
            )
        except PreconditionFailed:
            if create:
                raise ConflictError(
                    f"a {kind} named {obj.name!r} exists already", field="name"
                ) from None
            raise ConflictError(
                f"{kind} {obj.name!r} was changed or deleted since you read it; "
                "read it again and reapply your change",
                field="name",
            ) from None

    def _names(self, folder: str) -> list[str]:
        return [
            info.path[len(folder) : -len(".json")]
            for info in self.store.list(folder)
            if info.path.endswith(".json") and "/" not in info.path[len(folder) :]
        ]

    # --- connections -------------------------------------------------------------------------

    def get_connection(self, name: str) -> tuple[Connection, str]:
        """The connection and its ETag; :class:`NotFoundError` if there is none."""
        return self._read(CONNECTIONS, "connection", name, Connection)

    def connection_exists(self, name: str) -> bool:
        """Whether a connection of that name is stored."""
        return self.store.exists(f"{CONNECTIONS}{check_name(name)}.json")

    def list_connections(self) -> list[Connection]:
        """Every connection, by name."""
        return [
            self._read(CONNECTIONS, "connection", n, Connection)[0]
            for n in self._names(CONNECTIONS)
        ]

    def put_connection(
        self, connection: Connection, *, if_match: str | None = None, create_only: bool = False
    ) -> str:
        """Save a connection (consent required); returns the new ETag."""
        connection.require_consent()
        return self._write(CONNECTIONS, "connection", connection, if_match, create_only)

    def delete_connection(
        self, name: str, *, force: bool = False, if_match: str | None = None
    ) -> None:
        """Delete a connection. Refused (naming them) while exports use it, unless ``force``:
        then those exports stay, and fail to run until pointed at another connection."""
        connection, etag = self.get_connection(name)
        users = self.exports_using(name)
        if users and not force:
            raise ConflictError(
                f"connection {name!r} is used by export(s) {', '.join(users)}; delete or move "
                "them first, or force the deletion",
                field="name",
            )
        if if_match is not None and if_match != etag:
            raise ConflictError(f"connection {name!r} changed since you read it", field="name")
        self.store.delete(f"{CONNECTIONS}{connection.name}.json")
        log.info("deleted connection %s (exports left without it: %d)", name, len(users))

    # --- exports -----------------------------------------------------------------------------

    def get_export(self, name: str) -> tuple[Export, str]:
        """The export and its ETag; :class:`NotFoundError` if there is none."""
        return self._read(EXPORTS, "export", name, Export)

    def export_exists(self, name: str) -> bool:
        """Whether an export of that name is stored."""
        return self.store.exists(f"{EXPORTS}{check_name(name)}.json")

    def list_exports(self) -> list[Export]:
        """Every export, by name."""
        return [self._read(EXPORTS, "export", n, Export)[0] for n in self._names(EXPORTS)]

    def exports_using(self, connection: str) -> list[str]:
        """Names of the exports that send through ``connection``."""
        return [e.name for e in self.list_exports() if e.connection == connection]

    def put_export(
        self, export: Export, *, if_match: str | None = None, create_only: bool = False
    ) -> str:
        """Save an export (its connection must exist); returns the new ETag. Never runs it."""
        if not self.store.exists(f"{CONNECTIONS}{export.connection}.json"):
            raise ConfigError(f"no connection named {export.connection!r}", field="connection")
        return self._write(EXPORTS, "export", export, if_match, create_only)

    def delete_export(self, name: str, *, if_match: str | None = None) -> Export:
        """Delete an export's configuration (its run history stays); returns what it was."""
        export, etag = self.get_export(name)
        if if_match is not None and if_match != etag:
            raise ConflictError(f"export {name!r} changed since you read it", field="name")
        self.store.delete(f"{EXPORTS}{name}.json")
        return export

    # --- either ------------------------------------------------------------------------------

    def put(
        self, obj: Connection | Export, *, if_match: str | None = None, create_only: bool = False
    ) -> str:
        """Save a connection or an export; returns the new ETag."""
        if isinstance(obj, Connection):
            return self.put_connection(obj, if_match=if_match, create_only=create_only)
        return self.put_export(obj, if_match=if_match, create_only=create_only)
