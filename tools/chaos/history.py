"""Operation histories of a chaos run, in the Jepsen model.

Every client operation is two events in one history: an `invoke`, then exactly
one completion by the same process:

- `ok`   — the operation happened (a write was acknowledged; a read returned a value);
- `fail` — the operation definitely did not happen;
- `info` — unknown: it timed out or the service was unavailable. It may have
  taken effect at any time after its invoke, or never.

An invoke that never got its completion (the run ended first) is *pending* and
counts as `info`.

Rules (this module owns them):
1. A process has at most one outstanding invoke; its completion names the same
   operation (`f`, `key`) and comes no earlier than the invoke (`time`).
2. A write carries the value written on its invoke and on its completion. A read
   carries None on its invoke and on a `fail`/`info` completion; an `ok` read
   carries the value observed, None meaning the key was never written.
3. `index` is the event's position in the history. `time` is monotonic seconds
   from the caller's clock; checkers order operations by time, not by index
   (events from several client processes may be appended slightly out of time
   order), so operation a precedes b in real time iff a completed strictly
   before b was invoked.

JSONL: one event per line, an object with exactly the fields `process`, `type`,
`f`, `key`, `value`, `time`, `index` and, when set, `error`.

Pure: no clock, randomness, threads or I/O beyond reading and writing a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INVOKE = "invoke"
OK = "ok"
FAIL = "fail"
INFO = "info"
EVENT_TYPES = (INVOKE, OK, FAIL, INFO)
COMPLETION_TYPES = (OK, FAIL, INFO)

WRITE = "write"
READ = "read"
FUNCTIONS = (WRITE, READ)

JSONL_FIELDS = ("process", "type", "f", "key", "value", "time", "index", "error")
JSONL_FIELDS_REQUIRED = JSONL_FIELDS[:-1]


@dataclass(frozen=True)
class Op:
    """One event of a history: an invoke or a completion."""

    process: int
    type: str  # "invoke" | "ok" | "fail" | "info"
    f: str  # "write" | "read"
    key: int  # the page number written or read
    value: str | None  # write: the value written; read: None, or on `ok` the value observed
    time: float  # monotonic seconds
    index: int  # position in the history
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        record: dict[str, object] = {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": self.value,
            "time": self.time,
            "index": self.index,
        }
        if self.error is not None:
            record["error"] = self.error
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Op:
        """An event from one JSONL line's object (values as `json.loads` gives them: `History.append`
        checks their types)."""
        unknown = set(record) - set(JSONL_FIELDS)
        missing = set(JSONL_FIELDS_REQUIRED) - set(record)
        if unknown or missing:
            raise ValueError(
                f"history event needs fields {JSONL_FIELDS_REQUIRED} (+ optional error); "
                f"unknown {sorted(unknown)}, missing {sorted(missing)}: {record}"
            )
        return cls(
            process=record["process"],
            type=record["type"],
            f=record["f"],
            key=record["key"],
            value=record["value"],
            time=float(record["time"]),
            index=record["index"],
            error=record.get("error"),
        )


@dataclass(frozen=True)
class Operation:
    """An invoke with its completion; a pending invoke is an `info` operation without completion."""

    process: int
    f: str
    key: int
    type: str  # "ok" | "fail" | "info" (also for a pending invoke)
    value: str | None  # write: the value written; read: the value observed on `ok`, else None
    invoke_time: float
    complete_time: float | None  # None: pending (never completed)
    invoke_index: int
    complete_index: int | None  # None: pending
    error: str | None = None

    @property
    def pending(self) -> bool:
        return self.complete_index is None

    def describe(self) -> str:
        """A short human-readable name, e.g. `#12 p3 write k5 'p3-17' ok [1.200-1.250]`."""
        outcome = "pending" if self.pending else self.type
        end = "…" if self.complete_time is None else f"{self.complete_time:.3f}"
        shown = "" if self.f == READ and self.type != OK else " " + ("None" if self.value is None else repr(self.value))
        arrow = " ->" if self.f == READ and shown else ""
        return (
            f"#{self.invoke_index} p{self.process} {self.f} k{self.key}{arrow}{shown} {outcome} "
            f"[{self.invoke_time:.3f}-{end}]"
        )


class History:
    """An append-only list of events, checked on the way in (rules 1-3 above)."""

    def __init__(self, events: Iterable[Op] = ()) -> None:
        self.events: list[Op] = []
        self._outstanding: dict[int, Op] = {}  # process -> its invoke awaiting completion
        for event in events:
            self.append(event)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.events)

    def __getitem__(self, index: int) -> Op:
        return self.events[index]

    # --- recording -------------------------------------------------------------------

    def append(self, event: Op) -> Op:
        """Add one event; its `index` must be its position. Returns the event."""
        assert isinstance(event.process, int) and not isinstance(event.process, bool), (
            f"process must be an int: {event}"
        )
        assert event.type in EVENT_TYPES, f"type must be one of {EVENT_TYPES}: {event}"
        assert event.f in FUNCTIONS, f"f must be one of {FUNCTIONS}: {event}"
        assert isinstance(event.key, int) and not isinstance(event.key, bool), f"key must be an int: {event}"
        assert event.value is None or isinstance(event.value, str), f"value must be a str or None: {event}"
        assert isinstance(event.time, (int, float)) and event.time == event.time, f"time must be a number: {event}"
        assert event.error is None or isinstance(event.error, str), f"error must be a str or None: {event}"
        assert event.index == len(self.events), (
            f"event index {event.index} is not its position {len(self.events)}: {event}"
        )
        if event.f == WRITE:
            assert event.value is not None, f"a write carries the value written: {event}"
        pending = self._outstanding.get(event.process)
        if event.type == INVOKE:
            assert pending is None, f"process {event.process} invoked {event} while {pending} is outstanding"
            if event.f == READ:
                assert event.value is None, f"a read's invoke carries no value: {event}"
            self._outstanding[event.process] = event
        else:
            assert pending is not None, f"completion without an outstanding invoke by process {event.process}: {event}"
            assert (event.f, event.key) == (pending.f, pending.key), (
                f"completion {event} does not match its invoke {pending}"
            )
            assert event.time >= pending.time, f"completion {event} is earlier than its invoke {pending}"
            if event.f == WRITE:
                assert event.value == pending.value, (
                    f"write completion {event} carries another value than its invoke {pending}"
                )
            elif event.type != OK:
                assert event.value is None, f"a read that did not complete ok observed nothing: {event}"
            del self._outstanding[event.process]
        self.events.append(event)
        return event

    def invoke(self, process: int, f: str, key: int, value: str | None, time: float) -> Op:
        """Record an invoke; the returned event is the handle to `complete`."""
        return self.append(
            Op(process=process, type=INVOKE, f=f, key=key, value=value, time=float(time), index=len(self.events))
        )

    def complete(
        self, handle: Op, type: str, value: str | None = None, time: float | None = None, error: str | None = None
    ) -> Op:
        """Record the completion (`ok`, `fail` or `info`) of the invoke `handle`.

        For a write, `value` defaults to the value written; for an `ok` read it is the
        value observed (None: the key was never written).
        """
        assert time is not None, "complete() needs the completion time"
        assert type in COMPLETION_TYPES, f"a completion is one of {COMPLETION_TYPES}, not {type!r}"
        assert handle.type == INVOKE, f"complete() takes the invoke event: {handle}"
        assert self._outstanding.get(handle.process) is handle, (
            f"{handle} is not the outstanding invoke of process {handle.process}"
        )
        if handle.f == WRITE and value is None:
            value = handle.value
        return self.append(
            Op(
                process=handle.process,
                type=type,
                f=handle.f,
                key=handle.key,
                value=value,
                time=float(time),
                index=len(self.events),
                error=error,
            )
        )

    # --- reading ---------------------------------------------------------------------

    def outstanding(self) -> dict[int, Op]:
        """process -> its invoke that has no completion yet."""
        return dict(self._outstanding)

    def pairs(self) -> list[Operation]:
        """Every operation, in invoke order; a pending invoke is an `info` operation without completion."""
        open_by_process: dict[int, Op] = {}
        invokes: list[Op] = []
        completion_of: dict[int, Op] = {}  # invoke index -> completion
        for event in self.events:
            if event.type == INVOKE:
                open_by_process[event.process] = event
                invokes.append(event)
            else:
                completion_of[open_by_process.pop(event.process).index] = event
        operations = []
        for invoke in invokes:
            completion = completion_of.get(invoke.index)
            if completion is None:
                operations.append(
                    Operation(
                        process=invoke.process,
                        f=invoke.f,
                        key=invoke.key,
                        type=INFO,
                        value=invoke.value,
                        invoke_time=invoke.time,
                        complete_time=None,
                        invoke_index=invoke.index,
                        complete_index=None,
                    )
                )
            else:
                operations.append(
                    Operation(
                        process=invoke.process,
                        f=invoke.f,
                        key=invoke.key,
                        type=completion.type,
                        value=completion.value,
                        invoke_time=invoke.time,
                        complete_time=completion.time,
                        invoke_index=invoke.index,
                        complete_index=completion.index,
                        error=completion.error,
                    )
                )
        return operations

    def counts(self) -> dict[str, int]:
        """Events by type (`invoke`, `ok`, `fail`, `info`) and `pending` invokes (no completion)."""
        counts = dict.fromkeys(EVENT_TYPES, 0)
        for event in self.events:
            counts[event.type] += 1
        counts["pending"] = len(self._outstanding)
        return counts

    def writes_resumed_after(self, fault_time: float) -> float | None:
        """Seconds from `fault_time` until the first `ok` write completed after it (None: none did)."""
        completions = [
            event.time for event in self.events if event.type == OK and event.f == WRITE and event.time >= fault_time
        ]
        return min(completions) - fault_time if completions else None

    # --- files -----------------------------------------------------------------------

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as file:
            file.writelines(json.dumps(event.to_json()) + "\n" for event in self.events)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> History:
        history = cls()
        with open(path, encoding="utf-8") as file:
            for line_number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_number}: not JSON: {error}") from None
                history.append(Op.from_json(record))
        return history
