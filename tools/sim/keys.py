"""Encryption at rest inside the simulation: the real sealing of every record and page version on every node
(storage/store/sealing.py) and the control plane's real key handling (storage/control_plane_keys.py), with
the key service replaced by a master key held here (the simulation has no TLS to carry keys over).

Deterministic where it matters: the keys are fixed bytes, and only the random GCM nonces differ from run to
run, which change stored bytes but never a decision (no event names them)."""

from __future__ import annotations

import hashlib

from sixfold.storage.errors import ChecksumMismatch
from sixfold.storage.security import envelope
from sixfold.storage.segment_meta import SegmentMeta
from sixfold.storage.store.sealing import open_, record_aad

SIM_MASTER_KEY = hashlib.sha256(b"sixfold simulation master key").digest()


class SimKeys:
    """storage/store/sealing.py's `DataKeys`: unwrapped here, at once, every time asked."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def data_key(self, wrapped_hex: str) -> bytes:
        key = self._keys.get(wrapped_hex)
        if key is None:
            key = self._keys[wrapped_hex] = envelope.unwrap(SIM_MASTER_KEY, bytes.fromhex(wrapped_hex))
        return key

    async def ensure(self, wrapped_hex: str) -> None:
        self.data_key(wrapped_hex)


class SimKeyMaker:
    """storage/control_plane_keys.py's `KeyMaker` without a key service process."""

    async def generate(self, key_id: str) -> bytes:
        return envelope.wrap(SIM_MASTER_KEY, envelope.new_data_key(), key_id)

    async def rewrap(self, wrapped: bytes) -> tuple[bytes, str, str]:
        master_id = envelope.master_key_id(SIM_MASTER_KEY)
        return envelope.rewrap(SIM_MASTER_KEY, SIM_MASTER_KEY, wrapped), master_id, master_id


def opened_record(keys: SimKeys | None, meta: SegmentMeta, lsn: int, raw: bytes) -> bytes | None:
    """The plaintext of a record row as a node stored it (None if it does not open: rotten), for the checks."""
    try:
        return open_(keys, meta, record_aad(meta, lsn), raw, f"record LSN {lsn}")
    except ChecksumMismatch:
        return None


def wrapped_volume_key(volume_id: str) -> bytes:
    """A data key for the simulation's first volume, wrapped as the key service would."""
    return envelope.wrap(SIM_MASTER_KEY, envelope.new_data_key(), volume_id)
