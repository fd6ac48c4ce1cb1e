"""`sixfold sim`: run the deterministic simulation over many seeds, or replay one.

    sixfold sim --seeds 200                   # seeds 0..199 within the faults the design survives
    sixfold sim --seeds 100 --faults beyond   # more faults than that: the system must refuse, never lie
    sixfold sim --seed 1234 --events          # replay one seed exactly and print its event log
    sixfold sim --seeds 50 --mutation ack-at-3   # a deliberate protocol break: expect violations
    sixfold sim --seeds 100 --replace         # spares, the real control plane replacing failed segments

A failing seed is printed and appended to --failures-file; put it in
tests/sim_regressions.txt to keep it as a regression case. Runs re-execute
themselves with PYTHONHASHSEED=0 so a seed replays identically across processes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seed", type=int, help="replay exactly this seed (overrides --seeds)")
    parser.add_argument("--faults", choices=("none", "within", "beyond"), default="within",
                        help="within: up to two faulty nodes (one AZ) at once; beyond: up to four (default within)")
    parser.add_argument("--mutation", choices=("ack-at-3", "skip-truncation", "read-past-vdl", "replace-target-0",
                                                 "replace-skip-hydration"),
                        help="break the protocol on purpose, to see the simulator catch it")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients per run (default 3)")
    parser.add_argument("--ops", type=int, default=30, help="operations per client (default 30)")
    parser.add_argument("--duration", type=float, default=20.0, help="virtual seconds of load and faults (default 20)")
    parser.add_argument("--history-window-s", type=float, default=300.0,
                        help="virtual seconds of history storage nodes keep (default 300, longer than a run: only "
                        "coalescing runs); a short one such as 2 makes GC and hydration run under the faults too")
    parser.add_argument("--replace", action="store_true",
                        help="segment replacement: a spare node per AZ, the real control plane healing inside the run, "
                        "nodes that fail for good and failed nodes that return")
    parser.add_argument("--events", action="store_true", help="print every event of each run")
    parser.add_argument("--stop-on-failure", action="store_true", help="stop at the first failing seed")
    parser.add_argument("--failures-file", default="sim-failures.txt",
                        help="append failing seeds here (default ./sim-failures.txt)")


def _reexec_with_fixed_hash_seed() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, "-m", "tools.cli", *sys.argv[1:]], env)


def run(args: argparse.Namespace) -> int:
    _reexec_with_fixed_hash_seed()
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # the system under test's logs would drown the report
    from tools.sim.harness import SimConfig, simulate

    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    mode = f"faults {args.faults}" + (f", mutation {args.mutation}" if args.mutation else "") + (
        ", segment replacement" if args.replace else "")
    print(f"sixfold sim: {len(seeds)} seed(s) from {seeds[0]}, {mode}, {args.clients} clients x {args.ops} ops, "
          f"{args.duration:g} virtual s each", flush=True)
    failures = []
    totals: dict[str, int] = {}
    started = time.monotonic()
    for i, seed in enumerate(seeds, 1):
        config = SimConfig(seed=seed, clients=args.clients, ops_per_client=args.ops, duration_s=args.duration,
                           faults=args.faults, mutation=args.mutation, history_window_s=args.history_window_s,
                           replace=args.replace)
        result = simulate(config)
        for k, v in result.ops.items():
            totals[k] = totals.get(k, 0) + v
        if args.events or args.seed is not None:
            print("\n".join(result.events))
            print(f"seed {seed}: digest {result.digest} (identical on every replay)")
        if not result.ok:
            failures.append(result)
            print(f"seed {seed}: VIOLATION {result.violations[0]}  (replay: sixfold sim --seed {seed} "
                  f"--faults {args.faults}{' --mutation ' + args.mutation if args.mutation else ''}"
                  f"{' --replace' if args.replace else ''} --events)", flush=True)
            with open(args.failures_file, "a") as f:
                f.write(f"{seed} {args.faults} {args.mutation or '-'}{' replace' if args.replace else ''}  "
                        f"# {result.violations[0][:120]}\n")
            if args.stop_on_failure:
                break
        if i % 25 == 0 or i == len(seeds):
            print(f"  {i}/{len(seeds)} seeds, {len(failures)} with violations, {time.monotonic() - started:.0f} s",
                  flush=True)
    print(f"\n{len(seeds)} seeds, {len(failures)} with violations; operations: "
          + ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
          + f"; {time.monotonic() - started:.1f} s wall")
    return 1 if failures and not args.mutation else 0
