"""The bank workload of `sixfold chaos --workload bank`: concurrent bank clients on the compute node's
SqlService while a scenario's faults play, with the interface the runner and the scenarios use.

The runner drives it like the page workload (tools/chaos/workload.py): `prepare` (the bank made afresh:
`accounts` accounts of 1,000), `client(i)` per client until `stop` is set, `final_reads` once healed,
`close`. Each client is tools/chaos/bank_client.py's loop on a thread of its own (its calls are
synchronous), so the runner's event loop and the nemesis stay free. With two clients or more the last
one only reads (SQL reads and snapshots from storage): a fault that holds every write back (no write
quorum, the writer settling an earlier commit's fate) must not hold the reads back with it. The scenarios' judges read
`records` (transfers are writes, reads are reads; snapshots from storage are reads with `from_storage`)
and `target` (the writer the clients use; `switch` moves them); tools/chaos/bank.py judges the rest.

The disk-rot scenarios find what to rot by transfer ids (`encode`); the time-travel scenarios judge the page
workload's LSNs and cannot run with it: `PAGES_ONLY` says why.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sixfold.tools.chaos.bank import DEFAULT_ACCOUNTS, INITIAL_BALANCE, BankLedger, BankOp, FinalState
from sixfold.tools.chaos.bank_client import BankClient, client_loop
from sixfold.tools.chaos.workload import PAGES
from sixfold.tools.cluster import COMPUTE, Cluster

BANK = "bank"
WORKLOADS = (PAGES, BANK)
FINAL_READ_TIMEOUT_S = 60.0
SETUP_PROCESS = 10_000  # the process number of the setup and final reads in the history
READER_P_READ = 0.7  # the reading client's share of SQL reads; the rest are snapshots from storage
PAGES_ONLY = {
    **dict.fromkeys(
        ("clone-az-down", "clone-kill", "backtrack-node-stopped", "replace-clone"),
        "it judges the page workload's reads by the LSNs its writes and reads return",
    ),
}


@dataclass
class BankTarget:
    """The writer the clients talk to (the old-writer scenario switches them to a second one)."""

    address: str
    label: str


class BankWorkload:
    kind = BANK

    def __init__(
        self, *, clients: int, seed: int, address: str, cluster: Cluster, accounts: int = DEFAULT_ACCOUNTS
    ) -> None:
        if accounts < 2:
            raise ValueError("the bank needs at least 2 accounts")
        self.clients = clients
        self.accounts = accounts
        self.seed = seed
        self.cluster = cluster
        self.ledger = BankLedger()
        self.target = BankTarget(address, COMPUTE)
        self.stop = threading.Event()
        self.origin = time.monotonic()
        self.initial: dict[int, int] = {}
        self.final: FinalState | None = None
        self.final_read_attempts = 0
        self._pool = ThreadPoolExecutor(max_workers=clients, thread_name_prefix="bank-client")
        self._setup = BankClient(self.ledger, SETUP_PROCESS, self._where)
        self._clients: list[BankClient] = []

    def _where(self) -> tuple[str, str]:
        return self.target.address, self.target.label

    @property
    def records(self) -> list[BankOp]:
        return self.ledger.snapshot()

    def describe(self) -> str:
        return (
            f"{self.clients} bank clients on {self.accounts} accounts of {INITIAL_BALANCE} (transfers over sessions "
            "and RunTransaction, read-only reads, snapshots from storage; the last client only reads)"
        )

    def save_history(self, path: Path) -> None:
        self.ledger.to_jsonl(path, self.origin)

    async def switch(self, address: str, label: str) -> None:
        self.target = BankTarget(address, label)

    async def prepare(self) -> None:
        self.initial = await asyncio.to_thread(self._setup.create, self.accounts, INITIAL_BALANCE)

    @staticmethod
    def encode(token: str) -> bytes:
        """A transfer id as SQLite stores it in the transfers table's rows (and so in records and page
        versions on the nodes): the needle the disk-rot scenarios look for."""
        return token.encode()

    def new_client(self, index: int) -> BankClient:
        """Client `index`'s connection (a subclass reaches the writer another way)."""
        return BankClient(self.ledger, index, self._where)

    async def client(self, index: int) -> None:
        client = self.new_client(index)
        self._clients.append(client)
        rng = random.Random(f"{self.seed}:bank-client:{index}")
        mix = {"p_transfer": 0.0, "p_read": READER_P_READ} if self.clients > 1 and index == self.clients - 1 else {}
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._pool, functools.partial(client_loop, client, rng, self.accounts, self.stop, **mix)
        )

    async def final_reads(self) -> bool:
        """The final state (a read-only transaction, and the segments' copy read from storage)."""
        before = sum(1 for op in self.records if op.process == SETUP_PROCESS)
        self.final = await asyncio.to_thread(self._setup.final_state, FINAL_READ_TIMEOUT_S)
        self.final_read_attempts = sum(1 for op in self.records if op.process == SETUP_PROCESS) - before
        return self.final is not None

    async def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=False)
        for client in [self._setup, *self._clients]:
            client.close()
