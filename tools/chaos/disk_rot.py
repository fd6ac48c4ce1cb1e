"""Disk faults written into a stopped storage node's LMDB file, and what each one did.

- `flip_byte`: one byte flipped inside a stored record (bit rot), in every copy of it;
- `rot_metadata`: a segment's stored metadata edited in place, in the live copies only
  (a rotten digit, or a forged copy with a valid CRC-32C);
- `rot_tree`: whole LMDB pages overwritten with random bytes, around a live page.

tools/chaos/lmdb_pages.py finds the live pages. The node must be stopped; the
nemesis (faults.py) logs each call as a fault action.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from sixfold.tools.chaos import lmdb_pages

META_TABLES = ("segments", "segments_copy")  # the two copies of a segment's stored metadata


@dataclass
class FlipResult:
    node: str
    key: int
    token: str
    data_file: str
    copies_flipped: int  # LMDB's copy-on-write leaves old copies of a page behind; all are flipped
    offsets: list[int]


@dataclass
class MetaRot:
    """One segment's stored metadata rotted on a stopped node."""

    node: str
    segment_id: str
    mode: str  # "one-copy" (a rotten digit in one copy), "both-copies" (in both), "forged" (CRC fixed, both)
    edits: list[tuple[str, int, int]]  # (table, SCL before, SCL after) per copy edited
    copies_after: list[lmdb_pages.CopyState]  # what the node will read

    @property
    def held(self) -> int:
        """The SCL stored before the edit: what the segment's records proved when the node stopped."""
        return self.edits[0][1]

    @property
    def claimed(self) -> int:
        return self.edits[0][2]


@dataclass
class TreeRot:
    node: str
    token: str  # the acknowledged payload whose live page the noise starts around
    page: int  # the live page holding it
    first_byte: int
    bytes_overwritten: int
    pages: int
    tables_hit: dict[str, int]  # table -> live pages of it overwritten ("free" for free pages)
    data_file: str
    targeted: bool  # False: the live pages could not be told apart; the first copy of the token was hit


def flip_byte(node: str, data_file: Path, key: int, needles: list[tuple[str, bytes]]) -> FlipResult:
    """Flip one byte in the middle of the first needle (newest first) found in the node's LMDB file.

    The node must be stopped. Every copy of the needle in the file is flipped: LMDB
    writes pages copy-on-write, so stale copies of a leaf page may sit in free pages
    beside the live one, and only flipping them all makes sure the live record is hit.
    """
    blob = bytearray(data_file.read_bytes())
    for token, needle in needles:
        offsets = []
        at = blob.find(needle)
        while at >= 0:
            offsets.append(at)
            at = blob.find(needle, at + 1)
        if not offsets:
            continue
        middle = len(token.encode()) // 2  # inside the token itself, not its padding
        with open(data_file, "r+b") as f:
            for at in offsets:
                f.seek(at + middle)
                f.write(bytes([blob[at + middle] ^ 0x01]))
            f.flush()
            os.fsync(f.fileno())
        return FlipResult(node, key, token, str(data_file), len(offsets), offsets)
    where = "" if key < 0 else f" to page {key}"
    raise RuntimeError(f"none of the {len(needles)} tokens written{where} is in {data_file}")


def stored_metadata(data_file: Path, segment_id: str) -> list[lmdb_pages.CopyState]:
    """The live metadata copies of a segment in a stopped node's file."""
    return lmdb_pages.metadata_copies(data_file, segment_id, META_TABLES)


def rot_metadata(node: str, data_file: Path, segment_id: str, mode: str, delta: int, table: str) -> MetaRot:
    """Raise the SCL in a stopped node's stored metadata of `segment_id` by `delta`, in place, keeping
    the number of digits, in the live copies only (stale copies in freed pages are never read):
    - "one-copy": the copy in `table`, its CRC-32C left as it was (that copy no longer checks);
    - "both-copies": both copies, CRCs left (no copy checks: the segment is lost);
    - "forged": both copies, CRCs recomputed (they check; only the records can refute them)."""
    tables = (table,) if mode == "one-copy" else META_TABLES
    edits = lmdb_pages.edit_live_metadata(data_file, segment_id, delta, tables, fix_crc=mode == "forged")
    return MetaRot(node, segment_id, mode, edits, stored_metadata(data_file, segment_id))


def rot_tree(node: str, data_file: Path, needles: list[tuple[str, bytes]], pages: int, rng: random.Random) -> TreeRot:
    """Overwrite `pages` whole LMDB pages of a stopped node's file with random bytes, around the live
    page (of the records table, else of any table) holding the first needle (newest first) found
    there: the pages the node reads, not stale copies in freed pages."""
    blob = data_file.read_bytes()
    try:
        lay: lmdb_pages.Layout | None = lmdb_pages.layout(blob)
    except ValueError:
        lay = None
    found: tuple[str, int, bool] | None = None
    if lay is not None:
        for tables in (("records",), tuple(sorted(set(lay.owner.values())))):
            found = next(
                (
                    (token, page, True)
                    for token, needle in needles
                    if (page := lmdb_pages.live_page_of(blob, lay, needle, tables)) is not None
                ),
                None,
            )
            if found:
                break
    if found is None:
        found = next(
            (
                (token, blob.find(needle) // lmdb_pages.LMDB_PAGE, False)
                for token, needle in needles
                if blob.find(needle) >= 0
            ),
            None,
        )
    if found is None:
        raise RuntimeError(f"none of the {len(needles)} acknowledged tokens is in {data_file}")
    token, page, targeted = found
    page_size = lay.page_size if lay is not None else lmdb_pages.LMDB_PAGE
    first_page = max(lmdb_pages.META_PAGES, page - rng.randrange(pages))
    noise = bytes(rng.getrandbits(8) for _ in range(pages * page_size))
    first, size = lmdb_pages.overwrite(data_file, first_page, pages, noise, page_size)
    hit: dict[str, int] = {}
    for p in range(first // page_size, (first + size) // page_size):
        table = (lay.table_of(p) if lay is not None else None) or "free"
        hit[table] = hit.get(table, 0) + 1
    return TreeRot(node, token, page, first, size, size // page_size, hit, str(data_file), targeted)
