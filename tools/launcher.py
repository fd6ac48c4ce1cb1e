"""`sixfold up|status|down|kill|pause|resume|stop|start`: the local cluster from the command line.

Thin wrapper over `tools.cluster.Cluster`; every subcommand takes `--state-dir`
(default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster). The processes are the
control plane, the storage nodes (a1, a2, b1, ...) and, unless `up --no-compute`,
the compute instances: `compute`, the writer at start, which serves the default volume
(`--default-volume`, vol0), and `up --replicas N` read replicas replica1..N
(`sixfold replica|failover|endpoint`: tools/instance_cli.py). `sixfold volume`, `sql`
and `kv` reach them through the control plane's endpoints.

Exit codes: 0 success, 1 operation failed (message on stderr), 2 unknown node name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sixfold.tools.cluster import (
    COMPUTE,
    CONTROL_PLANE,
    DEFAULT_AZS,
    DEFAULT_NODES_PER_AZ,
    DEFAULT_VOLUME,
    STORAGE_NODE,
    Cluster,
    ClusterError,
    ClusterStatus,
    ProcessRecord,
    ProcessStatus,
    SegmentInfo,
    UnknownProcessError,
)
from sixfold.tools.cluster_layout import KMS, REPLICAS_MAX
from sixfold.tools.cluster_status import INSECURE_WARNING, InstanceInfo
from sixfold.tools.text_table import table

STATE_DIR_ENV = "SIXFOLD_STATE_DIR"
DEFAULT_STATE_DIR = Path("~/.sixfold/cluster")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNKNOWN_NODE = 2

NODE_COMMANDS = ("kill", "pause", "resume", "stop", "start")


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR).expanduser()


# --- arguments -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _replica_count(text: str) -> int:
    value = _non_negative_int(text)
    if value > REPLICAS_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {REPLICAS_MAX} (a writer and up to {REPLICAS_MAX} readers)")
    return value


def _az_list(text: str) -> list[str]:
    azs = [az.strip() for az in text.split(",") if az.strip()]
    if not azs or len(set(azs)) != len(azs):
        raise argparse.ArgumentTypeError(f"need a comma-separated list of distinct AZ names, got {text!r}")
    return azs


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where the cluster's state, logs and data live (default: ${STATE_DIR_ENV}, else {DEFAULT_STATE_DIR})",
    )
    if name == "up":
        parser.add_argument(
            "--azs", type=_az_list, default=list(DEFAULT_AZS), help="comma-separated AZ names (default: a,b,c)"
        )
        parser.add_argument(
            "--nodes-per-az", type=_positive_int, default=DEFAULT_NODES_PER_AZ, help="storage nodes per AZ (default: 2)"
        )
        parser.add_argument(
            "--spares", type=_non_negative_int, default=0, help="extra nodes per AZ: a3 b3 c3 for 1 (default: 0)"
        )
        parser.add_argument(
            "--lmdb-map-mib", type=_positive_int, default=None, help="initial LMDB map size of each node, MiB"
        )
        parser.add_argument(
            "--heartbeat-timeout-ms",
            type=_positive_int,
            default=None,
            help="control plane: a node is unhealthy after this long without a heartbeat",
        )
        parser.add_argument(
            "--history-window-s",
            type=_non_negative_float,
            default=None,
            metavar="S",
            help="storage nodes: keep page versions and records this many seconds back before garbage "
            "collection may remove them (default 300)",
        )
        parser.add_argument(
            "--failure-timeout-ms",
            type=_positive_int,
            default=None,
            help="control plane: a node silent this long has failed and its segments move to a spare of its AZ "
            "(default 10000; needs --spares to have somewhere to go)",
        )
        parser.add_argument(
            "--default-volume",
            default=DEFAULT_VOLUME,
            metavar="NAME",
            help=f"the volume the compute node creates (if needed) and opens at start (default: {DEFAULT_VOLUME})",
        )
        parser.add_argument(
            "--replicas",
            type=_replica_count,
            default=0,
            metavar="N",
            help=f"read replicas replica1..N of the compute node, started after it serves (0..{REPLICAS_MAX}, "
            "default 0; later: `sixfold replica add|remove`)",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            help="plaintext gRPC, no certificates, no roles: for a throwaway local cluster only (printed loudly). "
            "The default is mutual TLS on every port and channel: a cluster CA and one certificate per process "
            "(its role named in it) in STATE_DIR/tls; every server refuses the RPCs a caller's role does not need",
        )
        parser.add_argument("--tls", action="store_true", help="mutual TLS (the default; kept for old scripts)")
        parser.add_argument(
            "--no-compute",
            dest="compute",
            action="store_false",
            help="start only the control plane and the storage nodes, no compute node",
        )
    elif name == "status":
        parser.add_argument("--json", action="store_true", help="print the status as JSON")
    elif name in NODE_COMMANDS:
        parser.add_argument("node", help=f"process name, e.g. a1 (or {CONTROL_PLANE}, {COMPUTE}, replica1)")
        if name == "start":
            parser.add_argument(
                "--new-port",
                action="store_true",
                help="listen on any free port instead of the recorded one (the node registers "
                "its new address; the writer and its peers follow)",
            )


# --- output ---------------------------------------------------------------------------


def _role(role: str, spare: bool) -> str:
    return f"{role} (spare)" if spare else role


def _layout_table(records: Sequence[ProcessRecord]) -> str:
    rows = [
        [r.name, _role(r.role, r.spare), r.az or "-", r.address or "-", str(r.pid or "-"), r.log_file, r.data_dir]
        for r in records
    ]
    return table(["NAME", "ROLE", "AZ", "ADDRESS", "PID", "LOG", "DATA"], rows)


def _segment_details(segment: SegmentInfo) -> str:
    """`vol0/pg-00000 scl=1234 repaired=3 quarantined=1 horizon=900 coalesced=40 gc=700r/30v hydrated=12p/48KiB`:
    the repair, retention and hydration counters only when not zero."""
    text = f"{segment.label} scl={segment.scl}"
    if segment.records_repaired:
        text += f" repaired={segment.records_repaired}"
    quarantined = segment.records_quarantined + segment.versions_quarantined
    if quarantined:
        text += f" quarantined={quarantined}"
    if segment.retention_horizon_lsn:
        text += f" horizon={segment.retention_horizon_lsn}"
    if segment.versions_coalesced:
        text += f" coalesced={segment.versions_coalesced}"
    if segment.records_collected or segment.versions_collected:
        text += f" gc={segment.records_collected}r/{segment.versions_collected}v"
    if segment.pages_hydrated:
        text += f" hydrated={segment.pages_hydrated}p/{segment.bytes_hydrated // 1024}KiB"
    if segment.chain_gaps:
        text += f" chain-gaps={segment.chain_gaps}"
    if segment.metadata_repaired:
        text += f" meta-repaired={segment.metadata_repaired}"
    if segment.rebuilding:
        text += " REBUILDING"
    elif not segment.whole:
        text += " NOT-WHOLE"
    return text


def _details(process: ProcessStatus) -> str:
    if process.error:  # a sentence: why the details are unknown (tools/cluster_status.py)
        return process.error
    if process.state != "running":
        return ""
    if process.role == STORAGE_NODE:
        segments = " ".join(_segment_details(s) for s in process.segments)
        text = f"{len(process.segments)} segments" + (f": {segments}" if segments else "")
        if process.disk and process.disk != "ok":
            text = f"DISK {process.disk.upper()}: {process.disk_detail}; " + text
        if process.lost_segments:
            text += f"; lost at start: {' '.join(process.lost_segments)}"
        return text
    if process.role == KMS:
        return "key service: master keys for encryption at rest (its key file outside every data dir)"
    if process.role == COMPUTE:
        volumes = " ".join(f"{v.volume_id} vdl={v.vdl}" + (" fenced" if v.fenced else "") for v in process.volumes)
        return f"{len(process.volumes)} volumes" + (f": {volumes}" if volumes else "")
    healthy = sum(1 for n in process.nodes if n.health == "healthy")
    unhealthy = [n.node_id for n in process.nodes if n.health not in ("healthy", "degraded")]
    degraded = [_degraded(n) for n in process.nodes if n.health == "degraded"]
    text = f"nodes {healthy}/{len(process.nodes)} healthy, {process.volume_count} volumes"
    text += f"; unhealthy: {' '.join(unhealthy)}" if unhealthy else ""
    text += f"; degraded: {', '.join(degraded)}" if degraded else ""
    if process.changes:
        text += "; replacing: " + ", ".join(c.describe() for c in process.changes)
    return text


def _degraded(node: Any) -> str:
    """`a1 (disk full)`, `b2 (missing vol0/pg-00000)`, `c1 (rebuilding vol0/pg-00001)`."""
    why = []
    if node.condition not in ("ok", ""):
        why.append(f"disk {node.condition.replace('_', ' ')}")
    if node.segments_missing:
        why.append("missing " + " ".join(node.segments_missing))
    if node.segments_rebuilding:
        why.append("rebuilding " + " ".join(node.segments_rebuilding))
    return f"{node.node_id} ({'; '.join(why) or 'degraded'})"


def _status_table(status: ClusterStatus) -> str:
    rows = [
        [
            p.name,
            _role(p.role, p.spare),
            p.az or "-",
            p.address or "-",
            str(p.pid or "-"),
            p.state,
            p.health,
            _details(p),
        ]
        for p in status.processes
    ]
    return table(["NAME", "ROLE", "AZ", "ADDRESS", "PID", "STATE", "HEALTH", "DETAILS"], rows)


def _lag(instance: InstanceInfo) -> str:
    """`vol0 vdl=1234 lag=0 (p50 1.2 ms, p99 8.0 ms)` per volume; the writer's lag is 0."""
    parts = []
    for v in instance.volumes:
        text = f"{v.volume_id} vdl={v.applied_vdl}"
        if instance.role != "writer":
            text += f" lag={v.lag_lsns} LSNs (p50 {v.lag_ms_p50:.1f} ms, p99 {v.lag_ms_p99:.1f} ms)"
        parts.append(text)
    return "; ".join(parts) or "-"


def _instances_table(status: ClusterStatus) -> str:
    """The compute instances: the writer and its read replicas (tools/cluster_status.py rule 5)."""
    rows = [
        [
            i.instance_id,
            i.role.upper() if i.role == "writer" else i.role,
            "yes" if i.alive else ("?" if i.source == "instance" else "NO"),  # "?": it did not say
            str(i.generation) if i.alive or i.source == "control plane" else "-",
            str(i.failover_priority) if i.alive or i.source == "control plane" else "-",
            "-" if i.last_heartbeat_age_ms is None else f"{i.last_heartbeat_age_ms} ms",
            _lag(i),
        ]
        for i in status.instances
    ]
    head = "compute instances"
    if status.writer_id or status.generation:
        head += f" (writer {status.writer_id or 'none'}, generation {status.generation})"
    if status.promoting_id:
        head += f"; FAILOVER UNDER WAY: promoting {status.promoting_id}"
    lines = [head + ":"]
    if status.instances_note:
        lines.append(f"  {status.instances_note}")
    if rows:
        headers = ["INSTANCE", "ROLE", "ALIVE", "GENERATION", "TIER", "HEARTBEAT", "VOLUMES (applied VDL, lag)"]
        lines.extend("  " + line for line in table(headers, rows).splitlines())
    return "\n".join(lines)


# --- subcommands ------------------------------------------------------------------------


def _up(cluster: Cluster, args: argparse.Namespace) -> int:
    existed = cluster.exists()
    result = cluster.up(
        args.azs,
        args.nodes_per_az,
        args.spares,
        lmdb_map_mib=args.lmdb_map_mib,
        heartbeat_timeout_ms=args.heartbeat_timeout_ms,
        failure_timeout_ms=args.failure_timeout_ms,
        node_flags=[] if args.history_window_s is None else ["--history-window-s", f"{args.history_window_s:g}"],
        compute=args.compute,
        default_volume=args.default_volume,
        replicas=args.replicas,
        insecure=args.insecure,
    )
    if cluster.insecure():
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
    if result.already_running:
        print(f"the cluster in {cluster.state_dir} is already running; nothing to do")
    elif existed:
        print(f"restarted with their existing data: {' '.join(result.started)}")
        print("(an existing cluster keeps its recorded layout; `sixfold down` and a new --state-dir for another)")
    else:
        print(f"started {len(result.started)} processes")
    print(_layout_table(cluster.records()))
    print(f"state dir: {cluster.state_dir}  (cluster.json, logs/, data/)")
    print(f"control plane: {cluster.control_plane_address()}")
    if cluster.has_compute():
        print(
            f"compute node:  {cluster.compute_address()}  (default volume {cluster.default_volume()}; "
            f"`sixfold volume --help` to write and read pages)"
        )
        replicas = [r for r in cluster.records() if r.role == COMPUTE and r.name != COMPUTE]
        if replicas:
            print(
                "read replicas: " + "  ".join(f"{r.name} {r.address}" for r in replicas) + "  (`sixfold sql --endpoint "
                "reader` reads on them; `sixfold failover` makes one the writer)"
            )
    else:
        print("no compute node (--no-compute)")
    return EXIT_OK


def _status(cluster: Cluster, args: argparse.Namespace) -> int:
    status = cluster.status()
    if status.insecure:
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(_status_table(status))
        if status.instances or status.instances_note:
            print()
            print(_instances_table(status))
        print(f"state dir: {cluster.state_dir}")
    return EXIT_OK


def _down(cluster: Cluster, args: argparse.Namespace) -> int:
    cluster.records()  # raises NoClusterError with a helpful message
    stopped = cluster.down()
    print(f"stopped: {' '.join(stopped)}" if stopped else "nothing was running")
    return EXIT_OK


def _kill(cluster: Cluster, args: argparse.Namespace) -> int:
    print(f"killed {args.node} (pid {cluster.kill(args.node)}, SIGKILL)")
    return EXIT_OK


def _pause(cluster: Cluster, args: argparse.Namespace) -> int:
    print(f"paused {args.node} (pid {cluster.pause(args.node)}, SIGSTOP); `sixfold resume {args.node}` to continue")
    return EXIT_OK


def _resume(cluster: Cluster, args: argparse.Namespace) -> int:
    print(f"resumed {args.node} (pid {cluster.resume(args.node)}, SIGCONT)")
    return EXIT_OK


def _stop(cluster: Cluster, args: argparse.Namespace) -> int:
    was_running = cluster.stop(args.node)
    print(f"stopped {args.node}" if was_running else f"{args.node} was not running")
    return EXIT_OK


def _start(cluster: Cluster, args: argparse.Namespace) -> int:
    if cluster.start(args.node, new_port=args.new_port):
        print(f"started {args.node} at {cluster.node_address(args.node)} (pid {cluster.pid(args.node)})")
    else:
        print(f"{args.node} is already running (pid {cluster.pid(args.node)})")
    return EXIT_OK


HANDLERS: dict[str, Callable[[Cluster, argparse.Namespace], int]] = {
    "up": _up,
    "status": _status,
    "down": _down,
    "kill": _kill,
    "pause": _pause,
    "resume": _resume,
    "stop": _stop,
    "start": _start,
}


def run(args: argparse.Namespace) -> int:
    cluster = Cluster(args.state_dir or default_state_dir())
    try:
        return HANDLERS[args.command](cluster, args)
    except UnknownProcessError as exc:
        print(f"sixfold {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN_NODE
    except ClusterError as exc:  # includes NoClusterError, which suggests `sixfold up`
        print(f"sixfold {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
