"""Tampering with a stopped storage node's LMDB file, as a failing disk or an outside tester would: for the
fault tests and the chaos scenarios. Never used by the system itself.

- `edit_metadata`: change a field of a segment's stored metadata (storage/segment.py: magic, CRC-32C, JSON)
  in place, in every copy the file holds (live or left in freed pages), keeping each value's length; with
  `fix_crc` the CRC is recomputed, so only the records can show the lie.
- `overwrite_pages`: replace whole LMDB pages with random bytes, around a needle the file is known to hold
  (a record's payload), so live tree pages are hit.
"""

from __future__ import annotations

import json
import random
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from sixfold.storage.records import crc32c
from sixfold.storage.segment import META_MAGIC

_HEADER = struct.Struct(">4sI")
LMDB_PAGE_BYTES = 4096
LMDB_META_PAGES = 2  # pages 0 and 1 hold LMDB's own meta pages: overwriting them is a different failure


@dataclass(frozen=True)
class MetaEdit:
    offset: int  # of the copy in the file
    field: str
    before: int
    after: int


def _copies(blob: bytes, segment_id: str) -> list[tuple[int, int, int]]:
    """(copy offset, body start, body end) of every stored metadata copy of `segment_id` in the file."""
    found = []
    needle = json.dumps(segment_id).encode()
    for match in re.finditer(re.escape(META_MAGIC), blob):
        start = match.start() + _HEADER.size
        try:
            _, end = json.JSONDecoder().raw_decode(blob[start : start + 65536].decode("latin-1"))
        except ValueError:
            continue
        body = blob[start : start + end]
        if b'"segment_id":' + needle in body:
            found.append((match.start(), start, start + end))
    return found


def edit_metadata(
    path: str | Path, segment_id: str, field: str, delta: int, *, fix_crc: bool = False, copies: int | None = None
) -> list[MetaEdit]:
    """Add `delta` to integer `field` in the stored metadata of `segment_id`, keeping the number of digits (as a
    one-character edit would): in every copy holding the field's newest value (the live copies; older ones lie
    in freed pages), or the first `copies` of them; `fix_crc` makes the copy check again."""
    data = bytearray(Path(path).read_bytes())
    pattern = re.compile(rb'"' + field.encode() + rb'":(\d+)')
    found = []
    for offset, start, end in _copies(bytes(data), segment_id):
        match = pattern.search(bytes(data[start:end]))
        if match is not None:
            found.append((int(match.group(1)), offset, start, end))
    newest = max((value for value, *_ in found), default=None)
    edits = []
    for value, offset, start, end in [f for f in found if f[0] == newest][:copies]:
        body = bytes(data[start:end])
        match = pattern.search(body)
        assert match is not None
        before = value
        after = before + delta
        if len(str(after)) != len(match.group(1)):
            raise ValueError(f"{field} {before} + {delta} changes the number of digits; pick another delta")
        body = body[: match.start(1)] + str(after).encode() + body[match.end(1) :]
        data[start:end] = body
        if fix_crc:
            data[offset:start] = _HEADER.pack(META_MAGIC, crc32c(body))
        edits.append(MetaEdit(offset, field, before, after))
    if not edits:
        raise ValueError(f"no metadata copy of segment {segment_id} with a field {field} in {path}")
    Path(path).write_bytes(bytes(data))
    return edits


def overwrite_pages(path: str | Path, needle: bytes, pages: int, rng: random.Random) -> tuple[int, int]:
    """Overwrite `pages` whole LMDB pages with random bytes from each page holding `needle` (the live copy of
    a page and older copies LMDB left in freed pages look alike, so every one is hit); returns (first byte
    overwritten, bytes overwritten)."""
    data = bytearray(Path(path).read_bytes())
    starts = sorted(
        {
            max(LMDB_META_PAGES, m.start() // LMDB_PAGE_BYTES) * LMDB_PAGE_BYTES
            for m in re.finditer(re.escape(needle), bytes(data))
        }
    )
    if not starts:
        raise ValueError(f"{needle!r} is not in {path}")
    done: set[int] = set()
    for first in starts:
        for page_start in range(first, min(len(data), first + pages * LMDB_PAGE_BYTES), LMDB_PAGE_BYTES):
            if page_start not in done:
                done.add(page_start)
                data[page_start : page_start + LMDB_PAGE_BYTES] = bytes(
                    rng.getrandbits(8) for _ in range(LMDB_PAGE_BYTES)
                )
    Path(path).write_bytes(bytes(data))
    return starts[0], len(done) * LMDB_PAGE_BYTES
