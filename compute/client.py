"""A small synchronous client of the compute node's `compute.v1.VolumeService`.

    with VolumeClient("127.0.0.1:50051") as client:      # or VolumeClient(Endpoint(CONTROL_PLANE_ADDRESS))
        client.create_volume("vol1")
        lsn = client.write("vol1", [(3, 0, b"hello"), (4, 100, b"world")])  # one MTR, durable on return
        read_point, pages = client.read("vol1", [3, 4])                      # read at VDL >= lsn
        client.read_page("vol1", 3)[:5]                                       # b"hello"

The client reaches one compute instance: a fixed address, or the instance an endpoint means now
(`compute.endpoint_client.Endpoint(control_plane, "cluster")`: the writer, found through the control
plane and found again after a failover; see compute/endpoint_client.py). Every method makes one RPC
with the client's timeout (plus a ResolveEndpoint when the endpoint's address is not known). A failed RPC raises
`VolumeError` (chained from the `grpc.RpcError`, which stays available as
`.rpc_error` and `__cause__`): `.code` is the `grpc.StatusCode`, `.details` the
server's sentence, and `str(error)` is "CODE: details", ready to print. The codes
the compute node uses:

    NOT_FOUND            unknown volume
    ALREADY_EXISTS       create_volume of an existing volume
    INVALID_ARGUMENT     bad page number, patch or an empty MTR
    OUT_OF_RANGE         a page beyond the 128 TiB volume limit
    RESOURCE_EXHAUSTED   the volume is full
    UNAVAILABLE          no write quorum (or the compute node is not reachable)
    FAILED_PRECONDITION  this writer was fenced by a newer one
    ABORTED              the write was not committed and never will be; retry it
    DEADLINE_EXCEEDED    the call took longer than the timeout (a write may still commit)

`.reason` is the machine-readable reason the server attached (google.rpc.ErrorInfo,
see storage/errors.py: FENCED, REOPENING, OUTCOME_UNKNOWN, NOT_COMMITTED, ...; "" if
none). `.may_have_committed` says whether a failed write may still have been stored:
read the page back before writing it again. Arguments out of the wire's range (a page
number over 2^64-1, an offset over 2^32-1) raise VolumeError(INVALID_ARGUMENT) before
any call; a timeout must be more than 0 seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from sixfold.compute.endpoint_client import Channels, Endpoint
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.errors import REASON_OUTCOME_UNKNOWN
from sixfold.storage.status import reason_of

DEFAULT_TIMEOUT_S = 10.0
U32_MAX = (1 << 32) - 1  # offsets and page sizes on the wire
U64_MAX = (1 << 64) - 1  # page numbers and segment sizes on the wire
# Codes after which a write's fate is unknown: the call ended before its answer arrived.
_OUTCOME_UNKNOWN_CODES = frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)

Patch = tuple[int, int, bytes]  # (page_no, offset, data)


STREAM_MTRS_PER_MESSAGE = 256  # write_many's MTRs per WritePagesStream message


def status_of(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number (UNKNOWN for a number it does not know)."""
    return next((code for code in grpc.StatusCode if code.value[0] == number), grpc.StatusCode.UNKNOWN)


def page_patches(patches: Iterable[Patch]) -> list[vpb.PagePatch]:
    """The wire form of an MTR's patches; a page number or offset out of range is refused here (VolumeError,
    INVALID_ARGUMENT), before anything is sent."""
    checked = []
    for page_no, offset, data in patches:
        _in_range("a page number", page_no, U64_MAX)
        _in_range("an offset", offset, U32_MAX)
        checked.append(vpb.PagePatch(page_no=page_no, offset=offset, data=bytes(data)))
    return checked


class VolumeError(Exception):
    """A VolumeService call failed: `.code` (grpc.StatusCode) and `.details` (the server's sentence)."""

    def __init__(
        self, code_name: str | grpc.StatusCode, details: str, rpc_error: grpc.RpcError | None = None, reason: str = ""
    ) -> None:
        self.code: grpc.StatusCode = (
            code_name if isinstance(code_name, grpc.StatusCode) else getattr(grpc.StatusCode, code_name)
        )
        self.details = details
        self.rpc_error = rpc_error
        self.reason = reason
        super().__init__(f"{self.code.name}: {details}")

    @property
    def may_have_committed(self) -> bool:
        """A write that failed this way may still have been stored (or become durable later)."""
        return self.reason == REASON_OUTCOME_UNKNOWN or self.code in _OUTCOME_UNKNOWN_CODES

    @property
    def code_name(self) -> str:
        return self.code.name

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> Self:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "(no details)", error, reason_of(error))


class VolumeClient:
    """Calls to a compute instance (an address, or an Endpoint); a context manager that closes its channels."""

    def __init__(self, target: str | Endpoint, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.target = target
        self.timeout_s = checked_timeout(timeout_s)
        self._channels = Channels(target)

    @property
    def address(self) -> str:
        """The address calls go to now (resolving the endpoint if it is not known)."""
        try:
            return self._channels.address()
        except grpc.RpcError as error:
            raise VolumeError.from_rpc_error(error) from error

    def __enter__(self) -> VolumeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channels.close()

    def _call(self, method: str, request: object, timeout_s: float | None) -> Any:
        timeout = self.timeout_s if timeout_s is None else checked_timeout(timeout_s)
        try:
            return self._channels.call(vgrpc.VolumeServiceStub, method, request, timeout)
        except grpc.RpcError as error:
            raise VolumeError.from_rpc_error(error) from error

    # --- volumes ---------------------------------------------------------------------

    def create_volume(
        self,
        volume_id: str,
        page_size: int = 0,
        segment_size_bytes: int = 0,
        *,
        backtrack_window_s: int = 0,
        timeout_s: float | None = None,
    ) -> vpb.VolumeStatus:
        """Create a volume (0 = the server's default page size / segment size / backtrack window); its status."""
        _in_range("the page size", page_size, U32_MAX)
        _in_range("the segment size", segment_size_bytes, U64_MAX)
        _in_range("the backtrack window", backtrack_window_s, U64_MAX)
        request = vpb.CreateVolumeRequest(
            volume_id=volume_id,
            page_size=page_size,
            segment_size_bytes=segment_size_bytes,
            backtrack_window_s=backtrack_window_s,
        )
        return self._call("CreateVolume", request, timeout_s).status

    def status(self, volume_id: str, *, timeout_s: float | None = None) -> vpb.VolumeStatus:
        request = vpb.GetVolumeStatusRequest(volume_id=volume_id)
        return self._call("GetVolumeStatus", request, timeout_s).status

    def list_volumes(self, *, timeout_s: float | None = None) -> list[vpb.VolumeStatus]:
        reply = self._call("ListVolumes", vpb.ListVolumesRequest(), timeout_s)
        return list(reply.volumes)

    # --- time travel (no page data is copied) ------------------------------------------

    def clone_volume(
        self,
        source_volume_id: str,
        volume_id: str,
        at_lsn: int = 0,
        *,
        at_time_us: int = 0,
        timeout_s: float | None = None,
    ) -> vpb.CloneVolumeResponse:
        """A copy-on-write clone of the source at `at_lsn` (0: its VDL now), or at the newest commit at or before
        `at_time_us` (a point-in-time restore): its lineage and the time taken."""
        _in_range("an LSN", at_lsn, U64_MAX)
        _in_range("a time", at_time_us, U64_MAX)
        request = vpb.CloneVolumeRequest(
            source_volume_id=source_volume_id, volume_id=volume_id, at_lsn=at_lsn, at_time_us=at_time_us
        )
        return self._call("CloneVolume", request, timeout_s)

    def delete_volume(self, volume_id: str, *, timeout_s: float | None = None) -> vpb.DeleteVolumeResponse:
        """Delete a volume (its data stays while clones read it)."""
        return self._call("DeleteVolume", vpb.DeleteVolumeRequest(volume_id=volume_id), timeout_s)

    def create_snapshot(
        self,
        volume_id: str,
        snapshot_name: str,
        at_lsn: int = 0,
        *,
        at_time_us: int = 0,
        timeout_s: float | None = None,
    ) -> vpb.Lineage:
        _in_range("an LSN", at_lsn, U64_MAX)
        _in_range("a time", at_time_us, U64_MAX)
        request = vpb.CreateSnapshotRequest(
            volume_id=volume_id, snapshot_name=snapshot_name, at_lsn=at_lsn, at_time_us=at_time_us
        )
        return self._call("CreateSnapshot", request, timeout_s).snapshot

    def list_snapshots(self, volume_id: str = "", *, timeout_s: float | None = None) -> list[vpb.Lineage]:
        return list(self._call("ListSnapshots", vpb.ListSnapshotsRequest(volume_id=volume_id), timeout_s).snapshots)

    def delete_snapshot(self, snapshot_name: str, *, timeout_s: float | None = None) -> None:
        self._call("DeleteSnapshot", vpb.DeleteSnapshotRequest(snapshot_name=snapshot_name), timeout_s)

    def restore_snapshot(self, snapshot_name: str, volume_id: str, *, timeout_s: float | None = None) -> vpb.Lineage:
        request = vpb.RestoreSnapshotRequest(snapshot_name=snapshot_name, volume_id=volume_id)
        return self._call("RestoreSnapshot", request, timeout_s).volume

    def backtrack(
        self, volume_id: str, to_lsn: int = 0, *, to_time_us: int = 0, timeout_s: float | None = None
    ) -> vpb.BacktrackResponse:
        """Move the volume back (or forward again) to a commit LSN or the newest commit at or before a time."""
        _in_range("an LSN", to_lsn, U64_MAX)
        _in_range("a time", to_time_us, U64_MAX)
        request = vpb.BacktrackRequest(volume_id=volume_id, to_lsn=to_lsn, to_time_us=to_time_us)
        return self._call("Backtrack", request, timeout_s)

    def volume_history(self, volume_id: str, *, timeout_s: float | None = None) -> vpb.VolumeHistoryResponse:
        """The backtrack window, the timelines and the backtracks done."""
        return self._call("VolumeHistory", vpb.VolumeHistoryRequest(volume_id=volume_id), timeout_s)

    # --- writes ----------------------------------------------------------------------

    def write(self, volume_id: str, patches: Iterable[Patch], *, timeout_s: float | None = None) -> int:
        """Write the patches as one MTR (all visible together, or none); its LSN, durable on return."""
        request = vpb.WritePagesRequest(volume_id=volume_id, patches=page_patches(patches))
        return int(self._call("WritePages", request, timeout_s).lsn)

    def write_many(
        self, volume_id: str, mtrs: Iterable[Iterable[Patch]], *, timeout_s: float | None = None
    ) -> list[int | VolumeError]:
        """Many MTRs pipelined over one WritePagesStream (each is its own MTR, durable or not on its own): per
        MTR, in order, its LSN once durable or the VolumeError it failed with. The call returns when every
        one is resolved; `timeout_s` bounds the whole call."""
        timeout = self.timeout_s if timeout_s is None else checked_timeout(timeout_s)
        writes = [
            vpb.PageWrite(request_id=request_id, patches=page_patches(patches))
            for request_id, patches in enumerate(mtrs, start=1)
        ]
        requests = (
            vpb.WritePagesStreamRequest(volume_id=volume_id, writes=writes[i : i + STREAM_MTRS_PER_MESSAGE])
            for i in range(0, len(writes), STREAM_MTRS_PER_MESSAGE)
        )
        out: dict[int, int | VolumeError] = {}
        address = ""
        try:
            address, stub = self._channels.stub(vgrpc.VolumeServiceStub)
            for response in stub.WritePagesStream(requests, timeout=timeout):
                for r in response.results:
                    out[r.request_id] = (
                        r.lsn if r.code == 0 else VolumeError(status_of(r.code), r.message, None, r.reason)
                    )
        except grpc.RpcError as error:
            self._channels.failed(address, error)
            raise VolumeError.from_rpc_error(error) from error
        return [
            out.get(i, VolumeError(grpc.StatusCode.UNKNOWN, "the stream ended without this MTR's result"))
            for i in range(1, len(writes) + 1)
        ]

    def write_page(
        self, volume_id: str, page_no: int, data: bytes, offset: int = 0, *, timeout_s: float | None = None
    ) -> int:
        """Write `data` at `offset` of one page; the LSN."""
        return self.write(volume_id, [(page_no, offset, data)], timeout_s=timeout_s)

    # --- reads -----------------------------------------------------------------------

    def read_images(
        self, volume_id: str, page_nos: Sequence[int], *, timeout_s: float | None = None, from_storage: bool = False
    ) -> tuple[int, list[vpb.PageImage]]:
        """(read point, the PageImage protos: page_no, data, page_lsn) in the server's order.
        `from_storage`: read each page from a segment, skipping the writer's buffer cache."""
        for page_no in page_nos:
            _in_range("a page number", page_no, U64_MAX)
        request = vpb.ReadPagesRequest(volume_id=volume_id, page_nos=list(page_nos), from_storage=from_storage)
        reply = self._call("ReadPages", request, timeout_s)
        return int(reply.read_point), list(reply.pages)

    def read(
        self, volume_id: str, page_nos: Sequence[int], *, timeout_s: float | None = None, from_storage: bool = False
    ) -> tuple[int, dict[int, bytes]]:
        """(read point, {page_no: page bytes}): every page read at the same read point (a VDL)."""
        read_point, images = self.read_images(volume_id, page_nos, timeout_s=timeout_s, from_storage=from_storage)
        return read_point, {int(image.page_no): bytes(image.data) for image in images}

    def read_page(self, volume_id: str, page_no: int, *, timeout_s: float | None = None) -> bytes:
        _, pages = self.read(volume_id, [page_no], timeout_s=timeout_s)
        if page_no not in pages:
            raise VolumeError(grpc.StatusCode.INTERNAL, f"the reply to a read of page {page_no} does not contain it")
        return pages[page_no]


def _in_range(what: str, value: int, most: int) -> None:
    if not 0 <= value <= most:
        raise VolumeError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} must be from 0 to {most}, got {value}")


def checked_timeout(timeout_s: float) -> float:
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"a timeout must be a number of seconds above 0, got {timeout_s}")
    return float(timeout_s)
