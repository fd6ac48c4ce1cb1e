"""The simulator's integrity faults and checks: what a disk, a stray client or an operator can do to a
node's metadata, tree and epochs, and what must hold whatever they do.

Faults (each within the run's fault budget: the node it hits counts as faulty until it is whole again):
- `meta_rot`: with the node crashed, one or both stored copies of a segment's metadata get a flipped
  byte (both only when the control plane runs: a segment with no good copy is lost and must be created
  again) or are forged with a valid CRC-32C and an SCL raised past what the records hold; the node then
  restarts. It must never claim that SCL (`check_scl_truth`), and repairs or rebuilds what it lost.
- `hostile_epoch`: RaiseVolumeEpoch sent to one segment by a client that is no writer: one past the
  writer's epoch or a little more (the writer must regain the volume, not stop), or a value near the top
  of uint64 (refused with INVALID_ARGUMENT, or it is a violation).
- `tree_rot`: the node's LMDB tree is damaged (every access fails with MDB_CORRUPTED): it must rebuild
  its segments in a fresh environment from their peers.
- `drop_segment` (with the control plane): DropSegment on a healthy member; the control plane must
  notice the lost copy from the node's heartbeats and create it again.

Checks:
- `check_scl_truth`: a segment's SCL never claims a record it does not hold (every record of its PG at
  or below SCL, above its chain anchor and not voided by a truncation, is stored);
- `WriterSupervisor`: whenever no writer is open (crashed, fenced for good, failed to open) a new one is
  opened, as a deployment's supervisor would; a stretch without an open writer longer than
  WRITER_GAP_MAX_S while at most two nodes were faulty is a violation (liveness).

What these need of a run is `SimView` (and `Supervised`, which also opens writers); tools/sim/harness.py
`Simulation` is one.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from typing import Any, Protocol

import grpc

from sixfold.compute.volume import Volume
from sixfold.storage.epochs import EPOCH_MAX, EPOCH_STEP_MAX
from sixfold.storage.records import LogRecord
from sixfold.storage.segment import SegmentMeta
from sixfold.storage.segment_load import META_TABLES, trusted_copy
from sixfold.storage.truncation import voided
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.sim.config import SimConfig
from sixfold.tools.sim.lines import Line, prefix_of_segment
from sixfold.tools.sim.memlmdb import MemDisk
from sixfold.tools.sim.network import SimNetwork
from sixfold.tools.sim.nodes import SimNode

# What a tree rot damages: the big tables, where an overwrite of a few pages of a node's file lands; the
# metadata (a few small pages) still reads, so the node salvages its segments' identities.
TREE_ROT_TABLES = (b"records", b"page_index", b"versions")
RECORDS = b"records"
FORGE_SCL_STEP_MAX = 60  # a forged copy claims up to this many LSNs more than the records hold
HOSTILE_EPOCH_STEP_MAX = 3
HOSTILE_HUGE_PROBABILITY = 0.2  # a hostile raise picks a value near the top of uint64 this often
HOSTILE = "hostile-client"  # the endpoint that sends hostile requests
OPERATOR = "operator"  # the endpoint that drops a segment
# A writer is open again within this many virtual seconds of there being none (crash, fenced for good,
# a failed open), while at most two nodes are faulty: a supervisor's next look (SUPERVISE_INTERVAL_S),
# an open (raise, read, truncate: a few round trips, more when messages are lost) or a regain (its
# FENCE_GRACE_S first), with room for retries of lost messages.
WRITER_GAP_MAX_S = 15.0
SUPERVISE_INTERVAL_S = 0.5
SUPERVISOR_PATIENCE_S = 1.0  # the "writer" fault reopens within 0.5 s of its crash: the supervisor waits longer


class SimView(Protocol):
    """What the integrity faults and checks need of a run: its parts, the model's answers, and its log."""

    config: SimConfig
    disk: MemDisk
    network: SimNetwork
    nodes: dict[str, SimNode]
    writer: Volume | None
    line: Line  # the line the volume shows now (tools/sim/lines.py)
    lines: dict[str, Line]  # every line, by segment-id prefix
    ops: dict[str, int]
    dead: set[str]  # nodes failed for good
    over_two: bool  # more than two nodes down now
    over_two_serial: int  # how many times more than two went down
    opening: bool  # a writer is being opened
    backtracking: bool  # a backtrack closed the writer and opens it again on the new timeline

    def now(self) -> float: ...

    def event(self, text: str) -> None: ...

    def violation(self, text: str) -> None:
        """Record a failed check and end the run (raises)."""

    def membership(self, pg_index: int, line: Line | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]: ...

    def segment_id(self, pg_index: int) -> str: ...

    def line_of(self, volume: Volume) -> Line: ...

    def truncated(self, record: LogRecord, line: Line | None = None) -> bool: ...

    def pg_of(self, page_no: int) -> int: ...

    def faulty_nodes(self) -> set[str]: ...

    def note_down(self) -> None: ...

    def overlapped_over_two(self, began: tuple[int, bool]) -> bool: ...


class Supervised(SimView, Protocol):
    """A run whose writer the supervisor keeps open."""

    async def open_writer(self) -> Volume | None: ...


def meta_on_disk(disk: MemDisk, name: str, segment_id: str) -> SegmentMeta | None:
    """A segment's metadata as the node's disk holds it (either good copy), or None."""
    return trusted_copy((disk.get(name, table, segment_id.encode()) for table in META_TABLES), segment_id)


def expected_segments(sim: SimView, name: str) -> list[str]:
    return [sim.segment_id(pg) for pg in range(sim.config.pgs) if name in sim.membership(pg)[1]]


def impaired_nodes(sim: SimView) -> set[str]:
    """Nodes up whose disk is corrupt, that lack a segment they should hold, hold one that is not whole, or
    hold an epoch newer than the current writer's (a hostile raise): each weakens its PGs like a fault."""
    out = set()
    epoch = sim.writer.epoch if sim.writer is not None else None
    for name, node in sim.nodes.items():
        if not node.up or node.store is None:
            continue
        if sim.disk.is_corrupt(name):
            out.add(name)
            continue
        for segment_id in expected_segments(sim, name):
            seg = node.store.segments.get(segment_id)
            if seg is None or not seg.whole or (epoch is not None and seg.meta.volume_epoch > epoch):
                out.add(name)
                break
        if sim.config.time_travel and any(not seg.whole for seg in node.store.segments.values()):
            out.add(name)  # a clone's, a snapshot's or a timeline's segment it holds is being rebuilt
    return out


def _pick(sim: SimView, rng: random.Random, budget: int, whole_node: bool = False) -> str | None:
    """A node that is up, for a fault that makes it faulty: any while the budget allows, else a faulty one.
    `whole_node`: the fault destroys every segment of the node (a tree rot, a dropped copy); with time travel on
    a faulty node may be one impaired on another line's PG only (a clone's segment rebuilding), and destroying
    its healthy segments would take other PGs past the budget: then only while the budget allows."""
    faulty = sim.faulty_nodes()
    if whole_node and sim.config.time_travel and len(faulty) >= budget:
        return None
    names = sorted(
        n for n, node in sim.nodes.items() if node.up and n not in sim.dead and (len(faulty) < budget or n in faulty)
    )
    return rng.choice(names) if names else None


def _pick_segment(sim: SimView, rng: random.Random, budget: int) -> tuple[str, str] | None:
    """(node, one of its segments) for a fault that makes the node faulty (`_pick`), or None."""
    name = _pick(sim, rng, budget)
    store = sim.nodes[name].store if name is not None else None
    if name is None or store is None or not store.segments:
        return None
    return name, rng.choice(sorted(store.segments))


async def meta_rot(sim: SimView, rng: random.Random, budget: int) -> None:
    picked = _pick_segment(sim, rng, budget)
    if picked is None:
        return
    name, segment_id = picked
    node = sim.nodes[name]
    await node.crash()
    modes = ["flip-one", "forge-one", "forge-both"] + (["flip-both"] if sim.config.replace else [])
    mode = rng.choice(modes)
    tables = list(META_TABLES) if mode.endswith("both") else [rng.choice(META_TABLES)]
    key = segment_id.encode()
    good = meta_on_disk(sim.disk, name, segment_id)
    if good is None:
        node.start()
        return
    forged = good.copy()
    forged.scl = good.scl + rng.randint(1, FORGE_SCL_STEP_MAX)
    forged.highest_lsn = max(forged.highest_lsn, forged.scl)
    for table in tables:
        if sim.disk.get(name, table, key) is None:
            continue
        if mode.startswith("flip"):
            sim.disk.rot(name, table, key, rng=rng)
        else:
            sim.disk.overwrite(name, table, key, forged.to_bytes())
    sim.ops["meta_rot"] += 1
    detail = f"SCL {good.scl} -> {forged.scl} with a valid CRC" if mode.startswith("forge") else "a flipped byte"
    sim.event(f"meta-rot {name} {segment_id} {mode} ({'/'.join(t.decode() for t in tables)}: {detail}); restart")
    node.start()
    sim.note_down()


async def hostile_epoch(sim: SimView, rng: random.Random, budget: int) -> None:
    picked = _pick_segment(sim, rng, budget)
    if picked is None:
        return
    name, segment_id = picked
    store = sim.nodes[name].store
    assert store is not None
    current = store.segments[segment_id].meta.volume_epoch
    huge = rng.random() < HOSTILE_HUGE_PROBABILITY
    epoch = (
        rng.choice([2**64 - 1, EPOCH_MAX + 1, current + EPOCH_STEP_MAX + 1])
        if huge
        else current + rng.randint(1, HOSTILE_EPOCH_STEP_MAX)
    )
    stub = pb_grpc.StorageServiceStub(sim.network.channel_factory(HOSTILE)(name))
    sim.ops["hostile_epochs"] += 1
    try:
        await stub.RaiseVolumeEpoch(
            pb.RaiseVolumeEpochRequest(segment_id=segment_id, volume_epoch=epoch, writer_id=HOSTILE), timeout=2.0
        )
    except grpc.aio.AioRpcError as error:
        sim.event(f"hostile epoch {epoch} to {name} {segment_id}: {error.code().name}")
        if huge and error.code() not in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        ):
            sim.violation(
                f"epoch {epoch} near the top of uint64 was refused with {error.code().name}, not INVALID_ARGUMENT"
            )
        return
    if huge:
        sim.violation(f"{name} took epoch {epoch}, near the top of uint64: no writer could ever follow it")
    sim.event(
        f"hostile epoch {epoch} taken by {name} {segment_id} (the writer holds "
        f"{sim.writer.epoch if sim.writer else '-'})"
    )
    sim.note_down()


def tree_rot(sim: SimView, rng: random.Random, budget: int) -> None:
    name = _pick(sim, rng, budget, whole_node=True)
    if name is None:
        return
    sim.disk.corrupt(name, TREE_ROT_TABLES)
    sim.ops["tree_rot"] += 1
    sim.event(f"tree-rot {name}: every access to its record tables now fails (MDB_CORRUPTED)")
    sim.note_down()


async def drop_segment(sim: SimView, rng: random.Random, budget: int) -> None:
    name = _pick(sim, rng, budget, whole_node=True)
    if name is None:
        return
    expected = expected_segments(sim, name)
    if not expected:
        return
    segment_id = rng.choice(expected)
    stub = pb_grpc.StorageServiceStub(sim.network.channel_factory(OPERATOR)(name))
    try:
        await stub.DropSegment(pb.DropSegmentRequest(segment_id=segment_id), timeout=2.0)
    except grpc.aio.AioRpcError as error:
        sim.event(f"drop {segment_id} on {name}: {error.code().name}")
        return
    sim.ops["segments_dropped"] += 1
    sim.event(f"drop {segment_id} on {name} (a healthy member): the control plane must create it again")
    sim.note_down()


def check_scl_truth(sim: SimView) -> None:
    """No segment's SCL claims a record it does not hold (each segment judged by its line's records)."""
    by_line: dict[str, dict[int, list[int]]] = {}  # prefix -> PG -> LSNs of its records no truncation voids
    for prefix, line in sim.lines.items():
        by_pg = by_line[prefix] = {}
        for lsn in line.lsns():
            record = line.records[lsn]
            if not line.truncated(record):
                by_pg.setdefault(sim.pg_of(record.page_no), []).append(lsn)
    for name, node in sim.nodes.items():
        if not node.up or node.store is None or sim.disk.is_corrupt(name):
            continue
        for segment_id, seg in list(node.store.segments.items()):
            meta, scl = seg.meta, seg.tracker.scl
            held_by = sim.lines.get(prefix_of_segment(segment_id))
            if scl < meta.retention_horizon_lsn or held_by is None:
                continue  # serves nothing: it claims nothing (or a segment the model does not know)
            lsns = by_line[held_by.prefix].get(meta.pg_index, [])
            lo = bisect.bisect_right(lsns, meta.chain_anchor_lsn)
            hi = bisect.bisect_right(lsns, scl)
            for lsn in lsns[lo:hi]:
                record = held_by.records[lsn]
                if voided(meta.truncation_ranges, lsn, record.epoch):
                    continue
                if sim.disk.get(name, RECORDS, _record_key(meta.seg_no, lsn)) is None:
                    sim.violation(
                        f"{name} {segment_id} claims SCL {scl} but does not hold record LSN {lsn} of its "
                        "PG: a segment claims completeness it does not have"
                    )


def _record_key(seg_no: int, lsn: int) -> bytes:
    from sixfold.storage.keys import record_key

    return record_key(seg_no, lsn)


def watch_fencing(sim: SimView, volume: Volume) -> None:
    """A writer that says a newer writer recovered the volume must be right: when it declares itself fenced,
    every PG has a segment whose disk holds a truncation range of a newer epoch (a recovery truncates a write
    quorum of every PG before its writer serves). A writer fenced by a stray epoch, or by an opener that never
    finished, would stop the volume for nothing (issue 10 item 3). A regain that gave up is judged by the
    supervisor's gap bound instead."""
    original = volume.on_fenced

    def on_fenced(stream: Any, details: str, gave_up: bool = False) -> None:
        judge = not volume.fenced and not gave_up
        original(stream, details, gave_up)
        if judge:
            for pg in range(sim.config.pgs):
                segment_id = sim.line_of(volume).segment_id(pg)
                metas = [meta_on_disk(sim.disk, name, segment_id) for name in sim.nodes]
                if not any(r.epoch > volume.running_epoch for m in metas if m is not None for r in m.truncation_ranges):
                    sim.violation(
                        f"{volume.writer_id} (epoch {volume.running_epoch}) "
                        f"declared itself fenced, but no segment of PG {pg} holds a newer writer's "
                        f"truncation: no newer writer recovered the volume ({details})"
                    )
                    break

    volume.on_fenced = on_fenced  # type: ignore[method-assign]  # wraps this one writer's handler


class WriterSupervisor:
    """Opens a writer whenever none is open (a deployment's supervisor), and measures each stretch without
    one: longer than WRITER_GAP_MAX_S while at most two nodes were faulty is a violation."""

    def __init__(self, sim: Supervised) -> None:
        self.sim = sim
        self.gap_since: float | None = None
        self.gap_began_over_two: tuple[int, bool] = (0, False)
        self.longest_gap_s = 0.0

    def writer_open(self) -> bool:
        """A writer is open (or a backtrack is under way: it closed the writer on purpose, and opens it on the
        new timeline when the control plane is done; tools/sim/time_travel.py)."""
        w = self.sim.writer
        return (w is not None and not w.fenced and not w.regaining) or self.sim.backtracking

    def note(self) -> None:
        """Called often: start or end a gap, and judge one that ended or is running too long."""
        now = self.sim.now()
        if self.writer_open():
            if self.gap_since is not None:
                self._judge(now - self.gap_since)
                self.gap_since = None
            return
        if self.gap_since is None:
            self.gap_since = now
            self.gap_began_over_two = (self.sim.over_two_serial, self.sim.over_two)
        elif now - self.gap_since > WRITER_GAP_MAX_S:
            self._judge(now - self.gap_since)

    def _judge(self, gap_s: float) -> None:
        self.longest_gap_s = max(self.longest_gap_s, gap_s)
        self.sim.ops["writer_gap_ms_max"] = max(self.sim.ops["writer_gap_ms_max"], int(gap_s * 1000))
        if (
            gap_s > WRITER_GAP_MAX_S
            and not self.sim.overlapped_over_two(self.gap_began_over_two)
            and self.sim.config.faults != "beyond"
        ):
            self.sim.violation(
                f"no writer was open for {gap_s:.1f} virtual s (more than {WRITER_GAP_MAX_S:g}) "
                "with at most two nodes faulty"
            )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            self.note()
            w = self.sim.writer
            # Patience: a fault action that crashed the writer opens the next one itself a moment later.
            waited = self.sim.now() - self.gap_since if self.gap_since is not None else 0.0
            idle = not self.sim.opening and not self.sim.backtracking
            if (w is None or w.fenced) and idle and waited >= SUPERVISOR_PATIENCE_S:
                await self.sim.open_writer()
                self.note()


def counters() -> dict[str, int]:
    """The operation counters this module adds to a run's."""
    return {"meta_rot": 0, "hostile_epochs": 0, "tree_rot": 0, "segments_dropped": 0, "writer_gap_ms_max": 0}
