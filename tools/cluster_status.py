"""What `sixfold status` reports: per process its state, health and details (segments, nodes, volumes),
and the sentence that replaces the details when they cannot be read.

Pure values and rules; tools/cluster_probes.py asks the processes. The rules:
1. A running process is asked what its DETAILS column shows: a storage node its segments, the
   control plane its nodes and volumes, the compute node its volumes (which it asks the control
   plane for). A stopped or dead process is not asked (its state says why), nor a paused one (it
   would only time out).
2. A paused process's details are "<what> unknown while paused", with the command that resumes it.
3. A process that does not answer (its health check finds nobody, or the call runs out of time)
   gets "<who> not answering at <address> — <what> unknown"; one that answers with an error gets
   "<who> at <address>: <its sentence> — <what> unknown". Never a traceback or a raw gRPC repr.
4. The compute node's volumes need the control plane: while the control plane does not answer,
   the compute node is not asked for them, and its details are "control plane not answering at
   <address> — volumes unknown".
5. The compute instances (the writer and its read replicas: role, generation, lag) come from the
   control plane's ListComputeInstances. While it does not answer, each running instance is asked
   itself (GetInstanceStatus) and `instances_note` says so: "control plane not answering at
   <address> — roles as each instance reports them".
6. A cluster started with `--insecure` (no TLS) is marked `insecure`, and `up` and `status` print
   `INSECURE_WARNING` on stderr every time they show it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sixfold.tools.cluster_layout import (
    COMPUTE,
    CONTROL_PLANE,
    KMS,
    PAUSED,
    RUNNING,
    STORAGE_NODE,
    ProcessRecord,
    label,
)

# What each role's DETAILS column shows (rule 1).
DETAILS_OF_ROLE = {STORAGE_NODE: "segments", CONTROL_PLANE: "nodes and volumes", COMPUTE: "volumes", KMS: "keys"}
UNREACHABLE = "unreachable"  # what the health check reports when nobody answers

_INSECURE_LINE = "WARNING: INSECURE CLUSTER: no TLS, no authentication, no encryption at rest"
_INSECURE_LINE_2 = "any local process can call any RPC -- for throwaway local use only"
_WIDTH = max(len(_INSECURE_LINE), len(_INSECURE_LINE_2))
# Rule 6: boxed, so it is not missed among the other lines.
INSECURE_WARNING = "\n".join(
    ["*" * (_WIDTH + 4), f"* {_INSECURE_LINE:<{_WIDTH}} *", f"* {_INSECURE_LINE_2:<{_WIDTH}} *", "*" * (_WIDTH + 4)]
)


@dataclass
class SegmentInfo:
    segment_id: str
    volume_id: str
    pg_index: int
    scl: int
    highest_lsn: int
    record_count: int
    records_repaired: int = 0  # pulled from peers by gossip since the node started
    records_quarantined: int = 0  # found bad by scrubbing since the node started
    versions_quarantined: int = 0
    scrub_passes: int = 0
    retention_horizon_lsn: int = 0  # GC floor: reads below it are refused
    versions_coalesced: int = 0
    records_collected: int = 0  # removed by GC
    versions_collected: int = 0
    pages_hydrated: int = 0  # copied from a peer's page versions
    bytes_hydrated: int = 0
    whole: bool = True  # holds every record it may have acknowledged (storage/segment.py)
    rebuilding: bool = False  # created again to replace a lost copy
    chain_gaps: int = 0
    metadata_repaired: int = 0

    @property
    def label(self) -> str:
        return f"{self.volume_id}/pg-{self.pg_index:05d}"


@dataclass
class NodeHealthInfo:
    """One node as the control plane sees it."""

    node_id: str
    az: str
    address: str
    health: str  # "healthy" / "degraded" / "unhealthy" / "unspecified"
    last_heartbeat_age_ms: int
    segment_count: int
    condition: str = "ok"  # the node's disk: ok / full / io_error / failed
    condition_detail: str = ""
    segments_missing: list[str] = field(default_factory=list)  # lost copies (created again by the control plane)
    segments_rebuilding: list[str] = field(default_factory=list)  # held, not whole yet


@dataclass
class ChangeInfo:
    """A segment replacement in flight, as the control plane reports it."""

    volume_id: str
    pg_index: int
    membership_epoch: int
    old_node_id: str
    new_node_id: str
    target_lsn: int | None  # None until measured
    new_segment_scl: int  # hydration progress

    def describe(self) -> str:
        where = f"{self.volume_id}/pg-{self.pg_index:05d} {self.old_node_id}->{self.new_node_id}"
        if self.target_lsn is None:
            return f"{where} (epoch {self.membership_epoch}, measuring target)"
        percent = min(100.0, 100.0 * self.new_segment_scl / self.target_lsn) if self.target_lsn else 100.0
        return f"{where} hydrated {self.new_segment_scl}/{self.target_lsn} ({percent:.0f}%)"


@dataclass
class VolumeInfo:
    """One volume as the compute node reports it."""

    volume_id: str
    vdl: int
    vcl: int
    volume_epoch: int
    fenced: bool


@dataclass
class VolumeLagInfo:
    """How far one compute instance is behind the writer on one volume (0 on the writer)."""

    volume_id: str
    applied_vdl: int
    lag_lsns: int
    lag_ms_p50: float
    lag_ms_p99: float


@dataclass
class InstanceInfo:
    """One compute instance of the cluster (the writer or a reader), as the control plane lists it, or, while
    the control plane does not answer, as the instance itself reports it (`source`)."""

    instance_id: str
    address: str
    role: str  # "writer" / "reader" / "changing" / "unknown"
    alive: bool
    generation: int
    failover_priority: int
    last_heartbeat_age_ms: int | None  # None: not from the control plane
    volumes: list[VolumeLagInfo] = field(default_factory=list)
    source: str = "control plane"  # or "instance"


@dataclass
class ProcessStatus:
    name: str
    role: str
    az: str
    spare: bool
    address: str
    pid: int | None
    state: str  # RUNNING / PAUSED / STOPPED / DEAD
    health: str  # "SERVING", "NOT_SERVING", "unreachable", or "-" when not asked
    log_file: str
    data_dir: str
    error: str = ""  # why DETAILS are unknown (a sentence: rules 2-4), if they are
    segments: list[SegmentInfo] = field(default_factory=list)  # storage nodes
    disk: str = ""  # storage nodes: ok / full / io_error / failed
    disk_detail: str = ""
    lost_segments: list[str] = field(default_factory=list)  # storage nodes: metadata not trusted at start
    nodes: list[NodeHealthInfo] = field(default_factory=list)  # control plane
    volume_count: int | None = None  # control plane
    changes: list[ChangeInfo] = field(default_factory=list)  # control plane: replacements in flight
    volumes: list[VolumeInfo] = field(default_factory=list)  # compute node


@dataclass
class ClusterStatus:
    state_dir: str
    processes: list[ProcessStatus]
    instances: list[InstanceInfo] = field(default_factory=list)  # the compute instances (rule 5)
    writer_id: str = ""
    generation: int = 0
    promoting_id: str = ""  # set while a failover is under way
    instances_note: str = ""  # a sentence when the control plane's view of them is unknown (rule 5)
    insecure: bool = False  # started with --insecure: plaintext, no certificates (rule 6)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def by_name(self, name: str) -> ProcessStatus:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)


@dataclass
class UpResult:
    started: list[str]  # names started by this call, in order
    already_running: bool  # True when every process was already running; nothing was done


# --- rules 2-4: the sentences -------------------------------------------------------------


def paused_sentence(record: ProcessRecord) -> str:
    """Rule 2."""
    return f"{DETAILS_OF_ROLE[record.role]} unknown while paused (`sixfold resume {record.name}`)"


def not_answering_sentence(record: ProcessRecord, what: str = "") -> str:
    """Rule 3 (and 4, naming the control plane): nobody answers at the record's address."""
    return f"{_who(record)} not answering at {record.address} — {what or DETAILS_OF_ROLE[record.role]} unknown"


def refused_sentence(record: ProcessRecord, code_name: str, details: str) -> str:
    """Rule 3: the process answered the call with an error."""
    return f"{_who(record)} at {record.address}: {details or code_name} — {DETAILS_OF_ROLE[record.role]} unknown"


def _who(record: ProcessRecord) -> str:
    return "control plane" if record.role == CONTROL_PLANE else label(record)


def control_plane_answers(status: ProcessStatus) -> bool:
    """Rule 4: whether the control plane's own status shows it answering."""
    return status.state == RUNNING and status.health == "SERVING" and not status.error


def needs_the_control_plane(record: ProcessRecord) -> bool:
    """Rule 4: the compute node's details come from the control plane too."""
    return record.role == COMPUTE


def not_asked(record: ProcessRecord, state: str) -> str:
    """Rule 1-2: the details sentence of a process that is not asked, "" when its state says enough."""
    return paused_sentence(record) if state == PAUSED else ""
