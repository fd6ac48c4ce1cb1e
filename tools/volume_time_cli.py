"""`sixfold volume clone|delete|snapshot|restore`: time travel, through the compute node.

    sixfold volume clone vol0 vol0-copy               # copy-on-write, at vol0's VDL now; no page copied
    sixfold volume clone vol0 vol0-then --at 200345   # at an earlier commit's LSN
    sixfold volume snapshot create vol0 before-upgrade
    sixfold volume snapshot list [vol0] [--json]
    sixfold volume restore before-upgrade vol0-restored
    sixfold volume snapshot delete before-upgrade     # refused while a restored volume reads through it
    sixfold volume delete vol0-copy                   # kept (without a name) while clones read its data

A clone (or restored snapshot) is a volume like any other: `sixfold sql --volume vol0-copy`,
`sixfold volume read vol0-copy 3`. The subcommands are added to `sixfold volume` by tools/volume_cli.py.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime

from sixfold.compute.client import U64_MAX, VolumeClient
from sixfold.compute.v1 import volume_service_pb2 as vpb

EXIT_OK = 0


def _lsn(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an LSN: {text!r} (a whole number, as a write printed it)") from None
    if not 1 <= value <= U64_MAX:
        raise argparse.ArgumentTypeError(f"an LSN is from 1 to {U64_MAX}, got {value}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    """Add the time-travel subcommands of `sixfold volume`; the nested parsers (snapshot's actions), which
    take the connection options too."""
    p = sub.add_parser(
        "clone",
        help="a copy-on-write clone of a volume (no page data copied)",
        description="Create NEW as a copy-on-write clone of SOURCE at its VDL now (or --at an earlier commit's "
        "LSN). Only metadata is written; the clone's pages are read through from SOURCE's copies until it "
        "writes them. Writes to either never show in the other.",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("volume", metavar="NEW")
    p.add_argument("--at", type=_lsn, default=0, metavar="LSN", help="branch at this commit LSN (default: VDL now)")

    p = sub.add_parser(
        "delete",
        help="delete a volume",
        description="Delete a volume and drop its segments. A volume that clones or snapshots still read "
        "through is kept, without a name, until the last of them is deleted.",
    )
    p.add_argument("volume", metavar="NAME")

    p = sub.add_parser(
        "restore",
        help="a new volume from a snapshot",
        description="Create NEW as a copy-on-write clone of SNAPSHOT (no page data copied).",
    )
    p.add_argument("snapshot", metavar="SNAPSHOT")
    p.add_argument("volume", metavar="NEW")

    p = sub.add_parser(
        "snapshot",
        help="named, pinned points of a volume: create, list, delete",
        description="Snapshots: a named point (LSN and time) of a volume that storage keeps; "
        "`sixfold volume restore SNAPSHOT NEW` makes a volume of it.",
    )
    snap = p.add_subparsers(dest="snapshot_command", metavar="ACTION")
    snap.required = True
    s = snap.add_parser("create", help="take a snapshot", description="Take a snapshot of VOLUME named NAME.")
    s.add_argument("volume", metavar="VOLUME")
    s.add_argument("snapshot", metavar="NAME")
    s.add_argument("--at", type=_lsn, default=0, metavar="LSN", help="at this commit LSN (default: VDL now)")
    s = snap.add_parser("list", help="list snapshots", description="List the snapshots (of VOLUME, or all).")
    s.add_argument("volume", metavar="VOLUME", nargs="?", default="")
    s.add_argument("--json", action="store_true", help="print them as JSON")
    s = snap.add_parser(
        "delete",
        help="delete a snapshot",
        description="Delete a snapshot; refused while a volume restored from it still reads through it.",
    )
    s.add_argument("snapshot", metavar="NAME")
    return list(snap.choices.values())


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clone(client: VolumeClient, args: argparse.Namespace) -> int:
    reply = client.clone_volume(args.source, args.volume, args.at)
    c = reply.clone
    print(
        f"cloned {args.source} at LSN {c.branch_lsn} as {c.volume_id}: {c.pg_count} PGs, "
        f"no page data copied ({reply.elapsed_ms:.1f} ms)"
    )
    return EXIT_OK


def _delete(client: VolumeClient, args: argparse.Namespace) -> int:
    reply = client.delete_volume(args.volume)
    if reply.kept_for_clones:
        print(f"deleted volume {args.volume}; its data stays while its clones or snapshots read through it")
    else:
        print(f"deleted volume {args.volume}; segments dropped: {', '.join(reply.volumes_dropped) or args.volume}")
    return EXIT_OK


def _restore(client: VolumeClient, args: argparse.Namespace) -> int:
    v = client.restore_snapshot(args.snapshot, args.volume)
    print(f"restored snapshot {args.snapshot} (LSN {v.branch_lsn}) as volume {v.volume_id}; no page data copied")
    return EXIT_OK


def snapshot_rows(snapshots: list[vpb.Lineage]) -> list[list[str]]:
    return [
        [s.snapshot_name, s.parent_volume_id, str(s.branch_lsn), _when(s.created_at_ms), str(len(s.child_volume_ids))]
        for s in snapshots
    ]


def _snapshot(client: VolumeClient, args: argparse.Namespace) -> int:
    if args.snapshot_command == "create":
        s = client.create_snapshot(args.volume, args.snapshot, args.at)
        print(f"snapshot {s.snapshot_name} of {s.parent_volume_id} at LSN {s.branch_lsn} ({_when(s.created_at_ms)})")
    elif args.snapshot_command == "delete":
        client.delete_snapshot(args.snapshot)
        print(f"deleted snapshot {args.snapshot}")
    else:
        snapshots = client.list_snapshots(args.volume)
        if args.json:
            keys = ["snapshot", "volume", "lsn", "created", "restored_volumes"]
            print(json.dumps([dict(zip(keys, row, strict=True)) for row in snapshot_rows(snapshots)], indent=2))
            return EXIT_OK
        if not snapshots:
            print("(no snapshots)")
            return EXIT_OK
        rows = [["SNAPSHOT", "VOLUME", "LSN", "CREATED", "RESTORED"], *snapshot_rows(snapshots)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


HANDLERS: dict[str, Callable[[VolumeClient, argparse.Namespace], int]] = {
    "clone": _clone,
    "delete": _delete,
    "restore": _restore,
    "snapshot": _snapshot,
}
