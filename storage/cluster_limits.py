"""The compute cluster's constants, limits and the validation of what callers send the ClusterService
(storage/cluster_state.py decides with them): instance ids, addresses, tiers, endpoint names, lag reports.

Pure: values in, values (or an exception saying what to do) out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sixfold.storage.errors import InvalidRequest, StorageError

# The writer is gone when nothing was heard from it for this long (compute instances heartbeat every
# HEARTBEAT_INTERVAL_MS, so about seven beats in a row were lost). Readers are live on the same rule.
WRITER_TIMEOUT_MS = 700
WRITER_TIMEOUT_S = WRITER_TIMEOUT_MS / 1000
HEARTBEAT_INTERVAL_MS = 100
# After the control plane starts, instances have not been heard from yet: the writer is not declared
# gone before this much time has passed (its heartbeats come back within a beat or two).
RESTART_GRACE_MS = 3 * WRITER_TIMEOUT_MS
# A manual failover refuses a reader whose lag p99 (or the age of its last word from the writer) is above this.
FAILOVER_LAG_MAX_MS = 2000
FAILOVER_PRIORITY_MAX = 15  # tiers 0..15, as Aurora's
INSTANCE_COUNT_MAX = 64
ENDPOINT_COUNT_MAX = 64
ENDPOINT_MEMBERS_MAX = INSTANCE_COUNT_MAX
VOLUMES_PER_INSTANCE_MAX = 4096
VOLUME_ID_CHARS_MAX = 130  # a user's id, a snapshot's `@NAME` or a timeline's `NAME~SERIAL`
ADDRESS_CHARS_MAX = 255
LAG_MS_MAX = 1e12  # a lag report beyond ~30 years is a broken reporter

INSTANCE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ENDPOINT_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
VOLUME_ID_CHARS = re.compile(r"[A-Za-z0-9@~._-]+")
CLUSTER_ENDPOINT = "cluster"
READER_ENDPOINT = "reader"
RESERVED_ENDPOINTS = (CLUSTER_ENDPOINT, READER_ENDPOINT)
KIND_CUSTOM = "custom"


class UnknownInstance(StorageError):
    status_code_name = "NOT_FOUND"


class UnknownEndpoint(StorageError):
    status_code_name = "NOT_FOUND"


class EndpointExists(StorageError):
    status_code_name = "ALREADY_EXISTS"


class ClusterFull(StorageError):
    """INSTANCE_COUNT_MAX instances or ENDPOINT_COUNT_MAX endpoints are already recorded."""

    status_code_name = "RESOURCE_EXHAUSTED"


class FailoverRefused(StorageError):
    """A failover (or a removal) that the cluster's present state does not allow; nothing changed."""

    status_code_name = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class VolumeLag:
    """One volume as an instance reports it (a reader: how far behind the writer it is)."""

    volume_id: str
    applied_vdl: int = 0
    lag_lsns: int = 0
    lag_ms_p50: float = 0.0
    lag_ms_p99: float = 0.0
    # How long ago the reader last heard from the writer's stream (0: fresh, or not reported).
    last_heard_ms: int = 0


def validate_instance_id(instance_id: str) -> None:
    if not INSTANCE_ID_PATTERN.fullmatch(instance_id):
        raise InvalidRequest(
            f"instance id {instance_id!r} is not valid: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def validate_address(instance_id: str, address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or len(address) > ADDRESS_CHARS_MAX:
        raise InvalidRequest(f"address {address!r} of compute instance {instance_id} is not valid: use HOST:PORT")


def validate_priority(instance_id: str, failover_priority: int) -> None:
    if not 0 <= failover_priority <= FAILOVER_PRIORITY_MAX:
        raise InvalidRequest(
            f"failover priority {failover_priority} of compute instance {instance_id} is out of range: "
            f"use a tier from 0 (promoted first) to {FAILOVER_PRIORITY_MAX}"
        )


def validate_volume_ids(instance_id: str, volume_ids: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if len(volume_ids) > VOLUMES_PER_INSTANCE_MAX:
        raise InvalidRequest(
            f"compute instance {instance_id} reports {len(volume_ids)} volumes; at most {VOLUMES_PER_INSTANCE_MAX}"
        )
    for volume_id in volume_ids:
        if len(volume_id) > VOLUME_ID_CHARS_MAX or not VOLUME_ID_CHARS.fullmatch(volume_id):
            raise InvalidRequest(
                f"compute instance {instance_id} reports a volume id {volume_id[:80]!r} that is not valid"
            )
    return tuple(dict.fromkeys(volume_ids))


def validate_lags(instance_id: str, lags: list[VolumeLag]) -> tuple[VolumeLag, ...]:
    validate_volume_ids(instance_id, [lag.volume_id for lag in lags])
    for lag in lags:
        for value in (lag.lag_ms_p50, lag.lag_ms_p99):
            if not (math.isfinite(value) and 0 <= value <= LAG_MS_MAX):
                raise InvalidRequest(
                    f"compute instance {instance_id} reports a lag of {value!r} ms on volume {lag.volume_id}; "
                    "a lag is a finite number of milliseconds, 0 or more"
                )
    return tuple({lag.volume_id: lag for lag in lags}.values())


def validate_endpoint_name(name: str) -> None:
    if not ENDPOINT_NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            f"endpoint name {name[:80]!r} is not valid: use 1 to 63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )


def validate_new_endpoint(name: str, instance_ids: list[str], known: set[str]) -> tuple[str, ...]:
    """A custom endpoint's members, deduplicated in the order given; refuses what cannot be one."""
    validate_endpoint_name(name)
    if name in RESERVED_ENDPOINTS:
        raise InvalidRequest(
            f"endpoint name {name!r} is reserved: the built-in endpoints are {', '.join(RESERVED_ENDPOINTS)}; "
            "choose another name"
        )
    if not instance_ids:
        raise InvalidRequest(f"endpoint {name} has no instances; name at least one compute instance")
    if len(instance_ids) > ENDPOINT_MEMBERS_MAX:
        raise InvalidRequest(f"endpoint {name} names {len(instance_ids)} instances; at most {ENDPOINT_MEMBERS_MAX}")
    for instance_id in instance_ids:
        validate_instance_id(instance_id)
    unknown = sorted(set(instance_ids) - known)
    if unknown:
        raise InvalidRequest(
            f"endpoint {name} names compute instances the cluster does not have: {', '.join(unknown)}; "
            "`sixfold status` lists the instances"
        )
    return tuple(dict.fromkeys(instance_ids))
