"""A segment refused this writer's epoch: is the writer fenced for good, or does it regain the volume?

One segment, or a few, may hold a newer epoch without a newer writer behind it (a stray raise, an opener
that failed midway). So a refusal is judged (`_judge_fence`), FENCE_GRACE_S after it:
- FENCED: a newer writer finished its recovery (in every PG a whole segment of a read quorum holds a
  truncation range of a newer epoch, which a recovery leaves on a write quorum before it serves): this
  writer stops for good; what it had in flight may still become durable through the new writer.
- OPENING: a newer epoch is on a write quorum of some PG, but its writer has not finished: it gets
  OPENER_GRACE_S before this writer takes the volume back.
- NOT_FENCED: nobody stands behind the newer epoch: the writer regains the volume with a new recovery at a
  newer epoch (`_regain`); what it had in flight is durable if the recovery finds it below VDL, else
  truncated (NotCommitted).
- UNKNOWN: too few segments answered to tell; the writer looks again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from sixfold.compute.cache import BufferCache
from sixfold.compute.errors import NotCommitted
from sixfold.compute.opening import Opening, Superseded
from sixfold.compute.segment_stream import SegmentStream
from sixfold.compute.volume_base import RPC_TIMEOUT_S
from sixfold.storage.errors import StorageError
from sixfold.storage.segment import TruncationRange
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb

log = logging.getLogger("sixfold.compute.volume")  # every part of the volume logs under one name

# After a segment refuses this writer's epoch, the writer waits this long (a newer writer may be mid-open)
# and then judges: fenced for good if a newer writer finished its recovery, else it regains the volume.
FENCE_GRACE_S = 1.0
FENCE_JUDGE_PAUSE_S = 0.5  # between two looks when too few segments answered to judge
# A newer epoch on a write quorum of some PG is a writer opening: it gets this long to finish before this
# writer takes the volume back (an open's steps each retry lost messages for up to QUORUM_STEP_TIMEOUT_S).
OPENER_GRACE_S = 10.0
FENCED, OPENING, NOT_FENCED, UNKNOWN = "fenced", "opening", "not fenced", "unknown"  # _newer_writer_opened


def range_of(r: pb.TruncationRange) -> TruncationRange:
    return TruncationRange(r.start_lsn, r.end_lsn, r.epoch)


class Fencing(Opening):
    def on_epoch_refusal(self, where: str, epoch: int, details: str) -> None:
        """A segment refused this writer's epoch: it holds `epoch`. One segment, or a few, are failing ones
        (a stray raise, an opener that failed midway); the writer is fenced only if a newer writer finished
        its recovery, which `_judge_fence` finds out. Otherwise it regains the volume."""
        if self.fenced or self._closed or self.log is None:
            return
        self.refused_epoch = max(self.refused_epoch, epoch)
        if self.regaining or self._judging():
            return
        log.warning(
            "volume %s: %s holds epoch %d, newer than this writer's %d (%s); checking in %.1f s whether a "
            "newer writer opened the volume",
            self.volume_id,
            where,
            epoch,
            self.epoch,
            details,
            FENCE_GRACE_S,
        )
        self._fence_task = asyncio.create_task(self._judge_fence(), name=f"fence-{self.volume_id}")

    def _end_regain(self) -> None:
        self.regaining = False
        self._regained.set()

    def on_fenced(self, stream: SegmentStream | None, details: str, gave_up: bool = False) -> None:
        """Fenced for good: a newer writer recovered the volume, or (`gave_up`) a regain could not finish."""
        if self.fenced:
            return
        self.fenced = True
        self.gave_up = gave_up
        self._end_regain()
        where = f" (segment {stream.segment_id} on {stream.node_id})" if stream else ""
        self.fenced_reason = f"a newer writer has opened volume {self.volume_id}{where}: {details}"
        log.warning("fenced: %s", self.fenced_reason)
        # Their records are already on segments: the new writer's recovery may make them durable.
        self._answer_in_flight(
            lambda cpl: (
                f"this writer (epoch {self.epoch}) was fenced while MTR {cpl} was in flight: "
                f"{self.fenced_reason}; the MTR may still have become durable through the new writer"
            )
        )

    async def _judge_fence(self) -> None:
        await asyncio.sleep(FENCE_GRACE_S)
        waited = FENCE_GRACE_S
        while not self.fenced and not self._closed:
            verdict, why = await self._newer_writer_opened()
            if verdict == FENCED:
                self.on_fenced(None, why)
                return
            if verdict == NOT_FENCED or (verdict == OPENING and waited >= OPENER_GRACE_S):
                log.warning("volume %s: %s", self.volume_id, why)
                if await self._regain():
                    return
                waited = 0.0  # another writer raised an epoch meanwhile: judge again, giving it time
            await asyncio.sleep(FENCE_JUDGE_PAUSE_S)  # an opener at work, or too few answers to tell
            waited += FENCE_JUDGE_PAUSE_S

    async def _newer_writer_opened(self) -> tuple[str, str]:
        """(verdict, why). FENCED: a newer writer finished its recovery: in every PG a segment holds a
        truncation range stamped with a newer epoch (a recovery truncates a write quorum of every PG before it
        serves, so a read quorum sees it). OPENING: not that, but some PG has a newer epoch on a write quorum:
        a writer is opening (it gets OPENER_GRACE_S). NOT_FENCED: neither (a stray raise, an opener that gave
        up). UNKNOWN: too few segments answered to tell."""
        found: list[str] = []
        opening = False
        lacking = ""
        for pg in self.pgs.values():
            got = await self._gather(self._state_calls(pg))
            raised = {
                n
                for n, r in got.items()
                if r.state.volume_epoch > self.running_epoch and r.state.volume_epoch_owner != self.writer_id
            }
            if pg.membership.write_quorum_met(raised):
                opening = True
            newer = [
                (node, r)
                for node, reply in got.items()
                for r in reply.state.truncation_ranges
                if r.epoch > self.running_epoch and range_of(r) not in self._sent_truncations
            ]
            if newer:
                node, r = newer[0]
                found.append(
                    f"PG {pg.pg_index}: segment on {node} holds truncation range [{r.start_lsn}, "
                    f"{r.end_lsn}] of epoch {r.epoch}"
                )
                continue
            whole = {node for node, reply in got.items() if reply.state.whole}
            if not pg.membership.read_quorum_met(whole):
                return UNKNOWN, f"PG {pg.pg_index}: too few whole segments answered"
            lacking = lacking or f"PG {pg.pg_index}: no whole segment of a read quorum holds a newer truncation"
        if not lacking:
            return FENCED, f"a newer writer recovered the volume ({'; '.join(found)})"
        if opening:
            return OPENING, f"a newer epoch is on a write quorum, but its writer has not finished ({lacking})"
        return NOT_FENCED, (
            f"no newer writer stands behind the epoch {self.refused_epoch} some segments hold "
            f"({lacking}); regaining the volume"
        )

    async def _regain(self) -> bool:
        """No newer writer stands behind the refusal: open the volume again in place, with a new recovery at
        a newer epoch (which every segment takes again). MTRs in flight become durable if the recovery finds
        them below its VDL, else they are truncated (NotCommitted). Returns False when another writer raised
        an epoch or finished a recovery meanwhile (the caller judges again), True when done (regained, or
        fenced because it could not)."""
        assert self.log is not None
        self.regaining = True
        self._regained.clear()
        self.regains += 1
        log.warning(
            "volume %s: regaining it with a new recovery (segments hold epoch %d, this writer %d)",
            self.volume_id,
            self.refused_epoch,
            self.running_epoch,
        )
        try:
            await cancel_and_wait(self._follow_task)
            for pg in self.pgs.values():
                for stream in pg.streams.values():
                    await stream.close()
            reply = await self.control_plane.DescribeVolume(
                cp_pb.DescribeVolumeRequest(volume_id=self.volume_id), timeout=RPC_TIMEOUT_S * 5
            )
            moved = timeline_moved(self.pgs, reply.geometry)
            if moved:
                # A backtrack (or a delete and a new volume of the name) fenced this writer's timeline: the
                # name now leads to segments it never wrote, whose own writer it must not fence, nor send them
                # the truncation ranges it sent its own.
                self.on_fenced(None, f"the volume moved to another timeline while this writer was fenced ({moved})")
                return True
            self.pgs = {}
            self._apply_geometry(reply.geometry)
            self.cache = BufferCache(self.page_size)
            target_vdl = await self._recover_until_open(regain=True)
            self._start_following()
            await self._wait_replicated(target_vdl)
        except Superseded as why:
            log.warning("volume %s: stopped regaining: %s", self.volume_id, why)
            return False
        except (StorageError, grpc.aio.AioRpcError) as error:
            text = error.message if isinstance(error, StorageError) else f"{error.code().name}: {error.details()}"
            self.on_fenced(
                None, f"it could not regain the volume after a segment refused its epoch: {text}", gave_up=True
            )
            return True
        self.running_epoch = self.epoch
        self._end_regain()
        vdl = self.log.vdl
        self._release(sorted(c for c in self._waiters if c <= vdl))  # the recovery found them durable
        for cpl in [c for c in self._waiters if c > vdl]:
            future = self._waiters.pop(cpl)
            self._mtr_records.pop(cpl, None)
            if not future.done():
                future.set_exception(
                    NotCommitted(
                        f"MTR {cpl} was not committed: the writer regained volume {self.volume_id} with a new recovery "
                        f"(epoch {self.epoch}), which truncated every LSN above VDL {vdl}; retry it"
                    )
                )
        log.warning("volume %s regained: epoch %d, VDL %d", self.volume_id, self.epoch, vdl)
        return True


def timeline_moved(pgs: dict[int, Any], geometry: Any) -> str:
    """Why the volume's geometry is no longer the timeline this writer wrote ('' when it is): a PG it knows
    has another segment id there (segment ids never repeat: storage/control_plane_lineage.py rule 2)."""
    for pg in geometry.protection_groups:
        known = pgs.get(pg.pg_index)
        if known is None or not known.streams or not pg.segments:
            continue
        mine = next(iter(known.streams.values())).segment_id
        if pg.segments[0].segment_id != mine:
            return f"PG {pg.pg_index} is segment {pg.segments[0].segment_id} now, not {mine}"
    return ""
