"""Pure page arithmetic for SQLite on the volume: the file's size from its header, and byte-range diffs.

No I/O. Rules (this module owns them):
1. SQLite's page size is the volume's page size. SQLite page n (1-based) is volume page n - 1, so file
   offset o lies in volume page o // page_size.
2. The file's size is not stored anywhere: it is the "in-header database size" of the SQLite header
   (bytes 28..31 of volume page 0, big-endian, in pages), 0 while page 0 was never written. SQLite keeps
   that field exact on every commit in rollback-journal modes, which is the only mode the VFS allows.
3. A commit ships only the bytes that changed: `diff_patches` finds the runs of differing bytes between a
   page's previous version and its new image, and merges two runs when the equal bytes between them are
   at most `MERGE_GAP_BYTES` (shipping them costs less than the header of one more log record). Every
   patch starts and ends on a differing byte; applying the patches to the old image yields the new one.
4. One commit is one MTR, so it must fit the MTR limits (compute/volume_log.py). `mtr_patches` uses the
   fine-grained diffs when they fit, else one span per page (first to last differing byte), else raises
   `TransactionTooLarge`.
"""

from __future__ import annotations

from collections.abc import Mapping

from sixfold.compute.sql.errors import TransactionTooLarge
from sixfold.compute.volume_log import MTR_BYTES_MAX, MTR_RECORDS_MAX, Patch
from sixfold.storage.records import RECORD_HEADER_BYTES

HEADER_SIZE_OFFSET = 28  # SQLite's "in-header database size", a big-endian u32 count of pages
MERGE_GAP_BYTES = RECORD_HEADER_BYTES  # equal bytes worth sending to save one more record's header
_BLOCK_BYTES = 64  # equal blocks are skipped with one slice comparison; only differing ones go byte by byte


def header_page_count(page0: bytes) -> int:
    """The database's size in pages, from the SQLite header in volume page 0 (rule 2)."""
    if len(page0) < HEADER_SIZE_OFFSET + 4:
        return 0
    return int.from_bytes(page0[HEADER_SIZE_OFFSET : HEADER_SIZE_OFFSET + 4], "big")


def page_span(offset: int, amount: int, page_size: int) -> range:
    """The volume pages a file range [offset, offset + amount) touches (rule 1)."""
    if amount <= 0:
        return range(0)
    return range(offset // page_size, (offset + amount - 1) // page_size + 1)


def differing_runs(old: bytes, new: bytes) -> list[tuple[int, int]]:
    """The maximal runs [start, end) where `old` and `new` differ (same length), in order."""
    assert len(old) == len(new), (len(old), len(new))
    runs: list[tuple[int, int]] = []
    start = -1  # start of the run still open, or -1
    size = len(new)
    for block in range(0, size, _BLOCK_BYTES):
        stop = min(block + _BLOCK_BYTES, size)
        if old[block:stop] == new[block:stop]:
            if start >= 0:
                runs.append((start, block))
                start = -1
            continue
        for i in range(block, stop):
            if old[i] != new[i]:
                if start < 0:
                    start = i
            elif start >= 0:
                runs.append((start, i))
                start = -1
    if start >= 0:
        runs.append((start, size))
    return runs


def diff_patches(old: bytes, new: bytes, page_no: int, merge_gap: int = MERGE_GAP_BYTES) -> list[Patch]:
    """Patches that turn `old` into `new` (rule 3): runs of differing bytes, merged across gaps of at most
    `merge_gap` equal bytes. Empty when the images are equal."""
    merged: list[tuple[int, int]] = []
    for start, end in differing_runs(old, new):
        if merged and start - merged[-1][1] <= merge_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [Patch(page_no, start, bytes(new[start:end])) for start, end in merged]


def mtr_patches(bases: Mapping[int, bytes], images: Mapping[int, bytes]) -> list[Patch]:
    """The one MTR that turns every page's base into its new image (rule 4), pages in order."""
    fine: list[Patch] = []
    spans: list[Patch] = []
    for page_no in sorted(images):
        patches = diff_patches(bases[page_no], images[page_no], page_no)
        fine.extend(patches)
        if patches:
            start, end = patches[0].offset, patches[-1].offset + len(patches[-1].data)
            spans.append(Patch(page_no, start, bytes(images[page_no][start:end])))
    for patches in (fine, spans):
        if len(patches) <= MTR_RECORDS_MAX and sum(len(p.data) for p in patches) <= MTR_BYTES_MAX:
            return patches
    raise TransactionTooLarge(
        f"the transaction changes {len(spans)} pages ({sum(len(p.data) for p in spans)} bytes); one commit "
        f"carries at most {MTR_RECORDS_MAX} page changes and {MTR_BYTES_MAX} bytes: split it into smaller "
        "transactions"
    )
