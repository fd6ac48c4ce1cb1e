"""`sixfold storage-node`: run one storage node process.

The node opens its LMDB environment, serves StorageService (plus health and
reflection), publishes its port, registers with the control plane and sends it
heartbeats. SIGTERM or SIGINT stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import grpc

from sixfold.storage import event_loop
from sixfold.storage.coalesce import COALESCE_INTERVAL_S, HISTORY_WINDOW_S
from sixfold.storage.errors import KeyUnavailable
from sixfold.storage.faults import FaultFile, default_fault_file
from sixfold.storage.node import StorageServicer
from sixfold.storage.scrub import SCRUB_INTERVAL_S
from sixfold.storage.security import keyring, transport
from sixfold.storage.security.audit_rpc import STORAGE_AUDITED, open_audit_log, server_interceptors
from sixfold.storage.security.tls import STORAGE_RPC_ROLES, STORAGE_SERVICE
from sixfold.storage.serving import CHANNEL_OPTIONS, start_server, write_port_file
from sixfold.storage.store import SegmentStore
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.storage.v1 import storage_service_pb2 as pb

log = logging.getLogger("sixfold.storage_node")

HEARTBEAT_INTERVAL_DEFAULT_MS = 500
HEARTBEAT_TIMEOUT_MS = 2_000
SHUTDOWN_GRACE_S = 2.0
KEY_WAIT_S = 1.0  # between two tries to unwrap the data keys at start


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-id", required=True, help="name of this node, e.g. a1")
    parser.add_argument("--az", required=True, help="availability zone of this node, e.g. a")
    parser.add_argument("--data-dir", required=True, help="directory of this node's LMDB environment")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    transport.add_arguments(parser)
    parser.add_argument("--port-file", help="write the bound port here once serving")
    parser.add_argument("--control-plane", help="HOST:PORT of the control plane to register with and heartbeat")
    parser.add_argument(
        "--kms",
        default=None,
        help="HOST:PORT of the key service (`sixfold kms`, needs --tls-dir): every segment is encrypted at rest "
        "under its volume's data key, unwrapped there (default: none, rows stored in clear)",
    )
    parser.add_argument(
        "--key-lease-s",
        type=float,
        default=keyring.LEASE_S_DEFAULT,
        help=f"hold an unwrapped data key at most this long without the key service renewing it (default "
        f"{keyring.LEASE_S_DEFAULT}; {keyring.LEASE_S_MIN} to {keyring.LEASE_S_MAX}): once the key service is "
        "gone, writes and reads of its volumes stop within this time",
    )
    parser.add_argument(
        "--gossip-interval-ms",
        type=int,
        default=1000,
        help="how often each segment compares notes with its PG's peers and pulls what it lacks (default 1000)",
    )
    parser.add_argument(
        "--scrub-interval-ms",
        type=int,
        default=int(SCRUB_INTERVAL_S * 1000),
        help="pause between two scrub passes, which re-check every stored record and page version "
        "against its CRC-32C and quarantine bad copies for gossip to fetch again; 0 turns "
        "scrubbing off (default %(default)s)",
    )
    parser.add_argument(
        "--coalesce-interval-ms",
        type=int,
        default=int(COALESCE_INTERVAL_S * 1000),
        help="how often records are folded into page versions and garbage below the retention "
        "horizon is removed; 0 turns both off (default %(default)s)",
    )
    parser.add_argument(
        "--history-window-s",
        type=float,
        default=HISTORY_WINDOW_S,
        help="history kept below the newest LSN, in seconds: the retention horizon stays at or "
        "below the SCL the segment had this long ago (default %(default)s)",
    )
    parser.add_argument(
        "--lmdb-map-mib",
        type=int,
        default=1024,
        help="initial LMDB map size in MiB; the map doubles whenever it fills (default 1024)",
    )
    parser.add_argument(
        "--fault-file",
        help="JSON file that injects faults into this node's gRPC server (delay, unreachable); "
        "see storage/faults.py (default DATA_DIR/faults.json)",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s node={args.node_id} %(name)s: %(message)s"
    )
    if not transport.started_secure(args.tls_dir, args.node_id, log):
        return 2
    if args.kms and not args.tls_dir:
        log.error("--kms needs --tls-dir: data keys travel from the key service only over mutual TLS")
        return 2
    if not keyring.LEASE_S_MIN <= args.key_lease_s <= keyring.LEASE_S_MAX:
        log.error("--key-lease-s must be %d to %d, not %g", keyring.LEASE_S_MIN, keyring.LEASE_S_MAX, args.key_lease_s)
        return 2
    return event_loop.run(_serve(args))


async def _heartbeat_loop(args: argparse.Namespace, address: str, servicer: StorageServicer) -> None:
    """Register, then heartbeat forever; an unreachable control plane is retried, never fatal."""
    interval_s = HEARTBEAT_INTERVAL_DEFAULT_MS / 1000
    registered = False
    warned = False
    async with transport.aio_channel(args.control_plane, CHANNEL_OPTIONS) as channel:
        stub = cp_grpc.ControlPlaneServiceStub(channel)
        while True:
            try:
                if not registered:
                    await stub.RegisterNode(
                        cp_pb.RegisterNodeRequest(node_id=args.node_id, az=args.az, address=address),
                        timeout=HEARTBEAT_TIMEOUT_MS / 1000,
                    )
                    registered = True
                    log.info("registered with the control plane at %s", args.control_plane)
                held, condition, detail = servicer.heartbeat_report()
                reply = await stub.Heartbeat(
                    cp_pb.HeartbeatRequest(
                        node_id=args.node_id,
                        address=address,
                        segment_count=len(held),
                        segments=held,
                        condition=condition,
                        condition_detail=detail,
                        segments_reported=True,
                    ),
                    timeout=HEARTBEAT_TIMEOUT_MS / 1000,
                )
                if reply.heartbeat_interval_ms:
                    interval_s = reply.heartbeat_interval_ms / 1000
                warned = False
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    registered = False  # the control plane forgot us: register again
                if not warned:
                    log.warning("control plane at %s: %s %s", args.control_plane, error.code().name, error.details())
                    warned = True
            await asyncio.sleep(interval_s)


async def _open_store(args: argparse.Namespace, keys: keyring.Keyring | None) -> SegmentStore | None:
    """The node's store; with a key service, waiting (and saying so) until it unwraps the keys of the segments
    held here: a node never takes a key it cannot reach for damage (storage/store/sealing.py rule 3)."""
    path = os.path.join(args.data_dir, "lmdb")
    waited = False
    while True:
        try:
            store = SegmentStore(path, map_size_bytes=args.lmdb_map_mib * 1024 * 1024, keys=keys)
        except KeyUnavailable as error:
            if keys is None:
                log.error("%s; start the node with --kms (and --tls-dir) to serve them", error.message)
                return None
            if not waited:
                log.warning("%s; waiting for the key service before serving", error.message)
                waited = True
            await asyncio.sleep(KEY_WAIT_S)
            continue
        if keys is not None:
            keys.start()
            if waited:
                log.info("the key service unwrapped this node's data keys; starting")
        return store


async def _serve(args: argparse.Namespace) -> int:
    keys = keyring.Keyring(args.kms, args.key_lease_s) if args.kms else None
    store = await _open_store(args, keys)
    if store is None:
        return 2
    fault_file = args.fault_file or default_fault_file(args.data_dir)
    faults = FaultFile(fault_file)
    servicer = StorageServicer(
        store,
        args.node_id,
        args.az,
        peer_channel=lambda address: transport.aio_channel(address, CHANNEL_OPTIONS),
        gossip_interval_s=args.gossip_interval_ms / 1000,
        scrub=args.scrub_interval_ms > 0,
        scrub_interval_s=max(args.scrub_interval_ms, 1) / 1000,
        coalesce_interval_s=max(args.coalesce_interval_ms, 0) / 1000,
        history_window_s=max(args.history_window_s, 0),
        isolated=lambda: faults.current().unreachable,
    )
    servicer.start()
    service = pb.DESCRIPTOR.services_by_name["StorageService"]
    # Under mutual TLS each caller's certificate names its role; the data-changing and admin RPCs are refused
    # to the roles that do not need them (storage/security/tls.py STORAGE_RPC_ROLES). Refusals, placement,
    # membership and fencing go to DATA_DIR/audit.log (storage/security/audit_rpc.py).
    audit_log = open_audit_log(args.data_dir, args.node_id)
    guards = server_interceptors(audit_log, STORAGE_AUDITED, STORAGE_RPC_ROLES, service=STORAGE_SERVICE)
    server, port, health = await start_server(
        args.host, args.port, [(service, servicer, pb)], fault_file=fault_file, interceptors=guards
    )
    address = f"{args.host}:{port}"
    write_port_file(args.port_file, port)
    log.info(
        "storage node %s (AZ %s) serving on %s with %d segments, data in %s",
        args.node_id,
        args.az,
        address,
        len(store.segments),
        args.data_dir,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heartbeat = asyncio.create_task(_heartbeat_loop(args, address, servicer)) if args.control_plane else None
    await stop.wait()
    log.info("stopping")
    if heartbeat:
        heartbeat.cancel()
    await health.enter_graceful_shutdown()
    await server.stop(SHUTDOWN_GRACE_S)
    await servicer.stop()
    store.close()
    if keys is not None:
        keys.stop()
    if audit_log is not None:
        audit_log.close()
    log.info("stopped")
    return 0
