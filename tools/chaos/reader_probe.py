"""Reader probes of a chaos run: read transactions on the compute instances that record what each saw of
the bank (tools/chaos/reader_check.py judges them).

One thread per target, each with its own SqlClient: a compute instance by its own address (a reader, or
whatever role it has now: the probe does not choose), or the `reader` endpoint (the live readers, rotated;
the address it reached is recorded with each read). Each read is one read-only transaction on the bank's
volume: every balance with the net of the transfers it sees, then every transfer id with its rowid, in
rowid order (pages of `PAGE_ROWS`), all at the transaction's one read point. A failed read is recorded
too (the instance is down, paused, changing role); the probe then makes a fresh connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from sixfold.compute.endpoint_client import Endpoint
from sixfold.compute.sql_client import SqlClient, SqlSession
from sixfold.compute.sql_values import SqlValue
from sixfold.tools.chaos.bank import BALANCES_SQL, TRANSFERS
from sixfold.tools.chaos.history import FAIL, OK
from sixfold.tools.chaos.reader_check import TAIL, ProbeRead, digest_rows

PAGE_ROWS = 5000  # under the 10,000 rows of one result
PROBE_TIMEOUT_S = 5.0
PROBE_PAUSE_S = 0.2  # between two reads of one target
FAILED_PAUSE_S = 0.3
JOIN_TIMEOUT_S = PROBE_TIMEOUT_S * 3


def _int(value: SqlValue) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def read_committed(session: SqlSession) -> list[tuple[int, str]]:
    """Every transfer's (rowid, id) in rowid order, inside the session's open transaction."""
    rows: list[tuple[int, str]] = []
    last = 0
    while True:
        page = session.execute(
            f"SELECT rowid, id FROM {TRANSFERS} WHERE rowid > ? ORDER BY rowid LIMIT {PAGE_ROWS}", [last]
        ).rows
        rows.extend((_int(r), str(t)) for r, t in page)
        if len(page) < PAGE_ROWS:
            return rows
        last = rows[-1][0]


def unbalanced(balances: Sequence[tuple[int, int, int]], initial: dict[int, int]) -> str:
    """What is off in a state's balances (each the initial one plus its net of transfers; the total kept)."""
    problems = [f"account {a}: {b} != {initial.get(a, 0)} + {n}" for a, b, n in balances if b != initial.get(a, 0) + n]
    total, expected = sum(b for _, b, _ in balances), sum(initial.values())
    if total != expected:
        problems.insert(0, f"total {total} != {expected}")
    if sorted(a for a, _, _ in balances) != sorted(initial):
        problems.insert(0, f"accounts {sorted(a for a, _, _ in balances)}")
    return "; ".join(problems[:3])


class ReaderProbe:
    def __init__(
        self,
        targets: dict[str, str | Endpoint],
        volume: str,
        initial: dict[int, int],
        *,
        pause_s: float = PROBE_PAUSE_S,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.targets = targets
        self.volume = volume
        self.initial = dict(initial)
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self._reads: list[ProbeRead] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def reads(self) -> list[ProbeRead]:
        with self._lock:
            return list(self._reads)

    def start(self) -> None:
        for name, target in self.targets.items():
            thread = threading.Thread(target=self._loop, args=(name, target), name=f"probe-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)

    def _loop(self, name: str, target: str | Endpoint) -> None:
        db: SqlClient | None = None
        while not self.stop.is_set():
            if db is None:
                db = SqlClient(target, self.volume, timeout_s=self.timeout_s)
            read = self.read_once(db, name, target)
            with self._lock:
                self._reads.append(read)
            if read.outcome != OK:
                db.close()
                db = None
            self.stop.wait(self.pause_s if read.outcome == OK else FAILED_PAUSE_S)
        if db is not None:
            db.close()

    def read_once(self, db: SqlClient, name: str, target: str | Endpoint) -> ProbeRead:
        read = ProbeRead(name, target if isinstance(target, str) else "", time.monotonic())
        try:
            read.address = db.address  # an endpoint is resolved here, and the call goes there
            with db.session() as session:
                session.begin(read_only=True)
                read.read_point = session.read_point
                balances = [(_int(a), _int(b), _int(n)) for a, b, n in session.execute(BALANCES_SQL).rows]
                rows = read_committed(session)
                session.rollback()
        except Exception as error:  # noqa: BLE001 - a failed read is recorded (the instance is down, paused...)
            read.outcome, read.detail = FAIL, str(error)[:300]
        else:
            read.outcome = OK
            read.count, read.digest = len(rows), digest_rows(rows)
            read.tail = tuple(t for _, t in rows[-TAIL:])
            read.unbalanced = unbalanced(balances, self.initial)
        read.completed = time.monotonic()
        return read

    def save(self, path: Path, origin: float) -> None:
        with path.open("w") as out:
            for r in self.reads:
                out.write(
                    json.dumps(
                        {
                            "target": r.target,
                            "address": r.address,
                            "invoked": round(r.invoked - origin, 6),
                            "completed": round(r.completed - origin, 6),
                            "outcome": r.outcome,
                            "read_point": r.read_point,
                            "count": r.count,
                            "tail": list(r.tail),
                            **({"detail": r.detail} if r.detail else {}),
                            **({"unbalanced": r.unbalanced} if r.unbalanced else {}),
                        }
                    )
                    + "\n"
                )
