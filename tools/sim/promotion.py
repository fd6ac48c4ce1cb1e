"""Promotion in a run with read replicas: the writer's place goes to a reader.

Whenever the run opens a new writer while readers run (the supervisor after a crash or a writer fenced for
good, the "writer" fault's reopen, the "fence" fault's second writer beside an old one that is only cut off or
paused), a reader is promoted instead of a fresh process starting: the most caught-up one (highest applied
VDL, then the lowest slot), as the control plane picks. Its `ReplicaVolume` closes, and the new writer is a
new `Volume` opened by recovery, which takes a new volume epoch on a write quorum of every PG and so fences
the old writer; the reader's slot then starts a fresh reader (the old writer rejoining as one, or the same
reader again when the open failed), and every other reader follows the new writer on its own (replicas.py).
What must hold is what every run checks: the old writer's acknowledged commits survive (invariant 2 and the
final check), and an old writer still running acknowledges nothing once the new one opened (invariant 5:
faults.py `_old_writer_tries`), now with readers reading throughout.

The deliberate break `promote-without-epoch` (mutations.py) opens the promoted writer at the old writer's
epoch without raising it: `PROMOTING` is set while the promotion opens.
"""

from __future__ import annotations

import asyncio

from sixfold.compute.volume import Volume
from sixfold.tools.sim.mutations import PROMOTING
from sixfold.tools.sim.replicas import Readers, SimReader


class Promotion(Readers):
    """`open_writer` promotes a reader when the run has readers; one promotion at a time (as the control plane
    runs them): an open asked for meanwhile waits for the one under way and answers with its writer."""

    _promotion: asyncio.Future[Volume | None] | None = None

    def promotion_candidate(self) -> SimReader | None:
        live = [r for r in self.readers if not r.closed]
        if not live:
            return None
        return max(live, key=lambda r: (r.replica.vdl, -r.slot))

    async def open_writer(self) -> Volume | None:
        if self._promotion is not None:
            return await asyncio.shield(self._promotion)
        candidate = self.promotion_candidate() if self.config.replicas else None
        if candidate is None:
            volume = await super().open_writer()
            if volume is not None and self.config.replicas:
                self.watch_vdl(volume)
            return volume
        self._promotion = asyncio.get_running_loop().create_future()
        try:
            volume = await self._promote(candidate)
        finally:
            self._promotion.set_result(self.writer if self.writer is not None and not self.writer.fenced else None)
            self._promotion = None
        return volume

    async def _promote(self, candidate: SimReader) -> Volume | None:
        old = self.writer
        old_alive = old is not None and not old.fenced and old.writer_id not in self.network.down
        await self.stop_reader(candidate, "promoted")
        token = PROMOTING.set(self.config.mutation == "promote-without-epoch")
        try:
            volume = await super().open_writer()
        finally:
            PROMOTING.reset(token)
        if volume is None:
            self.ops["promotions_failed"] += 1
            self.event(f"the promotion of {candidate.name} failed: it rejoins as a reader")
        else:
            self.ops["promotions"] += 1
            self.watch_vdl(volume)
            if old_alive:
                self.ops["promotions_beside_old_writer"] += 1
            self.publisher_of(volume)
            self.event(
                f"{candidate.name} (applied VDL {candidate.replica.vdl}) promoted: it is {volume.writer_id}, "
                f"epoch {volume.epoch}" + (f"; {old.writer_id} still runs" if old_alive and old is not None else "")
            )
        await self.start_reader(candidate.slot)
        return volume
