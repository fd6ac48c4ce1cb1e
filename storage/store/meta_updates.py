"""Durable changes to a segment's metadata alone (no rows): its volume epoch, its membership and peers,
the rebuild target it measured, its pinned LSNs.

What is accepted is decided by storage/epochs.py (epochs) and here (pins); each change is written to
both metadata copies in one write transaction on the node's writer thread and published after it.
A request that would change nothing (a raise retried by the same writer, a membership installed
already) writes nothing.
"""

from __future__ import annotations

from typing import Any

from sixfold.storage import epochs
from sixfold.storage.errors import ReadPointOutOfRange
from sixfold.storage.records import LSN_MAX
from sixfold.storage.segment import Segment
from sixfold.storage.store.base import StoreBase


class MetaUpdates(StoreBase):
    def raise_volume_epoch(self, segment_id: str, volume_epoch: int, writer_id: str = "") -> int:
        """Take `volume_epoch` for `writer_id` durably (storage/epochs.py rule 4; the same writer raising the
        same epoch again changes nothing and succeeds). Returns the epoch the segment holds. Runs on the
        writer thread."""
        current = self.segment(segment_id)
        if not epochs.plan_raise(
            volume_epoch, writer_id, current.meta.volume_epoch, current.meta.volume_epoch_owner, segment_id
        ):
            return current.meta.volume_epoch

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            seg.meta.volume_epoch = volume_epoch
            seg.meta.volume_epoch_owner = writer_id
            self._put_meta(txn, seg.meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)
        return volume_epoch

    def update_membership(self, segment_id: str, membership_epoch: int, peers: list[list[str]]) -> int:
        """Install a PG membership epoch (and its peers) durably (storage/epochs.py rule 3: the same epoch
        with the same peers again changes nothing). Returns the epoch."""
        current = self.segment(segment_id)
        if not epochs.plan_membership(
            membership_epoch, peers, current.meta.membership_epoch, current.meta.peers, segment_id
        ):
            return membership_epoch

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            seg.meta.membership_epoch = membership_epoch
            seg.meta.peers = [list(p) for p in peers]
            self._put_meta(txn, seg.meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)
        return membership_epoch

    def set_rebuild_target(self, segment_id: str, target_lsn: int) -> Segment:
        """A rebuilding segment measured, from its peers, the highest SCL it may have acknowledged before
        its copy was lost (storage/gossip.py): it must catch up to there before it is whole again. Runs on
        the writer thread."""

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            seg.meta.scl_high_water = max(seg.meta.scl_high_water, min(target_lsn, LSN_MAX))
            seg.meta.rebuilding = False
            self._put_meta(txn, seg.meta)
            return seg

        seg = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        return seg

    def pin_lsns(self, segment_id: str, lsns: list[int]) -> None:
        """Replace the segment's pinned LSNs durably (storage/retention.py: the horizon never passes a
        pin). Runs on the writer thread."""

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            for lsn in lsns:
                if lsn < seg.meta.retention_horizon_lsn or lsn > LSN_MAX:
                    raise ReadPointOutOfRange(
                        f"LSN {lsn} cannot be pinned on segment {segment_id}: it is below the retention horizon "
                        f"{seg.meta.retention_horizon_lsn} (its page versions are no longer kept) or above "
                        f"the highest LSN"
                    )
            seg.meta.pinned_lsns = sorted(set(lsns))
            self._put_meta(txn, seg.meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)

    def set_wrapped_data_key(self, segment_id: str, wrapped_hex: str) -> bool:
        """Keep a new wrapping of the segment's data key (`sixfold volume rotate-key`); the caller has checked
        it unwraps to the same key (storage/node_keys.py). False if the segment had it already."""
        if self.segment(segment_id).meta.wrapped_data_key == wrapped_hex:
            return False

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            seg.meta.wrapped_data_key = wrapped_hex
            self._put_meta(txn, seg.meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)
        return True
