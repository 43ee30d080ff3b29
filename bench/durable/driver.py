"""Drives orchestrations side by side as the Durable host would, with the *real* activities:
each round replays every unfinished orchestration, answers entity calls and timers, delivers
entity signals, drives sub-orchestrations, and runs all the round's activities at once on a
thread pool (as workers on several instances would) before completing them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.durable.app import user_function
from bench.durable.entities import Entities
from bench.durable.host import DurableHost, Pending, Replay


def run_activity(p: Pending) -> Any:
    """The registered activity function; a failure becomes what the host would record."""
    try:
        return user_function(p.name)(p.input)
    except Exception as exc:  # noqa: BLE001 - handed to the orchestration as a failure
        return Exception(f"Activity function '{p.name}' failed: {exc}")


@dataclass
class Driver:
    """Orchestrations driven together over one set of entities."""

    hosts: list[DurableHost]
    entities: Entities = field(default_factory=Entities)
    activity: Callable[[Pending], Any] = run_activity
    rounds: list[list[list[str]]] = field(default_factory=list)
    """Per round, per host: the activity names run (sorted)."""

    def run(self, max_rounds: int = 2000) -> list[Replay]:
        finished: dict[int, Replay] = {}
        delivered = [0] * len(self.hosts)
        for _ in range(max_rounds):
            outcomes: list[dict[int | str, Any]] = [{} for _ in self.hosts]
            activities: list[tuple[int, Pending]] = []
            for i, host in enumerate(self.hosts):
                if i in finished:
                    continue
                replay = host.replay()
                for signal in replay.signals[delivered[i] :]:
                    self.entities.signal(*signal)
                delivered[i] = len(replay.signals)
                if replay.done or replay.failed:
                    finished[i] = replay
                    continue
                for p in replay.pending:
                    if p.kind in ("timer", "retry_timer"):
                        outcomes[i][p.id] = None
                    elif p.kind == "entity":
                        name, key = p.input["entity"]
                        outcomes[i][p.id] = self.entities.call(name, key, p.name, p.input["input"])
                    elif p.kind == "activity":
                        activities.append((i, p))
                    elif p.kind == "sub":
                        outcomes[i][p.id] = self._sub(i, host, p)
            if len(finished) == len(self.hosts):
                return [finished[i] for i in range(len(self.hosts))]
            if not activities and not any(outcomes):
                # Nothing this driver plays is pending (an external event only): every later
                # round would be the same.
                waiting = sorted(
                    {
                        p.kind
                        for i, h in enumerate(self.hosts)
                        if i not in finished
                        for p in h.replay().pending
                    }
                )
                raise AssertionError(
                    f"the orchestrations wait on what the driver does not play: {waiting}"
                )
            self.rounds.append(
                [sorted(p.name for j, p in activities if j == i) for i in range(len(self.hosts))]
            )
            if activities:
                with ThreadPoolExecutor(max_workers=len(activities)) as pool:
                    results = list(pool.map(lambda ip: self.activity(ip[1]), activities))
                for (i, p), result in zip(activities, results, strict=True):
                    outcomes[i][p.id] = result
            for host, answered in zip(self.hosts, outcomes, strict=True):
                if answered:
                    host.complete(answered)
        raise AssertionError("the orchestrations never ended")

    def _sub(self, index: int, parent: DurableHost, p: Pending) -> Any:
        """Drive a sub-orchestration (an export's group) to its end over the same entities;
        its rounds count as its parent's. Its parent waits for nothing else that sends, so it
        runs before the round goes on (orchestrations driven beside it pause meanwhile)."""
        child = DurableHost(
            user_function(p.name),
            p.input,
            instance_id=str(p.instance_id),
            parent_instance_id=parent.instance_id,
        )
        driver = Driver([child], entities=self.entities, activity=self.activity)
        try:
            [outcome] = driver.run()
        finally:
            for [names] in driver.rounds:
                self.rounds.append([names if j == index else [] for j in range(len(self.hosts))])
        return Exception(outcome.failed) if outcome.failed else outcome.output
