"""Jepsen's bank test on a real cluster (through the launcher), over SqlService.

Ten accounts of 1,000; client threads move random amounts between them, each transfer a transaction
that also inserts its own row (a unique id) into `transfers`; tools/chaos/bank_client.py does the
transfers (half over the Session stream: read both balances, write the new ones; half as one
RunTransaction) and tools/chaos/bank.py judges. While they run the compute node is SIGKILLed at random
moments (seeded: the seed is printed) and restarted with the launcher. In the end every acknowledged
transfer is present, none partially (the balances are the initial ones plus the transfers present), the
total is unchanged and `PRAGMA integrity_check` says ok. And a read-only transaction keeps its snapshot
while transfers commit.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from sixfold.compute.sql_client import SqlClient
from sixfold.tools.chaos.bank import (
    BALANCES_SQL,
    COUNT_SQL,
    DEFAULT_ACCOUNTS,
    INITIAL_BALANCE,
    BankLedger,
    BankOp,
    FinalState,
    check_bank,
)
from sixfold.tools.chaos.bank_client import BankClient, client_loop
from sixfold.tools.chaos.history import OK, WRITE
from sixfold.tools.cluster import COMPUTE, Cluster
from tests.sql_cluster import module_cluster

pytestmark = pytest.mark.integration

CLIENTS = 8
KILLS = 3
TOTAL = DEFAULT_ACCOUNTS * INITIAL_BALANCE
FINAL_READ_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def bank_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with module_cluster(tmp_path_factory, request) as cluster:
        yield cluster


class Clients:
    """`count` threads running `client_loop` (transfers only) until `stop`."""

    def __init__(self, cluster: Cluster, ledger: BankLedger, count: int, seed: int) -> None:
        address = cluster.compute_address()
        self.stop = threading.Event()
        self.clients = [BankClient(ledger, i, lambda: (address, COMPUTE)) for i in range(count)]
        self.threads = [
            threading.Thread(
                target=client_loop,
                args=(client, random.Random(f"{seed}:{client.process}"), DEFAULT_ACCOUNTS, self.stop),
                kwargs={"p_transfer": 1.0},
                name=f"bank-client-{client.process}",
                daemon=True,
            )
            for client in self.clients
        ]

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT_S)
        for client in self.clients:
            client.close()
        assert not any(t.is_alive() for t in self.threads), "a client thread did not stop"


def acknowledged(ledger: BankLedger) -> list[BankOp]:
    return [op for op in ledger.snapshot() if op.kind == WRITE and op.outcome == OK]


def judged(ledger: BankLedger, final: FinalState | None, initial: dict[int, int]) -> None:
    """Every criterion of tools/chaos/bank.py holds, and the brief's own words, checked directly."""
    check = check_bank(ledger.snapshot(), final, initial)
    for criterion in check.criteria():
        print(f"{'ok  ' if criterion.ok else 'FAIL'} {criterion.name}: {criterion.detail[:300]}")
    assert final is not None, "the bank could not be read at the end"
    assert all(c.ok for c in check.criteria()), [c for c in check.criteria() if not c.ok]
    assert {op.token for op in acknowledged(ledger)} <= set(final.transfers)
    assert sum(final.balances.values()) == TOTAL
    for account, balance in final.balances.items():
        moved = sum(a for _, d, a in final.transfers.values() if d == account) - sum(
            a for s, _, a in final.transfers.values() if s == account
        )
        assert balance == initial[account] + moved, account
    assert final.integrity == "ok"


def test_a_read_only_transaction_keeps_its_snapshot_while_transfers_commit(bank_cluster: Cluster) -> None:
    ledger = BankLedger()
    setup = BankClient(ledger, 99, lambda: (bank_cluster.compute_address(), COMPUTE))
    initial = setup.create(DEFAULT_ACCOUNTS, INITIAL_BALANCE)
    assert sum(initial.values()) == TOTAL
    with SqlClient(bank_cluster.compute_address(), timeout_s=30) as db, Clients(bank_cluster, ledger, 4, 1):
        while len(acknowledged(ledger)) < 20:
            time.sleep(0.05)
        with db.session() as reader:
            reader.begin(read_only=True)
            first = (reader.execute(BALANCES_SQL).rows, reader.execute(COUNT_SQL).rows)
            outside = []
            for _ in range(6):
                time.sleep(0.4)
                outside.append(db.execute(COUNT_SQL).rows)
                assert (reader.execute(BALANCES_SQL).rows, reader.execute(COUNT_SQL).rows) == first
            reader.rollback()
    balances = [(int(str(a)), int(str(b)), int(str(n))) for a, b, n in first[0]]
    assert sum(b for _, b, _ in balances) == TOTAL
    assert all(b == initial[a] + n for a, b, n in balances)
    assert int(str(outside[-1][0][0])) > int(str(first[1][0][0])), "no transfer committed meanwhile"
    judged(ledger, setup.final_state(FINAL_READ_TIMEOUT_S), initial)
    setup.close()


def test_every_acknowledged_transfer_survives_sigkills_of_the_compute_node(bank_cluster: Cluster) -> None:
    seed = int(time.time()) % 100_000
    print(f"seed={seed}")
    rng = random.Random(seed)
    ledger = BankLedger()
    setup = BankClient(ledger, 99, lambda: (bank_cluster.compute_address(), COMPUTE))
    initial = setup.create(DEFAULT_ACCOUNTS, INITIAL_BALANCE)
    restarts: list[float] = []
    with Clients(bank_cluster, ledger, CLIENTS, seed):
        for _ in range(KILLS):
            time.sleep(rng.uniform(1.5, 4.0))
            killed = time.monotonic()
            bank_cluster.kill(COMPUTE)
            bank_cluster.start(COMPUTE)  # waits until it serves again, its volume recovered
            restarts.append(time.monotonic())
            print(f"compute SIGKILLed, serving again {restarts[-1] - killed:.1f} s later")
        time.sleep(3.0)
    ops = ledger.snapshot()
    transfers = [op for op in ops if op.kind == WRITE]
    outcomes = Counter((op.outcome, op.code) for op in transfers)
    print(f"{len(transfers)} transfers: " + ", ".join(f"{n} {o} ({code})" for (o, code), n in outcomes.most_common()))
    for at in restarts:
        assert any(op.invoked >= at and op.outcome == OK for op in transfers), "none acknowledged after a restart"
    judged(ledger, setup.final_state(FINAL_READ_TIMEOUT_S), initial)
    setup.close()
