"""`sixfold bench sql`: a TPC-B-like transaction through the compute node's SQL service, beside plain SQLite on
the local disk and beside shipping whole dirtied pages to six copies, all from the same run.

A cluster of its own (control plane, six storage nodes in three AZs, the compute node) is started in a
temporary directory and always stopped at the end. The workload is tools/bench_sql_workload.py (pgbench's
tpcb-like: update an account, read its balance, update a teller and a branch, append history). Then:

    load       the schema and `--accounts` accounts into sixfold (RunTransaction, in batches under the engine's
               per-transaction limits) and into a local SQLite file, the same statements.
    sixfold    C closed-loop clients, coroutines on one grpc.aio channel in this process (the cheapest client
               Python has: no thread per client, so the figures are the server's), each calling
               SqlService.RunTransaction with the five statements and waiting for its reply (durable: the
               commit's MTR is at or below VDL) before the next.
    SQLite     C threads, one apsw connection each, the same transactions on the local file (WAL,
               synchronous=FULL, busy timeout): tools/bench_sql_local.py.
    (per concurrency, sixfold then SQLite, so machine noise falls on both alike)
    page ship  every transaction sixfold acknowledged, replayed in commit-LSN order on a local file through a
               page-watching VFS (tools/bench_sql_pages.py): the pages each one dirtied, x page size x 6
               copies, is what shipping whole pages would send. sixfold's own bytes are the writer's counter
               (GetVolumeStatus.network_bytes_sent: serialized AppendRecords bytes to all six segments) over
               its commits; the replay also says how many records and changed bytes its MTRs carry.

Each phase warms up for ~1 s, then counts the transactions completed within `--seconds`. At the end the
invariant (every balance sum equals the history's deltas; a history row per acknowledged transaction) is
checked on sixfold and on SQLite, and the replay's totals are compared with sixfold's; a broken invariant
fails the run (exit status 1) after the table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

from sixfold.storage.security import transport
from sixfold.tools.bench_commit_measure import CALL_TIMEOUT_S, WARMUP_S, CpuMeter, Phase, Snapshot, closed_loop
from sixfold.tools.bench_sql_local import LocalSqlite, fsync_ms
from sixfold.tools.bench_sql_pages import Dirtied, replay
from sixfold.tools.bench_sql_report import SIXFOLD, Results, print_results
from sixfold.tools.bench_sql_workload import INVARIANT, Scale, Statement, Totals, Tpcb, load_transactions

LOAD_TIMEOUT_S = 120.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase (default 10)")
    parser.add_argument(
        "--concurrency", default="1,16,64", help="closed-loop clients per phase, comma-separated (default 1,16,64)"
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=100_000,
        help="accounts (default 100,000; pgbench's scale: 1 branch and 10 tellers per 100,000 accounts)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster's state directory and the SQLite files")


class SixfoldClients:
    """The sixfold side over one grpc.aio channel: load, the transaction, the counters, the invariant."""

    def __init__(self, channel: Any, volume_id: str, scale: Scale) -> None:
        from sixfold.compute.v1 import sql_service_pb2_grpc as sgrpc
        from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc

        self.volume_id = volume_id
        self.scale = scale
        self._sql = sgrpc.SqlServiceStub(channel)
        self._volume = vgrpc.VolumeServiceStub(channel)
        self.acknowledged: list[tuple[int, float, Tpcb]] = []  # (commit LSN, when acknowledged, the transaction)
        self.failed = 0  # calls that failed (their transaction may or may not have committed)

    async def page_size(self) -> int:
        from sixfold.compute.v1 import volume_service_pb2 as vpb

        request = vpb.GetVolumeStatusRequest(volume_id=self.volume_id)
        return int((await self._volume.GetVolumeStatus(request, timeout=CALL_TIMEOUT_S)).status.page_size)

    async def run(self, statements: list[Statement], timeout_s: float) -> int:
        """RunTransaction; the commit LSN (durable)."""
        from sixfold.compute.sql_values import statement_to_proto
        from sixfold.compute.v1 import sql_service_pb2 as spb

        request = spb.RunTransactionRequest(
            volume_id=self.volume_id, statements=[statement_to_proto(sql, params) for sql, params in statements]
        )
        return int((await self._sql.RunTransaction(request, timeout=timeout_s)).commit_lsn)

    async def load(self, transactions: list[tuple[list[Statement], int]], progress: Callable[[str], None]) -> None:
        started, loaded = time.perf_counter(), 0
        for n, (statements, accounts) in enumerate(transactions, 1):
            await self.run(statements, LOAD_TIMEOUT_S)
            loaded += accounts
            what = f"{loaded:>9,} / {self.scale.accounts:,} accounts" if accounts else "schema, branches, tellers"
            progress(
                f"  loading sixfold: {what}; {n} / {len(transactions)} transactions, "
                f"{time.perf_counter() - started:5.1f} s"
            )

    async def tpcb(self, rng: Any) -> int:
        """One transaction of the closed loop."""
        txn = Tpcb.draw(rng, self.scale)
        try:
            lsn = await self.run(txn.statements(), CALL_TIMEOUT_S)
        except BaseException:  # cancelled too: its outcome is unknown either way
            self.failed += 1
            raise
        self.acknowledged.append((lsn, time.perf_counter(), txn))
        return lsn

    async def snapshot(self, meter: CpuMeter) -> Snapshot:
        from sixfold.compute.v1 import volume_service_pb2 as vpb

        request = vpb.GetVolumeStatusRequest(volume_id=self.volume_id)
        status = (await self._volume.GetVolumeStatus(request, timeout=CALL_TIMEOUT_S)).status
        batches = sum(s.batches_sent for pg in status.protection_groups for s in pg.segments)
        return Snapshot(time.perf_counter(), status.network_bytes_sent, status.commits, batches, meter.read())

    async def totals(self) -> Totals:
        from sixfold.compute.sql_values import rows_from_proto
        from sixfold.compute.v1 import sql_service_pb2 as spb

        request = spb.ExecuteRequest(volume_id=self.volume_id, sql=INVARIANT)
        reply = await self._sql.Execute(request, timeout=LOAD_TIMEOUT_S)
        return Totals.from_row(rows_from_proto(reply.result)[0])


def _line(phase: Phase) -> str:
    errors = f", {len(phase.errors)} errors" if phase.errors else ""
    return (
        f"  {phase.mode:>7} c={phase.concurrency:<3} {phase.per_s:>8,.0f} txn/s  "
        f"p50 {phase.percentile_ms(0.5):7.1f} ms  p99 {phase.percentile_ms(0.99):7.1f} ms{errors}"
    )


async def _measure(
    address: str,
    volume_id: str,
    local: LocalSqlite,
    results: Results,
    seconds: float,
    meter: CpuMeter,
    progress: Callable[[str], None],
) -> SixfoldClients:

    from sixfold.storage.serving import CHANNEL_OPTIONS

    async with transport.aio_channel(address, CHANNEL_OPTIONS) as channel:
        clients = SixfoldClients(channel, volume_id, local.scale)
        results.page_size = await clients.page_size()
        results.load = load_transactions(local.scale, results.page_size)
        progress(
            f"loading {local.scale.describe()} ({len(results.load)} transactions; SQLite page size = the volume's, "
            f"{results.page_size:,} B)"
        )
        await clients.load(results.load, progress)
        await asyncio.to_thread(local.load, results.page_size, results.load, progress)

        async def snapshot() -> Snapshot:
            return await clients.snapshot(meter)

        for c in results.concurrencies:
            progress(f"c={c}: {WARMUP_S:g} s warm-up + {seconds:g} s measured, sixfold then SQLite")
            results.sixfold[c] = await closed_loop(clients.tpcb, c, seconds, snapshot, SIXFOLD)
            progress(_line(results.sixfold[c]))
            results.sqlite[c] = await asyncio.to_thread(local.run, c, seconds, meter)
            progress(_line(results.sqlite[c]))
        progress("checking the invariant on sixfold and on SQLite")
        results.sixfold_totals = await clients.totals()
    results.sqlite_totals = await asyncio.to_thread(local.totals)
    return clients


def _count_pages(clients: SixfoldClients, results: Results, directory: str, progress: Callable[[str], None]) -> None:
    """Replay sixfold's acknowledged transactions in commit order; per concurrency, what the transactions
    acknowledged in its measured window dirtied, on average."""
    ordered = sorted(clients.acknowledged, key=lambda entry: entry[0])
    progress(
        f"page shipping: replaying the {len(ordered):,} transactions sixfold acknowledged, in commit-LSN order, "
        "through a page-watching VFS"
    )
    dirtied, results.replay_totals = replay(
        directory, results.page_size, results.load, [txn for _, _, txn in ordered], progress
    )
    for c, phase in results.sixfold.items():
        window = [d for d, (_, at, _) in zip(dirtied, ordered) if phase.before.at <= at <= phase.after.at]
        if window:
            results.dirtied[c] = Dirtied(*(sum(values) / len(window) for values in zip(*map(astuple, window))))


def bench_sql(args: argparse.Namespace) -> int:
    from sixfold.tools.cluster import Cluster

    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not concurrencies or min(concurrencies) < 1:
        raise SystemExit("--concurrency needs positive integers, e.g. 1,16,64")
    if args.accounts < 1 or args.seconds <= 0:
        raise SystemExit("--accounts and --seconds must be positive")
    scale = Scale.for_accounts(args.accounts)
    workdir = tempfile.mkdtemp(prefix="sixfold-bench-sql-")
    state_dir, sqlite_dir = os.path.join(workdir, "cluster"), os.path.join(workdir, "sqlite")
    os.makedirs(sqlite_dir)
    print(
        f"sixfold bench sql: pgbench's tpcb-like transaction on {scale.describe()}, closed loop at concurrency "
        f"{','.join(map(str, concurrencies))};\n{WARMUP_S:g} s warm-up + {args.seconds:g} s measured per phase, "
        f"sixfold and SQLite (~{2 * len(concurrencies) * (WARMUP_S + args.seconds):.0f} s plus start-up and "
        f"load); files in {workdir}\n"
        f"machine: {os.cpu_count()} CPUs shared by the cluster's 8 processes, the clients and SQLite (CPU-bound "
        f"figures scale with cores), load average {os.getloadavg()[0]:.1f};\n"
        f"         a 4 KiB write + fsync takes {fsync_ms(sqlite_dir):.2f} ms (median) on the disk SQLite's WAL "
        "and the storage nodes sync to (it bounds SQLite's commits/s)",
        flush=True,
    )

    def progress(line: str) -> None:
        print(line, flush=True)

    results = Results(concurrencies, scale)
    local = LocalSqlite(sqlite_dir, scale)
    try:
        with Cluster(state_dir) as cluster:
            started = time.perf_counter()
            cluster.up()
            volume_id = cluster.default_volume() or "vol0"
            progress(
                f"cluster up in {time.perf_counter() - started:.1f} s: control plane, {len(cluster.node_names())} "
                f"storage nodes, compute node at {cluster.compute_address()} (volume {volume_id})"
            )
            nodes = [pid for name in cluster.node_names() if (pid := cluster.pid(name))]
            meter = CpuMeter(
                {"writer": [p for p in [cluster.pid("compute")] if p], "nodes": nodes, "bench": [os.getpid()]}
            )
            clients = asyncio.run(
                _measure(cluster.compute_address(), volume_id, local, results, args.seconds, meter, progress)
            )
            progress("stopping the cluster")
        results.acknowledged, results.failed = len(clients.acknowledged), clients.failed
        results.sqlite_committed = local.committed
        _count_pages(clients, results, sqlite_dir, progress)
    finally:
        if args.keep:
            print(f"kept {workdir} (cluster logs under {os.path.join(state_dir, 'logs')})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    problems = print_results(results)
    return 1 if problems else 0
