"""A run's load: the writers it opens and crashes, and the clients that write and read through them.

`open_writer` opens a real `Volume` on the sim network (cut off from every node an outage isolated),
records every record it allocates and every truncation range it sets into the oracle, and hands it to
integrity.py's fencing judge; `WriterSupervisor` (integrity.py) opens a new one whenever none is open.
Each client writes (60 %) or reads pages of its PGs at seeded times; every acknowledgement and every
read is checked at once (checks.py), and each outcome counted, also by whether more than two nodes
were down meanwhile (health.py).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from sixfold.compute.errors import CommitTimeout, Fenced, NotCommitted, QuorumNotMet, Regaining
from sixfold.compute.volume import Channels, Volume
from sixfold.compute.volume_log import Patch
from sixfold.storage.errors import StorageError
from sixfold.storage.segment import TruncationRange
from sixfold.tools.sim import integrity
from sixfold.tools.sim.checks import Checks
from sixfold.tools.sim.config import PAGE_SIZE, SIM_LAL, SIM_WALL_CLOCK_START_US, VOLUME, SimConfig
from sixfold.tools.sim.health import Health
from sixfold.tools.sim.nodes import FakeControlPlane, FollowedControlPlane

__all__ = ["SIM_WALL_CLOCK_START_US", "Workload"]  # the wall clock's start, importable from here as before


class Workload(Checks, Health):
    """Writers and clients; the supervisor that keeps a writer open."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.supervisor = integrity.WriterSupervisor(self)
        self.open_cancels = 0  # opens of the volume a backtrack cancelled (tools/sim/volumes.py `SimCompute`)
        self.opened: list[Volume] = []  # every writer of the volume that opened (time travel closes stale ones)

    # -- writers --------------------------------------------------------------------

    def new_writer(self, volume_id: str, name: str) -> Volume:
        """A writer `name` of `volume_id` on the sim network, on the virtual wall clock, whose truncation
        ranges go into the model (of the line it recovers: tools/sim/lines.py)."""
        control_plane: Any = (
            FakeControlPlane(self.geometry) if self.control_plane is None else FollowedControlPlane(self)
        )
        volume = Volume(
            volume_id,
            control_plane,
            Channels(self.network.channel_factory(name)),
            lal=SIM_LAL,
            commit_timeout_s=3.0,
            writer_id=name,
        )

        def truncating(ranges: list[TruncationRange]) -> None:
            truncations = self.line_of(volume).truncations  # (the line of the geometry it recovers)
            for r in ranges:
                if r not in truncations:
                    truncations.append(r)

        volume.on_truncating = truncating
        loop = asyncio.get_running_loop()
        volume.wall_clock_us = lambda: SIM_WALL_CLOCK_START_US + int(loop.time() * 1_000_000)  # virtual, deterministic
        return volume

    def track_allocations(self, volume: Volume) -> None:
        """Every record an open writer allocates goes into the model (of its line), checked first."""

        def allocated(mtr: Any) -> None:
            line = self.line_of(volume)
            for record in mtr.records:
                wrong = line.check_allocation(record)
                if wrong is not None:
                    self.violation(wrong)
                line.records[record.lsn] = record

        volume.on_allocate = allocated

    async def open_writer(self) -> Volume | None:
        self.writers += 1
        name = f"writer-{self.writers}"
        self.network.down.discard(name)
        for node in sorted(self.isolated):
            self.network.partition(name, node)
        volume = self.new_writer(VOLUME, name)
        integrity.watch_fencing(self, volume)
        began = self.over_two_serial, self.over_two
        cancels = self.open_cancels
        self.opening = True
        try:
            await volume.open()
        except StorageError as error:
            self.ops["open_failed_over_2_down" if self.overlapped_over_two(began) else "open_failed"] += 1
            self.event(f"{name} could not open: {error.message}")
            await volume.close()
            return None
        finally:
            self.opening = False
        if self.open_cancels != cancels:  # a backtrack began meanwhile: it cancels opens under way
            self.event(f"{name} opened, but a backtrack cancelled the open meanwhile: closed")
            await volume.close()
            return None
        assert volume.log is not None
        self.track_allocations(volume)
        self.event(f"{name} open: epoch {volume.epoch} VDL {volume.log.vdl} next LSN {volume.log.next_lsn}")
        self.opened.append(volume)
        self.writer = volume
        self.supervisor.note()
        return volume

    async def crash_writer(self) -> None:
        volume = self.writer
        if volume is None:
            return
        self.writer = None
        self.network.crash(volume.writer_id)
        await volume.close()
        self.event(f"{volume.writer_id} crashed")
        self.supervisor.note()

    # -- clients ------------------------------------------------------------------

    async def client(self, index: int, rng: random.Random) -> None:
        pages = self.client_pages()
        for n in range(self.config.ops_per_client):
            await asyncio.sleep(rng.uniform(0.01, 2 * self.config.duration_s / self.config.ops_per_client))
            writer = self.writer
            if writer is None:
                continue
            if rng.random() < 0.6:
                token = f"c{index}n{n}e{writer.epoch}".encode()
                chosen = rng.sample(pages, rng.randint(1, 3))
                patches = [Patch(p, rng.randrange(PAGE_SIZE - len(token)), token) for p in chosen]
                epochs = {i: pg.membership_epoch for i, pg in writer.pgs.items()}
                began = self.over_two_serial, self.over_two
                try:
                    cpl = await writer.write(patches)
                except (Fenced, QuorumNotMet, CommitTimeout, NotCommitted, Regaining) as error:
                    kind = "write_unknown" if isinstance(error, CommitTimeout) else "write_failed"
                    self.ops[kind] += 1
                    if kind == "write_failed":
                        self.line_of(writer).refused.append(token)
                    if self.overlapped_over_two(began):
                        self.ops[
                            "write_unknown_over_2_down" if kind == "write_unknown" else "write_refused_over_2_down"
                        ] += 1
                    self.event(f"client {index} write {token.decode()} -> {type(error).__name__}")
                    continue
                self.ops["write_ok"] += 1
                if self.overlapped_over_two(began):
                    self.ops["write_ok_over_2_down"] += 1  # check_durable below: only on a true write quorum
                line = self.line_of(writer)
                line.acked[cpl] = (token.decode(), patches, writer.epoch)
                self.event(f"client {index} write {token.decode()} -> LSN {cpl}")
                self.check_durable(cpl, f"client {index} acknowledged", line)
                if self.config.replace:
                    self.check_quorum_sets(cpl, writer, epochs, f"client {index} acknowledged")
            else:
                await self.read(f"client {index}", writer, rng.sample(pages, rng.randint(1, 3)))

    def client_pages(self) -> list[int]:
        return [pg * self.config.pages_per_pg + p for pg in range(self.config.pgs) for p in range(4)]

    async def read(self, who: str, writer: Volume, pages: list[int]) -> None:
        """One read, checked against the model. While more than two nodes are down it reads every page from the
        segments (not the writer's cache), so the outage is what the read meets. With only one AZ and one more
        node down (the az-plus-one outage) from start to end, a read must succeed: the design says so."""
        began = self.over_two_serial, self.over_two
        outage = self.outage
        try:
            read_point, images = await writer.read(pages, from_storage=self.over_two)
        except (Fenced, QuorumNotMet, Regaining) as error:
            self.ops["read_failed"] += 1
            self.event(f"{who} read {pages} -> {type(error).__name__}")
            if self.overlapped_over_two(began):
                self.ops["read_failed_over_2_down"] += 1
            if outage == "az-plus-one" and self.outage == outage and began == (self.over_two_serial, True):
                self.violation(
                    f"{who}: a read failed with only one AZ and one more node down "
                    f"({', '.join(sorted(self.down_nodes()))}): {error.message}"
                )
            return
        self.ops["read_ok"] += 1
        if self.overlapped_over_two(began):
            self.ops["read_ok_over_2_down"] += 1
        self.event(f"{who} read {pages} at {read_point}")
        self.check_read(writer, read_point, images)
