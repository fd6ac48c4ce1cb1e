"""The writer follows the control plane: membership changes of a PG (a segment replaced) and nodes that
moved to a new address.

The writer polls the control plane every MEMBERSHIP_POLL_S, sooner when a segment refused a batch for a
stale membership epoch. A newer membership epoch switches the PG's quorum sets before any await (so no
ack is counted under the old sets once batches go out at the new epoch), starts streams to new segments
and stops those to segments no set holds any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from sixfold.compute.placement import PgInfo, membership_of
from sixfold.compute.volume_base import RPC_TIMEOUT_S, VolumeBase
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb

log = logging.getLogger("sixfold.compute.volume")  # every part of the volume logs under one name

# How often the writer asks the control plane for membership changes (sooner when a segment says its
# membership epoch is newer than the writer's).
MEMBERSHIP_POLL_S = 0.5


class MembershipFollowing(VolumeBase):
    def _start_following(self) -> None:
        self._follow_task = asyncio.create_task(self._follow_membership(), name=f"follow-{self.volume_id}")

    async def _follow_membership(self) -> None:
        while not self.fenced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_wanted.wait(), MEMBERSHIP_POLL_S)
            self._refresh_wanted.clear()
            try:
                reply = await self.control_plane.DescribeVolume(
                    cp_pb.DescribeVolumeRequest(volume_id=self.volume_id), timeout=RPC_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                log.debug("membership poll of %s failed: %s", self.volume_id, error.details())
                continue
            try:
                for pg in reply.geometry.protection_groups:
                    known = self.pgs.get(pg.pg_index)
                    if known is not None and pg.membership_epoch > known.membership_epoch:
                        await self._change_membership(known, pg)
                    if known is not None:
                        self._follow_addresses(known, pg)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "volume %s: applying a membership change failed; trying again at the next poll", self.volume_id
                )

    def _follow_addresses(self, info: PgInfo, pg: Any) -> None:
        """A node that restarted on a new port registered its new address: its stream dials that from now on
        (what it had not acknowledged is sent there)."""
        for placement in pg.segments:
            stream = info.streams.get(placement.node_id)
            if stream is not None and placement.address and stream.address != placement.address:
                log.info(
                    "volume %s PG %d: node %s moved from %s to %s",
                    self.volume_id,
                    pg.pg_index,
                    placement.node_id,
                    stream.address,
                    placement.address,
                )
                stream.redirect(placement.address, self.channels.get(placement.address))

    async def _change_membership(self, info: PgInfo, pg: Any) -> None:
        """Take the PG's new quorum sets: streams to new segments start, streams to segments no set
        holds any more stop, and the quorum tracking switches (which may release commits)."""
        membership = membership_of(pg)
        added = [s for s in pg.segments if s.node_id in membership.segments and s.node_id not in info.streams]
        new_streams = self._new_streams(pg.pg_index, added)
        info.streams.update(new_streams)
        removed = [info.streams.pop(node) for node in list(info.streams) if node not in membership.segments]
        before = info.membership_epoch
        # Switch the quorum tracking before any await, so no ack is counted under the old sets once
        # batches go out at the new epoch.
        info.membership_epoch = pg.membership_epoch
        info.membership = membership
        if self.log is not None:
            self._release(self.log.set_membership(pg.pg_index, membership))
        for stream in new_streams.values():
            stream.start()
        log.info(
            "volume %s PG %d: membership epoch %d -> %d, quorum sets %s",
            self.volume_id,
            pg.pg_index,
            before,
            pg.membership_epoch,
            " & ".join("{" + ",".join(sorted(q.members)) + "}" for q in membership.sets),
        )
        for stream in removed:
            await stream.close()
