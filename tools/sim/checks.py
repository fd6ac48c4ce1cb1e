"""The invariants a run checks (DESIGN.md's numbering), on the committed state of every node's disk.

As the run goes: an acknowledged MTR is on a write quorum of its PG (`check_durable`; during a change,
of every quorum set the writer held: `check_quorum_sets`); a read is at or below VDL and returns
exactly the modelled page (`check_read`); a segment holds no record a truncation range it holds voids
(`check_truncations`). After the final heal: a full scrub finds every rotten copy still stored
(`scrub_everything`), every segment catches up (`check_convergence`) and segments agree on every LSN
they both hold (`check_agreement`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sixfold.compute.quorum import WRITE_QUORUM
from sixfold.compute.volume import Volume
from sixfold.storage.keys import SEG_LSN
from sixfold.storage.records import peek_header
from sixfold.storage.scrub import Scrubber
from sixfold.storage.segment_meta import SegmentMeta
from sixfold.storage.truncation import voided
from sixfold.tools.sim import integrity
from sixfold.tools.sim.config import CONVERGE_S, CONVERGE_S_TIME_TRAVEL, PAGE_SIZE, RECORDS
from sixfold.tools.sim.keys import opened_record
from sixfold.tools.sim.lines import Line, tokens_in
from sixfold.tools.sim.oracle import Oracle

WRITE_QUORUM_REAL = WRITE_QUORUM  # what the design needs, whatever a mutation does to the writer


class Checks(Oracle):
    """The invariants, checked against the oracle; a failed one ends the run (`SimState.violation`)."""

    def check_durable(self, cpl: int, where: str, line: Line | None = None) -> None:
        """Invariant 2: every record of the MTR is on a write quorum of its PG (of the line it was written on)."""
        for record in self.mtr_records(cpl, line):
            # The base set: every change that completed made its new segment part of it (so this is the
            # safety property of the change's target); a change in flight still needs the old set.
            base, _ = self.membership(self.pg_of(record.page_no), line)
            holders = [n for n in self.holders(record, line) if n in base]
            if len(holders) < WRITE_QUORUM_REAL:
                of = f" of {line.prefix}" if line is not None and line is not self.line else ""
                self.violation(
                    f"{where}: record LSN {record.lsn}{of} of acknowledged MTR {cpl} is on only "
                    f"{len(holders)} segments ({', '.join(holders) or 'none'}) of the base set "
                    f"{','.join(base)}; a write quorum is {WRITE_QUORUM_REAL}"
                )

    def check_quorum_sets(self, cpl: int, writer: Volume, epochs: dict[int, int], where: str) -> None:
        """During a change: every record of an acknowledged MTR is on a write quorum of every quorum set the
        writer held for its PG (both sets while a segment is being replaced); checked where the PG's
        membership epoch was the same when the write began as now, so those are the sets it was acked under."""
        for record in self.mtr_records(cpl, self.line_of(writer)):
            pg = writer.pgs.get(self.pg_of(record.page_no))
            if pg is None or epochs.get(pg.pg_index) != pg.membership_epoch:
                continue
            holders = set(self.holders(record, self.line_of(writer)))
            for quorum_set in pg.membership.sets:
                if len(holders & quorum_set.members) < WRITE_QUORUM_REAL:
                    self.violation(
                        f"{where}: record LSN {record.lsn} of acknowledged MTR {cpl} is on "
                        f"{sorted(holders & quorum_set.members)} of quorum set "
                        f"{sorted(quorum_set.members)} (membership epoch {pg.membership_epoch})"
                    )

    def check_read(self, writer: Volume, read_point: int, pages: list[tuple[int, bytes, int]]) -> None:
        """Invariants 3 and 6 (and 7-8: a read of a clone, a restored snapshot or a timeline a backtrack
        made shows exactly its line's view, through its ancestors: tools/sim/lines.py)."""
        if read_point > writer.vdl:
            self.violation(f"read point {read_point} is above the writer's VDL {writer.vdl}")
        line = self.line_of(writer)
        for page_no, data, _ in pages:
            expected = self.page_at(page_no, read_point, line)
            if data != expected:
                diff = next(i for i in range(PAGE_SIZE) if data[i] != expected[i])
                where = f" of {line.lineage()}" if self.config.time_travel else ""
                self.violation(
                    f"page {page_no}{where} read at {read_point} differs from the page at that point "
                    f"(first at byte {diff}: {data[diff : diff + 12]!r} vs {expected[diff : diff + 12]!r})"
                    + self.whose_writes(line, data, expected)
                )

    def whose_writes(self, line: Line, data: bytes, expected: bytes) -> str:
        """For a read that differs: the writes of other lines it shows (a clone's write in its parent, a
        record a backtrack hid), and the line's own acknowledged writes it lacks."""
        if not self.config.time_travel:
            return ""
        foreign = [
            f"{other.prefix}: {', '.join(shown)}"
            for other in self.lines.values()
            if other is not line
            for shown in [[t for t in tokens_in(other, data) if t.encode() not in expected]]
            if shown
        ]
        missing = [t for other in self.lines.values() for t in tokens_in(other, expected) if t.encode() not in data]
        return (f"; it shows writes of {'; '.join(foreign)}" if foreign else "") + (
            f"; it lacks {', '.join(missing)}" if missing else ""
        )

    def check_truncations(self) -> None:
        """Invariant 4 on every node's committed state: a segment holds no record that a truncation range it
        holds voids (it deletes them when it learns the range, and refuses them after)."""
        for name in self.nodes:
            ranges: dict[int, tuple[str, list[Any]]] = {}  # seg_no -> (segment id, its truncation ranges)
            metas: dict[int, SegmentMeta] = {}
            for line in self.lines.values():
                for pg in range(self.config.pgs):
                    meta = integrity.meta_on_disk(self.disk, name, line.segment_id(pg))
                    if meta is not None and meta.truncation_ranges:
                        ranges[meta.seg_no] = (meta.segment_id, meta.truncation_ranges)
                        metas[meta.seg_no] = meta
            if not ranges:
                continue
            for key, raw in self.disk.items(name, RECORDS):
                held = ranges.get(int.from_bytes(key[:4], "big"))
                if held is None or (name, RECORDS, key) in self.rotten:
                    continue
                seg_no, row_lsn = SEG_LSN.unpack(key)
                plain = opened_record(self.keys, metas[seg_no], row_lsn, raw)
                if plain is None:
                    continue  # does not open: a bad copy, never served (invariant 6 checks those)
                lsn, _, _, epoch = peek_header(plain)
                if voided(held[1], lsn, epoch):
                    self.violation(
                        f"{name} {held[0]} still holds LSN {lsn} of epoch {epoch}, which a truncation range it "
                        "holds voids"
                    )

    async def scrub_everything(self) -> None:
        """Healed, a full scrub pass over every node (a fresh `Scrubber`, so from each segment's start) finds
        every rotten copy still stored: the detection half of invariant 6 (`check_read` is the never-served
        half). What it quarantines, gossip and hydration then restore (checked by the convergence after)."""
        left = [k for k, rotted in self.rotten.items() if self.disk.get(*k) == rotted]
        for node in self.nodes.values():
            assert node.store is not None and node.servicer is not None
            await Scrubber(node.store, node.servicer._on_writer).scrub_pass()
        for name, table, key in left:
            if self.disk.get(name, table, key) == self.rotten[(name, table, key)]:
                self.violation(
                    f"a full scrub pass after healing left the rotten {table.decode()} copy under key "
                    f"{key.hex()} on {name}"
                )
        self.ops["rot_found_by_final_scrub"] = len(left)
        if left:
            self.event(f"final scrub quarantined {len(left)} rotten copies")

    async def check_convergence(self, writer: Volume) -> None:
        """Healed, every segment catches up (writer resends, gossip) to its PG's read point."""
        assert writer.log is not None
        allowed = CONVERGE_S_TIME_TRAVEL if self.config.time_travel else CONVERGE_S
        deadline = self.now() + allowed
        while True:
            behind = []
            for pg in self.geometry.protection_groups:
                target = writer.log.read_point(pg.pg_index)
                for name in self.membership(pg.pg_index)[1]:
                    node = self.nodes[name]
                    seg = node.store.segments.get(self.segment_id(pg.pg_index)) if node.store else None
                    if seg is None or seg.tracker.scl < target or not seg.whole:
                        behind.append(
                            f"{name} PG {pg.pg_index} SCL {seg.tracker.scl if seg else '-'} < {target}"
                            if seg is None or seg.tracker.scl < target
                            else f"{name} PG {pg.pg_index} not whole (SCL {seg.tracker.scl}, high water "
                            f"{seg.meta.scl_high_water}, rebuilding {seg.meta.rebuilding})"
                        )
            if not behind:
                self.event("every segment caught up")
                return
            if self.now() > deadline:
                self.violation(f"segments did not converge {allowed:g} s after healing: {'; '.join(behind[:4])}")
            await asyncio.sleep(0.5)

    def check_agreement(self) -> None:
        """Segments agree on every LSN two of them hold (a rotten copy aside), the segments of each line apart."""
        for line in self.lines.values():
            for pg in range(self.config.pgs):
                seen: dict[int, tuple[str, bytes]] = {}
                for name in self.nodes:
                    meta = integrity.meta_on_disk(self.disk, name, line.segment_id(pg))
                    if meta is None:
                        continue
                    prefix = meta.seg_no.to_bytes(4, "big")
                    for key, raw in self.disk.items(name, RECORDS):
                        if not key.startswith(prefix) or (name, RECORDS, key) in self.rotten:
                            continue
                        lsn = int.from_bytes(key[4:], "big")
                        plain = opened_record(self.keys, meta, lsn, raw)  # sealed under each node's own nonce
                        if plain is None:
                            continue  # does not open: a bad copy (the scrubber's, invariant 6)
                        other = seen.setdefault(lsn, (name, plain))
                        if other[1] != plain:
                            of = f" of {line.prefix}" if self.config.time_travel else ""
                            self.violation(f"PG {pg}{of}: {name} and {other[0]} hold different records at LSN {lsn}")
