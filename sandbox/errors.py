"""The sandbox's own error: it is a separate program and does not borrow the exporter's tree."""

from __future__ import annotations


class SandboxConfigError(ValueError):
    """Invalid sandbox configuration. ``field`` names the offending setting when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message
