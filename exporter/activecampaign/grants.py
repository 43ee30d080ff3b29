"""Fair shares of one ActiveCampaign account's budget among the runs using it (Azure).

ActiveCampaign's limits belong to the *account*; in Azure many orchestrations (one per export
run), on any number of instances, send to the same account. Each account has a Durable Entity
(``blueprints.budget``) whose state is an :class:`AccountGrants`: the runs currently sending.
A run holds ``1 / n`` of the account's budget, ``n`` being the runs sending, and divides it
among its own activities (``blueprints.orchestration.shares``).

Shares change only at a run's **step** (one wave of push and confirm activities), when it calls
:meth:`AccountGrants.ack`; a run that starts sending may have to wait until the others have
begun a step knowing about it — until then they may still be using their old, larger share,
and the account's budget would be overspent. :meth:`AccountGrants.ack` says ``ready`` once the
shares in use leave room (their sum never exceeds 1). A run that leaves frees its share at the
others' next step.

A run that stops without leaving (its orchestration terminated) is forgotten once it has not
acknowledged for :data:`STALE_AFTER` — longer than any step (a confirm waits at most 30 minutes
for an import) — so it cannot hold a share for ever.

The state is plain data (the entity stores it as JSON) and every operation is given the
caller's clock (the orchestration's deterministic time), so the entity never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

STALE_AFTER = timedelta(minutes=45)
"""A member silent this long is taken to be gone."""


@dataclass
class Member:
    """One run sending to the account."""

    acked: int
    """The number of runs it last divided the budget by (it uses ``1/acked`` until its next
    step)."""
    seen: str
    """When it last joined or acknowledged (ISO 8601, the caller's clock)."""


@dataclass(frozen=True)
class Grant:
    """What a run may use: ``1 / runs`` of the account's budget, once ``ready``."""

    runs: int
    ready: bool

    @property
    def share(self) -> float:
        return 1.0 / self.runs

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "ready": self.ready}


@dataclass
class AccountGrants:
    """The runs sending to one account (a Durable Entity's state)."""

    members: dict[str, Member] = field(default_factory=dict)

    def join(self, run: str, now: datetime) -> Grant:
        """``run`` starts sending (again: a replayed join is the same join)."""
        return self.ack(run, now)

    def ack(self, run: str, now: datetime) -> Grant:
        """``run`` begins a step: it will use ``1 / runs`` of the budget, once ``ready`` — when
        the shares the others may still be using (``1 / acked`` each, until their next step)
        leave room for it."""
        self._forget_stale(now)
        self.members[run] = Member(acked=0, seen=now.isoformat())
        runs = len(self.members)
        self.members[run].acked = runs
        others = sum(1.0 / m.acked for name, m in self.members.items() if name != run)
        return Grant(runs, others + 1.0 / runs <= 1.0 + 1e-9)

    def leave(self, run: str) -> None:
        """``run`` stopped sending."""
        self.members.pop(run, None)

    def _forget_stale(self, now: datetime) -> None:
        for name, member in list(self.members.items()):
            if now - datetime.fromisoformat(member.seen) > STALE_AFTER:
                del self.members[name]

    def to_dict(self) -> dict[str, Any]:
        return {"members": {n: {"acked": m.acked, "seen": m.seen} for n, m in self.members.items()}}

    @classmethod
    def from_dict(cls, data: Any) -> AccountGrants:
        members = data.get("members", {}) if isinstance(data, dict) else {}
        return cls(
            {
                str(name): Member(int(m.get("acked", 0)), str(m.get("seen", "")))
                for name, m in members.items()
                if isinstance(m, dict) and m.get("seen")
            }
        )
