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
import itertools
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from sixfold.compute.quorum import COPIES, WRITE_QUORUM
from sixfold.compute.volume import COMMIT_TIMEOUT_S, CONNECT_WAIT_S
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.tools.cluster import COMPUTE, ClusterError

if TYPE_CHECKING:
    from sixfold.tools.chaos.faults import Nemesis
    from sixfold.tools.cluster import Cluster

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
# Disk rot and lost copies. A node back from a rotted disk, or a dropped copy, must have every PG's six
# segments whole again within WHOLE_WAIT_S (the control plane creates a lost copy again once it has been
# missing from the node's heartbeats for 2 s; rebuilding then measures its target from three peers and
# gossip fills it); the run waits up to WHOLE_WAIT_MAX_S to say how long it took.
WHOLE_WAIT_S = 30.0
WHOLE_WAIT_MAX_S = 2 * WHOLE_WAIT_S
AT_REST_WAIT_S = 20.0  # after the clients stopped: the six copies of each PG whole and equal
META_DELTA = (300, 5000)  # SCL raised by this much (clipped so that no digit is added)
META_TABLES = ("segments", "segments_copy")
TREE_ROT_PAGES = (2, 16)  # 8..64 KiB of 4 KiB pages
ROT_NEEDLES_MAX = 400  # newest acknowledged tokens tried as needles
# The ERROR lines a rotted disk must cause (storage/segment_load.py, storage/lmdb_env.py); any other ERROR
# or Traceback line in a storage node's log fails these scenarios. A dropped copy causes none.
META_ROT_ERRORS = ("is lost: ",)  # "segment <id> is lost: <why>; its rows are deleted ..."
TREE_ROT_ERRORS = ("disk: the LMDB environment at ",)  # "... is corrupt (...); nothing in it is served ..."


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
    cluster: Cluster
    nemesis: Nemesis
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
            return (
                cp_grpc.ControlPlaneServiceStub(channel)
                .DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id=self.nemesis.volume), timeout=5)
                .geometry
            )


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


def ops(
    ctx: Context,
    kind: str | None = None,
    outcome: str | None = None,
    *,
    invoked_from: float | None = None,
    invoked_to: float | None = None,
    completed_from: float | None = None,
    completed_to: float | None = None,
    writer: str | None = None,
) -> list[Any]:
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
    return max(b - a for a, b in itertools.pairwise(edges))


def goes_on(
    ctx: Context, start: str = "fault", end: str = "heal_start", *, reads: bool = True, writes: bool = True
) -> list[Criterion]:
    """Acknowledged writes (and reads) kept coming while the fault was in force."""
    t0, t1 = ctx.window(start, end)
    out = []
    if writes:
        acked = ops(ctx, "write", "ok", invoked_from=t0, completed_to=t1)
        gap = longest_write_gap(ctx, t0, t1)
        out.append(
            Criterion(
                "writes go on",
                bool(acked) and gap <= WRITE_GAP_MAX_S,
                f"{len(acked)} writes acknowledged during the {t1 - t0:.1f} s fault; "
                f"longest stretch without one {gap:.2f} s (at most {WRITE_GAP_MAX_S:g} s)",
            )
        )
    if reads:
        read_ok = ops(ctx, "read", "ok", invoked_from=t0, completed_to=t1)
        from_storage = [r for r in read_ok if r.from_storage]
        out.append(
            Criterion(
                "reads go on",
                bool(from_storage),
                f"{len(read_ok)} reads answered during the fault, {len(from_storage)} of them by a "
                f"storage segment (not the writer's buffer cache)",
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
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
    back = sorted(
        e.started
        for e in getattr(log, "events", ())
        if e.action in RESTART_ACTIONS and e.target in victims and e.started >= t0
    )
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
    detail = (
        f"{len(victims)} nodes down from the fault until a write quorum was possible again ({how}); "
        f"writes invoked after the fault and answered before then: {len(false_acks)} acknowledged, "
        f"{len(refused)} refused, {len(unknown)} unknown"
    )
    if false_acks:
        first = min(false_acks, key=lambda r: r.completed)
        detail += (
            f"; e.g. {first.token!r} to pages {list(first.keys)} invoked {first.invoked - t0:.3f} s after "
            f"the fault, acknowledged {q - first.completed:.3f} s before a quorum was possible"
        )
    if later:
        lead = max(q - r.invoked for r in later)
        detail += (
            f"; not judged: {len(later)} invoked before then and answered after it ({len(later_ok)} "
            f"acknowledged; invoked up to {lead:.3f} s before it): the writer waits up to "
            f"{WRITER_ALLOCATION_WAIT_S:g} s for its streams before it allocates a write, then up to "
            f"{WRITER_COMMIT_WAIT_S:g} s for a quorum, so such a write may have been allocated and made "
            f"durable after the nodes were back"
        )
    if not answered:
        # A short fault window can pass with every client still waiting on a write sent before it (the
        # writer's waits above): reported as not judged, never as a pass.
        detail += "; nothing to judge: no write was answered while a quorum was impossible"
        return [Criterion(what, None, detail)]
    return [Criterion(what, not false_acks, detail)]


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
    return [
        Criterion(
            "writer killed mid-MTR",
            None,
            f"{len(kills)} SIGKILLs of the writer under load; {len(ops(ctx, 'write', 'info'))} writes left in doubt",
        )
    ]


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
    fenced = [
        r for r in ops(ctx, "write", "fail", invoked_from=opened, writer=COMPUTE) if r.code == "FAILED_PRECONDITION"
    ]
    other = [r for r in ops(ctx, "write", invoked_from=opened, writer=COMPUTE) if r.outcome != "ok" and r not in fenced]
    new_acks = ops(ctx, "write", "ok", writer=NEW_WRITER)
    # A write refused as fenced counts as `fail` (nothing written); see whether any was read back anyway.
    observed = {v for r in ops(ctx, "read", "ok") for v in r.values}
    refused = [r for r in ops(ctx, "write", "fail") if r.code == "FAILED_PRECONDITION"]
    resurrected = [r for r in refused if r.token in observed]
    detail = (
        f"{len(refused)} writes refused as fenced (FAILED_PRECONDITION) in all; {len(resurrected)} of them "
        f"were read back later"
    )
    if resurrected:
        first = resurrected[0]
        detail += (
            f", e.g. {first.token!r} to pages {list(first.keys)} refused at "
            f"t={first.completed - ctx.workload.origin:.3f}: the old writer failed MTRs that were already in "
            f"flight with 'fenced', but the new writer's recovery found them on a write quorum and made them "
            f"durable; an in-flight MTR's outcome is unknown when its writer is fenced "
            f"(compute/volume.py Volume.on_fenced)"
        )
    return [
        Criterion(
            "old writer fenced",
            not stale_acks and bool(fenced),
            f"writes sent to the old writer after the new one opened: {len(stale_acks)} acknowledged, "
            f"{len(fenced)} rejected as fenced (FAILED_PRECONDITION), {len(other)} other errors; "
            f"old writer reports fenced: {ctx.data.get('old_knows_fenced')}",
        ),
        Criterion("a write refused as fenced never takes effect", not resurrected, detail),
        Criterion(
            "clients switched to the new writer",
            bool(new_acks),
            f"{len(new_acks)} writes acknowledged by the new writer",
        ),
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
    served = [
        r
        for r in ctx.workload.records
        if r.kind == "read"
        and r.outcome == "ok"
        and any(v is not None and v != flip.token and v.startswith("<") for v in r.values)
    ]
    return [
        Criterion(
            "rotten record never served",
            not served,
            f"page {flip.key}, token {flip.token!r} on {flip.node}: {len(served)} reads returned undecodable "
            f"bytes (the linearizability checker also rejects any value no write explains)",
        ),
        Criterion(
            "bit rot detected",
            detected,
            f"direct ReadPage on {flip.node}: {code} ({details[:120]}); CRC-32C lines in the writer's log: "
            f"{len(writer_lines)}, in {flip.node}'s log: {len(node_lines)}",
        ),
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
    return goes_on(ctx, reads=False) + [
        Criterion(
            "commit latency not tied to the slow node",
            bool(slow) and s50 < limit,
            f"write latency p50/p99: baseline {b50:.1f}/{b99:.1f} ms ({len(base)} writes), with {ctx.data['victim']} "
            f"delayed {SLOW_DELAY_MS:g}..{SLOW_DELAY_MS + SLOW_JITTER_MS:g} ms: "
            f"{s50:.1f}/{s99:.1f} ms ({len(slow)} writes); "
            f"p50 must stay below {limit:g} ms",
        )
    ]


async def _partition_az(ctx: Context) -> None:
    az = ctx.rng.choice(AZS)
    victims = ctx.az_nodes(az)
    ctx.data["victims"] = victims
    await ctx.do(ctx.nemesis.partition, victims)
    ctx.mark("fault")
    ctx.notes.append(
        f"partition of AZ {az}: {' and '.join(victims)} refuse every RPC that reaches them (the writer's "
        f"streams and reads, their peers' gossip, the control plane, health checks) and ask no peer "
        f"themselves (their gossip stops); only their heartbeats to the control plane still go out, "
        f"so they are not replaced meanwhile"
    )
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


def _wait_geometry(
    ctx: Context,
    what: str,
    predicate: Callable[[Any], bool],
    timeout_s: float = REPLACE_WAIT_S,
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
    return lambda g: all(
        not pg.changes and len(pg.segments) == 6 and not (_nodes_of(pg) & gone) for pg in g.protection_groups
    )


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
        ctx.log(
            f"six healthy copies again {regained - ctx.marks['fault']:.1f} s after {victim} was killed: "
            f"{ctx.data['after']}"
        )
    await ctx.sleep(ctx.timing.fault_s / 2)  # load on the new membership, the victim still dead


def _judge_replace(ctx: Context) -> list[Criterion]:
    victim = ctx.data["victim"]
    replaced = ctx.marks.get("replaced")
    took = f"{replaced - ctx.marks['fault']:.1f} s" if replaced else "never"
    return goes_on(ctx) + [
        Criterion(
            "six healthy copies regained",
            replaced is not None,
            f"{victim} killed for good; every PG back to six segments without it after {took} "
            f"(failure timeout {REPLACE_CLUSTER['failure_timeout_ms'] / 1000:g} s); before {ctx.data['before']}, "
            f"after {ctx.data.get('after')}",
        )
    ]


async def _replace_rollback(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    az = ctx.cluster.record(victim).az
    ctx.data["victim"] = victim
    for spare in ctx.spares(az):
        await ctx.do(ctx.nemesis.slow, spare, SPARE_DELAY_MS)
    await ctx.do(ctx.nemesis.kill, victim)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill {victim}", ctx.marks["fault"]))
    begun = await ctx.do(
        _wait_geometry,
        ctx,
        f"a change replacing {victim} begins",
        lambda g: any(c.old_node_id == victim for pg in g.protection_groups for c in pg.changes),
    )
    if begun is None:
        return
    ctx.mark("change_begun", begun)
    await ctx.do(ctx.nemesis.start, victim)
    ctx.mark("old_node_back")
    back = await ctx.do(
        _wait_geometry,
        ctx,
        f"the change rolls back and {victim} stays",
        lambda g: (
            all(not pg.changes for pg in g.protection_groups)
            and any(victim in _nodes_of(pg) for pg in g.protection_groups)
        ),
    )
    if back is not None:
        ctx.mark("rolled_back", back)
    await ctx.sleep(ctx.timing.fault_s / 2)


def _judge_replace_rollback(ctx: Context) -> list[Criterion]:
    victim = ctx.data["victim"]
    begun, rolled = ctx.marks.get("change_begun"), ctx.marks.get("rolled_back")
    detail = (
        f"{victim} killed; change began {begun - ctx.marks['fault']:.1f} s later; {victim} restarted; "
        f"rolled back {rolled - ctx.marks['old_node_back']:.1f} s after it was started"
        if begun and rolled
        else f"change began: {bool(begun)}, rolled back: {bool(rolled)}"
    )
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
    await ctx.do(
        _wait_geometry,
        ctx,
        f"a change replacing {first} begins",
        lambda g: any(c.old_node_id == first for pg in g.protection_groups for c in pg.changes),
    )
    await ctx.do(ctx.nemesis.kill, second)
    ctx.resume_points.append((f"kill {second}", time.monotonic()))
    both = await ctx.do(
        _wait_geometry,
        ctx,
        "two changes are in flight in one PG",
        lambda g: any(len(pg.changes) == 2 for pg in g.protection_groups),
    )
    if both is not None:
        ctx.mark("composed", both)
    done = await ctx.do(
        _wait_geometry, ctx, f"six healthy copies without {first} and {second}", _six_without({first, second})
    )
    if done is not None:
        ctx.mark("replaced", done)
        ctx.data["after"] = {pg.pg_index: sorted(_nodes_of(pg)) for pg in ctx.geometry().protection_groups}
    await ctx.sleep(ctx.timing.fault_s / 2)


def _judge_replace_two(ctx: Context) -> list[Criterion]:
    first, second = ctx.data["victims"]
    composed, replaced = ctx.marks.get("composed"), ctx.marks.get("replaced")
    return goes_on(ctx) + [
        Criterion(
            "two failures compose",
            composed is not None,
            f"{first} then {second} killed; two changes in flight in one PG: {composed is not None}",
        ),
        Criterion(
            "six healthy copies regained",
            replaced is not None,
            f"after {replaced - ctx.marks['fault']:.1f} s: {ctx.data.get('after')}" if replaced else "never",
        ),
    ]


# --- disk rot and lost copies (meta-rot, tree-rot, drop-segment) ---------------------------------


def _placed_on(ctx: Context, node: str) -> list[tuple[int, str]]:
    """(PG index, segment id) of every segment of the volume placed on `node`."""
    return sorted(
        (pg.pg_index, s.segment_id) for pg in ctx.geometry().protection_groups for s in pg.segments if s.node_id == node
    )


def _log_size(ctx: Context, node: str) -> int:
    path = ctx.cluster.log_path(node)
    return path.stat().st_size if path.exists() else 0


def _log_since(ctx: Context, node: str, offset: int) -> list[str]:
    """The lines `node` logged after byte `offset` of its log (appended across restarts)."""
    path = ctx.cluster.log_path(node)
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").splitlines()


def _pg_states(ctx: Context, last: str | None = None) -> dict[int, dict[str, tuple[str, Any]]]:
    """Per PG: node -> (code, SegmentState or None) from GetSegmentState on each of its segments, the
    segments on `last` asked last (so its SCL is never compared with newer peer SCLs than its own)."""
    out: dict[int, dict[str, tuple[str, Any]]] = {}
    for pg in ctx.geometry().protection_groups:
        placements = sorted(pg.segments, key=lambda s: s.node_id == last)
        out[pg.pg_index] = {s.node_id: ctx.nemesis.segment_state(s.address, s.segment_id) for s in placements}
    return out


def _describe_states(states: dict[int, dict[str, tuple[str, Any]]]) -> str:
    parts = []
    for pg, by_node in sorted(states.items()):
        cells = []
        for node, (code, st) in sorted(by_node.items()):
            if st is None:
                cells.append(f"{node} {code}")
            else:
                flags = "" if st.whole else (" rebuilding" if st.rebuilding else " not whole")
                cells.append(f"{node} {st.scl}{flags}")
        parts.append(f"pg{pg}: " + ", ".join(cells))
    return "; ".join(parts)


def _whole_again(states: dict[int, dict[str, tuple[str, Any]]], victim: str) -> bool:
    """Every segment of every PG is held and whole, and the victim's copies have caught up with the tail:
    SCL at least the lowest of its peers' (asked before it)."""
    for by_node in states.values():
        if any(st is None or not st.whole for _, st in by_node.values()):
            return False
        if victim in by_node:
            peers = [st.scl for node, (_, st) in by_node.items() if node != victim]
            if peers and by_node[victim][1].scl < min(peers):
                return False
    return bool(states)


def _note_control_plane_view(ctx: Context, node: str) -> None:
    """Remember each change in what the control plane says of `node` (ctx.data["control_plane_views"])."""
    try:
        info = _control_plane_view(ctx, node)
    except grpc.RpcError:
        return
    if info is None:
        return
    view = cp_pb2.NodeHealth.Name(info.health).removeprefix("NODE_HEALTH_")
    if info.segments_missing:
        view += f" missing {list(info.segments_missing)}"
    if info.segments_rebuilding:
        view += f" rebuilding {list(info.segments_rebuilding)}"
    views = ctx.data.setdefault("control_plane_views", [])
    if not views or views[-1] != view:
        views.append(view)


def _wait_whole(ctx: Context, victim: str, timeout_s: float = WHOLE_WAIT_MAX_S) -> float | None:
    """Poll until every PG's six segments are whole again (`_whole_again`); the time, or None."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        _note_control_plane_view(ctx, victim)
        try:
            states = _pg_states(ctx, last=victim)
        except grpc.RpcError:
            time.sleep(0.2)
            continue
        last = _describe_states(states)
        if _whole_again(states, victim):
            ctx.data["whole_view"] = last
            return time.monotonic()
        time.sleep(0.2)
    ctx.data["whole_view"] = last
    ctx.notes.append(f"after {timeout_s:g} s not every segment was whole again: {last}")
    return None


def _control_plane_view(ctx: Context, node: str) -> Any:
    with grpc.insecure_channel(ctx.cluster.control_plane_address()) as channel:
        nodes = cp_grpc.ControlPlaneServiceStub(channel).ListNodes(cp_pb2.ListNodesRequest(), timeout=5).nodes
    return next((n for n in nodes if n.node_id == node), None)


def _judge_whole(ctx: Context, since: str, what: str) -> Criterion:
    """The bound on becoming whole again, measured from mark `since`."""
    start, done = ctx.marks.get(since), ctx.marks.get("whole_again")
    took = None if start is None or done is None else done - start
    if took is not None:
        head = (
            f"every PG's six segments whole, {ctx.data.get('victim')}'s caught up with its peers, "
            f"{took:.1f} s after {what}"
        )
    elif "start_error" in ctx.data:
        head = f"{ctx.data.get('victim')} never came back"
    else:
        head = f"not within {WHOLE_WAIT_MAX_S:g} s of {what}"
    return Criterion(
        f"whole again within {WHOLE_WAIT_S:g} s",
        took is not None and took <= WHOLE_WAIT_S,
        head + f"; last view: {ctx.data.get('whole_view', '-')}; meanwhile the control plane said of "
        f"{ctx.data.get('victim')}: {' -> '.join(ctx.data.get('control_plane_views', [])) or '-'}",
    )


def _judge_at_rest(ctx: Context, timeout_s: float = AT_REST_WAIT_S) -> Criterion:
    """Once the clients stopped: every segment of every PG whole, the six SCLs of each PG equal."""
    deadline = time.monotonic() + timeout_s
    view = "no answer"
    agree = False
    while True:
        try:
            states = _pg_states(ctx)
            view = _describe_states(states)
            agree = bool(states) and all(
                all(st is not None and st.whole for _, st in by_node.values())
                and len({st.scl for _, st in by_node.values()}) == 1
                for by_node in states.values()
            )
        except grpc.RpcError as error:
            view = f"could not ask: {error}"
        if agree or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return Criterion("six whole copies at rest", agree, f"after the clients stopped: {view}")


def _judge_log_errors(ctx: Context, expected: tuple[str, ...]) -> list[Criterion]:
    """ERROR and Traceback lines in the storage nodes' logs other than the ones the fault must cause (judged:
    a rotted disk or a lost copy is reported as designed, never a traceback), and in the other processes'
    logs (reported only: e.g. the writer logs a stream that a node's SIGTERM tore down)."""
    nodes = set(ctx.nodes())
    every = ctx.cluster.log_errors()
    unexpected = ctx.cluster.log_errors(expected)
    storage = [line for line in unexpected if line.split(":", 1)[0] in nodes]
    others = [line for line in unexpected if line.split(":", 1)[0] not in nodes]
    return [
        Criterion(
            "storage nodes log only the expected errors",
            not storage,
            f"{len(every) - len(unexpected)} expected error lines (containing "
            f"{' or '.join(repr(e) for e in expected) or 'nothing'}), {len(storage)} others"
            + (": " + " | ".join(line[:200] for line in storage[:3]) if storage else ""),
        ),
        Criterion(
            "error lines of the other processes",
            None,
            f"{len(others)}" + (": " + " | ".join(line[:200] for line in others[:3]) if others else ""),
        ),
    ]


def _read_tokens(ctx: Context) -> list[tuple[str, bytes]]:
    """Acknowledged tokens, newest first: the node that was up when they were written surely holds most."""
    return [(r.token, ctx.workload.encode(r.token)) for r in reversed(ops(ctx, "write", "ok"))][:ROT_NEEDLES_MAX]


def _garbled_reads(ctx: Context) -> list[Any]:
    """Reads that returned bytes no write explains (undecodable: `<hex>`)."""
    return [r for r in ops(ctx, "read", "ok") if any(v is not None and v.startswith("<") for v in r.values)]


async def _start_or_abandon(ctx: Context, node: str) -> bool:
    """Start a node whose disk was rotted; if it cannot start (it crashed on its own disk), say so and leave it
    down through the heal (it would crash again), so the rest of the run can still be judged."""
    offset = _log_size(ctx, node)
    try:
        await ctx.do(ctx.nemesis.start, node)
    except ClusterError as error:
        first = str(error).splitlines()[0].split("; log:")[0]
        last = [line for line in _log_since(ctx, node, offset) if line.strip()][-2:]
        ctx.data["start_error"] = f"{first}; its log ends: {' | '.join(last)}"
        ctx.nemesis.abandon(node, ctx.data["start_error"])
        ctx.log(f"{node} could not start on its rotted disk: {ctx.data['start_error']}")
        return False
    return True


async def _meta_rot(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    placed = _placed_on(ctx, victim)
    ctx.rng.shuffle(placed)
    # One segment gets a forged copy (CRC fixed: only its records refute it), the other a rotten digit with the
    # CRC left as it was (one copy: the other copy is used; both: the segment is lost and created again).
    modes = ["forged", ctx.rng.choice(["one-copy", "both-copies"])]
    if len(placed) == 1:
        modes = [ctx.rng.choice(modes)]
    ctx.data["victim"] = victim
    ctx.mark("fault")
    ctx.resume_points.append((f"stop {victim}", ctx.marks["fault"]))
    await ctx.do(ctx.nemesis.stop, victim)
    ctx.data["log_offset"] = _log_size(ctx, victim)
    rots = []
    for (_pg, segment_id), mode in zip(placed, modes):
        copies = await ctx.do(ctx.nemesis.stored_metadata, victim, segment_id)
        scl = min(c.scl for c in copies if c.scl is not None)
        room = 10 ** len(str(scl)) - 1 - scl  # the digit count stays: a digit rots, none is added
        delta = min(ctx.rng.randint(*META_DELTA), room)
        if delta < 1:
            ctx.notes.append(f"{segment_id}: SCL {scl} leaves no room to raise it without another digit; left alone")
            continue
        rots.append(
            await ctx.do(ctx.nemesis.rot_metadata, victim, segment_id, mode, delta, ctx.rng.choice(META_TABLES))
        )
    if not rots:
        raise RuntimeError(f"no segment metadata on {victim} could be rotted")
    ctx.data["rots"] = rots
    await ctx.sleep(ctx.rng.uniform(0.5, 1.5))  # the load goes on with five nodes
    # The writer stops before the victim returns: its peers' SCLs then stand still, so what the victim claims
    # first can be told from what gossip brings it; and the writer's buffer cache is cold when it returns.
    stopped_at = time.monotonic()
    await ctx.do(ctx.nemesis.stop, COMPUTE)
    ctx.resume_points.append(("writer restart (cold cache)", stopped_at))
    before = await ctx.do(_pg_states, ctx)
    pg_of = {segment_id: pg for pg, segment_id in placed}
    ctx.data["peer_scl"] = {
        rot.segment_id: max(
            (st.scl for node, (_, st) in before[pg_of[rot.segment_id]].items() if node != victim and st is not None),
            default=0,
        )
        for rot in rots
    }
    started = await _start_or_abandon(ctx, victim)
    ctx.mark("victim_back")
    if started:
        address = ctx.cluster.node_address(victim)
        first: dict[str, tuple[str, Any]] = {}
        for rot in rots:  # at once: before gossip (every 1 s) brings it anything
            first[rot.segment_id] = await ctx.do(ctx.nemesis.segment_state, address, rot.segment_id)
        ctx.data["first_state"] = first
        listing = await ctx.do(ctx.nemesis.list_segments, victim)
        ctx.data["lost_segments"] = list(listing.lost_segments)
        said = []
        for rot in rots:
            code, st = first[rot.segment_id]
            said.append(
                f"{rot.segment_id} "
                + (code if st is None else f"SCL {st.scl}")
                + f" (held {rot.held}, claimed {rot.claimed})"
            )
        ctx.log(f"{victim} back: {'; '.join(said)}; lost: {list(listing.lost_segments)}")
    await ctx.do(ctx.nemesis.start, COMPUTE)
    if started:
        whole = await ctx.do(_wait_whole, ctx, victim)
        if whole is not None:
            ctx.mark("whole_again", whole)
    await ctx.sleep(max(2.0, ctx.timing.fault_s / 3))


META_EXPECTED = {  # what the node must say about each kind of rotten metadata (storage/segment_load.py)
    "one-copy": ("CRC-32C", "using the other copy"),
    "both-copies": ("is lost",),
    "forged": ("records prove",),
}


def _judge_meta_rot(ctx: Context) -> list[Criterion]:
    victim, rots = ctx.data["victim"], ctx.data.get("rots", [])
    first, peers = ctx.data.get("first_state", {}), ctx.data.get("peer_scl", {})
    lines = _log_since(ctx, victim, ctx.data.get("log_offset", 0))
    claims, honest = [], True
    for rot in rots:
        code, st = first.get(rot.segment_id, ("not asked", None))
        startup = [
            int(m.group(1))
            for line in lines
            if (m := re.search(rf"segment {re.escape(rot.segment_id)}: scl=(\d+)", line))
        ]
        if startup and startup[0] > rot.held:
            honest = False
        head = (
            f"{rot.segment_id} ({rot.mode}: stored SCL {rot.held} raised to {rot.claimed}): SCL at start-up "
            f"{startup[0] if startup else 'not logged (not held)'}"
        )
        if st is None:
            claims.append(f"{head}; first GetSegmentState after the restart: {code} (not held)")
            continue
        refilled = st.records_repaired + st.pages_hydrated
        bound, by = (
            (rot.held, "what its records held")
            if not refilled
            else (peers.get(rot.segment_id, rot.held), "its peers' highest SCL (gossip had already brought records)")
        )
        ok = st.scl <= bound
        honest = honest and ok
        claims.append(
            f"{head}; first GetSegmentState after the restart: SCL {st.scl}, whole {st.whole}, "
            f"{refilled} records repaired; must not exceed {by}, {bound}"
        )
    noticed, said = True, []
    for rot in rots:
        phrases = META_EXPECTED[rot.mode]
        hits = [line for line in lines if rot.segment_id in line and all(p in line for p in phrases)]
        noticed = noticed and bool(hits)
        said.append(
            f"{rot.segment_id} ({rot.mode}, expects {' + '.join(repr(p) for p in phrases)}): "
            + (hits[0].split(" ", 3)[-1][:200] if hits else "nothing")
        )
    started = "start_error" not in ctx.data
    return [
        Criterion(
            "no SCL claimed above what was held",
            bool(rots) and started and honest,
            "; ".join(claims) if started else f"{victim} could not start: {ctx.data['start_error']}",
        ),
        Criterion(
            "metadata problem noticed", bool(rots) and noticed, f"{victim}'s log since its restart: " + "; ".join(said)
        ),
        _judge_whole(ctx, "victim_back", f"{victim} restarted"),
        Criterion(
            "rotten metadata never served",
            not _garbled_reads(ctx),
            f"{len(_garbled_reads(ctx))} reads returned bytes no write explains; lost segments reported by "
            f"{victim}: {ctx.data.get('lost_segments', '-')}",
        ),
        _judge_at_rest(ctx),
    ] + _judge_log_errors(ctx, META_ROT_ERRORS)


async def _tree_rot(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    pages = ctx.rng.randint(*TREE_ROT_PAGES)
    ctx.data["victim"] = victim
    ctx.mark("fault")
    ctx.resume_points.append((f"stop {victim}", ctx.marks["fault"]))
    await ctx.do(ctx.nemesis.stop, victim)
    ctx.data["log_offset"] = _log_size(ctx, victim)
    needles = _read_tokens(ctx)
    if not needles:
        raise RuntimeError("no acknowledged write before the tree rot")
    noise = random.Random(ctx.rng.getrandbits(64))
    ctx.data["rot"] = await ctx.do(ctx.nemesis.rot_tree, victim, needles, pages, noise)
    await ctx.sleep(ctx.rng.uniform(0.5, 1.5))  # the load goes on with five nodes
    started = await _start_or_abandon(ctx, victim)
    ctx.mark("victim_back")
    if started:
        listing = await ctx.do(ctx.nemesis.list_segments, victim)
        ctx.data["listing"] = {
            "disk_condition": pb.DiskCondition.Name(listing.disk_condition),
            "disk_detail": listing.disk_detail[:200],
            "environments_replaced": listing.environments_replaced,
            "lost_segments": list(listing.lost_segments),
            "segments": {
                s.segment_id: f"SCL {s.scl}" + ("" if s.whole else " rebuilding" if s.rebuilding else " not whole")
                for s in listing.segments
            },
        }
        ctx.log(f"{victim} back: {ctx.data['listing']}")
        whole = await ctx.do(_wait_whole, ctx, victim)
        if whole is not None:
            ctx.mark("whole_again", whole)
    await ctx.sleep(max(2.0, ctx.timing.fault_s / 3))


def _judge_tree_rot(ctx: Context) -> list[Criterion]:
    victim, rot = ctx.data["victim"], ctx.data["rot"]
    lines = _log_since(ctx, victim, ctx.data.get("log_offset", 0))
    listing = ctx.data.get("listing", {})
    corrupt = [line for line in lines if "is corrupt" in line]
    failed = listing.get("disk_condition") == "DISK_CONDITION_FAILED"
    replaced = listing.get("environments_replaced", 0)
    started = "start_error" not in ctx.data
    what = (
        f"{rot.bytes_overwritten} bytes ({rot.pages} pages) of {victim}'s data.mdb overwritten around the live "
        f"page holding {rot.token!r}; live pages hit per table: {rot.tables_hit}"
        + ("" if rot.targeted else " (the live pages could not be told apart: the first copy was hit)")
    )
    garbled = _garbled_reads(ctx)
    return (
        goes_on(ctx, "fault", "heal_start")
        + [
            Criterion(
                "node survives its rotten tree",
                started,
                f"{victim} started again on its rotten disk"
                if started
                else f"{victim} could not start on its rotten disk: {ctx.data['start_error']}",
            ),
            Criterion(
                "rotten tree detected",
                failed or replaced >= 1 or bool(corrupt),
                f"{what}; {victim} reports disk {listing.get('disk_condition', '-')}, "
                f"{replaced} environment(s) replaced, lost segments {listing.get('lost_segments', '-')}; "
                f"'is corrupt' lines in its log: {len(corrupt)}"
                + (f" ({corrupt[0].split(' ', 3)[-1][:160]})" if corrupt else ""),
            ),
            Criterion(
                "rotten tree never served",
                not garbled,
                f"{len(garbled)} reads returned bytes no write explains (the linearizability checker also "
                f"rejects any value no write explains)",
            ),
            _judge_whole(ctx, "victim_back", f"{victim} restarted on a fresh environment"),
            _judge_at_rest(ctx),
        ]
        + _judge_log_errors(ctx, TREE_ROT_ERRORS)
    )


async def _drop_segment(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    pg, segment_id = ctx.rng.choice(_placed_on(ctx, victim))
    ctx.data.update(victim=victim, segment_id=segment_id, pg=pg)
    ctx.mark("fault")
    ctx.data["records_removed"] = await ctx.do(ctx.nemesis.drop_segment, victim, segment_id)
    ctx.resume_points.append((f"drop {segment_id} on {victim}", ctx.marks["fault"]))
    seen = await ctx.do(_wait_recreated, ctx, victim, segment_id, WHOLE_WAIT_MAX_S)
    if seen is not None:
        ctx.mark("recreated", seen)
        whole = await ctx.do(_wait_whole, ctx, victim)
        if whole is not None:
            ctx.mark("whole_again", whole)
    await ctx.sleep(max(2.0, ctx.timing.fault_s - (time.monotonic() - ctx.marks["fault"])))


def _wait_recreated(ctx: Context, node: str, segment_id: str, timeout_s: float) -> float | None:
    """Poll the node until it holds `segment_id` again; meanwhile note what the control plane says of it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _note_control_plane_view(ctx, node)
        try:
            held = {s.segment_id: s for s in ctx.nemesis.list_segments(node).segments}
        except grpc.RpcError:
            time.sleep(0.2)
            continue
        if segment_id in held:
            s = held[segment_id]
            ctx.data["recreated_as"] = f"SCL {s.scl}, rebuilding {s.rebuilding}, whole {s.whole}"
            return time.monotonic()
        time.sleep(0.2)
    return None


def _judge_drop_segment(ctx: Context) -> list[Criterion]:
    victim, segment_id = ctx.data["victim"], ctx.data["segment_id"]
    t0, recreated = ctx.marks["fault"], ctx.marks.get("recreated")
    return (
        goes_on(ctx, "fault", "heal_start")
        + [
            Criterion(
                "the control plane creates the copy again",
                recreated is not None,
                f"DropSegment {segment_id} on {victim} removed {ctx.data.get('records_removed')} records; "
                + (
                    f"held again {recreated - t0:.1f} s later ({ctx.data.get('recreated_as')})"
                    if recreated
                    else f"not held again within {WHOLE_WAIT_MAX_S:g} s"
                ),
            ),
            _judge_whole(ctx, "fault", f"the drop of {segment_id}"),
            _judge_at_rest(ctx),
        ]
        + _judge_log_errors(ctx, ())
    )


def _judge_rolling(ctx: Context) -> list[Criterion]:
    return goes_on(ctx, reads=False)


def _judge_goes_on(ctx: Context) -> list[Criterion]:
    return goes_on(ctx)


def _judge_pause(ctx: Context) -> list[Criterion]:
    return goes_on(ctx, "fault", "resumed")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "kill-one", "SIGKILL one storage node", "reads and writes go on; nothing lost", _kill_one, _judge_goes_on
        ),
        Scenario(
            "kill-az", "SIGKILL both nodes of one AZ", "reads and writes go on; nothing lost", _kill_az, _judge_goes_on
        ),
        Scenario(
            "kill-az-plus-one",
            "SIGKILL one AZ plus one more node",
            "no write succeeds falsely (every ok write survives); reads go on",
            _kill_az_plus_one,
            _judge_kill_az_plus_one,
            writes_expected_during_fault=False,
        ),
        Scenario(
            "kill-four",
            "SIGKILL four or more storage nodes, then restart them all",
            "unavailable meanwhile; nothing acknowledged lost afterwards",
            _kill_four,
            _judge_kill_four,
            writes_expected_during_fault=False,
        ),
        Scenario(
            "pause-two",
            f"SIGSTOP two nodes for {PAUSE_S:g} s, then SIGCONT",
            "available; a resumed node never serves stale data as current",
            _pause_two,
            _judge_pause,
        ),
        Scenario(
            "writer-kill",
            "SIGKILL the writer mid-MTR several times, restart it each time",
            "acknowledged MTRs whole, others wholly absent",
            _writer_kill,
            _judge_writer_kill,
            writes_expected_during_fault=False,
        ),
        Scenario(
            "old-writer",
            "a second writer opens the volume while clients keep writing to the first",
            "every old write after the new writer opened is rejected; clients move on to the new one",
            _old_writer,
            _judge_old_writer,
            writes_expected_during_fault=False,
        ),
        Scenario(
            "byte-flip",
            "flip a byte of a stored record of a hot page in a stopped node's LMDB file",
            "never served; detected (CRC-32C)",
            _byte_flip,
            _judge_byte_flip,
        ),
        Scenario(
            "slow-node",
            f"one node delays every request {SLOW_DELAY_MS:g}..{SLOW_DELAY_MS + SLOW_JITTER_MS:g} ms",
            "commit latency not tied to the slow node",
            _slow_node,
            _judge_slow_node,
        ),
        Scenario(
            "partition-az",
            "partition one AZ (both its nodes unreachable)",
            "the side with four nodes goes on; nothing lost",
            _partition_az,
            _judge_goes_on,
        ),
        Scenario(
            "rolling-restart",
            "stop/start each of the six nodes in turn under load",
            "writes continue throughout; nothing lost",
            _rolling_restart,
            _judge_rolling,
        ),
        Scenario(
            "meta-rot",
            "raise the SCL in a stopped node's segment metadata (a rotten digit, a forged CRC), "
            "restart it and the writer",
            f"no SCL claimed above what the records hold; noticed; whole again within {WHOLE_WAIT_S:g} s; nothing lost",
            _meta_rot,
            _judge_meta_rot,
        ),
        Scenario(
            "tree-rot",
            f"overwrite {TREE_ROT_PAGES[0]}..{TREE_ROT_PAGES[1]} live LMDB pages of a stopped node "
            "with random bytes, restart it",
            f"detected, never served; rebuilt from peers, whole within {WHOLE_WAIT_S:g} s; writes go on; nothing lost",
            _tree_rot,
            _judge_tree_rot,
        ),
        Scenario(
            "drop-segment",
            "DropSegment on a healthy member of a PG while clients write",
            f"the control plane creates it again, whole within {WHOLE_WAIT_S:g} s; reads and writes go on; "
            "nothing lost",
            _drop_segment,
            _judge_drop_segment,
        ),
        Scenario(
            "replace",
            "SIGKILL one storage node for good (one spare per AZ)",
            "six healthy copies again with no one acting; reads and writes go on; nothing lost",
            _replace,
            _judge_replace,
            cluster_options=REPLACE_CLUSTER,
        ),
        Scenario(
            "replace-rollback",
            "SIGKILL a node, start it again while its replacement (a slow spare) hydrates",
            "the change rolls back; reads and writes go on; nothing lost",
            _replace_rollback,
            _judge_replace_rollback,
            cluster_options=REPLACE_CLUSTER,
        ),
        Scenario(
            "replace-two",
            "SIGKILL a node, then one in another AZ while the first is being replaced",
            "the two changes compose and both complete; writes go on; nothing lost",
            _replace_two,
            _judge_replace_two,
            cluster_options=REPLACE_CLUSTER,
        ),
    ]
}


def resolve(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


__all__ = [
    "SCENARIOS",
    "Context",
    "Criterion",
    "Scenario",
    "Timing",
    "goes_on",
    "ops",
    "percentile",
    "quorum_possible_again",
    "resolve",
]
