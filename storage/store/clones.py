"""Clone segments in the store (storage/lineage.py decides): a child checked against its parent inside the
write transaction that creates it, children that lose their link in the transaction that replaces their
parent's pages, and the keep points the parent's GC holds for them.

The parent -> children index (`StoreBase._children`) is rebuilt from the metadata in memory whenever a
link appears or goes; every change runs on the writer thread, like the GC that reads it.
"""

from __future__ import annotations

import logging
from typing import Any

from sixfold.storage import lineage
from sixfold.storage.segment import Segment, SegmentMeta
from sixfold.storage.store.rows import Rows

log = logging.getLogger(__name__)


class Clones(Rows):
    def _put_clone(self, txn: Any, fresh: SegmentMeta) -> None:
        """Lineage rule 6 against the parent as this write transaction stores it, then the child's metadata
        with its starting watermarks (rule 1). GC runs on the same thread, so the parent's floor checked
        here is the one its next GC sees, with this child's keep point in place."""
        parent = self.segments.get(fresh.parent_segment_id)
        tail = 0
        if parent is not None:
            tail = self._chain_tail_at_or_below(txn, parent.meta, min(parent.tracker.scl, fresh.branch_lsn))
        lineage.check_create(fresh, parent, tail)
        lineage.start_clone(fresh)
        self._put_meta(txn, fresh)

    def _orphans_in_txn(self, txn: Any, parent_id: str, below_lsn: int) -> list[Segment]:
        """Lineage rule 7: every child of `parent_id` that reads it below `below_lsn` loses its link, durably
        in this transaction; returns their new states, to publish (`_publish_orphans`) after the commit."""
        orphans = []
        for child_id in self._children.get(parent_id, ()):
            child = self.segments.get(child_id)
            if child is None or child.meta.parent_read_lsn >= below_lsn:
                continue
            seg = child.copy()
            lineage.lose_parent(seg)
            self._put_meta(txn, seg.meta)
            orphans.append(seg)
        return orphans

    def _publish_orphans(self, parent_id: str, orphans: list[Segment], why: str) -> None:
        for seg in orphans:
            self.segments[seg.meta.segment_id] = seg
            log.warning(
                "segment %s lost its parent %s (%s): it serves no reads until it is hydrated from a peer as a "
                "flattened copy",
                seg.meta.segment_id,
                parent_id,
                why,
            )
        if orphans:
            self._index_lineage()

    def keep_points_of(self, segment_id: str) -> list[int]:
        """Lineage rule 5: the LSNs this segment's children read it at."""
        return lineage.keep_points(
            self.segments[c].meta for c in self._children.get(segment_id, ()) if c in self.segments
        )
