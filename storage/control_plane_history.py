"""Backtrack on the control plane's records: a volume's timelines, moving its name to a new timeline, its
history, and dropping the timelines it left once its backtrack window has passed.

Pure, like storage.control_plane (whose `ControlPlane` builds on the `Timelines` class here): the caller
passes the times, asks the storage nodes (storage/control_plane_backtrack.py), creates the segments and
persists. Which timeline a target resolves to is storage/control_plane_timelines.py's.

Rules (this module owns them)
1. Timelines. A volume name points at one volume record, its current timeline. A backtrack leaves it: the
   record stays, hidden, under the internal id `NAME~SERIAL` (SERIAL: its segment ids' serial, so its
   segment ids do not change; `NAME~SERIAL` is no volume id a user can create), with the time it was left,
   the VDL and per-PG chain tails it ended at and the highest LSN its segments held. ListVolumes does not
   show it and DescribeVolume, clone, grow and delete refuse it. The volume's timelines are its current
   record and the left records of its name (not deleted), ordered by the time the name pointed at them.
2. Backtrack to (timeline X, LSN t): validated first (the volume exists, is a volume, is not deleted; one
   tail per PG of the current timeline, none above its VDL; the VDL at or above its branch). The new timeline
   is a clone of X at t (storage/control_plane_lineage.py rules 3-5: X's PGs' six nodes, parent segments on
   the same node, all or nothing) under the volume's name, with a fresh serial, the volume's window and
   creation time, and new LSNs above `lsn_floor` (storage/control_plane_timelines.py rule 2).
3. The swap, once a write quorum of every PG created its segment, in one step: the current record is renamed
   `NAME~SERIAL` and left (rule 1); the volumes and snapshots that read through it (its clones and snapshots,
   whichever timeline they were taken on) follow it to that id; the new record takes the name, with the
   volume's backtracks and this one appended (its time, the timeline left and its VDL, the new timeline, t
   and t's commit time).
4. Expiry. A left timeline whose window has passed since it was left (`abandoned_at_ms + window`), or whose
   volume was deleted, is removed once nothing reads through it (no volume, snapshot or timeline names it
   as parent); its segments become orphans, dropped by healing, and the deleted ancestors its removal frees
   go too (lineage rule 7). A backtrack whose timelines are gone drops out of the history.
5. Deleting a volume (lineage rule 7) also marks its left timelines deleted: each goes as soon as nothing
   reads through it. A new volume of the name never takes serial 0 while a left timeline of an earlier
   volume of that name is still recorded (lineage rule 2).
6. History: the window, the timelines oldest first (the current one last, end 0), the backtracks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sixfold.storage.control_plane_limits import (
    VolumeDeleted,
    check_volume_room,
    hidden_timeline_sentence,
    is_timeline_id,
    timeline_id,
    timeline_name,
)
from sixfold.storage.control_plane_lineage import Lineage, unknown_volume
from sixfold.storage.control_plane_timelines import BacktrackView, History, Timeline
from sixfold.storage.control_plane_values import (
    KIND_SNAPSHOT,
    KIND_VOLUME,
    BacktrackEntry,
    ClonePlan,
    Deletion,
    Volume,
    VolumeGeometry,
)
from sixfold.storage.errors import InvalidRequest


def _merged(*deletions: Deletion) -> Deletion:
    return Deletion(
        any(d.kept_for_clones for d in deletions),
        tuple(v for d in deletions for v in d.volumes_dropped),
        tuple(g for d in deletions for g in d.segment_groups),
    )


class Timelines(Lineage):
    """The volumes' timelines and backtracks (see the rules above)."""

    # -- rule 1: the records ----------------------------------------------------------------

    def current_timeline(self, name: str) -> Volume:
        """The record a volume name points at, refused for anything a backtrack does not apply to."""
        volume = self._volumes.get(name)
        if volume is None:
            raise unknown_volume(name)
        if volume.left:
            raise InvalidRequest(hidden_timeline_sentence(name))
        if volume.kind == KIND_SNAPSHOT:
            raise InvalidRequest(
                f"{name} is snapshot {volume.snapshot_name}: a snapshot never moves; restore it as a new volume"
            )
        if volume.deleted:
            raise VolumeDeleted(self.deleted_sentence(name))
        return volume

    def check_growable(self, volume: Volume) -> None:
        if volume.left:
            raise InvalidRequest(hidden_timeline_sentence(volume.volume_id))
        super().check_growable(volume)

    def _left_of(self, name: str) -> list[Volume]:
        """Rule 1: the timelines the volume left, still recorded and not deleted, oldest first."""
        left = [v for v in self._volumes.values() if v.left and timeline_name(v.volume_id) == name and not v.deleted]
        return sorted(left, key=lambda v: (v.activated_at_ms, v.serial))

    def _timeline(self, volume: Volume, current_end: int) -> Timeline:
        end = volume.end_lsn if volume.left else current_end
        return Timeline(
            volume.volume_id,
            volume.parent_volume_id,
            volume.branch_lsn,
            volume.lsn_floor,
            end,
            volume.activated_at_ms,
            volume.abandoned_at_ms,
        )

    def own_timelines(self, name: str, current_vdl: int) -> list[Timeline]:
        """The volume's timelines, oldest first, the current one last with end_lsn `current_vdl`."""
        current = self.current_timeline(name)
        return [self._timeline(v, 0) for v in self._left_of(name)] + [self._timeline(current, current_vdl)]

    def timeline_map(self, name: str, current_vdl: int) -> dict[str, Timeline]:
        """Every record the volume's timelines read through (theirs and their ancestors'), by id."""
        by_id = {t.timeline_id: t for t in self.own_timelines(name, current_vdl)}
        pending = [t.parent_timeline_id for t in by_id.values()]
        while pending:
            record = self._volumes.get(pending.pop())
            if record is not None and record.volume_id not in by_id:
                by_id[record.volume_id] = self._timeline(record, record.end_lsn)
                pending.append(record.parent_volume_id)
        return by_id

    def end_tails(self, record_id: str) -> tuple[int, ...]:
        """The per-PG chain tails a left timeline ended at (empty for any other record)."""
        return self._volumes[record_id].end_tails

    def new_volume_serial(self, volume_id: str) -> int:
        """Rule 5."""
        if any(timeline_name(v.volume_id) == volume_id for v in self._volumes.values() if v.left):
            return self._next_serial
        return super().new_volume_serial(volume_id)

    # -- rules 2-3: backtrack -----------------------------------------------------------------

    def check_backtrack(self, name: str, current_vdl: int, current_tails: Sequence[int]) -> Volume:
        """Rule 2's validation of what the writer reports of the current timeline."""
        current = self.current_timeline(name)
        pgs = current.protection_groups
        if len(current_tails) != len(pgs):
            raise InvalidRequest(
                f"{len(current_tails)} current tails for the {len(pgs)} PGs of volume {name}; give one per PG, "
                "in PG order"
            )
        for pg_index, tail in enumerate(current_tails):
            if tail > current_vdl:
                raise InvalidRequest(
                    f"the chain tail {tail} of PG {pg_index} is above the current VDL {current_vdl}; each is its "
                    "PG's chain tail at or below the VDL"
                )
        if current_vdl < current.branch_lsn:
            raise InvalidRequest(
                f"the current VDL {current_vdl} is below LSN {current.branch_lsn}, where volume {name}'s "
                "timeline starts; the writer reports its VDL"
            )
        return current

    def upcoming_serial(self) -> int:
        """The serial the next clone or backtrack takes (lineage rule 2)."""
        return self._next_serial

    def left_id(self, name: str) -> str:
        """The id the volume's current timeline takes once left (rule 1)."""
        return timeline_id(name, self.current_timeline(name).serial)

    def plan_backtrack(self, name: str, target_id: str, to_lsn: int, tails: Sequence[int], lsn_floor: int) -> ClonePlan:
        """Rule 2: the new timeline, a clone of `target_id` at `to_lsn` under the name; changes nothing."""
        current = self.current_timeline(name)
        target = self._volumes[target_id]
        assert target_id == name or (target.left and timeline_name(target_id) == name), target_id
        assert len(tails) == len(target.protection_groups) and max(tails, default=0) <= to_lsn, (tails, to_lsn)
        assert to_lsn < lsn_floor, (to_lsn, lsn_floor)
        check_volume_room(name, len(self._volumes))
        serial = self._next_serial
        return ClonePlan(
            name,
            target_id,
            serial,
            to_lsn,
            KIND_VOLUME,
            "",
            current.created_at_ms,
            current.page_size,
            current.segment_size_bytes,
            tuple(self._clone_pg(target, pg, name, serial, tails[pg.pg_index]) for pg in target.protection_groups),
            current.backtrack_window_s,
            lsn_floor,
        )

    def commit_backtrack(
        self,
        plan: ClonePlan,
        created: Collection[tuple[int, str]],
        left: tuple[int, Sequence[int], int],
        at_ms: int,
        to_commit_time_us: int,
    ) -> VolumeGeometry:
        """Rule 3. `left`: the current timeline's VDL, per-PG chain tails and the highest LSN its segments held."""
        name = plan.volume_id
        current = self.current_timeline(name)
        end_lsn, end_tails, lsn_high = left
        left_id = timeline_id(name, current.serial)
        assert left_id not in self._volumes and plan.serial != current.serial, left_id
        del self._volumes[name]
        backtracks = current.backtracks
        current.volume_id, current.backtracks = left_id, []
        current.abandoned_at_ms, current.end_lsn = at_ms, end_lsn
        current.end_tails, current.lsn_high = tuple(end_tails), lsn_high
        self._volumes[left_id] = current
        for volume in self._volumes.values():
            if volume.parent_volume_id == name:
                volume.parent_volume_id = left_id
        for key in [k for k in self._progress if k[0] == name]:
            self._progress[(left_id, *key[1:])] = self._progress.pop(key)
        entry = BacktrackEntry(at_ms, current.serial, end_lsn, plan.serial, plan.branch_lsn, to_commit_time_us)
        volume = Volume(
            name,
            plan.page_size,
            plan.segment_size_bytes,
            len(plan.pgs),
            serial=plan.serial,
            parent_volume_id=left_id if plan.source_volume_id == name else plan.source_volume_id,
            branch_lsn=plan.branch_lsn,
            created_at_ms=current.created_at_ms,
            backtrack_window_s=current.backtrack_window_s,
            lsn_floor=plan.lsn_floor,
            activated_at_ms=at_ms,
            backtracks=[*backtracks, entry],
        )
        return self._record_clone(volume, plan, created)

    # -- rules 4-5: expiry and deletion -------------------------------------------------------

    def expire_timelines(self, now_ms: float) -> Deletion:
        """Rule 4 at wall-clock time `now_ms` (milliseconds since the Unix epoch)."""
        return self._sweep(now_ms)

    def _sweep(self, now_ms: float | None) -> Deletion:
        """Remove every left timeline that is deleted (or, with a time, expired) and that nothing reads
        through, until none is left to remove."""
        done: list[Deletion] = []
        while True:
            parents = {v.parent_volume_id for v in self._volumes.values()}
            due = [
                v
                for v in self._volumes.values()
                if v.left
                and v.volume_id not in parents
                and (v.deleted or (now_ms is not None and v.abandoned_at_ms + v.backtrack_window_s * 1000 <= now_ms))
            ]
            if not due:
                break
            done.append(self._remove(min(due, key=lambda v: v.volume_id)))
        if done:
            self._prune_backtracks()
        return _merged(*done)

    def _prune_backtracks(self) -> None:
        """Rule 4: a backtrack whose timelines are gone drops out of its volume's history."""
        for volume in self._volumes.values():
            if volume.backtracks:
                name = volume.volume_id
                kept = {v.serial for v in self._left_of(name)} | {volume.serial}
                volume.backtracks = [b for b in volume.backtracks if {b.from_serial, b.to_serial} <= kept]

    def delete_volume(self, volume_id: str) -> Deletion:
        """Rule 5 (and lineage rule 7)."""
        volume = self._volumes.get(volume_id)
        if volume is not None and volume.left:
            raise InvalidRequest(hidden_timeline_sentence(volume_id))
        if volume is not None and volume.kind == KIND_VOLUME:
            for left in self._left_of(volume_id):
                left.deleted = True
        deletion = super().delete_volume(volume_id)
        return _merged(deletion, self._sweep(None))

    # -- rule 6: history ----------------------------------------------------------------------

    def history(self, name: str) -> History:
        current = self.current_timeline(name)
        timelines = self.own_timelines(name, 0)
        serials = {v.serial for v in self._left_of(name)} | {current.serial}

        def shown_id(serial: int) -> str:
            return name if serial == current.serial else timeline_id(name, serial)

        backtracks = tuple(
            BacktrackView(
                b.at_ms, shown_id(b.from_serial), b.from_vdl, shown_id(b.to_serial), b.to_lsn, b.to_commit_time_us
            )
            for b in current.backtracks
            if {b.from_serial, b.to_serial} <= serials
        )
        return History(current.backtrack_window_s, tuple(timelines), backtracks)

    def is_left_timeline(self, volume_id: str) -> bool:
        return is_timeline_id(volume_id) and volume_id in self._volumes
