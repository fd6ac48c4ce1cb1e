"""Writer scenarios: the writer SIGKILLed mid-MTR, and a second writer that fences the first.

writer-kill: acknowledged MTRs stay whole, the others wholly absent, across
repeated restarts. old-writer: once a second writer opened the volume, the old
one acknowledges nothing more, and a write it refused as fenced never takes effect.
"""

from __future__ import annotations

import time
from typing import Any

from sixfold.storage.errors import REASON_FENCED
from sixfold.tools.chaos.scenario_base import Context, Criterion, Scenario, ops
from sixfold.tools.cluster import COMPUTE

OLD_WRITER_LINGER_S = 2.5  # clients keep using the fenced writer this long after the new one opened
NEW_WRITER = "compute-new"  # label of the second writer in the workload's records


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


def _refused_as_fenced(record: Any) -> bool:
    """A page write refused as fenced is FAILED_PRECONDITION; the SQL engine (the bank workload) aborts a
    transaction as ABORTED with the reason FENCED."""
    return record.code == "FAILED_PRECONDITION" or getattr(record, "reason", "") == REASON_FENCED


def _judge_old_writer(ctx: Context) -> list[Criterion]:
    opened = ctx.marks["new_writer_open"]
    stale_acks = ops(ctx, "write", "ok", invoked_from=opened, writer=COMPUTE)
    fenced = [r for r in ops(ctx, "write", "fail", invoked_from=opened, writer=COMPUTE) if _refused_as_fenced(r)]
    other = [r for r in ops(ctx, "write", invoked_from=opened, writer=COMPUTE) if r.outcome != "ok" and r not in fenced]
    new_acks = ops(ctx, "write", "ok", writer=NEW_WRITER)
    # A write refused as fenced counts as `fail` (nothing written); see whether any was read back anyway.
    observed = {v for r in ops(ctx, "read", "ok") for v in r.values}
    refused = [r for r in ops(ctx, "write", "fail") if _refused_as_fenced(r)]
    resurrected = [r for r in refused if r.token in observed]
    detail = (
        f"{len(refused)} writes refused as fenced (FAILED_PRECONDITION, or reason FENCED) in all; "
        f"{len(resurrected)} of them were read back later"
    )
    if resurrected:
        first = resurrected[0]
        detail += (
            f", e.g. {first.token!r} to pages {list(first.keys)} refused at "
            f"t={first.completed - ctx.workload.origin:.3f}: the old writer failed MTRs that were already in "
            f"flight with 'fenced', but the new writer's recovery found them on a write quorum and made them "
            f"durable; an in-flight MTR's outcome is unknown when its writer is fenced "
            f"(compute/fencing.py on_fenced)"
        )
    return [
        Criterion(
            "old writer fenced",
            not stale_acks and bool(fenced),
            f"writes sent to the old writer after the new one opened: {len(stale_acks)} acknowledged, "
            f"{len(fenced)} rejected as fenced (FAILED_PRECONDITION, or reason FENCED), {len(other)} other errors; "
            f"old writer reports fenced: {ctx.data.get('old_knows_fenced')}",
        ),
        Criterion("a write refused as fenced never takes effect", not resurrected, detail),
        Criterion(
            "clients switched to the new writer",
            bool(new_acks),
            f"{len(new_acks)} writes acknowledged by the new writer",
        ),
    ]


FAMILY = (
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
)
