"""Scrubbing and repair with clones (storage/scrub.py, storage/lineage.py): a rotten record in a parent
segment below a clone's branch, and one in the clone's own records, are both found by the scrubber and
quarantined; neither is ever served through the clone's fall-through or its own reads (refused instead);
once peers send the good copies (what gossip does), every read through the clone equals the oracle again.
Real LMDB files with bytes flipped on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from sixfold.storage.errors import ReadPointOutOfRange
from sixfold.storage.store import SegmentStore
from sixfold.tools.chaos.disk_rot import flip_byte
from tests.test_clone_segments import CLONE, PAGES, ROOT, Timeline, seg_meta
from tests.test_scrub import scrub_once
from tests.test_store import batch, commit_ok

pytestmark = pytest.mark.unit

PARENT_TOKEN = b"PARENT-ROT-TARGET-01"
CLONE_TOKEN = b"CLONE-ROT-TARGET-001"


def test_rot_in_a_parent_below_the_branch_and_in_a_clones_own_records_is_found_never_served_and_repaired(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 25)
    store.create_segment(seg_meta(ROOT))
    parent = Timeline(store, ROOT, [0])
    parent.write([(p, b"root%d" % p) for p in range(PAGES)])  # LSNs 1..8
    (rotten_parent,) = parent.write([(3, PARENT_TOKEN)])  # LSN 9, below the branch
    parent.write([(5, b"root-late")])  # LSN 10
    clone = parent.clone(store, CLONE)  # branch 10: page 3 reads through the parent's LSN 9
    clone.write([(1, b"clone-early")])  # 11
    (rotten_clone,) = clone.write([(2, CLONE_TOKEN)])  # 12
    clone.write([(6, b"clone-late")])  # 13
    store.close()
    for token in (PARENT_TOKEN, CLONE_TOKEN):  # every copy LMDB left of it (copy-on-write pages)
        flip_byte("store", Path(path) / "data.mdb", -1, [(token.decode(), token)])

    store = SegmentStore(path, map_size_bytes=1 << 25)
    parent.store = clone.store = store
    try:
        assert scrub_once(store).counts_of(ROOT).records_quarantined == 1
        assert scrub_once(store).counts_of(CLONE).records_quarantined == 0, "found in the first pass already"
        for segment_id in (ROOT, CLONE):
            assert not store.segment(segment_id).whole
        # Never served: the pages the rotten records touch are refused (the parent's through the fall-through
        # too); the parent below its hole still reads as the oracle says.
        for page_no in (2, 3):
            with pytest.raises(ReadPointOutOfRange):
                store.read_page(CLONE, page_no, clone.tail)
        with pytest.raises(ReadPointOutOfRange):
            store.read_page(ROOT, 3, parent.tail)
        with pytest.raises(ReadPointOutOfRange):  # every fall-through reads the parent at 10, above its hole
            store.read_page(CLONE, 0, clone.tail)
        assert store.read_page(ROOT, 0, 8).data == parent.oracle(0, 8)  # below the hole: as before
        # A peer sends the good copies (gossip's repair): everything reads as before the rot.
        commit_ok(store, batch([rotten_parent], segment_id=ROOT, batch_id=90))
        commit_ok(store, batch([rotten_clone], segment_id=CLONE, batch_id=91))
        assert store.segment(ROOT).whole and store.segment(CLONE).whole
        clone.check([10, 11, 12, 13])
        parent.check([9, 10])
        assert scrub_once(store).counts_of(CLONE).records_quarantined == 0
    finally:
        store.close()
