"""`sixfold chaos`: fault scenarios against a fresh local cluster, judged from the clients' history.

    sixfold chaos list                       the scenarios and what each must hold
    sixfold chaos kill-az [--seconds 24] [--clients 8] [--keys 8] [--out DIR] [--seed N]
    sixfold chaos kill-az --workload bank [--accounts 10]   Jepsen's bank over SqlService
    sixfold chaos all                        every scenario in turn, one combined verdict table

Two workloads: `pages` (the default: clients write and read hot pages of vol0
over VolumeService, judged for linearizability, lost writes and torn MTRs) and
`bank` (clients move money between accounts in SQL transactions over
SqlService, judged for lost committed transfers, the conserved total and whole
transfers; tools/chaos/bank.py). byte-flip and tree-rot aim at the page
workload's tokens and run with it only (`all --workload bank` skips them).
writer-failover and split-brain run on a cluster with two read replicas and
run both workloads at once: `--workload` on vol0, the other one on vol1, all
clients through the cluster endpoint (tools/chaos/scenarios_failover.py).

Each scenario starts its own cluster (in its output directory, default
./chaos-out/<timestamp>-<scenario>/), runs concurrent clients while the fault
schedule (drawn from the seed) plays, heals, reads every key back and checks
the history. The output directory keeps history.jsonl, faults.jsonl, every
process's log (logs/) and verdict.json. The exit code is 1 if any scenario
FAILs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from sixfold.tools.chaos.runner import (
    BANK,
    DEFAULT_ACCOUNTS,
    DEFAULT_CLIENTS,
    DEFAULT_KEYS,
    DEFAULT_SECONDS,
    PAGES,
    PAGES_ONLY,
    WORKLOADS,
    RunConfig,
    ScenarioResult,
    run_scenario,
    table,
)
from sixfold.tools.chaos.scenarios import SCENARIOS

DEFAULT_OUT_ROOT = Path("chaos-out")


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "scenarios:\n" + "\n".join(f"  {s.name:18} {s.does}" for s in SCENARIOS.values())
    parser.add_argument(
        "scenario", metavar="SCENARIO", choices=[*SCENARIOS, "all", "list"], help="a scenario name, `all`, or `list`"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"seconds of client load per scenario: baseline, fault, after the heal "
        f"(default {DEFAULT_SECONDS:g}; restarts add to it)",
    )
    parser.add_argument(
        "--clients", type=int, default=DEFAULT_CLIENTS, help=f"concurrent client processes (default {DEFAULT_CLIENTS})"
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=DEFAULT_KEYS,
        help=f"hot pages, half in each of vol0's first two PGs (default {DEFAULT_KEYS})",
    )
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        default=PAGES,
        help="pages: hot pages over VolumeService (default); bank: money transfers over SqlService",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=DEFAULT_ACCOUNTS,
        help=f"the bank workload's accounts, 1,000 each (default {DEFAULT_ACCOUNTS})",
    )
    parser.add_argument("--out", type=Path, help="output directory (default ./chaos-out/<timestamp>-<scenario>/)")
    parser.add_argument("--seed", type=int, help="seed of the fault schedule and the clients (default: random)")


def _list() -> int:
    width = max(len(n) for n in SCENARIOS)
    for s in SCENARIOS.values():
        print(f"{s.name:{width}}  {s.does}")
        print(f"{'':{width}}  must hold: {s.must}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.scenario == "list":
        return _list()
    if args.clients < 1:
        print("--clients must be at least 1", file=sys.stderr)
        return 2
    if args.keys < 4 or args.keys % 2:
        print("--keys must be an even number of at least 4", file=sys.stderr)
        return 2
    if args.accounts < 2:
        print("--accounts must be at least 2", file=sys.stderr)
        return 2
    bank = args.workload == BANK
    if bank and args.scenario in PAGES_ONLY:
        print(f"{args.scenario} runs with the pages workload only: {PAGES_ONLY[args.scenario]}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if bank:
        for name in [n for n in names if n in PAGES_ONLY]:
            print(f"skipping {name} (pages workload only: {PAGES_ONLY[name]})")
            names.remove(name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or DEFAULT_OUT_ROOT / f"{stamp}-{args.scenario}"
    out = out.resolve()
    used = [d for d in (out / n if len(names) > 1 else out for n in names) if (d / "cluster").exists()]
    if used:
        # A scenario starts its own fresh cluster; one on an earlier run's data would judge that run's
        # values as this one's (reads of values no write of this run explains).
        print(
            f"{used[0]} already holds a cluster from an earlier run; choose another --out, or delete it first",
            file=sys.stderr,
        )
        return 2
    print(
        f"sixfold chaos {args.scenario} --workload {args.workload}: seed {seed} (rerun with --seed {seed}); "
        f"output in {out}",
        flush=True,
    )
    results: list[ScenarioResult] = []
    for name in names:
        cfg = RunConfig(
            scenario=name,
            out_dir=out / name if len(names) > 1 else out,
            seed=seed,
            seconds=args.seconds,
            clients=args.clients,
            keys=args.keys,
            log=lambda text: print(text, flush=True),
            workload=args.workload,
            accounts=args.accounts,
        )
        results.append(run_scenario(cfg))
        print(flush=True)
    print(f"seed {seed}; output in {out}")
    print(table(results), flush=True)
    return 0 if all(r.verdict == "PASS" for r in results) else 1
