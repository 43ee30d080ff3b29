"""Fair shares of one ActiveCampaign account's budget among the runs using it (Azure).

ActiveCampaign's limits belong to the *account*; in Azure many orchestrations (one per export
run), on any number of instances, send to the same account. Each account has a Durable Entity
(``account_budget`` in ``blueprints.orchestration``) whose state is an :class:`AccountGrants`:
the runs currently sending. Of ``n`` runs, each gets ``1/n`` of the bulk-import budget and an
even part of the account's :data:`MAX_WORKERS` workers (activities at once, one request a
second each), and divides them among its own activities.

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

MAX_WORKERS = 5
"""Activities sending to one account at once, at most: each holds one request per second of
the account's 5 (a whole request per window, so their windows can never line up into a
burst the way fractional shares can), so together they never exceed it."""


@dataclass
class Member:
    """One run sending to the account."""

    workers: int
    """Activities it may run at once (each one request a second) since its last ack."""
    bulk: float
    """Its share of the bulk-import budget since its last ack."""
    seen: str
    """When it last acknowledged (ISO 8601, the caller's clock)."""


@dataclass(frozen=True)
class Grant:
    """What a run may use until its next step, once ``ready``: ``workers`` activities at once
    (one request a second each) and ``bulk`` of the bulk-import budget."""

    runs: int
    ready: bool
    workers: int = MAX_WORKERS
    bulk: float = 1.0

    @property
    def share(self) -> float:
        return self.bulk

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "ready": self.ready, "workers": self.workers, "bulk": self.bulk}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grant:
        return cls(
            int(data["runs"]),
            bool(data["ready"]),
            int(data.get("workers", MAX_WORKERS)),
            float(data.get("bulk", 1.0)),
        )


def allotment(rank: int, runs: int) -> tuple[int, float]:
    """(workers, bulk share) of the run ``rank``-th (0-based) in the queue of ``runs``: the
    account's workers and bulk budget split evenly among the first :data:`MAX_WORKERS` (the
    first ones get the remainder); a later run waits — a run that had a turn while another
    waited goes to the back of the queue (:meth:`AccountGrants.ack`)."""
    sending = min(runs, MAX_WORKERS)
    if rank >= sending:
        return 0, 0.0
    workers = MAX_WORKERS // sending + (1 if rank < MAX_WORKERS % sending else 0)
    return workers, 1.0 / sending


@dataclass
class AccountGrants:
    """The runs sending to one account (a Durable Entity's state)."""

    members: dict[str, Member] = field(default_factory=dict)
    """In the order they joined (their rank)."""

    def join(self, run: str, now: datetime) -> Grant:
        """``run`` starts sending (again: a replayed join is the same join)."""
        return self.ack(run, now)

    def ack(self, run: str, now: datetime) -> Grant:
        """``run`` begins a step: its allotment by its rank, once ``ready`` — when the
        allotments the others may still be using (what they took at their last ack, until their
        next) leave room for it. Until then it uses nothing."""
        self._forget_stale(now)
        me = self.members.setdefault(run, Member(0, 0.0, now.isoformat()))
        me.seen = now.isoformat()
        if me.workers and any(m.workers == 0 for n, m in self.members.items() if n != run):
            # More runs than workers: one that just had a turn goes to the back of the queue,
            # so over its steps every run gets about 1/n of the account, not the first five.
            del self.members[run]
            self.members[run] = me
        runs = len(self.members)
        workers, bulk = allotment(list(self.members).index(run), runs)
        others = [m for name, m in self.members.items() if name != run]
        ready = (
            workers > 0
            and sum(m.workers for m in others) + workers <= MAX_WORKERS
            and sum(m.bulk for m in others) + bulk <= 1.0 + 1e-9
        )
        me.workers, me.bulk = (workers, bulk) if ready else (0, 0.0)
        return Grant(runs, ready, workers if ready else 0, bulk if ready else 0.0)

    def leave(self, run: str) -> None:
        """``run`` stopped sending."""
        self.members.pop(run, None)

    def _forget_stale(self, now: datetime) -> None:
        for name, member in list(self.members.items()):
            if now - datetime.fromisoformat(member.seen) > STALE_AFTER:
                del self.members[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": [
                {"run": n, "workers": m.workers, "bulk": m.bulk, "seen": m.seen}
                for n, m in self.members.items()
            ]
        }

    @classmethod
    def from_dict(cls, data: Any) -> AccountGrants:
        members = data.get("members", []) if isinstance(data, dict) else []
        return cls(
            {
                str(m["run"]): Member(int(m["workers"]), float(m["bulk"]), str(m["seen"]))
                for m in members
                if isinstance(m, dict) and {"run", "workers", "bulk", "seen"} <= m.keys()
            }
        )
