"""`sixfold bench sql`'s local baseline: plain SQLite on the local disk, and what its disk's fsync costs.

- `LocalSqlite`: the same schema, load and transactions in a SQLite file in a temporary directory (the
  same SQLite library as the engine, through apsw): WAL mode, `synchronous=FULL` (the WAL is fsynced at
  every commit), one connection per client thread with a busy timeout, `BEGIN IMMEDIATE` (a deferred
  transaction that reads first would fail on its write with SQLITE_BUSY_SNAPSHOT, which no busy timeout
  retries). Closed loop like the sixfold clients: each thread starts its next transaction once its
  COMMIT returned.
- `fsync_ms`: what one 4 KiB write + fsync costs on the disk the SQLite file and the storage nodes use.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import apsw

from sixfold.tools.bench_commit_measure import ERROR_BACKOFF_S, WARMUP_S, CpuMeter, Phase, Snapshot
from sixfold.tools.bench_sql_workload import INVARIANT, Scale, Statement, Totals, Tpcb

SQLITE = "SQLite"
BUSY_TIMEOUT_MS = 30_000
JOIN_WAIT_S = BUSY_TIMEOUT_MS / 1000 + 5
FSYNC_PROBES = 20


def run_transaction(db: apsw.Connection, statements: Sequence[Statement], begin: str = "BEGIN IMMEDIATE") -> None:
    """The statements as one transaction: committed, or rolled back and the error raised."""
    db.execute(begin)
    try:
        for sql, params in statements:
            db.execute(sql, params).fetchall()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def totals(db: apsw.Connection) -> Totals:
    return Totals.from_row(db.execute(INVARIANT).fetchall()[0])


class LocalSqlite:
    """Plain SQLite in `directory`: load once, then closed loops at several concurrencies."""

    def __init__(self, directory: str, scale: Scale) -> None:
        self.path = os.path.join(directory, "bench.db")
        self.scale = scale
        self.committed = 0  # transactions the closed loops committed (warm-ups included)
        self._lock = threading.Lock()

    def connect(self) -> apsw.Connection:
        db = apsw.Connection(self.path)
        db.set_busy_timeout(BUSY_TIMEOUT_MS)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def load(
        self, page_size: int, transactions: Sequence[tuple[list[Statement], int]], progress: Callable[[str], None]
    ) -> None:
        db = apsw.Connection(self.path)
        try:
            db.execute(f"PRAGMA page_size={page_size}")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            assert mode == "wal", mode
            db.execute("PRAGMA synchronous=FULL")
            started, loaded = time.perf_counter(), 0
            for statements, accounts in transactions:
                run_transaction(db, statements)
                loaded += accounts
            progress(
                f"loaded SQLite: {loaded:,} accounts in {len(transactions)} transactions, "
                f"{time.perf_counter() - started:.1f} s ({self.path})"
            )
        finally:
            db.close()

    def run(self, concurrency: int, seconds: float, meter: CpuMeter) -> Phase:
        """`concurrency` threads, one connection each, in a closed loop; warm up, then count the transactions
        that complete within `seconds`."""
        measuring = False
        stop = threading.Event()
        latencies: list[float] = []
        errors: list[str] = []

        def client(index: int) -> None:
            rng = random.Random(index * 7_919 + concurrency + 1)
            committed = 0
            db = self.connect()
            try:
                while not stop.is_set():
                    txn = Tpcb.draw(rng, self.scale)
                    started = time.perf_counter()
                    try:
                        run_transaction(db, txn.statements())
                    except apsw.Error as error:
                        if measuring:
                            errors.append(f"{type(error).__name__}: {error}")
                        time.sleep(ERROR_BACKOFF_S)
                        continue
                    committed += 1
                    if measuring:
                        latencies.append(time.perf_counter() - started)
            finally:
                db.close()
                with self._lock:
                    self.committed += committed

        def snapshot() -> Snapshot:
            return Snapshot(time.perf_counter(), cpu_s=meter.read())

        threads = [
            threading.Thread(target=client, args=(i,), name=f"bench-sqlite-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(WARMUP_S)
            before = snapshot()
            measuring = True
            started = time.perf_counter()
            time.sleep(seconds)
            measuring = False
            elapsed = time.perf_counter() - started
            after = snapshot()
        finally:
            stop.set()
            for thread in threads:
                thread.join(JOIN_WAIT_S)
        return Phase(SQLITE, concurrency, elapsed, latencies, errors, before, after)

    def totals(self) -> Totals:
        db = self.connect()
        try:
            return totals(db)
        finally:
            db.close()


def fsync_ms(directory: str) -> float:
    """The median time of a 4 KiB write + fsync in `directory` (the disk SQLite's WAL and LMDB sync to)."""
    path = os.path.join(directory, "fsync-probe")
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(FSYNC_PROBES):
            started = time.perf_counter()
            os.pwrite(fd, os.urandom(4096), i * 4096)
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(samples) * 1000
