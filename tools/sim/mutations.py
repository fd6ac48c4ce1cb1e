"""Deliberate protocol breaks, to show the simulator has teeth.

Each one changes the real code for the duration of a run (and restores it):
- `ack-at-3`: the writer counts a record complete at 3 of 6 copies instead of 4;
- `skip-truncation`: recovery truncates nothing above VDL;
- `read-past-vdl`: the writer reads each PG at its newest allocated record, not at VDL (and its
  buffer cache, which would hide that, misses);
- `replace-target-0`: the control plane sets every replacement's target LSN to 0, so a new segment
  takes its old one's place before it has hydrated (run with `replace=True`);
- `replace-skip-hydration`: the target is measured right, but a change completes whatever the new
  segment's SCL (run with `replace=True`);
- `trust-stored-scl`: a storage node starting up takes the SCL its metadata stores instead of the one
  its records prove (a forged or rotten copy then makes it claim records it does not hold);
- `fence-on-refusal`: the writer takes any segment's refusal of its epoch as proof that a newer writer
  opened the volume and stops for good (as before issue 10), instead of judging and regaining it;
- `gc-ignores-pin` (time travel, with a short history window so GC runs): a parent segment's GC drops the
  keep points of its children (storage/retention.py rule 6), so a clone, snapshot or backtrack timeline
  reading through it finds the versions it needs collected;
- `resurrect-on-return` (time travel): a storage node that restarts links each clone segment to its parent at
  the parent's chain tail instead of the stored parent_read_lsn (storage/segment_load.py rule 5), so a node
  that was down comes back serving the records a backtrack hid (the timeline left's, above the target) and a
  source's writes after a clone's branch;
- `reader-above-vdl` (replicas): the simulated redo link hands each reader, with every message, the records of
  the writer's MTRs not yet durable and a VDL at the newest of them (tools/sim/replicas.py `ahead`): a reader
  then applies and serves what is not durable;
- `promote-without-epoch` (replicas): a promoted reader opens the volume at the epoch the old writer held (the
  highest it reads) without raising it on the segments, its truncation range stamped with that epoch: the old
  writer is not fenced, and its records above the recovered VDL are not voided.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

MUTATIONS = (
    "ack-at-3",
    "skip-truncation",
    "read-past-vdl",
    "replace-target-0",
    "replace-skip-hydration",
    "trust-stored-scl",
    "fence-on-refusal",
    "gc-ignores-pin",
    "resurrect-on-return",
    "reader-above-vdl",
    "promote-without-epoch",
)
# Set while a promotion opens the new writer (tools/sim/promotion.py): what `promote-without-epoch` breaks.
PROMOTING: ContextVar[bool] = ContextVar("promoting", default=False)


@contextmanager
def applied(name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    import sixfold.compute.quorum as quorum
    import sixfold.compute.volume as volume
    import sixfold.compute.volume_log as volume_log
    from sixfold.storage.segment import TruncationRange

    saved: list[tuple[object, str, object]] = []

    def patch(owner: object, attr: str, value: object) -> None:
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    if name == "ack-at-3":
        patch(quorum, "WRITE_QUORUM", 3)
    elif name == "skip-truncation":
        import sixfold.compute.recovery_steps as recovery_steps

        original = recovery_steps.plan_recovery

        def no_truncation(*args, **kwargs):
            plan = original(*args, **kwargs)
            # Same range, stamped with epoch 1: it voids no record (every record's epoch is >= 1).
            nothing = TruncationRange(plan.truncation.start_lsn, plan.truncation.end_lsn, 1)
            return replace(plan, truncation=nothing, known_truncations=[nothing])

        patch(recovery_steps, "plan_recovery", no_truncation)
    elif name == "read-past-vdl":
        import sixfold.compute.cache as cache

        patch(volume_log.VolumeLog, "read_point", lambda self, pg_index: self.pgs[pg_index].last_lsn)
        patch(cache.BufferCache, "get", lambda self, page_no: None)  # every read goes to storage
    elif name == "replace-target-0":
        import sixfold.storage.control_plane as cp

        original_target = cp.ControlPlane.set_change_target

        def target_0(self, volume_id, pg_index, old_node_id, target_lsn):
            original_target(self, volume_id, pg_index, old_node_id, 0)

        patch(cp.ControlPlane, "set_change_target", target_0)
    elif name == "replace-skip-hydration":
        import sixfold.storage.replacement as replacement

        patch(replacement, "covered_by_truncations", lambda scl, ranges, target: True)
    elif name == "trust-stored-scl":
        import sixfold.storage.segment_load as segment_load
        from sixfold.storage.scl import SclTracker
        from sixfold.storage.segment import Segment

        def trusting(txn, records, meta, record_count, open_record):
            held = segment_load.held_above(txn, records, meta, meta.scl, open_record=open_record)
            tracker = SclTracker.rebuilt(meta.scl, held)
            fixed = meta.copy()
            fixed.scl = tracker.scl
            return Segment(meta=fixed, tracker=tracker), False

        patch(segment_load, "_verified", trusting)
    elif name == "fence-on-refusal":

        def fenced_at_once(self, where, epoch, details):
            if not self.fenced and not self._closed and self.log is not None:
                self.on_fenced(None, f"{where} holds epoch {epoch}: {details}")

        patch(volume.Volume, "on_epoch_refusal", fenced_at_once)
    elif name == "gc-ignores-pin":
        import sixfold.storage.store.coalescing as coalescing

        original_gc = coalescing.plan_page_gc

        def no_keep_points(page_no, horizon, version_lsns, record_lsns, keep_points=()):
            return original_gc(page_no, horizon, version_lsns, record_lsns)

        patch(coalescing, "plan_page_gc", no_keep_points)
    elif name == "resurrect-on-return":
        import sixfold.storage.segment_load as segment_load

        original_load = segment_load.load

        def relinked_at_tail(txn, dbs, open_record=None):
            loaded = original_load(txn, dbs, open_record)
            for seg in loaded.segments.values():
                parent = loaded.segments.get(seg.meta.parent_segment_id) if seg.meta.parent_segment_id else None
                if parent is not None:
                    seg.meta.parent_read_lsn = max(seg.meta.parent_read_lsn, parent.tracker.scl)
            return loaded

        patch(segment_load, "load", relinked_at_tail)
    elif name == "reader-above-vdl":
        pass  # the simulated link does it (tools/sim/replicas.py)
    elif name == "promote-without-epoch":
        _promote_without_epoch(patch)
    else:
        raise ValueError(f"unknown mutation {name!r}; known: {', '.join(MUTATIONS)}")
    try:
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


def _promote_without_epoch(patch: Any) -> None:
    """While PROMOTING: the recovery's epoch is the highest it read (not one past it), no segment is asked to
    raise it, and the truncation range carries it (planned as if newer, so the plan does not refuse it)."""
    import sixfold.compute.opening as opening
    import sixfold.compute.recovery_steps as recovery_steps

    original_next, original_plan, original_call = (
        recovery_steps.next_epoch,
        recovery_steps.plan_recovery,
        opening.Opening._step_call,
    )

    def same_epoch(reports: Any, refused: int = 0) -> int:
        if not PROMOTING.get():
            return original_next(reports, refused)
        return max(1, original_next(reports, refused) - 1)

    def plan_at_same_epoch(reports: Any, pgs: Any, epoch: int, *args: Any, **kwargs: Any) -> Any:
        if not PROMOTING.get():
            return original_plan(reports, pgs, epoch, *args, **kwargs)
        plan = original_plan(reports, pgs, epoch + 1, *args, **kwargs)
        truncation = replace(plan.truncation, epoch=epoch)
        known = [r for r in plan.known_truncations if r != plan.truncation] + [truncation]
        return replace(plan, truncation=truncation, known_truncations=known)

    def no_raise(self: Any, steps: Any, step: Any, stream: Any) -> Any:
        call = original_call(self, steps, step, stream)
        if not PROMOTING.get() or step is not recovery_steps.Step.RAISE_EPOCH:
            return call

        async def taken() -> None:
            steps.epoch_taken(stream.node_id)

        return taken

    patch(recovery_steps, "next_epoch", same_epoch)
    patch(recovery_steps, "plan_recovery", plan_at_same_epoch)
    patch(opening.Opening, "_step_call", no_raise)
