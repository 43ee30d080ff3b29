"""One export's API session: a client and a bulk sender shared by a run's push and confirm,
re-reading the key once when ActiveCampaign refuses it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from exporter.activecampaign.bulk import BulkSender, PollPolicy
from exporter.activecampaign.client import ActiveCampaignClient
from exporter.errors import AuthenticationError
from exporter.management.config import Connection, Export
from exporter.management.secrets import SecretProvider

logger = logging.getLogger(__name__)


ClientFactory = Callable[[Connection, str], ActiveCampaignClient]


def api_key_rejected(connection: str) -> AuthenticationError:
    """The error that stops a run whose key ActiveCampaign refuses (never with the key)."""
    return AuthenticationError(
        f"API key rejected by ActiveCampaign for connection {connection!r} (HTTP 403), also "
        "after reading it again; update the key where its reference points and run again",
        status=403,
    )


class ApiSession:
    """A client and a bulk sender for one export, shared by the push and confirm threads.

    On a 403 the key is re-read once (it may have been rotated) and the client rebuilt; a
    second 403 stops the run with :func:`api_key_rejected`.
    """

    def __init__(
        self,
        export: Export,
        connection: Connection,
        secrets: SecretProvider,
        build: Callable[[Connection, str], ActiveCampaignClient],
        poll: PollPolicy,
    ) -> None:
        self.export = export
        self.connection = connection
        self._secrets = secrets
        self._build = build
        self._poll = poll
        self._lock = threading.Lock()
        self._generation = 0
        self.client = build(connection, secrets.get(connection.api_key_ref))
        self.sender = self._sender()

    def _sender(self) -> BulkSender:
        return BulkSender(
            self.client,
            exclude_automations=self.export.exclude_automations,
            max_resubmits=1,
            poll=self._poll,
        )

    def refresh(self, seen_generation: int) -> None:
        """Re-read the key and rebuild the client, unless another thread already did."""
        with self._lock:
            if self._generation != seen_generation:
                return
            if self._generation >= 1:
                raise api_key_rejected(self.connection.name)
            ref = self.connection.api_key_ref
            logger.warning(
                "ActiveCampaign refused the API key of connection %s; reading it again",
                self.connection.name,
            )
            self._secrets.invalidate(ref)
            old = self.client
            self.client = self._build(self.connection, self._secrets.get(ref))
            self.sender = self._sender()
            self._generation += 1
            old.close()

    def call(self, fn: Callable[[BulkSender], Any]) -> Any:
        """``fn(sender)``, once more with a re-read key after a 403."""
        while True:
            generation = self._generation
            try:
                return fn(self.sender)
            except AuthenticationError:
                if generation >= 1:
                    raise api_key_rejected(self.connection.name) from None
                self.refresh(generation)

    def call_client(self, fn: Callable[[ActiveCampaignClient], Any]) -> Any:
        """``fn(client)``, like :meth:`call` (once more with a re-read key after a 403)."""
        return self.call(lambda _sender: fn(self.client))

    @property
    def generation(self) -> int:
        return self._generation

    def close(self) -> None:
        self.client.close()
