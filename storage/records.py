"""Log records and page versions: the canonical byte encoding and its CRC-32C.

Pure: no I/O. The same encoding is what the CRC covers on the wire (the record
travels as protobuf fields plus `crc32c`) and what is stored in LMDB, so one
check serves both sides of every boundary.

Record encoding (big-endian):

    crc32c u32 | version u8 | kind u8 | flags u16 | lsn u64 | page_no u64 |
    prev_volume_lsn u64 | prev_pg_lsn u64 | prev_page_lsn u64 | epoch u64 |
    offset u32 | data ...

The CRC covers every byte after itself. Flag bit 0 marks a CPL (the last record
of a mini-transaction). Flag bit 1 says a commit time follows the header: the
writer's wall clock in microseconds since the Unix epoch, as a u64 before the data
(only a CPL carries one; it lets time travel turn a time into the newest commit at
or before it).

Page version encoding: crc32c u32 | page_no u64 | lsn u64 | image ...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import google_crc32c

from sixfold.storage.epochs import EPOCH_MAX
from sixfold.storage.errors import BadChecksum, ChecksumMismatch, InvalidRequest

RECORD_FORMAT_VERSION = 1
FLAG_CPL = 0x0001
FLAG_COMMIT_TIME = 0x0002
FLAGS_KNOWN = FLAG_CPL | FLAG_COMMIT_TIME
# A commit time is microseconds since the Unix epoch; far below 2**63 (year 294,000).
COMMIT_TIME_US_MAX = 2**62

_RECORD_BODY_HEADER = struct.Struct(">BBHQQQQQQI")
_CRC = struct.Struct(">I")
_TIME = struct.Struct(">Q")
RECORD_HEADER_BYTES = _CRC.size + _RECORD_BODY_HEADER.size
_VERSION_HEADER = struct.Struct(">IQQ")

# The highest LSN anything may carry (records, truncation ranges, read points, pins, hints): far below
# 2**64, so every sum a writer or recovery forms from LSNs (an LSN plus LAL, plus one) still fits a
# uint64 on the wire. Keys are built from lsn + 1.
LSN_MAX = 2**62
# How far a record may lie past its volume predecessor: a writer allocates densely, and jumps only
# over the truncation ranges of recoveries (LAL each), so a larger gap is not one a writer made.
LSN_STEP_MAX = 2**40


class PayloadKind(IntEnum):
    """Mirrors storage.v1.PayloadKind."""

    PATCH = 1
    IMAGE = 2


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


@dataclass(frozen=True, slots=True)
class LogRecord:
    lsn: int
    page_no: int
    kind: PayloadKind
    offset: int
    data: bytes
    prev_volume_lsn: int
    prev_pg_lsn: int
    prev_page_lsn: int
    epoch: int
    cpl: bool = False
    commit_time_us: int = 0  # the writer's wall clock at the MTR's commit, on its CPL (0: none)

    def body(self) -> bytes:
        """The bytes the CRC covers."""
        flags = (FLAG_CPL if self.cpl else 0) | (FLAG_COMMIT_TIME if self.commit_time_us else 0)
        return (
            _RECORD_BODY_HEADER.pack(
                RECORD_FORMAT_VERSION,
                int(self.kind),
                flags,
                self.lsn,
                self.page_no,
                self.prev_volume_lsn,
                self.prev_pg_lsn,
                self.prev_page_lsn,
                self.epoch,
                self.offset,
            )
            + (_TIME.pack(self.commit_time_us) if self.commit_time_us else b"")
            + self.data
        )

    def crc(self) -> int:
        return crc32c(self.body())

    def encode(self) -> bytes:
        body = self.body()
        return _CRC.pack(crc32c(body)) + body

    def encoded_size(self) -> int:
        return RECORD_HEADER_BYTES + (_TIME.size if self.commit_time_us else 0) + len(self.data)


def make_record(
    lsn: int,
    page_no: int,
    data: bytes,
    *,
    offset: int = 0,
    kind: PayloadKind = PayloadKind.PATCH,
    prev_volume_lsn: int = 0,
    prev_pg_lsn: int = 0,
    prev_page_lsn: int = 0,
    epoch: int = 1,
    cpl: bool = False,
    commit_time_us: int = 0,
) -> LogRecord:
    return LogRecord(
        lsn, page_no, kind, offset, data, prev_volume_lsn, prev_pg_lsn, prev_page_lsn, epoch, cpl, commit_time_us
    )


def decode_record(buf: bytes | memoryview, *, where: str = "record") -> LogRecord:
    """Decode and check a stored record; raise ChecksumMismatch if any byte is wrong."""
    if len(buf) < RECORD_HEADER_BYTES:
        raise ChecksumMismatch(f"{where} is {len(buf)} bytes, shorter than a record header; it is not served")
    (stored_crc,) = _CRC.unpack_from(buf, 0)
    body = bytes(buf[_CRC.size :])
    actual = crc32c(body)
    if actual != stored_crc:
        raise ChecksumMismatch(
            f"{where} failed its CRC-32C check (stored {stored_crc:08x}, computed {actual:08x}); it is not served"
        )
    version, kind, flags, lsn, page_no, pv, pp, ppage, epoch, offset = _RECORD_BODY_HEADER.unpack_from(body, 0)
    if version != RECORD_FORMAT_VERSION or kind not in (PayloadKind.PATCH, PayloadKind.IMAGE):
        raise ChecksumMismatch(f"{where} has format version {version} kind {kind}, which this node does not know")
    if flags & ~FLAGS_KNOWN:
        raise ChecksumMismatch(f"{where} has flags {flags:#06x}, which this node does not know")
    start, commit_time_us = _RECORD_BODY_HEADER.size, 0
    if flags & FLAG_COMMIT_TIME:
        if len(body) < start + _TIME.size:
            raise ChecksumMismatch(f"{where} says it carries a commit time but is too short for one")
        (commit_time_us,) = _TIME.unpack_from(body, start)
        start += _TIME.size
    return LogRecord(
        lsn,
        page_no,
        PayloadKind(kind),
        offset,
        body[start:],
        pv,
        pp,
        ppage,
        epoch,
        bool(flags & FLAG_CPL),
        commit_time_us,
    )


def peek_header(buf: bytes | memoryview) -> tuple[int, int, int, int]:
    """(lsn, prev_pg_lsn, page_no, epoch) of an encoded record without checking its CRC.

    Only for bookkeeping that must go on past a bad record (index rebuilds, truncation);
    nothing read this way is ever served."""
    _, _, _, lsn, page_no, _, prev_pg, _, epoch, _ = _RECORD_BODY_HEADER.unpack_from(buf, _CRC.size)
    return lsn, prev_pg, page_no, epoch


def encode_checked(record: LogRecord, carried_crc: int) -> bytes:
    """Encode a record that crossed the network, refusing it unless it carried the CRC of its encoding."""
    encoded = record.encode()
    actual = _CRC.unpack_from(encoded, 0)[0]
    if actual != carried_crc:
        raise BadChecksum(
            f"record LSN {record.lsn} carries CRC-32C {carried_crc:08x} but its contents give {actual:08x}; "
            "the batch was refused, resend it intact"
        )
    return encoded


def validate_shape(record: LogRecord, page_size: int) -> None:
    """Structural checks that need only the record and the page size."""
    if record.lsn == 0:
        raise InvalidRequest("LSN 0 is reserved (it means 'none' in backlinks); LSNs start at 1")
    if record.lsn > LSN_MAX:
        raise InvalidRequest(f"LSN {record.lsn} is above the highest LSN {LSN_MAX}")
    if record.lsn - record.prev_volume_lsn > LSN_STEP_MAX:
        raise InvalidRequest(
            f"record LSN {record.lsn} lies {record.lsn - record.prev_volume_lsn} past its volume predecessor "
            f"{record.prev_volume_lsn}; a writer never skips more than {LSN_STEP_MAX} LSNs"
        )
    if not (
        record.prev_pg_lsn < record.lsn and record.prev_volume_lsn < record.lsn and record.prev_page_lsn < record.lsn
    ):
        raise InvalidRequest(
            f"record LSN {record.lsn} has a backlink at or above itself "
            f"(volume {record.prev_volume_lsn}, PG {record.prev_pg_lsn}, page {record.prev_page_lsn}); "
            "backlinks point back"
        )
    if record.prev_pg_lsn < record.prev_page_lsn:
        raise InvalidRequest(
            f"record LSN {record.lsn}: its page backlink {record.prev_page_lsn} is newer than its PG backlink "
            f"{record.prev_pg_lsn}, but every record of the page is in the PG"
        )
    if record.epoch == 0:
        raise InvalidRequest(f"record LSN {record.lsn} has epoch 0; epochs start at 1")
    if record.commit_time_us and not record.cpl:
        raise InvalidRequest(f"record LSN {record.lsn} carries a commit time but does not end an MTR (not a CPL)")
    if record.commit_time_us > COMMIT_TIME_US_MAX:
        raise InvalidRequest(
            f"record LSN {record.lsn}: commit time {record.commit_time_us} us is above the highest, "
            f"{COMMIT_TIME_US_MAX} us"
        )
    if record.epoch > EPOCH_MAX:
        raise InvalidRequest(f"record LSN {record.lsn} has epoch {record.epoch}, above the highest epoch {EPOCH_MAX}")
    if record.kind == PayloadKind.IMAGE:
        if record.offset != 0 or len(record.data) != page_size:
            raise InvalidRequest(
                f"record LSN {record.lsn} is a page image of {len(record.data)} bytes at offset {record.offset}; "
                f"an image is exactly {page_size} bytes at offset 0"
            )
    elif record.kind == PayloadKind.PATCH:
        if not record.data:
            raise InvalidRequest(f"record LSN {record.lsn} is an empty patch")
        if record.offset + len(record.data) > page_size:
            raise InvalidRequest(
                f"record LSN {record.lsn} patches bytes {record.offset}..{record.offset + len(record.data)} "
                f"of a {page_size}-byte page"
            )
    else:  # pragma: no cover - PayloadKind is closed
        raise InvalidRequest(f"record LSN {record.lsn} has unknown payload kind {record.kind}")


def apply_record(page: bytearray, record: LogRecord) -> None:
    """Redo one record onto a page image in place."""
    if record.kind == PayloadKind.IMAGE:
        page[:] = record.data
    else:
        page[record.offset : record.offset + len(record.data)] = record.data


def encode_page_version(page_no: int, lsn: int, image: bytes) -> bytes:
    body = _VERSION_HEADER.pack(0, page_no, lsn)[_CRC.size :] + image
    return _CRC.pack(crc32c(body)) + body


def page_version_crc(page_no: int, lsn: int, image: bytes) -> int:
    """The CRC-32C a page version carries (stored and on the wire)."""
    return _CRC.unpack_from(encode_page_version(page_no, lsn, image), 0)[0]


def decode_page_version(buf: bytes | memoryview, *, where: str = "page version") -> tuple[int, int, bytes]:
    """(page_no, lsn, image) of a stored page version; raise ChecksumMismatch on any bad byte."""
    if len(buf) < _VERSION_HEADER.size:
        raise ChecksumMismatch(f"{where} is too short to be a page version; it is not served")
    stored_crc, page_no, lsn = _VERSION_HEADER.unpack_from(buf, 0)
    body = bytes(buf[_CRC.size :])
    actual = crc32c(body)
    if actual != stored_crc:
        raise ChecksumMismatch(
            f"{where} failed its CRC-32C check (stored {stored_crc:08x}, computed {actual:08x}); it is not served"
        )
    return page_no, lsn, bytes(buf[_VERSION_HEADER.size :])
