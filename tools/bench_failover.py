"""`sixfold bench failover`: SIGKILL the writer, again and again, under a write load; how long until the
cluster endpoint acknowledges a commit again, and whether any acknowledged insert was lost.

A cluster of its own (control plane, six storage nodes, the writer `compute` and read replicas `replica1`,
`replica2`) is started through the launcher in a temporary directory and always stopped at the end.
`--clients` threads, each with a `SqlClient` on the cluster endpoint (compute/endpoint_client.py: it
resolves the writer again after UNAVAILABLE, a deadline or a read replica's refusal), insert rows with
unique ids; a failed insert is sent again with the same id until it succeeds, or until a retry finds the
id taken (the failed call had committed after all: counted apart, not as acknowledged).

    baseline  a manual ClusterService.Failover of the live writer (the control plane's own time, and the
              time from the call to the first commit acknowledged by the new writer), and the commit
              latency of the load (p50 of the inserts that succeeded at once).
    rounds    `--rounds` times: wait until the writer and both readers are live and the load is flowing,
              `--settle` s more, then SIGKILL the writer the control plane names (its PID from the
              launcher's records) and measure the time from the kill to the first commit acknowledged by
              another instance, and to the cluster endpoint resolving to another instance; the control
              plane's log gives the detector's figures (the writer's silence when it was declared gone, and
              the promotion after that). The killed instance is started again by the launcher and rejoins
              as a reader, so every round has two readers to promote.
    check     the load stops; every acknowledged id is looked for in the table (paged SELECTs through the
              cluster endpoint); rows present, acknowledged, committed-though-failed and missing are printed.

The aim (issue 15) is a failover under 2 s, kill to first commit; printed, never asserted. A missing
acknowledged insert, or a round with no commit within --round-timeout, fails the run (exit status 1)
after the report is printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sixfold.tools.bench_replica import ms, percentile, progress

CALL_TIMEOUT_S = 5.0
RETRY_BACKOFF_S = 0.02
ID_STRIDE = 1_000_000_000  # client k's ids are (k + 1) * ID_STRIDE + 1, 2, ...
SETTLE_TIMEOUT_S = 60.0
LOG_WAIT_S = 3.0  # for the control plane's failover line to reach its log
POLL_S = 0.005
PAGE_ROWS = 5_000
CREATE = "CREATE TABLE IF NOT EXISTS acked(id INTEGER PRIMARY KEY, client INTEGER NOT NULL, seq INTEGER NOT NULL)"
INSERT = "INSERT INTO acked(id, client, seq) VALUES (?, ?, ?)"
DETECTOR_LINE = re.compile(
    r"failover: writer (\S+) gone \(no heartbeat for (?:(\d+) ms|[^)]*)\); promoted (\S+) to writer at generation "
    r"(\d+) in (\d+) ms after detection"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=10, help="writers to SIGKILL, one after another (default 10)")
    parser.add_argument("--clients", type=int, default=4, help="inserting client threads (default 4)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of steady load before each kill (default 1)")
    parser.add_argument(
        "--round-timeout", type=float, default=30.0, help="seconds a round waits for a commit (default 30)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster's state directory")


@dataclass(frozen=True)
class Ack:
    at: float  # perf_counter when the reply came
    address: str  # the instance that acknowledged it
    latency: float  # of the call that succeeded
    first_try: bool


class Load:
    """Client threads inserting unique ids through the cluster endpoint, retrying until each is settled."""

    def __init__(self, control_plane: str, volume_id: str, clients: int) -> None:
        self.control_plane = control_plane
        self.volume_id = volume_id
        self.acks: list[Ack] = []  # appended by the threads (list.append is atomic)
        self.acked_ids: list[int] = []
        self.found_on_retry: list[int] = []  # a retry found the id taken: the failed call had committed
        self.unsettled: list[int] = []  # failed with an unknown outcome when the load stopped
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), name=f"bench-failover-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(CALL_TIMEOUT_S * 3)

    def _client(self, index: int) -> None:
        from sixfold.compute.endpoint_client import Endpoint
        from sixfold.compute.sql_client import SqlClient, SqlError

        with SqlClient(Endpoint(self.control_plane), self.volume_id, timeout_s=CALL_TIMEOUT_S) as db:
            seq = 0
            while not self.stop.is_set():
                seq += 1
                row_id, failed = (index + 1) * ID_STRIDE + seq, False
                while True:
                    if self.stop.is_set():
                        if failed:
                            self.unsettled.append(row_id)
                        return
                    sent = time.perf_counter()
                    try:
                        db.execute(INSERT, [row_id, index, seq])
                    except SqlError as error:
                        taken = "UNIQUE constraint" in error.details or "PRIMARY KEY" in error.details
                        if taken and failed:
                            self.found_on_retry.append(row_id)
                            break
                        self.errors[error.code.name] += 1
                        if taken or error.code.name == "INVALID_ARGUMENT":
                            break  # not this bench's to retry: counted
                        failed = True
                        time.sleep(RETRY_BACKOFF_S)
                        continue
                    done = time.perf_counter()
                    self.acks.append(Ack(done, db.address, done - sent, not failed))
                    self.acked_ids.append(row_id)
                    break

    def first_ack(self, after: float, not_from: str, timeout_s: float) -> Ack | None:
        """The first acknowledgement after `after` by an instance other than `not_from`."""
        deadline, index = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline:
            acks = self.acks[index:]
            index += len(acks)
            found = [a for a in acks if a.at > after and a.address != not_from]
            if found:
                return min(found, key=lambda a: a.at)
            time.sleep(POLL_S)
        return None


@dataclass
class Round:
    killed: str
    new_writer: str = "?"
    kill_to_commit_s: float | None = None
    endpoint_switch_s: float | None = None
    silence_ms: float | None = None  # the detector's: no heartbeat for this long when declared gone
    promote_ms: float | None = None  # the detector's: detection -> promoted
    restart_s: float = float("nan")


@dataclass
class Baseline:
    took_ms: float = float("nan")  # the control plane's own time for the manual failover
    to_commit_s: float | None = None
    refused: str = ""


@dataclass
class Report:
    rounds: list[Round] = field(default_factory=list)
    baseline: Baseline = field(default_factory=Baseline)
    rows: int = 0
    missing: list[int] = field(default_factory=list)


def _writer(control_plane: str) -> tuple[str, str]:
    from sixfold.tools.cluster_instances import list_instances

    reply = list_instances(control_plane, timeout_s=5.0)
    return reply.writer_id, next((i.address for i in reply.instances if i.instance_id == reply.writer_id), "")


def _settled(control_plane: str, load: Load, instances: int) -> None:
    """Until the control plane lists a writer and `instances` live instances, no failover under way, every
    reader heard from the writer lately, and the load acknowledged a commit since."""
    from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
    from sixfold.tools.cluster_instances import InstanceCallError, list_instances

    deadline, seen = time.monotonic() + SETTLE_TIMEOUT_S, "nothing yet"
    while time.monotonic() < deadline:
        try:
            reply = list_instances(control_plane, timeout_s=2.0)
        except InstanceCallError as error:
            seen = str(error)
            time.sleep(0.05)
            continue
        live = [i for i in reply.instances if i.alive]
        readers = [i for i in live if i.role == cl_pb.COMPUTE_ROLE_READER]
        following = all(v.applied_vdl > 0 and v.last_heard_ms < 1000 for r in readers for v in r.volumes) and all(
            r.volumes for r in readers
        )
        seen = f"writer {reply.writer_id or '-'}, {len(live)} live, promoting {reply.promoting_id or '-'}"
        if reply.writer_id and not reply.promoting_id and len(live) >= instances and following:
            writer = next(i.address for i in reply.instances if i.instance_id == reply.writer_id)
            if load.first_ack(time.perf_counter(), "", 10.0) is None or not writer:
                raise SystemExit(f"the load acknowledged nothing for 10 s with writer {reply.writer_id} listed")
            return
        time.sleep(0.05)
    raise SystemExit(f"the cluster did not settle within {SETTLE_TIMEOUT_S:g} s ({seen})")


def _watch_endpoint(control_plane: str, old_writer: str, started: float, out: list[float], stop: threading.Event):
    """Poll ResolveEndpoint('cluster') until it names another instance; the time since `started`."""
    from sixfold.tools.cluster_instances import InstanceCallError, resolve_endpoint

    while not stop.is_set():
        try:
            reply = resolve_endpoint(control_plane, "cluster")
        except InstanceCallError:
            reply = None
        if reply is not None and reply.instance_ids and reply.instance_ids[0] != old_writer:
            out.append(time.perf_counter() - started)
            return
        time.sleep(POLL_S)


def _detector_line(log: Path, offset: int, old_writer: str) -> re.Match[str] | None:
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        with open(log, errors="replace") as f:
            f.seek(offset)
            for match in DETECTOR_LINE.finditer(f.read()):
                if match.group(1) == old_writer:
                    return match
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _kill_round(cluster: Any, load: Load, args: argparse.Namespace, number: int) -> Round:
    from sixfold.tools.cluster import CONTROL_PLANE

    control_plane = cluster.control_plane_address()
    _settled(control_plane, load, 3)
    time.sleep(args.settle)
    old, address = _writer(control_plane)
    result = Round(old)
    log = cluster.log_path(CONTROL_PLANE)
    offset = log.stat().st_size
    switched: list[float] = []
    stop = threading.Event()
    killed_at = time.perf_counter()
    watcher = threading.Thread(target=_watch_endpoint, args=(control_plane, old, killed_at, switched, stop))
    try:
        pid = cluster.kill(old)
        watcher.start()
        ack = load.first_ack(killed_at, address, args.round_timeout)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    if ack is not None:
        result.kill_to_commit_s = ack.at - killed_at
    result.endpoint_switch_s = switched[0] if switched else None
    match = _detector_line(log, offset, old)
    if match is not None:
        result.new_writer = match.group(3)
        result.silence_ms = float(match.group(2)) if match.group(2) else None
        result.promote_ms = float(match.group(5))
    started = time.perf_counter()
    cluster.start(old)
    result.restart_s = time.perf_counter() - started
    commit = f"first commit after {_ms_or_dash(result.kill_to_commit_s)}" if ack else "NO commit"
    progress(
        f"  round {number}: SIGKILLed {old} (PID {pid}); {commit}, new writer {result.new_writer}; "
        f"{old} restarted as a reader in {result.restart_s:.1f} s"
    )
    return result


def _manual_failover(cluster: Any, load: Load, args: argparse.Namespace) -> Baseline:
    from sixfold.tools.cluster_instances import InstanceCallError, failover

    control_plane = cluster.control_plane_address()
    baseline = Baseline()
    for _ in range(3):
        _settled(control_plane, load, 3)
        time.sleep(args.settle)
        old, address = _writer(control_plane)
        started = time.perf_counter()
        try:
            reply = failover(control_plane)
        except InstanceCallError as error:
            baseline.refused = str(error)
            time.sleep(1.0)
            continue
        baseline.refused = ""
        baseline.took_ms = float(reply.took_ms)
        ack = load.first_ack(started, address, args.round_timeout)
        baseline.to_commit_s = ack.at - started if ack else None
        progress(
            f"  manual failover {old} -> {reply.new_writer_id}: {reply.took_ms} ms at the control plane, first "
            + (f"commit on the new writer after {_ms_or_dash(baseline.to_commit_s)}" if ack else "commit: NONE")
        )
        break
    return baseline


def _check(control_plane: str, volume_id: str, load: Load, report: Report) -> None:
    from sixfold.compute.endpoint_client import Endpoint
    from sixfold.compute.sql_client import SqlClient, SqlError

    present: set[int] = set()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    with SqlClient(Endpoint(control_plane), volume_id, timeout_s=CALL_TIMEOUT_S * 2) as db:
        last = 0
        while True:
            try:
                rows = db.execute("SELECT id FROM acked WHERE id > ? ORDER BY id LIMIT ?", [last, PAGE_ROWS]).rows
            except SqlError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            if not rows:
                break
            present.update(int(r[0]) for r in rows if isinstance(r[0], int))
            last = int(rows[-1][0])  # type: ignore[arg-type]
    report.rows = len(present)
    report.missing = sorted(set(load.acked_ids) - present)


def _ms_or_dash(seconds: float | None) -> str:
    return f"{ms(seconds):,.0f} ms" if seconds is not None else "-"


def print_report(report: Report, load: Load, args: argparse.Namespace) -> bool:
    """The report; True if nothing failed (no lost insert, every round committed)."""
    print(f"\nfailover: {len(report.rounds)} rounds, {args.clients} clients inserting through the cluster endpoint")
    header = (
        f"{'round':>5} | {'killed':>9} {'new writer':>10} | {'kill->commit':>12} {'endpoint':>9} | "
        f"{'silence':>8} {'promote':>8} | {'restart':>7}"
    )
    print(header)
    print("-" * len(header))
    for n, r in enumerate(report.rounds, 1):
        silence = f"{r.silence_ms:,.0f} ms" if r.silence_ms is not None else "-"
        promote = f"{r.promote_ms:,.0f} ms" if r.promote_ms is not None else "-"
        print(
            f"{n:>5} | {r.killed:>9} {r.new_writer:>10} | {_ms_or_dash(r.kill_to_commit_s):>12} "
            f"{_ms_or_dash(r.endpoint_switch_s):>9} | {silence:>8} {promote:>8} | {r.restart_s:>5.1f} s"
        )
    times = [r.kill_to_commit_s for r in report.rounds if r.kill_to_commit_s is not None]
    failed = len(report.rounds) - len(times)
    p50, worst = percentile(times, 0.5), max(times, default=float("nan"))
    print(
        f"kill -> first acknowledged commit: p50 {ms(p50):,.0f} ms, max {ms(worst):,.0f} ms over {len(times)} rounds"
        + (f", {failed} rounds with NO commit within {args.round_timeout:g} s" if failed else "")
        + " (aim < 2 s; printed, not asserted)"
    )
    switches = [r.endpoint_switch_s for r in report.rounds if r.endpoint_switch_s is not None]
    silences = [r.silence_ms for r in report.rounds if r.silence_ms is not None]
    promotes = [r.promote_ms for r in report.rounds if r.promote_ms is not None]
    print(
        f"kill -> cluster endpoint resolves to the new writer: p50 {ms(percentile(switches, 0.5)):,.0f} ms; "
        f"detector (control plane log): writer silent p50 {percentile(silences, 0.5):,.0f} ms when declared gone, "
        f"then promoted in p50 {percentile(promotes, 0.5):,.0f} ms (max {max(promotes, default=float('nan')):,.0f})"
    )
    base = report.baseline
    latency = percentile([a.latency for a in load.acks if a.first_try], 0.5)
    if base.refused:
        print(f"baseline: the manual failover was refused: {base.refused}")
    else:
        print(
            f"baseline: manual ClusterService.Failover of the live writer: {base.took_ms:,.0f} ms at the control "
            f"plane, first commit on the new writer after {_ms_or_dash(base.to_commit_s)}; commit latency p50 "
            f"{ms(latency):.1f} ms"
        )
    if base.to_commit_s and times:
        print(
            f"ratios: kill->commit p50 / manual failover->commit {p50 / base.to_commit_s:.2f}x; "
            f"/ commit latency p50 {p50 / latency:,.0f}x"
        )
    errors = ", ".join(f"{code} {n}" for code, n in load.errors.most_common()) or "none"
    print(
        f"writes: {len(load.acked_ids):,} acknowledged, {report.rows:,} rows in the table, "
        f"{len(report.missing)} acknowledged missing, {len(load.found_on_retry)} committed though their call "
        f"failed (found on retry), {len(load.unsettled)} unsettled at the stop; failed calls: {errors}"
    )
    unexplained = report.rows - len(load.acked_ids) - len(load.found_on_retry) + len(report.missing)
    if unexplained:
        print(f"  {unexplained} rows present were neither acknowledged nor found on retry (unsettled calls)")
    if report.missing:
        print(f"LOST: acknowledged ids not in the table: {report.missing[:20]}")
    return not report.missing and not failed


def bench_failover(args: argparse.Namespace) -> int:
    from sixfold.tools.cluster import Cluster

    if args.rounds < 1 or args.clients < 1 or args.settle < 0 or args.round_timeout <= 0:
        raise SystemExit("--rounds and --clients must be at least 1, --settle at least 0, --round-timeout above 0")
    workdir = tempfile.mkdtemp(prefix="sixfold-bench-failover-")
    state_dir = os.path.join(workdir, "cluster")
    print(
        f"sixfold bench failover: a cluster with 2 read replicas, {args.clients} clients inserting through the "
        f"cluster endpoint; a manual failover, then {args.rounds} rounds of SIGKILL the writer, wait for a commit, "
        f"restart it as a reader; files in {workdir}\nmachine: {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    report = Report()
    load: Load | None = None
    try:
        with Cluster(state_dir) as cluster:
            started = time.perf_counter()
            cluster.up(replicas=2)
            control_plane, volume_id = cluster.control_plane_address(), cluster.default_volume() or "vol0"
            progress(f"cluster up in {time.perf_counter() - started:.1f} s (writer compute, replica1, replica2)")
            from sixfold.compute.endpoint_client import Endpoint
            from sixfold.compute.sql_client import SqlClient

            with SqlClient(Endpoint(control_plane), volume_id, timeout_s=CALL_TIMEOUT_S * 2) as db:
                db.execute(CREATE)
            load = Load(control_plane, volume_id, args.clients)
            load.start()
            try:
                progress("baseline: a manual failover of the live writer")
                report.baseline = _manual_failover(cluster, load, args)
                progress(f"{args.rounds} rounds: SIGKILL the writer")
                for n in range(1, args.rounds + 1):
                    report.rounds.append(_kill_round(cluster, load, args, n))
                _settled(control_plane, load, 3)
            finally:
                load.join()
            progress("checking every acknowledged insert")
            _check(control_plane, volume_id, load, report)
            progress("stopping the cluster")
    finally:
        if args.keep:
            print(f"kept {workdir} (cluster logs under {os.path.join(state_dir, 'logs')})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    assert load is not None
    return 0 if print_report(report, load, args) else 1
