"""`sixfold bench replica`: how far behind the writer read replicas are under a write load, and what reads
they serve, beside reads on the writer and plain local SQLite from the same run.

A cluster of its own (control plane, six storage nodes, the writer `compute` and the read replicas
`replica1`, `replica2`) is started through the launcher in a temporary directory and always stopped at
the end. Then:

    load    `--rows` rows of ~100 B (`item`) through the cluster endpoint; wait until every reader shows
            them all (the local SQLite file gets the same rows at the end, after the cluster stopped).
    lag     `--concurrency` closed-loop clients (coroutines on one grpc.aio channel) run autocommit INSERTs
            on the writer for a 1 s warm-up + `--duration` s; meanwhile each of 4 probes commits a marker row
            with an increasing counter on the writer and, once acknowledged, polls every reader with a point SELECT
            (back to back) until it sees it: the time from the acknowledgement at the client to the reply of
            the first SELECT that shows the marker, per reader. The figure includes that one SELECT's round
            trip (its p50 is printed: the probe's resolution). Every instance's own report
            (InstanceService.GetInstanceStatus: a reader's apply time minus the writer's release time, p50/p99
            over its last 10 s, and its applied VDL beside the writer's VDL asked at the same moment: the VDL
            gap in LSNs) is sampled every 0.25 s and once more at the end.
    reads   `--read-concurrency` closed-loop clients running point SELECTs by primary key (no writes):
            all on the writer (0 readers), all on replica1 (1 reader), alternating replica1/replica2 (2
            readers), each 1 s warm-up + `--duration` s; then the same SELECTs on the local SQLite file
            (one connection per thread), as ratios to reads on the writer. CPU cores per process group
            (from /proc) show what bounded each figure: every process shares this machine's cores.

The aim (issue 15) is lag p99 <= 20 ms; the figure is printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sixfold.tools.bench_commit_measure import CALL_TIMEOUT_S, WARMUP_S, CpuMeter, Phase, Snapshot, closed_loop

LOAD_TIMEOUT_S = 120.0
CATCH_UP_S = 60.0  # until every reader shows the loaded rows
PROBE_TIMEOUT_S = 10.0  # a marker not seen on a reader by then counts as missed
PROBE_GAP_S = 0.01  # between one marker seen everywhere and the probe's next
PROBES = 4  # probes at once (more samples when commits are slow), each its own markers
STATUS_EVERY_S = 0.25
FILLER = 84  # bytes of text per row: ~100 B rows, as bench sql's accounts
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS item(id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS marker(n INTEGER PRIMARY KEY, at REAL)",
    "CREATE TABLE IF NOT EXISTS load(id INTEGER PRIMARY KEY, c INTEGER, v TEXT)",
)
LOAD_ITEMS = (
    "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
    "INSERT INTO item(id, v) SELECT i, ? FROM n"
)
SELECT_ITEM = "SELECT v FROM item WHERE id = ?"
SQLITE_JOIN_S = 10.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase (default 10)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="closed-loop INSERT clients during the lag phase (default 64)"
    )
    parser.add_argument(
        "--read-concurrency", type=int, default=32, help="closed-loop SELECT clients per read phase (default 32)"
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows the point SELECTs read (default 10,000)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's state directory and the SQLite file")


def ms(seconds: float) -> float:
    return seconds * 1000


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def progress(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class Member:
    name: str
    address: str


def members(control_plane: str) -> tuple[Member, list[Member]]:
    """(the writer, the live readers by name) as the control plane lists them."""
    from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
    from sixfold.tools.cluster_instances import list_instances

    reply = list_instances(control_plane, timeout_s=5.0)
    by_id = {i.instance_id: i for i in reply.instances}
    writer = by_id[reply.writer_id]
    readers = sorted(
        (Member(i.instance_id, i.address) for i in reply.instances if i.alive and i.role == cl_pb.COMPUTE_ROLE_READER),
        key=lambda m: m.name,
    )
    return Member(writer.instance_id, writer.address), readers


class Sql:
    """SqlService and InstanceService over one grpc.aio channel per address."""

    def __init__(self, volume_id: str) -> None:
        self.volume_id = volume_id
        self._channels: dict[str, Any] = {}
        self._stubs: dict[str, tuple[Any, Any]] = {}

    def _stub(self, address: str, instance: bool = False) -> Any:
        from sixfold.compute.v1 import instance_service_pb2_grpc as igrpc
        from sixfold.compute.v1 import sql_service_pb2_grpc as sgrpc
        from sixfold.storage.security import transport  # the cluster's `cli` identity on a TLS cluster
        from sixfold.storage.serving import CHANNEL_OPTIONS

        if address not in self._stubs:
            channel = self._channels[address] = transport.aio_channel(address, CHANNEL_OPTIONS)
            self._stubs[address] = (sgrpc.SqlServiceStub(channel), igrpc.InstanceServiceStub(channel))
        return self._stubs[address][instance]

    async def execute(self, address: str, sql: str, params: Sequence[Any] = (), timeout_s: float = CALL_TIMEOUT_S):
        """The rows (a write is durable on return)."""
        from sixfold.compute.sql_values import rows_from_proto, statement_to_proto
        from sixfold.compute.v1 import sql_service_pb2 as spb

        statement = statement_to_proto(sql, params)
        request = spb.ExecuteRequest(volume_id=self.volume_id, sql=statement.sql, params=statement.params)
        return rows_from_proto((await self._stub(address).Execute(request, timeout=timeout_s)).result)

    async def status(self, address: str) -> Any:
        from sixfold.compute.v1 import instance_service_pb2 as ipb

        return await self._stub(address, True).GetInstanceStatus(ipb.GetInstanceStatusRequest(), timeout=5.0)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()), return_exceptions=True)


@dataclass
class Lag:
    """One reader's figures from the lag phase."""

    seen_s: list[float] = field(default_factory=list)  # ack at the client -> reply of the first SELECT showing it
    missed: int = 0
    reported_p50_ms: float = float("nan")  # the instance's own, over its last 10 s, read at the end
    reported_p99_ms: float = float("nan")
    reported_p99_max_ms: float = 0.0  # the highest p99 any sample showed
    vdl_gaps: list[int] = field(default_factory=list)  # the writer's VDL minus the applied VDL, sampled
    applied_vdl: int = 0


@dataclass
class Results:
    writer: Member
    readers: list[Member]
    write: Phase | None = None
    lags: dict[str, Lag] = field(default_factory=dict)
    markers: int = 0
    marker_errors: int = 0
    poll_rtts: list[float] = field(default_factory=list)
    writer_vdl: int = 0
    reads: dict[str, Phase] = field(default_factory=dict)


async def _load(sql: Sql, writer: Member, readers: list[Member], rows: int, page_size: int) -> None:
    from sixfold.tools.bench_sql_workload import accounts_per_load_txn

    for statement in SCHEMA:
        await sql.execute(writer.address, statement, timeout_s=LOAD_TIMEOUT_S)
    step = accounts_per_load_txn(page_size)
    for start in range(1, rows + 1, step):
        end = min(rows, start + step - 1)
        await sql.execute(writer.address, LOAD_ITEMS, [start, end, "x" * FILLER], timeout_s=LOAD_TIMEOUT_S)
    deadline = time.monotonic() + CATCH_UP_S
    for reader in readers:
        while True:
            try:
                count = (await sql.execute(reader.address, "SELECT count(*) FROM item"))[0][0]
            except Exception:  # noqa: BLE001 - a reader still following its first snapshot: ask again
                count = -1
            if count == rows:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{reader.name} shows {count} of {rows} rows after {CATCH_UP_S:g} s")
            await asyncio.sleep(0.1)


async def _watch(sql: Sql, reader: Member, n: int, acked: float, results: Results) -> None:
    lag = results.lags[reader.name]
    while True:
        sent = time.perf_counter()
        try:
            rows = await sql.execute(reader.address, "SELECT count(*) FROM marker WHERE n = ?", [n])
        except Exception:  # noqa: BLE001 - counted as not seen yet; the deadline ends it
            rows = [(0,)]
        got = time.perf_counter()
        results.poll_rtts.append(got - sent)
        if rows[0][0]:
            lag.seen_s.append(got - acked)
            return
        if got - acked > PROBE_TIMEOUT_S:
            lag.missed += 1
            return


async def _probe(sql: Sql, results: Results, stop: asyncio.Event, index: int) -> None:
    """Markers with an increasing counter (index, index + PROBES, ...), each watched on every reader until seen."""
    await asyncio.sleep(WARMUP_S)
    n = index
    while not stop.is_set():
        n += PROBES
        try:
            await sql.execute(results.writer.address, "INSERT INTO marker(n, at) VALUES (?, ?)", [n, time.time()])
        except Exception:  # noqa: BLE001 - counted; the next marker goes on
            results.marker_errors += 1
            await asyncio.sleep(0.05)
            continue
        acked = time.perf_counter()
        results.markers += 1
        await asyncio.gather(*(_watch(sql, r, n, acked, results) for r in results.readers))
        await asyncio.sleep(PROBE_GAP_S)


async def _sample_status(sql: Sql, results: Results, stop: asyncio.Event) -> None:
    """Every instance's own report (GetInstanceStatus, all asked at once) every STATUS_EVERY_S, and once more
    after `stop`: the readers' lag p50/p99 and applied VDL, and the gap to the writer's VDL at that moment."""
    await asyncio.sleep(WARMUP_S)
    everyone = [results.writer, *results.readers]
    while True:
        ending = stop.is_set()
        replies = await asyncio.gather(*(sql.status(m.address) for m in everyone), return_exceptions=True)
        own = {
            m.name: v
            for m, reply in zip(everyone, replies)
            if not isinstance(reply, BaseException)
            for v in reply.volumes
            if v.volume_id == sql.volume_id
        }
        writer = own.get(results.writer.name)
        results.writer_vdl = int(writer.applied_vdl) if writer else results.writer_vdl
        for name, lag in results.lags.items():
            if (mine := own.get(name)) is None:
                continue
            lag.reported_p50_ms, lag.reported_p99_ms = mine.lag_ms_p50, mine.lag_ms_p99
            lag.reported_p99_max_ms = max(lag.reported_p99_max_ms, mine.lag_ms_p99)
            lag.applied_vdl = int(mine.applied_vdl)
            if writer is not None and not ending:
                lag.vdl_gaps.append(max(0, int(writer.applied_vdl) - lag.applied_vdl))
        if ending:
            return
        await asyncio.sleep(STATUS_EVERY_S)


async def _measure(sql: Sql, results: Results, args: argparse.Namespace, meter: CpuMeter, page_size: int) -> None:
    writer, readers = results.writer, results.readers
    progress(f"loading {args.rows:,} rows of ~100 B through the cluster endpoint ({writer.name})")
    await _load(sql, writer, readers, args.rows, page_size)

    async def snapshot() -> Snapshot:
        return Snapshot(time.perf_counter(), cpu_s=meter.read())

    filler = "y" * FILLER

    async def insert(rng: random.Random) -> None:
        await sql.execute(writer.address, "INSERT INTO load(c, v) VALUES (?, ?)", [rng.randrange(1 << 30), filler])

    progress(
        f"lag: c={args.concurrency} INSERTs on {writer.name}, {PROBES} marker probes watching "
        f"{', '.join(r.name for r in readers)}; {WARMUP_S:g} s warm-up + {args.duration:g} s"
    )
    results.lags = {r.name: Lag() for r in readers}
    stop = asyncio.Event()
    side = [asyncio.create_task(_probe(sql, results, stop, i)) for i in range(PROBES)]
    side.append(asyncio.create_task(_sample_status(sql, results, stop)))
    try:
        results.write = await closed_loop(insert, args.concurrency, args.duration, snapshot, "write")
    finally:
        stop.set()
        await asyncio.wait(side, timeout=PROBE_TIMEOUT_S + CALL_TIMEOUT_S)
        for task in side:
            task.cancel()

    def read_on(addresses: list[str]) -> Callable[[random.Random], Awaitable[None]]:
        turn = itertools.cycle(addresses)  # the clients take the addresses in turn

        async def read(rng: random.Random) -> None:
            assert await sql.execute(next(turn), SELECT_ITEM, [rng.randint(1, args.rows)]), "a loaded row is missing"

        return read

    for label, addresses in (
        (f"writer ({writer.name})", [writer.address]),
        (f"1 reader ({readers[0].name})", [readers[0].address]),
        (f"{len(readers)} readers", [r.address for r in readers]),
    ):
        progress(f"reads: c={args.read_concurrency} point SELECTs on {label}; {WARMUP_S:g} s + {args.duration:g} s")
        results.reads[label] = await closed_loop(
            read_on(addresses), args.read_concurrency, args.duration, snapshot, label
        )


def _sqlite_reads(path: str, rows: int, concurrency: int, seconds: float, meter: CpuMeter) -> Phase:
    """The same point SELECTs on a local SQLite file: one apsw connection per thread, closed loop."""
    import apsw

    db = apsw.Connection(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(SCHEMA[0])
    db.execute("BEGIN")
    db.execute(LOAD_ITEMS, [1, rows, "x" * FILLER])
    db.execute("COMMIT")
    db.close()
    stop, measuring = threading.Event(), threading.Event()
    latencies: list[float] = []

    def client(index: int) -> None:
        rng, conn = random.Random(index), apsw.Connection(path)
        try:
            while not stop.is_set():
                started = time.perf_counter()
                assert conn.execute(SELECT_ITEM, [rng.randint(1, rows)]).fetchall()
                if measuring.is_set():
                    latencies.append(time.perf_counter() - started)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(WARMUP_S)
        before = Snapshot(time.perf_counter(), cpu_s=meter.read())
        measuring.set()
        time.sleep(seconds)
        measuring.clear()
        after = Snapshot(time.perf_counter(), cpu_s=meter.read())
    finally:
        stop.set()
        for thread in threads:
            thread.join(SQLITE_JOIN_S)
    return Phase("SQLite", concurrency, after.at - before.at, latencies, [], before, after)


def _cores(phase: Phase, groups: list[str]) -> str:
    return ", ".join(f"{g} {phase.cores(g):.2f}" for g in groups)


def print_results(results: Results, args: argparse.Namespace, groups: list[str]) -> None:
    write = results.write
    assert write is not None
    print(
        f"\nreader lag under c={args.concurrency} autocommit INSERTs on {results.writer.name}: "
        f"{write.per_s:,.0f} commits/s, p50 {write.percentile_ms(0.5):.1f} ms, p99 {write.percentile_ms(0.99):.1f} ms"
        + (f", {len(write.errors)} errors" if write.errors else "")
    )
    print(
        f"probe: {results.markers} markers committed on the writer ({results.marker_errors} failed), each polled "
        f"on every reader until seen ({PROBES} probes at once); a reader SELECT's round trip p50 "
        f"{ms(percentile(results.poll_rtts, 0.5)):.1f} ms"
    )
    header = (
        f"{'reader':>10} | {'seen p50':>9} {'seen p99':>9} {'max':>8} {'missed':>6} | "
        f"{'own p50':>8} {'own p99':>8} {'p99 max':>8} | {'VDL gap mean':>12} {'max':>6}"
    )
    print(header)
    print("-" * len(header))
    every: list[float] = []
    for name, lag in results.lags.items():
        every.extend(lag.seen_s)
        mean = sum(lag.vdl_gaps) / len(lag.vdl_gaps) if lag.vdl_gaps else float("nan")
        print(
            f"{name:>10} | {ms(percentile(lag.seen_s, 0.5)):>6.1f} ms {ms(percentile(lag.seen_s, 0.99)):>6.1f} ms "
            f"{ms(max(lag.seen_s, default=float('nan'))):>5.1f} ms {lag.missed:>6} | "
            f"{lag.reported_p50_ms:>5.1f} ms {lag.reported_p99_ms:>5.1f} ms {lag.reported_p99_max_ms:>5.1f} ms | "
            f"{mean:>12.1f} {max(lag.vdl_gaps, default=0):>6}"
        )
    print(
        f"{'overall':>10} | {ms(percentile(every, 0.5)):>6.1f} ms {ms(percentile(every, 0.99)):>6.1f} ms "
        f"{ms(max(every, default=float('nan'))):>5.1f} ms"
    )
    own_p99 = max((lag.reported_p99_ms for lag in results.lags.values()), default=float("nan"))
    print(
        f"aim lag p99 <= 20 ms: probe (acknowledged -> seen on a reader, incl. one SELECT) p99 "
        f"{ms(percentile(every, 0.99)):.1f} ms; instances' own (writer release -> applied) p99 {own_p99:.1f} ms"
    )
    applied = ", ".join(f"{n} {lag.applied_vdl:,}" for n, lag in results.lags.items())
    print(
        f"own: each reader's report (writer release -> applied, its last 10 s); VDL gap: the writer's VDL minus the "
        f"reader's applied VDL in LSNs, sampled together every {STATUS_EVERY_S:g} s;\nat the end: writer VDL "
        f"{results.writer_vdl:,}; applied VDL {applied}"
    )

    base = results.reads[next(iter(results.reads))]
    print(f"\nread throughput: point SELECTs by primary key, {args.rows:,} rows, c={args.read_concurrency}, no writes")
    header = f"{'serving':>22} | {'selects/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'vs writer':>9} | CPU cores"
    print(header)
    print("-" * len(header))
    for label, phase in results.reads.items():
        errors = f" ({len(phase.errors)} errors)" if phase.errors else ""
        print(
            f"{label:>22} | {phase.per_s:>10,.0f} {phase.percentile_ms(0.5):>7.3f} {phase.percentile_ms(0.99):>7.3f} | "
            f"{phase.per_s / base.per_s if base.per_s else float('nan'):>8.2f}x | {_cores(phase, groups)}{errors}"
        )
    print(
        "CPU cores: each process group's CPU seconds per second over the phase (bench = this process, the clients);"
        f" this machine has {os.cpu_count()} cores for all of them (machine: every process, other users' too)"
    )


async def _run(volume_id: str, results: Results, args: argparse.Namespace, meter: CpuMeter) -> None:
    sql = Sql(volume_id)
    try:
        page_size = (await sql.execute(results.writer.address, "PRAGMA page_size"))[0][0]
        await _measure(sql, results, args, meter, int(page_size))
    finally:
        await sql.close()


def _settled(control_plane: str, readers: int) -> tuple[Member, list[Member]]:
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        try:
            writer, live = members(control_plane)
            if len(live) >= readers:
                return writer, live
        except Exception:  # noqa: BLE001 - no writer listed yet: ask again
            live = []
        if time.monotonic() > deadline:
            raise SystemExit(f"the control plane lists {len(live)} live readers, not {readers}, after {CATCH_UP_S:g} s")
        time.sleep(0.1)


def bench_replica(args: argparse.Namespace) -> int:
    from sixfold.tools.bench_commit_measure import MACHINE
    from sixfold.tools.cluster import CONTROL_PLANE, Cluster

    if args.duration <= 0 or args.concurrency < 1 or args.read_concurrency < 1 or args.rows < 1:
        raise SystemExit("--duration, --concurrency, --read-concurrency and --rows must be positive")
    workdir = tempfile.mkdtemp(prefix="sixfold-bench-replica-")
    state_dir = os.path.join(workdir, "cluster")
    print(
        f"sixfold bench replica: a cluster with 2 read replicas; reader lag under c={args.concurrency} INSERTs, then "
        f"point SELECTs at c={args.read_concurrency} on the writer, 1 and 2 readers, and local SQLite;\n"
        f"{WARMUP_S:g} s warm-up + {args.duration:g} s per phase (~{5 * (WARMUP_S + args.duration):.0f} s plus "
        f"start-up and load); files in {workdir}\nmachine: {os.cpu_count()} CPUs shared by the cluster's 10 "
        f"processes and the clients, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    groups: list[str] = []
    try:
        with Cluster(state_dir) as cluster:
            started = time.perf_counter()
            cluster.up(replicas=2)
            writer, readers = _settled(cluster.control_plane_address(), 2)
            progress(
                f"cluster up in {time.perf_counter() - started:.1f} s: writer {writer.name} at {writer.address}, "
                + ", ".join(f"reader {r.name} at {r.address}" for r in readers)
            )
            pids = {m.name: [p for p in [cluster.pid(m.name)] if p] for m in [writer, *readers]}
            pids["nodes"] = [p for n in cluster.node_names() if (p := cluster.pid(n))]
            pids["control"] = [p for p in [cluster.pid(CONTROL_PLANE)] if p]
            pids["bench"] = [os.getpid()]
            meter = CpuMeter(pids)
            groups = ["bench", *(m.name for m in [writer, *readers]), "nodes", MACHINE]
            results = Results(writer, readers)
            asyncio.run(_run(cluster.default_volume() or "vol0", results, args, meter))
            progress("stopping the cluster")
        progress(
            f"reads: c={args.read_concurrency} point SELECTs on local SQLite; {WARMUP_S:g} s + {args.duration:g} s"
        )
        sqlite = os.path.join(workdir, "sqlite.db")
        results.reads["local SQLite"] = _sqlite_reads(sqlite, args.rows, args.read_concurrency, args.duration, meter)
    finally:
        if args.keep:
            print(f"kept {workdir} (cluster logs under {os.path.join(state_dir, 'logs')})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_results(results, args, groups)
    return 0
