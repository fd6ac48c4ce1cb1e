"""`sixfold control-plane`: run the control plane process.

Serves `storage.v1.ControlPlaneService` and `storage.v1.ClusterService` (the compute
instances, the failure detector that promotes a reader, endpoints: storage/cluster_server.py)
on one port, plus health and reflection, until SIGTERM or SIGINT, then stops gracefully.
State lives in `--data-dir` (control_plane.json and cluster.json).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from sixfold.storage.cluster_limits import HEARTBEAT_INTERVAL_MS as COMPUTE_HEARTBEAT_INTERVAL_MS
from sixfold.storage.cluster_limits import WRITER_TIMEOUT_MS
from sixfold.storage.cluster_server import start_cluster_control_plane
from sixfold.storage.control_plane import FAILURE_TIMEOUT_MS_DEFAULT, HEARTBEAT_TIMEOUT_MS_DEFAULT
from sixfold.storage.control_plane_server import HEAL_INTERVAL_S, HEARTBEAT_INTERVAL_MS_DEFAULT
from sixfold.storage.security import transport, user_service
from sixfold.storage.security.audit_rpc import CONTROL_PLANE_AUDITED, Auditor, open_audit_log, server_interceptors
from sixfold.storage.security.tls import CONTROL_PLANE_RPC_ROLES
from sixfold.storage.security.user_auth import USER_SERVICE_RPC_ROLES, install_user_log_filter
from sixfold.storage.serving import write_port_file

log = logging.getLogger("sixfold.control_plane")

# How long in-flight RPCs may run after a stop signal before they are cancelled.
STOP_GRACE_S = 2.0
# With the default interval, a node is marked unhealthy after missing about this many beats.
HEARTBEATS_PER_TIMEOUT = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="directory of the control plane's state file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: pick a free port)")
    transport.add_arguments(parser)
    user_service.add_arguments(parser)
    parser.add_argument("--port-file", default=None, help="write the bound port to this file once serving")
    parser.add_argument(
        "--heartbeat-timeout-ms",
        type=int,
        default=HEARTBEAT_TIMEOUT_MS_DEFAULT,
        help=f"a node without a heartbeat for this long is unhealthy (default {HEARTBEAT_TIMEOUT_MS_DEFAULT})",
    )
    parser.add_argument(
        "--heartbeat-interval-ms",
        type=int,
        default=None,
        help=f"how often nodes are told to heartbeat (default {HEARTBEAT_INTERVAL_MS_DEFAULT}, "
        f"or a third of the timeout if that is shorter)",
    )
    parser.add_argument(
        "--failure-timeout-ms",
        type=int,
        default=None,
        help=f"a node silent for this long has failed and its segments are replaced on a spare or another "
        f"node of its AZ (default {FAILURE_TIMEOUT_MS_DEFAULT}, and never below the heartbeat timeout)",
    )
    parser.add_argument(
        "--kms",
        default=None,
        help="HOST:PORT of the key service (`sixfold kms`, needs --tls-dir): every volume gets a data key, kept "
        "only wrapped, and its segments are encrypted at rest (default: none, volumes stored in clear)",
    )
    parser.add_argument(
        "--no-healing",
        action="store_true",
        help="never replace failed nodes' segments (membership changes in flight stay as they are)",
    )
    parser.add_argument(
        "--writer-timeout-ms",
        type=int,
        default=WRITER_TIMEOUT_MS,
        help=f"the compute writer is gone (and a reader is promoted) after this long without a heartbeat "
        f"(default {WRITER_TIMEOUT_MS}; compute instances heartbeat every {COMPUTE_HEARTBEAT_INTERVAL_MS} ms)",
    )
    parser.add_argument(
        "--no-failover",
        action="store_true",
        help="never promote a reader on its own when the compute writer is gone (`sixfold failover` still works)",
    )


def heartbeat_interval_ms(args: argparse.Namespace) -> int:
    """The interval asked for, else the default capped so a node beats about 3 times per timeout."""
    if args.heartbeat_interval_ms is not None:
        return int(args.heartbeat_interval_ms)
    return max(1, min(HEARTBEAT_INTERVAL_MS_DEFAULT, args.heartbeat_timeout_ms // HEARTBEATS_PER_TIMEOUT))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    install_user_log_filter()  # a line logged during a user's call names the user
    if not transport.started_secure(args.tls_dir, "control-plane", log) or not user_service.arguments_ok(args, log):
        return 2
    if args.kms and not args.tls_dir:
        log.error("--kms needs --tls-dir: the key service is reached only over mutual TLS")
        return 2
    args.heartbeat_interval_ms = heartbeat_interval_ms(args)
    if not 0 < args.heartbeat_interval_ms < args.heartbeat_timeout_ms:
        log.error(
            "--heartbeat-interval-ms (%d) must be positive and below --heartbeat-timeout-ms (%d)",
            args.heartbeat_interval_ms,
            args.heartbeat_timeout_ms,
        )
        return 2
    if args.writer_timeout_ms <= COMPUTE_HEARTBEAT_INTERVAL_MS:
        log.error(
            "--writer-timeout-ms (%d) must be above the compute heartbeat interval (%d ms)",
            args.writer_timeout_ms,
            COMPUTE_HEARTBEAT_INTERVAL_MS,
        )
        return 2
    if args.failure_timeout_ms is None:
        args.failure_timeout_ms = max(FAILURE_TIMEOUT_MS_DEFAULT, args.heartbeat_timeout_ms)
    if args.failure_timeout_ms < args.heartbeat_timeout_ms:
        log.error(
            "--failure-timeout-ms (%d) must not be below --heartbeat-timeout-ms (%d)",
            args.failure_timeout_ms,
            args.heartbeat_timeout_ms,
        )
        return 2
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    # Under mutual TLS the caller's certificate role decides what it may call (storage/security/tls.py
    # CONTROL_PLANE_RPC_ROLES); refusals and admin operations go to DATA_DIR/audit.log (audit_rpc.py).
    audit_log = open_audit_log(args.data_dir, "control-plane")
    roles = {**CONTROL_PLANE_RPC_ROLES, **USER_SERVICE_RPC_ROLES}
    guards = server_interceptors(audit_log, CONTROL_PLANE_AUDITED, roles, service=None)
    # Under TLS: UserService, and a user's token on every client call (storage/security/user_service.py).
    guards, users = user_service.start_users(args.token_signing_key, args.data_dir, audit_log, guards)
    server, port, servicer, cluster = await start_cluster_control_plane(
        args.host,
        args.port,
        args.data_dir,
        args.heartbeat_timeout_ms,
        args.heartbeat_interval_ms,
        failure_timeout_ms=args.failure_timeout_ms,
        heal_interval_s=0 if args.no_healing else HEAL_INTERVAL_S,
        writer_timeout_ms=args.writer_timeout_ms,
        failure_detection=not args.no_failover,
        interceptors=guards,
        kms_address=args.kms,
        services=users,
    )
    if audit_log is not None:
        cluster.on_failover = _audit_detector_failovers(Auditor(audit_log))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    write_port_file(args.port_file, port)
    log.info("control plane serving on %s:%d (data dir %s)", args.host, port, args.data_dir)
    await stop.wait()
    log.info("control plane stopping")
    await servicer.stop_healing()
    await cluster.stop_detector()
    await server.stop(STOP_GRACE_S)
    if audit_log is not None:
        audit_log.close()
    return 0


def _audit_detector_failovers(auditor: Auditor) -> Callable[[dict[str, Any]], None]:
    """A failover the failure detector carried out on its own (one by request is audited as its RPC)."""

    def record(failover: dict[str, Any]) -> None:
        if failover.get("by") == "detector":
            details = {key: value for key, value in failover.items() if key != "by"}
            auditor.record("control-plane (failure detector)", "ClusterService.Failover", "ok", **details)

    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sixfold control-plane", description=__doc__)
    configure("control-plane", parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
