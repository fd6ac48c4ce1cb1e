"""Record encoding and CRC-32C: the fast library agrees with crcmod, every flipped byte is caught."""

from __future__ import annotations

import crcmod
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.errors import BadChecksum, ChecksumMismatch, InvalidRequest
from sixfold.storage.records import (
    RECORD_HEADER_BYTES,
    LogRecord,
    PayloadKind,
    apply_record,
    crc32c,
    decode_page_version,
    decode_record,
    encode_checked,
    encode_page_version,
    make_record,
    validate_shape,
)
from tests.depth import examples

pytestmark = pytest.mark.unit

crc32c_oracle = crcmod.predefined.mkCrcFun("crc-32c")

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def records(draw: st.DrawFn) -> LogRecord:
    lsn = draw(st.integers(min_value=1, max_value=2**64 - 1))
    return LogRecord(
        lsn=lsn,
        page_no=draw(u64),
        kind=draw(st.sampled_from(PayloadKind)),
        offset=draw(st.integers(min_value=0, max_value=2**32 - 1)),
        data=draw(st.binary(max_size=300)),
        prev_volume_lsn=draw(st.integers(min_value=0, max_value=lsn - 1)),
        prev_pg_lsn=draw(st.integers(min_value=0, max_value=lsn - 1)),
        prev_page_lsn=draw(st.integers(min_value=0, max_value=lsn - 1)),
        epoch=draw(st.integers(min_value=1, max_value=2**64 - 1)),
        cpl=draw(st.booleans()),
    )


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283 == crc32c_oracle(b"123456789")


@given(st.binary(max_size=9000))
def test_crc32c_matches_crcmod(data: bytes) -> None:
    assert crc32c(data) == crc32c_oracle(data)


@given(records())
def test_encode_decode_round_trip_and_crc_matches_oracle(record: LogRecord) -> None:
    encoded = record.encode()
    assert decode_record(encoded) == record
    assert int.from_bytes(encoded[:4], "big") == crc32c_oracle(encoded[4:]) == record.crc()
    assert encode_checked(record, crc32c_oracle(encoded[4:])) == encoded


@settings(max_examples=examples(300))
@given(records(), st.data())
def test_any_flipped_byte_is_detected(record: LogRecord, data: st.DataObject) -> None:
    encoded = bytearray(record.encode())
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    encoded[position] ^= 1 << bit
    with pytest.raises(ChecksumMismatch):
        decode_record(bytes(encoded))


def test_truncated_record_is_detected() -> None:
    record = LogRecord(5, 1, PayloadKind.PATCH, 0, b"abc", 4, 4, 0, 1)
    with pytest.raises(ChecksumMismatch):
        decode_record(record.encode()[:20])


def test_wire_crc_mismatch_is_refused() -> None:
    record = LogRecord(5, 1, PayloadKind.PATCH, 0, b"abc", 4, 4, 0, 1)
    with pytest.raises(BadChecksum, match="CRC-32C"):
        encode_checked(record, record.crc() ^ 1)


@given(st.integers(min_value=0, max_value=2**64 - 1), u64, st.binary(min_size=512, max_size=512), st.data())
def test_page_version_round_trip_and_corruption(page_no: int, lsn: int, image: bytes, data: st.DataObject) -> None:
    encoded = encode_page_version(page_no, lsn, image)
    assert decode_page_version(encoded) == (page_no, lsn, image)
    assert int.from_bytes(encoded[:4], "big") == crc32c_oracle(encoded[4:])
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[position] ^= 0x10
    with pytest.raises(ChecksumMismatch):
        decode_page_version(bytes(flipped))


@pytest.mark.parametrize(
    "record, match",
    [
        (LogRecord(0, 1, PayloadKind.PATCH, 0, b"a", 0, 0, 0, 1), "LSN 0"),
        (LogRecord(5, 1, PayloadKind.PATCH, 0, b"a", 0, 5, 0, 1), "backlink"),
        (LogRecord(5, 1, PayloadKind.PATCH, 0, b"a", 0, 2, 3, 1), "page backlink"),
        (LogRecord(5, 1, PayloadKind.PATCH, 0, b"a", 0, 4, 0, 0), "epoch 0"),
        (LogRecord(5, 1, PayloadKind.PATCH, 4095, b"ab", 0, 4, 0, 1), "patches bytes"),
        (LogRecord(5, 1, PayloadKind.PATCH, 0, b"", 0, 4, 0, 1), "empty patch"),
        (LogRecord(5, 1, PayloadKind.IMAGE, 0, b"a" * 100, 0, 4, 0, 1), "exactly 4096"),
    ],
)
def test_shape_errors_name_the_problem(record: LogRecord, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        validate_shape(record, 4096)


def test_apply_patch_and_image() -> None:
    page = bytearray(8)
    apply_record(page, LogRecord(1, 0, PayloadKind.PATCH, 2, b"xy", 0, 0, 0, 1))
    assert bytes(page) == b"\0\0xy\0\0\0\0"
    apply_record(page, LogRecord(2, 0, PayloadKind.IMAGE, 0, b"ABCDEFGH", 1, 1, 1, 1))
    assert bytes(page) == b"ABCDEFGH"


def test_a_commit_time_travels_on_the_cpl_and_is_covered_by_the_crc() -> None:
    record = make_record(7, 2, b"abc", prev_volume_lsn=6, prev_pg_lsn=6, cpl=True, commit_time_us=1_767_225_600_123_456)
    encoded = record.encode()
    assert len(encoded) == record.encoded_size() == RECORD_HEADER_BYTES + 8 + 3
    assert decode_record(encoded) == record
    untimed = make_record(7, 2, b"abc", prev_volume_lsn=6, prev_pg_lsn=6, cpl=True)
    assert len(untimed.encode()) == RECORD_HEADER_BYTES + 3 and decode_record(untimed.encode()).commit_time_us == 0
    flipped = bytearray(encoded)
    flipped[RECORD_HEADER_BYTES + 2] ^= 0x01  # one bit of the time
    with pytest.raises(ChecksumMismatch):
        decode_record(bytes(flipped))


def test_a_commit_time_on_a_record_that_ends_no_mtr_or_out_of_bounds_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="does not end an MTR"):
        validate_shape(make_record(5, 1, b"a", prev_pg_lsn=4, commit_time_us=10), 4096)
    with pytest.raises(InvalidRequest, match="commit time"):
        validate_shape(make_record(5, 1, b"a", prev_pg_lsn=4, cpl=True, commit_time_us=2**63), 4096)


def test_unknown_flags_are_not_trusted() -> None:
    record = make_record(5, 1, b"a", prev_pg_lsn=4, cpl=True)
    body = bytearray(record.body())
    body[3] |= 0x80  # a flag bit no writer sets
    forged = crc32c(bytes(body)).to_bytes(4, "big") + bytes(body)
    with pytest.raises(ChecksumMismatch, match="flags"):
        decode_record(forged)
