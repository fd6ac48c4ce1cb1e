"""Which pages of a stopped storage node's LMDB file are live, and where a stored value lies: for the
chaos scenarios that rot a node's disk (`meta-rot`, `tree-rot`). Never used by the system itself.

LMDB writes copy-on-write: a file holds, beside the live B-tree pages, freed pages with older copies
of the same records and metadata. A fault meant to hit what the node will read must hit live pages,
so this walks the trees from the newest meta page (LMDB 0.9 on-disk format, 64-bit build):

- pages 0 and 1 are meta pages (`MDB_meta` after the 16-byte page header); the one with the higher
  txnid is current. It holds two `MDB_db` records: the free-page tree and the main tree, whose leaf
  entries with F_SUBDATA are the named tables (`segments`, `records`, ...), each an `MDB_db` again;
- a page header is pgno (8), pad (2), flags (2), lower (2), upper (2); then `lower - 16` bytes of
  2-byte node offsets;
- a node is lo (2), hi (2), flags (2), key size (2), the key, then (leaf) the value of size
  lo | hi << 16, or (F_BIGDATA) the 8-byte number of its first overflow page, whose header's last
  4 bytes count its pages; a branch node's child page is lo | hi << 16 | flags << 32.

`layout` raises ValueError on anything that does not fit (the caller falls back to a cruder fault).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from sixfold.storage.records import crc32c
from sixfold.storage.segment import META_MAGIC, SegmentMeta

MDB_MAGIC = 0xBEEFC0DE
PAGE_HEADER = 16
META_PAGES = 2
LMDB_PAGE = 4096  # the page size to assume when the file cannot be walked
P_BRANCH, P_LEAF, P_OVERFLOW, P_LEAF2 = 0x01, 0x02, 0x04, 0x20
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
_DB = struct.Struct("<IHHQQQQQ")  # md_pad (page size in the free tree's), flags, depth, 3 page counts, entries, root
_NODE = struct.Struct("<HHHH")
_META_AT = PAGE_HEADER + 4 + 4 + 8 + 8  # magic, version, address, map size
NO_PAGE = 0xFFFFFFFFFFFFFFFF
FREE_TREE = "(free pages)"
MAIN_TREE = "(main)"
_META_HEADER = struct.Struct(">4sI")  # storage/segment.py: magic, CRC-32C of the JSON body


@dataclass(frozen=True)
class StoredValue:
    table: str
    key: bytes
    offset: int  # of the value in the file
    size: int


@dataclass
class Layout:
    page_size: int
    pages: int  # in the file
    txnid: int
    owner: dict[int, str] = field(default_factory=dict)  # live page -> the table (tree) it belongs to
    values: list[StoredValue] = field(default_factory=list)  # values of the tables asked for

    def table_of(self, page: int) -> str | None:
        """The table a page belongs to, or None for a free (or never used) page."""
        return self.owner.get(page)

    def value(self, table: str, key: bytes) -> StoredValue | None:
        return next((v for v in self.values if v.table == table and v.key == key), None)


def layout(blob: bytes, value_tables: tuple[str, ...] = ()) -> Layout:
    """Every live page of the file and its table; the stored values of `value_tables` (live copies only)."""
    if len(blob) < 2 * 512:
        raise ValueError("the file is shorter than LMDB's two meta pages")
    page_size = _DB.unpack_from(blob, _META_AT)[0]  # LMDB keeps the page size in the free tree's md_pad
    if page_size < 512 or page_size & (page_size - 1) or len(blob) < META_PAGES * page_size:
        raise ValueError(f"implausible LMDB page size {page_size}")
    best: tuple[int, list[tuple[int, ...]]] | None = None
    for page in range(META_PAGES):
        base = page * page_size
        magic, _version = struct.unpack_from("<II", blob, base + PAGE_HEADER)
        if magic != MDB_MAGIC:
            raise ValueError(f"meta page {page} does not carry LMDB's magic")
        dbs = [_DB.unpack_from(blob, base + _META_AT + i * _DB.size) for i in range(2)]
        _last_page, txnid = struct.unpack_from("<QQ", blob, base + _META_AT + 2 * _DB.size)
        if best is None or txnid > best[0]:
            best = (txnid, dbs)
    assert best is not None
    txnid, (free_db, main_db) = best
    out = Layout(page_size, len(blob) // page_size, txnid)
    wanted = set(value_tables)

    def walk(root: int, table: str) -> None:
        stack = [root]
        while stack:
            page = stack.pop()
            if page == NO_PAGE:
                continue
            if not META_PAGES <= page < out.pages or page in out.owner:
                raise ValueError(f"table {table}: page {page} is outside the file or reached twice")
            base = page * page_size
            flags, lower = struct.unpack_from("<HH", blob, base + 10)
            if flags & (P_OVERFLOW | P_LEAF2) or not flags & (P_BRANCH | P_LEAF) or lower < PAGE_HEADER:
                raise ValueError(f"table {table}: page {page} is not a plain branch or leaf page (flags {flags:#x})")
            out.owner[page] = table
            count = (lower - PAGE_HEADER) >> 1
            for at in struct.unpack_from(f"<{count}H", blob, base + PAGE_HEADER):
                lo, hi, node_flags, key_size = _NODE.unpack_from(blob, base + at)
                key_at = base + at + _NODE.size
                if flags & P_BRANCH:
                    stack.append(lo | hi << 16 | node_flags << 32)
                    continue
                key = bytes(blob[key_at : key_at + key_size])
                data_at = key_at + key_size
                if node_flags & F_DUPDATA:
                    raise ValueError(f"table {table} has duplicate-key data, which this walk does not follow")
                if node_flags & F_SUBDATA:
                    walk(_DB.unpack_from(blob, data_at)[7], key.decode(errors="replace"))
                    continue
                size = lo | hi << 16
                if node_flags & F_BIGDATA:
                    (first,) = struct.unpack_from("<Q", blob, data_at)
                    (span,) = struct.unpack_from("<I", blob, first * page_size + 12)
                    for p in range(first, first + span):
                        out.owner[p] = table
                    data_at = first * page_size + PAGE_HEADER
                if table in wanted:
                    out.values.append(StoredValue(table, key, data_at, size))

    walk(free_db[7], FREE_TREE)
    walk(main_db[7], MAIN_TREE)
    return out


def read_layout(path: str | Path, value_tables: tuple[str, ...] = ()) -> Layout:
    return layout(Path(path).read_bytes(), value_tables)


def live_page_of(blob: bytes, lay: Layout, needle: bytes, tables: tuple[str, ...]) -> int | None:
    """The first live page of one of `tables` that holds `needle` (not one of its stale copies)."""
    at = blob.find(needle)
    while at >= 0:
        page = at // lay.page_size
        if lay.table_of(page) in tables and (at + len(needle) - 1) // lay.page_size == page:
            return page
        at = blob.find(needle, at + 1)
    return None


@dataclass(frozen=True)
class CopyState:
    """One stored metadata copy as the node will read it."""

    table: str
    checks: bool
    scl: int | None  # what the copy says, if its body still parses
    detail: str


def metadata_copies(path: str | Path, segment_id: str, tables: tuple[str, ...]) -> list[CopyState]:
    """The live metadata copies of `segment_id`: whether each checks (SegmentMeta.from_bytes) and its SCL."""
    blob = Path(path).read_bytes()
    lay = layout(blob, tables)
    out = []
    for table in tables:
        value = lay.value(table, segment_id.encode())
        if value is None:
            out.append(CopyState(table, False, None, "no copy"))
            continue
        raw = blob[value.offset : value.offset + value.size]
        scl = _scl_in(raw)
        try:
            meta = SegmentMeta.from_bytes(raw, where=f"{table}")
        except Exception as error:  # noqa: BLE001 - ChecksumMismatch: the message says why
            out.append(CopyState(table, False, scl, getattr(error, "message", str(error))))
            continue
        out.append(CopyState(table, True, meta.scl, f"checks; SCL {meta.scl}"))
    return out


def _scl_in(raw: bytes) -> int | None:
    marker = b'"scl":'
    at = raw.find(marker)
    if at < 0:
        return None
    digits = bytearray()
    for b in raw[at + len(marker) :]:
        if not 0x30 <= b <= 0x39:
            break
        digits.append(b)
    return int(digits) if digits else None


def edit_live_metadata(
    path: str | Path, segment_id: str, delta: int, tables: tuple[str, ...], fix_crc: bool
) -> list[tuple[str, int, int]]:
    """Add `delta` to the SCL of the live metadata copies of `segment_id` in `tables`, in place and keeping
    the number of digits (a rotten digit); `fix_crc` recomputes the copy's CRC-32C (a forged copy).
    Returns (table, before, after) per copy edited. The file is synced."""
    data = bytearray(Path(path).read_bytes())
    lay = layout(bytes(data), tables)
    edits = []
    for table in tables:
        value = lay.value(table, segment_id.encode())
        if value is None:
            raise ValueError(f"no live copy of segment {segment_id}'s metadata in table {table}")
        raw = bytes(data[value.offset : value.offset + value.size])
        magic, _crc = _META_HEADER.unpack_from(raw, 0)
        if magic != META_MAGIC:
            raise ValueError(f"segment {segment_id}'s metadata in {table} does not start with {META_MAGIC!r}")
        body = raw[_META_HEADER.size :]
        marker = b'"scl":'
        at = body.find(marker)
        before = _scl_in(raw)
        if at < 0 or before is None:
            raise ValueError(f"segment {segment_id}'s metadata in {table} has no SCL")
        after = before + delta
        old, new = str(before).encode(), str(after).encode()
        if len(old) != len(new):
            raise ValueError(f"SCL {before} + {delta} changes the number of digits")
        start = at + len(marker)
        body = body[:start] + new + body[start + len(old) :]
        crc = crc32c(body) if fix_crc else _crc
        data[value.offset : value.offset + value.size] = _META_HEADER.pack(magic, crc) + body
        edits.append((table, before, after))
    _write_synced(path, bytes(data))
    return edits


def overwrite(path: str | Path, first_page: int, pages: int, noise: bytes, page_size: int) -> tuple[int, int]:
    """Overwrite `pages` whole pages from `first_page` (never LMDB's meta pages) with `noise`; synced.
    Returns (first byte, bytes overwritten)."""
    data = bytearray(Path(path).read_bytes())
    first = max(META_PAGES, first_page) * page_size
    end = min(len(data), first + pages * page_size)
    data[first:end] = noise[: end - first]
    _write_synced(path, bytes(data))
    return first, end - first


def _write_synced(path: str | Path, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


__all__ = [
    "FREE_TREE",
    "LMDB_PAGE",
    "MAIN_TREE",
    "META_PAGES",
    "CopyState",
    "Layout",
    "StoredValue",
    "edit_live_metadata",
    "layout",
    "live_page_of",
    "metadata_copies",
    "overwrite",
    "read_layout",
]
