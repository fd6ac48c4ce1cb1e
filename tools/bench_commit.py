"""`sixfold bench commit`: durable one-page MTRs through the compute node, next to a bare fan-out baseline.

A cluster of its own (control plane, six storage nodes in three AZs, the writer)
is started in a temporary state directory and always stopped at the end. Then:

    normal     C closed-loop clients (coroutines on one grpc.aio channel in this process)
               call VolumeService.WritePages with one 100-byte patch at a random offset of
               one of 1,000 pages; a call returns once the MTR is durable (4/6, VDL >= LSN).
    stream     the same MTRs from C closed-loop clients over one WritePagesStream
               (compute/write_stream_client.py): whatever MTRs are queued go in one message,
               results come back batched; a call still returns only once its MTR is durable.
    bare       the same 100-byte records from this process straight to the six segments
               of a separate bench volume's PG over one AppendRecords stream each (boxcar,
               the writer's window), a "commit" done when 4 of 6 acknowledged its batch:
               no VolumeService hop, no LSN/VCL/VDL machinery. The baseline.
    empty      C clients calling the writer process's grpc.health.v1 Check: one unary call
               per "commit" and nothing else, the other ceiling (a commit is one such call).
    2 paused   `normal` again with storage nodes a2 and c1 stopped (SIGSTOP), so every
               commit needs all four remaining copies; then `stream` so (`stream 2 paused`);
               resumed afterwards.

The cluster uses mutual TLS, the default (tools/cluster_tls.py): the bench is its `cli` client, and its bare
fan-out presents a writer certificate from the cluster's CA (a storage node takes AppendRecords from the writer's
role alone). With `--tls`, the same phases run twice in one invocation: on a plaintext cluster first
(`Cluster.up(insecure=True)`), then on a second cluster with mutual TLS; the report adds each phase's
TLS/plaintext ratios (tools/bench_commit_tls.py); the bare fan-out then runs on the plaintext cluster only.
Every channel the bench opens to a cluster goes through storage/security/transport.py; this process is
plaintext again after each cluster.

With `--peer etcd`, a 3-member etcd cluster on loopback takes the same closed loop (Put of 100 bytes to a
distinct key; tools/bench_commit_etcd.py), and the report sets sixfold beside it. `--profile` samples the
writer and one node with py-spy during the `normal` and `stream` phases at c=64 (tools/bench_commit_profile.py).

Each phase warms up for ~1 s, then counts the commits completed within `--seconds`.
Bytes on the network per commit come from the writer's own counter
(GetVolumeStatus.network_bytes_sent: serialized AppendRecords bytes sent to all segments).
CPU per process (from /proc) is shown to point at what limits throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sixfold.compute.write_stream_client import StreamingWriter
from sixfold.tools import bench_commit_profile
from sixfold.tools.bench_commit_bare import BareFanout
from sixfold.tools.bench_commit_etcd import INSTALL_HINT, find_etcd, run_etcd_phases
from sixfold.tools.bench_commit_measure import (
    BARE,
    CALL_TIMEOUT_S,
    DATA_POOL,
    EMPTY,
    NORMAL,
    PAGES,
    PATCH_BYTES,
    PAUSED,
    PAUSED_NODES,
    STREAM,
    STREAM_PAUSED,
    WARMUP_S,
    CpuMeter,
    Phase,
    Snapshot,
    closed_loop,
    random_patch,
)
from sixfold.tools.bench_commit_plot import save_plot
from sixfold.tools.bench_commit_report import print_results
from sixfold.tools.bench_commit_tls import SIXFOLD_MODES, TLS_PLAN, print_tls, tls_progress
from sixfold.tools.cluster_layout import CONTROL_PLANE

BARE_VOLUME = "bench-bare"
CONCURRENCY_MAX = 256
PROFILE_CONCURRENCY = 64


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase (default 5)")
    parser.add_argument(
        "--concurrency", default="1,16,64", help="closed-loop clients per phase, comma-separated (default 1,16,64)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster's state directory (logs, data)")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="run the phases on a plaintext cluster (sixfold up --insecure), then the same phases (same "
        "concurrencies and seconds) on a second cluster with the secure default (mutual TLS, tokens, encryption "
        "at rest), and print commits/s, p50/p99 and secure/plaintext ratios per concurrency; the bare fan-out "
        "runs on the plaintext cluster only",
    )
    parser.add_argument(
        "--peer",
        choices=("etcd", "none"),
        default="none",
        help="also drive a 3-member etcd cluster on loopback with the same closed loop (needs the etcd binary: "
        "apt-get install etcd-server) and print sixfold/etcd per concurrency",
    )
    parser.add_argument(
        "--plot",
        default="sixfold-bench-commit.png",
        metavar="PATH",
        help="where to save the plot of throughput and p99 against concurrency (default ./sixfold-bench-commit.png; "
        "'' for none)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"py-spy profiles of the writer and one storage node during the normal and stream phases at "
        f"c={PROFILE_CONCURRENCY} (or the "
        "highest below it), saved as flame graphs (SVG) next to the plot, top frames printed",
    )


async def _run_phases(
    cluster: Any,
    concurrencies: list[int],
    seconds: float,
    meter: CpuMeter,
    progress: Callable[[str], None],
    profile: Callable[[str, int], list[str]] | None = None,
    bare: bool = True,
) -> tuple[list[Phase], int, str]:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sixfold.compute.segment_stream import WINDOW_BATCHES
    from sixfold.compute.v1 import volume_service_pb2 as vpb
    from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
    from sixfold.storage.security import pki, transport
    from sixfold.storage.serving import CHANNEL_OPTIONS
    from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
    from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
    from sixfold.tools.cluster_tls import harness_identity

    volume_id = cluster.default_volume()
    data_rng = random.Random(2017)
    pool = [data_rng.randbytes(PATCH_BYTES) for _ in range(DATA_POOL)]
    phases: list[Phase] = []
    channels: list[Any] = []

    def channel(address: str, identity: Any = None) -> Any:
        if identity is None:
            ch = transport.aio_channel(address, CHANNEL_OPTIONS)  # plaintext, or the cluster's `cli` identity
        else:
            ch = transport.aio_channel_as(identity, address, CHANNEL_OPTIONS)
        channels.append(ch)
        return ch

    def report(phase: Phase) -> None:
        phases.append(phase)
        errors = f", {len(phase.errors)} errors" if phase.errors else ""
        progress(
            f"  {phase.mode:>15} c={phase.concurrency:<3} {phase.per_s:>8,.0f} commits/s  "
            f"p50 {phase.percentile_ms(0.5):6.1f} ms  p99 {phase.percentile_ms(0.99):6.1f} ms{errors}"
        )

    async def profiled(mode: str, c: int, phase: Awaitable[Phase]) -> Phase:
        """The phase, sampled from outside by py-spy (run in a thread) when it is the profiled one."""
        if profile is None:
            return await phase
        sampling = asyncio.create_task(asyncio.to_thread(profile, mode, c))
        done = await phase
        for line in await sampling:
            progress(line)
        return done

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
            page_no, offset, data = random_patch(rng, pool, page_size)
            request = vpb.WritePagesRequest(
                volume_id=volume_id, patches=[vpb.PagePatch(page_no=page_no, offset=offset, data=data)]
            )
            return (await compute.WritePages(request, timeout=CALL_TIMEOUT_S)).lsn

        progress(f"{NORMAL}: WritePages on {volume_id} (page size {page_size})")
        for c in concurrencies:
            report(await profiled(NORMAL, c, closed_loop(write, c, seconds, volume_snapshot, NORMAL)))

        streaming = StreamingWriter(channel(cluster.compute_address()), volume_id)

        async def stream_write(rng: random.Random) -> int:
            return await streaming.write([random_patch(rng, pool, page_size)])

        progress(f"{STREAM}: the same MTRs over one WritePagesStream (many MTRs per message, results batched)")
        try:
            for c in concurrencies:
                report(await profiled(STREAM, c, closed_loop(stream_write, c, seconds, volume_snapshot, STREAM)))
        finally:
            await streaming.close()

        # The bare baseline runs before the paused phase, so no node is catching up a backlog during it. A TLS
        # cluster's storage nodes take AppendRecords from the writer's role only: the bench presents a writer
        # certificate from the cluster's CA on those streams (None: a plaintext cluster).
        if bare:
            writer = harness_identity(cluster.state_dir, pki.ROLE_WRITER)
            control_plane = cp_grpc.ControlPlaneServiceStub(channel(cluster.control_plane_address()))
            bare_volume = f"{BARE_VOLUME}-{os.getpid()}"
            geometry = (
                await control_plane.CreateVolume(
                    cp_pb.CreateVolumeRequest(volume_id=bare_volume, page_size=page_size), timeout=30
                )
            ).geometry
            pg = geometry.protection_groups[0]
            fanout = BareFanout(page_size, pool)
            streams = [(s.segment_id, pg.membership_epoch, channel(s.address, writer)) for s in pg.segments]
            fanout.open(streams, WINDOW_BATCHES)

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
            streaming = StreamingWriter(channel(cluster.compute_address()), volume_id)
            try:
                for c in concurrencies:
                    report(await closed_loop(stream_write, c, seconds, volume_snapshot, STREAM_PAUSED))
            finally:
                await streaming.close()
        finally:
            for name in paused:
                cluster.resume(name)
            if paused:
                progress(f"  resumed {' and '.join(paused)}")
    finally:
        for ch in channels:
            await ch.close()
    return phases, page_size, volume_id


def bench_commit(args: argparse.Namespace) -> int:
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--concurrency needs positive integers, e.g. 1,16,64; got {args.concurrency!r}") from None
    if not concurrencies or min(concurrencies) < 1 or max(concurrencies) > CONCURRENCY_MAX:
        raise SystemExit(f"--concurrency needs integers from 1 to {CONCURRENCY_MAX}, e.g. 1,16,64,256")
    if not 0 < args.seconds <= 600:
        raise SystemExit("--seconds must be more than 0 and at most 600")
    tls = bool(getattr(args, "tls", False))
    etcd = find_etcd() if args.peer == "etcd" else None
    state_dir = tempfile.mkdtemp(prefix="sixfold-bench-commit-")
    phase_s = WARMUP_S + args.seconds
    modes = len(SIXFOLD_MODES) + 1 + (len(SIXFOLD_MODES) if tls else 0) + (etcd is not None)  # + 1: bare
    print(
        f"sixfold bench commit: durable one-page MTRs ({PATCH_BYTES}-byte patch, random offset, {PAGES:,} pages), "
        f"closed loop at concurrency {','.join(map(str, concurrencies))};\n"
        f"{WARMUP_S:g} s warm-up + {args.seconds:g} s measured per phase, {modes} modes "
        f"(~{modes * len(concurrencies) * phase_s:.0f} s plus start-up); cluster state in {state_dir}\n"
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the cluster starts",
        flush=True,
    )
    if tls:
        print(f"--tls: {TLS_PLAN}", flush=True)
    if args.peer == "etcd" and etcd is None:
        print(f"peer etcd: skipped, no `etcd` binary on PATH; {INSTALL_HINT}", flush=True)

    def progress(line: str) -> None:
        print(line, flush=True)

    phases: list[Phase] = []
    tls_phases: list[Phase] = []
    page_size = 0
    profiles: list[str] = []
    loads: list[float] = []  # the load average as each cluster starts
    plain_dir = os.path.join(state_dir, "plaintext") if tls else state_dir
    try:
        phases, page_size = _measure_cluster(
            args, plain_dir, concurrencies, progress, profiles, loads, tls=False, insecure=tls
        )
        if tls:
            tls_dir = os.path.join(state_dir, "tls")
            tls_phases, _ = _measure_cluster(
                args, tls_dir, concurrencies, tls_progress(progress), profiles, loads, tls=True, insecure=False
            )
        if etcd is not None:
            progress(f"etcd: {etcd}, 3 members, the same closed loop (Put of {PATCH_BYTES} bytes to distinct keys)")
            pool = [random.Random(2017 + i).randbytes(PATCH_BYTES) for i in range(DATA_POOL)]
            phases += asyncio.run(run_etcd_phases(etcd, concurrencies, args.seconds, progress, pool))
    finally:
        if args.keep:
            print(f"kept {state_dir} (logs under {os.path.join(plain_dir, 'logs')})")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    print_results(phases, page_size, concurrencies)
    if tls:
        print_tls(phases, tls_phases, concurrencies, loads)
    for line in profiles:
        print(line)
    if args.plot:
        why = save_plot(phases, args.plot, tls_phases)
        print(f"\nplot: {why}" if why else f"\nplot saved: {os.path.abspath(args.plot)}")
    return 0


def _measure_cluster(
    args: argparse.Namespace,
    state_dir: str,
    concurrencies: list[int],
    progress: Callable[[str], None],
    profiles: list[str],
    loads: list[float],
    *,
    tls: bool,
    insecure: bool,
) -> tuple[list[Phase], int]:
    """Start a cluster in `state_dir` (plaintext if `insecure`, else mutual TLS), run the phases on it (the bare
    fan-out unless it is the `--tls` twin), stop it; this process is plaintext again afterwards, whatever
    happened."""
    from sixfold.storage.security import transport
    from sixfold.tools.cluster import Cluster

    transport.use(None)
    loads.append(os.getloadavg()[0])
    try:
        with Cluster(state_dir) as cluster:
            started = time.perf_counter()
            cluster.up(insecure=insecure)  # with TLS, this process now acts as the cluster's `cli` client
            if not insecure and transport.current() is None:
                raise SystemExit(f"the cluster in {state_dir} was started with TLS but this bench has no identity")
            progress(
                f"cluster up in {time.perf_counter() - started:.1f} s "
                f"{'plaintext' if insecure else 'with mutual TLS'}: control plane, {len(cluster.node_names())} "
                f"storage nodes, writer at {cluster.compute_address()} "
                f"(load average {loads[-1]:.1f} before it started)"
            )
            writer = [p for p in [cluster.pid("compute")] if p]
            nodes = [pid for name in cluster.node_names() if (pid := cluster.pid(name))]
            # The control plane and, on a secure cluster, the key service (encryption at rest: lease renewals).
            services = [CONTROL_PLANE, *(["kms"] if "kms" in cluster.names() else [])]
            control = [p for p in map(cluster.pid, services) if p]
            meter = CpuMeter({"writer": writer, "nodes": nodes, "control": control, "bench": [os.getpid()]})
            pids = {"writer": writer, "node": nodes[:1]}
            profile = _profiler(args, concurrencies, pids, profiles, "tls-" if tls else "")
            phases, page_size, _ = asyncio.run(
                _run_phases(cluster, concurrencies, args.seconds, meter, progress, profile, bare=not tls)
            )
            progress("stopping the cluster")
    finally:
        transport.use(None)
    return phases, page_size


def _profiler(
    args: argparse.Namespace, concurrencies: list[int], pids: dict[str, list[int]], out: list[str], tag: str = ""
) -> Callable[[str, int], list[str]] | None:
    """With --profile, a function the phase at the profiled concurrency calls (in a thread): it samples the
    writer and one node for the phase and returns progress lines; their top frames go to `out`."""
    if not args.profile:
        return None
    binary = bench_commit_profile.py_spy()
    if binary is None:
        print('--profile: py-spy is not installed (it comes with pip install -e ".[dev]"); no profiles', flush=True)
        return None
    at = max([c for c in concurrencies if c <= PROFILE_CONCURRENCY] or [min(concurrencies)])
    prefix = os.path.splitext(args.plot or "sixfold-bench-commit.png")[0] + "-profile"

    def profile(mode: str, c: int) -> list[str]:
        if c != at:
            return []
        recordings = [
            bench_commit_profile.start(binary, f"{tag}{mode}-{name}", pid_list[0], WARMUP_S + args.seconds, prefix)
            for name, pid_list in pids.items()
            if pid_list
        ]
        lines = []
        for r in recordings:
            why = bench_commit_profile.finish(r, WARMUP_S + args.seconds + 30)
            if why:
                lines.append(f"  profile of the {r.name} (pid {r.pid}): {why}")
                continue
            lines.append(f"  profile of the {r.name} (pid {r.pid}) at c={c}: {os.path.abspath(r.svg_path)}")
            out.extend(bench_commit_profile.report(r, c))
        return lines

    return profile
