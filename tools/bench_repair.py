"""`sixfold bench repair`: how long a volume takes to get six healthy copies back after losing a node.

For each size N (MiB of log payload in one PG) the benchmark
1. starts a cluster with one spare per AZ through the launcher (no compute node: the records are
   streamed straight to the six segments, as the writer would, so loading N MiB is quick);
2. measures a **baseline** in the same run: the bare copy the hydration has to do at least --
   every record of the segment read from one surviving peer (ReadRecords) and appended to a scratch
   segment on the spare (AppendRecords, synced), by one client with no protocol around it;
3. SIGKILLs one node of the PG for good and polls the control plane until the PG has six healthy
   segments again without it, splitting the time into detection (until the change begins: the
   failure timeout) and hydration (until the change completes), with progress on the way;
4. prints, per size: time to regain six copies, detection, hydration, hydration MB/s and its
   ratio to the baseline.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 2**20
PAGE_SIZE = 4096
PAGES = 4096  # records cycle over this many pages of the PG
BATCH_RECORDS = 256  # 1 MiB of 4 KiB images per batch
WINDOW = 4
FAILURE_TIMEOUT_MS = 2000
HEARTBEAT_TIMEOUT_MS = 1000
REGAIN_TIMEOUT_S = 600.0
VICTIM = "a1"
SPARE = "a3"
VOLUME = "benchrepair"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes-mib",
        default="16,64",
        help="MiB of log payload on the lost node's segment, comma-separated (default 16,64)",
    )
    parser.add_argument(
        "--failure-timeout-ms",
        type=int,
        default=FAILURE_TIMEOUT_MS,
        help=f"the control plane's failure timeout in the benchmark cluster (default {FAILURE_TIMEOUT_MS})",
    )
    parser.add_argument("--keep", action="store_true", help="keep each cluster's state dir (logs, data)")


@dataclass
class RepairFigure:
    mib: float
    records: int
    load_s: float
    baseline_s: float
    detect_s: float
    hydrate_s: float

    @property
    def regain_s(self) -> float:
        return self.detect_s + self.hydrate_s

    @property
    def baseline_mb_s(self) -> float:
        return self.mib * MIB / 1e6 / self.baseline_s

    @property
    def hydrate_mb_s(self) -> float:
        return self.mib * MIB / 1e6 / self.hydrate_s


def bench_repair(args: argparse.Namespace) -> int:
    try:
        sizes = [float(s) for s in args.sizes_mib.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes-mib {args.sizes_mib!r} is not a comma-separated list of numbers") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise SystemExit("--sizes-mib needs positive sizes")
    if args.failure_timeout_ms < HEARTBEAT_TIMEOUT_MS:
        raise SystemExit(f"--failure-timeout-ms must be at least the heartbeat timeout ({HEARTBEAT_TIMEOUT_MS} ms)")
    print(
        f"sixfold bench repair: lose node {VICTIM} holding N MiB of 4 KiB page images in one PG; the control "
        f"plane (failure timeout {args.failure_timeout_ms} ms) replaces its segment on spare {SPARE}",
        flush=True,
    )
    figures = []
    for mib in sizes:
        figures.append(_one_size(mib, args))
    print()
    header = (
        f"{'size':>8} {'records':>8} | {'baseline copy':>13} {'MB/s':>7} | {'regain 6':>8} {'detect':>7} "
        f"{'hydrate':>8} {'MB/s':>7} {'of base':>7}"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        print(
            f"{f.mib:>5g}MiB {f.records:>8} | {f.baseline_s:>12.2f}s {f.baseline_mb_s:>7.1f} | "
            f"{f.regain_s:>7.2f}s {f.detect_s:>6.2f}s {f.hydrate_s:>7.2f}s {f.hydrate_mb_s:>7.1f} "
            f"{f.hydrate_mb_s / f.baseline_mb_s:>6.0%}"
        )
    print(
        "\nregain 6 = from the SIGKILL until the control plane records six segments without the lost node "
        "(detect + hydrate);\ndetect = until the replacement begins (the failure timeout plus up to one healing "
        "round); hydrate = until the new segment's SCL reached its target and the change completed;\nbaseline "
        "copy = one client reading the segment's records from a surviving peer and appending them, synced, to a "
        "scratch segment on the same spare."
    )
    return 0


class _Harness:
    """This bench plays the writer (it loads the segments) and, for the baseline copy, the control plane (a
    scratch segment, with a data key from the key service on a cluster that encrypts at rest): certificates of
    those roles from the cluster's CA (None: a plaintext cluster)."""

    writer: Any = None
    control_plane: Any = None
    key_service: str = ""  # the key service's address ("": none, a plaintext cluster)


def _one_size(mib: float, args: argparse.Namespace) -> RepairFigure:
    from sixfold.storage.security import pki
    from sixfold.tools.cluster import Cluster
    from sixfold.tools.cluster_layout import KMS
    from sixfold.tools.cluster_tls import harness_identity

    workdir = Path(tempfile.mkdtemp(prefix=f"sixfold-bench-repair-{mib:g}-"))
    cluster = Cluster(workdir / "cluster")
    with cluster:
        print(f"\n{mib:g} MiB: starting a cluster with one spare per AZ in {workdir}", flush=True)
        cluster.up(
            spares=1,
            heartbeat_timeout_ms=HEARTBEAT_TIMEOUT_MS,
            failure_timeout_ms=args.failure_timeout_ms,
            compute=False,
        )
        _Harness.writer = harness_identity(cluster.state_dir, pki.ROLE_WRITER)
        _Harness.control_plane = harness_identity(cluster.state_dir, pki.ROLE_CONTROL_PLANE)
        _Harness.key_service = next((r.address for r in cluster.records() if r.name == KMS), "")
        geometry = _create_volume(cluster.control_plane_address())
        pg = geometry.protection_groups[0]
        nodes = {s.node_id: s.address for s in pg.segments}
        assert VICTIM in nodes and SPARE not in nodes, nodes
        records = _make_records(int(mib * MIB / PAGE_SIZE))
        started = time.perf_counter()
        _load(nodes, pg.segments[0].segment_id, records)
        load_s = time.perf_counter() - started
        print(f"  loaded {len(records)} records ({mib:g} MiB) onto 6 segments in {load_s:.1f} s", flush=True)
        peer = next(n for n in nodes if n != VICTIM)
        baseline_s = _baseline_copy(
            nodes[peer], cluster.node_address(SPARE), pg.segments[0].segment_id, records[-1].lsn
        )
        print(f"  baseline: copied the segment from {peer} to {SPARE} in {baseline_s:.2f} s", flush=True)
        detect_s, hydrate_s = _lose_and_regain(cluster, pg.segments[0].segment_id)
        if args.keep:
            print(f"  kept {workdir}")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return RepairFigure(mib, len(records), load_s, baseline_s, detect_s, hydrate_s)


def _create_volume(control_plane: str):
    from sixfold.storage.security import transport
    from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
    from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc

    with transport.channel(control_plane, ()) as channel:  # as the cluster's `cli`
        return (
            cp_grpc.ControlPlaneServiceStub(channel)
            .CreateVolume(
                cp_pb.CreateVolumeRequest(volume_id=VOLUME, page_size=PAGE_SIZE, segment_size_bytes=PAGES * PAGE_SIZE),
                timeout=30,
            )
            .geometry
        )


def _make_records(count: int):
    from sixfold.storage.chain import ChainBuilder

    chain = ChainBuilder()
    return [chain.image(i % PAGES, (i.to_bytes(8, "big") * (PAGE_SIZE // 8))) for i in range(count)]


def _append_stream(address: str, segment_id: str, batches, last_lsn: int) -> None:
    """Send the batches over one AppendRecords stream with WINDOW in flight; every ack is a synced batch."""
    from sixfold.storage.security import transport
    from sixfold.storage.serving import CHANNEL_OPTIONS
    from sixfold.storage.v1 import storage_service_pb2 as pb
    from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

    credit = threading.Semaphore(WINDOW)

    def requests():
        for i, records in enumerate(batches):
            credit.acquire()
            yield pb.AppendRecordsRequest(
                segment_id=segment_id, volume_epoch=1, membership_epoch=1, batch_id=i, records=records
            )

    scl = 0
    with transport.channel_as(_Harness.writer, address, CHANNEL_OPTIONS) as channel:
        for ack in pb_grpc.StorageServiceStub(channel).AppendRecords(
            requests(), timeout=REGAIN_TIMEOUT_S, wait_for_ready=True
        ):
            scl = ack.scl
            credit.release()
    if scl != last_lsn:
        raise SystemExit(f"segment {segment_id} on {address} acknowledged up to SCL {scl}, not {last_lsn}")


def _load(nodes: dict[str, str], segment_id: str, records) -> None:
    from sixfold.storage.wire import record_to_proto

    protos = [record_to_proto(r) for r in records]
    batches = [protos[i : i + BATCH_RECORDS] for i in range(0, len(protos), BATCH_RECORDS)]
    errors: list[BaseException] = []

    def one(address: str) -> None:
        try:
            _append_stream(address, segment_id, batches, records[-1].lsn)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=one, args=(a,)) for a in nodes.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"loading failed: {errors[0]}")


def _scratch_data_key(volume_id: str) -> bytes:
    """A data key for the scratch volume, wrapped by the key service, as the control plane asks for one for a
    new volume (b"": a plaintext cluster, whose nodes store in clear)."""
    if not _Harness.key_service:
        return b""
    from sixfold.storage.security import transport
    from sixfold.storage.v1 import key_service_pb2 as kpb
    from sixfold.storage.v1 import key_service_pb2_grpc as kgrpc

    with transport.channel_as(_Harness.control_plane, _Harness.key_service, ()) as channel:
        reply = kgrpc.KeyServiceStub(channel).GenerateDataKey(kpb.GenerateDataKeyRequest(key_id=volume_id), timeout=30)
    return bytes(reply.wrapped_data_key)


def _baseline_copy(source: str, target: str, segment_id: str, last_lsn: int) -> float:
    """Read every record from `source` and append it to a scratch segment on `target`; the seconds it took."""
    from sixfold.storage.security import transport
    from sixfold.storage.v1 import storage_service_pb2 as pb
    from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

    scratch = f"{VOLUME}-baseline/pg-00000"
    wrapped_key = _scratch_data_key(f"{VOLUME}-baseline")
    with transport.channel_as(_Harness.control_plane, target, ()) as channel:
        pb_grpc.StorageServiceStub(channel).CreateSegment(
            pb.CreateSegmentRequest(
                segment_id=scratch,
                volume_id=f"{VOLUME}-baseline",
                pg_index=0,
                first_page=0,
                page_count=PAGES,
                page_size=PAGE_SIZE,
                membership_epoch=1,
                wrapped_data_key=wrapped_key,
            ),
            timeout=30,
        )

    def batches():
        with transport.channel_as(_Harness.writer, source, ()) as channel:
            stub = pb_grpc.StorageServiceStub(channel)
            cursor = 0
            while True:
                reply = stub.ReadRecords(
                    pb.ReadRecordsRequest(segment_id=segment_id, from_lsn=cursor, max_records=BATCH_RECORDS), timeout=60
                )
                if reply.records:
                    yield list(reply.records)
                    cursor = reply.records[-1].lsn
                if not reply.more or not reply.records:
                    return

    started = time.perf_counter()
    _append_stream(target, scratch, batches(), last_lsn)
    elapsed = time.perf_counter() - started
    with transport.channel_as(_Harness.control_plane, target, ()) as channel:
        pb_grpc.StorageServiceStub(channel).DropSegment(pb.DropSegmentRequest(segment_id=scratch), timeout=60)
    return elapsed


def _lose_and_regain(cluster, segment_id: str) -> tuple[float, float]:
    from sixfold.storage.security import transport
    from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
    from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc

    with transport.channel(cluster.control_plane_address(), ()) as channel:
        stub = cp_grpc.ControlPlaneServiceStub(channel)
        cluster.kill(VICTIM)
        killed = time.perf_counter()
        print(f"  SIGKILLed {VICTIM}", flush=True)
        begun = None
        last_report = 0.0
        while time.perf_counter() - killed < REGAIN_TIMEOUT_S:
            pg = stub.DescribeVolume(
                cp_pb.DescribeVolumeRequest(volume_id=VOLUME), timeout=10
            ).geometry.protection_groups[0]
            now = time.perf_counter()
            if pg.changes and begun is None:
                begun = now
                print(
                    f"  {now - killed:5.2f} s: replacing {pg.changes[0].old_node_id} with {pg.changes[0].new_node_id}",
                    flush=True,
                )
            if pg.changes and now - last_report >= 1.0 and pg.changes[0].target_measured:
                c = pg.changes[0]
                print(f"  {now - killed:5.2f} s: hydrated to LSN {c.new_segment_scl} of {c.target_lsn}", flush=True)
                last_report = now
            ids = {s.node_id for s in pg.segments}
            if not pg.changes and len(ids) == 6 and VICTIM not in ids:
                print(f"  {now - killed:5.2f} s: six healthy copies ({', '.join(sorted(ids))})", flush=True)
                begun = begun if begun is not None else now
                return begun - killed, now - begun
            time.sleep(0.02)
    raise SystemExit(f"segment {segment_id}: six healthy copies not regained within {REGAIN_TIMEOUT_S:g} s")
