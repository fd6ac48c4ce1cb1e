"""What the failover scenarios (tools/chaos/scenarios_failover.py) run beside the runner's clients, and the
criteria they share.

- Both workloads at once: the run's own (`--workload`, pages by default) on vol0 is the runner's, and the
  other one runs on `SIDE_VOLUME` beside it (`SIDE_CLIENTS`): the page workload and the bank each see every
  failover. Both reach the writer through the cluster endpoint (tools/chaos/failover_loads.py).
- Reader probes (tools/chaos/reader_probe.py) on the bank's volume: each compute instance by its own
  address, and the `reader` endpoint.
- The control plane's view of the instances, watched throughout (tools/chaos/failover_watch.py).

`start` sets them going (Scenario.start) and registers their stop with the clients'; `settle` reads the
side load's final state and the bank's final committed order (rowid order) once healed; `criteria` judges
the side load as the runner judges its own kind (linearizability, lost writes, vanished reads, MTRs
atomic; or the bank's invariants) and every reader read (tools/chaos/reader_check.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sixfold.compute.endpoint_client import READER_ENDPOINT, Endpoint
from sixfold.compute.sql_client import SqlClient
from sixfold.tools.chaos import checkers
from sixfold.tools.chaos.bank import DEFAULT_ACCOUNTS, check_bank
from sixfold.tools.chaos.bank_workload import BANK
from sixfold.tools.chaos.failover_loads import (
    CALL_TIMEOUT_S,
    EndpointBank,
    EndpointPages,
    create_volume,
    make_workload,
    stop_tasks,
)
from sixfold.tools.chaos.failover_watch import READER, InstanceWatch, View
from sixfold.tools.chaos.history import OK, WRITE
from sixfold.tools.chaos.reader_check import check_reader_reads
from sixfold.tools.chaos.reader_probe import ReaderProbe, read_committed
from sixfold.tools.chaos.run_checks import check_atomicity
from sixfold.tools.chaos.scenario_base import Context, Criterion
from sixfold.tools.chaos.workload import PAGES
from sixfold.tools.cluster import COMPUTE, PAUSED, RUNNING

SIDE_VOLUME = "vol1"
SIDE_KEYS = 8
FINAL_ORDER_TIMEOUT_S = 60.0
FAILOVER_WAIT_S = 30.0  # from a writer's death until the control plane names another
REJOIN_WAIT_S = 30.0  # from a restart (or a resume) until the instance is listed alive as a reader


@dataclass
class FailoverRun:
    """Everything a failover scenario runs beside the runner's clients (kept in ctx.data["failover"])."""

    side: EndpointPages | EndpointBank
    bank: EndpointBank
    probe: ReaderProbe
    watch: InstanceWatch
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    final_rows: list[tuple[int, str]] | None = None
    final_detail: str = ""
    stopped: bool = False

    def __repr__(self) -> str:
        return f"FailoverRun(side={self.side.kind} on {self.side.volume}, {len(self.probe.reads)} probe reads)"

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        await stop_tasks(self.side.stop, self.tasks)
        await asyncio.to_thread(self.probe.close)
        self.watch.close()


def failover_run(ctx: Context) -> FailoverRun:
    run: FailoverRun = ctx.data["failover"]
    return run


def compute_names(ctx: Context) -> list[str]:
    return [r.name for r in ctx.cluster.records() if r.role == COMPUTE]


async def start(ctx: Context) -> None:
    """Scenario.start: the side load on SIDE_VOLUME, the reader probes and the watch."""
    main = ctx.workload
    await ctx.do(create_volume, ctx.cluster, SIDE_VOLUME)
    side = make_workload(
        PAGES if main.kind == BANK else BANK,
        ctx.cluster,
        clients=max(2, main.clients // 2),
        seed=main.seed + 1_000_003,
        keys=SIDE_KEYS,
        accounts=getattr(main, "accounts", DEFAULT_ACCOUNTS),
        volume=SIDE_VOLUME,
    )
    await side.prepare()
    bank = main if isinstance(main, EndpointBank) else side
    assert isinstance(bank, EndpointBank)
    control_plane = ctx.cluster.control_plane_address()
    targets: dict[str, str | Endpoint] = {name: ctx.cluster.record(name).address for name in compute_names(ctx)}
    targets["reader-endpoint"] = Endpoint(control_plane, READER_ENDPOINT)
    probe = ReaderProbe(targets, bank.volume, bank.initial)
    watch = await ctx.do(InstanceWatch(control_plane).start)
    run = FailoverRun(side, bank, probe, watch)
    ctx.data["failover"] = run
    ctx.closers.append(run.stop)
    run.tasks = [asyncio.create_task(side.client(i)) for i in range(side.clients)]
    probe.start()
    ctx.log(f"side load: {side.describe()}; reader probes on {bank.volume}: {', '.join(targets)}")


def _final_order(control_plane: str, volume: str) -> list[tuple[int, str]]:
    """The bank's transfers in rowid order (the committed order), read through the cluster endpoint."""
    deadline = time.monotonic() + FINAL_ORDER_TIMEOUT_S
    while True:
        try:
            with SqlClient(Endpoint(control_plane), volume, timeout_s=CALL_TIMEOUT_S) as db, db.session() as session:
                session.begin(read_only=True)
                rows = read_committed(session)
                session.rollback()
                return rows
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def settle(ctx: Context) -> None:
    """Scenario.settle: the side load's final reads and the bank's final committed order; histories saved."""
    run = failover_run(ctx)
    await run.stop()
    if not await run.side.final_reads():
        ctx.notes.append(f"the final reads of {SIDE_VOLUME} did not succeed")
    try:
        run.final_rows = await ctx.do(_final_order, ctx.cluster.control_plane_address(), run.bank.volume)
    except Exception as error:  # noqa: BLE001 - judged: the reader reads cannot be
        run.final_detail = f"the final committed order could not be read: {error}"
    await ctx.workload.refresh()
    await run.side.close()
    origin = ctx.workload.origin
    run.side.save_history(ctx.out_dir / f"history-{SIDE_VOLUME}.jsonl")
    run.probe.save(ctx.out_dir / "reader-reads.jsonl", origin)


async def restore_instances(ctx: Context) -> list[str]:
    """Every compute instance running again: resumed if paused, started (through the launcher) if not."""
    done = []
    for name in compute_names(ctx):
        state = ctx.nemesis.state_of(name)
        if state == PAUSED:
            await ctx.do(ctx.nemesis.resume, name)
            done.append(f"resumed {name}")
        elif state != RUNNING:
            await ctx.do(ctx.nemesis.start, name)
            done.append(f"started {name}")
    return done


async def wait_view(ctx: Context, predicate: Any, timeout_s: float) -> View | None:
    view: View | None = await ctx.do(failover_run(ctx).watch.wait, predicate, timeout_s)
    return view


async def settled_writer(ctx: Context, timeout_s: float = FAILOVER_WAIT_S) -> View:
    view = await wait_view(ctx, lambda v: v.settled_writer() != "", timeout_s)
    if view is None:
        raise RuntimeError(f"the control plane named no live writer within {timeout_s:g} s")
    return view


async def rejoined(ctx: Context, name: str, timeout_s: float = REJOIN_WAIT_S) -> View | None:
    """Until the control plane lists `name` alive as a reader (None after `timeout_s`)."""
    return await wait_view(ctx, lambda v: v.role_of(name) == (READER, True), timeout_s)


# --- criteria ---------------------------------------------------------------------------------------


def first_ack_after(ctx: Context, at: float) -> float | None:
    """Seconds from `at` until a write invoked at or after it was acknowledged (either workload)."""
    run = failover_run(ctx)
    done = [
        r.completed
        for w in (ctx.workload, run.side)
        for r in w.records
        if r.kind == WRITE and r.outcome == OK and r.invoked >= at
    ]
    return min(done) - at if done else None


def _side_criteria(side: EndpointPages | EndpointBank) -> list[Criterion]:
    tag = f"{side.volume} ({side.kind})"
    if isinstance(side, EndpointBank):
        check = check_bank(side.records, side.final, side.initial, side.origin)
        return [Criterion(f"{tag}: {c.name}", c.ok, c.detail) for c in check.criteria()]
    lin = checkers.check_linearizable(side.history)
    lost = checkers.check_lost_writes(side.history)
    vanished = checkers.check_no_vanished_reads(side.history)
    atomic = check_atomicity(side)
    return [
        Criterion(
            f"{tag}: linearizable",
            False if lin.verdict == checkers.NOT_LINEARIZABLE else (True if lin.ok else None),
            f"{lin.verdict}: {lin.operations} operations on {lin.keys} keys"
            + ("; " + " | ".join(lin.explanations) if lin.explanations else ""),
        ),
        Criterion(
            f"{tag}: nothing acknowledged lost",
            lost.ok and not lost.keys_without_final_read and bool(side.final_values),
            f"{lost.writes_acknowledged} acknowledged writes, {lost.lost_writes} lost"
            + ("" if side.final_values else "; no final read")
            + ("; " + " | ".join(lost.explanations) if lost.explanations else ""),
        ),
        Criterion(
            f"{tag}: no vanished reads",
            vanished.ok,
            f"{vanished.reads} ok reads, {vanished.vanished} went back"
            + ("; " + " | ".join(vanished.explanations) if vanished.explanations else ""),
        ),
        Criterion(f"{tag}: {atomic.name}", atomic.ok, atomic.detail),
    ]


def _reader_read_count(ctx: Context) -> tuple[int, dict[str, int]]:
    """Ok probe reads served by an instance that was not the writer from their start to their end."""
    run = failover_run(ctx)
    name_of = {ctx.cluster.record(n).address: n for n in compute_names(ctx)}
    per: dict[str, int] = {}
    for r in run.probe.reads:
        name = name_of.get(r.address, r.address)
        if r.outcome == OK and name not in (run.watch.writer_at(r.invoked), run.watch.writer_at(r.completed)):
            per[name] = per.get(name, 0) + 1
    return sum(per.values()), per


def shared_criteria(ctx: Context) -> list[Criterion]:
    """The side load's criteria and the reader reads' (never above durable, never backwards)."""
    run = failover_run(ctx)
    out = _side_criteria(run.side)
    bank_final = set(run.bank.final.transfers) if run.bank.final is not None else None
    if run.final_rows is not None and bank_final is not None and {t for _, t in run.final_rows} != bank_final:
        ctx.notes.append("the bank's committed order and its final state read earlier hold different transfers")
    invoked_of = {op.token: op.invoked for op in run.bank.records if op.kind == WRITE and op.token is not None}
    check = check_reader_reads(run.probe.reads, run.final_rows, invoked_of, ctx.workload.origin)
    on_readers, per = _reader_read_count(ctx)
    out.append(
        Criterion(
            "reader probes read on readers",
            on_readers > 0,
            f"{on_readers} ok read transactions on instances that were readers throughout them "
            f"({', '.join(f'{n}: {c}' for n, c in sorted(per.items())) or 'none'})"
            + (f"; {run.final_detail}" if run.final_detail else ""),
        )
    )
    return out + check.criteria()


def failover_lines(ctx: Context) -> list[str]:
    return failover_run(ctx).watch.changes(ctx.workload.origin)
