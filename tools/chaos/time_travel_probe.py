"""What the time-travel chaos scenarios do to a live cluster and read back from it.

- `Travel`: one run's record: the clones made and the backtracks done (each an `Action` with its
  times), the loads writing the clones, vol0's timelines and the reads taken once healed. It lives
  in `ctx.data["travel"]`; its repr is a one-line summary (verdict.json shows it).
- `SideLoad`: clients writing and reading a clone beside the main workload: a second `Workload` on
  the same writer (its tokens prefixed with the clone's name, so no two writes share one) that writes
  only half of the hot pages (`SIDE_KEYS`), so the others always fall through to vol0 at the branch,
  and a reader of every hot page (from the writer's cache and from storage in turn).
- `make_clone`, `backtrack`, `latest_commit`: the actions.
- `settle`: once the clients stopped, every hot page of each volume read through the writer (its
  cache, then storage) and straight from every segment of the volume at the segment's SCL, once it
  has caught up with the PG.
- `judge_volumes`: the run as `lsn_check` values (lines, writes, reads) and its criteria.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.storage.security import pki
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.chaos.check_support import INFINITY
from sixfold.tools.chaos.history import OK, READ, WRITE
from sixfold.tools.chaos.lsn_check import Line, LsnCheck, Read, Write, check_reads
from sixfold.tools.chaos.scenario_base import Context, Criterion
from sixfold.tools.chaos.workload import VOLUME, OpRecord, Workload, decode_value
from sixfold.tools.cluster_tls import harness_channel

SIDE_CLIENTS = 4  # writing clients of each clone's load (the main workload has 8 by default)
SIDE_KEYS = 4  # the hot pages they write: the first two of each PG (the main workload's keys hold 4 per PG)
READER_PAUSE_S = 0.2  # between two reads of every hot page by a clone load's reader
CALL_TIMEOUT_S = 60.0  # a clone or backtrack call
READ_RETRY_S = 30.0  # how long `settle` retries a read through the writer
CATCH_UP_S = 20.0  # how long `settle` waits for a volume's segments to reach their PG's PGCL
STATUS_TIMEOUT_S = 5.0
POLL_S = 0.25


@dataclass
class Action:
    """A clone or a backtrack, as the client saw it."""

    what: str
    invoked: float
    returned: float
    ok: bool
    detail: str
    lsn: int = 0  # a clone's branch LSN; the LSN a backtrack went to
    volume: str = ""  # a clone's name
    timeline: str = ""  # a backtrack's new timeline


class SideLoad:
    """A load on `volume` (a clone): `SIDE_CLIENTS` writing clients (with `writers`) and one reader of
    every hot page of the main workload; started on creation, stopped by `close`."""

    def __init__(self, ctx: Context, volume: str, writers: bool = True) -> None:
        main: Workload = ctx.workload
        self.volume = volume
        self.saved = False
        self.workload = Workload(
            clients=SIDE_CLIENTS if writers else 0,
            keys=SIDE_KEYS,
            seed=main.seed + 1_000_003,  # not the main clients' choices
            address=main.target.address,
            cluster=ctx.cluster,
            volume=volume,
            prefix=f"{volume}:",
        )
        self.tasks = [asyncio.create_task(self.workload.client(i)) for i in range(self.workload.clients)]
        self.tasks.append(asyncio.create_task(self._reader(tuple(main.all_keys))))

    async def _reader(self, keys: tuple[int, ...]) -> None:
        processes = tuple(3 * SIDE_CLIENTS + i for i in range(len(keys)))  # beside the clients' own
        n = 0
        while not self.workload.stop.is_set():
            n += 1
            await self.workload.read(processes, keys, from_storage=n % 2 == 0)
            await asyncio.sleep(READER_PAUSE_S)

    async def close(self) -> None:
        self.workload.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        await self.workload.close()


@dataclass
class Travel:
    clones: list[Action] = field(default_factory=list)
    backtracks: list[Action] = field(default_factory=list)
    loads: list[SideLoad] = field(default_factory=list)
    timelines: list[Any] = field(default_factory=list)  # vol0's TimelineInfo, oldest first
    probe_reads: list[Read] = field(default_factory=list)  # through the writer, once healed
    segment_reads: list[Read] = field(default_factory=list)  # from each segment, once healed
    lagging: list[str] = field(default_factory=list)  # segments that did not catch up (not judged)
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"clones {[(a.volume, a.lsn, a.ok) for a in self.clones]}, "
            f"backtracks {[(a.lsn, a.timeline, a.ok) for a in self.backtracks]}, "
            f"timelines {[(t.timeline_id, t.parent_timeline_id, t.branch_lsn, t.lsn_floor) for t in self.timelines]}, "
            f"{len(self.probe_reads)} reads through the writer and {len(self.segment_reads)} from segments once healed"
        )


def travel(ctx: Context) -> Travel:
    found: Travel = ctx.data.setdefault("travel", Travel())
    return found


# --- actions ------------------------------------------------------------------------------------


def _client(ctx: Context) -> VolumeClient:
    return VolumeClient(ctx.cluster.compute_address(), timeout_s=CALL_TIMEOUT_S)


def _clone_call(ctx: Context, name: str) -> Action:
    invoked = time.monotonic()
    try:
        with _client(ctx) as client:
            reply = client.clone_volume(VOLUME, name)
    except VolumeError as error:
        returned = time.monotonic()
        if error.code == grpc.StatusCode.ALREADY_EXISTS and travel(ctx).clones:
            g = ctx.geometry(name)  # an earlier attempt that timed out made it after all
            if g.parent_volume_id and g.branch_lsn:
                return Action(
                    f"clone {name}", invoked, returned, True, f"made by an earlier attempt: {error}", g.branch_lsn, name
                )
        return Action(f"clone {name}", invoked, returned, False, str(error), volume=name)
    detail = f"branch LSN {reply.clone.branch_lsn}, {reply.elapsed_ms:.0f} ms on the writer"
    return Action(f"clone {name}", invoked, time.monotonic(), True, detail, reply.clone.branch_lsn, name)


def start_load(ctx: Context, volume: str, writers: bool = True) -> SideLoad:
    side = SideLoad(ctx, volume, writers)
    travel(ctx).loads.append(side)
    ctx.closers.append(side.close)
    return side


async def make_clone(ctx: Context, name: str, attempts: int = 3, writers: bool = True) -> Action | None:
    """Clone vol0 at its VDL now as `name` (up to `attempts` tries), then start a load on it (a reader, and
    with `writers` writing clients)."""
    t = travel(ctx)
    for _ in range(attempts):
        action = await ctx.do(_clone_call, ctx, name)
        t.clones.append(action)
        ctx.log(
            f"{action.what}: {'ok' if action.ok else 'FAILED'} in {action.returned - action.invoked:.2f} s "
            f"({action.detail})"
        )
        if action.ok:
            start_load(ctx, name, writers)
            return action
        await ctx.sleep(1.0)
    return None


def _backtrack_call(ctx: Context, to_lsn: int) -> Action:
    invoked = time.monotonic()
    try:
        with _client(ctx) as client:
            reply = client.backtrack(VOLUME, to_lsn)
    except VolumeError as error:
        return Action(f"backtrack to {to_lsn}", invoked, time.monotonic(), False, str(error), to_lsn)
    detail = f"from VDL {reply.from_vdl} to {reply.to_lsn} in {reply.elapsed_ms:.0f} ms on the writer"
    return Action(
        f"backtrack to {to_lsn}", invoked, time.monotonic(), True, detail, reply.to_lsn, timeline=reply.timeline_id
    )


async def backtrack(ctx: Context, to_lsn: int) -> Action:
    action = await ctx.do(_backtrack_call, ctx, to_lsn)
    travel(ctx).backtracks.append(action)
    ctx.log(
        f"{action.what}: {'ok' if action.ok else 'FAILED'} in {action.returned - action.invoked:.2f} s "
        f"({action.detail}; timeline {action.timeline or '?'})"
    )
    return action


def latest_commit(ctx: Context, before: float = INFINITY) -> int:
    """The highest commit LSN of an acknowledged vol0 write that completed before `before` (0: none)."""
    return max(
        (r.lsn for r in ctx.workload.records if r.kind == WRITE and r.outcome == OK and r.completed < before),
        default=0,
    )


# --- once healed --------------------------------------------------------------------------------


def _history(ctx: Context) -> list[Any]:
    with _client(ctx) as client:
        timelines = list(client.volume_history(VOLUME).timelines)
    return sorted(timelines, key=lambda t: t.lsn_floor)


def _read_through_writer(ctx: Context, volume: str, keys: list[int], from_storage: bool) -> Read | None:
    via = "storage through the writer" if from_storage else "the writer (its cache)"
    deadline = time.monotonic() + READ_RETRY_S
    with VolumeClient(ctx.cluster.compute_address(), timeout_s=STATUS_TIMEOUT_S * 2) as client:
        while time.monotonic() < deadline:
            invoked = time.monotonic()
            try:
                read_point, images = client.read_images(volume, keys, from_storage=from_storage)
            except VolumeError as error:
                travel(ctx).notes.append(f"a read of {volume} from {via} failed: {error}")
                time.sleep(0.5)
                continue
            by_page = {int(i.page_no): i for i in images}
            return Read(
                volume,
                tuple(keys),
                tuple(decode_value(by_page[k].data) for k in keys),
                tuple(by_page[k].page_lsn for k in keys),
                read_point,
                invoked,
                time.monotonic(),
                via,
            )
    return None


def _state(stub: Any, segment_id: str) -> Any:
    return stub.GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id), timeout=STATUS_TIMEOUT_S).state


def _read_segment(ctx: Context, volume: str, pg: Any, seg: Any, keys: list[int], deadline: float) -> Read | None:
    """The PG's hot pages from one segment at its SCL, once that reached the PG's PGCL (else None, noted). A node
    serves data to the cluster's processes alone: this probe carries a `reader` certificate."""
    where = f"{volume} segment {seg.segment_id} on {seg.node_id}"
    state, why = None, "no answer"
    with harness_channel(ctx.cluster.state_dir, pki.ROLE_READER, seg.address, CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StorageServiceStub(channel)
        while True:
            try:
                state = _state(stub, seg.segment_id)
                why = f"SCL {state.scl} below PGCL {pg.pgcl}, whole {state.whole}, rebuilding {state.rebuilding}"
                if state.scl >= pg.pgcl and state.whole and not state.rebuilding:
                    break
            except grpc.RpcError as error:
                why = f"{error.code().name}: {error.details()}"
            if time.monotonic() > deadline:
                travel(ctx).lagging.append(f"{where}: {why}")
                return None
            time.sleep(POLL_S)
        invoked = time.monotonic()
        values, lsns = [], []
        for key in keys:
            try:
                reply = stub.ReadPage(
                    pb.ReadPageRequest(segment_id=seg.segment_id, page_no=key, read_point=state.scl),
                    timeout=STATUS_TIMEOUT_S,
                )
            except grpc.RpcError as error:
                travel(ctx).lagging.append(
                    f"{where}: page {key} at {state.scl}: {error.code().name}: {error.details()}"
                )
                return None
            values.append(decode_value(reply.data))
            lsns.append(reply.page_lsn)
    return Read(volume, tuple(keys), tuple(values), tuple(lsns), state.scl, invoked, time.monotonic(), where)


def _segment_reads(ctx: Context, volume: str, keys: list[int]) -> list[Read]:
    with VolumeClient(ctx.cluster.compute_address(), timeout_s=STATUS_TIMEOUT_S * 2) as client:
        status = client.status(volume)
    deadline = time.monotonic() + CATCH_UP_S
    reads = []
    for pg in status.protection_groups:
        mine = [k for k in keys if pg.first_page <= k < pg.first_page + pg.page_count]
        for seg in pg.segments if mine else ():
            read = _read_segment(ctx, volume, pg, seg, mine, deadline)
            if read is not None:
                reads.append(read)
    return reads


async def settle(ctx: Context) -> None:
    """Stop the clones' loads, fetch vol0's timelines and read every hot page of every volume back."""
    t = travel(ctx)
    for n, load in enumerate(t.loads, start=1):
        await load.close()
        if not load.saved:
            load.workload.save_history(ctx.out_dir / f"history-{load.volume}-{n}.jsonl")
            load.saved = True
    try:
        t.timelines = await ctx.do(_history, ctx)
    except VolumeError as error:
        t.notes.append(f"vol0's history could not be read: {error}")
    keys = list(ctx.workload.all_keys)
    for volume in [VOLUME, *(a.volume for a in t.clones if a.ok)]:
        for from_storage in (False, True):
            read = await ctx.do(_read_through_writer, ctx, volume, keys, from_storage)
            if read is None:
                t.notes.append(f"{volume} could not be read through the writer in {READ_RETRY_S:g} s")
            else:
                t.probe_reads.append(read)
        try:
            t.segment_reads += await ctx.do(_segment_reads, ctx, volume, keys)
        except (VolumeError, grpc.RpcError) as error:
            t.notes.append(f"the segments of {volume} could not be listed: {error}")
    save_records(ctx)
    ctx.log(
        f"settled: {len(t.probe_reads)} reads through the writer, {len(t.segment_reads)} from segments, "
        f"{len(t.lagging)} segments not caught up"
    )


def save_records(ctx: Context) -> None:
    """`lsn-records.jsonl`: every call of every load (with its LSNs), the reads once healed, the clones and
    backtracks and vol0's timelines, one JSON object a line (`"type"` says which): to judge a run again."""
    t = travel(ctx)
    rows: list[dict[str, Any]] = [{"type": "record", **asdict(r)} for r in ctx.workload.records]
    rows += [{"type": "record", **asdict(r)} for load in t.loads for r in load.workload.records]
    rows += [{"type": "read", **asdict(r)} for r in t.probe_reads + t.segment_reads]
    rows += [{"type": "action", **asdict(a)} for a in t.clones + t.backtracks]
    rows += [
        {
            "type": "timeline",
            **{f: getattr(tl, f) for f in ("timeline_id", "parent_timeline_id", "branch_lsn", "lsn_floor", "end_lsn")},
        }
        for tl in t.timelines
    ]
    with open(ctx.out_dir / "lsn-records.jsonl", "w", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)


# --- judging ------------------------------------------------------------------------------------


def _vol0_lines(t: Travel) -> list[Line]:
    """vol0's timelines as lines (oldest first). Timeline ids move (the current one is named after the volume,
    the older ones get a suffix), so the successful backtracks are matched to the timelines after the first
    in order, by branch LSN. Each is active from the invoke of the backtrack that made it until the return of
    the next one; a timeline no successful backtrack made (a failed call that did it anyway) from the first
    failed one's invoke."""
    if not t.timelines:
        return [Line(VOLUME, VOLUME)]
    made_by: dict[int, Action] = {}
    done = iter(a for a in t.backtracks if a.ok)
    pending = next(done, None)
    for k, tl in enumerate(t.timelines[1:], start=1):
        if pending is not None and pending.lsn == tl.branch_lsn:
            made_by[k] = pending
            pending = next(done, None)
    failed = min((a.invoked for a in t.backtracks if not a.ok), default=-INFINITY)
    ids = {tl.timeline_id for tl in t.timelines}
    out: list[Line] = []
    for k, tl in enumerate(t.timelines):
        made, following = made_by.get(k), made_by.get(k + 1)
        parent = tl.parent_timeline_id if tl.parent_timeline_id in ids else None
        start = made.invoked if made else (-INFINITY if k == 0 else failed)
        end = following.returned if following else INFINITY
        out.append(Line(tl.timeline_id, VOLUME, parent, tl.branch_lsn if parent else 0, tl.lsn_floor, start, end))
    return out


def lines(t: Travel) -> list[Line]:
    """vol0's lines and one per clone made, its parent the vol0 line active when the clone was asked for."""
    out = _vol0_lines(t)
    for a in t.clones:
        if a.ok:
            parent = [line for line in out if line.volume == VOLUME and line.active_from <= a.invoked][-1]
            out.append(Line(a.volume, a.volume, parent.name, a.lsn, a.lsn))
    return out


def writes_of(records: list[OpRecord]) -> list[Write]:
    return [
        Write(r.volume, r.keys, r.token or "", r.outcome, r.lsn, r.invoked, r.completed)
        for r in records
        if r.kind == WRITE
    ]


def _reads(records: list[OpRecord]) -> list[Read]:
    return [
        Read(
            r.volume,
            r.keys,
            r.values,
            r.page_lsns or (0,) * len(r.keys),
            r.read_point,
            r.invoked,
            r.completed,
            "storage through the writer" if r.from_storage else "the writer",
        )
        for r in records
        if r.kind == READ and r.outcome == OK
    ]


def _detail(result: LsnCheck, extra: str = "") -> str:
    text = (
        f"{result.reads} reads ({result.pages} pages{extra}) against {result.writes_acknowledged} acknowledged "
        f"writes: {result.lost} lost, {result.leaked} leaked, {result.phantom} phantom, {result.misplaced} "
        f"acknowledged with an LSN outside their timeline"
    )
    return text + ("; " + " | ".join(result.explanations) if result.explanations else "")


def judge_volumes(ctx: Context, what: dict[str, str]) -> list[Criterion]:
    """For each volume named in `what` (volume -> the criterion's name): every read of it, during the run
    and once healed, by LSN; then every segment read once healed; `ctx.data["lost"]`: lost pages in all."""
    t = travel(ctx)
    model = lines(t)
    records = list(ctx.workload.records) + [r for load in t.loads for r in load.workload.records]
    writes = writes_of(records)
    criteria, lost = [], 0
    for volume, name in what.items():
        settled = [r for r in t.probe_reads if r.volume == volume]
        reads = [r for r in _reads(records) if r.volume == volume] + settled
        result = check_reads(model, writes, reads, ctx.workload.origin)
        lost += result.lost
        ok = result.ok and len(settled) >= 2
        criteria.append(Criterion(name, ok, _detail(result, f"; {len(settled)} through the writer once healed")))
    result = check_reads(model, writes, t.segment_reads, ctx.workload.origin)
    lost += result.lost
    caught_up = f"; not caught up in {CATCH_UP_S:g} s: {'; '.join(t.lagging)}" if t.lagging else ""
    criteria.append(
        Criterion(
            "every copy serves it",
            result.ok and bool(t.segment_reads),
            f"each segment of {', '.join(what)} read at its SCL once healed: " + _detail(result) + caught_up,
        )
    )
    criteria.append(Criterion("segments catch up once healed", not t.lagging, caught_up[2:] or "all of them"))
    ctx.notes.extend(t.notes[:10])
    ctx.data["lost"] = lost
    return criteria


def action_criterion(name: str, actions: list[Action], want: int = 1) -> Criterion:
    done = [a for a in actions if a.ok]
    return Criterion(
        name,
        len(done) >= want,
        "; ".join(
            f"{a.what}: {'ok' if a.ok else 'FAILED'} in {a.returned - a.invoked:.2f} s ({a.detail})" for a in actions
        )
        or "never tried",
    )
