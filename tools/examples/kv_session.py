"""A key-value session through the compute node's KvService: put, get, batch put, prefix scan with
paging, compare-and-set, delete.

Shows the key-value half of `sixfold.compute.sql_client.SqlClient` (the same client as SQL: the keys
live in a table `kv` of the volume's database). Every write returns its commit LSN and is durable when
it returns. Keys and values are bytes; a str is sent as its UTF-8 bytes. Keys order as bytes, so a
prefix is a key range. The script works under one prefix (`--prefix`, default `example:`), which it
empties first and again at the end, so it can run any number of times.

Run it against the local cluster (`sixfold up`, or `sixfold demo` left one running):

    python tools/examples/kv_session.py   # the cluster in $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster
    python tools/examples/kv_session.py --state-dir DIR
    python tools/examples/kv_session.py --address 127.0.0.1:PORT --prefix mine:

It connects by endpoint (`--endpoint`, default `cluster`: the writer), resolved through the local
cluster's control plane; `SqlClient(Endpoint(control_plane, "reader"))` would read on a read replica.

The same keys from the shell: `sixfold kv put|get|del|scan` (see `sixfold kv --help`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sixfold.compute.endpoint_client import Endpoint
from sixfold.compute.sql_client import SqlClient
from sixfold.storage.security import transport
from sixfold.tools.cluster import Cluster
from sixfold.tools.launcher import default_state_dir

SCAN_PAGE = 3  # pairs per scan: small, to show paging


def compute_target(args: argparse.Namespace) -> str | Endpoint:
    """--address, else the endpoint (--endpoint, default `cluster`: the writer) of the local cluster in
    --state-dir, which the client resolves through its control plane (and resolves again after a failover)."""
    if args.address:
        transport.use_cluster_client(args.state_dir or default_state_dir())  # its `cli` certificate, if TLS
        return str(args.address)
    return Endpoint(Cluster(args.state_dir or default_state_dir()).control_plane_address(), args.endpoint)


def delete_prefix(db: SqlClient, prefix: bytes) -> int:
    """Delete every key that starts with `prefix`, a page of keys at a time; how many there were."""
    deleted = 0
    while pairs := db.scan(prefix=prefix, limit=100).pairs:
        for key, _ in pairs:
            deleted += db.delete(key)[0]
    return deleted


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
    parser.add_argument("--volume", default="vol0", help="the volume (default: vol0)")
    parser.add_argument("--prefix", default="example:", help="every key the script uses starts with this")
    args = parser.parse_args()
    p = args.prefix
    with SqlClient(compute_target(args), volume_id=args.volume) as db:
        print(f"cleared {delete_prefix(db, p.encode())} keys left under {p!r} by an earlier run")

        lsn = db.put(f"{p}user:1", "ann")
        print(f"put {p}user:1 = ann (commit LSN {lsn}, durable)")
        lsn = db.batch_put([(f"{p}user:{i}", name) for i, name in [(2, "bo"), (3, "cy"), (4, "di"), (5, "ed")]])
        print(f"batch put {p}user:2..5 in one transaction (commit LSN {lsn})")

        value = db.get(f"{p}user:1")
        print(f"get {p}user:1 -> {value!r}")
        print(f"get {p}user:9 -> {db.get(f'{p}user:9')!r} (absent)")

        start, number = b"", 1
        while True:  # a prefix scan, SCAN_PAGE pairs at a time; the next page starts at `next_start`
            page = db.scan(start=start, prefix=f"{p}user:", limit=SCAN_PAGE)
            names = ", ".join(f"{k.decode()}={v.decode()}" for k, v in page.pairs)
            print(f"scan {p}user: page {number}: {names}" + (" (more follow)" if page.more else ""))
            if not page.more:
                break
            start, number = page.next_start, number + 1

        counter = f"{p}counter"
        outcome = db.cas(counter, expected=None, value="1")  # create only if absent
        print(f"cas {counter}: absent -> 1: swapped={outcome.swapped}")
        outcome = db.cas(counter, expected="1", value="2")
        print(f"cas {counter}: 1 -> 2: swapped={outcome.swapped}")
        outcome = db.cas(counter, expected="1", value="3")  # a stale expectation: nothing changes
        print(f"cas {counter}: 1 -> 3: swapped={outcome.swapped}, current={outcome.current!r}")

        existed, lsn = db.delete(f"{p}user:2")
        print(f"delete {p}user:2: existed={existed} (commit LSN {lsn})")
        existed, lsn = db.delete(f"{p}user:2")
        print(f"delete {p}user:2 again: existed={existed}")

        left = db.scan(prefix=p).pairs
        print(f"{len(left)} keys under {p!r}: " + " ".join(k.decode() for k, _ in left))
        print(f"cleaned up: deleted {delete_prefix(db, p.encode())} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
