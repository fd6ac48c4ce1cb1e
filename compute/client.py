"""A small synchronous client of the compute node's `compute.v1.VolumeService`.

    with VolumeClient("127.0.0.1:50051") as client:
        client.create_volume("vol1")
        lsn = client.write("vol1", [(3, 0, b"hello"), (4, 100, b"world")])  # one MTR, durable on return
        read_point, pages = client.read("vol1", [3, 4])                      # read at VDL >= lsn
        client.read_page("vol1", 3)[:5]                                       # b"hello"

Every method makes one RPC with the client's timeout. A failed RPC raises
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
    DEADLINE_EXCEEDED    the call took longer than the timeout (a write may still commit)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType

import grpc

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.serving import CHANNEL_OPTIONS

DEFAULT_TIMEOUT_S = 10.0

Patch = tuple[int, int, bytes]  # (page_no, offset, data)


class VolumeError(Exception):
    """A VolumeService call failed: `.code` (grpc.StatusCode) and `.details` (the server's sentence)."""

    def __init__(self, code_name: str | grpc.StatusCode, details: str, rpc_error: grpc.RpcError | None = None) -> None:
        self.code: grpc.StatusCode = (
            code_name if isinstance(code_name, grpc.StatusCode) else getattr(grpc.StatusCode, code_name)
        )
        self.details = details
        self.rpc_error = rpc_error
        super().__init__(f"{self.code.name}: {details}")

    @property
    def code_name(self) -> str:
        return self.code.name

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> VolumeError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "(no details)", error)


class VolumeClient:
    """One channel to a compute node; a context manager that closes it."""

    def __init__(self, address: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = vgrpc.VolumeServiceStub(self._channel)

    def __enter__(self) -> VolumeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: object, timeout_s: float | None) -> object:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s if timeout_s is None else timeout_s)
        except grpc.RpcError as error:
            raise VolumeError.from_rpc_error(error) from error

    # --- volumes ---------------------------------------------------------------------

    def create_volume(
        self, volume_id: str, page_size: int = 0, segment_size_bytes: int = 0, *, timeout_s: float | None = None
    ) -> vpb.VolumeStatus:
        """Create a volume (0 = the server's default page size / segment size); its status."""
        request = vpb.CreateVolumeRequest(
            volume_id=volume_id, page_size=page_size, segment_size_bytes=segment_size_bytes
        )
        return self._call("CreateVolume", request, timeout_s).status  # type: ignore[attr-defined]

    def status(self, volume_id: str, *, timeout_s: float | None = None) -> vpb.VolumeStatus:
        request = vpb.GetVolumeStatusRequest(volume_id=volume_id)
        return self._call("GetVolumeStatus", request, timeout_s).status  # type: ignore[attr-defined]

    def list_volumes(self, *, timeout_s: float | None = None) -> list[vpb.VolumeStatus]:
        reply = self._call("ListVolumes", vpb.ListVolumesRequest(), timeout_s)
        return list(reply.volumes)  # type: ignore[attr-defined]

    # --- writes ----------------------------------------------------------------------

    def write(self, volume_id: str, patches: Iterable[Patch], *, timeout_s: float | None = None) -> int:
        """Write the patches as one MTR (all visible together, or none); its LSN, durable on return."""
        request = vpb.WritePagesRequest(
            volume_id=volume_id,
            patches=[
                vpb.PagePatch(page_no=page_no, offset=offset, data=bytes(data)) for page_no, offset, data in patches
            ],
        )
        return int(self._call("WritePages", request, timeout_s).lsn)  # type: ignore[attr-defined]

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
        request = vpb.ReadPagesRequest(volume_id=volume_id, page_nos=list(page_nos), from_storage=from_storage)
        reply = self._call("ReadPages", request, timeout_s)
        return int(reply.read_point), list(reply.pages)  # type: ignore[attr-defined]

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
