"""Pages of a volume, below SQL: create a volume, write byte ranges of two pages as one atomic MTR, and
read them back at a read point.

Shows `sixfold.compute.client.VolumeClient` (compute.v1.VolumeService), the layer the SQL engine is
built on: a write is a list of (page, offset, bytes) patches that commit together, durable when
`write` returns with the MTR's LSN; a read returns every page at one read point (the VDL). It uses a
volume of its own (`--volume`, default `examples-raw`), created on the first run: writing raw bytes into
`vol0` would overwrite pages of the SQL database that lives there.

Run it against the local cluster (`sixfold up`, or `sixfold demo` left one running):

    python tools/examples/raw_pages.py   # the cluster in $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster
    python tools/examples/raw_pages.py --state-dir DIR
    python tools/examples/raw_pages.py --address 127.0.0.1:PORT --volume scratch

It connects by endpoint (`--endpoint`, default `cluster`: the writer, the only instance that serves pages),
resolved through the local cluster's control plane.

The same from the shell: `sixfold volume write|read|status` (see `sixfold volume --help`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.compute.endpoint_client import Endpoint
from sixfold.storage.security import transport
from sixfold.tools.cluster import Cluster
from sixfold.tools.launcher import default_state_dir


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
    parser.add_argument("--volume", default="examples-raw", help="a volume of its own (default: examples-raw)")
    args = parser.parse_args()
    with VolumeClient(compute_target(args)) as client:
        try:
            status = client.create_volume(args.volume)
            print(f"created volume {args.volume} (page size {status.page_size})")
        except VolumeError as error:
            if error.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
            print(f"volume {args.volume} exists already")

        stamp = time.strftime("%H:%M:%S").encode()
        patches = [(3, 0, b"hello at " + stamp), (4, 100, b"world at " + stamp)]
        lsn = client.write(args.volume, patches)  # one MTR: both patches or neither
        print(f"wrote page 3 offset 0 and page 4 offset 100 as one MTR: LSN {lsn}, durable")

        read_point, pages = client.read(args.volume, [3, 4])  # both at the same read point
        print(f"read at VDL {read_point} (>= {lsn}): page 3 starts {pages[3][:17]!r}")
        print(f"  page 4 at offset 100: {pages[4][100:117]!r}, {len(pages[4])} bytes per page")

        status = client.status(args.volume)
        print(f"volume {args.volume}: VDL {status.vdl}, {status.commits} commits, {len(status.protection_groups)} PGs")
    ok = pages[3].startswith(patches[0][2]) and pages[4][100:].startswith(patches[1][2]) and read_point >= lsn
    print("read back what was written" if ok else "READ SOMETHING ELSE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
