"""The chaos scenarios: what each one breaks, when, and what must hold.

A scenario has two parts:
- `inject(ctx)`: the fault schedule, run while the clients keep going. It draws
  every choice (victims, moments) from `ctx.rng`, which is seeded from the run's
  seed, runs blocking fault actions through `ctx.do(...)` (a worker thread), sets
  marks (`ctx.mark("fault")`: the fault is in force) and returns when the fault
  phase is over. The runner then heals everything (`Nemesis.heal`).
- `judge(ctx)`: the scenario's own criteria, beyond the ones every run gets
  (linearizable, nothing acknowledged lost, no vanished reads, multi-page MTRs
  atomic, final reads succeed, segments converge).

Every time is `time.monotonic()`; windows are measured between marks.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import grpc

from compute.quorum import COPIES, WRITE_QUORUM
from compute.volume import COMMIT_TIMEOUT_S, CONNECT_WAIT_S
from storage.v1 import control_plane_service_pb2 as cp_pb2
from storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from tools.cluster import COMPUTE

if TYPE_CHECKING:
    from tools.chaos.faults import Nemesis
    from tools.cluster import Cluster

AZS = ("a", "b", "c")
WRITE_GAP_MAX_S = 5.0  # "writes go on": no stretch without an acknowledged write longer than this
PAUSE_S = 8.0  # beyond the writer's commit timeout (5 s) and the control plane's heartbeat timeout (2 s)
SLOW_DELAY_MS = 200.0
SLOW_JITTER_MS = 300.0
OLD_WRITER_LINGER_S = 2.5  # clients keep using the fenced writer this long after the new one opened
NEW_WRITER = "compute-new"  # label of the second writer in the workload's records
# Segment replacement needs somewhere to go (a spare per AZ) and a failure timeout a run can wait out.
REPLACE_CLUSTER = {"spares": 1, "heartbeat_timeout_ms": 1000, "failure_timeout_ms": 3000}
REPLACE_WAIT_S = 90.0
# A spare answering this slowly keeps a change in flight long enough to act mid-way (below the
# control plane's 5 s segment-call timeout).
SPARE_DELAY_MS = 3500.0
# Judging "no write acknowledged without a quorum" (`_judge_no_quorum`). Every PG of these clusters has
# its COPIES segments on the COPIES (non-spare) storage nodes, one each, and a write needs WRITE_QUORUM
# of them: with more than DOWN_MAX nodes down no write can become durable.
DOWN_MAX = COPIES - WRITE_QUORUM
# The writer's own waits (compute/volume.py Volume.write). Before it allocates an MTR (gives it LSNs) it
# waits up to WRITER_ALLOCATION_WAIT_S for its segment streams to (re)connect to a write quorum; after,
# the MTR waits up to WRITER_COMMIT_WAIT_S for that quorum. So a write the clients invoked while the
# nodes were down may be allocated only once they are back (the RPC may also reach the writer late on a
# busy machine: the client never sees when it was allocated) and be acknowledged legitimately after the
# heal. Quoted in the criterion's detail; the judgement itself rests on completion times only.
WRITER_ALLOCATION_WAIT_S = CONNECT_WAIT_S
WRITER_COMMIT_WAIT_S = COMMIT_TIMEOUT_S
RESTART_ACTIONS = ("start", "resume")  # nemesis actions that bring a down node back


@dataclass
class Criterion:
    name: str
    ok: bool | None  # None: reported, not judged
    detail: str = ""


@dataclass
class Timing:
    """The phases of one run (times from time.monotonic())."""

    baseline_s: float
    fault_s: float
    post_s: float


@dataclass
class Context:
    """What a scenario sees of its run."""

    name: str
    rng: random.Random
    cluster: "Cluster"
    nemesis: "Nemesis"
    workload: Any  # tools.chaos.runner.Workload
    timing: Timing
    out_dir: Any
    marks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    resume_points: list[tuple[str, float]] = field(default_factory=list)  # (what, time) writes should resume after
    log: Callable[[str], None] = print

    def mark(self, name: str, at: float | None = None) -> float:
        self.marks[name] = time.monotonic() if at is None else at
        return self.marks[name]

    async def do(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking fault action in a worker thread; the clients keep going meanwhile."""
        return await asyncio.to_thread(fn, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def nodes(self) -> list[str]:
        return self.cluster.node_names()

    def az_nodes(self, az: str) -> list[str]:
        return [n for n in self.nodes() if n.startswith(az)]

    def window(self, start: str, end: str) -> tuple[float, float]:
        return self.marks[start], self.marks[end]

    def base_nodes(self) -> list[str]:
        """Storage nodes that are not spares."""
        return [r.name for r in self.cluster.records() if r.name in self.nodes() and not r.spare]

    def spares(self, az: str) -> list[str]:
        return [r.name for r in self.cluster.records() if r.spare and r.az == az]

    def geometry(self) -> cp_pb2.VolumeGeometry:
        with grpc.insecure_channel(self.cluster.control_plane_address()) as channel:
            return cp_grpc.ControlPlaneServiceStub(channel).DescribeVolume(
                cp_pb2.DescribeVolumeRequest(volume_id=self.nemesis.volume), timeout=5).geometry


@dataclass(frozen=True)
class Scenario:
    name: str
    does: str  # the fault, one line
    must: str  # what must hold, one line
    inject: Callable[[Context], Awaitable[None]]
    judge: Callable[[Context], list[Criterion]] = lambda ctx: []
    writes_expected_during_fault: bool = True  # where "resumed" is measured from: the fault, or the heal
    cluster_options: dict[str, Any] = field(default_factory=dict)  # for Cluster.up()


# --- helpers over the workload's records ------------------------------------------------------


def ops(ctx: Context, kind: str | None = None, outcome: str | None = None, *, invoked_from: float | None = None,
        invoked_to: float | None = None, completed_from: float | None = None, completed_to: float | None = None,
        writer: str | None = None) -> list[Any]:
    out = []
    for r in ctx.workload.records:
        if kind is not None and r.kind != kind:
            continue
        if outcome is not None and r.outcome != outcome:
            continue
        if writer is not None and r.writer != writer:
            continue
        if invoked_from is not None and r.invoked < invoked_from:
            continue
        if invoked_to is not None and r.invoked > invoked_to:
            continue
        if completed_from is not None and r.completed < completed_from:
            continue
        if completed_to is not None and r.completed > completed_to:
            continue
        out.append(r)
    return out


def longest_write_gap(ctx: Context, start: float, end: float) -> float:
    """The longest stretch within [start, end] in which no write completed ok."""
    times = sorted(r.completed for r in ops(ctx, "write", "ok", completed_from=start, completed_to=end))
    edges = [start, *times, end]
    return max(b - a for a, b in zip(edges, edges[1:]))


def goes_on(ctx: Context, start: str = "fault", end: str = "heal_start", *, reads: bool = True,
            writes: bool = True) -> list[Criterion]:
    """Acknowledged writes (and reads) kept coming while the fault was in force."""
    t0, t1 = ctx.window(start, end)
    out = []
    if writes:
        acked = ops(ctx, "write", "ok", invoked_from=t0, completed_to=t1)
        gap = longest_write_gap(ctx, t0, t1)
        out.append(Criterion("writes go on", bool(acked) and gap <= WRITE_GAP_MAX_S,
                             f"{len(acked)} writes acknowledged during the {t1 - t0:.1f} s fault; "
                             f"longest stretch without one {gap:.2f} s (at most {WRITE_GAP_MAX_S:g} s)"))
    if reads:
        read_ok = ops(ctx, "read", "ok", invoked_from=t0, completed_to=t1)
        from_storage = [r for r in read_ok if r.from_storage]
        out.append(Criterion("reads go on", bool(from_storage),
                             f"{len(read_ok)} reads answered during the fault, {len(from_storage)} of them by a "
                             f"storage segment (not the writer's buffer cache)"))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


# --- the scenarios ------------------------------------------------------------------------------


async def _kill_one(ctx: Context) -> None:
    node = ctx.rng.choice(ctx.nodes())
    ctx.data["victims"] = [node]
    await ctx.do(ctx.nemesis.kill, node)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill {node}", ctx.marks["fault"]))
    await ctx.sleep(ctx.timing.fault_s)


async def _kill_az(ctx: Context) -> None:
    az = ctx.rng.choice(AZS)
    victims = ctx.az_nodes(az)
    ctx.data["victims"] = victims
    for node in victims:
        await ctx.do(ctx.nemesis.kill, node)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill AZ {az}", ctx.marks["fault"]))
    await ctx.sleep(ctx.timing.fault_s)


async def _kill_az_plus_one(ctx: Context) -> None:
    az = ctx.rng.choice(AZS)
    victims = ctx.az_nodes(az)
    victims.append(ctx.rng.choice([n for n in ctx.nodes() if n not in victims]))
    ctx.data["victims"] = victims
    for node in victims:
        await ctx.do(ctx.nemesis.kill, node)
    ctx.mark("fault")
    await ctx.sleep(ctx.timing.fault_s)


def quorum_possible_again(ctx: Context) -> tuple[float, str]:
    """The earliest moment a write quorum could exist again after the fault, and how it was found.

    With `n` victims down, a quorum needs `n - DOWN_MAX` of them back. No victim comes back before the
    nemesis begins to start (or resume) it, so the moment the nemesis *began* the (n - DOWN_MAX)-th such
    action after the fault is never later than the real one: a bound that errs towards leniency. Without
    those actions in the fault log: the heal's start (no victim is back before the runner heals)."""
    t0, heal = ctx.window("fault", "heal_start")
    victims = set(ctx.data.get("victims", ()))
    needed = len(victims) - DOWN_MAX
    log = getattr(ctx.nemesis, "log", None)
    back = sorted(e.started for e in getattr(log, "events", ())
                  if e.action in RESTART_ACTIONS and e.target in victims and e.started >= t0)
    if needed <= 0:
        return t0, f"{len(victims)} nodes down never stops a write quorum"
    if len(back) < needed:
        return heal, "the heal began (no victim restarts in the fault log)"
    at = back[needed - 1]
    which = "the first" if needed == 1 else f"the {needed} needed"
    return at, f"the restart of {which} of {len(victims)} victims began, {at - heal:.3f} s after the heal began"


def _judge_no_quorum(ctx: Context, what: str) -> list[Criterion]:
    """While more than DOWN_MAX nodes are down no write can reach WRITE_QUORUM of COPIES: no write
    invoked after the fault may be acknowledged before a quorum could exist again.

    What the client's history proves: a write invoked at or after the "fault" mark (every victim is dead
    by then: Nemesis.kill waits until the process is gone) was sent only to the survivors, so its records
    could reach a quorum only once enough victims run again, at `quorum_possible_again(ctx)` = Q at the
    earliest; and its acknowledgement arrived after it was durable. Hence a write invoked at or after
    the fault and acknowledged before Q was acknowledged without a quorum. A write acknowledged at or
    after Q proves nothing either way: when the writer allocated it (after up to WRITER_ALLOCATION_WAIT_S
    of waiting for its streams, or later if the RPC reached it late) and when it became durable lie
    anywhere in [invoke, ack]; whether it is really durable the lost-write checker judges.
    Not vacuous: the writer must have answered some write while no quorum was possible (refused or
    left in doubt), or the check saw nothing."""
    t0 = ctx.marks["fault"]
    victims = ctx.data.get("victims", [])
    q, how = quorum_possible_again(ctx)
    answered = [r for r in ops(ctx, "write", invoked_from=t0) if r.completed < q]  # an ack at Q itself may be sound
    false_acks = [r for r in answered if r.outcome == "ok"]
    refused = [r for r in answered if r.outcome == "fail"]
    unknown = [r for r in answered if r.outcome == "info"]
    later = [r for r in ops(ctx, "write", invoked_from=t0, invoked_to=q) if r.completed >= q]
    later_ok = [r for r in later if r.outcome == "ok"]
    detail = (f"{len(victims)} nodes down from the fault until a write quorum was possible again ({how}); "
              f"writes invoked after the fault and answered before then: {len(false_acks)} acknowledged, "
              f"{len(refused)} refused, {len(unknown)} unknown")
    if false_acks:
        first = min(false_acks, key=lambda r: r.completed)
        detail += (f"; e.g. {first.token!r} to pages {list(first.keys)} invoked {first.invoked - t0:.3f} s after "
                   f"the fault, acknowledged {q - first.completed:.3f} s before a quorum was possible")
    if later:
        lead = max(q - r.invoked for r in later)
        detail += (f"; not judged: {len(later)} invoked before then and answered after it ({len(later_ok)} "
                   f"acknowledged; invoked up to {lead:.3f} s before it): the writer waits up to "
                   f"{WRITER_ALLOCATION_WAIT_S:g} s for its streams before it allocates a write, then up to "
                   f"{WRITER_COMMIT_WAIT_S:g} s for a quorum, so such a write may have been allocated and made "
                   f"durable after the nodes were back")
    if not answered:
        detail += "; nothing to judge: no write was answered while a quorum was impossible"
    return [Criterion(what, not false_acks and bool(answered), detail)]


def _judge_kill_az_plus_one(ctx: Context) -> list[Criterion]:
    return _judge_no_quorum(ctx, "no write acknowledged without a quorum") + goes_on(ctx, writes=False)


async def _kill_four(ctx: Context) -> None:
    count = ctx.rng.choice([4, 4, 5, 6])
    victims = ctx.rng.sample(ctx.nodes(), count)
    ctx.data["victims"] = victims
    for node in victims:
        await ctx.do(ctx.nemesis.kill, node)
    ctx.mark("fault")
    await ctx.sleep(ctx.timing.fault_s)


def _judge_kill_four(ctx: Context) -> list[Criterion]:
    return _judge_no_quorum(ctx, "unavailable meanwhile")


async def _pause_two(ctx: Context) -> None:
    victims = ctx.rng.sample(ctx.nodes(), 2)
    ctx.data["victims"] = victims
    for node in victims:
        await ctx.do(ctx.nemesis.pause, node)
    ctx.mark("fault")
    ctx.resume_points.append((f"pause {','.join(victims)}", ctx.marks["fault"]))
    await ctx.sleep(max(PAUSE_S, ctx.timing.fault_s))
    for node in victims:
        await ctx.do(ctx.nemesis.resume, node)
    ctx.mark("resumed")


async def _writer_kill(ctx: Context) -> None:
    kills = max(3, min(8, int(ctx.timing.fault_s // 2.5)))
    ctx.data["kills"] = kills
    ctx.mark("fault")
    for i in range(kills):
        await ctx.sleep(ctx.rng.uniform(1.0, 3.0))
        killed_at = time.monotonic()
        await ctx.do(ctx.nemesis.kill, COMPUTE)
        await ctx.sleep(ctx.rng.uniform(0.0, 0.5))
        await ctx.do(ctx.nemesis.start, COMPUTE)
        ctx.resume_points.append((f"writer kill {i + 1}", killed_at))
    await ctx.sleep(1.0)


def _judge_writer_kill(ctx: Context) -> list[Criterion]:
    kills = [e for e in ctx.nemesis.log.events if e.action == "kill" and e.target == COMPUTE]
    return [Criterion("writer killed mid-MTR", None,
                      f"{len(kills)} SIGKILLs of the writer under load; "
                      f"{len(ops(ctx, 'write', 'info'))} writes left in doubt")]


async def _old_writer(ctx: Context) -> None:
    old = ctx.workload.target.address
    ctx.data["old_address"] = old
    ctx.mark("fault")
    new = await ctx.do(ctx.nemesis.open_second_writer, ctx.out_dir)
    ctx.mark("new_writer_open")
    ctx.data["new_address"] = new
    ctx.log(f"second writer open at {new}; clients stay on the old writer for {OLD_WRITER_LINGER_S:g} s")
    await ctx.sleep(OLD_WRITER_LINGER_S)
    deadline = time.monotonic() + 10
    while not await ctx.do(ctx.nemesis.writer_fenced, old) and time.monotonic() < deadline:
        await ctx.sleep(0.2)
    ctx.data["old_knows_fenced"] = await ctx.do(ctx.nemesis.writer_fenced, old)
    await ctx.workload.switch(new, NEW_WRITER)
    ctx.mark("switched")
    ctx.resume_points.append(("clients switched to the new writer", ctx.marks["switched"]))
    await ctx.sleep(max(2.0, ctx.timing.fault_s - OLD_WRITER_LINGER_S))


def _judge_old_writer(ctx: Context) -> list[Criterion]:
    opened = ctx.marks["new_writer_open"]
    stale_acks = ops(ctx, "write", "ok", invoked_from=opened, writer=COMPUTE)
    fenced = [r for r in ops(ctx, "write", "fail", invoked_from=opened, writer=COMPUTE)
              if r.code == "FAILED_PRECONDITION"]
    other = [r for r in ops(ctx, "write", invoked_from=opened, writer=COMPUTE) if r.outcome != "ok" and r not in fenced]
    new_acks = ops(ctx, "write", "ok", writer=NEW_WRITER)
    # A write refused as fenced counts as `fail` (nothing written); see whether any was read back anyway.
    observed = {v for r in ops(ctx, "read", "ok") for v in r.values}
    refused = [r for r in ops(ctx, "write", "fail") if r.code == "FAILED_PRECONDITION"]
    resurrected = [r for r in refused if r.token in observed]
    detail = (f"{len(refused)} writes refused as fenced (FAILED_PRECONDITION) in all; {len(resurrected)} of them "
              f"were read back later")
    if resurrected:
        first = resurrected[0]
        detail += (f", e.g. {first.token!r} to pages {list(first.keys)} refused at "
                   f"t={first.completed - ctx.workload.origin:.3f}: the old writer failed MTRs that were already in "
                   f"flight with 'fenced', but the new writer's recovery found them on a write quorum and made them "
                   f"durable; an in-flight MTR's outcome is unknown when its writer is fenced "
                   f"(compute/volume.py Volume.on_fenced)")
    return [
        Criterion("old writer fenced", not stale_acks and bool(fenced),
                  f"writes sent to the old writer after the new one opened: {len(stale_acks)} acknowledged, "
                  f"{len(fenced)} rejected as fenced (FAILED_PRECONDITION), {len(other)} other errors; "
                  f"old writer reports fenced: {ctx.data.get('old_knows_fenced')}"),
        Criterion("a write refused as fenced never takes effect", not resurrected, detail),
        Criterion("clients switched to the new writer", bool(new_acks),
                  f"{len(new_acks)} writes acknowledged by the new writer"),
    ]


async def _byte_flip(ctx: Context) -> None:
    workload = ctx.workload
    key = ctx.rng.choice(workload.single_keys)
    node = ctx.rng.choice(ctx.nodes())
    ctx.data.update(victim=node, key=key)
    ctx.mark("fault")
    await ctx.do(ctx.nemesis.stop, node)
    # Newest acknowledged single-page tokens of the key first: one of them is surely on the node.
    tokens = [r.token for r in reversed(ops(ctx, "write", "ok")) if r.keys == (key,)]
    if not tokens:
        raise RuntimeError(f"no acknowledged write to page {key} before the flip")
    flip = await ctx.do(ctx.nemesis.flip_byte, node, key, [(t, workload.encode(t)) for t in tokens[:200]])
    ctx.data["flip"] = flip
    await ctx.do(ctx.nemesis.start, node)
    await ctx.do(ctx.nemesis.wait_writer_connected, workload.target.address, 30.0, {node})
    code, details = await ctx.do(ctx.nemesis.probe_page, node, key)
    ctx.data["probe"] = (code, details)
    ctx.log(f"direct read of page {key} on {node}: {code} {details[:160]}")
    # The writer's buffer cache holds every hot page: restart it so its reads go to the segments again.
    stopped_at = time.monotonic()
    await ctx.do(ctx.nemesis.stop, COMPUTE)
    await ctx.do(ctx.nemesis.start, COMPUTE)
    ctx.resume_points.append(("writer restart (cold cache)", stopped_at))
    await ctx.sleep(max(3.0, ctx.timing.fault_s / 2))


def _judge_byte_flip(ctx: Context) -> list[Criterion]:
    flip = ctx.data["flip"]
    code, details = ctx.data["probe"]
    needle = "CRC-32C"
    writer_lines = ctx.workload.log_lines(COMPUTE, needle)
    node_lines = ctx.workload.log_lines(flip.node, needle)
    # Detected by whoever met it first: the direct read, the writer failing over, or the node itself (a scrub).
    detected = (code == "DATA_LOSS" and needle in details) or bool(writer_lines) or bool(node_lines)
    served = [r for r in ctx.workload.records if r.kind == "read" and r.outcome == "ok"
              and any(v is not None and v != flip.token and v.startswith("<") for v in r.values)]
    return [
        Criterion("rotten record never served", not served,
                  f"page {flip.key}, token {flip.token!r} on {flip.node}: {len(served)} reads returned undecodable "
                  f"bytes (the linearizability checker also rejects any value no write explains)"),
        Criterion("bit rot detected", detected,
                  f"direct ReadPage on {flip.node}: {code} ({details[:120]}); CRC-32C lines in the writer's log: "
                  f"{len(writer_lines)}, in {flip.node}'s log: {len(node_lines)}"),
    ]


async def _slow_node(ctx: Context) -> None:
    node = ctx.rng.choice(ctx.nodes())
    ctx.data["victim"] = node
    await ctx.do(ctx.nemesis.slow, node, SLOW_DELAY_MS, SLOW_JITTER_MS)
    ctx.mark("fault")
    ctx.resume_points.append((f"slow {node}", ctx.marks["fault"]))
    await ctx.sleep(ctx.timing.fault_s)


def _latencies(ctx: Context, start: float, end: float) -> list[float]:
    return [r.completed - r.invoked for r in ops(ctx, "write", "ok", invoked_from=start, completed_to=end)]


def _judge_slow_node(ctx: Context) -> list[Criterion]:
    base = _latencies(ctx, ctx.marks["load_start"], ctx.marks["fault_start"])
    slow = _latencies(ctx, ctx.marks["fault"], ctx.marks["heal_start"])
    b50, b99 = percentile(base, 0.5) * 1000, percentile(base, 0.99) * 1000
    s50, s99 = percentile(slow, 0.5) * 1000, percentile(slow, 0.99) * 1000
    limit = SLOW_DELAY_MS / 2
    ctx.data["latency_ms"] = {"baseline_p50": b50, "baseline_p99": b99, "fault_p50": s50, "fault_p99": s99}
    return goes_on(ctx, reads=False) + [Criterion(
        "commit latency not tied to the slow node", bool(slow) and s50 < limit,
        f"write latency p50/p99: baseline {b50:.1f}/{b99:.1f} ms ({len(base)} writes), with {ctx.data['victim']} "
        f"delayed {SLOW_DELAY_MS:g}..{SLOW_DELAY_MS + SLOW_JITTER_MS:g} ms: {s50:.1f}/{s99:.1f} ms ({len(slow)} writes); "
        f"p50 must stay below {limit:g} ms")]


async def _partition_az(ctx: Context) -> None:
    az = ctx.rng.choice(AZS)
    victims = ctx.az_nodes(az)
    ctx.data["victims"] = victims
    await ctx.do(ctx.nemesis.partition, victims)
    ctx.mark("fault")
    ctx.notes.append(f"partition of AZ {az}: {' and '.join(victims)} refuse every RPC that reaches them (the writer's "
                     f"streams and reads, their peers' gossip, the control plane, health checks) and ask no peer "
                     f"themselves (their gossip stops); only their heartbeats to the control plane still go out, "
                     f"so they are not replaced meanwhile")
    ctx.resume_points.append((f"partition AZ {az}", ctx.marks["fault"]))
    await ctx.sleep(ctx.timing.fault_s)


async def _rolling_restart(ctx: Context) -> None:
    order = ctx.nodes()
    ctx.rng.shuffle(order)
    ctx.data["order"] = order
    ctx.mark("fault")
    address = ctx.workload.target.address
    for node in order:
        await ctx.do(ctx.nemesis.stop, node)
        ctx.resume_points.append((f"stop {node}", time.monotonic()))
        await ctx.sleep(ctx.rng.uniform(0.5, 1.5))
        await ctx.do(ctx.nemesis.start, node)
        connected = await ctx.do(ctx.nemesis.wait_writer_connected, address, 30.0, {node})
        if not connected:
            ctx.notes.append(f"the writer did not reconnect to {node} within 30 s")
        await ctx.sleep(0.5)


def _wait_geometry(ctx: Context, what: str, predicate: Callable[[Any], bool], timeout_s: float = REPLACE_WAIT_S,
                   ) -> float | None:
    """Poll the control plane until `predicate(geometry)`; the time it held, or None after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate(ctx.geometry()):
                return time.monotonic()
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    ctx.notes.append(f"timed out after {timeout_s:g} s waiting until {what}")
    return None


def _nodes_of(pg: Any) -> set[str]:
    return {s.node_id for s in pg.segments}


def _six_without(gone: set[str]) -> Callable[[Any], bool]:
    return lambda g: all(not pg.changes and len(pg.segments) == 6 and not (_nodes_of(pg) & gone)
                         for pg in g.protection_groups)


async def _replace(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    ctx.data["victim"] = victim
    ctx.data["before"] = {pg.pg_index: sorted(_nodes_of(pg)) for pg in ctx.geometry().protection_groups}
    await ctx.do(ctx.nemesis.kill, victim)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill {victim} for good", ctx.marks["fault"]))
    regained = await ctx.do(_wait_geometry, ctx, f"six healthy copies without {victim}", _six_without({victim}))
    if regained is not None:
        ctx.mark("replaced", regained)
        ctx.data["after"] = {pg.pg_index: sorted(_nodes_of(pg)) for pg in ctx.geometry().protection_groups}
        ctx.log(f"six healthy copies again {regained - ctx.marks['fault']:.1f} s after {victim} was killed: "
                f"{ctx.data['after']}")
    await ctx.sleep(ctx.timing.fault_s / 2)  # load on the new membership, the victim still dead


def _judge_replace(ctx: Context) -> list[Criterion]:
    victim = ctx.data["victim"]
    replaced = ctx.marks.get("replaced")
    took = f"{replaced - ctx.marks['fault']:.1f} s" if replaced else "never"
    return goes_on(ctx) + [Criterion(
        "six healthy copies regained", replaced is not None,
        f"{victim} killed for good; every PG back to six segments without it after {took} "
        f"(failure timeout {REPLACE_CLUSTER['failure_timeout_ms'] / 1000:g} s); before {ctx.data['before']}, "
        f"after {ctx.data.get('after')}")]


async def _replace_rollback(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    az = ctx.cluster.record(victim).az
    ctx.data["victim"] = victim
    for spare in ctx.spares(az):
        await ctx.do(ctx.nemesis.slow, spare, SPARE_DELAY_MS)
    await ctx.do(ctx.nemesis.kill, victim)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill {victim}", ctx.marks["fault"]))
    begun = await ctx.do(_wait_geometry, ctx, f"a change replacing {victim} begins",
                         lambda g: any(c.old_node_id == victim for pg in g.protection_groups for c in pg.changes))
    if begun is None:
        return
    ctx.mark("change_begun", begun)
    await ctx.do(ctx.nemesis.start, victim)
    ctx.mark("old_node_back")
    back = await ctx.do(_wait_geometry, ctx, f"the change rolls back and {victim} stays",
                        lambda g: all(not pg.changes for pg in g.protection_groups)
                        and any(victim in _nodes_of(pg) for pg in g.protection_groups))
    if back is not None:
        ctx.mark("rolled_back", back)
    await ctx.sleep(ctx.timing.fault_s / 2)


def _judge_replace_rollback(ctx: Context) -> list[Criterion]:
    victim = ctx.data["victim"]
    begun, rolled = ctx.marks.get("change_begun"), ctx.marks.get("rolled_back")
    detail = (f"{victim} killed; change began {begun - ctx.marks['fault']:.1f} s later; {victim} restarted; "
              f"rolled back {rolled - ctx.marks['old_node_back']:.1f} s after it was started"
              if begun and rolled else f"change began: {bool(begun)}, rolled back: {bool(rolled)}")
    return goes_on(ctx) + [Criterion("old node's return rolls the change back", bool(begun and rolled), detail)]


def _two_victims(ctx: Context) -> tuple[str, str, list[str]]:
    """Two nodes of different AZs in one PG, and the spares of their AZs to slow down, such that no PG
    has more than two of them (the spares also hold segments of other PGs: load spreading puts them
    there) -- the fault stays within what the design survives, so writes must go on."""
    pgs = [_nodes_of(pg) for pg in ctx.geometry().protection_groups]
    az = {n: ctx.cluster.record(n).az for n in ctx.nodes()}
    pairs = [(f, s) for f in ctx.base_nodes() for s in ctx.base_nodes() if az[f] < az[s]]
    ctx.rng.shuffle(pairs)
    for first, second in pairs:
        slowed = ctx.spares(az[first]) + ctx.spares(az[second])
        impaired = {first, second, *slowed}
        if any({first, second} <= pg for pg in pgs) and all(len(pg & impaired) <= 2 for pg in pgs):
            return first, second, slowed
    first, second = pairs[0]
    ctx.notes.append("no pair of victims keeps every PG within two impaired nodes; spares not slowed")
    return first, second, []


async def _replace_two(ctx: Context) -> None:
    first, second, slowed = _two_victims(ctx)
    if ctx.rng.random() < 0.5:
        first, second = second, first
    ctx.data["victims"] = [first, second]
    ctx.data["slowed"] = slowed
    for spare in slowed:
        await ctx.do(ctx.nemesis.slow, spare, SPARE_DELAY_MS)
    await ctx.do(ctx.nemesis.kill, first)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill {first}", ctx.marks["fault"]))
    await ctx.do(_wait_geometry, ctx, f"a change replacing {first} begins",
                 lambda g: any(c.old_node_id == first for pg in g.protection_groups for c in pg.changes))
    await ctx.do(ctx.nemesis.kill, second)
    ctx.resume_points.append((f"kill {second}", time.monotonic()))
    both = await ctx.do(_wait_geometry, ctx, "two changes are in flight in one PG",
                        lambda g: any(len(pg.changes) == 2 for pg in g.protection_groups))
    if both is not None:
        ctx.mark("composed", both)
    done = await ctx.do(_wait_geometry, ctx, f"six healthy copies without {first} and {second}",
                        _six_without({first, second}))
    if done is not None:
        ctx.mark("replaced", done)
        ctx.data["after"] = {pg.pg_index: sorted(_nodes_of(pg)) for pg in ctx.geometry().protection_groups}
    await ctx.sleep(ctx.timing.fault_s / 2)


def _judge_replace_two(ctx: Context) -> list[Criterion]:
    first, second = ctx.data["victims"]
    composed, replaced = ctx.marks.get("composed"), ctx.marks.get("replaced")
    return goes_on(ctx) + [
        Criterion("two failures compose", composed is not None,
                  f"{first} then {second} killed; two changes in flight in one PG: {composed is not None}"),
        Criterion("six healthy copies regained", replaced is not None,
                  f"after {replaced - ctx.marks['fault']:.1f} s: {ctx.data.get('after')}" if replaced else "never"),
    ]


def _judge_rolling(ctx: Context) -> list[Criterion]:
    return goes_on(ctx, reads=False)


def _judge_goes_on(ctx: Context) -> list[Criterion]:
    return goes_on(ctx)


def _judge_pause(ctx: Context) -> list[Criterion]:
    return goes_on(ctx, "fault", "resumed")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("kill-one", "SIGKILL one storage node", "reads and writes go on; nothing lost",
             _kill_one, _judge_goes_on),
    Scenario("kill-az", "SIGKILL both nodes of one AZ", "reads and writes go on; nothing lost",
             _kill_az, _judge_goes_on),
    Scenario("kill-az-plus-one", "SIGKILL one AZ plus one more node",
             "no write succeeds falsely (every ok write survives); reads go on",
             _kill_az_plus_one, _judge_kill_az_plus_one, writes_expected_during_fault=False),
    Scenario("kill-four", "SIGKILL four or more storage nodes, then restart them all",
             "unavailable meanwhile; nothing acknowledged lost afterwards",
             _kill_four, _judge_kill_four, writes_expected_during_fault=False),
    Scenario("pause-two", f"SIGSTOP two nodes for {PAUSE_S:g} s, then SIGCONT",
             "available; a resumed node never serves stale data as current",
             _pause_two, _judge_pause),
    Scenario("writer-kill", "SIGKILL the writer mid-MTR several times, restart it each time",
             "acknowledged MTRs whole, others wholly absent", _writer_kill, _judge_writer_kill,
             writes_expected_during_fault=False),
    Scenario("old-writer", "a second writer opens the volume while clients keep writing to the first",
             "every old write after the new writer opened is rejected; clients move on to the new one",
             _old_writer, _judge_old_writer, writes_expected_during_fault=False),
    Scenario("byte-flip", "flip a byte of a stored record of a hot page in a stopped node's LMDB file",
             "never served; detected (CRC-32C)", _byte_flip, _judge_byte_flip),
    Scenario("slow-node", f"one node delays every request {SLOW_DELAY_MS:g}..{SLOW_DELAY_MS + SLOW_JITTER_MS:g} ms",
             "commit latency not tied to the slow node", _slow_node, _judge_slow_node),
    Scenario("partition-az", "partition one AZ (both its nodes unreachable)",
             "the side with four nodes goes on; nothing lost", _partition_az, _judge_goes_on),
    Scenario("rolling-restart", "stop/start each of the six nodes in turn under load",
             "writes continue throughout; nothing lost", _rolling_restart, _judge_rolling),
    Scenario("replace", "SIGKILL one storage node for good (one spare per AZ)",
             "six healthy copies again with no one acting; reads and writes go on; nothing lost",
             _replace, _judge_replace, cluster_options=REPLACE_CLUSTER),
    Scenario("replace-rollback", "SIGKILL a node, start it again while its replacement (a slow spare) hydrates",
             "the change rolls back; reads and writes go on; nothing lost",
             _replace_rollback, _judge_replace_rollback, cluster_options=REPLACE_CLUSTER),
    Scenario("replace-two", "SIGKILL a node, then one in another AZ while the first is being replaced",
             "the two changes compose and both complete; writes go on; nothing lost",
             _replace_two, _judge_replace_two, cluster_options=REPLACE_CLUSTER),
]}


def resolve(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


__all__ = ["SCENARIOS", "Scenario", "Context", "Criterion", "Timing", "resolve", "ops", "goes_on", "percentile",
           "quorum_possible_again"]
