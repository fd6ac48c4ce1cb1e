"""The bank workload's model and checks (Jepsen's bank test), pure: the schema, one record per client call,
how a failed call is classified, the history file, and the checkers.

The bank: `accounts(id, balance)` (every balance starts at `INITIAL_BALANCE`, and a CHECK keeps it
non-negative) and `transfers(id, src, dst, amount)`. A transfer moves `amount` from `src` to `dst` and
inserts its own row, with a unique id, in the same transaction; so the `transfers` table says which
transfers took effect, and the balances must be exactly the initial ones plus the net of those rows.

Outcome of a transfer (`classify`):
- ok: the commit was acknowledged (durable);
- fail: definitely not done: it failed before its commit was asked for (the server rolls back a
  transaction whose commit never came), the call never reached the server (gRPC's "failed to connect":
  the channel had no connection to send it on), or the commit was refused with a status that says
  nothing was written (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, RESOURCE_EXHAUSTED, ABORTED,
  "nothing was written", the writer settling an earlier commit's fate before this one ran);
- info: unknown: the commit was asked for and the answer was lost (the connection broke, a deadline) or
  says the outcome is open (OUTCOME_UNKNOWN, "may still").

Checks (`check_bank`), on the records and the final state read after the heal:
1. no acknowledged transfer lost: every ok transfer's row is present;
2. no failed transfer took effect: no fail transfer's row is present;
3. the total is conserved: the final balances and every read during the run sum to the total;
4. transfers are whole: every row present is a transfer a client asked for (same accounts and amount),
   and the balances (final, and in every read) equal the initial ones plus the net of the rows that
   state holds, so an info transfer is present whole or absent whole;
5. SQLite's `PRAGMA integrity_check` says ok (the final state, and every snapshot read from storage).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sixfold.storage.errors import REASON_NOT_COMMITTED, REASON_OUTCOME_UNKNOWN
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE
from sixfold.tools.chaos.scenario_base import Criterion

ACCOUNTS = "accounts"
TRANSFERS = "transfers"
DEFAULT_ACCOUNTS = 10
INITIAL_BALANCE = 1000
AMOUNT_MAX = 100

SQL = "sql"  # a read-only SQL transaction on the compute node
STORAGE = "storage"  # every page of the database read from storage segments at one read point
FINAL = "final"  # the final state, read after the heal
SESSION = "session"  # a transfer over the Session stream: read both balances, write the new ones
TXN = "txn"  # a transfer as one RunTransaction: relative updates, the CHECK refuses an overdraft

INSUFFICIENT = "INSUFFICIENT_FUNDS"  # a session transfer that found too little to move rolls back

SCHEMA = [
    f"DROP TABLE IF EXISTS {TRANSFERS}",
    f"DROP TABLE IF EXISTS {ACCOUNTS}",
    f"CREATE TABLE {ACCOUNTS}(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))",
    f"CREATE TABLE {TRANSFERS}(id TEXT PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, "
    "amount INTEGER NOT NULL CHECK (amount > 0))",
]
# Every account with its balance and the net of the transfers this state holds, in one statement.
BALANCES_SQL = (
    f"SELECT a.id, a.balance, "
    f"(SELECT coalesce(sum(t.amount), 0) FROM {TRANSFERS} t WHERE t.dst = a.id) - "
    f"(SELECT coalesce(sum(t.amount), 0) FROM {TRANSFERS} t WHERE t.src = a.id) "
    f"FROM {ACCOUNTS} a ORDER BY a.id"
)
COUNT_SQL = f"SELECT count(*) FROM {TRANSFERS}"

FAIL_CODES = frozenset(
    {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "RESOURCE_EXHAUSTED", "ABORTED", "OUT_OF_RANGE"}
)
UNKNOWN_WORDS = ("may still", "outcome unknown", "outcome is unknown")
NOTHING_WORDS = ("nothing was written", "writes wait until storage decides", "failed to connect to all addresses")


def schema_statements(accounts: int, balance: int = INITIAL_BALANCE) -> list[tuple[str, list[int]]]:
    """The bank made afresh, as one transaction (all or nothing, so retrying it is safe)."""
    return [(sql, []) for sql in SCHEMA] + [
        (f"INSERT INTO {ACCOUNTS}(id, balance) VALUES (?, ?)", [i, balance]) for i in range(1, accounts + 1)
    ]


def classify(code: str, details: str, reason: str = "", *, committing: bool = True) -> str:
    """fail / info for a failed transfer (module docstring); `committing`: the commit had been asked for."""
    if not committing:
        return FAIL
    text = details.lower()
    if reason == REASON_OUTCOME_UNKNOWN or any(words in text for words in UNKNOWN_WORDS):
        return INFO
    if reason == REASON_NOT_COMMITTED or any(words in text for words in NOTHING_WORDS) or code in FAIL_CODES:
        return FAIL
    return INFO


@dataclass
class BankOp:
    """One client call. Transfers are `write`s and reads `read`s, with the fields the scenarios' judges
    look at (tools/chaos/scenario_base.py `ops`): keys, token, values, writer, from_storage."""

    kind: str  # WRITE (a transfer) | READ
    process: int
    via: str  # a transfer: SESSION | TXN; a read: SQL | STORAGE | FINAL
    invoked: float
    completed: float = 0.0
    outcome: str = INFO
    code: str = ""
    details: str = ""
    reason: str = ""  # the server's machine-readable reason (FENCED, OUTCOME_UNKNOWN, ...), if any
    writer: str = ""
    token: str | None = None  # a transfer's id
    keys: tuple[int, ...] = ()  # a transfer's (src, dst)
    amount: int = 0
    from_storage: bool = False
    values: tuple[str | None, ...] = ()  # the final read: the id of every transfer present
    balances: tuple[tuple[int, int, int], ...] = ()  # an ok read: (account, balance, net of its transfers)
    transfers_seen: int = 0
    integrity: str = ""  # an ok storage snapshot or final read: PRAGMA integrity_check

    @property
    def total(self) -> int:
        return sum(balance for _, balance, _ in self.balances)

    def describe(self, origin: float = 0.0) -> str:
        when = f"[{self.invoked - origin:.3f}-{self.completed - origin:.3f}]"
        if self.kind == WRITE:
            src, dst = self.keys
            return f"transfer {self.token} {src}->{dst} {self.amount} via {self.via} {self.outcome} {when}"
        return f"{self.via} read p{self.process} {self.outcome} {when}"


class BankLedger:
    """Every call's record, appended from many client threads."""

    def __init__(self) -> None:
        self.ops: list[BankOp] = []
        self._lock = threading.Lock()

    def add(self, op: BankOp) -> BankOp:
        with self._lock:
            self.ops.append(op)
        return op

    def snapshot(self) -> list[BankOp]:
        with self._lock:
            return list(self.ops)

    def to_jsonl(self, path: Path, origin: float = 0.0) -> None:
        """The history in the Jepsen model: an invoke and a completion per call, in time order."""
        events: list[tuple[float, int, dict[str, object]]] = []
        for n, op in enumerate(self.snapshot()):
            f = "transfer" if op.kind == WRITE else op.via
            asked: object = None
            if op.kind == WRITE:
                asked = {"id": op.token, "from": op.keys[0], "to": op.keys[1], "amount": op.amount, "via": op.via}
            events.append((op.invoked, n, {"process": op.process, "type": "invoke", "f": f, "value": asked}))
            done: dict[str, object] = {"process": op.process, "type": op.outcome, "f": f, "value": asked}
            if op.kind == READ and op.outcome == OK:
                done["value"] = {
                    "total": op.total,
                    "transfers": op.transfers_seen,
                    "balances": {a: b for a, b, _ in op.balances},
                    **({"integrity": op.integrity} if op.integrity else {}),
                }
            if op.outcome != OK:
                done["error"] = f"{op.code}{f' ({op.reason})' if op.reason else ''}: {op.details}"[:300]
            events.append((op.completed, n, done))
        events.sort(key=lambda e: (e[0], e[1], e[2]["type"] != "invoke"))
        with path.open("w") as out:
            for index, (at, _, event) in enumerate(events):
                out.write(json.dumps({**event, "time": round(at - origin, 6), "index": index}) + "\n")


@dataclass
class FinalState:
    """What the bank holds once the run is over: balances, the transfer rows, SQLite's integrity check."""

    balances: dict[int, int]
    transfers: dict[str, tuple[int, int, int]]  # id -> (src, dst, amount)
    integrity: str
    storage_matches: bool | None = None  # the segments' copy, read from storage, is the same (None: not read)
    storage_detail: str = ""


def net_of(transfers: Iterable[tuple[int, int, int]]) -> dict[int, int]:
    net: dict[int, int] = {}
    for src, dst, amount in transfers:
        net[src] = net.get(src, 0) - amount
        net[dst] = net.get(dst, 0) + amount
    return net


@dataclass
class BankCheck:
    total: int
    transfers: int = 0
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    failed_present: list[str] = field(default_factory=list)
    info_present: int = 0
    info_absent: int = 0
    phantom: list[str] = field(default_factory=list)  # rows no transfer explains
    final: FinalState | None = None
    final_total: int | None = None
    unbalanced: list[str] = field(default_factory=list)  # final accounts != initial + net of the rows
    reads: int = 0
    snapshots: int = 0
    wrong_total: list[str] = field(default_factory=list)
    torn_reads: list[str] = field(default_factory=list)
    bad_integrity: list[str] = field(default_factory=list)

    @property
    def conserved(self) -> bool:
        return self.final_total == self.total and not self.wrong_total

    def criteria(self) -> list[Criterion]:
        final = self.final
        if final is None:
            return [Criterion("final state read", False, "the bank could not be read after the heal")] + [
                Criterion(name, False if problems else None, "not judged on a final state" + _some(problems))
                for name, problems in (
                    ("no acknowledged transfer lost", []),
                    ("no failed transfer took effect", []),
                    ("total conserved", self.wrong_total),
                    ("transfers whole", self.torn_reads),
                    ("integrity_check ok", self.bad_integrity),
                )
            ]
        where = "" if final.storage_matches is None else f"; {final.storage_detail}"
        return [
            Criterion(
                "final state read",
                final.storage_matches is not False,
                f"{len(final.balances)} accounts, {len(final.transfers)} transfers{where}",
            ),
            Criterion(
                "no acknowledged transfer lost",
                not self.lost,
                f"{self.acknowledged} acknowledged transfers: {len(self.lost)} missing" + _some(self.lost),
            ),
            Criterion(
                "no failed transfer took effect",
                not self.failed_present,
                f"{len(self.failed_present)} transfers that failed are present" + _some(self.failed_present),
            ),
            Criterion(
                "total conserved",
                self.conserved,
                f"final total {self.final_total} (expected {self.total}); {self.reads} reads during the run "
                f"(SQL and storage snapshots): {len(self.wrong_total)} saw another total" + _some(self.wrong_total),
            ),
            Criterion(
                "transfers whole",
                not (self.unbalanced or self.phantom or self.torn_reads),
                f"{self.transfers} transfers asked for; in doubt: {self.info_present} present whole, "
                f"{self.info_absent} absent; {len(self.phantom)} rows no transfer explains"
                + _some(self.phantom)
                + f"; final accounts off their initial balance plus their transfers: {len(self.unbalanced)}"
                + _some(self.unbalanced)
                + f"; reads whose balances disagree with their transfers: {len(self.torn_reads)}"
                + _some(self.torn_reads),
            ),
            Criterion(
                "integrity_check ok",
                not self.bad_integrity,
                f"final: {final.integrity}; {self.snapshots} snapshots from storage checked"
                + _some(self.bad_integrity),
            ),
        ]


def _some(items: Sequence[str], most: int = 5) -> str:
    return (": " + "; ".join(items[:most]) + (" ..." if len(items) > most else "")) if items else ""


def _read_problems(op: BankOp, initial: dict[int, int], total: int, check: BankCheck, origin: float) -> None:
    name = op.describe(origin)
    if op.total != total:
        check.wrong_total.append(f"{name}: total {op.total}")
    torn = [a for a, balance, net in op.balances if balance != initial.get(a, 0) + net]
    if torn or sorted(a for a, _, _ in op.balances) != sorted(initial):
        check.torn_reads.append(f"{name}: accounts {torn or sorted(a for a, _, _ in op.balances)}")
    if op.integrity and op.integrity != "ok":
        check.bad_integrity.append(f"{name}: {op.integrity[:120]}")


def check_bank(
    ops: Sequence[BankOp], final: FinalState | None, initial: dict[int, int], origin: float = 0.0
) -> BankCheck:
    """Checks 1-5 of the module docstring."""
    total = sum(initial.values())
    check = BankCheck(total=total, final=final)
    transfers = {op.token: op for op in ops if op.kind == WRITE and op.token is not None}
    check.transfers = len(transfers)
    check.acknowledged = sum(1 for op in transfers.values() if op.outcome == OK)
    for op in ops:
        if op.kind == READ and op.outcome == OK and op.via != FINAL:
            check.reads += 1
            check.snapshots += op.via == STORAGE
            _read_problems(op, initial, total, check, origin)
    if final is None:
        return check
    present = final.transfers
    for tid, op in transfers.items():
        if op.outcome == OK and tid not in present:
            check.lost.append(op.describe(origin))
        elif op.outcome == FAIL and tid in present:
            check.failed_present.append(f"{op.describe(origin)} ({op.code}: {op.details[:100]})")
        elif op.outcome == INFO:
            if tid in present:
                check.info_present += 1
            else:
                check.info_absent += 1
    for tid, row in sorted(present.items()):
        asked = transfers.get(tid)
        if asked is None:
            check.phantom.append(f"{tid} {row}: no client asked for it")
        elif row != (asked.keys[0], asked.keys[1], asked.amount):
            check.phantom.append(f"{tid} {row}: asked {asked.keys[0]}->{asked.keys[1]} {asked.amount}")
    check.final_total = sum(final.balances.values())
    net = net_of(present.values())
    for account in sorted(set(initial) | set(final.balances)):
        expected = initial.get(account, 0) + net.get(account, 0)
        got = final.balances.get(account)
        if got != expected:
            check.unbalanced.append(f"account {account}: {got}, expected {expected}")
    if final.integrity != "ok":
        check.bad_integrity.append(f"final: {final.integrity[:200]}")
    return check
