"""One bank client against a compute node: transfers, read-only reads and snapshots from storage, each
recorded as a `BankOp` (tools/chaos/bank.py); the bank's creation, a client's loop, and the final read.

Synchronous (over `SqlClient` and `VolumeClient`): the chaos workload runs one client per thread, and so
does the integration test (tests/test_sql_bank.py).

- A transfer goes one of two ways: over the Session stream (begin; read both balances; write the new
  balances as values computed here; insert its row; commit: the engine's one writer must keep another
  transfer from slipping in between, or the total changes) or as one RunTransaction (relative updates;
  the CHECK refuses an overdraft).
- A read is a read-only transaction: every balance with the net of the transfers it sees, and their count.
- A snapshot reads every page of the database from storage segments (ReadPages, from_storage) in one call,
  at one read point, and opens that image with the local SQLite: what the segments hold must be a whole
  database in which the bank balances.
- After a call that broke the connection the client opens a fresh channel: a compute node restarted on
  the same port is reached at once, not after gRPC's reconnect backoff.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.compute.sql.pages import header_page_count
from sixfold.compute.sql_client import SqlClient, SqlError, SqlSession
from sixfold.compute.sql_values import SqlValue
from sixfold.tools.chaos.bank import (
    ACCOUNTS,
    AMOUNT_MAX,
    BALANCES_SQL,
    COUNT_SQL,
    FINAL,
    INSUFFICIENT,
    SESSION,
    SQL,
    STORAGE,
    TRANSFERS,
    TXN,
    BankLedger,
    BankOp,
    FinalState,
    classify,
    net_of,
    schema_statements,
)
from sixfold.tools.chaos.history import FAIL, OK, READ, WRITE

VOLUME = "vol0"
TRANSFER_TIMEOUT_S = 15.0  # a commit waits up to 5 s for durability, a write transaction up to 40 s for the lock
READ_TIMEOUT_S = 10.0
STORAGE_PAGES_MAX = 256  # pages one ReadPages call may ask for (compute/service.py)
FINAL_ROWS_PER_STATEMENT = 5000  # under the 10,000 rows of one result
FINAL_MATCH_ATTEMPTS = 3
SETUP_TIMEOUT_S = 60.0
RECONNECT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL"})
RETRY_CODES = frozenset({"ABORTED", "UNAVAILABLE"})  # a transfer refused this way is tried again (a new id)

# The mix of a client's calls: transfers, SQL reads, snapshots from storage; and the share over sessions.
P_TRANSFER, P_READ = 0.8, 0.13
P_SESSION = 0.5
BACKOFF_S = 0.05
CONNECT_BACKOFF_S = 0.2  # after a call found no server to connect to (the compute node is down)

Target = Callable[[], tuple[str, str]]  # the compute node's address and its label, asked before each call


class _AtCommit(Exception):
    """The commit step of a session failed: its outcome is classified as a commit's."""

    def __init__(self, error: SqlError) -> None:
        super().__init__(str(error))
        self.error = error


class _Insufficient(Exception):
    pass


def _int(value: SqlValue) -> int:
    """An INTEGER column's value (the bank's columns are all INTEGER NOT NULL but the transfer id)."""
    if not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def inspect_image(image: bytes) -> tuple[tuple[tuple[int, int, int], ...], int, str, dict[str, tuple[int, int, int]]]:
    """(balances with their nets, transfer count, integrity_check, the transfer rows) of a database image."""
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(image)
        balances = tuple((int(a), int(b), int(n)) for a, b, n in db.execute(BALANCES_SQL))
        count = int(db.execute(COUNT_SQL).fetchone()[0])
        integrity = "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
        rows = {str(t): (int(s), int(d), int(a)) for t, s, d, a in db.execute(f"SELECT * FROM {TRANSFERS}")}
    finally:
        db.close()
    return balances, count, integrity, rows


class BankClient:
    def __init__(self, ledger: BankLedger, process: int, target: Target, volume: str = VOLUME) -> None:
        self.ledger = ledger
        self.process = process
        self.target = target
        self.volume = volume
        self._address = ""
        self._db: SqlClient | None = None
        self._pages: VolumeClient | None = None
        self._page_guess = 32

    def _connect(self, address: str) -> None:
        if address != self._address:
            self.close()
            self._address = address
        if self._db is None:
            self._db = SqlClient(address, self.volume, timeout_s=TRANSFER_TIMEOUT_S)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        if self._pages is not None:
            self._pages.close()
        self._db = self._pages = None

    def _start(self, kind: str, via: str) -> tuple[BankOp, SqlClient]:
        address, label = self.target()
        self._connect(address)
        assert self._db is not None
        return BankOp(kind, self.process, via, time.monotonic(), writer=label), self._db

    def _page_client(self) -> VolumeClient:
        if self._pages is None:
            self._pages = VolumeClient(self._address, timeout_s=READ_TIMEOUT_S)
        return self._pages

    def _failed(self, op: BankOp, error: Exception, *, committing: bool) -> None:
        if isinstance(error, VolumeError):  # SqlError too
            op.code, op.details, op.reason = error.code.name, error.details, error.reason
            op.outcome = classify(op.code, op.details, error.reason, committing=committing)
        else:
            op.code, op.details = type(error).__name__, str(error)
            op.outcome = classify(op.code, op.details, committing=committing)
        if op.code in RECONNECT_CODES or not isinstance(error, VolumeError):
            self.close()

    def _done(self, op: BankOp) -> BankOp:
        op.completed = time.monotonic()
        return self.ledger.add(op)

    # -- the calls ----------------------------------------------------------------------------------

    def transfer(self, tid: str, src: int, dst: int, amount: int, via: str) -> BankOp:
        op, db = self._start(WRITE, via)
        op.token, op.keys, op.amount = tid, (src, dst), amount
        try:
            if via == TXN:
                db.run_transaction(
                    [
                        (f"UPDATE {ACCOUNTS} SET balance = balance - ? WHERE id = ?", [amount, src]),
                        (f"UPDATE {ACCOUNTS} SET balance = balance + ? WHERE id = ?", [amount, dst]),
                        (f"INSERT INTO {TRANSFERS}(id, src, dst, amount) VALUES (?, ?, ?, ?)", [tid, src, dst, amount]),
                    ]
                )
            else:
                with db.session() as session:
                    self._session_transfer(session, op)
            op.outcome, op.code = OK, "OK"
        except _Insufficient:
            op.outcome, op.code, op.details = FAIL, INSUFFICIENT, f"account {src} holds less than {amount}"
        except _AtCommit as error:
            self._failed(op, error.error, committing=True)
        except Exception as error:  # noqa: BLE001 - whatever broke, the outcome is classified
            self._failed(op, error, committing=via == TXN)
        return self._done(op)

    @staticmethod
    def _session_transfer(session: SqlSession, op: BankOp) -> None:
        src, dst = op.keys
        session.begin()
        found = session.execute(f"SELECT id, balance FROM {ACCOUNTS} WHERE id IN (?, ?)", [src, dst]).rows
        balance = {_int(a): _int(b) for a, b in found}
        if balance.get(src, 0) < op.amount:
            session.rollback()
            raise _Insufficient
        session.execute(f"UPDATE {ACCOUNTS} SET balance = ? WHERE id = ?", [balance[src] - op.amount, src])
        session.execute(f"UPDATE {ACCOUNTS} SET balance = ? WHERE id = ?", [balance[dst] + op.amount, dst])
        session.execute(
            f"INSERT INTO {TRANSFERS}(id, src, dst, amount) VALUES (?, ?, ?, ?)", [op.token, src, dst, op.amount]
        )
        try:
            session.commit()
        except SqlError as error:
            raise _AtCommit(error) from error

    def read(self) -> BankOp:
        """Every balance and the transfers, in one read-only transaction."""
        op, db = self._start(READ, SQL)
        try:
            with db.session() as session:
                session.begin(read_only=True)
                rows = session.execute(BALANCES_SQL).rows
                op.transfers_seen = _int(session.execute(COUNT_SQL).rows[0][0])
                session.rollback()
            op.balances = tuple((_int(a), _int(b), _int(n)) for a, b, n in rows)
            op.outcome, op.code = OK, "OK"
        except Exception as error:  # noqa: BLE001 - a failed read is recorded
            self._failed(op, error, committing=True)
        return self._done(op)

    def _image(self) -> bytes:
        """Every page of the database, from storage, at one read point."""
        pages = self._page_client()
        want = self._page_guess
        while True:
            _, got = pages.read(self.volume, range(want), from_storage=True)
            size = header_page_count(got[0])
            if size == 0:
                raise VolumeError("NOT_FOUND", "volume page 0 holds no SQLite database yet")
            if size <= want:
                self._page_guess = min(STORAGE_PAGES_MAX, max(self._page_guess, size + 8))
                return b"".join(got[i] for i in range(size))
            if size > STORAGE_PAGES_MAX:
                raise VolumeError(
                    "RESOURCE_EXHAUSTED", f"the database has {size} pages: more than one read ({STORAGE_PAGES_MAX})"
                )
            want = min(STORAGE_PAGES_MAX, size + 8)

    def snapshot(self) -> BankOp:
        op, _ = self._start(READ, STORAGE)
        op.from_storage = True
        try:
            image = self._image()
        except Exception as error:  # noqa: BLE001 - a failed read is recorded
            self._failed(op, error, committing=True)
            return self._done(op)
        try:
            op.balances, op.transfers_seen, op.integrity, _ = inspect_image(image)
        except sqlite3.Error as error:  # the segments hold no whole database: judged (no balances, integrity)
            op.integrity = f"the image from storage does not open: {error}"
        op.outcome, op.code = OK, "OK"
        return self._done(op)

    # -- the whole bank ----------------------------------------------------------------------------

    def create(self, accounts: int, balance: int, timeout_s: float = SETUP_TIMEOUT_S) -> dict[int, int]:
        """The bank made afresh (one transaction, retried until it commits); the initial balances."""
        deadline = time.monotonic() + timeout_s
        while True:
            address, _ = self.target()
            self._connect(address)
            assert self._db is not None
            try:
                self._db.run_transaction(schema_statements(accounts, balance))
                rows = self._db.execute(f"SELECT id, balance FROM {ACCOUNTS} ORDER BY id").rows
                return {_int(a): _int(b) for a, b in rows}
            except SqlError as error:
                if error.code.name in RECONNECT_CODES:
                    self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def final_state(self, timeout_s: float) -> FinalState | None:
        """The final state from a read-only transaction, compared with the segments' copy (read from storage
        first: a commit still settling is given a few tries to land); recorded as a FINAL read."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            op, db = self._start(READ, FINAL)
            try:
                state = self._final_from_sql(db)
            except Exception as error:  # noqa: BLE001 - try again until the deadline
                self._failed(op, error, committing=True)
                self._done(op)
                time.sleep(0.5)
                continue
            net = net_of(state.transfers.values())
            op.balances = tuple((a, b, net.get(a, 0)) for a, b in sorted(state.balances.items()))
            op.transfers_seen, op.integrity = len(state.transfers), state.integrity
            op.values = tuple(sorted(state.transfers))
            op.outcome, op.code = OK, "OK"
            self._done(op)
            return state
        return None

    def _final_from_sql(self, db: SqlClient) -> FinalState:
        state = FinalState({}, {}, "not read")
        for _ in range(FINAL_MATCH_ATTEMPTS):
            stored: tuple[dict[int, int], dict[str, tuple[int, int, int]]] | None = None
            detail = ""
            try:
                balances, _, _, rows = inspect_image(self._image())
                stored = ({a: b for a, b, _ in balances}, rows)
            except (VolumeError, sqlite3.Error) as error:
                detail = f"the segments' copy could not be read: {error}"
            state = self._read_final(db)
            if stored is None:
                state.storage_detail = detail
                return state
            state.storage_matches = stored == (state.balances, state.transfers)
            if state.storage_matches:
                state.storage_detail = "the segments' copy (read from storage) is the same"
                return state
            state.storage_detail = "the segments' copy (read from storage) differs from what the compute node reads"
        return state

    @staticmethod
    def _read_final(db: SqlClient) -> FinalState:
        with db.session() as session:
            session.begin(read_only=True)
            rows = session.execute(f"SELECT id, balance FROM {ACCOUNTS}").rows
            balances = {_int(a): _int(b) for a, b in rows}
            transfers: dict[str, tuple[int, int, int]] = {}
            last = ""
            while True:
                page = session.execute(
                    f"SELECT id, src, dst, amount FROM {TRANSFERS} WHERE id > ? ORDER BY id "
                    f"LIMIT {FINAL_ROWS_PER_STATEMENT}",
                    [last],
                ).rows
                transfers.update((str(t), (_int(s), _int(d), _int(a))) for t, s, d, a in page)
                if len(page) < FINAL_ROWS_PER_STATEMENT:
                    break
                last = str(page[-1][0])
            integrity = "; ".join(str(row[0]) for row in session.execute("PRAGMA integrity_check").rows)
            session.rollback()
        return FinalState(balances, transfers, integrity)


def client_loop(
    client: BankClient,
    rng: random.Random,
    accounts: int,
    stop: threading.Event,
    *,
    p_transfer: float = P_TRANSFER,
    p_read: float = P_READ,
) -> None:
    """Transfers between random accounts, reads and snapshots (in that mix) until `stop`; a transfer
    refused with ABORTED or UNAVAILABLE is tried again, as a new transfer with a new id."""
    n = 0
    retry: tuple[int, int, int, str] | None = None
    while not stop.is_set():
        r = rng.random()
        if retry is not None or r < p_transfer:
            n += 1
            if retry is None:
                src, dst = rng.sample(range(1, accounts + 1), 2)
                via = SESSION if rng.random() < P_SESSION else TXN
                move = (src, dst, rng.randint(1, AMOUNT_MAX), via)
            else:
                move = retry
            op = client.transfer(f"c{client.process}-{n}", *move)
            retry = move if op.outcome != OK and op.code in RETRY_CODES else None
        elif r < p_transfer + p_read:
            op = client.read()
        else:
            op = client.snapshot()
        if op.outcome != OK:
            pause = CONNECT_BACKOFF_S if "failed to connect" in op.details else BACKOFF_S
            stop.wait(pause * (0.5 + rng.random()))
