"""`sixfold volume rotate-key VOLUME`: rewrap a volume's data key under a new master key version (encryption at
rest: storage/control_plane_keys.py rule 3). The data key, and so every sealed row, stays; what changes is the
master key that wraps it. Asked of the control plane directly, as the cluster's operator."""

from __future__ import annotations

import argparse
import sys

import grpc

from sixfold.compute.client import VolumeClient
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc

EXIT_OK = 0
EXIT_FAILED = 1
ROTATE_TIMEOUT_S = 30.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rotate-key",
        help="rewrap a volume's data key under a new master key (encryption at rest)",
        description="The key service makes a new master key version and wraps VOLUME's data key under it; the "
        "control plane keeps the new wrapping and hands it to every segment of the volume. Clones and snapshots "
        "sharing the key take it too. Nothing is re-encrypted: the data key itself stays.",
    )
    p.add_argument("volume", metavar="VOLUME")


def rotate_key(client: VolumeClient, args: argparse.Namespace) -> int:
    from sixfold.tools.cluster import Cluster
    from sixfold.tools.launcher import default_state_dir

    cluster = Cluster(args.state_dir or default_state_dir())
    address = cluster.control_plane_address()
    try:
        with transport.channel(address, CHANNEL_OPTIONS) as channel:
            reply = cp_grpc.ControlPlaneServiceStub(channel).RotateVolumeKey(
                cp_pb2.RotateVolumeKeyRequest(volume_id=args.volume), timeout=ROTATE_TIMEOUT_S
            )
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"rotated the key of {reply.volume_id}: its data key is now wrapped by master key {reply.master_key_id} "
        f"(was {reply.previous_master_key_id}); {reply.segments_updated} segments took the new wrapping"
        + (
            f", {reply.segments_missed} missed it (they keep the old one, which still opens)"
            if reply.segments_missed
            else ""
        )
    )
    return EXIT_OK
