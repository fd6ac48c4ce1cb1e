"""The chaos runner: a cluster, concurrent clients, a fault schedule, checkers and a verdict.

One run of a scenario (`run_scenario`):

1. start a fresh cluster through `tools.cluster.Cluster` in `<out>/cluster`
   (control plane, a1 a2 b1 b2 c1 c2, the writer `compute` serving vol0), and
   grow vol0 to two PGs;
2. run `clients` concurrent client processes on one asyncio loop over one
   VolumeService channel. Each loops: pick a hot key (pages 0..3 of PG 0 and
   16384..16387 of PG 1 by default) and write a unique token `p{process}-{n}`
   (at offset 0, padded to 32 bytes) or read it back. The last hot page of
   each PG forms a pair that is only ever written by two-page MTRs (the same
   token to both pages, one MTR spanning both PGs) and read by two-page reads,
   so atomicity can be read off the pages. Every operation goes into a
   `tools.chaos.history.History` as invoke + ok / fail / info;
3. a baseline phase, then the scenario's fault schedule (drawn from the seed),
   then heal (clear fault files, resume, restart), a little more load, then
   final reads of every key;
4. judge: linearizability, lost writes, vanished reads (tools.chaos.checkers),
   MTR atomicity (here), the scenario's own criteria, and whether the six
   segments of each PG converge once healed;
5. write `history.jsonl`, `faults.jsonl`, `verdict.json` and copy every process
   log into `<out>/logs/`.

Outcome of an operation:
- ok: acknowledged (a write is durable; a read returned its pages);
- fail: definitely not done: INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND,
  RESOURCE_EXHAUSTED, FAILED_PRECONDITION (a fenced writer), or UNAVAILABLE
  whose sentence says "Nothing was written";
- info: unknown: any other UNAVAILABLE (no connection; sent but not durable in
  5 s, "may still become durable later"), DEADLINE_EXCEEDED, anything whose
  sentence says it "may still" happen, anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.chaos import checkers
from sixfold.tools.chaos.faults import FaultLog, Nemesis
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE, History
from sixfold.tools.chaos.scenarios import SCENARIOS, Context, Criterion, Scenario, Timing, resolve
from sixfold.tools.cluster import COMPUTE, Cluster

VOLUME = "vol0"
PAGES_PER_PG = 16384  # vol0: 64 MiB segments of 4 KiB pages
VALUE_BYTES = 32
WRITE_TIMEOUT_S = 10.0  # the writer gives up on a commit after 5 s (UNAVAILABLE), so this rarely fires
READ_TIMEOUT_S = 10.0
ERROR_BACKOFF_S = 0.05
FINAL_READ_TIMEOUT_S = 60.0
CONVERGENCE_TIMEOUT_S = 15.0
HEAL_CONNECT_TIMEOUT_S = 30.0
PREPARE_TIMEOUT_S = 60.0
DEFAULT_SECONDS = 24.0
DEFAULT_CLIENTS = 8
DEFAULT_KEYS = 8

# Op mix: single-page write, two-page MTR, single-page read, two-page read.
P_WRITE, P_PAIR_WRITE, P_READ = 0.45, 0.10, 0.35
# Share of reads that skip the writer's buffer cache: the hot pages live there, so without these
# a fault would never make a segment serve a read.
P_FROM_STORAGE = 0.5

CLIENT_CHANNEL_OPTIONS = CHANNEL_OPTIONS + [
    # The writer is restarted on the same port in some scenarios: reconnect quickly.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

FAIL_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
NOTHING_WRITTEN = "Nothing was written"
MAY_STILL = "may still"  # "... it may still become durable later"

CONVERGENCE_NOTE = (
    "a segment that missed records while the writer restarted cannot get them from the new writer; "
    "it converges only through gossip repair between segments (storage/gossip.py), so a mismatch "
    "there is reported, not judged"
)


def classify(code: grpc.StatusCode, details: str) -> str:
    """ok / fail / info for a failed call (see the module docstring)."""
    if MAY_STILL in details:  # whatever the code: the server itself says the outcome is open
        return INFO
    if code in FAIL_CODES:
        return FAIL
    if code == grpc.StatusCode.UNAVAILABLE and NOTHING_WRITTEN in details:
        return FAIL
    return INFO


def encode_value(token: str) -> bytes:
    raw = token.encode()
    assert len(raw) <= VALUE_BYTES, token
    return raw.ljust(VALUE_BYTES, b"\0")


def decode_value(data: bytes) -> str | None:
    """The token at offset 0 of a page; None for never written (all zero); `<hex>` for anything undecodable."""
    raw = bytes(data[:VALUE_BYTES])
    if not any(raw):
        return None
    text = raw.rstrip(b"\0")
    try:
        token = text.decode("ascii")
    except UnicodeDecodeError:
        return f"<{raw.hex()}>"
    if not token.isprintable() or b"\0" in text:
        return f"<{raw.hex()}>"
    return token


def hot_keys(count: int) -> tuple[list[int], list[tuple[int, int]]]:
    """(single keys, pairs): `count` pages, half at the start of PG 0, half at the start of PG 1; the last
    page of each half forms the pair written only by two-page MTRs."""
    if count < 4 or count % 2:
        raise ValueError("--keys must be an even number of at least 4")
    half = count // 2
    pg0 = list(range(half))
    pg1 = [PAGES_PER_PG + i for i in range(half)]
    return pg0[:-1] + pg1[:-1], [(pg0[-1], pg1[-1])]


# --- the workload ----------------------------------------------------------------------------


@dataclass
class OpRecord:
    """One client call, beside its history events (which are per key)."""

    kind: str  # "write" | "read"
    keys: tuple[int, ...]
    token: str | None  # a write's token
    values: tuple[str | None, ...]  # an ok read's values, per key
    invoked: float
    completed: float
    outcome: str  # ok / fail / info
    code: str  # "OK" or the status code's name
    details: str
    writer: str  # label of the writer the call went to ("old", "new", ...)
    from_storage: bool = False  # a read that skipped the writer's buffer cache (a segment served it)


class Target:
    """The writer the clients talk to (switchable: the old-writer scenario moves them)."""

    def __init__(self, address: str, label: str) -> None:
        self.address = address
        self.label = label
        self.channel = grpc.aio.insecure_channel(address, options=CLIENT_CHANNEL_OPTIONS)
        self.stub = vgrpc.VolumeServiceStub(self.channel)


class Workload:
    def __init__(self, *, clients: int, keys: int, seed: int, address: str, cluster: Cluster) -> None:
        self.clients = clients
        self.seed = seed
        self.cluster = cluster
        self.single_keys, self.pairs = hot_keys(keys)
        self.all_keys = sorted(set(self.single_keys) | {k for pair in self.pairs for k in pair})
        self.history = History()
        self.records: list[OpRecord] = []
        self.target = Target(address, COMPUTE)
        self._targets = [self.target]
        self.stop = asyncio.Event()
        self.final_values: dict[int, str | None] = {}
        self.final_read_attempts = 0
        self.origin = time.monotonic()

    encode = staticmethod(encode_value)

    async def switch(self, address: str, label: str) -> None:
        self.target = Target(address, label)
        self._targets.append(self.target)

    async def close(self) -> None:
        for target in self._targets:
            await target.channel.close()

    def log_lines(self, name: str, needle: str) -> list[str]:
        path = self.cluster.log_path(name)
        if not path.exists():
            return []
        return [line for line in path.read_text(errors="replace").splitlines() if needle in line]

    # -- operations --------------------------------------------------------------------

    async def write(self, processes: tuple[int, ...], keys: tuple[int, ...], token: str) -> str:
        target = self.target
        data = encode_value(token)
        invoked = time.monotonic()
        handles = [self.history.invoke(p, WRITE, k, token, invoked) for p, k in zip(processes, keys)]
        code, details, outcome = "OK", "", OK
        try:
            await target.stub.WritePages(
                vpb.WritePagesRequest(
                    volume_id=VOLUME, patches=[vpb.PagePatch(page_no=k, offset=0, data=data) for k in keys]
                ),
                timeout=WRITE_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            code, details = error.code().name, error.details() or ""
            outcome = classify(error.code(), details)
        except Exception as error:  # noqa: BLE001 - whatever broke, the write's fate is unknown
            code, details, outcome = type(error).__name__, str(error), INFO
        completed = time.monotonic()
        for handle in handles:
            self.history.complete(
                handle, outcome, time=completed, error=None if outcome == OK else f"{code}: {details}"[:300]
            )
        self.records.append(OpRecord(WRITE, keys, token, (), invoked, completed, outcome, code, details, target.label))
        return outcome

    async def read(
        self, processes: tuple[int, ...], keys: tuple[int, ...], from_storage: bool = False
    ) -> tuple[str, list[str | None]]:
        target = self.target
        invoked = time.monotonic()
        handles = [self.history.invoke(p, READ, k, None, invoked) for p, k in zip(processes, keys)]
        code, details, outcome = "OK", "", OK
        values: list[str | None] = []
        try:
            reply = await target.stub.ReadPages(
                vpb.ReadPagesRequest(volume_id=VOLUME, page_nos=list(keys), from_storage=from_storage),
                timeout=READ_TIMEOUT_S,
            )
            by_page = {p.page_no: p.data for p in reply.pages}
            values = [decode_value(by_page[k]) if k in by_page else f"<page {k} missing from the reply>" for k in keys]
        except grpc.aio.AioRpcError as error:
            code, details = error.code().name, error.details() or ""
            outcome = classify(error.code(), details)
        except Exception as error:  # noqa: BLE001
            code, details, outcome = type(error).__name__, str(error), INFO
        completed = time.monotonic()
        for i, handle in enumerate(handles):
            self.history.complete(
                handle,
                outcome,
                value=values[i] if outcome == OK else None,
                time=completed,
                error=None if outcome == OK else f"{code}: {details}"[:300],
            )
        self.records.append(
            OpRecord(
                READ, keys, None, tuple(values), invoked, completed, outcome, code, details, target.label, from_storage
            )
        )
        return outcome, values

    async def client(self, index: int) -> None:
        """One client process: `index` in the history, `clients + index` for the second page of a pair."""
        rng = random.Random(f"{self.seed}:client:{index}")
        process, shadow = index, self.clients + index
        n = 0
        while not self.stop.is_set():
            r = rng.random()
            if r < P_WRITE:
                n += 1
                outcome = await self.write((process,), (rng.choice(self.single_keys),), f"p{process}-{n}")
            elif r < P_WRITE + P_PAIR_WRITE:
                n += 1
                outcome = await self.write((process, shadow), rng.choice(self.pairs), f"p{process}-{n}")
            elif r < P_WRITE + P_PAIR_WRITE + P_READ:
                outcome, _ = await self.read((process,), (rng.choice(self.all_keys),), rng.random() < P_FROM_STORAGE)
            else:
                outcome, _ = await self.read((process, shadow), rng.choice(self.pairs), rng.random() < P_FROM_STORAGE)
            if outcome != OK:
                await asyncio.sleep(ERROR_BACKOFF_S * (0.5 + rng.random()))

    async def prepare(self) -> None:
        """Grow vol0 to two PGs (a write to a page of PG 1 that is not a hot key) before any fault."""
        deadline = time.monotonic() + PREPARE_TIMEOUT_S
        page = PAGES_PER_PG + 1000
        while True:
            try:
                await self.target.stub.WritePages(
                    vpb.WritePagesRequest(
                        volume_id=VOLUME, patches=[vpb.PagePatch(page_no=page, offset=0, data=b"grow")]
                    ),
                    timeout=WRITE_TIMEOUT_S,
                )
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def final_reads(self) -> bool:
        """Read every key in one call (one read point) until it succeeds; recorded like any read. The
        pages come from storage segments, not the writer's buffer cache: what the segments hold is judged."""
        processes = tuple(2 * self.clients + i for i in range(len(self.all_keys)))
        deadline = time.monotonic() + FINAL_READ_TIMEOUT_S
        while time.monotonic() < deadline:
            self.final_read_attempts += 1
            outcome, values = await self.read(processes, tuple(self.all_keys), from_storage=True)
            if outcome == OK:
                self.final_values = dict(zip(self.all_keys, values))
                return True
            await asyncio.sleep(0.5)
        return False


# --- checks ------------------------------------------------------------------------------------


def check_atomicity(workload: Workload) -> Criterion:
    """Two-page MTRs are whole: every ok two-page read, and the final read, shows one token on both pages
    (the pair's pages are only ever written together)."""
    torn = []
    pair_reads = 0
    for r in workload.records:
        if r.kind == READ and r.outcome == OK and len(r.keys) == 2:
            pair_reads += 1
            if r.values[0] != r.values[1]:
                torn.append(f"read at t={r.invoked - workload.origin:.3f}: {dict(zip(r.keys, r.values))}")
    for a, b in workload.pairs:
        if workload.final_values and workload.final_values.get(a) != workload.final_values.get(b):
            torn.append(
                f"final read: page {a} = {workload.final_values.get(a)!r}, page {b} = {workload.final_values.get(b)!r}"
            )
    mtrs = [r for r in workload.records if r.kind == WRITE and len(r.keys) == 2]
    by_outcome = {o: sum(1 for r in mtrs if r.outcome == o) for o in (OK, FAIL, INFO)}
    detail = (
        f"{len(mtrs)} two-page MTRs across both PGs (ok {by_outcome[OK]}, fail {by_outcome[FAIL]}, "
        f"info {by_outcome[INFO]}); {pair_reads} two-page reads and the final read: {len(torn)} torn"
    )
    if torn:
        detail += ": " + "; ".join(torn[:5])
    return Criterion("MTRs atomic", not torn, detail)


@dataclass
class Convergence:
    converged: bool
    detail: str
    per_pg: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)  # pg -> node -> (scl, highest)


def segment_states(writer_address: str) -> dict[str, dict[str, tuple[int, int]]]:
    """For each PG of vol0 (as the writer lists them): node -> (SCL, highest LSN) from GetSegmentState."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with grpc.insecure_channel(writer_address, options=CHANNEL_OPTIONS) as channel:
        status = (
            vgrpc.VolumeServiceStub(channel)
            .GetVolumeStatus(vpb.GetVolumeStatusRequest(volume_id=VOLUME), timeout=5)
            .status
        )
    for pg in status.protection_groups:
        states: dict[str, tuple[int, int]] = {}
        for seg in pg.segments:
            with grpc.insecure_channel(seg.address, options=CHANNEL_OPTIONS) as channel:
                try:
                    reply = pb_grpc.StorageServiceStub(channel).GetSegmentState(
                        pb.GetSegmentStateRequest(segment_id=seg.segment_id), timeout=3
                    )
                    states[seg.node_id] = (reply.state.scl, reply.state.highest_lsn)
                except grpc.RpcError:
                    states[seg.node_id] = (-1, -1)
        out[f"pg{pg.pg_index}"] = states
    return out


def check_convergence(writer_address: str, timeout_s: float = CONVERGENCE_TIMEOUT_S) -> Convergence:
    """Poll until the six segments of every PG agree on SCL and highest LSN (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, dict[str, tuple[int, int]]] = {}
    while True:
        try:
            states = segment_states(writer_address)
        except grpc.RpcError as error:
            if time.monotonic() > deadline:
                return Convergence(False, f"could not ask the writer: {error}")
            time.sleep(0.5)
            continue
        agree = bool(states) and all(len(set(s.values())) == 1 for s in states.values())
        if agree or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    parts = []
    for pg, s in states.items():
        if len(set(s.values())) == 1:
            scl, highest = next(iter(s.values()))
            parts.append(f"{pg}: all {len(s)} at SCL {scl} (highest {highest})")
        else:
            parts.append(f"{pg}: " + ", ".join(f"{n} {scl}/{hi}" for n, (scl, hi) in sorted(s.items())))
    return Convergence(agree, "; ".join(parts), states)


# --- one run -----------------------------------------------------------------------------------


@dataclass
class RunConfig:
    scenario: str
    out_dir: Path
    seed: int
    seconds: float = DEFAULT_SECONDS
    clients: int = DEFAULT_CLIENTS
    keys: int = DEFAULT_KEYS
    log: Callable[[str], None] = print

    def timing(self) -> Timing:
        s = self.seconds
        return Timing(baseline_s=max(2.0, 0.2 * s), fault_s=max(4.0, 0.5 * s), post_s=max(2.0, 0.3 * s))


@dataclass
class ScenarioResult:
    scenario: str
    verdict: str  # PASS / FAIL
    seed: int
    out_dir: str
    operations: int = 0
    ok: int = 0
    fail: int = 0
    info: int = 0
    lost: int | None = None
    linearizable: str = "unknown"  # yes / no / unknown
    vanished: int | None = None
    resumed_s: float | None = None
    resumed_after: str = ""
    converged: str = "-"
    criteria: list[Criterion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _resumed(workload: Workload, at: float) -> float | None:
    """Seconds from `at` until a write invoked at or after it was acknowledged."""
    done = [r.completed for r in workload.records if r.kind == WRITE and r.outcome == OK and r.invoked >= at]
    return min(done) - at if done else None


def _writer_restarted(nemesis: Nemesis) -> bool:
    return any(
        (e.target == COMPUTE and e.action in ("kill", "stop", "start")) or e.action == "second-writer"
        for e in nemesis.log.events
    )


async def _drive(
    cfg: RunConfig, scenario: Scenario, cluster: Cluster, nemesis: Nemesis, holder: dict[str, Any]
) -> None:
    timing = cfg.timing()
    rng = random.Random(f"{cfg.seed}:{scenario.name}")
    workload = Workload(
        clients=cfg.clients, keys=cfg.keys, seed=cfg.seed, address=cluster.compute_address(), cluster=cluster
    )
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
        await asyncio.to_thread(nemesis.wait_writer_connected, workload.target.address, HEAL_CONNECT_TIMEOUT_S)
        ctx.mark("load_start")
        say(f"load: {cfg.clients} clients on keys {workload.all_keys} (pairs {workload.pairs})")
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
        ctx.mark("clients_stopped")
        say(f"clients stopped after {len(workload.records)} calls; final reads")
        if not await workload.final_reads():
            ctx.notes.append(f"final reads did not succeed within {FINAL_READ_TIMEOUT_S:g} s")
        ctx.mark("final_read")
        say("checking segment convergence")
        holder["convergence"] = await asyncio.to_thread(check_convergence, workload.target.address)
    finally:
        await workload.close()


def _judge(
    cfg: RunConfig, scenario: Scenario, result: ScenarioResult, holder: dict[str, Any], nemesis: Nemesis
) -> None:
    workload: Workload = holder["workload"]
    ctx: Context = holder["ctx"]
    history = workload.history
    counts = checkers.summary(history)
    result.operations, result.ok, result.fail, result.info = (
        counts["operations"],
        counts[OK],
        counts[FAIL],
        counts[INFO],
    )
    result.details["counts"] = counts
    cfg.log(f"  checking {counts['operations']} operations")
    lin = checkers.check_linearizable(history)
    lost = checkers.check_lost_writes(history)
    vanished = checkers.check_no_vanished_reads(history)
    result.linearizable = {checkers.LINEARIZABLE: "yes", checkers.NOT_LINEARIZABLE: "no"}.get(lin.verdict, "unknown")
    result.lost = lost.lost_writes
    result.vanished = vanished.vanished
    final_ok = bool(workload.final_values)
    criteria = [
        Criterion(
            "final reads",
            final_ok,
            f"every key read after heal in {workload.final_read_attempts} attempt(s)"
            if final_ok
            else "the volume could not be read after heal",
        ),
        Criterion(
            "linearizable",
            False if lin.verdict == checkers.NOT_LINEARIZABLE else (True if lin.ok else None),
            f"{lin.verdict}: {lin.operations} operations on {lin.keys} keys, {lin.configurations} "
            f"configurations; {lin.info_writes_unobserved} unobserved info writes dropped"
            + ("; " + " | ".join(lin.explanations) if lin.explanations else ""),
        ),
        Criterion(
            "nothing acknowledged lost",
            lost.ok and not lost.keys_without_final_read,
            f"{lost.writes_acknowledged} acknowledged writes, {lost.writes_judged} judged by "
            f"{lost.final_reads} final reads: {lost.lost_writes} lost"
            + (
                f"; keys without a final read: {list(lost.keys_without_final_read)}"
                if lost.keys_without_final_read
                else ""
            )
            + ("; " + " | ".join(lost.explanations) if lost.explanations else ""),
        ),
        Criterion(
            "no vanished reads",
            vanished.ok,
            f"{vanished.reads} ok reads: {vanished.vanished} went back to an older value"
            + ("; " + " | ".join(vanished.explanations) if vanished.explanations else ""),
        ),
        check_atomicity(workload),
    ]
    try:
        criteria += scenario.judge(ctx)
    except Exception as error:  # noqa: BLE001 - a judge that cannot judge is a failed criterion
        criteria.append(Criterion(f"{scenario.name} criteria", False, f"could not judge: {error!r}"))
    convergence: Convergence | None = holder.get("convergence")
    restarted = _writer_restarted(nemesis)
    if convergence is None:
        result.converged = "-"
    elif convergence.converged:
        result.converged = "yes"
        criteria.append(Criterion("segments converge once healed", True, convergence.detail))
    elif restarted:
        result.converged = "no*"
        criteria.append(
            Criterion(
                "segments converge once healed",
                None,
                f"{convergence.detail} (not judged: the writer was restarted in this scenario; {CONVERGENCE_NOTE})",
            )
        )
        ctx.notes.append(f"* segments did not converge: {CONVERGENCE_NOTE}")
    else:
        result.converged = "no"
        criteria.append(Criterion("segments converge once healed", False, convergence.detail))
    if convergence is not None:
        result.details["segments"] = convergence.per_pg
    # When writes resumed: after the fault where the system should stay available, after the heal otherwise.
    points = list(ctx.resume_points)
    if not points:
        anchor = "heal_start" if not scenario.writes_expected_during_fault else "fault"
        if anchor in ctx.marks:
            points = [("heal" if anchor == "heal_start" else "fault", ctx.marks[anchor])]
    resumes = [(what, _resumed(workload, at)) for what, at in points]
    if resumes:
        worst = max(resumes, key=lambda p: math.inf if p[1] is None else p[1])
        result.resumed_s = worst[1]
        result.resumed_after = worst[0] + (f" (worst of {len(resumes)})" if len(resumes) > 1 else "")
        result.details["resumed"] = [{"after": what, "seconds": s} for what, s in resumes]
    result.criteria = criteria
    result.notes += ctx.notes
    result.details["marks"] = {k: round(v - workload.origin, 3) for k, v in ctx.marks.items()}
    result.details["scenario"] = {
        k: (v if isinstance(v, (int, float, str, bool, list, dict, type(None))) else repr(v))
        for k, v in ctx.data.items()
    }
    result.details["checkers"] = {
        "linearizable": {
            "verdict": lin.verdict,
            "operations": lin.operations,
            "bad_keys": list(lin.bad_keys),
            "unknown_keys": list(lin.unknown_keys),
            "explanations": list(lin.explanations),
        },
        "lost_writes": {
            "lost": lost.lost_writes,
            "acknowledged": lost.writes_acknowledged,
            "explanations": list(lost.explanations),
        },
        "vanished_reads": {"vanished": vanished.vanished, "explanations": list(vanished.explanations)},
    }
    result.verdict = "FAIL" if any(c.ok is False for c in criteria) else "PASS"


def run_scenario(cfg: RunConfig) -> ScenarioResult:
    """Run one scenario end to end on its own cluster in `cfg.out_dir`; never raises for a failed run."""
    scenario = resolve(cfg.scenario)
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = ScenarioResult(scenario.name, "FAIL", cfg.seed, str(out))
    cfg.log(f"== {scenario.name}: {scenario.does}; must hold: {scenario.must}")
    cfg.log(f"   seed {cfg.seed}, {cfg.clients} clients, {cfg.keys} keys, ~{cfg.seconds:g} s of load; output {out}")
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
            _save(cfg, result, holder, cluster, fault_log, started)
    return result


def _save(
    cfg: RunConfig,
    result: ScenarioResult,
    holder: dict[str, Any],
    cluster: Cluster,
    fault_log: FaultLog,
    started: float,
) -> None:
    out = cfg.out_dir
    result.seconds = round(time.monotonic() - started, 1)
    workload: Workload | None = holder.get("workload")
    origin = workload.origin if workload else started
    if workload is not None:
        workload.history.to_jsonl(out / "history.jsonl")
    fault_log.to_jsonl(out / "faults.jsonl", origin)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    if cluster.exists():
        for name, path in cluster.log_files().items():
            if path.exists():
                shutil.copyfile(path, logs / f"{name}.log")
    (out / "verdict.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    cfg.log(f"  {result.scenario}: {result.verdict} ({result.seconds:.0f} s); history, logs and verdict in {out}")
    for c in result.criteria:
        mark = {True: "ok  ", False: "FAIL", None: "note"}[c.ok]
        cfg.log(f"    {mark} {c.name}: {c.detail[:400]}")
    for note in result.notes:
        cfg.log(f"    note: {note}")


# --- the verdict table ---------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "ops",
    "ok",
    "fail",
    "info",
    "lost",
    "linearizable",
    "vanished",
    "resumed",
    "converged",
    "verdict",
)


def _row(r: ScenarioResult) -> list[str]:
    resumed = "-" if r.resumed_after == "" else ("never" if r.resumed_s is None else f"{r.resumed_s:.2f}s")
    return [
        r.scenario,
        str(r.operations),
        str(r.ok),
        str(r.fail),
        str(r.info),
        "-" if r.lost is None else str(r.lost),
        r.linearizable,
        "-" if r.vanished is None else str(r.vanished),
        resumed,
        r.converged,
        r.verdict,
    ]


def table(results: list[ScenarioResult]) -> str:
    rows = [list(COLUMNS)] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i in (0, len(row) - 1) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    footnotes = []
    if any(r.converged == "no*" for r in results):
        footnotes.append(f"no* = not converged, not judged: the writer restarted in the scenario; {CONVERGENCE_NOTE}.")
    footnotes.append(
        "resumed = seconds from the fault until a write issued after it was acknowledged (from the "
        "heal where writes cannot go on: kill-az-plus-one, kill-four; from the kill or stop of the writer; "
        "from the switch to the new writer); the worst one where there were several."
    )
    for r in results:
        if r.error:
            footnotes.append(f"{r.scenario}: {r.error}")
        for c in r.criteria:
            if c.ok is False:
                footnotes.append(f"{r.scenario}: FAILED {c.name}: {c.detail[:300]}")
    return "\n".join(lines + [""] + footnotes)


def scenario_names() -> list[str]:
    return list(SCENARIOS)


__all__ = [
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
