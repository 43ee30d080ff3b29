"""ActiveCampaign API v3: transport seam, status mapping, rate limiter, retries, client, and
the bulk sender (the one seam that sends a batch and confirms it).

See :mod:`.status` for how each answer maps onto :mod:`exporter.errors`.
"""

from .bulk import UNAVAILABLE, BulkSender, ConfirmedBatch, PollPolicy, SentBatch
from .client import (
    ActiveCampaignClient,
    BulkImportAccepted,
    ImportStatus,
    base_url_for_host,
    is_loopback_host,
)
from .limiter import Budget, RateLimiter, RequestKind
from .retry import NO_RETRY, RetryPolicy
from .status import raise_for_status
from .transport import RequestsTransport, Response, Transport

__all__ = [
    "NO_RETRY",
    "UNAVAILABLE",
    "ActiveCampaignClient",
    "Budget",
    "BulkImportAccepted",
    "BulkSender",
    "ConfirmedBatch",
    "ImportStatus",
    "PollPolicy",
    "RateLimiter",
    "RequestKind",
    "RequestsTransport",
    "Response",
    "RetryPolicy",
    "SentBatch",
    "Transport",
    "base_url_for_host",
    "is_loopback_host",
    "raise_for_status",
]
