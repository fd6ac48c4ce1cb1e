"""The compute cluster's state file format (`cluster.json`, beside the control plane's own
`control_plane.json`): what of storage/cluster_state.py survives a control plane restart, as plain
JSON-able dicts, and back. Heard-times, lags and a promotion under way are not persisted (rule 1 of
storage/cluster_state.py): instances come back by heartbeating.

Format (version `STATE_FORMAT_VERSION`):
    {"format_version": 1, "generation": 3, "writer_id": "compute" ("" none),
     "generation_writer_id": the instance made writer (or promoted) at that generation,
     "writer_volume_ids": ["vol0", ...],
     "instances": [{"instance_id", "address", "failover_priority", "reader_only"}, ...],   by id
     "endpoints": [{"name", "instance_ids": [...]}, ...]}                                 by name
"""

from __future__ import annotations

from typing import Any

from sixfold.storage.cluster_limits import (
    RESTART_GRACE_MS,
    WRITER_TIMEOUT_MS,
    validate_address,
    validate_endpoint_name,
    validate_instance_id,
    validate_priority,
    validate_volume_ids,
)
from sixfold.storage.cluster_state import ClusterState, Instance

STATE_FORMAT_VERSION = 1


def cluster_to_dict(state: ClusterState) -> dict[str, Any]:
    return {
        "format_version": STATE_FORMAT_VERSION,
        "generation": state.generation,
        "writer_id": state.writer_id or "",
        "generation_writer_id": state.generation_writer_id,
        "writer_volume_ids": list(state.writer_volume_ids),
        "instances": [
            {
                "instance_id": i.instance_id,
                "address": i.address,
                "failover_priority": i.failover_priority,
                "reader_only": i.reader_only,
            }
            for i in sorted(state.instances.values(), key=lambda i: i.instance_id)
        ],
        "endpoints": [{"name": n, "instance_ids": list(m)} for n, m in sorted(state.endpoints.items())],
    }


def cluster_from_dict(
    data: dict[str, Any],
    started_ms: float,
    writer_timeout_ms: float = WRITER_TIMEOUT_MS,
    restart_grace_ms: float = RESTART_GRACE_MS,
) -> ClusterState:
    if data.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(
            f"cluster state has format version {data.get('format_version')!r}; expected {STATE_FORMAT_VERSION}"
        )
    state = ClusterState(started_ms, writer_timeout_ms, restart_grace_ms, generation=int(data["generation"]))
    for i in data["instances"]:
        instance = Instance(i["instance_id"], i["address"], int(i["failover_priority"]), bool(i["reader_only"]))
        validate_instance_id(instance.instance_id)
        validate_address(instance.instance_id, instance.address)
        validate_priority(instance.instance_id, instance.failover_priority)
        state.instances[instance.instance_id] = instance
    writer_id = str(data.get("writer_id", ""))
    state.writer_id = writer_id if writer_id in state.instances else None
    state.generation_writer_id = str(data.get("generation_writer_id", writer_id))
    state.writer_volume_ids = validate_volume_ids(writer_id or "writer", list(data.get("writer_volume_ids", ())))
    for e in data.get("endpoints", ()):
        validate_endpoint_name(e["name"])
        for member in e["instance_ids"]:
            validate_instance_id(member)
        state.endpoints[e["name"]] = tuple(e["instance_ids"])
    return state
