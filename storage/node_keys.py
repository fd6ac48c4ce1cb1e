"""A storage node's side of encryption at rest, as its RPCs see it: which wrapped data key a new segment
takes, and a new wrapping of a segment's key (`sixfold volume rotate-key`). The sealing itself is
storage/store/sealing.py; the keys in memory are storage/security/keyring.py.

Rules:
1. A node started with a key service (--kms) encrypts every segment it creates: CreateSegment without a
   wrapped data key is refused (FAILED_PRECONDITION), never stored in clear; the key must unwrap now (the
   key service answers), else the creation is refused (UNAVAILABLE, KEY_UNAVAILABLE) and nothing is made.
2. A node without a key service refuses a wrapped data key: it could not keep its promise to encrypt.
3. A new wrapping is taken only if it unwraps to the very key the segment uses (FAILED_PRECONDITION
   otherwise): a different key would make every sealed row unreadable.
"""

from __future__ import annotations

import hmac

from sixfold.storage.errors import InvalidRequest, StorageError
from sixfold.storage.segment_meta import WRAPPED_KEY_HEX_MAX
from sixfold.storage.store import SegmentStore


class KeyMismatch(StorageError):
    status_code_name = "FAILED_PRECONDITION"


async def key_for_new_segment(store: SegmentStore, segment_id: str, wrapped: bytes) -> str:
    """Rules 1-2: the hex wrapped key the new segment's metadata keeps ("" : stored in clear)."""
    if len(wrapped) * 2 > WRAPPED_KEY_HEX_MAX:
        raise InvalidRequest(f"a wrapped data key is at most {WRAPPED_KEY_HEX_MAX // 2} bytes, not {len(wrapped)}")
    keys = store.keys
    if keys is None:
        if wrapped:
            raise KeyMismatch(
                f"segment {segment_id}: this node was started without a key service (--kms) and cannot encrypt "
                "at rest; it refuses a segment that must be encrypted"
            )
        return ""
    if not wrapped:
        raise KeyMismatch(
            f"segment {segment_id}: this node encrypts at rest and the request carries no wrapped_data_key; "
            "it stores nothing in clear"
        )
    await keys.ensure(wrapped.hex())  # KeyUnavailable if it does not unwrap now
    return wrapped.hex()


async def check_rewrap(store: SegmentStore, segment_id: str, wrapped: bytes) -> str:
    """Rule 3: the new wrapping's hex, once it is known to hold the segment's own key."""
    if not wrapped or len(wrapped) * 2 > WRAPPED_KEY_HEX_MAX:
        raise InvalidRequest(f"a wrapped data key is 1 to {WRAPPED_KEY_HEX_MAX // 2} bytes, not {len(wrapped)}")
    meta = store.segment(segment_id).meta
    keys = store.keys
    if keys is None or not meta.wrapped_data_key:
        raise KeyMismatch(f"segment {segment_id} is not encrypted at rest on this node; it has no key to rewrap")
    await keys.ensure(meta.wrapped_data_key)
    await keys.ensure(wrapped.hex())
    current, offered = keys.data_key(meta.wrapped_data_key), keys.data_key(wrapped.hex())
    if not hmac.compare_digest(current, offered):
        raise KeyMismatch(
            f"the new wrapping for segment {segment_id} holds a different data key than the one its rows are "
            "sealed with; it is refused (the rows would become unreadable)"
        )
    return wrapped.hex()
