"""The ActiveCampaign sandbox: a faithful local emulator of the API v3.

It enforces what the real service enforces (``Api-Token`` auth, the 5 requests/second account
budget, the bulk-import budgets of 100 multi-contact and 20 single-contact requests a minute,
250 contacts and < 400,000 bytes per bulk request, one bad contact rejecting the whole
request, asynchronous batches that start as ``status: false``, no re-subscription through
bulk import) and can inject the failures users meet (503 pages, 429s, connection resets,
lost responses, slow answers, failed batches, per-email import failures).

::

    from sandbox import Sandbox, SandboxConfig, Faults, Field
    with Sandbox(SandboxConfig(api_key="k", lists={"1": "Newsletter"})) as sb:
        ...  # talk to f"{sb.base_url}/api/3"

Run it standalone with ``python -m sandbox --help``. Deliberate choices where ActiveCampaign's
behaviour is not documented are listed in ``sandbox/README.md`` and in the module docstrings of
:mod:`sandbox.api` and :mod:`sandbox.bulk`.
"""

from sandbox.config import Faults, Field, SandboxConfig
from sandbox.server import Sandbox

__all__ = ["Faults", "Field", "Sandbox", "SandboxConfig"]
