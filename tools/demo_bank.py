"""The bank workload of `sixfold demo` (tools/demo.py): the schema, one transfer with its retries, the
ledger of what the clients were told, and the checks of the invariant.

Rules (this module owns them):
1. Schema. `demo_accounts(id, balance CHECK (balance >= 0))` holds `accounts` accounts of
   `OPENING_BALANCE` each; `demo_transfers(id, src, dst, amount)` holds one row per committed transfer,
   written in the same transaction as the two balance updates. Loading drops both tables first, so each
   run starts from the same total.
2. A transfer is one `RunTransaction`: insert its row (the id first: a unique id is the transfer's
   idempotency key), debit, credit. All three commit, or none does.
3. Outcomes. Acknowledged: committed. FAILED_PRECONDITION on a first attempt: declined (the debit broke the
   CHECK: not enough money). ABORTED, UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED: retried with the same id,
   with a backoff, at most `ATTEMPTS_MAX` times; a retry refused with FAILED_PRECONDITION is resolved by
   reading the id back (a row: an earlier attempt committed, whose reply was lost; none: declined). A
   transfer whose retries ran out, or were cut short by the end of the run, is in doubt: its row may or
   may not exist. Any other status fails the transfer.
4. The invariant, checked in one read-only transaction (one snapshot): the sum of the balances is the
   opening total; at the end also: every acknowledged transfer has its row, every row belongs to a transfer
   a client sent, every balance equals its opening balance plus what its rows moved in and out, and
   SQLite's `PRAGMA integrity_check` is `ok`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import grpc

from sixfold.compute.sql_client import SqlClient, SqlError, SqlSession
from sixfold.compute.sql_values import SqlValue

ACCOUNTS_TABLE = "demo_accounts"
TRANSFERS_TABLE = "demo_transfers"
OPENING_BALANCE = 1000
AMOUNT_MAX = 100  # a transfer moves 1..AMOUNT_MAX
ACCOUNTS_MAX = 10_000  # loaded in one transaction (one MTR)
ATTEMPTS_MAX = 30  # per transfer, the first included
BACKOFF_S_MIN = 0.02  # before the first retry; doubles each time
BACKOFF_S_MAX = 1.0
ID_PAGE_ROWS = 5_000  # transfer ids read per query at the end (a result holds at most 10,000 rows)
CLIENT_ID_STRIDE = 1_000_000_000  # transfer id = client * stride + sequence number
RETRY_CODES = frozenset(
    {
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)

SCHEMA = [
    f"DROP TABLE IF EXISTS {TRANSFERS_TABLE}",
    f"DROP TABLE IF EXISTS {ACCOUNTS_TABLE}",
    f"CREATE TABLE {ACCOUNTS_TABLE}(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))",
    f"CREATE TABLE {TRANSFERS_TABLE}(id INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, "
    "amount INTEGER NOT NULL)",
]
FILL_ACCOUNTS = (
    f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
    f"INSERT INTO {ACCOUNTS_TABLE}(id, balance) SELECT i, ? FROM n"
)
TOTALS = f"SELECT coalesce(sum(balance), 0), count(*) FROM {ACCOUNTS_TABLE}"
TRANSFER_COUNT = f"SELECT count(*) FROM {TRANSFERS_TABLE}"
TRANSFER_IDS = f"SELECT id FROM {TRANSFERS_TABLE} WHERE id > ? ORDER BY id LIMIT {ID_PAGE_ROWS}"
# Accounts whose balance is not the opening balance plus what the transfer rows moved in and out.
UNBALANCED = (
    f"SELECT count(*) FROM {ACCOUNTS_TABLE} AS a WHERE a.balance != ? "
    f"- coalesce((SELECT sum(amount) FROM {TRANSFERS_TABLE} WHERE src = a.id), 0) "
    f"+ coalesce((SELECT sum(amount) FROM {TRANSFERS_TABLE} WHERE dst = a.id), 0)"
)


def _int(value: SqlValue) -> int:
    assert isinstance(value, int), value  # a count, a sum of integers or an INTEGER PRIMARY KEY
    return value


def load_schema(db: SqlClient, accounts: int) -> int:
    """Rule 1, in one transaction; the opening total."""
    assert 2 <= accounts <= ACCOUNTS_MAX, accounts
    db.run_transaction([*SCHEMA, (FILL_ACCOUNTS, [accounts, OPENING_BALANCE])])
    return accounts * OPENING_BALANCE


@dataclass(frozen=True)
class Transfer:
    transfer_id: int
    src: int
    dst: int
    amount: int


class Outcome(Enum):
    COMMITTED = "committed"
    DECLINED = "declined"
    IN_DOUBT = "in doubt"
    FAILED = "failed"


@dataclass(frozen=True)
class Tally:
    """The clients' outcomes (rule 3), copied out of the ledger."""

    committed: int
    declined: int
    retried: int
    retries: int
    retry_codes: Counter[str]
    found_on_retry: int
    in_doubt: int
    failed: Counter[str]


@dataclass
class Ledger:
    """What the clients were told, shared by their threads (under `lock`); times in seconds from the start."""

    clock: Callable[[], float]
    lock: threading.Lock = field(default_factory=threading.Lock)
    committed: dict[int, Transfer] = field(default_factory=dict)
    commit_times_s: list[float] = field(default_factory=list)
    sent: set[int] = field(default_factory=set)  # every transfer id a client sent at least once
    declined: int = 0
    retried: int = 0  # transfers that needed more than one attempt
    retries: int = 0  # attempts after the first, all transfers together
    found_on_retry: int = 0  # committed, learnt by reading the id back after a lost reply
    in_doubt: dict[int, Transfer] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)  # status code name -> transfers
    retry_codes: Counter[str] = field(default_factory=Counter)  # status code name -> attempts retried

    def sending(self, transfer: Transfer) -> None:
        with self.lock:
            self.sent.add(transfer.transfer_id)

    def retrying(self, code: grpc.StatusCode, first_retry: bool) -> None:
        with self.lock:
            self.retries += 1
            self.retried += first_retry
            self.retry_codes[code.name] += 1

    def settle(self, transfer: Transfer, outcome: Outcome, code: str = "", found_on_retry: bool = False) -> None:
        with self.lock:
            if outcome is Outcome.COMMITTED:
                self.committed[transfer.transfer_id] = transfer
                self.commit_times_s.append(self.clock())
                self.found_on_retry += found_on_retry
            elif outcome is Outcome.DECLINED:
                self.declined += 1
            elif outcome is Outcome.IN_DOUBT:
                self.in_doubt[transfer.transfer_id] = transfer
            else:
                self.failed[code] += 1

    def committed_count(self) -> int:
        with self.lock:
            return len(self.committed)

    def tally(self) -> tuple[Tally, list[float]]:
        """The outcomes so far and the commit times."""
        with self.lock:
            tally = Tally(
                len(self.committed),
                self.declined,
                self.retried,
                self.retries,
                self.retry_codes.copy(),
                self.found_on_retry,
                len(self.in_doubt),
                self.failed.copy(),
            )
            return tally, list(self.commit_times_s)


def _statements(t: Transfer) -> list[tuple[str, list[int]]]:
    return [
        (
            f"INSERT INTO {TRANSFERS_TABLE}(id, src, dst, amount) VALUES (?, ?, ?, ?)",
            [t.transfer_id, t.src, t.dst, t.amount],
        ),
        (f"UPDATE {ACCOUNTS_TABLE} SET balance = balance - ? WHERE id = ?", [t.amount, t.src]),
        (f"UPDATE {ACCOUNTS_TABLE} SET balance = balance + ? WHERE id = ?", [t.amount, t.dst]),
    ]


def _row_exists(db: SqlClient, transfer_id: int) -> bool | None:
    """Whether the transfer's row exists; None if that could not be read."""
    try:
        return bool(db.execute(f"SELECT 1 FROM {TRANSFERS_TABLE} WHERE id = ?", [transfer_id]).rows)
    except SqlError:
        return None


def transfer(db: SqlClient, t: Transfer, ledger: Ledger, stop: threading.Event) -> Outcome:
    """Rules 2 and 3: one transfer, retried with the same id until it has an outcome."""
    ledger.sending(t)
    backoff_s = BACKOFF_S_MIN
    for attempt in range(ATTEMPTS_MAX):
        try:
            db.run_transaction(_statements(t))
        except SqlError as error:
            if error.code == grpc.StatusCode.FAILED_PRECONDITION:
                if attempt == 0:
                    ledger.settle(t, Outcome.DECLINED)
                    return Outcome.DECLINED
                exists = _row_exists(db, t.transfer_id)
                outcome = {True: Outcome.COMMITTED, False: Outcome.DECLINED, None: Outcome.IN_DOUBT}[exists]
                ledger.settle(t, outcome, found_on_retry=exists is True)
                return outcome
            if error.code not in RETRY_CODES:
                ledger.settle(t, Outcome.FAILED, error.code.name)
                return Outcome.FAILED
            if attempt + 1 == ATTEMPTS_MAX or stop.is_set():
                break
            ledger.retrying(error.code, first_retry=attempt == 0)
            time.sleep(backoff_s * random.uniform(0.5, 1.0))
            backoff_s = min(backoff_s * 2, BACKOFF_S_MAX)
        else:
            ledger.settle(t, Outcome.COMMITTED, found_on_retry=False)
            return Outcome.COMMITTED
    ledger.settle(t, Outcome.IN_DOUBT)
    return Outcome.IN_DOUBT


def run_client(
    address: str, volume_id: str, client: int, accounts: int, seed: int, ledger: Ledger, stop: threading.Event
) -> None:
    """One client's loop (a thread): random transfers between distinct accounts until `stop`."""
    rng = random.Random(seed * 1_000_003 + client)
    with SqlClient(address, volume_id=volume_id) as db:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            src, dst = rng.sample(range(1, accounts + 1), 2)
            transfer(
                db, Transfer(client * CLIENT_ID_STRIDE + sequence, src, dst, rng.randint(1, AMOUNT_MAX)), ledger, stop
            )


@dataclass(frozen=True)
class Snapshot:
    """The bank as one read-only transaction saw it."""

    read_point: int
    total: int
    accounts: int
    transfers: int


def snapshot(db: SqlClient) -> Snapshot:
    """The totals at one read point (rule 4's periodic check)."""
    with db.transaction(read_only=True) as txn:
        total, accounts = txn.execute(TOTALS).rows[0]
        (transfers,) = txn.execute(TRANSFER_COUNT).rows[0]
    return Snapshot(txn.read_point, _int(total), _int(accounts), _int(transfers))


def _transfer_ids(txn: SqlSession) -> set[int]:
    ids: set[int] = set()
    last = 0
    while True:
        page = [_int(row[0]) for row in txn.execute(TRANSFER_IDS, [last]).rows]
        ids.update(page)
        if len(page) < ID_PAGE_ROWS:
            return ids
        last = page[-1]


@dataclass(frozen=True)
class Verification:
    """Rule 4 at the end: what the bank holds against what the clients were told."""

    snapshot: Snapshot
    expected_total: int
    expected_accounts: int
    missing: list[int]  # acknowledged transfers without a row: lost commits
    unexplained: list[int]  # rows of no transfer any client sent
    unacknowledged: int  # rows of transfers in doubt (their reply was lost): allowed
    unbalanced_accounts: int
    integrity: str

    @property
    def total_holds(self) -> bool:
        return self.snapshot.total == self.expected_total and self.snapshot.accounts == self.expected_accounts

    @property
    def ok(self) -> bool:
        return (
            self.total_holds
            and not self.missing
            and not self.unexplained
            and self.unbalanced_accounts == 0
            and self.integrity == "ok"
        )


def verify(db: SqlClient, ledger: Ledger, expected_total: int, expected_accounts: int) -> Verification:
    """Rule 4, after the clients stopped: one snapshot for the totals, the rows and the balances."""
    with db.transaction(read_only=True) as txn:
        total, accounts = txn.execute(TOTALS).rows[0]
        stored = _transfer_ids(txn)
        (unbalanced,) = txn.execute(UNBALANCED, [OPENING_BALANCE]).rows[0]
    integrity = "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check").rows)
    with ledger.lock:
        acknowledged = set(ledger.committed)
        sent = set(ledger.sent)
    return Verification(
        Snapshot(txn.read_point, _int(total), _int(accounts), len(stored)),
        expected_total,
        expected_accounts,
        sorted(acknowledged - stored),
        sorted(stored - sent),
        len((stored & sent) - acknowledged),
        _int(unbalanced),
        integrity,
    )
