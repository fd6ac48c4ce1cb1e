"""What a chaos scenario is, what it sees of its run, and the helpers its judges share.

A scenario has two parts:
- `inject(ctx)`: the fault schedule, run while the clients keep going. It draws
  every choice (victims, moments) from `ctx.rng`, which is seeded from the run's
  seed, runs blocking fault actions through `ctx.do(...)` (a worker thread), sets
  marks (`ctx.mark("fault")`: the fault is in force) and returns when the fault
  phase is over. The runner then heals everything (`Nemesis.heal`).
- `start(ctx)` (optional): once the workload is prepared, before the load: the scenario's own
  loads and probes beside the clients (`workload_factory`, optional, makes the clients' workload);
- `settle(ctx)` (optional): once the clients stopped and vol0's keys were read
  back, the scenario's own reads and writes against the healed cluster;
- `judge(ctx)`: the scenario's own criteria, beyond the ones every run gets
  (linearizable, nothing acknowledged lost, no vanished reads, multi-page MTRs
  atomic, final reads succeed, segments converge; a scenario that `rewinds`
  vol0 judges its reads itself instead of the first three).
Anything a scenario starts beside the clients (a second load) it stops in a
`ctx.closers` entry, which the runner awaits when it stops the clients.

Every time is `time.monotonic()`; windows are measured between marks. The
scenarios themselves live in the `scenarios_*` modules, one per family of
faults; `scenarios.py` is their registry.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sixfold.storage.security import transport
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc

if TYPE_CHECKING:
    from sixfold.tools.chaos.faults import Nemesis
    from sixfold.tools.cluster import Cluster

AZS = ("a", "b", "c")
WRITE_GAP_MAX_S = 5.0  # "writes go on": no stretch without an acknowledged write longer than this


@dataclass
class Criterion:
    name: str
    ok: bool | None  # None: reported, not judged
    detail: str = ""


@dataclass
class Timing:
    """The phases of one run (times from time.monotonic())."""

    baseline_s: float
    fault_s: float
    post_s: float


@dataclass
class Context:
    """What a scenario sees of its run."""

    name: str
    rng: random.Random
    cluster: Cluster
    nemesis: Nemesis
    workload: Any  # tools.chaos.runner.Workload
    timing: Timing
    out_dir: Any
    marks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    resume_points: list[tuple[str, float]] = field(default_factory=list)  # (what, time) writes should resume after
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run as the clients stop
    log: Callable[[str], None] = print

    def mark(self, name: str, at: float | None = None) -> float:
        self.marks[name] = time.monotonic() if at is None else at
        return self.marks[name]

    async def do(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking fault action in a worker thread; the clients keep going meanwhile."""
        return await asyncio.to_thread(fn, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def nodes(self) -> list[str]:
        return self.cluster.node_names()

    def az_nodes(self, az: str) -> list[str]:
        return [n for n in self.nodes() if n.startswith(az)]

    def window(self, start: str, end: str) -> tuple[float, float]:
        return self.marks[start], self.marks[end]

    def base_nodes(self) -> list[str]:
        """Storage nodes that are not spares."""
        return [r.name for r in self.cluster.records() if r.name in self.nodes() and not r.spare]

    def spares(self, az: str) -> list[str]:
        return [r.name for r in self.cluster.records() if r.spare and r.az == az]

    def geometry(self, volume: str | None = None) -> cp_pb2.VolumeGeometry:
        """The control plane's geometry of vol0 (or `volume`)."""
        with transport.channel(self.cluster.control_plane_address(), ()) as channel:
            return (
                cp_grpc.ControlPlaneServiceStub(channel)
                .DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id=volume or self.nemesis.volume), timeout=5)
                .geometry
            )


@dataclass(frozen=True)
class Scenario:
    name: str
    does: str  # the fault, one line
    must: str  # what must hold, one line
    inject: Callable[[Context], Awaitable[None]]
    judge: Callable[[Context], list[Criterion]] = lambda ctx: []
    writes_expected_during_fault: bool = True  # where "resumed" is measured from: the fault, or the heal
    cluster_options: dict[str, Any] = field(default_factory=dict)  # for Cluster.up()
    # After the final reads, before convergence: the scenario's own reads and writes on the healed cluster.
    settle: Callable[[Context], Awaitable[None]] | None = None
    # vol0 is moved back in time (backtrack): it is not a register in real time, so linearizability, lost
    # writes and vanished reads of its history are n/a; the scenario judges its reads by LSN instead.
    rewinds: bool = False
    # The clients' workload, made by the scenario instead of the runner (it gets the RunConfig and the
    # Cluster): e.g. clients that reach the writer through the cluster endpoint, wherever it moves.
    workload_factory: Callable[[Any, Cluster], Any] | None = None
    # Once the workload is prepared, before the load starts: the scenario's own loads and probes beside the
    # clients (stopped in a `ctx.closers` entry).
    start: Callable[[Context], Awaitable[None]] | None = None


# --- helpers over the workload's records ------------------------------------------------------


def ops(
    ctx: Context,
    kind: str | None = None,
    outcome: str | None = None,
    *,
    invoked_from: float | None = None,
    invoked_to: float | None = None,
    completed_from: float | None = None,
    completed_to: float | None = None,
    writer: str | None = None,
) -> list[Any]:
    out = []
    for r in ctx.workload.records:
        if kind is not None and r.kind != kind:
            continue
        if outcome is not None and r.outcome != outcome:
            continue
        if writer is not None and r.writer != writer:
            continue
        if invoked_from is not None and r.invoked < invoked_from:
            continue
        if invoked_to is not None and r.invoked > invoked_to:
            continue
        if completed_from is not None and r.completed < completed_from:
            continue
        if completed_to is not None and r.completed > completed_to:
            continue
        out.append(r)
    return out


def longest_write_gap(ctx: Context, start: float, end: float) -> float:
    """The longest stretch within [start, end] in which no write completed ok."""
    times = sorted(r.completed for r in ops(ctx, "write", "ok", completed_from=start, completed_to=end))
    edges = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def goes_on(
    ctx: Context, start: str = "fault", end: str = "heal_start", *, reads: bool = True, writes: bool = True
) -> list[Criterion]:
    """Acknowledged writes (and reads) kept coming while the fault was in force."""
    t0, t1 = ctx.window(start, end)
    out = []
    if writes:
        acked = ops(ctx, "write", "ok", invoked_from=t0, completed_to=t1)
        gap = longest_write_gap(ctx, t0, t1)
        out.append(
            Criterion(
                "writes go on",
                bool(acked) and gap <= WRITE_GAP_MAX_S,
                f"{len(acked)} writes acknowledged during the {t1 - t0:.1f} s fault; "
                f"longest stretch without one {gap:.2f} s (at most {WRITE_GAP_MAX_S:g} s)",
            )
        )
    if reads:
        read_ok = ops(ctx, "read", "ok", invoked_from=t0, completed_to=t1)
        from_storage = [r for r in read_ok if r.from_storage]
        out.append(
            Criterion(
                "reads go on",
                bool(from_storage),
                f"{len(read_ok)} reads answered during the fault, {len(from_storage)} of them by a "
                f"storage segment (not the writer's buffer cache)",
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def judge_goes_on(ctx: Context) -> list[Criterion]:
    return goes_on(ctx)
