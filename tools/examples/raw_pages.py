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

The same from the shell: `sixfold volume write|read|status` (see `sixfold volume --help`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.tools.cluster import Cluster
from sixfold.tools.launcher import default_state_dir


def compute_address(args: argparse.Namespace) -> str:
    """--address, else the compute node of the local cluster in --state-dir."""
    return str(args.address or Cluster(args.state_dir or default_state_dir()).compute_address())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--address", metavar="HOST:PORT", help="the compute node (default: the local cluster's)")
    parser.add_argument(
        "--state-dir", type=Path, help="the local cluster (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster)"
    )
    parser.add_argument("--volume", default="examples-raw", help="a volume of its own (default: examples-raw)")
    args = parser.parse_args()
    with VolumeClient(compute_address(args)) as client:
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
