"""Row keys of a storage node's LMDB tables. Pure.

Integers are big-endian so keys sort by number; every row of a segment starts with its node-local
`seg_no` (u32), so one segment's rows are one contiguous key range of each table:

    segments, segments_copy   segment_id (utf-8)              -> SegmentMeta (storage/segment.py)
    records                   seg_no u32 | lsn u64            -> encoded LogRecord (CRC-32C inside)
    page_index                seg_no u32 | page u64 | lsn u64 -> b""   (which records touch a page)
    versions                  seg_no u32 | page u64 | lsn u64 -> encoded page version (CRC-32C inside)
    meta                      b"probe"                         -> the disk probe's last write
"""

from __future__ import annotations

import struct

U32 = struct.Struct(">I")
SEG_LSN = struct.Struct(">IQ")
SEG_PAGE_LSN = struct.Struct(">IQQ")


def record_key(seg_no: int, lsn: int) -> bytes:
    return SEG_LSN.pack(seg_no, lsn)


def page_key(seg_no: int, page_no: int, lsn: int) -> bytes:
    return SEG_PAGE_LSN.pack(seg_no, page_no, lsn)


def prefix(seg_no: int) -> bytes:
    return U32.pack(seg_no)


def seg_no_of(key: bytes | memoryview) -> int:
    return int(U32.unpack_from(key, 0)[0])
