"""How a run maps onto an orchestration instance: its deterministic id, and which runtime
statuses mean the instance is still going (Durable Functions' status names, as strings: the
core never imports the Durable SDK)."""

from __future__ import annotations

import re

ACTIVE_INSTANCE_STATUSES = frozenset({"Pending", "Running", "Suspended", "ContinuedAsNew"})
"""Runtime statuses of an instance that is still going: starting it again would fail, and
deleting its export must stop it. ``ContinuedAsNew`` is a live instance between two
generations, not a finished one."""
FINISHED_INSTANCE_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
"""Runtime statuses of an instance that ended."""


def instance_id(export: str, snapshot_identity: str) -> str:
    """Deterministic Durable instance id: export + snapshot identity (letters, digits, '-')."""
    safe = re.sub(r"[^A-Za-z0-9-]", "-", export)
    return f"{safe}-{re.sub(r'[^A-Za-z0-9]', '', snapshot_identity)[:32]}"


def instance_prefix(export: str) -> str:
    """The prefix of every orchestration instance id of an export's runs, sub-orchestrations
    included (:func:`instance_id` with an empty snapshot identity).

    Names may extend each other (``weekly`` and ``weekly-extra``), so a prefix match is only a
    candidate: whoever lists by it must check the export named in the instance's input.
    """
    return instance_id(export, "")
