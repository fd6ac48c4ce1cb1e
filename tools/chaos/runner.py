"""The chaos runner: a cluster, concurrent clients, a fault schedule, checkers and a verdict.

One run of a scenario (`run_scenario`):

1. start a fresh cluster through `tools.cluster.Cluster` in `<out>/cluster`
   (control plane, a1 a2 b1 b2 c1 c2, the writer `compute` serving vol0), and
   prepare the workload: the page workload grows vol0 to two PGs, the bank
   workload makes its bank (`RunConfig.workload`: pages or bank; a scenario's
   `workload_factory` may make it instead, and its `start` starts its own loads);
2. run `clients` concurrent clients (workload.py, or bank_workload.py: what
   they do, and how an outcome is classified ok / fail / info);
3. a baseline phase, then the scenario's fault schedule (drawn from the seed),
   then heal (clear fault files, resume, restart), a little more load, then
   final reads (of every key; of the whole bank) and the scenario's own
   `settle` step, if it has one (its reads and writes on the healed cluster);
4. judge (verdict.py): for pages linearizability, lost writes, vanished reads
   (tools.chaos.checkers) and MTR atomicity, for the bank its invariants
   (tools.chaos.bank); the scenario's own criteria, and whether the six
   segments of each PG converge once healed;
5. write `history.jsonl`, `faults.jsonl`, `verdict.json` and copy every process
   log into `<out>/logs/` (report.py, which also draws the verdict table).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sixfold.tools.chaos import verdict
from sixfold.tools.chaos.bank import DEFAULT_ACCOUNTS
from sixfold.tools.chaos.bank_workload import BANK, PAGES_ONLY, WORKLOADS, BankWorkload
from sixfold.tools.chaos.fault_log import FaultLog
from sixfold.tools.chaos.faults import Nemesis
from sixfold.tools.chaos.report import ScenarioResult, save, table
from sixfold.tools.chaos.run_checks import check_atomicity, check_convergence
from sixfold.tools.chaos.scenario_base import Context, Scenario, Timing
from sixfold.tools.chaos.scenarios import SCENARIOS, resolve
from sixfold.tools.chaos.workload import (
    FINAL_READ_TIMEOUT_S,
    PAGES,
    VOLUME,
    OpRecord,
    Workload,
    classify,
    decode_value,
    encode_value,
    hot_keys,
)
from sixfold.tools.cluster import Cluster

HEAL_CONNECT_TIMEOUT_S = 30.0
DEFAULT_SECONDS = 24.0
DEFAULT_CLIENTS = 8
DEFAULT_KEYS = 8


@dataclass
class RunConfig:
    scenario: str
    out_dir: Path
    seed: int
    seconds: float = DEFAULT_SECONDS
    clients: int = DEFAULT_CLIENTS
    keys: int = DEFAULT_KEYS
    log: Callable[[str], None] = print
    workload: str = PAGES  # or BANK
    accounts: int = DEFAULT_ACCOUNTS  # the bank's

    def make_workload(self, cluster: Cluster) -> Workload | BankWorkload:
        address = cluster.compute_address()
        if self.workload == BANK:
            return BankWorkload(
                clients=self.clients, accounts=self.accounts, seed=self.seed, address=address, cluster=cluster
            )
        return Workload(clients=self.clients, keys=self.keys, seed=self.seed, address=address, cluster=cluster)

    def load(self) -> str:
        if self.workload == BANK:
            return f"the bank workload: {self.clients} clients, {self.accounts} accounts"
        return f"{self.clients} clients, {self.keys} keys"

    def timing(self) -> Timing:
        s = self.seconds
        return Timing(baseline_s=max(2.0, 0.2 * s), fault_s=max(4.0, 0.5 * s), post_s=max(2.0, 0.3 * s))


async def _drive(
    cfg: RunConfig, scenario: Scenario, cluster: Cluster, nemesis: Nemesis, holder: dict[str, Any]
) -> None:
    timing = cfg.timing()
    rng = random.Random(f"{cfg.seed}:{scenario.name}")
    factory = scenario.workload_factory
    workload = cfg.make_workload(cluster) if factory is None else factory(cfg, cluster)
    holder["workload"] = workload
    origin = workload.origin

    def say(text: str) -> None:
        cfg.log(f"  [{time.monotonic() - origin:6.1f}s] {text}")

    nemesis.log.listener = lambda e: say(
        f"fault: {e.action} {e.target} ({e.detail}) {'took' if e.ok else 'FAILED after'} {e.ended - e.started:.1f} s"
    )
    ctx = Context(
        name=scenario.name,
        rng=rng,
        cluster=cluster,
        nemesis=nemesis,
        workload=workload,
        timing=timing,
        out_dir=cfg.out_dir,
        log=say,
    )
    holder["ctx"] = ctx
    try:
        await workload.prepare()
        if scenario.start is not None:
            await scenario.start(ctx)
        await asyncio.to_thread(nemesis.wait_writer_connected, workload.target.address, HEAL_CONNECT_TIMEOUT_S)
        ctx.mark("load_start")
        say(f"load: {workload.describe()}")
        tasks = [asyncio.create_task(workload.client(i)) for i in range(cfg.clients)]
        try:
            await asyncio.sleep(timing.baseline_s)
            ctx.mark("fault_start")
            say(f"fault phase: {scenario.does}")
            await scenario.inject(ctx)
            ctx.marks.setdefault("fault", ctx.marks["fault_start"])
            ctx.mark("heal_start")
            done = await asyncio.to_thread(nemesis.heal)
            say("heal: " + (", ".join(done) if done else "nothing to undo"))
            connected = await asyncio.to_thread(
                nemesis.wait_writer_connected, workload.target.address, HEAL_CONNECT_TIMEOUT_S
            )
            if not connected:
                ctx.notes.append(
                    f"after heal the writer did not reconnect to all segments in {HEAL_CONNECT_TIMEOUT_S:g} s"
                )
            ctx.mark("healed")
            say(f"healed; {timing.post_s:.0f} s more load")
            await asyncio.sleep(timing.post_s)
        finally:
            workload.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for close in ctx.closers:
                await close()
        ctx.mark("clients_stopped")
        say(f"clients stopped after {len(workload.records)} calls; final reads")
        if not await workload.final_reads():
            ctx.notes.append(f"final reads did not succeed within {FINAL_READ_TIMEOUT_S:g} s")
        ctx.mark("final_read")
        if scenario.settle is not None:
            await scenario.settle(ctx)
            ctx.mark("settled")
        say("checking segment convergence")
        holder["convergence"] = await asyncio.to_thread(check_convergence, workload.target.address)
    finally:
        await workload.close()


def _judge(
    cfg: RunConfig, scenario: Scenario, result: ScenarioResult, holder: dict[str, Any], nemesis: Nemesis
) -> None:
    verdict.judge(scenario, result, holder["workload"], holder["ctx"], holder.get("convergence"), nemesis, cfg.log)


def run_scenario(cfg: RunConfig) -> ScenarioResult:
    """Run one scenario end to end on its own cluster in `cfg.out_dir`; never raises for a failed run
    (ValueError for a workload it cannot run with)."""
    scenario = resolve(cfg.scenario)
    if cfg.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {cfg.workload!r}; known: {', '.join(WORKLOADS)}")
    if cfg.workload == BANK and scenario.name in PAGES_ONLY:
        raise ValueError(f"{scenario.name} cannot run with the bank workload: {PAGES_ONLY[scenario.name]}")
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = ScenarioResult(scenario.name, "FAIL", cfg.seed, str(out), workload=cfg.workload)
    cfg.log(f"== {scenario.name}: {scenario.does}; must hold: {scenario.must}")
    cfg.log(f"   seed {cfg.seed}, {cfg.load()}, ~{cfg.seconds:g} s of load; output {out}")
    cluster = Cluster(out / "cluster")
    fault_log = FaultLog()
    nemesis = Nemesis(cluster, fault_log, VOLUME)
    holder: dict[str, Any] = {}
    try:
        cluster.up(**scenario.cluster_options)
        asyncio.run(_drive(cfg, scenario, cluster, nemesis, holder))
        _judge(cfg, scenario, result, holder, nemesis)
    except Exception as error:  # noqa: BLE001 - the run itself broke: that is a FAIL with the reason
        result.verdict = "FAIL"
        result.error = f"{type(error).__name__}: {error}"
        result.details["traceback"] = traceback.format_exc()
        cfg.log(f"  run failed: {result.error}")
        if "workload" in holder and "ctx" in holder:
            with contextlib.suppress(Exception):  # the run failed already; a verdict is a bonus
                _judge(cfg, scenario, result, holder, nemesis)
            result.verdict = "FAIL"
    finally:
        nemesis.close()
        try:
            cluster.down()
        finally:
            save(cfg.out_dir, cfg.log, result, holder.get("workload"), cluster, fault_log, started)
    return result


def scenario_names() -> list[str]:
    return list(SCENARIOS)


__all__ = [
    "BANK",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_CLIENTS",
    "DEFAULT_KEYS",
    "DEFAULT_SECONDS",
    "PAGES",
    "PAGES_ONLY",
    "WORKLOADS",
    "BankWorkload",
    "OpRecord",
    "RunConfig",
    "ScenarioResult",
    "Workload",
    "check_atomicity",
    "check_convergence",
    "classify",
    "decode_value",
    "encode_value",
    "hot_keys",
    "run_scenario",
    "scenario_names",
    "table",
]
