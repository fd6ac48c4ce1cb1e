"""`sixfold bench commit`: durable one-page MTRs through the compute node, next to a bare fan-out baseline.

A cluster of its own (control plane, six storage nodes in three AZs, the writer)
is started in a temporary state directory and always stopped at the end. Then:

    normal     C closed-loop clients (coroutines on one grpc.aio channel in this process)
               call VolumeService.WritePages with one 100-byte patch at a random offset of
               one of 1,000 pages; a call returns once the MTR is durable (4/6, VDL >= LSN).
    bare       the same 100-byte records from this process straight to the six segments
               of a separate bench volume's PG over one AppendRecords stream each (boxcar,
               the writer's window), a "commit" done when 4 of 6 acknowledged its batch:
               no VolumeService hop, no LSN/VCL/VDL machinery. The baseline.
    empty      C clients calling the writer process's grpc.health.v1 Check: one unary call
               per "commit" and nothing else, the other ceiling (a commit is one such call).
    2 paused   `normal` again with storage nodes a2 and c1 stopped (SIGSTOP), so every
               commit needs all four remaining copies; resumed afterwards.

Each phase warms up for ~1 s, then counts the commits completed within `--seconds`.
Bytes on the network per commit come from the writer's own counter
(GetVolumeStatus.network_bytes_sent: serialized AppendRecords bytes sent to all segments).
CPU per process (from /proc) is shown to point at what limits throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

PAGES = 1_000  # the pages the MTRs land on (one page per MTR)
PATCH_BYTES = 100
COPIES = 6
WRITE_QUORUM = 4
PAUSED_NODES = ("a2", "c1")  # one node each in two AZs: the four left must all acknowledge
WARMUP_S = 1.0
CALL_TIMEOUT_S = 10.0
ERROR_BACKOFF_S = 0.05
DATA_POOL = 512  # distinct random payloads, reused
BARE_BATCH_RECORDS_MAX = 2_000
BARE_VOLUME = "bench-bare"

# The aim from the issue, printed as a target (never asserted).
TARGET_CONCURRENCY = 64
TARGET_COMMITS_PER_S = 1_500
TARGET_P99_MS = 50.0
TARGET_BARE_FRACTION = 0.5
# [P17] Verbitski et al., SIGMOD 2017, Table 1: 0.95 vs 7.39 I/Os per transaction (SysBench write-only).
PAPER_IO_RATIO = 7.7

NORMAL, PAUSED, BARE, EMPTY = "normal", "2 paused", "bare", "empty"
MACHINE = "machine"  # CPU group: the whole machine, from /proc/stat


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase (default 5)")
    parser.add_argument(
        "--concurrency", default="1,16,64", help="closed-loop clients per phase, comma-separated (default 1,16,64)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster's state directory (logs, data)")


# -- measurements ---------------------------------------------------------------


@dataclass
class Snapshot:
    at: float
    net_bytes: int = 0
    commits: int = 0
    batches: int = 0  # AppendRecords messages sent to all segments
    cpu_s: dict[str, float] = field(default_factory=dict)  # group -> CPU seconds (user + system)


@dataclass
class Phase:
    mode: str
    concurrency: int
    seconds: float
    latencies: list[float]
    errors: list[str]
    before: Snapshot
    after: Snapshot

    @property
    def commits(self) -> int:
        return len(self.latencies)

    @property
    def per_s(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def bytes_per_commit(self) -> float:
        commits = self.after.commits - self.before.commits
        return (self.after.net_bytes - self.before.net_bytes) / commits if commits else float("nan")

    @property
    def commits_per_batch(self) -> float:
        """Commits a stream message carried on average (the boxcar): commits / (batches / segments
        sending; with two paused, four)."""
        batches = self.after.batches - self.before.batches
        commits = self.after.commits - self.before.commits
        sending = COPIES - len(PAUSED_NODES) if self.mode == PAUSED else COPIES
        return commits * sending / batches if batches else float("nan")

    def cores(self, group: str) -> float:
        wall = self.after.at - self.before.at
        return (self.after.cpu_s.get(group, 0.0) - self.before.cpu_s.get(group, 0.0)) / wall if wall else 0.0


class CpuMeter:
    """CPU seconds (utime + stime from /proc/PID/stat) of process groups: compute, nodes, control plane, bench."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.tick = os.sysconf("SC_CLK_TCK")

    def _cpu(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def _machine_busy(self) -> float:
        """CPU seconds the whole machine was busy (every process, ours or not), from /proc/stat."""
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return (sum(values[:8]) - idle) / self.tick

    def read(self) -> dict[str, float]:
        cpu = {group: sum(self._cpu(pid) for pid in pids) for group, pids in self.groups.items()}
        cpu[MACHINE] = self._machine_busy()
        return cpu


async def closed_loop(
    commit: Callable[[random.Random], Awaitable[Any]],
    concurrency: int,
    seconds: float,
    snapshot: Callable[[], Awaitable[Snapshot]],
    mode: str,
) -> Phase:
    """C clients, each issuing its next commit when the previous returned. Warm up, then count the
    commits that complete within the measured window (and their latencies)."""
    measuring = False
    stop = False
    latencies: list[float] = []
    errors: list[str] = []

    async def client(index: int) -> None:
        rng = random.Random(index * 7_919 + concurrency)
        while not stop:
            started = time.perf_counter()
            try:
                await commit(rng)
            except Exception as error:  # noqa: BLE001 - counted and shown, the bench goes on
                if measuring:
                    errors.append(_describe(error))
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            if measuring:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
    try:
        await asyncio.sleep(WARMUP_S)
        before = await snapshot()
        measuring = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.perf_counter() - started
        after = await snapshot()
        stop = True
        await asyncio.wait(tasks, timeout=CALL_TIMEOUT_S + 1)
    finally:
        stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Phase(mode, concurrency, elapsed, latencies, errors, before, after)


def _describe(error: BaseException) -> str:
    code = getattr(error, "code", None)
    if callable(code):
        details = getattr(error, "details", lambda: "")()
        return f"{code().name}: {details}"
    return f"{type(error).__name__}: {error}"


def _patch(rng: random.Random, pool: list[bytes], page_size: int) -> tuple[int, int, bytes]:
    return rng.randrange(PAGES), rng.randrange(page_size - PATCH_BYTES + 1), pool[rng.randrange(len(pool))]


# -- the bare baseline: the same records fanned out to six segments, no protocol ---------------


class BareStream:
    """One AppendRecords stream to one segment: boxcar whatever is queued, at most `window` batches in flight."""

    def __init__(
        self, fanout: BareFanout, index: int, segment_id: str, membership_epoch: int, channel: Any, window: int
    ) -> None:
        from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

        self.fanout = fanout
        self.index = index
        self.segment_id = segment_id
        self.membership_epoch = membership_epoch
        self.stub = pb_grpc.StorageServiceStub(channel)
        self.window = window
        self.queue: deque[tuple[int, Any]] = deque()
        self.inflight: deque[int] = deque()  # last LSN of each batch awaiting its ack
        self.batch_id = 0
        self.bytes_sent = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def enqueue(self, lsn: int, record: Any) -> None:
        self.queue.append((lsn, record))
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from sixfold.storage.v1 import storage_service_pb2 as pb

        call = self.stub.AppendRecords()
        reader = asyncio.create_task(self._acks(call))
        try:
            while True:
                if reader.done():
                    reader.result()
                    raise RuntimeError(f"segment {self.segment_id} ended the stream")
                if not self.queue or len(self.inflight) >= self.window:
                    self.wake.clear()
                    waiter = asyncio.create_task(self.wake.wait())
                    await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                records, last = [], 0
                while self.queue and len(records) < BARE_BATCH_RECORDS_MAX:
                    last, record = self.queue.popleft()
                    records.append(record)
                self.inflight.append(last)
                self.batch_id += 1
                request = pb.AppendRecordsRequest(
                    segment_id=self.segment_id,
                    volume_epoch=1,
                    membership_epoch=self.membership_epoch,
                    batch_id=self.batch_id,
                    records=records,
                )
                self.bytes_sent += request.ByteSize()
                await call.write(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - fail every waiting commit with the reason
            self.fanout.fail(f"segment {self.segment_id}: {_describe(error)}")
        finally:
            reader.cancel()
            call.cancel()

    async def _acks(self, call: Any) -> None:
        async for _ack in call:
            self.fanout.on_ack(self.index, self.inflight.popleft())
            self.wake.set()


class BareFanout:
    """Commits of one record each: enqueue on all six streams, done once 4 acknowledged a batch holding it."""

    def __init__(self, page_size: int, pool: list[bytes]) -> None:
        from sixfold.storage.chain import ChainBuilder

        self.chain = ChainBuilder(epoch=1)
        self.page_size = page_size
        self.pool = pool
        self.streams: list[BareStream] = []
        self.acked: list[int] = []
        self.waiters: deque[tuple[int, asyncio.Future[int]]] = deque()
        self.commits = 0
        self.error = ""

    def open(self, segments: list[tuple[str, int, Any]], window: int) -> None:
        self.streams = [
            BareStream(self, i, sid, m_epoch, channel, window) for i, (sid, m_epoch, channel) in enumerate(segments)
        ]
        self.acked = [0] * len(self.streams)
        for stream in self.streams:
            stream.start()

    async def close(self) -> None:
        for stream in self.streams:
            if stream.task:
                stream.task.cancel()
        await asyncio.gather(*(s.task for s in self.streams if s.task), return_exceptions=True)

    @property
    def bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in self.streams)

    async def commit(self, rng: random.Random) -> int:
        from sixfold.storage.wire import record_to_proto

        if self.error:
            raise RuntimeError(self.error)
        page_no, offset, data = _patch(rng, self.pool, self.page_size)
        record = self.chain.patch(page_no, data, offset)
        proto = record_to_proto(record)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters.append((record.lsn, future))
        for stream in self.streams:
            stream.enqueue(record.lsn, proto)
        return await asyncio.wait_for(future, CALL_TIMEOUT_S)

    def on_ack(self, index: int, lsn: int) -> None:
        self.acked[index] = lsn
        quorum_lsn = sorted(self.acked, reverse=True)[WRITE_QUORUM - 1]
        while self.waiters and self.waiters[0][0] <= quorum_lsn:
            lsn_done, future = self.waiters.popleft()
            if not future.done():
                future.set_result(lsn_done)
            self.commits += 1

    def fail(self, reason: str) -> None:
        self.error = self.error or reason
        while self.waiters:
            _, future = self.waiters.popleft()
            if not future.done():
                future.set_exception(RuntimeError(reason))


# -- the run ------------------------------------------------------------------------


async def _run_phases(
    cluster: Any, concurrencies: list[int], seconds: float, meter: CpuMeter, progress: Callable[[str], None]
) -> tuple[list[Phase], int, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sixfold.compute.segment_stream import WINDOW_BATCHES
    from sixfold.compute.v1 import volume_service_pb2 as vpb
    from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
    from sixfold.storage.serving import CHANNEL_OPTIONS
    from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
    from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc

    volume_id = cluster.default_volume()
    data_rng = random.Random(2017)
    pool = [data_rng.randbytes(PATCH_BYTES) for _ in range(DATA_POOL)]
    phases: list[Phase] = []
    channels: list[Any] = []

    def channel(address: str) -> Any:
        ch = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        channels.append(ch)
        return ch

    def report(phase: Phase) -> None:
        phases.append(phase)
        errors = f", {len(phase.errors)} errors" if phase.errors else ""
        progress(
            f"  {phase.mode:>8} c={phase.concurrency:<3} {phase.per_s:>8,.0f} commits/s  "
            f"p50 {phase.percentile_ms(0.5):6.1f} ms  p99 {phase.percentile_ms(0.99):6.1f} ms{errors}"
        )

    try:
        compute = vgrpc.VolumeServiceStub(channel(cluster.compute_address()))
        status = (
            await compute.GetVolumeStatus(vpb.GetVolumeStatusRequest(volume_id=volume_id), timeout=CALL_TIMEOUT_S)
        ).status
        page_size = status.page_size

        async def volume_snapshot() -> Snapshot:
            reply = await compute.GetVolumeStatus(
                vpb.GetVolumeStatusRequest(volume_id=volume_id), timeout=CALL_TIMEOUT_S
            )
            batches = sum(s.batches_sent for pg in reply.status.protection_groups for s in pg.segments)
            return Snapshot(
                time.perf_counter(), reply.status.network_bytes_sent, reply.status.commits, batches, meter.read()
            )

        async def write(rng: random.Random) -> int:
            page_no, offset, data = _patch(rng, pool, page_size)
            request = vpb.WritePagesRequest(
                volume_id=volume_id, patches=[vpb.PagePatch(page_no=page_no, offset=offset, data=data)]
            )
            return (await compute.WritePages(request, timeout=CALL_TIMEOUT_S)).lsn

        progress(f"{NORMAL}: WritePages on {volume_id} (page size {page_size})")
        for c in concurrencies:
            report(await closed_loop(write, c, seconds, volume_snapshot, NORMAL))

        # The bare baseline runs before the paused phase, so no node is catching up a backlog during it.
        control_plane = cp_grpc.ControlPlaneServiceStub(channel(cluster.control_plane_address()))
        bare_volume = f"{BARE_VOLUME}-{os.getpid()}"
        geometry = (
            await control_plane.CreateVolume(
                cp_pb.CreateVolumeRequest(volume_id=bare_volume, page_size=page_size), timeout=30
            )
        ).geometry
        pg = geometry.protection_groups[0]
        fanout = BareFanout(page_size, pool)
        fanout.open([(s.segment_id, pg.membership_epoch, channel(s.address)) for s in pg.segments], WINDOW_BATCHES)

        async def bare_snapshot() -> Snapshot:
            return Snapshot(
                time.perf_counter(),
                fanout.bytes_sent,
                fanout.commits,
                sum(st.batch_id for st in fanout.streams),
                meter.read(),
            )

        progress(
            f"{BARE}: AppendRecords to the 6 segments of volume {bare_volume} PG 0 from this process "
            f"(window {WINDOW_BATCHES} batches per stream)"
        )
        try:
            for c in concurrencies:
                report(await closed_loop(fanout.commit, c, seconds, bare_snapshot, BARE))
        finally:
            await fanout.close()

        # The other ceiling: one unary call per commit to the writer process, doing nothing (its health
        # check). A commit cannot go faster than the calls that carry it.
        health = health_pb2_grpc.HealthStub(channel(cluster.compute_address()))

        async def empty_call(rng: random.Random) -> Any:
            return await health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)

        async def empty_snapshot() -> Snapshot:
            return Snapshot(time.perf_counter(), cpu_s=meter.read())

        progress(f"{EMPTY}: grpc.health.v1 Check on the writer process, one call per 'commit' (no storage)")
        for c in concurrencies:
            report(await closed_loop(empty_call, c, seconds, empty_snapshot, EMPTY))

        progress(f"{PAUSED}: WritePages with {' and '.join(PAUSED_NODES)} paused (SIGSTOP)")
        paused: list[str] = []
        try:
            for name in PAUSED_NODES:
                cluster.pause(name)
                paused.append(name)
            for c in concurrencies:
                report(await closed_loop(write, c, seconds, volume_snapshot, PAUSED))
        finally:
            for name in paused:
                cluster.resume(name)
            if paused:
                progress(f"  resumed {' and '.join(paused)}")
    finally:
        for ch in channels:
            await ch.close()
    return phases, page_size, volume_id


def _mark(ok: bool) -> str:
    return "PASS " if ok else "BELOW"


def _print_results(phases: list[Phase], page_size: int, concurrencies: list[int]) -> None:
    by = {(p.mode, p.concurrency): p for p in phases}
    print()
    header = (
        f"{'mode':>8} {'C':>4} | {'commits/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} | "
        f"{'CPU cores: writer':>17} {'6 nodes':>8} {'bench':>6} {'machine':>8}"
    )
    print(header)
    print("-" * len(header))
    for mode in (NORMAL, PAUSED, BARE, EMPTY):
        for c in concurrencies:
            p = by.get((mode, c))
            if p is None:
                continue
            print(
                f"{mode:>8} {c:>4} | {p.per_s:>10,.0f} {p.percentile_ms(0.5):>8.1f} {p.percentile_ms(0.99):>8.1f} "
                f"{len(p.errors):>6} | {p.cores('writer'):>17.2f} {p.cores('nodes'):>8.2f} {p.cores('bench'):>6.2f} "
                f"{p.cores(MACHINE):>8.2f}"
            )
    for p in phases:
        if p.errors:
            print(f"  {p.mode} c={p.concurrency}: first error: {p.errors[0]}")
    print(
        f"(one {PATCH_BYTES}-byte patch at a random offset of one of {PAGES:,} pages per commit; latency = call "
        f"to durable return;\n CPU = cores used during the measured window by the writer (compute) process, the six "
        f"storage nodes together,\n this bench process, and the whole machine ({os.cpu_count()} CPUs; it includes "
        f"any other load on the machine))"
    )

    whole_page = page_size * COPIES
    print(
        f"\nnetwork per commit (serialized AppendRecords bytes the writer sent to all {COPIES} segments, "
        f"delta over each phase / delta of commits):"
    )
    for mode in (NORMAL, PAUSED, BARE):
        for c in concurrencies:
            p = by.get((mode, c))
            if p is None or p.bytes_per_commit != p.bytes_per_commit:  # NaN: no commits
                continue
            print(
                f"  {mode:>8} c={c:<3} {p.bytes_per_commit:>7,.0f} B/commit  vs whole pages "
                f"{page_size:,} B x {COPIES} = {whole_page:,} B: {whole_page / p.bytes_per_commit:5.1f}x fewer bytes"
            )
    if any(p.mode == PAUSED for p in phases):
        print(
            f"  ({PAUSED}: the writer queues the records of the two paused segments and sends them after "
            f"resume,\n   so only 4 copies are counted)"
        )
    print(
        f"  reference, the paper's figure, not ours: [P17] (Aurora, SIGMOD 2017, Table 1) reports "
        f"{PAPER_IO_RATIO}x fewer I/Os per transaction than mirrored MySQL"
    )

    print("\nboxcar (commits per AppendRecords message to one segment; fewer messages = less gRPC CPU everywhere):")
    for mode in (NORMAL, PAUSED, BARE):
        line = [
            f"c={c} {by[(mode, c)].commits_per_batch:5.1f}"
            for c in concurrencies
            if (mode, c) in by and not math.isnan(by[(mode, c)].commits_per_batch)
        ]
        if line:
            print(f"  {mode:>8}  " + "   ".join(line))
    print("\nratios:")
    for c in concurrencies:
        normal, paused, bare = by.get((NORMAL, c)), by.get((PAUSED, c)), by.get((BARE, c))
        if normal and bare and bare.per_s:
            print(
                f"  commit at c={c}: {normal.per_s / bare.per_s:6.1%} of bare "
                f"({normal.per_s:,.0f} / {bare.per_s:,.0f} commits/s)"
            )
        empty = by.get((EMPTY, c))
        if normal and empty and empty.per_s:
            print(
                f"  commit at c={c}: {normal.per_s / empty.per_s:6.1%} of empty calls to the writer "
                f"({normal.per_s:,.0f} / {empty.per_s:,.0f} calls/s)"
            )
        if normal and paused and normal.per_s:
            print(
                f"  2 paused at c={c}: {paused.per_s / normal.per_s:6.1%} of normal "
                f"(p99 {paused.percentile_ms(0.99):.1f} ms vs {normal.percentile_ms(0.99):.1f} ms)"
            )

    c = TARGET_CONCURRENCY
    print(
        f"\ntarget (the aim from the issue, not asserted): at concurrency {c}, >= {TARGET_COMMITS_PER_S:,} commits/s "
        f"with p99 < {TARGET_P99_MS:.0f} ms, and >= {TARGET_BARE_FRACTION:.0%} of the bare baseline"
    )
    normal, bare = by.get((NORMAL, c)), by.get((BARE, c))
    if normal is None:
        print(f"  not measured: add {c} to --concurrency")
        return
    print(
        f"  [{_mark(normal.per_s >= TARGET_COMMITS_PER_S)}] commits/s at c={c}: {normal.per_s:,.0f} "
        f"(target >= {TARGET_COMMITS_PER_S:,})"
    )
    p99 = normal.percentile_ms(0.99)
    print(f"  [{_mark(p99 < TARGET_P99_MS)}] p99 at c={c}: {p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms)")
    if bare and bare.per_s:
        share = normal.per_s / bare.per_s
        print(
            f"  [{_mark(share >= TARGET_BARE_FRACTION)}] share of bare at c={c}: {share:.1%} "
            f"(target >= {TARGET_BARE_FRACTION:.0%})"
        )


def bench_commit(args: argparse.Namespace) -> int:
    from sixfold.tools.cluster import Cluster

    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not concurrencies or min(concurrencies) < 1:
        raise SystemExit("--concurrency needs positive integers, e.g. 1,16,64")
    state_dir = tempfile.mkdtemp(prefix="sixfold-bench-commit-")
    phase_s = WARMUP_S + args.seconds
    print(
        f"sixfold bench commit: durable one-page MTRs ({PATCH_BYTES}-byte patch, random offset, {PAGES:,} pages), "
        f"closed loop at concurrency {','.join(map(str, concurrencies))};\n"
        f"{WARMUP_S:g} s warm-up + {args.seconds:g} s measured per phase, 3 modes "
        f"(~{3 * len(concurrencies) * phase_s:.0f} s plus start-up); cluster state in {state_dir}\n"
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the cluster starts",
        flush=True,
    )

    def progress(line: str) -> None:
        print(line, flush=True)

    phases: list[Phase] = []
    page_size = 0
    try:
        with Cluster(state_dir) as cluster:
            started = time.perf_counter()
            cluster.up()
            progress(
                f"cluster up in {time.perf_counter() - started:.1f} s: control plane, "
                f"{len(cluster.node_names())} storage nodes, writer at {cluster.compute_address()}"
            )
            nodes = [pid for name in cluster.node_names() if (pid := cluster.pid(name))]
            meter = CpuMeter(
                {"writer": [p for p in [cluster.pid("compute")] if p], "nodes": nodes, "bench": [os.getpid()]}
            )
            phases, page_size, _ = asyncio.run(_run_phases(cluster, concurrencies, args.seconds, meter, progress))
            progress("stopping the cluster")
    finally:
        if args.keep:
            print(f"kept {state_dir} (logs under {os.path.join(state_dir, 'logs')})")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    _print_results(phases, page_size, concurrencies)
    return 0
