"""The control plane's limits and the validation of what callers send it (rules 1, 5 and 8 of
`storage.control_plane`): sizes, counts, name patterns, and the sentences that refuse them.

Pure: values in, values (or an exception saying what to do) out. Every limit is used only
inside this module, so a test that lowers one patches it here.
"""

from __future__ import annotations

import re

from sixfold.storage.errors import InvalidRequest, StorageError

KIB = 2**10
MIB = 2**20
GIB = 2**30
TIB = 2**40

PAGE_SIZE_DEFAULT = 4096
PAGE_SIZE_MIN = 512
PAGE_SIZE_MAX = 65536
SEGMENT_SIZE_BYTES_DEFAULT = 10 * GIB
VOLUME_BYTES_MAX = 128 * TIB
# Bounds the state file and the geometry message; 128 TiB / 10 GiB = 13,107 PGs fits.
PG_COUNT_MAX = 65536
HEARTBEAT_TIMEOUT_MS_DEFAULT = 3000
FAILURE_TIMEOUT_MS_DEFAULT = 10_000
# Bound the registry and the state file rewritten after every change.
NODE_COUNT_MAX = 1024
VOLUME_COUNT_MAX = 4096

VOLUME_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# A snapshot's internal volume id is this prefix and its name: no volume id matches VOLUME_ID_PATTERN so.
SNAPSHOT_ID_PREFIX = "@"
# A timeline a backtrack left (storage/control_plane_history.py) keeps its record under `NAME~SERIAL`,
# SERIAL being its segment ids' serial: no volume id matches VOLUME_ID_PATTERN so.
TIMELINE_ID_SEPARATOR = "~"
TIMELINE_ID_PATTERN = re.compile(r"([a-z0-9][a-z0-9-]{0,62})~(0|[1-9][0-9]{0,18})")
# How far back a backtrack may go (seconds of wall-clock time): the default and the most a volume may ask.
BACKTRACK_WINDOW_S_DEFAULT = 24 * 3600
BACKTRACK_WINDOW_S_MAX = 366 * 24 * 3600
# Node ids and AZ names: printable, no spaces or slashes (they appear in paths and logs).
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
AZ_PATTERN = NODE_ID_PATTERN
ADDRESS_BYTES_MAX = 255


class UnknownNode(StorageError):
    """A heartbeat from a node the control plane has no record of."""

    status_code_name = "NOT_FOUND"


class RegistryFull(StorageError):
    """NODE_COUNT_MAX nodes or VOLUME_COUNT_MAX volumes are already recorded."""

    status_code_name = "RESOURCE_EXHAUSTED"


class VolumeDeleted(StorageError):
    """The volume was deleted; it is kept only because its clones still read its data."""

    status_code_name = "FAILED_PRECONDITION"


class SnapshotInUse(StorageError):
    """A snapshot that volumes restored from it still read through: it cannot be deleted yet."""

    status_code_name = "FAILED_PRECONDITION"


class CommitNotFound(StorageError):
    """No commit of the volume lies at or before the time asked (it has none kept that old)."""

    status_code_name = "NOT_FOUND"


def format_bytes(n: int) -> str:
    for unit, size in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------
# Volumes (rules 5 and 8)


def validate_volume_id(volume_id: str) -> None:
    if not VOLUME_ID_PATTERN.fullmatch(volume_id):
        raise InvalidRequest(
            f"volume id {volume_id!r} is not valid: use 1 to 63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )


def validate_snapshot_name(snapshot_name: str) -> None:
    if not VOLUME_ID_PATTERN.fullmatch(snapshot_name):
        raise InvalidRequest(
            f"snapshot name {snapshot_name!r} is not valid: use 1 to 63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )


def validate_stored_volume_id(volume_id: str) -> None:
    """A volume id in the state file: a user's, a snapshot's internal `@NAME` or a left timeline's `NAME~SERIAL`."""
    if volume_id.startswith(SNAPSHOT_ID_PREFIX):
        validate_snapshot_name(volume_id[len(SNAPSHOT_ID_PREFIX) :])
    elif TIMELINE_ID_SEPARATOR in volume_id:
        if not TIMELINE_ID_PATTERN.fullmatch(volume_id):
            raise InvalidRequest(f"timeline id {volume_id!r} is not valid: NAME~SERIAL")
    else:
        validate_volume_id(volume_id)


def timeline_id(name: str, serial: int) -> str:
    """The internal id of volume `name`'s timeline whose segment ids have serial `serial`, once left."""
    return f"{name}{TIMELINE_ID_SEPARATOR}{serial}"


def is_timeline_id(volume_id: str) -> bool:
    return TIMELINE_ID_SEPARATOR in volume_id


def timeline_name(volume_id: str) -> str:
    """The volume name a timeline id belongs to (the id itself for any other volume id)."""
    return volume_id.partition(TIMELINE_ID_SEPARATOR)[0]


def hidden_timeline_sentence(volume_id: str) -> str:
    name = timeline_name(volume_id)
    return (
        f"{volume_id} is a timeline volume {name} left by a backtrack, not a volume; "
        f"`sixfold volume history {name}` shows it, and a backtrack to a point of it brings it back"
    )


def resolve_backtrack_window(backtrack_window_s: int) -> int:
    """0 means the default (24 h); anything else at most BACKTRACK_WINDOW_S_MAX."""
    if backtrack_window_s == 0:
        return BACKTRACK_WINDOW_S_DEFAULT
    if not 0 < backtrack_window_s <= BACKTRACK_WINDOW_S_MAX:
        raise InvalidRequest(
            f"backtrack window {backtrack_window_s} s is not valid: use 1 s to {BACKTRACK_WINDOW_S_MAX} s "
            f"({BACKTRACK_WINDOW_S_MAX // 86400} days), or 0 for 24 h"
        )
    return backtrack_window_s


def resolve_page_size(page_size: int) -> int:
    """0 means the default; anything else must be a power of two in range."""
    if page_size == 0:
        return PAGE_SIZE_DEFAULT
    if not (PAGE_SIZE_MIN <= page_size <= PAGE_SIZE_MAX) or page_size & (page_size - 1):
        raise InvalidRequest(
            f"page size {page_size} is not valid: use a power of two from {PAGE_SIZE_MIN} to {PAGE_SIZE_MAX} "
            "(or 0 for 4096)"
        )
    return page_size


def resolve_segment_size(segment_size_bytes: int, page_size: int) -> int:
    """0 means the default; anything else must be a positive multiple of the page size."""
    if segment_size_bytes == 0:
        return SEGMENT_SIZE_BYTES_DEFAULT
    if segment_size_bytes < 0 or segment_size_bytes % page_size:
        raise InvalidRequest(
            f"segment size {segment_size_bytes} bytes is not a multiple of the page size {page_size}; "
            "use a positive multiple (or 0 for 10 GiB)"
        )
    if segment_size_bytes > VOLUME_BYTES_MAX:
        raise InvalidRequest(
            f"segment size {format_bytes(segment_size_bytes)} exceeds the volume limit of "
            f"{format_bytes(VOLUME_BYTES_MAX)}"
        )
    return segment_size_bytes


def pg_count_max(segment_size_bytes: int) -> int:
    """Rule 8: the most PGs a volume of this segment size may have."""
    return min(PG_COUNT_MAX, VOLUME_BYTES_MAX // segment_size_bytes)


def volume_full_sentence(volume_id: str, segment_size_bytes: int) -> str:
    if pg_count_max(segment_size_bytes) == PG_COUNT_MAX and PG_COUNT_MAX * segment_size_bytes < VOLUME_BYTES_MAX:
        return (
            f"volume {volume_id} is full: {PG_COUNT_MAX} protection groups of "
            f"{format_bytes(segment_size_bytes)}, the most a volume may have"
        )
    return f"volume {volume_id} is full: {format_bytes(VOLUME_BYTES_MAX)}"


def check_volume_room(volume_id: str, volume_count: int) -> None:
    """Rule 8: `RegistryFull` when `volume_count` volumes already fill the registry."""
    if volume_count >= VOLUME_COUNT_MAX:
        raise RegistryFull(f"cannot create volume {volume_id}: {VOLUME_COUNT_MAX} volumes exist, the limit")


# ---------------------------------------------------------------------------
# Nodes (rules 1 and 8)


def check_node_room(node_id: str, node_count: int) -> None:
    """Rule 8: `RegistryFull` when `node_count` nodes already fill the registry."""
    if node_count >= NODE_COUNT_MAX:
        raise RegistryFull(f"cannot register node {node_id}: {NODE_COUNT_MAX} nodes are registered, the limit")


def validate_node_fields(node_id: str, az: str, address: str) -> None:
    if not NODE_ID_PATTERN.fullmatch(node_id):
        raise InvalidRequest(
            f"node id {node_id!r} is not valid: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not AZ_PATTERN.fullmatch(az):
        raise InvalidRequest(f"AZ {az!r} of node {node_id} is not valid: use 1 to 63 letters, digits, '.', '_' or '-'")
    validate_address(node_id, address)


def validate_address(node_id: str, address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or len(address) > ADDRESS_BYTES_MAX:
        raise InvalidRequest(f"address {address!r} of node {node_id} is not valid: use HOST:PORT")
