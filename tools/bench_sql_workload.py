"""`sixfold bench sql`'s workload: pgbench's TPC-B-like schema, the load in batches, the transaction, and the
invariant, as plain statements both systems run unchanged.

Pure: statements are (text, parameters) pairs; nothing here talks to a database.

- Scale as pgbench's: one branch and ten tellers per 100,000 accounts (at least one branch).
- The load: one transaction for the schema, the branches and the tellers, then the accounts in batches,
  each one INSERT … SELECT over a recursive counter, sized to fill at most `LOAD_PAGES_PER_TXN` pages
  and `LOAD_BYTES_PER_TXN` bytes: well under the engine's per-transaction limits (compute/sql/vfs.py
  PENDING_PAGES_MAX changed pages, compute/volume_log.py MTR_BYTES_MAX bytes).
- The transaction (pgbench's built-in "tpcb-like"): aid, tid and bid uniform, delta uniform in
  [-5000, 5000]; update the account, read its balance, update the teller and the branch, append history.
  `mtime` is a parameter (not CURRENT_TIMESTAMP), so the same transactions replay to the same bytes.
- The invariant: the accounts', tellers' and branches' balances each sum to the history's deltas.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sixfold.compute.sql.vfs import PENDING_PAGES_MAX
from sixfold.compute.sql_values import SqlValue
from sixfold.compute.volume_log import MTR_BYTES_MAX

Statement = tuple[str, list[SqlValue]]

ACCOUNTS_PER_BRANCH = 100_000
TELLERS_PER_BRANCH = 10
DELTA_MAX = 5_000
ACCOUNT_ROW_BYTES = 100  # an account row on a page (4 integers, 84 filler bytes, cell header): sizes the load
LOAD_PAGES_PER_TXN = PENDING_PAGES_MAX * 2 // 5  # pages one load transaction fills, at most
LOAD_BYTES_PER_TXN = MTR_BYTES_MAX * 2 // 5  # and page bytes
FILLER = {"branches": 88, "tellers": 84, "accounts": 84}  # pgbench's char(n) fillers, blank-padded

SCHEMA = [
    "CREATE TABLE branches(bid INTEGER PRIMARY KEY, bbalance INTEGER NOT NULL, filler TEXT)",
    "CREATE TABLE tellers(tid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, tbalance INTEGER NOT NULL, filler TEXT)",
    "CREATE TABLE accounts(aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, abalance INTEGER NOT NULL, filler TEXT)",
    "CREATE TABLE history(tid INTEGER NOT NULL, bid INTEGER NOT NULL, aid INTEGER NOT NULL, "
    "delta INTEGER NOT NULL, mtime INTEGER NOT NULL, filler TEXT)",
]
_SERIES = "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
LOAD_BRANCHES = _SERIES + "INSERT INTO branches(bid, bbalance, filler) SELECT i, 0, ? FROM n"
LOAD_TELLERS = _SERIES + "INSERT INTO tellers(tid, bid, tbalance, filler) SELECT i, (i - 1) / ? + 1, 0, ? FROM n"
LOAD_ACCOUNTS = _SERIES + "INSERT INTO accounts(aid, bid, abalance, filler) SELECT i, (i - 1) / ? + 1, 0, ? FROM n"

UPDATE_ACCOUNT = "UPDATE accounts SET abalance = abalance + ? WHERE aid = ?"
SELECT_ACCOUNT = "SELECT abalance FROM accounts WHERE aid = ?"
UPDATE_TELLER = "UPDATE tellers SET tbalance = tbalance + ? WHERE tid = ?"
UPDATE_BRANCH = "UPDATE branches SET bbalance = bbalance + ? WHERE bid = ?"
INSERT_HISTORY = "INSERT INTO history(tid, bid, aid, delta, mtime) VALUES (?, ?, ?, ?, ?)"

INVARIANT = (
    "SELECT (SELECT coalesce(sum(abalance), 0) FROM accounts), (SELECT coalesce(sum(tbalance), 0) FROM tellers), "
    "(SELECT coalesce(sum(bbalance), 0) FROM branches), (SELECT coalesce(sum(delta), 0) FROM history), "
    "(SELECT count(*) FROM history)"
)


@dataclass(frozen=True)
class Scale:
    accounts: int
    branches: int
    tellers: int

    @classmethod
    def for_accounts(cls, accounts: int) -> Scale:
        branches = max(1, accounts // ACCOUNTS_PER_BRANCH)
        return cls(accounts, branches, branches * TELLERS_PER_BRANCH)

    def describe(self) -> str:
        branches = f"{self.branches:,} branch" + ("es" if self.branches > 1 else "")
        return f"{self.accounts:,} accounts ({branches}, {self.tellers:,} tellers)"


def accounts_per_load_txn(page_size: int) -> int:
    pages = min(LOAD_PAGES_PER_TXN, LOAD_BYTES_PER_TXN // page_size)
    return max(1, pages * page_size // ACCOUNT_ROW_BYTES)


def load_transactions(scale: Scale, page_size: int) -> list[tuple[list[Statement], int]]:
    """The load, as transactions, each with the number of accounts it inserts: the schema, branches and
    tellers first, then the accounts in batches."""
    first: list[Statement] = [(sql, []) for sql in SCHEMA]
    first.append((LOAD_BRANCHES, [1, scale.branches, " " * FILLER["branches"]]))
    first.append((LOAD_TELLERS, [1, scale.tellers, TELLERS_PER_BRANCH, " " * FILLER["tellers"]]))
    out: list[tuple[list[Statement], int]] = [(first, 0)]
    step = accounts_per_load_txn(page_size)
    for start in range(1, scale.accounts + 1, step):
        end = min(scale.accounts, start + step - 1)
        out.append(([(LOAD_ACCOUNTS, [start, end, ACCOUNTS_PER_BRANCH, " " * FILLER["accounts"]])], end - start + 1))
    return out


@dataclass(frozen=True)
class Tpcb:
    """One TPC-B-like transaction's random draws."""

    aid: int
    tid: int
    bid: int
    delta: int
    mtime: int

    @classmethod
    def draw(cls, rng: random.Random, scale: Scale) -> Tpcb:
        return cls(
            rng.randint(1, scale.accounts),
            rng.randint(1, scale.tellers),
            rng.randint(1, scale.branches),
            rng.randint(-DELTA_MAX, DELTA_MAX),
            time.time_ns() // 1_000_000,
        )

    def statements(self) -> list[Statement]:
        return [
            (UPDATE_ACCOUNT, [self.delta, self.aid]),
            (SELECT_ACCOUNT, [self.aid]),
            (UPDATE_TELLER, [self.delta, self.tid]),
            (UPDATE_BRANCH, [self.delta, self.bid]),
            (INSERT_HISTORY, [self.tid, self.bid, self.aid, self.delta, self.mtime]),
        ]


@dataclass(frozen=True)
class Totals:
    """The invariant's row: the three balance sums, the history's deltas and its rows."""

    accounts: int
    tellers: int
    branches: int
    deltas: int
    history: int

    @classmethod
    def from_row(cls, row: Sequence[object]) -> Totals:
        values = [int(v) if isinstance(v, int) else 0 for v in row]
        return cls(*values)

    def problems(self, acknowledged: int, exact: bool) -> list[str]:
        """What breaks the invariant: a balance sum that is not the sum of deltas, or fewer history rows than
        transactions acknowledged (`exact`: no failed call, so there must be exactly as many)."""
        out = [
            f"sum of {name} balances {total:,} != sum of history deltas {self.deltas:,}"
            for name, total in (("account", self.accounts), ("teller", self.tellers), ("branch", self.branches))
            if total != self.deltas
        ]
        if self.history < acknowledged or (exact and self.history != acknowledged):
            out.append(f"history holds {self.history:,} rows for {acknowledged:,} acknowledged transactions")
        return out

    def describe(self) -> str:
        return f"sum(abalance) {self.accounts:,} = sum(delta) {self.deltas:,} over {self.history:,} history rows"
