"""`sixfold replica|failover|endpoint`: the compute instances of the local cluster.

    sixfold replica add [--priority 1]        # start the next read replica (replicaN), wait until it serves
    sixfold replica remove replica2           # stop it (by PID) and have the control plane forget it
    sixfold failover                          # promote the most caught-up reader of the lowest tier
    sixfold failover --to replica1            # ... or that one; prints old -> new writer and the time taken
    sixfold endpoint create reporting --instances replica1,replica2
    sixfold endpoint list [--json]            # cluster, reader and custom endpoints, and where each leads now
    sixfold endpoint delete reporting

The control plane is `--control-plane HOST:PORT`, else the one of the cluster in `--state-dir`
(default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster). A refused or failed call prints
`error: CODE: details` (the control plane's sentence) on stderr and exits 1; nothing was changed
unless the sentence says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from sixfold.storage.arg_types import int_between
from sixfold.tools.cluster import Cluster, ClusterError, UnknownProcessError
from sixfold.tools.cluster_instances import (
    InstanceCallError,
    create_endpoint,
    delete_endpoint,
    failover,
    list_endpoints,
    resolve_endpoint,
)
from sixfold.tools.cluster_layout import DEFAULT_FAILOVER_PRIORITY, FAILOVER_PRIORITY_MAX
from sixfold.tools.cluster_replicas import add_replica, remove_replica
from sixfold.tools.compute_target import act_as_client
from sixfold.tools.text_table import table

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNKNOWN = 2


def _instance_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _common(parser: argparse.ArgumentParser, *, control_plane: bool = True) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the local cluster (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster)",
    )
    if not control_plane:
        return
    parser.add_argument(
        "--control-plane",
        metavar="HOST:PORT",
        default=None,
        help="the control plane (default: the one of the cluster in --state-dir)",
    )


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "failover":
        parser.description = (
            "Make a reader the writer now: the writer steps down (it becomes a reader) and the reader is promoted "
            "(it recovers every volume at a new epoch). Refused, with nothing changed, for an unknown instance, "
            "one that is not a live reader, or one that lags."
        )
        _common(parser)
        parser.add_argument(
            "--to",
            metavar="INSTANCE",
            default="",
            help="the reader to promote (default: the most caught-up live reader of the lowest failover tier)",
        )
        return
    if name == "replica":
        parser.description = "Add or remove read replicas (compute instances that follow the writer's redo)."
        sub = parser.add_subparsers(dest="replica_command", metavar="ACTION")
        sub.required = True
        p = sub.add_parser(
            "add",
            help="start the next read replica (replicaN) and wait until it serves",
            description="Start the next read replica, replicaN, on the default volume; it follows the writer.",
        )
        p.add_argument(
            "--priority",
            type=int_between(0, FAILOVER_PRIORITY_MAX),
            default=DEFAULT_FAILOVER_PRIORITY,
            metavar="N",
            help=f"failover tier 0..{FAILOVER_PRIORITY_MAX}: the lowest tier is promoted first "
            f"(default {DEFAULT_FAILOVER_PRIORITY})",
        )
        _common(p, control_plane=False)
        p = sub.add_parser(
            "remove",
            help="stop a read replica and have the control plane forget it",
            description="Stop a read replica (by its PID), remove it from cluster.json and from the control plane.",
        )
        p.add_argument("replica", metavar="NAME", help="the replica, e.g. replica2")
        _common(p, control_plane=False)
        return
    parser.description = (
        "Endpoints lead clients to compute instances: `cluster` (built in) to the writer, `reader` (built in) "
        "to the live readers in turn (the writer when there is none), a custom one to the live instances named."
    )
    sub = parser.add_subparsers(dest="endpoint_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser(
        "create",
        help="a custom endpoint over named instances",
        description="Create a custom endpoint over named compute instances (e.g. replica1,replica2).",
    )
    p.add_argument("endpoint", metavar="NAME", help="the endpoint's name (not `cluster` or `reader`)")
    p.add_argument(
        "--instances",
        type=_instance_list,
        required=True,
        metavar="A,B",
        help="comma-separated instance ids (as `sixfold status` lists them)",
    )
    _common(p)
    p = sub.add_parser("list", help="every endpoint and where it leads now", description="List the endpoints.")
    p.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    _common(p)
    p = sub.add_parser("delete", help="delete a custom endpoint", description="Delete a custom endpoint.")
    p.add_argument("endpoint", metavar="NAME")
    _common(p)


def _cluster(args: argparse.Namespace) -> Cluster:
    from sixfold.tools.launcher import default_state_dir

    return Cluster(args.state_dir or default_state_dir())


def _control_plane(args: argparse.Namespace) -> str:
    if args.control_plane:
        act_as_client(args)
        return str(args.control_plane)
    return str(_cluster(args).control_plane_address())


# --- replica -------------------------------------------------------------------------------------


def _replica(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if args.replica_command == "add":
        record = add_replica(cluster, args.priority)
        print(
            f"started read replica {record.name} at {record.address} (pid {record.pid}, failover tier "
            f"{args.priority}); it follows the writer"
        )
        return EXIT_OK
    was_running, problem = remove_replica(cluster, args.replica)
    print(f"{'stopped and ' if was_running else ''}removed read replica {args.replica}")
    if problem:
        print(f"error: the control plane did not forget {args.replica}: {problem}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --- failover ------------------------------------------------------------------------------------


def _failover(args: argparse.Namespace) -> int:
    reply = failover(_control_plane(args), args.to)
    old = reply.old_writer_id or "(none)"
    print(f"writer: {old} → {reply.new_writer_id}  (generation {reply.generation}, took {reply.took_ms} ms)")
    return EXIT_OK


# --- endpoint ------------------------------------------------------------------------------------


def _leads_to(control_plane: str, name: str) -> str:
    try:
        reply = resolve_endpoint(control_plane, name)
    except InstanceCallError as error:
        return f"({error.details})"
    return " ".join(f"{i}@{a}" for i, a in zip(reply.instance_ids, reply.addresses)) or "-"


def _endpoint(args: argparse.Namespace) -> int:
    control_plane = _control_plane(args)
    if args.endpoint_command == "create":
        endpoint = create_endpoint(control_plane, args.endpoint, args.instances)
        print(f"created endpoint {endpoint.name} over {', '.join(endpoint.instance_ids)}")
        print(f"  connect with `sixfold sql --endpoint {endpoint.name}` or Endpoint(control_plane, {endpoint.name!r})")
        return EXIT_OK
    if args.endpoint_command == "delete":
        delete_endpoint(control_plane, args.endpoint)
        print(f"deleted endpoint {args.endpoint}")
        return EXIT_OK
    endpoints = list_endpoints(control_plane)
    rows = [(e.name, e.kind, ",".join(e.instance_ids) or "-", _leads_to(control_plane, e.name)) for e in endpoints]
    if args.json:
        fields = [(e.name, e.kind, list(e.instance_ids), row[3]) for e, row in zip(endpoints, rows)]
        print(json.dumps([dict(zip(("name", "kind", "instance_ids", "leads_to"), f)) for f in fields]))
    else:
        print(table(["ENDPOINT", "KIND", "INSTANCES", "LEADS TO NOW (preferred first)"], rows))
    return EXIT_OK


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "replica": _replica,
    "failover": _failover,
    "endpoint": _endpoint,
}


def run(args: argparse.Namespace) -> int:
    try:
        return HANDLERS[args.command](args)
    except InstanceCallError as error:
        print(f"error: {error.code.name}: {error.details}", file=sys.stderr)
        return EXIT_FAILED
    except UnknownProcessError as error:
        print(f"sixfold {args.command}: {error}", file=sys.stderr)
        return EXIT_UNKNOWN
    except ClusterError as error:
        print(f"sixfold {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
