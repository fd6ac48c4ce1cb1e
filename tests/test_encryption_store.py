"""Encryption at rest in a storage node's store, on real LMDB files (no processes): every record and page
version sealed under the volume's data key (storage/store/sealing.py), a copy that does not open treated as a
bad copy, a key not at hand never taken for damage; and the node's keyring (storage/security/keyring.py):
leases, renewal, and refusal once the key service is gone. Randomness: only AES-GCM's nonces (os.urandom)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import lmdb
import pytest

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.errors import KeyUnavailable
from sixfold.storage.keys import record_key
from sixfold.storage.scrub import Scrubber
from sixfold.storage.security import envelope
from sixfold.storage.security.keyring import Keyring
from sixfold.storage.store import SegmentStore
from sixfold.tools.sim.keys import SIM_MASTER_KEY, SimKeys
from tests.test_store import SEG, batch, commit_ok, meta

pytestmark = pytest.mark.unit

MARKER = b"MARKER-d41d8cd98f00-AT-REST"


async def inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


class NoKeys:
    """A keyring whose key service is gone and that holds nothing."""

    def data_key(self, wrapped_hex: str) -> bytes:
        raise KeyUnavailable("the key service at test:0 did not unwrap it (gone)")

    async def ensure(self, wrapped_hex: str) -> None:
        self.data_key(wrapped_hex)


def sealed_meta(wrapped: bytes) -> Any:
    m = meta()
    m.wrapped_data_key = wrapped.hex()
    return m


def filled(tmp_path: Path, count: int = 30) -> tuple[str, bytes, list[Any]]:
    """A sealed segment holding `count` records of pages 0..5, each carrying MARKER; then closed."""
    wrapped = envelope.wrap(SIM_MASTER_KEY, envelope.new_data_key(), "vol")
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 24, keys=SimKeys())
    store.create_segment(sealed_meta(wrapped))
    chain = ChainBuilder()
    records = [chain.patch(i % 6, MARKER + b"-%04d" % i) for i in range(count)]
    appended = batch(records)
    appended.vdl_hint = records[-1].lsn  # lets coalescing fold up to the last record
    commit_ok(store, appended)
    store.close()
    return path, wrapped, records


def file_bytes(path: str) -> bytes:
    return b"".join(p.read_bytes() for p in Path(path).iterdir() if p.is_file())


def test_rows_are_sealed_on_disk_and_read_back_in_clear(tmp_path: Path) -> None:
    path, _, records = filled(tmp_path)
    assert MARKER not in file_bytes(path), "a record's payload reached the LMDB file in clear"
    store = SegmentStore(path, keys=SimKeys())
    try:
        seg = store.segment(SEG)
        assert seg.tracker.scl == records[-1].lsn, "SCL is proven from the sealed records at start"
        page = store.read_page(SEG, 0, records[-1].lsn).data
        assert page.startswith(MARKER + b"-0024")
        got, _, _ = store.read_records_with_scl(SEG, 0, 0, 0, 0)
        assert [r.encode() for r in got] == [r.encode() for r in records]
        assert store.coalesce_pages(SEG, list(range(6)), records[-1].lsn, 1) == 6
    finally:
        store.close()
    assert MARKER not in file_bytes(path), "a coalesced page version reached the LMDB file in clear"
    store = SegmentStore(path, keys=SimKeys())
    try:
        assert store.read_page(SEG, 5, records[-1].lsn).data.startswith(MARKER + b"-0029")
    finally:
        store.close()


def test_a_missing_key_is_not_damage_nothing_is_salvaged_or_rebuilt(tmp_path: Path) -> None:
    path, _, records = filled(tmp_path)
    with pytest.raises(KeyUnavailable, match="key service"):
        SegmentStore(path, keys=NoKeys())
    with pytest.raises(KeyUnavailable, match="started without a key service"):
        SegmentStore(path)
    store = SegmentStore(path, keys=SimKeys())  # the data is all there once the key is
    try:
        assert store.segment(SEG).tracker.scl == records[-1].lsn and store.segment(SEG).whole
    finally:
        store.close()


def test_a_sealed_row_that_does_not_open_is_a_bad_copy_found_by_the_scrubber(tmp_path: Path) -> None:
    path, _, records = filled(tmp_path)
    victim = records[10]
    rot(path, victim.lsn)
    store = SegmentStore(path, keys=SimKeys())
    try:
        assert store.segment(SEG).tracker.scl == victim.lsn - 1, "the chain stops at the row that does not open"
        scrubber = Scrubber(store, inline, tick_pause_s=0)
        asyncio.run(scrubber.scrub_pass())
        assert scrubber.counts_of(SEG).records_quarantined == 1
    finally:
        store.close()


def test_a_resend_replaces_a_sealed_row_that_does_not_open(tmp_path: Path) -> None:
    path, _, records = filled(tmp_path)
    rot(path, records[10].lsn)
    store = SegmentStore(path, keys=SimKeys())
    try:
        assert store.segment(SEG).tracker.scl == records[10].lsn - 1
        commit_ok(store, batch(records))  # a writer's resend, or gossip's pull, of the same records
        assert store.segment(SEG).tracker.scl == records[-1].lsn, "the rotten copy was replaced"
        assert store.read_page(SEG, 4, records[-1].lsn).data.startswith(MARKER + b"-0028")
    finally:
        store.close()


def rot(path: str, lsn: int) -> None:
    """Flip one bit of the sealed record `lsn` (segment seg_no 1) in a closed store."""
    env = lmdb.open(path, max_dbs=16, map_size=1 << 24)
    try:
        with env.begin(write=True, db=env.open_db(b"records")) as txn:
            key = record_key(1, lsn)
            stored = txn.get(key)
            assert stored is not None
            sealed = bytearray(stored)
            sealed[-20] ^= 0x01  # one bit of the ciphertext: the CRC inside cannot even be read
            txn.put(key, bytes(sealed))
    finally:
        env.close()


def test_an_encrypting_node_never_stores_a_segment_in_clear(tmp_path: Path) -> None:
    from sixfold.storage.node_keys import KeyMismatch, key_for_new_segment

    store = SegmentStore(str(tmp_path / "a"), map_size_bytes=1 << 22, keys=SimKeys())
    clear = SegmentStore(str(tmp_path / "b"), map_size_bytes=1 << 22)
    try:
        with pytest.raises(KeyMismatch, match="stores nothing in clear"):
            asyncio.run(key_for_new_segment(store, SEG, b""))
        with pytest.raises(KeyMismatch, match="cannot encrypt"):
            asyncio.run(key_for_new_segment(clear, SEG, b"\x01" * 80))
        wrapped = envelope.wrap(SIM_MASTER_KEY, envelope.new_data_key(), "vol")
        assert asyncio.run(key_for_new_segment(store, SEG, wrapped)) == wrapped.hex()
    finally:
        store.close()
        clear.close()


class FakeKms:
    def __init__(self) -> None:
        self.up = True
        self.calls = 0
        self.key_length = envelope.KEY_BYTES

    def __call__(self, wrapped: bytes) -> tuple[bytes, str, float]:
        self.calls += 1
        if not self.up:
            raise ConnectionError("connection refused")
        key = envelope.unwrap(SIM_MASTER_KEY, wrapped)[: self.key_length]
        return key, envelope.wrapped_key_id(wrapped), 10.0


def test_the_keyring_holds_a_key_for_its_lease_then_refuses_until_the_key_service_is_back() -> None:
    wrapped = envelope.wrap(SIM_MASTER_KEY, envelope.new_data_key(), "vol7")
    now = [100.0]
    kms = FakeKms()
    ring = Keyring("kms:1", lease_s_max=4, fetch=kms, clock=lambda: now[0])
    key = ring.data_key(wrapped.hex())
    assert key == envelope.unwrap(SIM_MASTER_KEY, wrapped) and kms.calls == 1
    now[0] += 1
    assert ring.data_key(wrapped.hex()) == key and kms.calls == 1, "held for the lease (capped to 4 s)"
    now[0] += 1.5
    assert ring.renew_due() == 1 and kms.calls == 2, "renewed past half its lease"
    kms.up = False
    now[0] += 2
    assert ring.renew_due() == 0
    assert ring.data_key(wrapped.hex()) == key, "the key service is gone, the lease still runs"
    now[0] += 3  # the lease ran out
    with pytest.raises(KeyUnavailable, match=r"data key of vol7 .* key service at kms:1 .* lease ran out"):
        ring.data_key(wrapped.hex())
    calls = kms.calls
    with pytest.raises(KeyUnavailable):
        ring.data_key(wrapped.hex())
    assert kms.calls == calls, "not asked again within RETRY_AFTER_S"
    kms.up = True
    with pytest.raises(KeyUnavailable):
        ring.data_key(wrapped.hex())  # a read or write never waits on the key service for a key held before
    assert ring.renew_due() == 1, "the renewal thread's round gets it back"
    assert ring.data_key(wrapped.hex()) == key
    kms.key_length = 16
    with pytest.raises(KeyUnavailable, match="unusable"):
        Keyring("kms:1", fetch=kms, clock=lambda: now[0]).data_key(wrapped.hex())
    with pytest.raises(ValueError, match="key lease"):
        Keyring("kms:1", lease_s_max=0)
