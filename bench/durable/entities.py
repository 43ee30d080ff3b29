"""Plays the Durable host's part for entities: keeps each entity's state and runs the
*registered* entity function (what the Functions worker calls) over one operation at a time,
with the context JSON the host would send."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from bench.durable.app import user_function


@dataclass
class Entities:
    """Every entity's state, by (name, key). Operations run one at a time, as the host runs
    an entity's operations."""

    states: dict[tuple[str, str], str | None] = field(default_factory=dict)
    operations: list[tuple[str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, name: str, key: str, operation: str, data: Any) -> Any:
        """Run ``operation`` on the entity; its result (an exception's message raises)."""
        with self._lock:
            self.operations.append((name, key, operation))
            state = self.states.get((name, key))
            context = {
                "self": {"name": name, "key": key},
                "state": state,
                "exists": state is not None,
                # The host passes the input as the JSON text of the caller's JSON text.
                "batch": [
                    {"name": operation, "input": json.dumps(json.dumps(data)), "signal": False}
                ],
            }
            out = json.loads(user_function(name)(json.dumps(context)))
            self.states[(name, key)] = out["entityState"] if out["entityExists"] else None
            [result] = out["results"]
            if result["isError"]:
                raise AssertionError(f"entity {name}@{key} {operation} failed: {result['result']}")
            return None if result["result"] is None else json.loads(result["result"])

    def signal(self, scheduler_id: str, operation: str, data: Any) -> None:
        """Deliver a signal sent to ``@name@key``."""
        _, name, key = scheduler_id.split("@", 2)
        self.call(name, key, operation, data)

    def state(self, name: str, key: str) -> Any:
        raw = self.states.get((name, key))
        return None if raw is None else json.loads(raw)
