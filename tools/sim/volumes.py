"""The volumes of a run with time travel on: the compute node's time-travel side, the writers of clones and
restored volumes with their clients, the volume's name moving to a new timeline, and the final check of
every live volume.

`SimCompute` is compute/time_travel.py's `TimeTravelRpcs` itself (the compute node's CloneVolume,
CreateSnapshot, RestoreSnapshot and Backtrack: the same branch point, the same closing and reopening of the
writer around a backtrack) over the run's writers (`writer_of`); it calls the real control plane over the
sim network from the endpoint `COMPUTE`, so a request or its answer may be lost. Whatever the caller heard,
the model then learns what the control plane recorded (`SimState.learn_lines`) and follows the volume's name
(`follow_volume`): when a backtrack moved it, the timeline left must hold no acknowledged write above the
VDL it ended at (it would be lost).

Each clone and restored volume has its own writer (a separate `Volume`, as a clone is a separate volume) and
a client that reads all of it first, then writes and reads it (`clone_client`); every read is checked
against the clone's line (checks.py `check_read`: its parent's view at the branch plus its own writes).
After the final heal `check_volumes_at_end` reads every one of them whole, and checks no definitely refused
write of any line took effect.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from sixfold.compute.errors import CommitTimeout, Fenced, NotCommitted, QuorumNotMet, Regaining
from sixfold.compute.time_travel import NotNewestWriter, TimeTravelRpcs
from sixfold.compute.volume import Volume
from sixfold.compute.volume_log import Patch
from sixfold.storage.errors import StorageError, Unavailable
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.tools.sim.config import CONVERGE_S_TIME_TRAVEL, PAGE_SIZE, VOLUME
from sixfold.tools.sim.lines import CLONE, Line
from sixfold.tools.sim.replacement import CONTROL_PLANE
from sixfold.tools.sim.workload import Workload

COMPUTE = "compute"  # the endpoint the compute node's time-travel calls come from
CLONE_OPS = 12  # operations of a clone's client
CLONE_OP_GAP_S = (0.05, 1.5)
CLONE_READ_PROBABILITY = 0.4
WRITER_WAIT_TRIES = 20  # looks (WRITER_WAIT_S apart) for an open writer before a time-travel call gives up
WRITER_WAIT_S = 0.5
DEFINITE = (Fenced, QuorumNotMet, NotCommitted, Regaining)  # a write refused: definitely not done
TIME_TRAVEL_COUNTERS = (
    "clones",
    "clones_at_earlier_lsn",
    "clones_of_clones",
    "snapshots",
    "restores",
    "backtracks",
    "backtracks_by_time",
    "backtracks_reopened",  # refused: a segment held a newer writer's epoch; opened again and retried
    "forwards",
    "time_travel_refused",
    "clone_write_ok",
    "clone_write_failed",
    "clone_write_unknown",
    "clone_read_ok",
    "clone_read_failed",
)


class SimCompute(TimeTravelRpcs):
    """compute/time_travel.py's RPCs as the compute node runs them, over the run's writers."""

    def __init__(self, sim: Volumes) -> None:
        self.sim = sim
        self.control_plane = cp_grpc.ControlPlaneServiceStub(sim.network.channel_factory(COMPUTE)(CONTROL_PLANE))
        self.volumes: dict[str, Volume] = {}
        self.on_volume_gone = [self._gone]
        self.moving: set[str] = set()

    async def volume(self, volume_id: str) -> Volume:
        if volume_id in self.moving:  # as compute/service.py's: not opened while its name moves
            raise Unavailable(f"volume {volume_id!r} is being backtracked or deleted right now; retry in a moment")
        volume = await self.sim.writer_of(volume_id)
        self.volumes[volume_id] = volume
        return volume

    async def _backtrack(self, request: Any, volume: Volume, started: float) -> Any:
        try:
            return await super()._backtrack(request, volume, started)
        except NotNewestWriter:
            self.sim.ops["backtracks_reopened"] += 1
            raise

    async def cancel_open(self, volume_id: str) -> None:
        """An open of the volume under way (the supervisor's, a fault's) is cancelled: it may have read the
        geometry the name is leaving (`open_writer` closes what it opened once it sees this)."""
        if volume_id == VOLUME:
            self.sim.open_cancels += 1

    async def _gone(self, volume_id: str, why: str) -> None:
        self.sim.writer_closing(volume_id, self.volumes.get(volume_id))


@dataclass
class CloneWriter:
    """A clone's (or restored volume's) writer in the run: the one open now, and how many were opened."""

    line: Line
    writer: Volume | None = None
    opened: int = 0


class Volumes(Workload):
    """The compute node's time-travel side, the writers of clones, the volume's name followed."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.clone_writers: dict[str, CloneWriter] = {}  # by volume id
        self.closed_writer: Volume | None = None  # the volume's writer a backtrack closed last
        self.clone_clients: list[asyncio.Task[None]] = []
        self._compute: SimCompute | None = None
        if config.time_travel:
            self.ops.update(dict.fromkeys(TIME_TRAVEL_COUNTERS, 0))

    @property
    def compute(self) -> SimCompute:
        if self._compute is None:
            self._compute = SimCompute(self)
        return self._compute

    # -- the writers the compute node's calls use -------------------------------------------

    async def writer_of(self, volume_id: str) -> Volume:
        """The open writer of a volume (the run's, or a clone's), opened now if there is none."""
        if volume_id != VOLUME:
            state = self.clone_writers.get(volume_id)
            writer = None if state is None else state.writer
            if writer is None or writer.fenced:
                writer = await self.open_clone_writer(volume_id) if state is not None else None
            if writer is None:
                raise Unavailable(f"volume {volume_id} has no writer in the run")
            return writer
        for _ in range(WRITER_WAIT_TRIES):
            writer = self.writer
            if writer is not None and not writer.fenced and not writer.regaining and self._shows(writer):
                return writer
            stale = writer is None or writer.fenced or not self._shows(writer)
            if stale and not self.opening and await self.open_writer() is not None:
                continue
            await asyncio.sleep(WRITER_WAIT_S)
        raise Unavailable(f"no writer of volume {volume_id} could be opened")

    def _shows(self, writer: Volume) -> bool:
        """Whether the writer writes the timeline the volume's name points at now (a backtrack may have moved it)."""
        self.learn_lines()
        return self.line_of(writer).volume_id == VOLUME

    def writer_closing(self, volume_id: str, volume: Volume | None) -> None:
        """The compute node closes a volume's writer (a backtrack): nobody uses it from now on."""
        if volume_id == VOLUME and volume is not None:
            self.closed_writer = volume
            if self.writer is volume:
                self.writer = None
                self.event(f"{volume.writer_id} closed for a backtrack at VDL {volume.vdl}")
                self.supervisor.note()

    async def open_clone_writer(self, volume_id: str) -> Volume | None:
        state = self.clone_writers[volume_id]
        state.opened += 1
        name = f"{volume_id}-writer-{state.opened}"
        volume = self.new_writer(volume_id, name)
        try:
            await volume.open()
        except StorageError as error:
            self.event(f"{name} could not open: {error.message}")
            await volume.close()
            return None
        assert volume.log is not None
        self.track_allocations(volume)
        state.writer = volume
        self.event(f"{name} open: epoch {volume.epoch} VDL {volume.log.vdl} next LSN {volume.log.next_lsn}")
        return volume

    # -- the model follows the control plane ---------------------------------------------------

    def follow_volume(self) -> None:
        """Learn the control plane's volume records; when the volume's name moved (a backtrack), the timeline
        left ends at the VDL its closed writer had, and none of its acknowledged writes may lie above."""
        self.learn_lines()
        current = next(line for line in self.lines.values() if line.volume_id == VOLUME)
        if current is self.line:
            return
        left, closed = self.line, self.closed_writer
        self.line = current
        self._round = None  # a healing round's view of the PGs was of the timeline left
        if closed is None or self.line_of(closed) is not left:
            self.violation(f"volume {VOLUME} moved off timeline {left.prefix} without a backtrack closing its writer")
            return
        end = left.end_vdl = closed.vdl
        self.event(f"volume {VOLUME} now shows timeline {current.lineage()}; {left.prefix} left at VDL {end}")
        for cpl, (token, _, _) in sorted(left.acked.items()):
            if cpl > end:
                self.violation(
                    f"acknowledged write {token} (CPL {cpl}) of timeline {left.prefix} lies above the VDL {end} the "
                    "backtrack left it at: lost"
                )

    def start_clone_client(self, line: Line, rng: random.Random) -> None:
        if line.volume_id in self.clone_writers:
            return
        self.clone_writers[line.volume_id] = CloneWriter(line)
        task = asyncio.get_running_loop().create_task(self.clone_client(line.volume_id, rng))
        self.clone_clients.append(task)

    # -- a clone's client -------------------------------------------------------------------

    async def clone_client(self, volume_id: str, rng: random.Random) -> None:
        """Reads the whole clone first (its parent's view at the branch), then writes and reads it."""
        state = self.clone_writers[volume_id]
        pages = self.client_pages()
        for n in range(CLONE_OPS):
            await asyncio.sleep(rng.uniform(*CLONE_OP_GAP_S))
            writer = state.writer
            if writer is None or writer.fenced:
                writer = await self.open_clone_writer(volume_id)
                if writer is None:
                    continue
            if n == 0 or rng.random() < CLONE_READ_PROBABILITY:
                await self.clone_read(f"{volume_id} client", writer, pages if n == 0 else rng.sample(pages, 3))
                continue
            token = f"{volume_id}:n{n}e{writer.epoch}".encode()
            patches = [Patch(p, rng.randrange(PAGE_SIZE - len(token)), token) for p in rng.sample(pages, 2)]
            try:
                cpl = await writer.write(patches)
            except CommitTimeout:
                self.ops["clone_write_unknown"] += 1
                self.event(f"{volume_id} write {token.decode()} -> CommitTimeout")
                continue
            except DEFINITE as error:
                self.ops["clone_write_failed"] += 1
                self.line_of(writer).refused.append(token)
                self.event(f"{volume_id} write {token.decode()} -> {type(error).__name__}")
                continue
            line = self.line_of(writer)
            line.acked[cpl] = (token.decode(), patches, writer.epoch)
            self.ops["clone_write_ok"] += 1
            self.event(f"{volume_id} write {token.decode()} -> LSN {cpl}")
            self.check_durable(cpl, f"{volume_id} acknowledged", line)

    async def clone_read(self, who: str, writer: Volume, pages: list[int]) -> bool:
        try:
            read_point, images = await writer.read(pages)
        except StorageError as error:
            self.ops["clone_read_failed"] += 1
            self.event(f"{who} read {pages} -> {type(error).__name__}")
            return False
        self.ops["clone_read_ok"] += 1
        self.event(f"{who} read {pages} at {read_point}")
        self.check_read(writer, read_point, images)
        return True

    # -- after the final heal -----------------------------------------------------------------

    async def check_volumes_at_end(self) -> None:
        """Every clone and restored volume reads exactly its view, with every acknowledged write at or below
        its writer's VDL; on no line did a definitely refused write take effect."""
        pages = self.client_pages()
        vdls: dict[str, int] = {self.line.prefix: self.writer.vdl if self.writer is not None else 0}
        for volume_id, state in sorted(self.clone_writers.items()):
            deadline = self.now() + CONVERGE_S_TIME_TRAVEL
            while True:
                writer = state.writer
                if writer is None or writer.fenced:
                    writer = await self.open_clone_writer(volume_id)
                if (
                    writer is not None
                    and not writer.regaining
                    and await self.clone_read(f"{volume_id} final", writer, pages)
                ):
                    break
                if self.now() > deadline:
                    self.violation(
                        f"after healing, volume {volume_id} could not be read within {CONVERGE_S_TIME_TRAVEL:g} s"
                    )
                await asyncio.sleep(0.5)
            line = self.line_of(writer)
            vdls[line.prefix] = writer.vdl
            for cpl, (token, _, _) in sorted(line.acked.items()):
                if cpl > writer.vdl:
                    self.violation(f"acknowledged write {token} (CPL {cpl}) of {volume_id} is above its final VDL")
        for line in self.lines.values():
            vdl = line.end_vdl if line.end_vdl is not None else vdls.get(line.prefix)
            if vdl is None or line is self.line:
                continue  # no writer ever (a snapshot), or the volume's current line: harness.py checks it
            for refused in line.refused:
                for lsn, record in line.records.items():
                    if record.data == refused and lsn <= vdl and not line.truncated(record):
                        self.violation(
                            f"write {refused.decode()} on {line.prefix} was refused as definitely not done, yet its "
                            f"record LSN {lsn} is durable at or below VDL {vdl}"
                        )
        clones = sum(1 for line in self.lines.values() if line.kind == CLONE)
        self.event(
            f"time travel: {len(self.lines)} lines ({clones} clones), {len(self.clone_writers)} volumes read whole"
        )
