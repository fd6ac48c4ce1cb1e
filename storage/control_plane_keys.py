"""The control plane's side of encryption at rest: each volume's data key, kept only wrapped (by the key
service, storage/security/kms_server.py), handed to every segment it creates, and rotated.

Rules:
1. A root volume gets a new data key from the key service the first time a segment of it is created; a
   clone, snapshot or restore takes its source's wrapped key, and a timeline a backtrack left keeps its
   volume's: one data key per lineage (as Aurora keeps clones under the source's key). The wrapped keys
   are persisted in `<data dir>/volume_keys.json` (fsynced) before any segment is created with one.
2. Every CreateSegment carries the volume's wrapped key (`KeyedSegmentClient`), so a replacement or a
   grown PG is encrypted like the rest. When the key service cannot make a key, nothing is created and the
   caller gets UNAVAILABLE with the key service's reason.
3. `RotateVolumeKey`: the key service rewraps the data key under a new master key version; the new wrapping
   is persisted for the whole lineage, then handed to every segment of the volume that a node holds
   (RewrapSegmentKey; a node that misses it keeps the old wrapping, which still unwraps).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import grpc

from sixfold.storage.control_plane_calls import SegmentClient
from sixfold.storage.control_plane_limits import timeline_name
from sixfold.storage.control_plane_persistence import write_json_atomically
from sixfold.storage.errors import StorageError, Unavailable, UnknownVolume
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import key_service_pb2 as kms_pb2
from sixfold.storage.v1 import key_service_pb2_grpc, storage_service_pb2_grpc
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

log = logging.getLogger(__name__)

KEYS_FILE_NAME = "volume_keys.json"
KMS_CALL_TIMEOUT_S = 5.0


class NotEncrypted(StorageError):
    status_code_name = "FAILED_PRECONDITION"


class KeyMaker(Protocol):
    """The key service as the control plane uses it (`GrpcKeyMaker`, or the simulator's own)."""

    async def generate(self, key_id: str) -> bytes: ...

    async def rewrap(self, wrapped: bytes) -> tuple[bytes, str, str]: ...


class GrpcKeyMaker:
    def __init__(self, address: str) -> None:
        self.address = address

    async def _call(self, method: str, request: Any) -> Any:
        try:
            async with transport.aio_channel(self.address, CHANNEL_OPTIONS) as channel:
                stub = key_service_pb2_grpc.KeyServiceStub(channel)
                return await getattr(stub, method)(request, timeout=KMS_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"the key service at {self.address} did not answer {method} ({error.code().name}: {error.details()}); "
                "nothing was changed"
            ) from None

    async def generate(self, key_id: str) -> bytes:
        reply = await self._call("GenerateDataKey", kms_pb2.GenerateDataKeyRequest(key_id=key_id))
        return bytes(reply.wrapped_data_key)

    async def rewrap(self, wrapped: bytes) -> tuple[bytes, str, str]:
        reply = await self._call("RewrapDataKey", kms_pb2.RewrapDataKeyRequest(wrapped_data_key=wrapped))
        return bytes(reply.wrapped_data_key), reply.master_key_id, reply.previous_master_key_id


class VolumeKeys:
    """Rule 1: volume id -> wrapped data key, persisted. `parent_of(volume_id)` names a clone's source ("")."""

    def __init__(
        self, data_dir: str | os.PathLike[str] | None, maker: KeyMaker, parent_of: Callable[[str], str]
    ) -> None:
        """`data_dir` None: kept in memory only (the simulator's control plane)."""
        self.path = Path(data_dir) / KEYS_FILE_NAME if data_dir is not None else None
        self.maker = maker
        self.parent_of = parent_of
        self._wrapped: dict[str, bytes] = {}
        self._lock = asyncio.Lock()  # the six CreateSegment calls of a PG ask at once: one key is made
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            self._wrapped = {str(k): bytes.fromhex(v) for k, v in data.get("volumes", {}).items()}

    def adopt(self, volume_id: str, wrapped: bytes) -> None:
        """A key the volume was given elsewhere (the simulator's first volume), in memory."""
        self._wrapped[self.lineage_key_owner(volume_id)] = wrapped

    def adopt_all(self, other: VolumeKeys) -> None:
        """Every key `other` holds (the simulator's control plane restarting: what its file would hold)."""
        self._wrapped.update(other._wrapped)

    def lineage_key_owner(self, volume_id: str) -> str:
        return timeline_name(volume_id)

    async def wrapped_for(self, volume_id: str) -> bytes:
        """Rule 1: the volume's wrapped key, made (or inherited) and persisted if it has none yet."""
        found = self._wrapped.get(self.lineage_key_owner(volume_id))
        if found is not None:
            return found
        async with self._lock:
            return await self._wrapped_for(volume_id)

    async def _wrapped_for(self, volume_id: str) -> bytes:
        owner = self.lineage_key_owner(volume_id)
        found = self._wrapped.get(owner)
        if found is not None:
            return found
        parent = self.parent_of(owner)
        wrapped = await self._wrapped_for(parent) if parent else await self.maker.generate(owner)
        await self._keep({owner: wrapped})
        if not parent:
            log.info("volume %s has a new data key (kept only wrapped by the key service)", owner)
        return wrapped

    async def inherit(self, volume_id: str, source_volume_id: str) -> None:
        """Rule 1 for a clone, snapshot or restore: the source's key, before any segment of it exists."""
        owner = self.lineage_key_owner(volume_id)
        async with self._lock:
            if owner not in self._wrapped:
                await self._keep({owner: await self._wrapped_for(source_volume_id)})

    async def rotate(self, volume_id: str) -> tuple[bytes, str, str]:
        """Rule 3's first half: the new wrapping, persisted for every volume that shared the old one."""
        async with self._lock:
            old = await self._wrapped_for(volume_id)
            new, master, previous = await self.maker.rewrap(old)
            await self._keep({v: new for v, w in self._wrapped.items() if w == old})
        return new, master, previous

    async def _keep(self, changes: dict[str, bytes]) -> None:
        merged = {**self._wrapped, **changes}
        data = {"volumes": {k: v.hex() for k, v in sorted(merged.items())}}
        if self.path is not None:
            await asyncio.to_thread(write_json_atomically, self.path, data)
        self._wrapped = merged


class KeyedSegmentClient:
    """Rule 2: a `SegmentClient` whose CreateSegment calls carry the volume's wrapped key."""

    def __init__(self, inner: SegmentClient, keys: VolumeKeys) -> None:
        self.inner = inner
        self.keys = keys

    async def create_segment(self, address: str, request: ss_pb2.CreateSegmentRequest) -> None:
        if not request.wrapped_data_key:
            keyed = ss_pb2.CreateSegmentRequest()
            keyed.CopyFrom(request)
            keyed.wrapped_data_key = await self.keys.wrapped_for(request.volume_id)
            request = keyed
        await self.inner.create_segment(address, request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def rewrap_on_nodes(segments: list[tuple[str, str]], wrapped: bytes, timeout_s: float) -> tuple[int, int]:
    """Rule 3's second half: (segments updated, segments missed) over `segments` = [(address, segment id)]."""

    async def one(address: str, segment_id: str) -> bool:
        try:
            async with transport.aio_channel(address, CHANNEL_OPTIONS) as channel:
                stub = storage_service_pb2_grpc.StorageServiceStub(channel)
                request = ss_pb2.RewrapSegmentKeyRequest(segment_id=segment_id, wrapped_data_key=wrapped)
                await stub.RewrapSegmentKey(request, timeout=timeout_s)
            return True
        except grpc.aio.AioRpcError as error:
            log.warning("segment %s at %s kept its old key wrapping: %s", segment_id, address, error.details())
            return False

    results = await asyncio.gather(*(one(a, s) for a, s in segments))
    return sum(results), len(results) - sum(results)


class KeyRpcs:
    """`ControlPlaneService.RotateVolumeKey` (rule 3), mixed into the control plane's servicer. Without a key
    service (`volume_keys` None) volumes are stored in clear and the call is refused."""

    volume_keys: VolumeKeys | None = None
    segment_client: SegmentClient
    _lock: asyncio.Lock
    _published: dict[str, Any]

    def encrypt_at_rest(
        self, data_dir: str | os.PathLike[str] | None, maker: KeyMaker, parent_of: Callable[[str], str]
    ) -> None:
        """Rules 1-2 from now on: every segment created carries its volume's wrapped data key."""
        self.volume_keys = VolumeKeys(data_dir, maker, parent_of)
        self.segment_client = KeyedSegmentClient(self.segment_client, self.volume_keys)

    async def RotateVolumeKey(
        self, request: cp_pb2.RotateVolumeKeyRequest, context: Any
    ) -> cp_pb2.RotateVolumeKeyResponse:
        if self.volume_keys is None:
            raise NotEncrypted(
                "this cluster stores volumes in clear (the control plane runs without a key service, --kms); "
                "there is no data key to rotate"
            )
        async with self._lock:
            geometry = self._published.get(request.volume_id)
            if geometry is None or geometry.deleted:
                raise UnknownVolume(f"there is no volume {request.volume_id!r}; `sixfold volume list` shows them")
            new, master, previous = await self.volume_keys.rotate(request.volume_id)
        segments = [(s.address, s.segment_id) for pg in geometry.protection_groups for s in pg.segments]
        updated, missed = await rewrap_on_nodes(segments, new, KMS_CALL_TIMEOUT_S)
        log.info(
            "volume %s: data key rewrapped under master key %s (was %s); %d segments took it, %d missed",
            request.volume_id,
            master,
            previous,
            updated,
            missed,
        )
        return cp_pb2.RotateVolumeKeyResponse(
            volume_id=request.volume_id,
            master_key_id=master,
            previous_master_key_id=previous,
            segments_updated=updated,
            segments_missed=missed,
        )
