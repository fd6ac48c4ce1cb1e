"""`sixfold bench …`: benchmarks that print their figures beside a baseline from the same run.

sixfold bench storage    durable batched appends to one storage node (100 B and 4 KiB payloads)
                         next to an in-process LMDB ceiling: the same records, the same batch
                         size, one synced transaction per batch, no gRPC and no protocol.
sixfold bench commit     durable one-page MTRs through the compute node (commits/s, p50/p99) at
                         several concurrencies, also with two storage nodes paused, next to a bare
                         fan-out of the same records to six segments (see tools/bench_commit.py).
sixfold bench repair     time to regain six healthy copies after losing a node holding N MiB (two
                         sizes) and the hydration rate, next to a bare copy of the same segment
                         (see tools/bench_repair.py).
sixfold bench sql        a TPC-B-like transaction through the SQL service (transactions/s, p50/p99, network
                         bytes per transaction) at several concurrencies, next to plain SQLite on the local
                         disk and to shipping whole dirtied pages to six copies (see tools/bench_sql.py).
sixfold bench clone      time to clone volumes of 1, 64 and 512 MiB and what it copies (nothing), and page reads
                         through a clone next to reads of its parent (see tools/bench_clone.py).
sixfold bench replica    reader lag (commit acknowledged -> visible on each of 2 read replicas, p50/p99) under
                         a c=64 write load, and point SELECTs/s on 0, 1 and 2 readers next to reads on the writer
                         and local SQLite (see tools/bench_replica.py).
sixfold bench failover   SIGKILL the writer again and again: time from the kill to the first acknowledged commit
                         through the cluster endpoint (p50, max), no acknowledged insert lost, next to a manual
                         failover of a live writer (see tools/bench_failover.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

PORT_WAIT_S = 30.0
STOP_WAIT_S = 10.0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    sub.required = True
    p = sub.add_parser("storage", help="durable records/s and MB/s of batched appends to one storage node")
    p.add_argument("--payloads", default="100,4096", help="payload sizes in bytes, comma-separated (default 100,4096)")
    p.add_argument("--batch-records", type=int, default=500, help="records per batch (default 500)")
    p.add_argument("--window", type=int, default=8, help="batches in flight on the stream (default 8)")
    p.add_argument("--mib", type=float, default=0, help="MiB of payload per size (default: enough for ~4 s each)")
    p.add_argument("--records", type=int, default=0, help="records per size (overrides --mib)")
    p.add_argument("--keep", action="store_true", help="keep the node's data directory and log")
    from sixfold.tools import bench_commit

    bench_commit.configure(
        sub.add_parser(
            "commit", help="commits/s and latency of durable one-page MTRs through the writer, next to a bare fan-out"
        )
    )
    from sixfold.tools import bench_repair

    bench_repair.configure(
        sub.add_parser(
            "repair", help="time to regain six healthy copies after losing a node, and the hydration rate in MB/s"
        )
    )
    from sixfold.tools import bench_sql

    bench_sql.configure(
        sub.add_parser(
            "sql",
            help="TPC-B-like transactions/s, latency and network bytes through the SQL service, next to local "
            "SQLite and to page shipping",
        )
    )
    from sixfold.tools import bench_clone

    bench_clone.configure(
        sub.add_parser(
            "clone", help="time and bytes copied to clone volumes of several sizes, and fall-through read latency"
        )
    )
    from sixfold.tools import bench_replica

    bench_replica.configure(
        sub.add_parser(
            "replica",
            help="read replicas: lag from commit to visibility on each reader under load, and read throughput on "
            "0, 1 and 2 readers",
        )
    )
    from sixfold.tools import bench_failover

    bench_failover.configure(
        sub.add_parser(
            "failover", help="time from SIGKILLing the writer to the first acknowledged commit, and no lost writes"
        )
    )


def run(args: argparse.Namespace) -> int:
    if args.bench == "storage":
        return bench_storage(args)
    if args.bench == "commit":
        from sixfold.tools.bench_commit import bench_commit

        return bench_commit(args)
    if args.bench == "repair":
        from sixfold.tools.bench_repair import bench_repair

        return bench_repair(args)
    if args.bench == "sql":
        from sixfold.tools.bench_sql import bench_sql

        return bench_sql(args)
    if args.bench == "clone":
        from sixfold.tools.bench_clone import bench_clone

        return bench_clone(args)
    if args.bench == "replica":
        from sixfold.tools.bench_replica import bench_replica

        return bench_replica(args)
    if args.bench == "failover":
        from sixfold.tools.bench_failover import bench_failover

        return bench_failover(args)
    raise SystemExit(f"unknown benchmark {args.bench!r}")


# -- storage ------------------------------------------------------------------


@dataclass
class Figure:
    records: int
    payload_bytes: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / self.seconds / 1e6


def _records_for(size: int, args: argparse.Namespace) -> int:
    if args.records:
        return args.records
    if args.mib:
        return max(args.batch_records, int(args.mib * 1024 * 1024 / size))
    return 100_000 if size <= 256 else 20_000


def _make_records(count: int, size: int, page_size: int, pages: int):
    from sixfold.storage.chain import ChainBuilder

    chain = ChainBuilder()
    out = []
    for i in range(count):
        payload = (i.to_bytes(8, "big") * (size // 8 + 1))[:size]
        if size >= page_size:
            out.append(chain.image(i % pages, payload[:page_size]))
        else:
            out.append(chain.patch(i % pages, payload, (i * 97) % (page_size - size + 1)))
    return out


def _start_node(data_dir: str) -> tuple[subprocess.Popen, str, str]:
    port_file = os.path.join(data_dir, "port")
    log_path = os.path.join(data_dir, "node.log")
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "storage-node",
            "--node-id",
            "bench",
            "--az",
            "a",
            "--data-dir",
            os.path.join(data_dir, "node"),
            "--port-file",
            port_file,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + PORT_WAIT_S
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the storage node did not start; see {log_path}")
        time.sleep(0.05)
    with open(port_file) as f:
        return proc, f"127.0.0.1:{f.read().strip()}", log_path


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _stream_to_node(address: str, segment_id: str, records, batch_records: int, window: int) -> float:
    import grpc

    from sixfold.storage.serving import CHANNEL_OPTIONS
    from sixfold.storage.v1 import storage_service_pb2 as pb
    from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
    from sixfold.storage.wire import record_to_proto

    requests = [
        pb.AppendRecordsRequest(
            segment_id=segment_id,
            volume_epoch=1,
            membership_epoch=1,
            batch_id=i,
            records=[record_to_proto(r) for r in records[i : i + batch_records]],
        )
        for i in range(0, len(records), batch_records)
    ]
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StorageServiceStub(channel)
        credit = asyncio.Semaphore(window)

        async def produce():
            for request in requests:
                await credit.acquire()
                yield request

        started = time.perf_counter()
        acks = 0
        last_scl = 0
        async for ack in stub.AppendRecords(produce()):
            acks += 1
            last_scl = ack.scl
            credit.release()
        elapsed = time.perf_counter() - started
        assert acks == len(requests), (acks, len(requests))
        assert last_scl == records[-1].lsn, (last_scl, records[-1].lsn)
    return elapsed


def _create_segment(address: str, segment_id: str, page_size: int, pages: int) -> None:
    import grpc

    from sixfold.storage.v1 import storage_service_pb2 as pb
    from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        pb_grpc.StorageServiceStub(channel).CreateSegment(
            pb.CreateSegmentRequest(
                segment_id=segment_id,
                volume_id="bench",
                pg_index=0,
                first_page=0,
                page_count=pages,
                page_size=page_size,
                membership_epoch=1,
            ),
            timeout=10,
        )


def _lmdb_ceiling(path: str, records, batch_records: int) -> float:
    """The same encoded records and page-index rows, one synced LMDB transaction per batch, in process."""
    import lmdb

    from sixfold.storage.store import page_key, record_key

    env = lmdb.open(path, map_size=1 << 32, max_dbs=4, sync=True, metasync=True, readahead=False)
    rec_db, idx_db = env.open_db(b"records"), env.open_db(b"page_index")
    encoded = [(record_key(1, r.lsn), page_key(1, r.page_no, r.lsn), r.encode()) for r in records]
    started = time.perf_counter()
    for i in range(0, len(encoded), batch_records):
        with env.begin(write=True) as txn:
            for rkey, pkey, value in encoded[i : i + batch_records]:
                txn.put(rkey, value, db=rec_db)
                txn.put(pkey, b"", db=idx_db)
    elapsed = time.perf_counter() - started
    env.close()
    return elapsed


def bench_storage(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.payloads.split(",") if s.strip()]
    page_size, pages = 4096, 1024
    workdir = tempfile.mkdtemp(prefix="sixfold-bench-storage-")
    print(
        f"sixfold bench storage: batches of {args.batch_records} records, {args.window} in flight, "
        f"one storage node process on loopback; data in {workdir}"
    )
    proc, address, log_path = _start_node(workdir)
    rows = []
    try:
        for n, size in enumerate(sizes):
            count = _records_for(size, args)
            records = _make_records(count, size, page_size, pages)
            segment_id = f"bench/pg-{n:05d}"
            _create_segment(address, segment_id, page_size, pages)
            node_s = asyncio.run(_stream_to_node(address, segment_id, records, args.batch_records, args.window))
            ceiling_s = _lmdb_ceiling(os.path.join(workdir, f"ceiling-{size}"), records, args.batch_records)
            payload = sum(len(r.data) for r in records)
            rows.append((size, Figure(count, payload, node_s), Figure(count, payload, ceiling_s)))
            print(f"  {size} B: {count} records done", flush=True)
    finally:
        _stop(proc)
    print()
    header = (
        f"{'payload':>8} {'records':>8} | {'node rec/s':>11} {'node MB/s':>10} | "
        f"{'LMDB rec/s':>11} {'LMDB MB/s':>10} | {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for size, node, ceiling in rows:
        print(
            f"{size:>7}B {node.records:>8} | {node.records_per_s:>11,.0f} {node.mb_per_s:>10.1f} | "
            f"{ceiling.records_per_s:>11,.0f} {ceiling.mb_per_s:>10.1f} | "
            f"{node.records_per_s / ceiling.records_per_s:>6.2f}"
        )
    print(
        "\nnode: acknowledged after each group of batches was persisted and fsynced (gRPC stream, CRC checks, "
        "segment rules);\nLMDB: the same rows put in process, one synced transaction per batch (the ceiling)."
    )
    if args.keep:
        print(f"kept {workdir} (log {log_path})")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0
