"""`sixfold volume clone|delete|snapshot|restore`: time travel, through the compute node.

    sixfold volume clone vol0 vol0-copy               # copy-on-write, at vol0's VDL now; no page copied
    sixfold volume clone vol0 vol0-then --at 200345   # at an earlier commit's LSN
    sixfold volume snapshot create vol0 before-upgrade
    sixfold volume snapshot list [vol0] [--json]
    sixfold volume restore before-upgrade vol0-restored
    sixfold volume snapshot delete before-upgrade     # refused while a restored volume reads through it
    sixfold volume delete vol0-copy                   # kept (without a name) while clones read its data
    sixfold volume clone vol0 vol0-pitr --at-time '2026-12-05 08:30:00'   # point-in-time restore (UTC)
    sixfold volume backtrack vol0 --to 200345         # rewind in place to a commit LSN ...
    sixfold volume backtrack vol0 --to -5m            # ... or to a time (5 minutes ago); forward again too
    sixfold volume history vol0                       # the window, the timelines, the backtracks done

A clone (or restored snapshot) is a volume like any other: `sixfold sql --volume vol0-copy`,
`sixfold volume read vol0-copy 3`. The subcommands are added to `sixfold volume` by tools/volume_cli.py.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sixfold.compute.client import U64_MAX, VolumeClient
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.storage.control_plane_limits import BACKTRACK_WINDOW_S_MAX
from sixfold.tools import volume_key_cli
from sixfold.tools.text_table import table

EXIT_OK = 0
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '5m', '24h', '7d'."""
    match = DURATION.match(text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (a number with s, m, h or d, e.g. 24h)")
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


def window(text: str) -> int:
    seconds = parse_duration(text)
    if not 1 <= seconds <= BACKTRACK_WINDOW_S_MAX:
        raise argparse.ArgumentTypeError(f"a backtrack window is from 1 s to 366 days, got {text!r}")
    return int(seconds)


def parse_time_us(text: str, now: float | None = None) -> int:
    """Microseconds since the Unix epoch from an ISO 8601 time ('2026-12-05 08:30:00', UTC unless it carries an
    offset), 'now', or a time ago ('-5m', '-2h', '-90s')."""
    stripped = text.strip()
    now = time.time() if now is None else now
    if stripped.lower() == "now":
        return int(now * 1_000_000)
    if stripped.startswith("-"):
        return int((now - parse_duration(stripped[1:])) * 1_000_000)
    try:
        when = datetime.fromisoformat(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (an ISO 8601 time such as '2026-12-05 08:30:00' in UTC, 'now', or '-5m')"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.timestamp() <= 0:
        raise argparse.ArgumentTypeError(f"a time after 1970 is needed, got {text!r}")
    return int(when.timestamp() * 1_000_000)


def lsn_or_time(text: str) -> tuple[int, int]:
    """(LSN, 0) for a whole number, else (0, time in microseconds)."""
    digits = text.replace("_", "").replace(",", "").strip()
    if digits.isdigit():
        return _lsn(text), 0
    return 0, parse_time_us(text)


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
    at = p.add_mutually_exclusive_group()
    at.add_argument("--at", type=_lsn, default=0, metavar="LSN", help="branch at this commit LSN (default: VDL now)")
    at.add_argument(
        "--at-time",
        type=parse_time_us,
        default=0,
        metavar="TIME",
        help="branch at the newest commit at or before TIME (ISO 8601, UTC unless it has an offset; or -5m): "
        "a point-in-time restore",
    )

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
    at = s.add_mutually_exclusive_group()
    at.add_argument("--at", type=_lsn, default=0, metavar="LSN", help="at this commit LSN (default: VDL now)")
    at.add_argument("--at-time", type=parse_time_us, default=0, metavar="TIME", help="at the newest commit then")
    s = snap.add_parser("list", help="list snapshots", description="List the snapshots (of VOLUME, or all).")
    s.add_argument("volume", metavar="VOLUME", nargs="?", default="")
    s.add_argument("--json", action="store_true", help="print them as JSON")
    s = snap.add_parser(
        "delete",
        help="delete a snapshot",
        description="Delete a snapshot; refused while a volume restored from it still reads through it.",
    )
    s.add_argument("snapshot", metavar="NAME")

    p = sub.add_parser(
        "backtrack",
        help="rewind a volume in place (or move it forward again) inside its backtrack window",
        description="Move VOLUME, in place and without copying, to a commit: an LSN a write printed, or a time "
        "(the newest commit at or before it). Later writes become invisible but stay stored for the backtrack "
        "window, so a later backtrack can move forward to any point of the old timeline. Open transactions on "
        "the volume are aborted; new writes continue above every LSN the volume ever used.",
    )
    p.add_argument("volume", metavar="VOLUME")
    p.add_argument(
        "--to",
        type=lsn_or_time,
        required=True,
        metavar="LSN|TIME",
        help="a commit LSN, or a time: ISO 8601 ('2026-12-05 08:30:00', UTC unless it has an offset), or '-5m'",
    )
    p = sub.add_parser(
        "history",
        help="a volume's backtrack window, timelines and backtracks",
        description="The backtrack window, every timeline the volume has shown (oldest first) and the backtracks.",
    )
    p.add_argument("volume", metavar="VOLUME")
    p.add_argument("--json", action="store_true", help="print the history as JSON")
    volume_key_cli.add_parser(sub)
    return list(snap.choices.values())


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clone(client: VolumeClient, args: argparse.Namespace) -> int:
    reply = client.clone_volume(args.source, args.volume, args.at, at_time_us=args.at_time)
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
        s = client.create_snapshot(args.volume, args.snapshot, args.at, at_time_us=args.at_time)
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
        print(table(["SNAPSHOT", "VOLUME", "LSN", "CREATED", "RESTORED"], snapshot_rows(snapshots)))
    return EXIT_OK


def _when_us(us: int) -> str:
    return _when(us // 1000) if us else "-"


def _backtrack(client: VolumeClient, args: argparse.Namespace) -> int:
    to_lsn, to_time_us = args.to
    reply = client.backtrack(args.volume, to_lsn, to_time_us=to_time_us)
    print(
        f"backtracked {args.volume} from VDL {reply.from_vdl} to LSN {reply.to_lsn} "
        f"(committed {_when_us(reply.to_commit_time_us)}) in {reply.elapsed_ms:.1f} ms; "
        f"timeline {reply.timeline_id}; `sixfold volume history {args.volume}` shows the timelines"
    )
    return EXIT_OK


def _history(client: VolumeClient, args: argparse.Namespace) -> int:
    reply = client.volume_history(args.volume)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True), indent=2))
        return EXIT_OK
    print(f"volume {args.volume}: backtrack window {reply.backtrack_window_s / 3600:g} h, VDL {reply.vdl or '-'}")
    rows = [["TIMELINE", "PARENT", "BRANCH LSN", "OWN LSNS ABOVE", "END LSN", "FROM", "UNTIL"]]
    for t in reply.timelines:
        rows.append(
            [
                t.timeline_id,
                t.parent_timeline_id or "-",
                str(t.branch_lsn or "-"),
                str(t.lsn_floor),
                str(t.end_lsn or "current"),
                _when(t.activated_at_ms),
                _when(t.abandoned_at_ms) if t.abandoned_at_ms else "now",
            ]
        )
    print(table(rows[0], rows[1:]))
    if reply.backtracks:
        print()
        rows = [["WHEN", "FROM TIMELINE", "FROM VDL", "TO TIMELINE", "TO LSN", "COMMITTED"]]
        rows += [
            [
                _when(b.at_ms),
                b.from_timeline_id,
                str(b.from_vdl),
                b.to_timeline_id,
                str(b.to_lsn),
                _when_us(b.to_commit_time_us),
            ]
            for b in reply.backtracks
        ]
        print(table(rows[0], rows[1:]))
    return EXIT_OK


HANDLERS: dict[str, Callable[[VolumeClient, argparse.Namespace], int]] = {
    "backtrack": _backtrack,
    "history": _history,
    "clone": _clone,
    "delete": _delete,
    "restore": _restore,
    "snapshot": _snapshot,
    "rotate-key": volume_key_cli.rotate_key,
}


def branched_from(volume_id: str, parent: str, branch_lsn: int) -> str:
    """A sentence for what a volume branched from (its VolumeStatus parent_volume_id, branch_lsn)."""
    if parent.startswith("@"):
        return f"restored from snapshot {parent[1:]} (LSN {branch_lsn}); pages it never wrote are read there"
    if parent.partition("~")[0] == volume_id:
        return (
            f"backtracked: shows its earlier timeline up to LSN {branch_lsn}, then its own writes "
            f"(`sixfold volume history {volume_id}`)"
        )
    return f"clone of {parent} at LSN {branch_lsn}; pages it never wrote are read from {parent} there"
