"""Time travel in a run (`SimConfig.time_travel`): clones, snapshots, restores and backtracks made at seeded
virtual times while the faults go on, each checked against the model (tools/sim/lines.py).

Every TT_INTERVAL_S (within the run's duration) the schedule (`time_travel`) makes one of:
- a clone of the volume, or of a clone (any depth), at its VDL or at an earlier acknowledged commit;
- a snapshot of the volume (at VDL or an earlier commit), or a restore of one as a new volume;
- a backtrack of the volume to an earlier acknowledged commit of the timeline it shows (by LSN, or by that
  commit's time), or forward again to an acknowledged commit of a timeline it left.
They go through compute/time_travel.py's RPCs and the real control plane (tools/sim/volumes.py
`SimCompute`); a refusal (nodes down, a lost message, a point no longer kept) is counted, never a violation.
What was made is then checked:
- a clone or snapshot branches from the line the source showed, at the LSN asked (its VDL: at most the
  source writer's VDL after the call); each clone and restored volume gets a writer and a client (volumes.py);
- a backtrack: the timeline left lost no acknowledged write (volumes.py `follow_volume`); the new timeline
  branches from the timeline that owns the target, exactly at it; a time target resolves to a commit at or
  above the acknowledged commit whose time it was, committed at or before that time; and a read of every
  page right after shows exactly the view (the writes at or below the target on that timeline, through its
  ancestors). Reads from then on, and after moving forward again, are checked by every client's reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.storage.errors import StorageError
from sixfold.tools.sim.config import VOLUME
from sixfold.tools.sim.lines import CLONE, ROOT, SNAPSHOT, TIMELINE, Line
from sixfold.tools.sim.volumes import Volumes

TT_FIRST_S = (1.0, 3.0)  # virtual seconds into the run before the first time-travel operation
TT_INTERVAL_S = (0.8, 3.0)  # between two operations
CLONES_MAX = 3  # clones and restored volumes a run makes (each gets a writer and a client)
SNAPSHOTS_MAX = 2
BACKTRACKS_MAX = 4  # backtracks, forward ones included
EARLIER_PROBABILITY = 0.35  # a clone or snapshot at an earlier acknowledged commit, not at VDL
BY_TIME_PROBABILITY = 0.3  # a backtrack to a commit's time, not its LSN
CLONE_OF_CLONE_PROBABILITY = 0.3


class TimeTravel(Volumes):
    """The time-travel schedule and the checks of what each operation made."""

    async def time_travel(self, rng: random.Random) -> None:
        deadline = self.now() + self.config.duration_s
        made = {"clone": 0, "snapshot": 0, "backtrack": 0}
        await asyncio.sleep(rng.uniform(*TT_FIRST_S))
        while self.now() < deadline:
            actions = []
            if made["clone"] < CLONES_MAX:
                actions += ["clone", "clone"] + (["restore"] if self._snapshots() else [])
            if made["snapshot"] < SNAPSHOTS_MAX:
                actions.append("snapshot")
            if made["backtrack"] < BACKTRACKS_MAX:
                actions += ["backtrack", "backtrack"] + (["forward", "forward"] if self._left_acked() else [])
            if actions:
                action = rng.choice(actions)
                made["clone" if action == "restore" else "backtrack" if action == "forward" else action] += 1
                await getattr(self, f"_tt_{action}")(rng)
            await asyncio.sleep(rng.uniform(*TT_INTERVAL_S))
        for task in self.clone_clients:
            await task
        self.event("time travel over")

    # -- calls ------------------------------------------------------------------------------

    async def _call(self, what: str, call: Awaitable[Any]) -> Any:
        """One compute-node call; None when refused or failed (counted). The model then learns what the control
        plane recorded, whatever the caller heard."""
        try:
            return await call
        except StorageError as error:
            self.ops["time_travel_refused"] += 1
            self.event(f"{what} -> {error.status_code_name}: {error.message}")
            return None
        finally:
            self.follow_volume()

    def _line_named(self, volume_id: str) -> Line | None:
        return next((line for line in self.lines.values() if line.volume_id == volume_id), None)

    def _source(self, rng: random.Random) -> tuple[str, Line]:
        """The volume to branch from: the run's volume, or sometimes a clone with a writer (a clone of a clone)."""
        clones = sorted(v for v, s in self.clone_writers.items() if s.writer is not None)
        if clones and rng.random() < CLONE_OF_CLONE_PROBABILITY:
            volume_id = rng.choice(clones)
            return volume_id, self.clone_writers[volume_id].line
        return VOLUME, self.line

    def _branch_checked(self, what: str, line: Line, source: Line, at_lsn: int, vdl_after: int) -> None:
        """A clone or snapshot branches from the line its source showed, at the LSN asked (0: its VDL then)."""
        if line.parent is not source:
            parent = line.parent.prefix if line.parent else "nothing"
            self.violation(f"{what} branches from {parent}, not from {source.prefix}, the line its source showed")
        if (at_lsn and line.branch_lsn != at_lsn) or (not at_lsn and 0 < vdl_after < line.branch_lsn):
            self.violation(
                f"{what} branches at LSN {line.branch_lsn}, not at "
                + (f"LSN {at_lsn}, as asked" if at_lsn else f"its source's VDL (at most {vdl_after})")
            )

    def _earlier(self, rng: random.Random, line: Line) -> int:
        """0 (the VDL), or sometimes an acknowledged commit of the line (its own)."""
        if line.acked and rng.random() < EARLIER_PROBABILITY:
            return rng.choice(sorted(line.acked))
        return 0

    # -- clones, snapshots, restores --------------------------------------------------------------

    async def _tt_clone(self, rng: random.Random) -> None:
        source_id, source = self._source(rng)
        at_lsn = self._earlier(rng, source)
        name = f"clone-{sum(1 for line in self.lines.values() if line.kind == CLONE) + 1}"
        what = f"clone {name} of {source_id} at " + (f"LSN {at_lsn}" if at_lsn else "VDL")
        request = vpb.CloneVolumeRequest(volume_id=name, source_volume_id=source_id, at_lsn=at_lsn)
        await self._call(what, self.compute.CloneVolume(request, None))
        line = self._line_named(name)
        if line is None:
            return
        self.ops["clones"] += 1
        self.ops["clones_at_earlier_lsn"] += bool(at_lsn)
        self.ops["clones_of_clones"] += source_id != VOLUME
        self.event(f"{what}: {line.lineage()}")
        self._branch_checked(what, line, source, at_lsn, self._vdl_of(source_id))
        self.start_clone_client(line, random.Random(rng.getrandbits(64)))

    async def _tt_snapshot(self, rng: random.Random) -> None:
        at_lsn = self._earlier(rng, self.line)
        name = f"snap-{len(self._snapshots()) + 1}"
        source = self.line
        what = f"snapshot {name} of {VOLUME} at " + (f"LSN {at_lsn}" if at_lsn else "VDL")
        request = vpb.CreateSnapshotRequest(volume_id=VOLUME, snapshot_name=name, at_lsn=at_lsn)
        await self._call(what, self.compute.CreateSnapshot(request, None))
        line = self._line_named(f"@{name}")
        if line is None:
            return
        self.ops["snapshots"] += 1
        self.event(f"{what}: {line.lineage()}")
        self._branch_checked(what, line, source, at_lsn, self._vdl_of(VOLUME))

    async def _tt_restore(self, rng: random.Random) -> None:
        snapshot = rng.choice(self._snapshots())
        name = f"restored-{sum(1 for line in self.lines.values() if line.kind == CLONE) + 1}"
        snapshot_name = snapshot.volume_id[1:]
        what = f"restore snapshot {snapshot_name} as {name}"
        request = vpb.RestoreSnapshotRequest(snapshot_name=snapshot_name, volume_id=name)
        await self._call(what, self.compute.RestoreSnapshot(request, None))
        line = self._line_named(name)
        if line is None:
            return
        self.ops["restores"] += 1
        self.event(f"{what}: {line.lineage()}")
        self._branch_checked(what, line, snapshot, snapshot.branch_lsn, snapshot.branch_lsn)
        self.start_clone_client(line, random.Random(rng.getrandbits(64)))

    def _snapshots(self) -> list[Line]:
        return [line for line in self.lines.values() if line.kind == SNAPSHOT]

    def _vdl_of(self, volume_id: str) -> int:
        writer = self.writer if volume_id == VOLUME else self.clone_writers[volume_id].writer
        return writer.vdl if writer is not None else 0

    # -- backtracks ------------------------------------------------------------------------------

    def _left_acked(self) -> list[Line]:
        """Timelines the volume left that hold acknowledged writes (a forward backtrack's targets)."""
        return [
            line
            for line in self.lines.values()
            if line.kind in (ROOT, TIMELINE) and line is not self.line and line.end_vdl is not None and line.acked
        ]

    async def _tt_backtrack(self, rng: random.Random) -> None:
        """Back to an earlier acknowledged commit of the timeline the volume shows (its own records)."""
        if self.line.acked:
            await self._backtrack_to(rng, self.line, rng.choice(sorted(self.line.acked)), "backtrack")

    async def _tt_forward(self, rng: random.Random) -> None:
        """Forward again: to an acknowledged commit of a timeline left (its writes reappear)."""
        target = rng.choice(self._left_acked())
        cpls = sorted(target.acked)
        await self._backtrack_to(rng, target, cpls[-1] if rng.random() < 0.5 else rng.choice(cpls), "forward")

    async def _backtrack_to(self, rng: random.Random, target: Line, cpl: int, kind: str) -> None:
        by_time = rng.random() < BY_TIME_PROBABILITY
        at_us = target.records[cpl].commit_time_us
        request = (
            vpb.BacktrackRequest(volume_id=VOLUME, to_time_us=at_us)
            if by_time
            else vpb.BacktrackRequest(volume_id=VOLUME, to_lsn=cpl)
        )
        what = f"{kind} {VOLUME} to " + (f"the time of LSN {cpl} ({at_us} us)" if by_time else f"LSN {cpl}")
        what += f" of {target.prefix}"
        left = self.line
        self.backtracking = True
        self.closed_writer = None
        try:
            reply = await self._call(what, self.compute.Backtrack(request, None))
        finally:
            self.backtracking = False
            self.supervisor.note()
        if self.line is left:
            return  # refused, or lost before the control plane moved the name
        self.ops["backtracks"] += 1
        self.ops["backtracks_by_time"] += by_time
        self.ops["forwards"] += kind == "forward"
        new = self.line
        self.event(f"{what}: {new.lineage()}" + (f" (resolved to LSN {reply.to_lsn})" if reply is not None else ""))
        if by_time:
            if reply is not None and (reply.to_lsn < cpl or reply.to_commit_time_us > at_us):
                self.violation(
                    f"{what} resolved to LSN {reply.to_lsn} committed at {reply.to_commit_time_us} us: the newest "
                    f"commit at or before that time is at least LSN {cpl}, committed then"
                )
        elif new.parent is not target or new.branch_lsn != cpl:
            parent = new.parent.prefix if new.parent else "nothing"
            self.violation(f"{what} made a timeline branching from {parent} at LSN {new.branch_lsn}")
        writer = self.writer
        if writer is not None and not writer.fenced:
            await self.read(f"after {kind}", writer, self.client_pages())
