"""The cluster's status as a client reads it: the control plane's nodes and volumes, the compute
instances (the writer and its read replicas) and endpoints, and the writer's view of each volume.

Shows the generated gRPC stubs of `storage.v1.ControlPlaneService` (ListNodes: every storage node, its
AZ and health; ListVolumes: each volume's protection groups and which node holds each of their six
segments), of `storage.v1.ClusterService` (ListComputeInstances: each instance's role, generation and
lag; ListEndpoints and ResolveEndpoint: where each endpoint leads now) and
`sixfold.compute.client.VolumeClient` on the writer, reached through the `cluster` endpoint (VDL, VCL,
epochs, commits, and per PG its PGCL and each segment's SCL as the writer last heard it). `sixfold
status` shows much the same for every process; this is the few lines a program needs.

Run it against the local cluster (`sixfold up`, or `sixfold demo` left one running):

    python tools/examples/cluster_status.py   # the cluster in $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster
    python tools/examples/cluster_status.py --state-dir DIR
    python tools/examples/cluster_status.py --control-plane 127.0.0.1:PORT   # the writer by the cluster endpoint
    python tools/examples/cluster_status.py --control-plane 127.0.0.1:PORT --address 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from sixfold.compute.client import VolumeClient
from sixfold.compute.endpoint_client import Endpoint
from sixfold.storage.security import transport
from sixfold.storage.v1 import cluster_service_pb2 as clpb
from sixfold.storage.v1 import cluster_service_pb2_grpc as clgrpc
from sixfold.storage.v1 import control_plane_service_pb2 as cpb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cgrpc
from sixfold.tools.cluster import Cluster
from sixfold.tools.launcher import default_state_dir

TIMEOUT_S = 5.0


def control_plane_status(address: str) -> None:
    """Print the control plane's nodes and volumes (two RPCs on the generated stub)."""
    with transport.channel(address, ()) as channel:
        stub = cgrpc.ControlPlaneServiceStub(channel)
        nodes = stub.ListNodes(cpb.ListNodesRequest(), timeout=TIMEOUT_S).nodes
        volumes = stub.ListVolumes(cpb.ListVolumesRequest(), timeout=TIMEOUT_S).volumes
    healthy = sum(1 for n in nodes if n.health == cpb.NODE_HEALTH_HEALTHY)
    print(f"control plane {address}: {healthy} of {len(nodes)} storage nodes healthy, {len(volumes)} volumes")
    for node in nodes:
        health = cpb.NodeHealth.Name(node.health).removeprefix("NODE_HEALTH_").lower()
        print(
            f"  node {node.node_id:4} AZ {node.az}  {node.address:21}  {health:9}  {node.segment_count} segments, "
            f"heartbeat {node.last_heartbeat_age_ms} ms ago"
        )
    for volume in volumes:
        print(
            f"  volume {volume.volume_id}: page size {volume.page_size}, {len(volume.protection_groups)} PGs, "
            f"geometry epoch {volume.geometry_epoch}"
        )
        for pg in volume.protection_groups:
            holders = " ".join(s.node_id for s in pg.segments)
            last_page = pg.first_page + pg.page_count - 1
            print(f"    pg {pg.pg_index} (pages {pg.first_page}-{last_page}): segments on {holders}")


def instances_status(address: str) -> None:
    """Print the compute instances and the endpoints (ClusterService on the control plane)."""
    with transport.channel(address, ()) as channel:
        stub = clgrpc.ClusterServiceStub(channel)
        listed = stub.ListComputeInstances(clpb.ListComputeInstancesRequest(), timeout=TIMEOUT_S)
        endpoints = stub.ListEndpoints(clpb.ListEndpointsRequest(), timeout=TIMEOUT_S).endpoints
        leads = {}
        for endpoint in endpoints:
            try:
                reply = stub.ResolveEndpoint(clpb.ResolveEndpointRequest(name=endpoint.name), timeout=TIMEOUT_S)
                leads[endpoint.name] = " ".join(reply.instance_ids)
            except grpc.RpcError as error:  # e.g. UNAVAILABLE: no live member now
                leads[endpoint.name] = f"({error.details()})"
    print(f"compute instances: writer {listed.writer_id or '(none)'}, generation {listed.generation}")
    for i in listed.instances:
        role = clpb.ComputeRole.Name(i.role).removeprefix("COMPUTE_ROLE_").lower()
        lag = ", ".join(f"{v.volume_id} lag {v.lag_lsns} LSNs / p99 {v.lag_ms_p99:.1f} ms" for v in i.volumes)
        alive = "alive" if i.alive else "NOT ALIVE"
        print(f"  {i.instance_id:9} {role:7} {i.address:21} {alive}, tier {i.failover_priority}; {lag or 'no volumes'}")
    for endpoint in endpoints:
        print(f"  endpoint {endpoint.name} ({endpoint.kind}): leads to {leads[endpoint.name]}")


def compute_status(target: str | Endpoint) -> None:
    """Print the writer's view of every volume it has open (VolumeClient.list_volumes)."""
    with VolumeClient(target, timeout_s=TIMEOUT_S) as client:
        volumes = client.list_volumes()
        address = client.address
    print(f"compute node {address}: {len(volumes)} volumes open")
    for v in volumes:
        fenced = f", FENCED: {v.fenced_reason}" if v.fenced else ""
        epochs = f"volume epoch {v.volume_epoch}"
        print(f"  volume {v.volume_id}: VDL {v.vdl}, VCL {v.vcl}, {epochs}, {v.commits} commits{fenced}")
        for pg in v.protection_groups:
            segments = " ".join(f"{s.node_id}:{s.scl}{'' if s.connected else '(down)'}" for s in pg.segments)
            print(f"    pg {pg.pg_index}: PGCL {pg.pgcl}; SCL per segment {segments}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--control-plane", metavar="HOST:PORT", help="the control plane (default: the local cluster's)")
    parser.add_argument(
        "--address", metavar="HOST:PORT", help="a compute instance (default: the writer, by the cluster endpoint)"
    )
    parser.add_argument(
        "--state-dir", type=Path, help="the local cluster (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster)"
    )
    args = parser.parse_args()
    state_dir = args.state_dir or default_state_dir()
    if not args.control_plane:
        args.control_plane = Cluster(state_dir).control_plane_address()  # and act as the cluster's client
    else:
        transport.use_cluster_client(state_dir)  # its `cli` certificate, if it has one (a TLS cluster)
    control_plane_status(args.control_plane)
    instances_status(args.control_plane)
    compute_status(args.address or Endpoint(args.control_plane, "cluster"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
