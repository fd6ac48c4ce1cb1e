"""Encryption at rest in the store: every record and page version of a segment that has a data key is
sealed (AES-256-GCM, storage/security/envelope.py) before it reaches LMDB and opened when read. Pure
except the cipher.

Rules:
1. A segment's key is its metadata's `wrapped_data_key` (hex; "" : rows in clear, a node started without
   --kms). The store never holds a master key: `DataKeys.data_key(wrapped)` gives the plaintext data key
   (the node's keyring asks the key service and holds the key for a lease) or raises `KeyUnavailable`.
2. A row is sealed bound to where it lies on this node: ("record", segment id, LSN) or ("page", segment id,
   page, LSN). A sealed row copied under another key or segment fails to open. Rows never move between
   nodes sealed: repair, gossip and hydration send plaintext over mutual TLS and the receiver seals again.
3. A row that fails to open is a bad copy (ChecksumMismatch, DATA_LOSS): scrubbing quarantines it and
   gossip fetches a sound one, as for a CRC failure. A key that is not at hand is not a bad copy:
   `KeyUnavailable` goes up to the caller untouched (nothing is quarantined, the write is refused).
4. The CRC-32C inside each row (storage/records.py) is of the plaintext: once opened, a row is checked
   exactly as an unsealed one.
"""

from __future__ import annotations

import functools
from typing import Protocol

from sixfold.storage.errors import ChecksumMismatch, KeyUnavailable, StorageError
from sixfold.storage.security import envelope
from sixfold.storage.segment_meta import SegmentMeta


class DataKeys(Protocol):
    """Rule 1: the plaintext data key of a wrapped one (hex), or `KeyUnavailable`; `ensure` is the same check
    for the event loop (it may wait on the key service without blocking it)."""

    def data_key(self, wrapped_hex: str) -> bytes: ...

    async def ensure(self, wrapped_hex: str) -> None: ...


def record_aad(meta: SegmentMeta, lsn: int) -> bytes:
    """`envelope.aad_for("record", segment id, lsn)`, byte for byte, with the fixed prefix built once per segment."""
    return _prefix("record", meta.segment_id) + envelope.aad_part(lsn)


def version_aad(meta: SegmentMeta, page_no: int, lsn: int) -> bytes:
    """`envelope.aad_for("page", segment id, page_no, lsn)`, byte for byte (as `record_aad`)."""
    return _prefix("page", meta.segment_id) + envelope.aad_part(page_no) + envelope.aad_part(lsn)


@functools.lru_cache(maxsize=4096)
def _prefix(kind: str, segment_id: str) -> bytes:
    return envelope.aad_part(kind) + envelope.aad_part(segment_id)


def seal(keys: DataKeys | None, meta: SegmentMeta, aad: bytes, plain: bytes) -> bytes:
    """The stored form of a row (rules 1-2)."""
    if not meta.wrapped_data_key:
        return plain
    return envelope.seal(_key(keys, meta), plain, aad)


def open_(keys: DataKeys | None, meta: SegmentMeta, aad: bytes, stored: bytes | memoryview, where: str) -> bytes:
    """The plaintext of a stored row; ChecksumMismatch if it fails to open (rule 3)."""
    if not meta.wrapped_data_key:
        return bytes(stored)
    key = _key(keys, meta)
    try:
        return envelope.open_(key, bytes(stored), aad)
    except envelope.WrongKey as error:  # the key handed over does not fit at all: the key's fault, not the row's
        raise KeyUnavailable(f"segment {meta.segment_id}'s data key is unusable ({error.message})") from error
    except (envelope.Tampered, StorageError) as error:
        if isinstance(error, KeyUnavailable):
            raise
        raise ChecksumMismatch(f"{where} does not open under its segment's data key ({error.message})") from error


def require_key(keys: DataKeys | None, meta: SegmentMeta) -> None:
    """Rule 1 for a row taken from memory instead of opened (storage/store/recent_records.py): a sealed
    segment's rows are served only while its data key is at hand; KeyUnavailable otherwise."""
    if meta.wrapped_data_key:
        _key(keys, meta)


def _key(keys: DataKeys | None, meta: SegmentMeta) -> bytes:
    if keys is None:
        raise KeyUnavailable(
            f"segment {meta.segment_id} of volume {meta.volume_id} is encrypted at rest, but this node was "
            "started without a key service (--kms): its rows can be neither stored nor read"
        )
    return keys.data_key(meta.wrapped_data_key)
