"""Bank transfers through the compute node's SQL service, retried when the database says so.

Shows `sixfold.compute.sql_client.SqlClient`: a schema created once, an interactive transaction
(`db.transaction()`: read a balance, decide, write both sides, commit on leaving the block), a
read-only transaction for a consistent total, and a retry loop. A transaction refused with ABORTED
(the write lock was busy, or the engine aborted it) or UNAVAILABLE (the writer is settling an earlier
commit, or is gone and a reader is being promoted) was not committed, so running it again is safe.
One whose outcome is unknown (a deadline passed during the commit: `error.may_have_committed`) is NOT
retried blindly: it may have committed.

Run it against the local cluster (`sixfold up`, or `sixfold demo` left one running):

    python tools/examples/bank_transfer.py   # the cluster in $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster
    python tools/examples/bank_transfer.py --state-dir DIR --transfers 50
    python tools/examples/bank_transfer.py --address 127.0.0.1:PORT

It connects by endpoint: `cluster` (the writer), resolved through the local cluster's control plane.
If the writer dies mid-run, the transfer in flight fails with UNAVAILABLE (not committed, or with an
outcome the script checks), the retry resolves the endpoint again and reaches the new writer once a
reader has been promoted (`sixfold up --replicas 1`, then `sixfold kill compute` while it runs).

It prints each transfer and ends with the total balance, which transfers never change (exit 1 if it
changed). The tables are `example_accounts` and `example_transfers`, kept between runs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc

from sixfold.compute.endpoint_client import Endpoint
from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.storage.security import transport
from sixfold.tools.cluster import Cluster
from sixfold.tools.launcher import default_state_dir

ACCOUNTS = ["ann", "bo", "cy", "di", "ed"]
OPENING_BALANCE = 100
ATTEMPTS_MAX = 8
RETRY_CODES = (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE)  # not committed: safe to run again
T = TypeVar("T")


def with_retries(action: Callable[..., T], *args: object) -> T:
    """`action(*args)`; again after a short backoff while it fails with a status that means "not committed"."""
    for attempt in range(1, ATTEMPTS_MAX + 1):
        try:
            return action(*args)
        except SqlError as error:
            if error.code not in RETRY_CODES or error.may_have_committed or attempt == ATTEMPTS_MAX:
                raise
            print(f"  retrying after {error.code.name}: {error.details}")
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def open_bank(db: SqlClient) -> None:
    """Create the tables and the accounts unless an earlier run did (one transaction)."""
    db.run_transaction(
        [
            "CREATE TABLE IF NOT EXISTS example_accounts("
            "id INTEGER PRIMARY KEY, owner TEXT NOT NULL UNIQUE, balance INTEGER NOT NULL CHECK (balance >= 0))",
            "CREATE TABLE IF NOT EXISTS example_transfers("
            "id INTEGER PRIMARY KEY, src TEXT NOT NULL, dst TEXT NOT NULL, amount INTEGER NOT NULL)",
            *[
                ("INSERT OR IGNORE INTO example_accounts(owner, balance) VALUES (?, ?)", (owner, OPENING_BALANCE))
                for owner in ACCOUNTS
            ],
        ]
    )


def transfer(db: SqlClient, src: str, dst: str, amount: int) -> bool:
    """Move `amount` from `src` to `dst` in one interactive transaction; False if `src` has too little."""
    with db.transaction() as txn:  # commits when the block ends, rolls back if it raises
        (balance,) = txn.execute("SELECT balance FROM example_accounts WHERE owner = ?", [src]).rows[0]
        assert isinstance(balance, int)
        if balance < amount:
            txn.rollback()
            return False
        txn.execute("UPDATE example_accounts SET balance = balance - ? WHERE owner = ?", [amount, src])
        txn.execute("UPDATE example_accounts SET balance = balance + ? WHERE owner = ?", [amount, dst])
        txn.execute("INSERT INTO example_transfers(src, dst, amount) VALUES (?, ?, ?)", [src, dst, amount])
    return True


def total_balance(db: SqlClient) -> tuple[int, int]:
    """(the sum of the balances, the read point it was read at), from one read-only transaction."""
    with db.transaction(read_only=True) as snapshot:
        (total,) = snapshot.execute("SELECT sum(balance) FROM example_accounts").rows[0]
    assert isinstance(total, int)
    return total, snapshot.read_point


def compute_target(args: argparse.Namespace) -> str | Endpoint:
    """--address, else the endpoint (--endpoint, default `cluster`: the writer) of the local cluster in
    --state-dir, which the client resolves through its control plane (and resolves again after a failover)."""
    if args.address:
        transport.use_cluster_client(args.state_dir or default_state_dir())  # its `cli` certificate, if TLS
        return str(args.address)
    return Endpoint(Cluster(args.state_dir or default_state_dir()).control_plane_address(), args.endpoint)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--endpoint", default="cluster", help="the endpoint to connect to: cluster (default), reader or a custom one"
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="a compute instance's address instead of an endpoint (a TLS cluster's certificate: from --state-dir)",
    )
    parser.add_argument(
        "--state-dir", type=Path, help="the local cluster (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster)"
    )
    parser.add_argument("--volume", default="vol0", help="the volume whose database to use (default: vol0)")
    parser.add_argument("--transfers", type=int, default=10, help="how many transfers (default: 10)")
    args = parser.parse_args()
    rng = random.Random()
    with SqlClient(compute_target(args), volume_id=args.volume) as db:
        with_retries(open_bank, db)
        before, _ = total_balance(db)
        print(f"{len(ACCOUNTS)} accounts, total balance {before}")
        for number in range(1, args.transfers + 1):
            src, dst = rng.sample(ACCOUNTS, 2)
            amount = rng.randint(1, OPENING_BALANCE)
            done = with_retries(transfer, db, src, dst, amount)
            print(
                f"transfer {number}: {amount} from {src} to {dst}: {'done' if done else 'declined, not enough money'}"
            )
        after, read_point = total_balance(db)
        balances = db.execute("SELECT owner, balance FROM example_accounts ORDER BY owner").rows
    print("balances: " + ", ".join(" ".join(map(str, row)) for row in balances))
    verdict = "conserved" if after == before else "CHANGED"
    print(f"total balance: {after} (before: {before}, read at VDL {read_point}): {verdict}")
    return 0 if after == before else 1


if __name__ == "__main__":
    sys.exit(main())
