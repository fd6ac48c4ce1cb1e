"""The volumes a reader instance follows: `ReplicaVolumes`, the VolumeSource of its read-only SQL engines
(compute/sql_service.py `SqlEngines`), shaped like compute/service.py `VolumeServicer.volume`.

`await volume(volume_id)` returns the volume's started ReplicaVolume (compute/replica_volume.py), its redo
followed from the writer (compute/replica_follow.py); the first call for a volume starts both, and waits
(bounded) for the first snapshot so that the engine opens on a known durable point. A volume the control
plane does not know is NOT_FOUND. `set_writer(address)` moves every follower to a new writer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from sixfold.compute.errors import InvalidRequest, UnknownVolume
from sixfold.compute.placement import Channels
from sixfold.compute.replica_follow import RedoFollower
from sixfold.compute.replica_volume import ReplicaVolume
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.storage.errors import StorageError, Unavailable
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb

FIRST_SNAPSHOT_WAIT_S = 5.0
DESCRIBE_TIMEOUT_S = 10.0


class ReplicaVolumes:
    def __init__(self, control_plane: Any, channels: Channels, reader_id: str, writer_address: str = "") -> None:
        self.control_plane = control_plane
        self.channels = channels
        self.reader_id = reader_id
        self.writer_address = writer_address
        self.volumes: dict[str, ReplicaVolume] = {}
        self.followers: dict[str, RedoFollower] = {}
        self._opening: dict[str, asyncio.Task[ReplicaVolume]] = {}
        self._closed = False

    def volume_ids(self) -> list[str]:
        return sorted(self.volumes)

    async def volume(self, volume_id: str) -> ReplicaVolume:
        if not volume_id:
            raise InvalidRequest("the request names no volume_id")
        if self._closed:
            raise Unavailable(f"the read replica {self.reader_id} is closing (a role change); retry in a moment")
        replica = self.volumes.get(volume_id)
        if replica is not None:
            return replica
        task = self._opening.get(volume_id)
        if task is None:
            task = self._opening[volume_id] = asyncio.create_task(self._open(volume_id))
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._opening.get(volume_id) is task:
                self._opening.pop(volume_id, None)

    async def _open(self, volume_id: str) -> ReplicaVolume:
        try:
            await self.control_plane.DescribeVolume(
                cp_pb.DescribeVolumeRequest(volume_id=volume_id), timeout=DESCRIBE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise UnknownVolume(
                    f"volume {volume_id!r} does not exist; create it first (`sixfold volume create {volume_id}`)"
                ) from None
            raise Unavailable(
                f"the control plane did not answer while the read replica {self.reader_id} opened volume "
                f"{volume_id!r}: {error.code().name}"
            ) from None
        replica = ReplicaVolume(volume_id, self.control_plane, self.channels, reader_id=self.reader_id)
        follower = RedoFollower(replica, self.reader_id, self.writer_address)
        self.followers[volume_id] = follower  # from now on set_writer moves it too (a failover while it starts)
        try:
            await replica.start()
            follower.start()
            with contextlib.suppress(StorageError):
                replica.unpin_read_point(await replica.pin_read_point())  # waits (bounded) for the first snapshot
        except BaseException:
            if self.followers.get(volume_id) is follower:
                del self.followers[volume_id]
            await follower.close()
            await replica.close()
            raise
        self.volumes[volume_id] = replica
        return replica

    def set_writer(self, address: str) -> None:
        self.writer_address = address
        for follower in self.followers.values():
            follower.set_writer(address)

    def lags(self) -> list[ipb.VolumeLag]:
        return [self.volumes[v].lag() for v in sorted(self.volumes)]

    async def close(self) -> None:
        self._closed = True
        for task in self._opening.values():
            task.cancel()
        for follower in list(self.followers.values()):
            await follower.close()
        for replica in list(self.volumes.values()):
            await replica.close()
        self.followers.clear()
        self.volumes.clear()
