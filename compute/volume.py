"""One open volume on the writer: `Volume`, put together from one part per concern.

- compute/volume_base.py: the state the parts share, the streams' owner, commits released as VDL advances;
- compute/following.py: membership changes and moved nodes, followed from the control plane;
- compute/opening.py: opening by recovery, carried out as compute/recovery_steps.py says;
- compute/fencing.py: a refusal of this writer's epoch judged: fenced for good, or the volume regained;
- compute/reads.py and compute/writes.py: the read and write paths.
This module adds closing and the status report, and keeps the names other modules import from here.
"""

from __future__ import annotations

from sixfold.compute.fencing import Fencing
from sixfold.compute.placement import Channels, PgInfo
from sixfold.compute.reads import ReadPath
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.volume_base import COMMIT_TIMEOUT_S, loop_time
from sixfold.compute.writes import CONNECT_WAIT_S, WritePath
from sixfold.storage.tasks import cancel_and_wait

__all__ = ["COMMIT_TIMEOUT_S", "CONNECT_WAIT_S", "Channels", "PgInfo", "Volume"]


class Volume(Fencing, ReadPath, WritePath):
    """The parts over one shared state (VolumeBase). Fencing builds on Opening (a regain opens the volume
    again), which builds on MembershipFollowing (an open starts following); reads and writes stand apart."""

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._fence_task)
        await cancel_and_wait(self._follow_task)
        for pg in self.pgs.values():
            for stream in pg.streams.values():
                await stream.close()
        # An MTR still in flight gets its answer now, not when its commit timeout ends: the writer is gone
        # (a backtrack, a delete, the process stopping).
        self._answer_in_flight(
            lambda cpl: (
                f"the writer of volume {self.volume_id} was closed (a backtrack or delete, or the compute node "
                f"stopping) while MTR {cpl} was in flight; it may have become durable before that"
            )
        )

    def status(self) -> vpb.VolumeStatus:
        now = loop_time()
        pgs = []
        for pg in sorted(self.pgs.values(), key=lambda p: p.pg_index):
            tracker = self.log.pgs.get(pg.pg_index) if self.log else None
            segments = [
                vpb.SegmentStatus(
                    segment_id=s.segment_id,
                    node_id=node,
                    az=s.az,
                    address=s.address,
                    scl=tracker.scl_of.get(node, 0) if tracker else 0,
                    last_ack_age_ms=int((now - s.last_ack_monotonic) * 1000) if s.last_ack_monotonic else 0,
                    connected=s.connected,
                    records_in_flight=s.records_in_flight,
                    bytes_sent=s.bytes_sent,
                    batches_sent=s.batches_sent,
                )
                for node, s in sorted(pg.streams.items())
            ]
            pgs.append(
                vpb.PgStatus(
                    pg_index=pg.pg_index,
                    first_page=pg.first_page,
                    page_count=pg.page_count,
                    membership_epoch=pg.membership_epoch,
                    pgcl=tracker.pgcl if tracker else 0,
                    segments=segments,
                )
            )
        return vpb.VolumeStatus(
            volume_id=self.volume_id,
            page_size=self.page_size,
            segment_size_bytes=self.segment_size_bytes,
            geometry_epoch=self.geometry_epoch,
            volume_epoch=self.epoch,
            vcl=self.log.vcl if self.log else 0,
            vdl=self.vdl,
            lsn_allocated=self.log.lsn_allocated if self.log else 0,
            lal=self.lal,
            protection_groups=pgs,
            fenced=self.fenced,
            commits=self.commits,
            network_bytes_sent=sum(s.bytes_sent for pg in self.pgs.values() for s in pg.streams.values()),
            cache_hits=self.cache.hits if self.cache else 0,
            storage_page_reads=self.storage_page_reads,
            hedged_reads=self.hedged_reads,
            fenced_reason=self.fenced_reason,
            regains=self.regains,
            regaining=self.regaining,
            parent_volume_id=self.parent_volume_id,
            branch_lsn=self.branch_lsn,
        )
