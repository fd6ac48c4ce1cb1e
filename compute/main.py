"""`sixfold compute`: one compute instance of the cluster, the writer or a read replica (compute/instance.py).
Serves compute.v1.VolumeService, SQL (compute.v1.SqlService) and key-value (compute.v1.KvService) over one
SQL engine per volume, and compute.v1.InstanceService (the writer's redo to readers, promotion, status).

It registers with the control plane's ClusterService, which says whether it is the writer or a reader. The
writer opens volumes on first use (recovery and fencing run then); with `--default-volume NAME` it creates
that volume if the control plane does not have it yet and opens it before reporting SERVING on the health
service. A reader follows the default volume's redo from the writer instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2

from sixfold.compute.instance import WRITER, Instance
from sixfold.compute.instance_rpc import InstanceServicer
from sixfold.compute.kv_service import KvServicer
from sixfold.compute.service import VolumeServicer
from sixfold.compute.sql_service import SqlEngines, SqlServicer
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.v1 import kv_service_pb2 as kpb
from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.volume import Channels
from sixfold.storage import event_loop
from sixfold.storage.arg_types import int_between
from sixfold.storage.cluster_limits import validate_instance_id
from sixfold.storage.control_plane_limits import BACKTRACK_WINDOW_S_MAX
from sixfold.storage.errors import StorageError
from sixfold.storage.security import transport, user_sync
from sixfold.storage.security.audit_rpc import COMPUTE_AUDITED, open_audit_log, server_interceptors
from sixfold.storage.security.tls import COMPUTE_OPEN_SERVICES, INSTANCE_RPC_ROLES, INSTANCE_SERVICE
from sixfold.storage.security.user_auth import install_user_log_filter
from sixfold.storage.serving import CHANNEL_OPTIONS, start_server, write_port_file
from sixfold.storage.v1 import cluster_service_pb2_grpc as cl_grpc
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc

log = logging.getLogger("sixfold.compute")

SHUTDOWN_GRACE_S = 2.0
DEFAULT_VOLUME_SEGMENT_BYTES = 64 * 1024 * 1024
# Opening the default volume is tried again this long after a failure (storage or the control plane
# may be down); the node reports NOT_SERVING meanwhile and keeps trying until it is stopped.
OPEN_RETRY_PAUSE_S = 2.0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-plane", required=True, help="HOST:PORT of the control plane")
    parser.add_argument("--data-dir", help="directory for this process's files (the writer keeps no state there)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    transport.add_arguments(parser)
    user_sync.add_arguments(parser)
    parser.add_argument("--port-file", help="write the bound port here once serving")
    parser.add_argument("--default-volume", help="create this volume if needed and open it before serving")
    parser.add_argument(
        "--default-volume-segment-mib",
        type=int,
        default=DEFAULT_VOLUME_SEGMENT_BYTES >> 20,
        help="segment size of the default volume when it is created, MiB (default 64)",
    )
    parser.add_argument(
        "--default-volume-backtrack-window-s",
        type=int_between(0, BACKTRACK_WINDOW_S_MAX),
        default=0,
        help="backtrack window of the default volume when it is created, seconds (default 0: the control "
        "plane's, 24 h); the storage nodes keep at least that much of its history",
    )
    parser.add_argument(
        "--instance-id",
        type=_instance_id,
        default="compute",
        help="this instance's name in the cluster, unique among its compute instances (default compute)",
    )
    parser.add_argument(
        "--failover-priority",
        type=int,
        default=1,
        choices=range(16),
        metavar="0..15",
        help="failover tier: on failover the reader with the lowest tier is promoted first (default 1)",
    )
    parser.add_argument(
        "--reader",
        action="store_true",
        help="start as a read replica (never the writer at start; it may be promoted on failover)",
    )


def _instance_id(text: str) -> str:
    try:
        validate_instance_id(text)
    except StorageError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return text


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s compute %(name)s: %(message)s")
    install_user_log_filter()  # a line logged during a user's call names the user
    if not transport.started_secure(args.tls_dir, args.instance_id, log) or not user_sync.arguments_ok(args, log):
        return 2
    return event_loop.run(_serve(args))


async def _open_default_until_open(
    servicer: VolumeServicer,
    control_plane: cp_grpc.ControlPlaneServiceStub,
    args: argparse.Namespace,
    instance: Instance,
) -> None:
    """Open (creating it the first time) the default volume, trying again until it works, while this instance
    is the writer (a writer told to step down meanwhile follows the volume as a reader instead)."""
    failures = 0
    while instance.role == WRITER:
        try:
            await _open_default(servicer, control_plane, args)
            return
        except (TimeoutError, StorageError, grpc.aio.AioRpcError) as error:
            failures += 1
            if isinstance(error, StorageError):
                text = error.message
            elif isinstance(error, grpc.aio.AioRpcError):
                text = f"{error.code().name}: {error.details()}"
            else:
                text = "it timed out"
            log.warning(
                "could not open volume %s (attempt %d): %s; trying again in %.0f s",
                args.default_volume,
                failures,
                text,
                OPEN_RETRY_PAUSE_S,
            )
            await asyncio.sleep(OPEN_RETRY_PAUSE_S)


async def _open_default(
    servicer: VolumeServicer, control_plane: cp_grpc.ControlPlaneServiceStub, args: argparse.Namespace
) -> None:
    try:
        await control_plane.DescribeVolume(cp_pb.DescribeVolumeRequest(volume_id=args.default_volume), timeout=10)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        await control_plane.CreateVolume(
            cp_pb.CreateVolumeRequest(
                volume_id=args.default_volume,
                segment_size_bytes=args.default_volume_segment_mib << 20,
                backtrack_window_s=args.default_volume_backtrack_window_s,
            ),
            timeout=30,
        )
        log.info("created volume %s", args.default_volume)
    await servicer.volume(args.default_volume)


async def _take_role(
    instance: Instance,
    address: str,
    servicer: VolumeServicer,
    control_plane: cp_grpc.ControlPlaneServiceStub,
    args: argparse.Namespace,
) -> None:
    """Register (the control plane gives the role); the writer then opens its default volume."""
    await instance.start(address)
    if args.default_volume:
        await _open_default_until_open(servicer, control_plane, args, instance)


def _advertised(host: str, port: int) -> str:
    """The address other processes reach this one at (a wildcard bind is reached over loopback)."""
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}"


async def _serve(args: argparse.Namespace) -> int:
    channels = Channels()
    cp_channel = transport.aio_channel(args.control_plane, CHANNEL_OPTIONS)
    control_plane = cp_grpc.ControlPlaneServiceStub(cp_channel)
    servicer = VolumeServicer(control_plane, channels)
    engines = SqlEngines(servicer)
    servicer.on_volume_gone.append(engines.drop)
    instance = Instance(
        args.instance_id,
        cl_grpc.ClusterServiceStub(cp_channel),
        control_plane,
        channels,
        servicer,
        engines,
        failover_priority=args.failover_priority,
        reader_only=args.reader,
        default_volume=args.default_volume,
    )
    services = [
        (vpb.DESCRIPTOR.services_by_name["VolumeService"], servicer, vpb),
        (spb.DESCRIPTOR.services_by_name["SqlService"], SqlServicer(engines), spb),
        (kpb.DESCRIPTOR.services_by_name["KvService"], KvServicer(engines), kpb),
        (ipb.DESCRIPTOR.services_by_name["InstanceService"], InstanceServicer(instance), ipb),
    ]
    # Under mutual TLS InstanceService checks the caller's certificate role (storage/security/tls.py
    # INSTANCE_RPC_ROLES); VolumeService, SqlService and KvService stay open to every certificate of the cluster
    # until user tokens come. Refusals, admin operations and role changes go to DATA_DIR/audit.log.
    audit_log = open_audit_log(args.data_dir, args.instance_id)
    guards = server_interceptors(
        audit_log, COMPUTE_AUDITED, INSTANCE_RPC_ROLES, service=INSTANCE_SERVICE, open_services=COMPUTE_OPEN_SERVICES
    )
    # Under TLS a user's token on every SQL, KV and Volume call (storage/security/user_sync.py).
    guards, users = user_sync.start_token_check(args.token_verify_key, cp_channel, audit_log, guards)
    server, port, health = await start_server(args.host, args.port, services, serving=False, interceptors=guards)
    write_port_file(args.port_file, port)
    log.info(
        "compute instance %s serving VolumeService, SqlService, KvService and InstanceService on %s:%d",
        args.instance_id,
        args.host,
        port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starter = asyncio.create_task(_take_role(instance, _advertised(args.host, port), servicer, control_plane, args))
    done, _ = await asyncio.wait({starter, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if starter in done and starter.exception() is not None:
        log.error("could not start as a compute instance: %s", starter.exception())
        await instance.close()
        return 1
    starter.cancel()
    if not stop.is_set():
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service, _, _ in services:
            await health.set(service.full_name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving")
        await stop.wait()
    log.info("stopping")
    await health.enter_graceful_shutdown()
    await server.stop(SHUTDOWN_GRACE_S)
    if users is not None:
        await users.close()
    await instance.close()  # aborts open transactions, before their volumes close
    await engines.close()
    await servicer.close()
    await channels.close()
    await cp_channel.close()
    if audit_log is not None:
        audit_log.close()
    log.info("stopped")
    return 0
