"""Membership scenarios: a storage node lost for good, and the control plane's replacement of it.

replace: one node killed for good, six healthy copies again with no one acting.
replace-rollback: the old node returns while its replacement hydrates, and the
change rolls back. replace-two: a second node of another AZ fails mid-change, and
the two changes compose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from sixfold.tools.chaos.scenario_base import Context, Criterion, Scenario, goes_on

# Segment replacement needs somewhere to go (a spare per AZ) and a failure timeout a run can wait out.
REPLACE_CLUSTER = {"spares": 1, "heartbeat_timeout_ms": 1000, "failure_timeout_ms": 3000}
REPLACE_WAIT_S = 90.0
# A spare answering this slowly keeps a change in flight long enough to act mid-way (below the
# control plane's 5 s segment-call timeout).
SPARE_DELAY_MS = 3500.0


def wait_geometry(
    ctx: Context,
    what: str,
    predicate: Callable[[Any], bool],
    timeout_s: float = REPLACE_WAIT_S,
    volume: str | None = None,
) -> float | None:
    """Poll the control plane until `predicate(geometry)` (of vol0, or `volume`); the time it held, or None
    after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate(ctx.geometry(volume)):
                return time.monotonic()
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    ctx.notes.append(f"timed out after {timeout_s:g} s waiting until {what}")
    return None


def nodes_of(pg: Any) -> set[str]:
    return {s.node_id for s in pg.segments}


def six_without(gone: set[str]) -> Callable[[Any], bool]:
    return lambda g: all(
        not pg.changes and len(pg.segments) == 6 and not (nodes_of(pg) & gone) for pg in g.protection_groups
    )


async def _replace(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    ctx.data["victim"] = victim
    ctx.data["before"] = {pg.pg_index: sorted(nodes_of(pg)) for pg in ctx.geometry().protection_groups}
    await ctx.do(ctx.nemesis.kill, victim)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill {victim} for good", ctx.marks["fault"]))
    regained = await ctx.do(wait_geometry, ctx, f"six healthy copies without {victim}", six_without({victim}))
    if regained is not None:
        ctx.mark("replaced", regained)
        ctx.data["after"] = {pg.pg_index: sorted(nodes_of(pg)) for pg in ctx.geometry().protection_groups}
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
        wait_geometry,
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
        wait_geometry,
        ctx,
        f"the change rolls back and {victim} stays",
        lambda g: (
            all(not pg.changes for pg in g.protection_groups)
            and any(victim in nodes_of(pg) for pg in g.protection_groups)
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
    pgs = [nodes_of(pg) for pg in ctx.geometry().protection_groups]
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
        wait_geometry,
        ctx,
        f"a change replacing {first} begins",
        lambda g: any(c.old_node_id == first for pg in g.protection_groups for c in pg.changes),
    )
    await ctx.do(ctx.nemesis.kill, second)
    ctx.resume_points.append((f"kill {second}", time.monotonic()))
    both = await ctx.do(
        wait_geometry,
        ctx,
        "two changes are in flight in one PG",
        lambda g: any(len(pg.changes) == 2 for pg in g.protection_groups),
    )
    if both is not None:
        ctx.mark("composed", both)
    done = await ctx.do(
        wait_geometry, ctx, f"six healthy copies without {first} and {second}", six_without({first, second})
    )
    if done is not None:
        ctx.mark("replaced", done)
        ctx.data["after"] = {pg.pg_index: sorted(nodes_of(pg)) for pg in ctx.geometry().protection_groups}
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


FAMILY = (
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
)
