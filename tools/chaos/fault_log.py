"""The log of a chaos run's fault actions: what was done to which process, from when to when.

Every action is logged with its `time.monotonic()` start and end, so the verdict can
relate the clients' history to the faults; `faults.jsonl` is this log, times
relative to the run's origin.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class FaultEvent:
    action: str  # "kill", "start", "pause", "partition", ...
    target: str  # node name(s)
    started: float  # time.monotonic()
    ended: float
    detail: str = ""
    ok: bool = True


@dataclass
class FaultLog:
    """Every fault action of a run, in order; thread-safe."""

    events: list[FaultEvent] = field(default_factory=list)
    listener: Callable[[FaultEvent], None] | None = None  # told of every event (the runner prints them)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, event: FaultEvent) -> FaultEvent:
        with self._lock:
            self.events.append(event)
        if self.listener is not None:
            self.listener(event)
        return event

    def to_jsonl(self, path: Path, origin: float) -> None:
        with open(path, "w") as f:
            for e in self.events:
                record = dict(asdict(e).items())
                record["t"] = round(e.started - origin, 3)
                f.write(json.dumps(record) + "\n")

    def first(self, action: str) -> FaultEvent | None:
        return next((e for e in self.events if e.action == action), None)
