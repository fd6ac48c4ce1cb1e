"""Failover scenarios: a cluster with two read replicas, the writer SIGKILLed or paused, a reader promoted.

Both run both workloads at once (tools/chaos/failover_run.py): the run's own (`--workload`, pages by
default) on vol0 and the other one on vol1, every client reaching the writer through the cluster endpoint
(tools/chaos/failover_loads.py), and reader probes reading the bank on each compute instance and through
the reader endpoint (tools/chaos/reader_probe.py).

- writer-failover: the writer (whoever it is now) SIGKILLed at least twice; each time the control plane
  must name another writer (a reader promoted: recovery at a new volume epoch), the killed instance is
  started again through the launcher and must rejoin as a reader; once, a reader is paused (SIGSTOP) for
  a few seconds and resumed. Failover times: from the kill until the control plane names the new writer,
  and until a write sent after the kill is acknowledged.
- split-brain: the writer paused (SIGSTOP) until the control plane promotes a reader, the load kept on the
  new writer for a while, then the old writer resumed (SIGCONT) and sent writes directly (its own address,
  pages and transfers): it must acknowledge none of them, nor anything sent after the new writer opened,
  and must rejoin as a reader (ClusterService.ListComputeInstances, and its own GetInstanceStatus).
Both: nothing acknowledged lost, linearizable / the bank's invariants on both volumes, and every reader
read a prefix of the committed order, never ahead of what clients had sent, never backwards
(tools/chaos/reader_check.py).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

from sixfold.tools.chaos.bank import AMOUNT_MAX, SESSION, TXN
from sixfold.tools.chaos.bank_client import BankClient
from sixfold.tools.chaos.failover_loads import CALL_TIMEOUT_S, EndpointPages, capped, runner_workload
from sixfold.tools.chaos.failover_run import (
    FAILOVER_WAIT_S,
    failover_run,
    first_ack_after,
    rejoined,
    restore_instances,
    settle,
    settled_writer,
    shared_criteria,
    start,
    wait_view,
)
from sixfold.tools.chaos.failover_watch import READER, own_role
from sixfold.tools.chaos.history import FAIL, OK, WRITE
from sixfold.tools.chaos.scenario_base import Context, Criterion, Scenario
from sixfold.tools.chaos.workload import OpRecord, Workload

REPLICAS = 2
KILLS_MIN, KILLS_MAX = 2, 4
READER_PAUSE_S = (1.5, 3.0)
PAUSE_HOLD_S = CALL_TIMEOUT_S + 3.0  # split-brain: the old writer stays paused this long after the new one opened
DIRECT_S = 2.5  # split-brain: writes sent to the old writer directly for this long after it was resumed
DIRECT_EARLY_S = 0.3  # ... the first of them sent this long before it is resumed (in flight while it is paused)
DIRECT_PROCESS = 5000  # the direct writes' process number in the histories
OLD_DIRECT = "old-writer-direct"  # their label


def _loads(ctx: Context) -> list[Any]:
    return [ctx.workload, failover_run(ctx).side]


def _since(ctx: Context, at: float | None) -> float | None:
    return None if at is None else round(at - ctx.workload.origin, 3)


# --- writer-failover ------------------------------------------------------------------------------


async def _pause_a_reader(ctx: Context) -> None:
    view = await settled_writer(ctx)
    readers = [name for name, role, alive in view.roles if role == READER and alive]
    if not readers:
        ctx.data["reader_pause"] = {"skipped": "no live reader"}
        return
    victim = ctx.rng.choice(sorted(readers))
    seconds = ctx.rng.uniform(*READER_PAUSE_S)
    await ctx.do(ctx.nemesis.pause, victim)
    await ctx.sleep(seconds)
    await ctx.do(ctx.nemesis.resume, victim)
    resumed = time.monotonic()
    back = await rejoined(ctx, victim)
    ctx.data["reader_pause"] = {
        "reader": victim,
        "paused_s": round(seconds, 2),
        "alive_again_after_s": None if back is None else round(max(0.0, back.at - resumed), 3),
    }
    ctx.log(f"reader {victim} paused {seconds:.1f} s; " + ("listed alive again" if back else "NOT listed alive again"))


async def _one_kill(ctx: Context, number: int) -> dict[str, Any]:
    view = await settled_writer(ctx)
    victim = view.writer_id
    await wait_view(ctx, lambda v: any(r == READER and alive for _, r, alive in v.roles), FAILOVER_WAIT_S)
    killed_at = time.monotonic()
    await ctx.do(ctx.nemesis.kill, victim)
    ctx.resume_points.append((f"writer kill {number} ({victim})", killed_at))
    named = await wait_view(ctx, lambda v: v.settled_writer() not in ("", victim), FAILOVER_WAIT_S)
    record: dict[str, Any] = {
        "kill": number,
        "victim": victim,
        "generation_before": view.generation,
        "killed_at": _since(ctx, killed_at),
        "new_writer": named.writer_id if named else None,
        "generation": named.generation if named else None,
        "named_after_s": round(named.at - killed_at, 3) if named else None,
    }
    ctx.log(
        f"writer {victim} SIGKILLed: "
        + (f"{named.writer_id} named writer {named.at - killed_at:.2f} s later" if named else "NO new writer named")
    )
    await ctx.do(ctx.nemesis.start, victim)  # through the launcher: same port, its --reader flag (or none)
    record["started_after_s"] = round(time.monotonic() - killed_at, 3)
    back = await rejoined(ctx, victim)
    record["reader_after_s"] = None if back is None else round(back.at - killed_at, 3)
    ctx.log(f"{victim} started again: " + ("a live reader" if back else "NOT listed as a live reader"))
    return record


async def _writer_failover(ctx: Context) -> None:
    kills = max(KILLS_MIN, min(KILLS_MAX, int(ctx.timing.fault_s // 6)))
    records: list[dict[str, Any]] = []
    ctx.data["failovers"] = records
    ctx.mark("fault")
    try:
        for number in range(1, kills + 1):
            await ctx.sleep(ctx.rng.uniform(0.5, 1.5))
            records.append(await _one_kill(ctx, number))
            if number == 1:
                await _pause_a_reader(ctx)
        await ctx.sleep(ctx.marks["fault"] + ctx.timing.fault_s - time.monotonic())
    finally:
        done = await restore_instances(ctx)
        if done:
            ctx.notes.append("instances restored after the fault phase: " + ", ".join(done))
    await ctx.workload.refresh()


def _judge_writer_failover(ctx: Context) -> list[Criterion]:
    records: list[dict[str, Any]] = ctx.data.get("failovers", [])
    for r in records:
        ack = first_ack_after(ctx, ctx.workload.origin + r["killed_at"])
        r["first_ack_after_s"] = None if ack is None else round(ack, 3)
    failed_over = [r for r in records if r["new_writer"] and r["new_writer"] != r["victim"]]
    back = [r for r in records if r["reader_after_s"] is not None]
    pause = ctx.data.get("reader_pause", {})
    ctx.data["failover_s"] = {
        "named": [r["named_after_s"] for r in records],
        "first_ack": [r["first_ack_after_s"] for r in records],
    }
    return [
        Criterion(
            "writer killed and failed over each time",
            len(records) >= KILLS_MIN and len(failed_over) == len(records),
            f"{len(records)} SIGKILLs of the writer, {len(failed_over)} followed by another writer: "
            + "; ".join(
                f"{r['victim']} -> {r['new_writer'] or 'nobody'}"
                + (f" (generation {r['generation_before']} -> {r['generation']})" if r["new_writer"] else "")
                for r in records
            ),
        ),
        Criterion(
            "failover times",
            None,
            "from the SIGKILL until the control plane named the new writer (promoted, every volume recovered): "
            + ", ".join(_seconds(r["named_after_s"]) for r in records)
            + "; until a write sent after the kill was acknowledged (either workload): "
            + ", ".join(_seconds(r["first_ack_after_s"]) for r in records),
        ),
        Criterion(
            "killed writers rejoin as readers",
            len(back) == len(records) and bool(records),
            "; ".join(
                f"{r['victim']} started again (launcher) {r['started_after_s']:.1f} s after its kill, listed a live "
                f"reader {_seconds(r['reader_after_s'])} after it"
                for r in records
            ),
        ),
        Criterion(
            "a reader paused and resumed",
            pause.get("alive_again_after_s") is not None,
            f"{pause.get('reader')} SIGSTOPped {pause.get('paused_s')} s, listed alive again "
            f"{_seconds(pause.get('alive_again_after_s'))} after its SIGCONT"
            if "reader" in pause
            else str(pause.get("skipped", "not done")),
        ),
        *shared_criteria(ctx),
    ]


def _ack_after(ctx: Context, mark: str) -> float | None:
    at = ctx.marks.get(mark)
    return None if at is None else first_ack_after(ctx, at)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


# --- split-brain ----------------------------------------------------------------------------------


class DirectWrites:
    """Writes sent straight to one instance's address (not the endpoint), into both workloads' histories:
    page writes (single pages and pairs) and bank transfers, until `stop`."""

    def __init__(self, ctx: Context, address: str) -> None:
        run = failover_run(ctx)
        pages = next(w for w in _loads(ctx) if isinstance(w, EndpointPages))
        self.pages = Workload(
            clients=1, keys=len(pages.all_keys), seed=0, address=address, cluster=ctx.cluster, volume=pages.volume
        )
        self.pages.history, self.pages.records = pages.history, pages.records
        self.pages.single_keys, self.pages.pairs = pages.single_keys, pages.pairs
        self.pages.target.label = OLD_DIRECT
        self.pages.target.stub = capped(self.pages.target.stub)
        self.bank = BankClient(run.bank.ledger, DIRECT_PROCESS, lambda: (address, OLD_DIRECT), run.bank.volume)
        self.accounts = run.bank.accounts
        self.rng = random.Random(f"{ctx.workload.seed}:direct")
        self.stop = threading.Event()
        self.tasks: list[asyncio.Future[None]] = []
        self.closed = False

    async def connect(self) -> None:
        """Connections to the instance made now (while it serves), so that writes sent while it is paused wait
        in its sockets and reach it the moment it resumes: one read of the bank (recorded as a read)."""
        await asyncio.wait_for(self.pages.target.channel.channel_ready(), CALL_TIMEOUT_S)
        await asyncio.to_thread(self.bank.read)

    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(self._pages()), asyncio.ensure_future(asyncio.to_thread(self._bank))]

    async def _pages(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            token = f"old-p{DIRECT_PROCESS}-{n}"
            if n % 3:
                await self.pages.write((DIRECT_PROCESS,), (self.rng.choice(self.pages.single_keys),), token)
            else:
                await self.pages.write((DIRECT_PROCESS, DIRECT_PROCESS + 1), self.rng.choice(self.pages.pairs), token)
            await asyncio.sleep(0.02)

    def _bank(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            src, dst = self.rng.sample(range(1, self.accounts + 1), 2)
            via = SESSION if n % 2 else TXN
            self.bank.transfer(f"old-{n}", src, dst, self.rng.randint(1, AMOUNT_MAX), via)
            self.stop.wait(0.02)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.bank.close()
        await self.pages.target.channel.close()


async def _split_brain(ctx: Context) -> None:
    view = await settled_writer(ctx)
    old = view.writer_id
    address = ctx.cluster.record(old).address
    ctx.data.update(old_writer=old, generation_before=view.generation)
    direct = DirectWrites(ctx, address)
    try:
        await direct.connect()
        paused_at = time.monotonic()
        await ctx.do(ctx.nemesis.pause, old)
        ctx.mark("fault", paused_at)
        ctx.resume_points.append((f"writer {old} paused", paused_at))
        named = await wait_view(ctx, lambda v: v.settled_writer() not in ("", old), FAILOVER_WAIT_S)
        if named is not None:
            ctx.mark("new_writer_open", named.at)  # Promote answered: every volume recovered at a new epoch
            ctx.data.update(new_writer=named.writer_id, generation=named.generation)
            ctx.data["named_after_s"] = round(named.at - paused_at, 3)
            ctx.log(f"writer {old} paused; {named.writer_id} named writer {named.at - paused_at:.2f} s later")
        hold_from = named.at if named is not None else time.monotonic()
        await ctx.sleep(hold_from + max(PAUSE_HOLD_S, ctx.timing.fault_s / 2) - DIRECT_EARLY_S - time.monotonic())
        ctx.mark("direct_start")
        direct.start()
        await ctx.sleep(DIRECT_EARLY_S)
        await ctx.do(ctx.nemesis.resume, old)
        ctx.mark("old_resumed")
        await ctx.sleep(DIRECT_S)
        await direct.close()
        back = await rejoined(ctx, old)
        own = await ctx.do(own_role, ctx.cluster, old)
        ctx.data["rejoined"] = {
            "listed_reader_after_s": None if back is None else round(max(0.0, back.at - ctx.marks["old_resumed"]), 3),
            "own_role": own,
        }
        ctx.log(f"{old} resumed: listed {'a live reader' if back else 'NOT a live reader'}; it says it is {own}")
        await ctx.sleep(ctx.marks["fault"] + ctx.timing.fault_s - time.monotonic())
    finally:
        await direct.close()
        done = await restore_instances(ctx)
        if done:
            ctx.notes.append("instances restored after the fault phase: " + ", ".join(done))
    await ctx.workload.refresh()


def _judge_split_brain(ctx: Context) -> list[Criterion]:
    old, opened = ctx.data.get("old_writer", "?"), ctx.marks.get("new_writer_open")
    resumed = ctx.marks.get("old_resumed")
    writes = [r for w in _loads(ctx) for r in w.records if r.kind == WRITE]
    direct = [r for r in writes if r.writer == OLD_DIRECT]
    late = [r for r in writes if r.writer == old and opened is not None and r.invoked >= opened]
    acked = [r for r in direct + late if r.outcome == OK]
    how = Counter(
        f"{'page writes' if isinstance(r, OpRecord) else 'transfers'} {r.outcome} {r.code}"
        + (f"/{r.reason}" if getattr(r, "reason", "") else "")
        for r in direct + late
    )
    observed = {
        v for w in _loads(ctx) if isinstance(w, Workload) for r in w.records if r.outcome == OK for v in r.values
    }
    bank = failover_run(ctx).bank
    present = set(bank.final.transfers) if bank.final is not None else set()
    refused = [r for r in direct if r.outcome == FAIL]
    took_effect = [r.token for r in refused if r.token in observed or r.token in present]
    between = [r for r in writes if r.outcome == OK and opened and resumed and opened <= r.invoked <= resumed]
    rejoin = ctx.data.get("rejoined", {})
    named = ctx.data.get("new_writer")
    return [
        Criterion(
            "failover while the old writer was paused",
            bool(named) and named != old,
            f"{old} paused (SIGSTOP); "
            + (
                f"{named} named writer {ctx.data['named_after_s']:.2f} s later (generation "
                f"{ctx.data['generation_before']} -> {ctx.data['generation']})"
                if named
                else f"no other writer named within {FAILOVER_WAIT_S:g} s"
            ),
        ),
        Criterion(
            "failover times",
            None,
            f"from the SIGSTOP until the control plane named the new writer: {_seconds(ctx.data.get('named_after_s'))}"
            f"; until a write sent after the SIGSTOP was acknowledged: {_seconds(_ack_after(ctx, 'fault'))} (calls "
            f"sent to the paused writer wait out their {CALL_TIMEOUT_S:g} s deadline first); from the SIGCONT until "
            f"the old writer was listed a reader: {_seconds(rejoin.get('listed_reader_after_s'))}",
        ),
        Criterion(
            "old writer acknowledges nothing after the new one opened",
            bool(direct) and not acked,
            f"{len(direct)} writes sent straight to {old} once the new writer opened ({DIRECT_EARLY_S:g} s before "
            f"and {DIRECT_S:g} s after its SIGCONT) and {len(late)} endpoint calls that reached it after then: "
            f"{len(acked)} acknowledged; " + ", ".join(f"{n} {k}" for k, n in how.most_common()),
        ),
        Criterion(
            "a write the old writer refused never takes effect",
            not took_effect,
            f"{len(refused)} refused; {len(took_effect)} read back or present at the end"
            + (f": {took_effect[:5]}" if took_effect else ""),
        ),
        Criterion(
            "writes go on against the new writer",
            bool(between),
            f"{len(between)} writes acknowledged between the new writer opening and the old one resuming",
        ),
        Criterion(
            "old writer rejoins as a reader",
            rejoin.get("listed_reader_after_s") is not None and rejoin.get("own_role") == READER,
            f"listed a live reader {rejoin.get('listed_reader_after_s')} s after its SIGCONT; "
            f"GetInstanceStatus says {rejoin.get('own_role')}",
        ),
        *shared_criteria(ctx),
    ]


FAMILY = (
    Scenario(
        "writer-failover",
        "SIGKILL the writer (whoever it is) at least twice, with 2 read replicas; a reader paused once",
        "a reader promoted each time; nothing lost; reader reads durable, in order, never backwards",
        _writer_failover,
        _judge_writer_failover,
        cluster_options={"replicas": REPLICAS},
        settle=settle,
        workload_factory=runner_workload,
        start=start,
    ),
    Scenario(
        "split-brain",
        "SIGSTOP the writer until a reader is promoted, then SIGCONT it and write to it directly",
        "the old writer acknowledges nothing and rejoins as a reader; nothing lost",
        _split_brain,
        _judge_split_brain,
        cluster_options={"replicas": REPLICAS},
        settle=settle,
        workload_factory=runner_workload,
        start=start,
    ),
)
