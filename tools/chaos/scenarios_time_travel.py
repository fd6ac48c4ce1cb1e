"""Time-travel scenarios: clones and backtracks of vol0 while storage nodes fail.

- clone-az-down: vol0 cloned while both nodes of one AZ are down, and read meanwhile; once healed
  the clone, untouched, is read everywhere (vol0 at its branch), then written and read again.
- clone-kill: vol0 and a clone of it written at once while storage nodes are SIGKILLed and
  restarted, one or two at a time.
- backtrack-node-stopped: vol0 backtracked to an acknowledged commit while one node is stopped (it
  holds the old timeline's records above that commit), the node restarted, then vol0 moved forward
  again to a later commit of the old timeline.
- replace-clone: a node holding segments of vol0 and of its clone killed for good; both volumes
  get six healthy copies back (the clone's replacement segment is a flattened copy).

Each is judged by LSN (tools/chaos/lsn_check.py, through time_travel_probe.judge_volumes): every
read of vol0 and of the clone, during the run, once healed through the writer, and from every
segment at its SCL, shows exactly the acknowledged writes visible there: the clone vol0's at its
branch LSN plus its own; vol0 its own (after a backtrack to P: those at or below P plus the later
ones). No write lost, none leaked.
"""

from __future__ import annotations

import time

from sixfold.tools.chaos.check_support import INFINITY
from sixfold.tools.chaos.history import OK, WRITE
from sixfold.tools.chaos.lsn_check import check_reads
from sixfold.tools.chaos.scenario_base import AZS, Context, Criterion, Scenario, goes_on, ops
from sixfold.tools.chaos.scenarios_membership import (
    REPLACE_CLUSTER,
    REPLACE_WAIT_S,
    six_without,
    wait_geometry,
)
from sixfold.tools.chaos.time_travel_probe import (
    action_criterion,
    backtrack,
    judge_volumes,
    latest_commit,
    lines,
    make_clone,
    settle,
    start_load,
    travel,
    writes_of,
)
from sixfold.tools.chaos.workload import VOLUME

CLONE = "vol0-clone"
WRITE_AFTER_HEAL_S = 4.0  # clone-az-down: how long the clone is written once healed
RECONNECT_S = 20.0  # how long to wait for the writer's streams to a restarted node
VOL0_CLEAN = "vol0: nothing lost, no clone write"
CLONE_EXACT = f"{CLONE}: vol0 at its branch plus its own writes"


def _rest_of_fault(ctx: Context) -> float:
    return ctx.marks["fault"] + ctx.timing.fault_s - time.monotonic()


def _clone_writes_after(ctx: Context, mark: str, when: str) -> Criterion:
    at = ctx.marks.get(mark, INFINITY)
    records = [r for load in travel(ctx).loads if load.volume == CLONE for r in load.workload.records]
    acked = [r for r in records if r.kind == WRITE and r.outcome == OK and r.invoked >= at]
    return Criterion(
        f"the clone takes writes {when}",
        bool(acked),
        f"{len(acked)} writes to {CLONE} invoked after it were acknowledged",
    )


# --- clone-az-down ------------------------------------------------------------------------------


async def _clone_az_down(ctx: Context) -> None:
    az = ctx.rng.choice(AZS)
    victims = ctx.az_nodes(az)
    ctx.data["victims"] = victims
    for node in victims:
        await ctx.do(ctx.nemesis.kill, node)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill AZ {az}", ctx.marks["fault"]))
    await ctx.sleep(ctx.rng.uniform(0.5, 2.0))
    await make_clone(ctx, CLONE, writers=False)  # read, not written, until healed
    await ctx.sleep(_rest_of_fault(ctx))


async def _settle_then_write(ctx: Context) -> None:
    """Once healed: the clone, untouched since its branch, read everywhere; then written for a while (vol0
    is not, its clients have stopped) and read everywhere again."""
    await settle(ctx)
    if any(a.ok for a in travel(ctx).clones):
        ctx.data["clone_placement"] = await ctx.do(_placement, ctx, CLONE)
        ctx.mark("clone_written")
        start_load(ctx, CLONE)
        await ctx.sleep(WRITE_AFTER_HEAL_S)
        await settle(ctx)


def _judge_clone_az_down(ctx: Context) -> list[Criterion]:
    made = action_criterion(f"clone made while AZ {ctx.data['victims']} is down", travel(ctx).clones)
    placed = Criterion(
        "the clone's segments once healed",
        None,
        f"{ctx.data.get('clone_placement')} (* = a flattened copy, made without a parent: a node that was down)",
    )
    return (
        goes_on(ctx)
        + [made, placed, _clone_writes_after(ctx, "clone_written", "once healed")]
        + judge_volumes(ctx, {VOLUME: VOL0_CLEAN, CLONE: CLONE_EXACT})
    )


# --- clone-kill ---------------------------------------------------------------------------------


async def _clone_kill(ctx: Context) -> None:
    await make_clone(ctx, CLONE)
    ctx.mark("fault")
    rounds: list[list[str]] = []
    ctx.data["rounds"] = rounds
    address = ctx.workload.target.address
    while _rest_of_fault(ctx) > 0:
        victims = ctx.rng.sample(ctx.nodes(), ctx.rng.choice([1, 1, 2]))
        rounds.append(victims)
        for node in victims:
            await ctx.do(ctx.nemesis.kill, node)
        ctx.resume_points.append((f"kill {','.join(victims)}", time.monotonic()))
        await ctx.sleep(ctx.rng.uniform(1.0, 2.5))
        for node in victims:
            await ctx.do(ctx.nemesis.start, node)
        if not await ctx.do(ctx.nemesis.wait_writer_connected, address, RECONNECT_S, set(victims)):
            ctx.notes.append(f"the writer did not reconnect to {victims} within {RECONNECT_S:g} s")
        await ctx.sleep(ctx.rng.uniform(0.3, 1.0))


def _judge_clone_kill(ctx: Context) -> list[Criterion]:
    t = travel(ctx)
    return (
        goes_on(ctx, reads=False)
        + [action_criterion("clone made", t.clones), _clone_writes_after(ctx, "fault", "while nodes are killed")]
        + judge_volumes(ctx, {VOLUME: VOL0_CLEAN, CLONE: CLONE_EXACT})
    )


# --- backtrack-node-stopped ---------------------------------------------------------------------


async def _backtrack_node_stopped(ctx: Context) -> None:
    f = ctx.timing.fault_s
    address = ctx.workload.target.address
    await ctx.sleep(0.1 * f)
    p = ctx.data["P"] = latest_commit(ctx)
    await ctx.sleep(max(1.0, 0.15 * f))  # records above P on all six nodes
    victim = ctx.data["victim"] = ctx.rng.choice(ctx.nodes())
    await ctx.do(ctx.nemesis.stop, victim)
    ctx.mark("fault")
    await ctx.sleep(max(1.0, 0.15 * f))
    p2 = ctx.data["P2"] = latest_commit(ctx)  # a later commit of the old timeline, to move forward to
    if not p:
        ctx.notes.append("no write was acknowledged before the backtrack: nothing to go back to")
        return
    first = await backtrack(ctx, p)
    ctx.resume_points.append((f"backtrack to {p}", first.returned))
    await ctx.sleep(0.2 * f)
    await ctx.do(ctx.nemesis.start, victim)
    ctx.mark("restarted")
    if not await ctx.do(ctx.nemesis.wait_writer_connected, address, RECONNECT_S):
        ctx.notes.append(f"the writer did not reconnect to every segment within {RECONNECT_S:g} s of {victim}'s start")
    await ctx.sleep(0.15 * f)
    if first.ok and p2 > p:
        second = await backtrack(ctx, p2)
        ctx.resume_points.append((f"backtrack forward to {p2}", second.returned))
    await ctx.sleep(0.2 * f)


def _writes_resume(ctx: Context) -> Criterion:
    parts, ok = [], True
    for a in travel(ctx).backtracks:
        if not a.ok:
            continue
        acked = ops(ctx, "write", "ok", invoked_from=a.returned)
        ok = ok and bool(acked)
        first = min((r.completed for r in acked), default=None)
        parts.append(
            f"after {a.what}: {len(acked)}" + (f", the first {first - a.returned:.2f} s after" if first else "")
        )
    return Criterion("writes go on after each backtrack", ok, "; ".join(parts) or "no backtrack done")


def _returning_node(ctx: Context) -> Criterion:
    """The node stopped during the backtrack serves vol0's pages as the new timeline has them."""
    t, victim = travel(ctx), ctx.data.get("victim")
    mine = [r for r in t.segment_reads if r.volume == VOLUME and r.via.endswith(f" on {victim}")]
    name = "the node that missed the backtrack serves no hidden record"
    if not mine:
        return Criterion(name, None, f"not judged: no segment of vol0 on {victim} was read once healed")
    result = check_reads(lines(t), writes_of(ctx.workload.records), mine, ctx.workload.origin)
    return Criterion(
        name,
        result.ok,
        f"{len(mine)} segment(s) of vol0 on {victim}: {result.lost} lost, {result.leaked} leaked, "
        f"{result.phantom} phantom" + ("; " + " | ".join(result.explanations) if result.explanations else ""),
    )


def _judge_backtrack(ctx: Context) -> list[Criterion]:
    t = travel(ctx)
    p, p2 = ctx.data.get("P"), ctx.data.get("P2")
    forward = t.backtracks[1:]
    criteria = [action_criterion(f"backtrack to {p} while {ctx.data.get('victim')} is stopped", t.backtracks[:1])]
    if forward:
        criteria.append(action_criterion(f"backtrack forward again to {p2}", forward))
    else:
        criteria.append(Criterion("backtrack forward again", None, f"not tried (P {p}, P2 {p2})"))
    return (
        criteria
        + [_writes_resume(ctx)]
        + judge_volumes(ctx, {VOLUME: "vol0: exactly the writes of its timeline, nothing lost or leaked"})
        + [_returning_node(ctx)]
    )


# --- replace-clone ------------------------------------------------------------------------------


def _placement(ctx: Context, volume: str) -> dict[int, list[str]]:
    """pg -> its nodes; a `*` marks a segment without a parent (a flattened copy, on a clone)."""
    geometry = ctx.geometry(volume)
    flat = "*" if geometry.parent_volume_id else ""
    return {
        pg.pg_index: sorted(s.node_id + ("" if s.parent_segment_id else flat) for s in pg.segments)
        for pg in geometry.protection_groups
    }


async def _replace_clone(ctx: Context) -> None:
    made = await make_clone(ctx, CLONE)
    volumes = [VOLUME] + ([CLONE] if made else [])
    await ctx.sleep(0.2 * ctx.timing.fault_s)
    before = ctx.data["before"] = {v: _placement(ctx, v) for v in volumes}
    # A node holding a segment of every PG of both volumes (the PGs need not all sit on the same six nodes:
    # a PG placed after the spares registered may use them).
    holding = [
        n
        for n in ctx.base_nodes()
        if all(n in {m.rstrip("*") for m in nodes} for pgs in before.values() for nodes in pgs.values())
    ]
    victim = ctx.data["victim"] = ctx.rng.choice(holding or ctx.base_nodes())
    await ctx.do(ctx.nemesis.kill, victim)
    ctx.mark("fault")
    ctx.resume_points.append((f"kill {victim} for good", ctx.marks["fault"]))
    regained = []
    for volume in volumes:
        what = f"six healthy copies of {volume} without {victim}"
        regained.append(await ctx.do(wait_geometry, ctx, what, six_without({victim}), REPLACE_WAIT_S, volume))
    if None not in regained:
        ctx.mark("replaced", max(t for t in regained if t is not None))
        ctx.data["after"] = {v: _placement(ctx, v) for v in volumes}
        ctx.log(
            f"six healthy copies again {ctx.marks['replaced'] - ctx.marks['fault']:.1f} s after: {ctx.data['after']}"
        )
    await ctx.sleep(ctx.timing.fault_s / 2)


def _judge_replace_clone(ctx: Context) -> list[Criterion]:
    victim, before = ctx.data["victim"], ctx.data.get("before", {})
    held = {v: all(victim in {n.rstrip("*") for n in nodes} for nodes in pgs.values()) for v, pgs in before.items()}
    replaced = ctx.marks.get("replaced")
    took = f"{replaced - ctx.marks['fault']:.1f} s" if replaced else "never"
    return (
        goes_on(ctx)
        + [
            action_criterion("clone made", travel(ctx).clones),
            Criterion(
                f"{victim} held segments of vol0 and of the clone",
                len(held) == 2 and all(held.values()),
                f"every PG of each volume on {victim}: {held}",
            ),
            Criterion(
                "six healthy copies of both regained",
                replaced is not None,
                f"{victim} killed for good; every PG of both back to six segments without it after {took}; "
                f"before {before}, after {ctx.data.get('after')} (* = a flattened copy, without a parent)",
            ),
        ]
        + judge_volumes(ctx, {VOLUME: VOL0_CLEAN, CLONE: CLONE_EXACT})
    )


FAMILY = (
    Scenario(
        "clone-az-down",
        "SIGKILL both nodes of one AZ, clone vol0 meanwhile; once healed read the clone, write it, read it again",
        "the clone is made; it shows vol0 at its branch plus its own writes, vol0 no clone write; nothing lost",
        _clone_az_down,
        _judge_clone_az_down,
        settle=_settle_then_write,
    ),
    Scenario(
        "clone-kill",
        "write vol0 and a clone of it while storage nodes are SIGKILLed and restarted, one or two at a time",
        "each volume shows exactly its own acknowledged writes (the clone: vol0's at its branch); nothing lost",
        _clone_kill,
        _judge_clone_kill,
        settle=settle,
    ),
    Scenario(
        "backtrack-node-stopped",
        "stop a node, backtrack vol0 to an acknowledged commit, restart the node, move forward again",
        "vol0 shows exactly the acknowledged writes <= P plus the later ones; no hidden record served",
        _backtrack_node_stopped,
        _judge_backtrack,
        writes_expected_during_fault=False,
        settle=settle,
        rewinds=True,
    ),
    Scenario(
        "replace-clone",
        "SIGKILL for good a node holding segments of vol0 and of its clone (one spare per AZ)",
        "six healthy copies of both again; both show exactly their writes; nothing lost",
        _replace_clone,
        _judge_replace_clone,
        cluster_options=REPLACE_CLUSTER,
        settle=settle,
    ),
)
