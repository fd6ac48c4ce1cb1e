"""What is down or faulty in a run now, measured against the fault budget.

A node is down when crashed or cut off from the current writer (`down_nodes`; the count of more than
two down at once is tracked for the operations that overlap it: `note_down`, `overlapped_over_two`);
faulty when down, partitioned, holding an outstanding rot, or impaired by an integrity fault
(`faulty_nodes`: the faults schedule keeps that within the budget). With replacement on only nodes
that hold a segment count.
"""

from __future__ import annotations

from sixfold.tools.sim import integrity
from sixfold.tools.sim.oracle import Oracle


class Health(Oracle):
    """Down and faulty nodes, and whether more than two were down while an operation ran."""

    def faulty(self) -> int:
        return len(self.faulty_nodes())

    def down_nodes(self) -> set[str]:
        """Nodes crashed or cut off from the current writer (with replacement on: that hold a segment)."""
        down = {n for n, node in self.nodes.items() if not node.up} | self.isolated
        if self.writer is not None:
            down |= {n for n in self.nodes if frozenset((n, self.writer.writer_id)) in self.network.cut}
        if self.cp_state is not None:
            down &= {n for pg in range(self.config.pgs) for n in self.membership(pg)[1]}
        return down

    def note_down(self) -> None:
        """After every fault: record the most nodes down at once and when more than two are."""
        down = self.down_nodes()
        self.ops["nodes_down_max"] = max(self.ops["nodes_down_max"], len(down))
        if len(down) > 2 and not self.over_two:
            self.over_two = True
            self.over_two_serial += 1
            self.event(f"more than two nodes down: {', '.join(sorted(down))}")
        elif len(down) <= 2 and self.over_two:
            self.over_two = False
            self.event(f"two or fewer nodes down again ({', '.join(sorted(down)) or 'none'})")

    def overlapped_over_two(self, began: tuple[int, bool]) -> bool:
        """Whether more than two nodes were down at some time since `began` = (over_two_serial, over_two)."""
        return began[1] or self.over_two or began[0] != self.over_two_serial

    def faulty_nodes(self) -> set[str]:
        cut = {n for pair in self.network.cut for n in pair if n in self.nodes}
        rotten_nodes = {
            n for (n, table, key), rotted in self.rotten.items() if self.rot_outstanding(n, table, key, rotted)
        }
        down = {n for n, node in self.nodes.items() if not node.up}
        if self.cp_state is not None:
            # A node down (or dead for good) counts while a PG's quorum sets hold it: once replaced,
            # it no longer weakens any PG; a spare holding nothing never did.
            members = {n for pg in range(self.config.pgs) for n in self.membership(pg)[1]}
            down &= members
        return down | cut | rotten_nodes | integrity.impaired_nodes(self)

    def rot_outstanding(self, name: str, table: bytes, key: bytes, rotted: bytes) -> bool:
        """Whether a rot still weakens its node: the rotten bytes are still stored, or the node has not yet got
        back past the copy's LSN since the copy was quarantined (SCL fell to the hole, or below the GC floor
        when it was the page's only copy there; gossip refills, hydration restores)."""
        if self.disk.get(name, table, key) == rotted:
            return True
        seg_no = int.from_bytes(key[:4], "big")
        lsn = int.from_bytes(key[-8:], "big")  # records: (seg_no, lsn); page versions: (seg_no, page_no, lsn)
        for key_id, _ in self.disk.items(name, b"segments"):
            meta = integrity.meta_on_disk(self.disk, name, key_id.decode())
            if meta is not None and meta.seg_no == seg_no:
                return meta.scl < lsn
        return False  # the segment was dropped

    def changing(self, node: str) -> bool:
        """Whether a change in flight is replacing `node`."""
        return any(c.old_node_id == node for _, _, c in self.cp_state.changes_in_flight()) if self.cp_state else False
