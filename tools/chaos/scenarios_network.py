"""Network scenarios: a slow storage node and a partitioned AZ (the node-side fault injector).

slow-node: one node delays every request; the writer's commit latency must not
follow it. partition-az: both nodes of one AZ refuse every RPC; the four others
go on.
"""

from __future__ import annotations

from sixfold.tools.chaos.scenario_base import (
    AZS,
    Context,
    Criterion,
    Scenario,
    goes_on,
    judge_goes_on,
    ops,
    percentile,
)

SLOW_DELAY_MS = 200.0
SLOW_JITTER_MS = 300.0


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
    # Commits that waited for the slow node would each take at least SLOW_DELAY_MS more than before it;
    # the baseline is the workload's own (a bank transfer takes longer than a page write).
    limit = b50 + SLOW_DELAY_MS / 2
    ctx.data["latency_ms"] = {"baseline_p50": b50, "baseline_p99": b99, "fault_p50": s50, "fault_p99": s99}
    return goes_on(ctx, reads=False) + [
        Criterion(
            "commit latency not tied to the slow node",
            bool(slow) and s50 < limit,
            f"write latency p50/p99: baseline {b50:.1f}/{b99:.1f} ms ({len(base)} writes), with {ctx.data['victim']} "
            f"delayed {SLOW_DELAY_MS:g}..{SLOW_DELAY_MS + SLOW_JITTER_MS:g} ms: "
            f"{s50:.1f}/{s99:.1f} ms ({len(slow)} writes); "
            f"p50 must stay below the baseline's + {SLOW_DELAY_MS / 2:g} = {limit:.1f} ms",
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


FAMILY = (
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
        judge_goes_on,
    ),
)
