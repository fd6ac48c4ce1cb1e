"""`sixfold demo`: a bank on sixfold that loses an availability zone half way and notices nothing.

    sixfold demo                          # 30 s, 8 clients, 100 accounts, AZ a down in the middle
    sixfold demo --seconds 60 --clients 16 --az b
    sixfold demo --down                   # stop the cluster at the end

Starts a local cluster in `--state-dir` (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster) if none
runs there (a stopped one is restarted), loads a bank (tools/demo_bank.py: `demo_accounts` and
`demo_transfers`, dropped and loaded again on every run), runs transfers from `--clients` threads, each
with its own connection, and a third of the way in SIGKILLs both storage nodes of one AZ through the
launcher library (each PG keeps four of its six copies: still a write quorum). At two thirds it starts
them again (same data, same ports), so before, during and after the outage get about the same time (if
they come back late, the clients go on until the after phase has had a sixth of the run). A progress
line every few seconds carries an invariant check (one read-only transaction). At the end: how long the
AZ's nodes took to catch up, the invariant and every acknowledged transfer checked in one snapshot, and a
report: transfers committed, declined, retried; commits/s before, during and after the outage; what was
killed when. The cluster keeps running afterwards (`sixfold down` stops it) unless `--down`.

Exit codes: 0 the invariant held throughout and no acknowledged transfer is missing; 1 it did not (or
the demo could not run: the message says why); 2 bad usage.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.storage.arg_types import int_between
from sixfold.tools.cluster import STORAGE_NODE, Cluster, ClusterError
from sixfold.tools.cluster_probes import list_segments
from sixfold.tools.demo_bank import ACCOUNTS_MAX, Ledger, load_schema, run_client, snapshot, verify
from sixfold.tools.demo_report import Checks, Event, Run, phases, progress_line, report_lines
from sixfold.tools.launcher import STATE_DIR_ENV, default_state_dir

EXIT_OK = 0
EXIT_FAILED = 1
DEFAULT_SECONDS = 30.0
SECONDS_MIN = 10.0  # room for three phases: the AZ's nodes take a second or two to serve again
DEFAULT_CLIENTS = 8
CLIENTS_MAX = 64
DEFAULT_ACCOUNTS = 100
PROGRESS_INTERVAL_S = 3.0
OUTAGE_START = 1 / 3  # of the run: the AZ's nodes are SIGKILLed
OUTAGE_END = 2 / 3  # of the run: they are started again
AFTER_MIN = 1 / 6  # of the run: the least the after phase lasts (the run goes on if the AZ came back late)
RESTORE_WAIT_MAX_S = 60.0  # past --seconds: the longest the clients go on while the AZ is coming back
CLIENT_JOIN_S = 30.0  # after the stop: a call in flight ends within the client's timeout
CATCH_UP_WAIT_S = 20.0  # after the clients stop: how long to wait for the AZ's segments to catch up
CATCH_UP_POLL_S = 0.5


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= SECONDS_MIN:
        raise argparse.ArgumentTypeError(f"must be at least {SECONDS_MIN:g} (three phases), got {text}")
    return value


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Bank transfers from several clients while a whole AZ is SIGKILLed and brought back; ends with the "
        "invariant (total balance unchanged, no acknowledged transfer lost) and commits/s before, during and "
        "after the outage. Starts a local cluster first if none runs in --state-dir, and leaves it running "
        "(unless --down)."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"the local cluster (default: ${STATE_DIR_ENV}, else ~/.sixfold/cluster); started if not running",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=DEFAULT_SECONDS,
        help=f"how long the clients run (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--clients",
        type=int_between(1, CLIENTS_MAX),
        default=DEFAULT_CLIENTS,
        help=f"client threads (default {DEFAULT_CLIENTS})",
    )
    parser.add_argument(
        "--accounts",
        type=int_between(2, ACCOUNTS_MAX),
        default=DEFAULT_ACCOUNTS,
        help=f"accounts (default {DEFAULT_ACCOUNTS})",
    )
    parser.add_argument("--az", default=None, metavar="AZ", help="the AZ to kill (default: the cluster's first, a)")
    parser.add_argument(
        "--volume", default=None, metavar="NAME", help="the volume (default: the cluster's default volume, vol0)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the clients' choices (default: random; printed)"
    )
    parser.add_argument("--down", action="store_true", help="stop the cluster at the end (`sixfold down`)")


class Outage(threading.Thread):
    """SIGKILL every node of `nodes` at `start_s`, start them again at `end_s` (seconds on `clock`). A stop
    before `start_s` kills nothing; a stop during the outage brings the nodes back at once."""

    def __init__(
        self, cluster: Cluster, az: str, nodes: list[str], start_s: float, end_s: float, clock: Callable[[], float]
    ) -> None:
        super().__init__(name="demo-outage", daemon=True)
        self.cluster, self.az, self.nodes = cluster, az, nodes
        self.start_s, self.end_s, self.clock = start_s, end_s, clock
        self.stop = threading.Event()
        self.events: list[Event] = []
        self.killed: list[str] = []
        self.restarting = False
        self.began_s: float | None = None  # the first SIGKILL
        self.ended_s: float | None = None  # every killed node serves again
        self.error: str | None = None

    def state(self) -> str:
        if self.ended_s is not None:
            return f"AZ {self.az} back"
        if self.restarting:
            return f"AZ {self.az} starting again ({' '.join(self.killed)})"
        if self.killed:
            return f"AZ {self.az} DOWN ({' '.join(self.killed)} killed)"
        return f"AZ {self.az} up"

    def _note(self, what: str) -> None:
        self.events.append(Event(self.clock(), what))

    def run(self) -> None:
        try:
            if self.stop.wait(max(0.0, self.start_s - self.clock())):
                return
            for node in self.nodes:
                pid = self.cluster.kill(node)
                self.began_s = self.clock() if self.began_s is None else self.began_s
                self.killed.append(node)
                self._note(f"SIGKILL {node} (pid {pid})")
            self._note(f"AZ {self.az} is down: each PG keeps 4 of its 6 copies, still a write quorum")
            self.stop.wait(max(0.0, self.end_s - self.clock()))
        except ClusterError as error:
            self.error = str(error)
            self._note(f"the outage failed: {error}")
        finally:
            self._restore()

    def _restore(self) -> None:
        """Start the killed nodes again in one launcher call (`up` starts what is not running, at once)."""
        if not self.killed:
            return
        nodes = " ".join(self.killed)
        try:
            self._note(f"start {nodes}")
            self.restarting = True
            self.cluster.up()
            self.ended_s = self.clock()
            self._note(f"{nodes} serve again (same data, same ports)")
        except ClusterError as error:
            self.error = str(error)
            self._note(f"starting {nodes} again failed: {error}; `sixfold up` starts what is not running")


def _caught_up(cluster: Cluster, address: str, volume_id: str, nodes: list[str]) -> tuple[bool, int]:
    """Whether every segment of the volume on `nodes` has reached its PG's PGCL; records gossip repaired."""
    with VolumeClient(address) as client:
        pgcl = {pg.pg_index: pg.pgcl for pg in client.status(volume_id).protection_groups}
    done, repaired = True, 0
    for node in nodes:
        for segment in list_segments(cluster.node_address(node))[0]:
            if segment.volume_id == volume_id:
                done = done and segment.scl >= pgcl.get(segment.pg_index, 0)
                repaired += segment.records_repaired
    return done, repaired


def _wait_caught_up(cluster: Cluster, address: str, volume_id: str, outage: Outage) -> Event:
    """Wait (bounded) until the restarted nodes' segments hold everything their PGs committed."""
    deadline = time.monotonic() + CATCH_UP_WAIT_S
    nodes = " ".join(outage.killed)
    while True:
        try:
            done, repaired = _caught_up(cluster, address, volume_id, outage.killed)
        except (grpc.RpcError, VolumeError, ClusterError) as error:
            return Event(outage.clock(), f"could not read the segments of {nodes}: {error}")
        if done:
            what = f"{nodes} caught up: every segment at its PG's PGCL ({repaired} records repaired by gossip)"
            return Event(outage.clock(), what)
        if time.monotonic() > deadline:
            return Event(outage.clock(), f"{nodes} not caught up after {CATCH_UP_WAIT_S:g} s (gossip goes on)")
        time.sleep(CATCH_UP_POLL_S)


def _end_s(seconds: float, outage: Outage) -> float:
    """When the clients stop: at `seconds`, or later when the AZ came back late, so that the after phase
    lasts at least AFTER_MIN of the run; at most RESTORE_WAIT_MAX_S later."""
    latest = seconds + RESTORE_WAIT_MAX_S
    if outage.ended_s is not None:
        return min(latest, max(seconds, outage.ended_s + seconds * AFTER_MIN))
    if outage.killed and outage.error is None:  # still coming back
        return latest
    return seconds


def _check(db: SqlClient, checks: Checks, at_s: float) -> str:
    try:
        return checks.record(at_s, snapshot(db))
    except SqlError as error:
        return checks.record(at_s, str(error))


def run_bank(
    cluster: Cluster, args: argparse.Namespace, address: str, volume_id: str, az: str, nodes: list[str]
) -> Run:
    seconds, clients, accounts = float(args.seconds), int(args.clients), int(args.accounts)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    with SqlClient(address, volume_id=volume_id) as db:
        total = load_schema(db, accounts)
        print(
            f"loaded {accounts} accounts of {total // accounts} (total {total}) into volume {volume_id}; "
            f"{clients} clients transfer for {seconds:g} s, AZ {az} ({' '.join(nodes)}) is killed at "
            f"{seconds * OUTAGE_START:.1f} s and started again at {seconds * OUTAGE_END:.1f} s",
            flush=True,
        )
        t0 = time.monotonic()

        def clock() -> float:  # the run's one clock: seconds since the first transfer
            return time.monotonic() - t0

        ledger, stop, checks = Ledger(clock), threading.Event(), Checks(total)
        threads = [
            threading.Thread(target=run_client, args=(address, volume_id, k, accounts, seed, ledger, stop), daemon=True)
            for k in range(1, clients + 1)
        ]
        outage = Outage(cluster, az, nodes, seconds * OUTAGE_START, seconds * OUTAGE_END, clock)
        for thread in threads:
            thread.start()
        outage.start()
        events = [Event(0.0, f"{clients} clients start transferring")]
        try:
            next_s, last = PROGRESS_INTERVAL_S, 0
            while clock() < _end_s(seconds, outage):
                time.sleep(max(0.0, min(next_s, _end_s(seconds, outage)) - clock()))
                if clock() >= next_s:
                    committed = ledger.committed_count()
                    print(
                        progress_line(
                            clock(), committed, last, PROGRESS_INTERVAL_S, _check(db, checks, clock()), outage.state()
                        ),
                        flush=True,
                    )
                    next_s, last = next_s + PROGRESS_INTERVAL_S, committed
        finally:
            stop.set()
            end_s = clock()
            outage.stop.set()
            for thread in threads:
                thread.join(CLIENT_JOIN_S)
            late = f" ({end_s - seconds:.1f} s past --seconds: the AZ came back late)" if end_s > seconds + 0.5 else ""
            events.append(Event(end_s, "clients stop" + late))
            outage.join()
        if outage.ended_s is not None:
            events.append(_wait_caught_up(cluster, address, volume_id, outage))
        verification = verify(db, ledger, total, accounts)
    tally, commit_times = ledger.tally()
    return Run(
        seconds,
        clients,
        accounts,
        seed,
        sorted(events + outage.events, key=lambda e: e.at_s),
        phases(commit_times, outage.began_s, outage.ended_s, end_s),
        tally,
        checks,
        verification,
        outage.error,
    )


def _ensure_cluster(cluster: Cluster) -> None:
    existed = cluster.exists()
    if not existed:
        print(
            f"no cluster in {cluster.state_dir}: starting one (control plane, 6 storage nodes in 3 AZs, compute)",
            flush=True,
        )
    result = cluster.up()
    if result.already_running:
        print(f"using the cluster running in {cluster.state_dir}", flush=True)
    else:
        print(f"started {' '.join(result.started)} in {cluster.state_dir}", flush=True)


def _az_nodes(cluster: Cluster, wanted: str | None) -> tuple[str, list[str]]:
    storage = [r for r in cluster.records() if r.role == STORAGE_NODE and not r.spare]
    azs = sorted({r.az for r in storage})
    az = wanted or (azs[0] if azs else "")
    nodes = [r.name for r in storage if r.az == az]
    if not nodes:
        raise ClusterError(f"the cluster in {cluster.state_dir} has no AZ {az!r}; its AZs: {', '.join(azs)}")
    return az, nodes


def run(args: argparse.Namespace) -> int:
    cluster = Cluster(args.state_dir or default_state_dir())
    try:
        _ensure_cluster(cluster)
        az, nodes = _az_nodes(cluster, args.az)
        address = cluster.compute_address()
        volume_id = args.volume or cluster.default_volume() or "vol0"
        result = run_bank(cluster, args, address, volume_id, az, nodes)
    except (ClusterError, SqlError) as error:
        print(f"sixfold demo: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(report_lines(result)))
    if args.down:
        print(f"stopped: {' '.join(cluster.down())}")
    else:
        print(f"\nthe cluster keeps running in {cluster.state_dir}; to stop it:")
        print(f"  sixfold down --state-dir {cluster.state_dir}")
    return EXIT_OK if result.ok else EXIT_FAILED
