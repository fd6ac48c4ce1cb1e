"""The control plane's state file format (`control_plane.json`): what survives a restart, as plain
JSON-able dicts, and back.

Pure: dicts in, values out (the control plane server writes and reads the file). Heartbeat
times, copy reports and hydration progress are not persisted (rules 2 and 14 of
`storage.control_plane`).

Format (version `STATE_FORMAT_VERSION`):
    {"format_version": 1,
     "nodes":   [{"node_id", "az", "address"}, ...],                       sorted by node id
     "volumes": [{"volume_id", "page_size", "segment_size_bytes", "geometry_epoch",
                  "serial", "parent_volume_id", "branch_lsn", "kind", "created_at_ms", "deleted",
                  "snapshot_name", "backtrack_window_s", "lsn_floor", "activated_at_ms",
                  "abandoned_at_ms", "end_lsn", "end_tails": [per PG], "lsn_high",
                  "backtracks": [{"at_ms", "from_serial", "from_vdl", "to_serial", "to_lsn",
                                  "to_commit_time_us"}],
                  "protection_groups": [{"pg_index", "first_page", "page_count", "membership_epoch",
                                         "node_ids": [six ids], "changes": [{"old_node_id",
                                         "new_node_id", "target_lsn" (null until measured)}],
                                         "has_parent", "parent_read_lsn", "parent_node_ids"}]}],
                                                                            sorted by volume id
     "orphans": [{"node_id", "segment_id"}, ...],                          in the order recorded
     "next_serial": 1}
The time-travel keys (a volume's from "serial" to "snapshot_name", a PG's "has_parent" to
"parent_node_ids", and "next_serial"; storage/control_plane_lineage.py) came later: a file without
them loads with the values of a root volume (no parent, serial 0, kind volume, created at 0). So did
the timeline keys (from "backtrack_window_s" on; storage/control_plane_history.py): without them a
volume has the default window, owns the LSNs above its branch LSN, was activated when it was created
and has never been left nor backtracked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sixfold.storage.control_plane_limits import (
    BACKTRACK_WINDOW_S_DEFAULT,
    resolve_backtrack_window,
    resolve_page_size,
    resolve_segment_size,
    timeline_id,
    timeline_name,
    validate_node_fields,
    validate_stored_volume_id,
)
from sixfold.storage.control_plane_values import (
    KIND_SNAPSHOT,
    KIND_VOLUME,
    BacktrackEntry,
    MembershipChange,
    Node,
    Orphan,
    ProtectionGroup,
    Volume,
)

STATE_FORMAT_VERSION = 1
NEXT_SERIAL_DEFAULT = 1  # of a file written before serials existed: no volume had one


def state_to_dict(
    nodes: Iterable[Node], volumes: Iterable[Volume], orphans: Iterable[Orphan], next_serial: int
) -> dict[str, Any]:
    return {
        "format_version": STATE_FORMAT_VERSION,
        "nodes": [
            {"node_id": n.node_id, "az": n.az, "address": n.address} for n in sorted(nodes, key=lambda n: n.node_id)
        ],
        "volumes": [volume_to_dict(v) for v in sorted(volumes, key=lambda v: v.volume_id)],
        "orphans": [{"node_id": o.node_id, "segment_id": o.segment_id} for o in orphans],
        "next_serial": next_serial,
    }


def check_format_version(data: dict[str, Any]) -> None:
    version = data.get("format_version")
    if version != STATE_FORMAT_VERSION:
        raise ValueError(f"control plane state has format version {version!r}; expected {STATE_FORMAT_VERSION}")


def node_from_dict(n: dict[str, Any]) -> Node:
    validate_node_fields(n["node_id"], n["az"], n["address"])
    return Node(n["node_id"], n["az"], n["address"])


def volume_from_dict(v: dict[str, Any]) -> Volume:
    """The volume without its PGs (the caller adds them one by one, checking each)."""
    volume = Volume(
        v["volume_id"],
        int(v["page_size"]),
        int(v["segment_size_bytes"]),
        int(v["geometry_epoch"]),
        serial=int(v.get("serial", 0)),
        parent_volume_id=v.get("parent_volume_id", ""),
        branch_lsn=int(v.get("branch_lsn", 0)),
        kind=v.get("kind", KIND_VOLUME),
        created_at_ms=int(v.get("created_at_ms", 0)),
        deleted=bool(v.get("deleted", False)),
        snapshot_name=v.get("snapshot_name", ""),
        backtrack_window_s=resolve_backtrack_window(int(v.get("backtrack_window_s", BACKTRACK_WINDOW_S_DEFAULT))),
        lsn_floor=int(v.get("lsn_floor", v.get("branch_lsn", 0))),
        activated_at_ms=int(v.get("activated_at_ms", v.get("created_at_ms", 0))),
        abandoned_at_ms=int(v.get("abandoned_at_ms", 0)),
        end_lsn=int(v.get("end_lsn", 0)),
        end_tails=tuple(int(t) for t in v.get("end_tails", ())),
        lsn_high=int(v.get("lsn_high", 0)),
        backtracks=[BacktrackEntry(**{k: int(x) for k, x in b.items()}) for b in v.get("backtracks", ())],
    )
    validate_stored_volume_id(volume.volume_id)
    resolve_segment_size(volume.segment_size_bytes, resolve_page_size(volume.page_size))
    assert volume.kind in (KIND_VOLUME, KIND_SNAPSHOT) and volume.serial >= 0, v
    assert (volume.kind == KIND_SNAPSHOT) == bool(volume.snapshot_name), v
    assert not volume.left or volume.volume_id == timeline_id(timeline_name(volume.volume_id), volume.serial), v
    return volume


def next_serial_from_dict(data: dict[str, Any]) -> int:
    return int(data.get("next_serial", NEXT_SERIAL_DEFAULT))


def orphans_from_dict(data: dict[str, Any]) -> list[Orphan]:
    return [Orphan(o["node_id"], o["segment_id"]) for o in data.get("orphans", [])]


def volume_to_dict(volume: Volume) -> dict[str, Any]:
    return {
        "volume_id": volume.volume_id,
        "page_size": volume.page_size,
        "segment_size_bytes": volume.segment_size_bytes,
        "geometry_epoch": volume.geometry_epoch,
        "serial": volume.serial,
        "parent_volume_id": volume.parent_volume_id,
        "branch_lsn": volume.branch_lsn,
        "kind": volume.kind,
        "created_at_ms": volume.created_at_ms,
        "deleted": volume.deleted,
        "snapshot_name": volume.snapshot_name,
        "backtrack_window_s": volume.backtrack_window_s,
        "lsn_floor": volume.lsn_floor,
        "activated_at_ms": volume.activated_at_ms,
        "abandoned_at_ms": volume.abandoned_at_ms,
        "end_lsn": volume.end_lsn,
        "end_tails": list(volume.end_tails),
        "lsn_high": volume.lsn_high,
        "backtracks": [
            {
                "at_ms": b.at_ms,
                "from_serial": b.from_serial,
                "from_vdl": b.from_vdl,
                "to_serial": b.to_serial,
                "to_lsn": b.to_lsn,
                "to_commit_time_us": b.to_commit_time_us,
            }
            for b in volume.backtracks
        ],
        "protection_groups": [
            {
                "pg_index": pg.pg_index,
                "first_page": pg.first_page,
                "page_count": pg.page_count,
                "membership_epoch": pg.membership_epoch,
                "node_ids": list(pg.node_ids),
                "changes": [
                    {"old_node_id": c.old_node_id, "new_node_id": c.new_node_id, "target_lsn": c.target_lsn}
                    for c in pg.changes
                ],
                "has_parent": pg.has_parent,
                "parent_read_lsn": pg.parent_read_lsn,
                "parent_node_ids": list(pg.parent_node_ids),
            }
            for pg in volume.protection_groups
        ],
    }


def pg_from_dict(pg: dict[str, Any]) -> ProtectionGroup:
    return ProtectionGroup(
        int(pg["pg_index"]),
        int(pg["first_page"]),
        int(pg["page_count"]),
        int(pg["membership_epoch"]),
        tuple(pg["node_ids"]),
        tuple(
            MembershipChange(
                c["old_node_id"], c["new_node_id"], None if c["target_lsn"] is None else int(c["target_lsn"])
            )
            for c in pg.get("changes", [])
        ),
        has_parent=bool(pg.get("has_parent", False)),
        parent_read_lsn=int(pg.get("parent_read_lsn", 0)),
        parent_node_ids=tuple(pg.get("parent_node_ids", ())),
    )
