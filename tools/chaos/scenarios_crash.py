"""Crash and pause scenarios: storage nodes SIGKILLed, SIGSTOPped or restarted under load.

kill-one, kill-az (within what the design survives: reads and writes go on),
kill-az-plus-one and kill-four (beyond it: no write may be acknowledged without a
quorum), pause-two (SIGSTOP, then SIGCONT) and rolling-restart (each node in turn).
"""

from __future__ import annotations

import time

from sixfold.compute.quorum import COPIES, WRITE_QUORUM
from sixfold.compute.volume import COMMIT_TIMEOUT_S, CONNECT_WAIT_S
from sixfold.tools.chaos.scenario_base import AZS, Context, Criterion, Scenario, goes_on, judge_goes_on, ops

PAUSE_S = 8.0  # beyond the writer's commit timeout (5 s) and the control plane's heartbeat timeout (2 s)
# Judging "no write acknowledged without a quorum" (`_judge_no_quorum`). Every PG of these clusters has
# its COPIES segments on the COPIES (non-spare) storage nodes, one each, and a write needs WRITE_QUORUM
# of them: with more than DOWN_MAX nodes down no write can become durable.
DOWN_MAX = COPIES - WRITE_QUORUM
# The writer's own waits (compute/writes.py WritePath.write). Before it allocates an MTR (gives it LSNs) it
# waits up to WRITER_ALLOCATION_WAIT_S for its segment streams to (re)connect to a write quorum; after,
# the MTR waits up to WRITER_COMMIT_WAIT_S for that quorum. So a write the clients invoked while the
# nodes were down may be allocated only once they are back (the RPC may also reach the writer late on a
# busy machine: the client never sees when it was allocated) and be acknowledged legitimately after the
# heal. Quoted in the criterion's detail; the judgement itself rests on completion times only.
WRITER_ALLOCATION_WAIT_S = CONNECT_WAIT_S
WRITER_COMMIT_WAIT_S = COMMIT_TIMEOUT_S
RESTART_ACTIONS = ("start", "resume")  # nemesis actions that bring a down node back


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
    back = sorted(
        e.started
        for e in ctx.nemesis.log.events
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


def _judge_rolling(ctx: Context) -> list[Criterion]:
    return goes_on(ctx, reads=False)


def _judge_pause(ctx: Context) -> list[Criterion]:
    return goes_on(ctx, "fault", "resumed")


FAMILY = (
    Scenario("kill-one", "SIGKILL one storage node", "reads and writes go on; nothing lost", _kill_one, judge_goes_on),
    Scenario(
        "kill-az", "SIGKILL both nodes of one AZ", "reads and writes go on; nothing lost", _kill_az, judge_goes_on
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
        "rolling-restart",
        "stop/start each of the six nodes in turn under load",
        "writes continue throughout; nothing lost",
        _rolling_restart,
        _judge_rolling,
    ),
)
