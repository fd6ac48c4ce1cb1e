"""Envelope encryption (storage/security/envelope.py): seal/open round trips, any changed byte or AAD or
key refused, wrapped data keys, rewrap under a new master key and data key versions; and the
throughput on this machine (printed, not asserted: `pytest -s -k throughput`)."""

from __future__ import annotations

import struct
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.errors import InvalidRequest
from sixfold.storage.security import envelope as env
from sixfold.storage.store.sealing import record_aad, version_aad
from tests.depth import examples
from tests.test_store import meta

pytestmark = pytest.mark.unit

DATA_KEY = bytes(range(32))
MASTER_KEY = bytes(range(32, 64))
AAD = env.aad_for("record", "vol0", 3, 12345)


@settings(deadline=None, max_examples=examples(100))
@given(plaintext=st.binary(max_size=5000), key_version=st.integers(0, env.KEY_VERSION_MAX))
def test_seal_then_open_round_trips(plaintext: bytes, key_version: int) -> None:
    sealed = env.seal(DATA_KEY, plaintext, AAD, key_version=key_version)
    assert len(sealed) == len(plaintext) + env.SEAL_OVERHEAD_BYTES
    assert env.sealed_key_version(sealed) == key_version
    assert env.open_(DATA_KEY, sealed, AAD) == plaintext
    assert env.open_({key_version: DATA_KEY}, sealed, AAD) == plaintext
    if len(plaintext) >= 16:
        assert plaintext not in sealed  # encrypted, not merely authenticated


def test_two_seals_of_the_same_bytes_differ() -> None:
    assert env.seal(DATA_KEY, b"same", AAD) != env.seal(DATA_KEY, b"same", AAD)  # random nonces


@settings(deadline=None, max_examples=examples(300))
@given(plaintext=st.binary(max_size=300), data=st.data())
def test_any_changed_byte_is_refused_as_tampered(plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(env.seal(DATA_KEY, plaintext, AAD, key_version=7))
    at = data.draw(st.integers(0, len(sealed) - 1), label="position")
    sealed[at] ^= data.draw(st.integers(1, 255), label="xor")
    for keys in (DATA_KEY, {7: DATA_KEY}):
        with pytest.raises(env.Tampered) as caught:
            env.open_(keys, bytes(sealed), AAD)
        assert caught.value.status_code_name == "DATA_LOSS"


def test_cut_or_extended_bytes_are_refused() -> None:
    sealed = env.seal(DATA_KEY, b"page bytes", AAD)
    for bad in (sealed[:-1], sealed + b"\0", sealed[: env.SEAL_OVERHEAD_BYTES - 1], b""):
        with pytest.raises(env.Tampered):
            env.open_(DATA_KEY, bad, AAD)


def test_bytes_moved_to_another_place_or_key_are_refused() -> None:
    sealed = env.seal(DATA_KEY, b"balance=100", AAD)
    for aad in (env.aad_for("record", "vol0", 3, 12346), env.aad_for("record", "vol1", 3, 12345), b""):
        with pytest.raises(env.Tampered, match="moved from the place"):
            env.open_(DATA_KEY, sealed, aad)
    with pytest.raises(env.Tampered):
        env.open_(env.new_data_key(), sealed, AAD)
    with pytest.raises(env.Tampered, match="version 1, which the volume does not have"):
        env.open_({2: DATA_KEY}, sealed, AAD)


def test_aad_parts_are_unambiguous_and_bounded() -> None:
    assert env.aad_for("a", "bc") != env.aad_for("ab", "c")
    assert env.aad_for(1) != env.aad_for("1") != env.aad_for(b"1")
    with pytest.raises(InvalidRequest):
        env.aad_for()
    with pytest.raises(InvalidRequest):
        env.aad_for("x" * env.AAD_BYTES_MAX)
    with pytest.raises(InvalidRequest):
        env.aad_for(True)


def test_sizes_and_keys_out_of_bounds_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="to seal"):
        env.seal(DATA_KEY, bytes(env.PLAINTEXT_BYTES_MAX + 1), AAD)
    with pytest.raises(env.WrongKey, match="32 bytes"):
        env.seal(DATA_KEY[:16], b"x", AAD)
    with pytest.raises(InvalidRequest, match="key version"):
        env.seal(DATA_KEY, b"x", AAD, key_version=-1)


def test_wrap_then_unwrap() -> None:
    data_key = env.new_data_key()
    assert len(data_key) == env.KEY_BYTES and data_key != env.new_data_key()
    wrapped = env.wrap(MASTER_KEY, data_key, "vol0/1")
    assert data_key not in wrapped and env.wrapped_key_id(wrapped) == "vol0/1"
    assert env.unwrap(MASTER_KEY, wrapped) == data_key
    assert env.unwrap(MASTER_KEY, wrapped, key_id="vol0/1") == data_key
    with pytest.raises(env.WrongKey, match="'vol0/1''s, not 'vol1/1''s"):
        env.unwrap(MASTER_KEY, wrapped, key_id="vol1/1")


def test_a_wrong_master_key_says_so() -> None:
    wrapped = env.wrap(MASTER_KEY, DATA_KEY, "vol0/1")
    other = env.new_master_key()
    with pytest.raises(env.WrongKey, match=f"wrapped by master key {env.master_key_id(MASTER_KEY)}, not by this one"):
        env.unwrap(other, wrapped)
    assert env.master_key_id(MASTER_KEY) == env.master_key_id(bytes(MASTER_KEY))
    assert env.master_key_id(MASTER_KEY).encode() not in MASTER_KEY.hex().encode()


@settings(deadline=None, max_examples=examples(200))
@given(data=st.data())
def test_any_changed_byte_of_a_wrapped_key_is_refused(data: st.DataObject) -> None:
    wrapped = bytearray(env.wrap(MASTER_KEY, DATA_KEY, "vol0/1"))
    at = data.draw(st.integers(0, len(wrapped) - 1), label="position")
    wrapped[at] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises((env.Tampered, env.WrongKey)):
        env.unwrap(MASTER_KEY, bytes(wrapped))


def test_rotate_key_rewraps_and_old_records_still_open() -> None:
    """`sixfold volume rotate-key`: the data key is rewrapped under a new master key (records untouched),
    then a new data key version seals new records while the old version still opens old ones."""
    v1 = env.new_data_key()
    old_record = env.seal(v1, b"old", AAD, key_version=1)
    wrapped_v1 = env.wrap(MASTER_KEY, v1, "vol0/1")
    new_master = env.new_master_key()
    rewrapped = env.rewrap(MASTER_KEY, new_master, wrapped_v1)
    assert env.wrapped_key_id(rewrapped) == "vol0/1"
    with pytest.raises(env.WrongKey):
        env.unwrap(MASTER_KEY, rewrapped)
    keys = {1: env.unwrap(new_master, rewrapped)}
    assert env.open_(keys, old_record, AAD) == b"old"
    keys[2] = env.new_data_key()
    new_record = env.seal(keys[2], b"new", AAD, key_version=2)
    assert env.open_(keys, new_record, AAD) == b"new" and env.open_(keys, old_record, AAD) == b"old"


def test_throughput_on_this_machine() -> None:
    """seal+open MB/s for small records and pages, printed (not asserted: the machine is shared)."""
    data_key = env.new_data_key()
    for size in (100, 4096):
        plaintext = bytes(size)
        rounds, started = 0, time.perf_counter()
        while time.perf_counter() - started < 0.3:
            for _ in range(100):
                env.open_(data_key, env.seal(data_key, plaintext, AAD), AAD)
            rounds += 100
        elapsed = time.perf_counter() - started
        print(
            f"seal+open {size} B: {rounds * size / elapsed / 1e6:.1f} MB/s, {elapsed / rounds * 1e6:.1f} µs per record"
        )


@settings(deadline=None, max_examples=examples(300))
@given(
    segment_id=st.text(min_size=1, max_size=80),
    page_no=st.integers(0, 2**40),
    lsn=st.integers(0, 2**63),
)
def test_the_stores_fast_aads_are_aad_for_byte_for_byte(segment_id: str, page_no: int, lsn: int) -> None:
    """storage/store/sealing.py builds its AADs from a cached per-segment prefix: rows sealed before (by
    `aad_for`) must still open, so the bytes must be the same for every segment id, page and LSN."""

    def oracle(*parts: str | int) -> bytes:  # rule 3 written out: kind byte, 4-byte big-endian length, bytes
        out = b""
        for part in parts:
            data, kind = (str(part).encode(), b"i") if isinstance(part, int) else (part.encode(), b"s")
            out += kind + struct.pack(">I", len(data)) + data
        return out

    m = replace(meta(), segment_id=segment_id)
    assert record_aad(m, lsn) == env.aad_for("record", segment_id, lsn) == oracle("record", segment_id, lsn)
    assert (
        version_aad(m, page_no, lsn)
        == env.aad_for("page", segment_id, page_no, lsn)
        == oracle("page", segment_id, page_no, lsn)
    )


def test_a_cached_cipher_opens_only_under_its_own_key() -> None:
    other = bytes(range(1, 33))
    sealed = env.seal(DATA_KEY, b"row", AAD)
    assert env.open_(DATA_KEY, env.seal(DATA_KEY, b"row", AAD), AAD) == b"row"
    with pytest.raises(env.Tampered):
        env.open_(other, sealed, AAD)  # the cache is keyed by the key: another key's cipher is another object
    assert env.open_(DATA_KEY, sealed, AAD) == b"row"
