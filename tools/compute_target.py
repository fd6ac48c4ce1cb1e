"""Where `sixfold volume`, `sql` and `kv` send their calls: the connection options they share
(`--endpoint`, `--address`, `--state-dir`, `--timeout`) and the target they make of them: the endpoint
(default `cluster`, the writer) of the local cluster, resolved through its control plane by the
clients (compute/endpoint_client.py), or a fixed address.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sixfold.compute.client import DEFAULT_TIMEOUT_S
from sixfold.compute.endpoint_client import CLUSTER_ENDPOINT, Endpoint


class UsageError(Exception):
    """A problem found before or around the call (no cluster, unreadable file, ...): printed as `error: ...`."""


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Declared on `volume` and on every sub-subcommand, so they may come before or after it; the
    # sub-subcommand's copies default to SUPPRESS so they do not overwrite a value given earlier.
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument(
        "--endpoint",
        default=default(None),
        metavar="NAME",
        help="where calls go: `cluster` (the writer, the default), `reader` (a read replica; the writer when there "
        "is none) or a custom endpoint (`sixfold endpoint list`), resolved through the cluster's control plane",
    )
    parser.add_argument(
        "--address",
        default=default(None),
        metavar="HOST:PORT",
        help="a compute instance's address instead of an endpoint",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default(None),
        help="the local cluster (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster)",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=default(DEFAULT_TIMEOUT_S),
        metavar="SECONDS",
        help=f"deadline of each call (default: {DEFAULT_TIMEOUT_S:g})",
    )


def act_as_client(args: argparse.Namespace) -> None:
    """Use the `cli` certificate (and token) of the cluster in --state-dir, if it is a TLS one, for an address
    given by hand: a TLS cluster refuses a plaintext client."""
    from sixfold.storage.security import transport
    from sixfold.tools.launcher import default_state_dir

    transport.use_cluster_client(args.state_dir or default_state_dir())


def compute_target(args: argparse.Namespace) -> str | Endpoint:
    """--address, else the endpoint (--endpoint, default `cluster`) of the local cluster in --state-dir,
    resolved through its control plane. Refused (UsageError) when the cluster has no compute instance
    running: a sentence saying how to start one."""
    if args.address:
        if args.endpoint:
            raise UsageError("give --address or --endpoint, not both")
        act_as_client(args)
        return str(args.address)
    from sixfold.tools.cluster import COMPUTE, Cluster, ClusterError
    from sixfold.tools.launcher import default_state_dir

    cluster = Cluster(args.state_dir or default_state_dir())
    try:
        cluster.compute_address()  # says so when the cluster has no compute node
        control_plane = cluster.control_plane_address()
        instances = [r for r in cluster.records() if r.role == COMPUTE]
        running = [r.name for r in instances if cluster.pid(r.name) is not None]
    except ClusterError as exc:
        raise UsageError(str(exc)) from None
    if not running:
        states = ", ".join(f"{r.name}: {'stopped' if r.pid is None else 'dead'}" for r in instances)
        raise UsageError(
            f"no compute instance of the cluster in {cluster.state_dir} is running ({states}); "
            f"`sixfold start {COMPUTE}` or `sixfold up`"
        )
    return Endpoint(control_plane, args.endpoint or CLUSTER_ENDPOINT)
