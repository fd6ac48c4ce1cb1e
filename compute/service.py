"""The compute node's gRPC adapter: compute.v1.VolumeService over open Volumes.

Volumes are opened on first use (recovery runs then) and stay open. Each
request names its volume; a volume the control plane does not know is NOT_FOUND.
A control plane that does not answer is UNAVAILABLE with a sentence that says so
(never the control plane's raw gRPC error), and the sentences name CLI commands a
user can run, not RPCs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from sixfold.compute.errors import InvalidRequest, UnknownVolume
from sixfold.compute.time_travel import TimeTravelRpcs
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.volume import Channels, Volume
from sixfold.compute.volume_log import Patch
from sixfold.compute.write_stream import WriteStreamRpcs
from sixfold.storage.errors import AlreadyExists, StorageError, Unavailable
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb

log = logging.getLogger(__name__)

PAGES_PER_READ_MAX = 256
OPEN_TIMEOUT_S = 60.0
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first bytes of a SQLite database file (page 0 of the volume)
CONTROL_PLANE_TIMEOUT_S = 10.0
CREATE_TIMEOUT_S = 30.0


class HoldsDatabase(StorageError):
    """A raw page write to a volume that holds a SQLite database: it would corrupt the database."""

    status_code_name = "FAILED_PRECONDITION"


class ControlPlaneUnavailable(StorageError):
    """The control plane did not answer (or failed): the volume's geometry cannot be read now."""

    status_code_name = "UNAVAILABLE"


def control_plane_error(error: grpc.aio.AioRpcError, doing: str) -> StorageError:
    """A sentence for a failed control-plane call made while `doing` something for a client."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ControlPlaneUnavailable(
            f"the control plane did not answer while {doing}; is it running? (`sixfold status` shows it)"
        )
    failed = ControlPlaneUnavailable(f"the control plane failed while {doing}: {code.name}: {error.details()}")
    failed.status_code_name = code.name if code != grpc.StatusCode.UNKNOWN else "UNAVAILABLE"
    return failed


class VolumeServicer(TimeTravelRpcs, WriteStreamRpcs):
    """compute.v1.VolumeService: pages here, clones, snapshots and deletes in compute/time_travel.py."""

    def __init__(self, control_plane: Any, channels: Channels) -> None:
        self.control_plane = control_plane
        self.channels = channels
        self.volumes: dict[str, Volume] = {}
        self._opening: dict[str, asyncio.Task[Volume]] = {}
        self._page0_checked: set[str] = set()  # volumes whose page 0 was looked at for a SQLite header
        # Told (volume id, what happens to it) when a volume is deleted or backtracked, before its writer closes
        # (the SQL engines drop theirs, aborting open transactions with that sentence).
        self.on_volume_gone: list[Callable[[str, str], Awaitable[None]]] = [self._forget_page0]
        # Volumes whose name is being moved to another timeline or deleted (compute/time_travel.py): not opened
        # meanwhile, so no writer recovers on the segments the name is leaving.
        self.moving: set[str] = set()
        # Raises when this compute instance may not open volumes as their writer (it is a read replica, or
        # between roles: compute/instance.py sets it).
        self.check_writer: Callable[[], None] = lambda: None

    async def _forget_page0(self, volume_id: str, why: str) -> None:
        self._page0_checked.discard(volume_id)

    async def volume(self, volume_id: str) -> Volume:
        if not volume_id:
            raise InvalidRequest("the request names no volume_id")
        self.check_writer()
        volume = self.volumes.get(volume_id)
        if volume is not None:
            return volume
        if volume_id in self.moving:
            raise Unavailable(f"volume {volume_id!r} is being backtracked or deleted right now; retry in a moment")
        task = self._opening.get(volume_id)
        if task is None:
            task = self._opening[volume_id] = asyncio.create_task(self._open(volume_id))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                raise Unavailable(
                    f"volume {volume_id!r} was closed while it was being opened (a backtrack or a delete); "
                    "retry in a moment"
                ) from None
            raise
        finally:
            if task.done() and self._opening.get(volume_id) is task:
                self._opening.pop(volume_id, None)

    async def cancel_open(self, volume_id: str) -> None:
        """Stop an open of the volume under way (it may have read geometry the name is leaving)."""
        task = self._opening.pop(volume_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _open(self, volume_id: str) -> Volume:
        try:
            await self.control_plane.DescribeVolume(
                cp_pb.DescribeVolumeRequest(volume_id=volume_id), timeout=CONTROL_PLANE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise UnknownVolume(
                    f"volume {volume_id!r} does not exist; create it first (`sixfold volume create {volume_id}`)"
                ) from None
            raise control_plane_error(error, f"opening volume {volume_id!r}") from None
        volume = Volume(volume_id, self.control_plane, self.channels)
        try:
            await asyncio.wait_for(volume.open(), OPEN_TIMEOUT_S)
        except BaseException:
            await volume.close()
            raise
        self.volumes[volume_id] = volume
        return volume

    async def close(self) -> None:
        """Close every open volume (a writer stepping down, or the process stopping); opens under way stop."""
        for volume_id in list(self._opening):
            await self.cancel_open(volume_id)
        volumes, self.volumes = self.volumes, {}
        for volume in volumes.values():
            await volume.close()
        self._page0_checked.clear()

    async def CreateVolume(self, request: vpb.CreateVolumeRequest, context: Any) -> vpb.CreateVolumeResponse:
        if not request.volume_id:
            raise InvalidRequest("the request names no volume_id")
        try:
            await self.control_plane.CreateVolume(
                cp_pb.CreateVolumeRequest(
                    volume_id=request.volume_id,
                    page_size=request.page_size,
                    segment_size_bytes=request.segment_size_bytes,
                    backtrack_window_s=request.backtrack_window_s,
                ),
                timeout=CREATE_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise AlreadyExists(
                    f"volume {request.volume_id!r} already exists (`sixfold volume status {request.volume_id}` "
                    "shows it)"
                ) from None
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(error.details() or "the control plane refused the volume's geometry") from None
            raise control_plane_error(error, f"creating volume {request.volume_id!r}") from None
        volume = await self.volume(request.volume_id)
        return vpb.CreateVolumeResponse(status=volume.status())

    async def WritePages(self, request: vpb.WritePagesRequest, context: Any) -> vpb.WritePagesResponse:
        volume = await self.writable(request.volume_id)
        patches = [Patch(p.page_no, p.offset, p.data) for p in request.patches]
        lsn = await volume.write(patches)
        return vpb.WritePagesResponse(lsn=lsn)

    async def writable(self, volume_id: str) -> Volume:
        """The open volume, for raw page writes: refused when it holds a SQLite database."""
        volume = await self.volume(volume_id)
        if volume_id not in self._page0_checked:
            # Once per volume: a database made before this process started (the SQL engine marks the ones
            # it opens itself).
            _, pages = await volume.read([0])
            volume.holds_database = volume.holds_database or pages[0][1].startswith(SQLITE_MAGIC)
            self._page0_checked.add(volume_id)
        if volume.holds_database:
            raise HoldsDatabase(
                f"volume {volume_id!r} holds a SQLite database (`sixfold sql --volume {volume_id}`); "
                "raw page writes would corrupt it. Write pages to another volume (`sixfold volume create NAME`)"
            )
        return volume

    async def ReadPages(self, request: vpb.ReadPagesRequest, context: Any) -> vpb.ReadPagesResponse:
        if not request.page_nos:
            raise InvalidRequest("the request names no pages to read")
        if len(request.page_nos) > PAGES_PER_READ_MAX:
            raise InvalidRequest(f"{len(request.page_nos)} pages asked; at most {PAGES_PER_READ_MAX} per request")
        volume = await self.volume(request.volume_id)
        read_point, pages = await volume.read(list(request.page_nos), from_storage=request.from_storage)
        return vpb.ReadPagesResponse(
            read_point=read_point, pages=[vpb.PageImage(page_no=p, data=data, page_lsn=lsn) for p, data, lsn in pages]
        )

    async def GetVolumeStatus(self, request: vpb.GetVolumeStatusRequest, context: Any) -> vpb.GetVolumeStatusResponse:
        volume = await self.volume(request.volume_id)
        return vpb.GetVolumeStatusResponse(status=volume.status())

    async def ListVolumes(self, request: vpb.ListVolumesRequest, context: Any) -> vpb.ListVolumesResponse:
        try:
            reply = await self.control_plane.ListVolumes(cp_pb.ListVolumesRequest(), timeout=CONTROL_PLANE_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise control_plane_error(error, "listing the volumes") from None
        out = []
        for geometry in reply.volumes:
            volume = self.volumes.get(geometry.volume_id)
            out.append(
                volume.status()
                if volume
                else vpb.VolumeStatus(
                    volume_id=geometry.volume_id,
                    page_size=geometry.page_size,
                    segment_size_bytes=geometry.segment_size_bytes,
                    geometry_epoch=geometry.geometry_epoch,
                )
            )
        return vpb.ListVolumesResponse(volumes=out)
