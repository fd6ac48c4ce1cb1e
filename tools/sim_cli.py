"""`sixfold sim`: run the deterministic simulation over many seeds, or replay one.

    sixfold sim --seeds 200                   # seeds 0..199 within the faults the design survives
    sixfold sim --seeds 100 --faults az-plus-one   # and a stretch with one AZ plus one node down: reads succeed
    sixfold sim --seeds 100 --faults beyond   # three, then four nodes down: the system must refuse, never lie
    sixfold sim --seed 1234 --events          # replay one seed exactly and print its event log
    sixfold sim --seeds 50 --mutation ack-at-3   # a deliberate protocol break: expect violations
    sixfold sim --seeds 100 --replace         # spares, the real control plane replacing failed segments
    sixfold sim --seeds 100 --time-travel     # clones, snapshots and backtracks while the faults run
    sixfold sim --seeds 100 --replicas 2      # two read replicas; a crashed writer's place goes to a promoted one

A failing seed is printed with the arguments that replay it exactly (its seed
and every setting that differs from the default) and appended, in the same
form, to --failures-file; copy that line into tests/sim_regressions.txt to keep
it as a regression case. Runs re-execute themselves with PYTHONHASHSEED=0 so a
seed replays identically across processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from sixfold.tools.sim.mutations import MUTATIONS  # cheap: the module imports what it breaks only when applied

FAULT_MODES = ("none", "within", "az-plus-one", "beyond")  # tools/sim/config.py FAULT_BUDGET: the same
# SimConfig field -> the flag that sets it (`net`, a NetConfig, goes field by field through --net FIELD=VALUE).
FLAGS = {
    "clients": "--clients",
    "ops_per_client": "--ops",
    "pgs": "--pgs",
    "pages_per_pg": "--pages-per-pg",
    "duration_s": "--duration",
    "faults": "--faults",
    "mutation": "--mutation",
    "history_window_s": "--history-window-s",
    "replace": "--replace",
    "classic_faults": "--classic-faults",
    "time_travel": "--time-travel",
    "replicas": "--replicas",
    "clear_at_rest": "--clear-at-rest",
}


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seed", type=int, help="replay exactly this seed (overrides --seeds)")
    parser.add_argument(
        "--faults",
        choices=FAULT_MODES,
        default="within",
        help="within: up to two faulty nodes at once (any two, e.g. a whole AZ); az-plus-one: that, and a stretch with "
        "one whole AZ and one more node down (reads must still succeed); beyond: up to four, with a "
        "stretch of three then four nodes down (writes must be refused, never lied about) "
        "(default within)",
    )
    parser.add_argument(
        "--mutation", choices=MUTATIONS, help="break the protocol on purpose, to see the simulator catch it"
    )
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients per run (default 3)")
    parser.add_argument("--ops", type=int, default=30, help="operations per client (default 30)")
    parser.add_argument("--duration", type=float, default=20.0, help="virtual seconds of load and faults (default 20)")
    parser.add_argument(
        "--history-window-s",
        type=float,
        default=300.0,
        help="virtual seconds of history storage nodes keep (default 300, longer than a run: only "
        "coalescing runs); a short one such as 2 makes GC and hydration run under the faults too",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="segment replacement: a spare node per AZ, the real control plane healing inside the run, "
        "nodes that fail for good and failed nodes that return",
    )
    parser.add_argument(
        "--classic-faults",
        action="store_true",
        help="the fault menu from before the integrity faults (metadata rot, hostile epochs, tree rot, "
        "dropped copies) joined it: a seed found then replays the same fault schedule",
    )
    parser.add_argument(
        "--time-travel",
        action="store_true",
        help="clones (at VDL or an earlier commit, of clones too) with their own writers, snapshots and restores, "
        "backtracks and moves forward again, through the real control plane while the faults run; every read "
        "of every volume is checked against its lineage",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        choices=range(4),
        metavar="N",
        help="read replicas per run, 0..3 (default 0): each follows the writer's redo over a seeded link and serves "
        "read transactions checked against the model (never above durable, never backwards, exact pages); a "
        "writer that crashes or is cut off is replaced by promoting the most caught-up reader. Not with "
        "--time-travel",
    )
    parser.add_argument(
        "--clear-at-rest",
        action="store_true",
        help="store records and page versions in clear (default: every node seals them under the volume's data "
        "key, as a secure cluster does)",
    )
    parser.add_argument("--pgs", type=int, default=2, help="protection groups of the simulated volume (default 2)")
    parser.add_argument("--pages-per-pg", type=int, default=16, help="pages per protection group (default 16)")
    parser.add_argument(
        "--net",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a fake-network setting (tools/sim/network.py NetConfig), e.g. unary_drop_probability=0.05; repeatable",
    )
    parser.add_argument("--events", action="store_true", help="print every event of each run")
    parser.add_argument("--stop-on-failure", action="store_true", help="stop at the first failing seed")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run seeds in this many processes at once (default 1; results are the same, reported in seed order)",
    )
    parser.add_argument(
        "--failures-file", default="sim-failures.txt", help="append failing seeds here (default ./sim-failures.txt)"
    )


def _reexec_with_fixed_hash_seed() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, "-m", "sixfold.tools.cli", *sys.argv[1:]], env)


def run(args: argparse.Namespace) -> int:
    _reexec_with_fixed_hash_seed()
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # the system under test's logs would drown the report
    from sixfold.tools.sim.harness import SimResult, simulate

    if args.replicas and args.time_travel:
        raise SystemExit("--replicas and --time-travel do not combine: a backtrack moves the volume under its readers")
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    settings = " ".join(replay_args(config_of(args, seeds[0]))[2:])  # all but --seed
    print(
        f"sixfold sim: {len(seeds)} seed(s) from {seeds[0]} ({settings}), {args.clients} clients x {args.ops} ops, "
        f"{args.duration:g} virtual s each",
        flush=True,
    )
    failures = []
    totals: dict[str, int] = {}  # summed over the seeds; a *_max the most of any seed
    past_two = refused_past_two = 0  # seeds that had more than two nodes down at once; a write refused then
    started = time.monotonic()
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    configs = [config_of(args, seed) for seed in seeds]
    pool = None
    results: Iterator[SimResult]  # in seed order
    if args.jobs > 1 and len(seeds) > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(args.jobs)
        results = pool.imap(simulate, configs, chunksize=4)
    else:
        results = map(simulate, configs)
    for i, (seed, config, result) in enumerate(zip(seeds, configs, results), 1):
        for k, v in result.ops.items():
            totals[k] = max(totals.get(k, 0), v) if k.endswith("_max") else totals.get(k, 0) + v
        past_two += result.ops.get("nodes_down_max", 0) > 2
        refused_past_two += result.ops.get("write_refused_over_2_down", 0) > 0
        if args.events or args.seed is not None:
            print("\n".join(result.events))
            print(f"seed {seed}: digest {result.digest} (identical on every replay)")
        if not result.ok:
            failures.append(result)
            replay = " ".join(replay_args(config))
            print(f"seed {seed}: VIOLATION {result.violations[0]}  (replay: sixfold sim {replay} --events)", flush=True)
            with open(args.failures_file, "a") as f:
                f.write(f"{replay}  # {result.violations[0][:120]}\n")
            if args.stop_on_failure:
                break
        if i % (25 * args.jobs) == 0 or i == len(seeds):
            print(
                f"  {i}/{len(seeds)} seeds, {len(failures)} with violations, {time.monotonic() - started:.0f} s",
                flush=True,
            )
    if pool is not None:
        pool.terminate()
    print(
        f"\n{len(seeds)} seeds, {len(failures)} with violations; operations: "
        + ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
        + f"; {time.monotonic() - started:.1f} s wall"
    )
    print(
        f"most nodes down at once: {totals.get('nodes_down_max', 0)}; more than two down in {past_two} of "
        f"{len(seeds)} seeds, a write refused meanwhile in {refused_past_two}; reads refused "
        f"{totals.get('read_failed', 0)} ({totals.get('read_failed_over_2_down', 0)} with more than two down)"
    )
    return 1 if failures and not args.mutation else 0


# -- configurations as arguments (replay hints, --failures-file, tests/sim_regressions.txt) ----------


def config_of(args: argparse.Namespace, seed: int) -> Any:
    """The SimConfig that parsed `sixfold sim` arguments describe, for `seed`."""
    from sixfold.tools.sim.harness import SimConfig

    net = SimConfig(seed=seed).net
    for item in args.net:
        name, sep, value = item.partition("=")
        if not sep or name not in {f.name for f in dataclasses.fields(net)}:
            raise SystemExit(
                f"--net {item}: expected FIELD=VALUE with FIELD one of "
                f"{', '.join(f.name for f in dataclasses.fields(net))}"
            )
        setattr(net, name, type(getattr(net, name))(value))
    return SimConfig(
        seed=seed,
        clients=args.clients,
        ops_per_client=args.ops,
        pgs=args.pgs,
        pages_per_pg=args.pages_per_pg,
        duration_s=args.duration,
        faults=args.faults,
        mutation=args.mutation,
        history_window_s=args.history_window_s,
        replace=args.replace,
        classic_faults=args.classic_faults,
        time_travel=args.time_travel,
        replicas=args.replicas,
        clear_at_rest=args.clear_at_rest,
        net=net,
    )


def replay_args(config: Any) -> list[str]:
    """`sixfold sim` arguments that rebuild `config` exactly: its seed, its fault mode and every other field
    that differs from the default (floats as repr, which reads back to the same value)."""
    from sixfold.tools.sim.harness import SimConfig

    default = SimConfig(seed=config.seed)
    out = ["--seed", str(config.seed), "--faults", config.faults]  # the fault mode always, for the reader
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in ("seed", "faults") or value == getattr(default, f.name):
            continue
        if f.name == "net":
            for nf in dataclasses.fields(value):
                if getattr(value, nf.name) != getattr(default.net, nf.name):
                    out += ["--net", f"{nf.name}={getattr(value, nf.name)!r}"]
            continue
        flag = FLAGS[f.name]  # a SimConfig field without a flag here cannot be replayed: add one
        if isinstance(value, bool):
            assert value, f"{flag} is a switch: its default must be off"
            out.append(flag)
        else:
            out += [flag, repr(value) if isinstance(value, float) else str(value)]
    return out


def parse_replay(line: str) -> Any:
    """The SimConfig of one line of tests/sim_regressions.txt or --failures-file: `sixfold sim` arguments
    (`--seed S --faults beyond --duration 30.0 ...`), or the older `SEED FAULTS MUTATION [replace]` with
    optional arguments after it; a `#` starts a comment."""
    tokens = line.split("#", 1)[0].split()
    if tokens and not tokens[0].startswith("-"):
        positional: list[str] = []
        while tokens and (tokens[0] == "-" or not tokens[0].startswith("-")) and len(positional) < 4:
            positional.append(tokens.pop(0))
        seed, faults, mutation, mode = positional + ["within", "-", "-"][len(positional) - 1 :]
        if mode not in ("replace", "-"):
            raise SystemExit(f"{line!r}: the fourth word is 'replace' or '-', not {mode!r}")
        tokens = (
            ["--seed", seed, "--faults", faults]
            + (["--mutation", mutation] if mutation != "-" else [])
            + (["--replace"] if mode == "replace" else [])
            + tokens
        )
    parser = argparse.ArgumentParser(prog="sixfold sim", add_help=False)
    configure("sim", parser)
    args = parser.parse_args(tokens)
    if args.seed is None:
        raise SystemExit(f"{line!r}: no --seed")
    return config_of(args, args.seed)
