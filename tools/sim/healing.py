"""Segment replacement inside a run: the real control plane's lifecycle and the checks of its changes.

The control plane (tools/sim/replacement.py `SimControlPlane`, served on the sim network) heals every
`HEAL_INTERVAL_S` (`heal_loop`); a fault restarts it from what it last persisted
(`restart_control_plane`). Each round's membership changes are logged and counted, and checked: a
change's target is at least every acknowledged LSN of its PG when measured, and a completed new
segment holds every acknowledged record up to it (`_note_changes`). After the final heal every change
ends, orphans go and the writer follows (`settle_membership`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sixfold.compute.volume import Volume
from sixfold.storage.control_plane_calls import innermost
from sixfold.storage.serving import generic_handler
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.tools.sim import replacement as repl
from sixfold.tools.sim.checks import Checks
from sixfold.tools.sim.config import SETTLE_S, SIM_WALL_CLOCK_START_US, VOLUME, Violation
from sixfold.tools.sim.keys import SimKeyMaker
from sixfold.tools.sim.network import SimServer


class Healing(Checks):
    """The control plane in the run (replacement on): started, restarted, healing; its changes checked."""

    async def restart_control_plane(self) -> None:
        """The control plane crashes (mid-round, perhaps) and restarts from what it last persisted: heartbeat
        times are lost, so every node is unhealthy until heard from again (control_plane.py rule 2)."""
        assert self.control_plane is not None and self.healing is not None
        self.healing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Violation):
            await self.healing
        self.network.crash(repl.CONTROL_PLANE)
        client = innermost(self.control_plane.segment_client)
        assert isinstance(client, repl.SimSegmentClient)
        client.crashed = True
        saved = self.control_plane.saved
        self.cp_state = repl.cp.ControlPlane.from_dict(
            saved, repl.HEARTBEAT_TIMEOUT_MS, repl.FAILURE_TIMEOUT_MS, self.now() * 1000.0
        )
        self.start_control_plane()
        self.event("control plane restarted from its persisted state")
        if self._round is not None:
            before, acked_max, shown = self._round
            if shown == self._shown_prefix() == self.line.prefix:  # (else a backtrack moved the name: other PGs)
                self._note_changes(before, acked_max)  # what the cut round persisted before the crash
            self._round = None
        self.healing = asyncio.get_running_loop().create_task(self.heal_loop())

    def start_control_plane(self) -> None:
        assert self.cp_state is not None
        loop = asyncio.get_running_loop()
        self.control_plane = repl.SimControlPlane(
            self.cp_state,
            repl.SimSegmentClient(self.network.channel_factory(repl.CONTROL_PLANE)),
            clock_ms=lambda: loop.time() * 1000.0,
            wall_clock_ms=lambda: SIM_WALL_CLOCK_START_US / 1000 + loop.time() * 1000.0,
        )
        if self.keys is not None:  # encryption at rest: the real key handling, the key service stood in for
            kept = self.control_plane_keys  # its volume_keys.json survives a control plane crash
            self.control_plane.encrypt_at_rest(None, SimKeyMaker(), self.control_plane.state.parent_volume_id)
            assert self.control_plane.volume_keys is not None
            if kept is not None:
                self.control_plane.volume_keys.adopt_all(kept)
            self.control_plane.volume_keys.adopt(VOLUME, self.volume_key)
            self.control_plane_keys = self.control_plane.volume_keys
        handler = generic_handler(cp_pb.DESCRIPTOR.services_by_name["ControlPlaneService"], self.control_plane, cp_pb)
        self.network.serve(SimServer(repl.CONTROL_PLANE, [handler]))

    async def heal_loop(self) -> None:
        """`ControlPlaneServicer.heal_once` every HEAL_INTERVAL_S; a round that raises is a bug (the real
        loop would only log it)."""
        assert self.control_plane is not None and self.cp_state is not None
        while True:
            await asyncio.sleep(repl.HEAL_INTERVAL_S)
            before = [self.cp_state.pg(VOLUME, i) for i in range(self.config.pgs)]
            acked_max = self.acked_lsn_max()  # acknowledged before any target this round measures
            shown = self._shown_prefix()
            if shown != self.line.prefix:
                shown = ""  # the name moved and the model has not followed yet: acked_max is the line left's
            self._round = (before, acked_max, shown)  # for a restart that cuts the round short
            try:
                await self.control_plane.heal_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reported as a violation
                self.violation(f"a control plane healing round raised {error!r}")
            self._round = None
            if shown == self._shown_prefix() == self.line.prefix:  # (else a backtrack moved the name: other PGs)
                self._note_changes(before, acked_max)

    def _shown_prefix(self) -> str:
        """The segment-id prefix of the timeline the control plane's volume name points at now."""
        assert self.cp_state is not None
        return self.cp_state.describe_volume(VOLUME).protection_groups[0].segments[0].segment_id.rpartition("/")[0]

    def _note_changes(self, before: list[Any], acked_max: dict[int, int]) -> None:
        """Count and log membership changes; check each change's target as it is set and when it completes."""
        assert self.cp_state is not None
        completed = False
        for old in before:
            new = self.cp_state.pg(VOLUME, old.pg_index)
            measured = {c.new_node_id for c in old.changes if c.target_lsn is not None}
            for c in new.changes:
                if (
                    c.target_lsn is not None
                    and c.new_node_id not in measured
                    and c.target_lsn < acked_max.get(new.pg_index, 0)
                ):
                    # The target is the highest SCL of >= 3 base segments holding the new epoch: any 3 meet
                    # the 4 whose SCLs acknowledged an MTR, so it is at least every acknowledged CPL.
                    self.violation(
                        f"PG {new.pg_index}: the target {c.target_lsn} for {c.new_node_id} replacing "
                        f"{c.old_node_id} is below LSN {acked_max[new.pg_index]} of an acknowledged MTR"
                    )
            if new.membership_epoch == old.membership_epoch:
                continue
            for c in new.changes:
                if c.new_node_id not in {o.new_node_id for o in old.changes}:
                    self.ops["replace_begun"] += 1
                    self.event(
                        f"PG {new.pg_index}: replacing {c.old_node_id} with {c.new_node_id} "
                        f"(membership epoch {new.membership_epoch})"
                    )
            for c in old.changes:
                if c.new_node_id in {n.new_node_id for n in new.changes}:
                    continue
                if c.new_node_id in new.node_ids:
                    completed = True
                    assert c.target_lsn is not None
                    for cpl in sorted(self.acked):
                        if cpl > c.target_lsn:
                            break
                        for record in self.mtr_records(cpl):
                            if self.pg_of(record.page_no) != new.pg_index or c.new_node_id in self.holders(record):
                                continue
                            self.violation(
                                f"PG {new.pg_index}: {c.new_node_id} replaced {c.old_node_id} at target "
                                f"{c.target_lsn} without holding LSN {record.lsn} of acknowledged MTR {cpl}"
                            )
                    self.ops["replace_completed"] += 1
                    self.event(
                        f"PG {new.pg_index}: {c.new_node_id} replaced {c.old_node_id} "
                        f"(membership epoch {new.membership_epoch})"
                    )
                else:
                    self.ops["replace_rolled_back"] += 1
                    self.event(
                        f"PG {new.pg_index}: rolled back {c.old_node_id} -> {c.new_node_id} "
                        f"(membership epoch {new.membership_epoch})"
                    )
        if completed:
            # The target's safety property: the new base set holds a write quorum of every acknowledged MTR.
            for cpl in sorted(self.acked):
                self.check_durable(cpl, "when a replacement completed")

    async def settle_membership(self, writer: Volume) -> None:
        """Healed, every change ends (completes or rolls back), orphans go and the writer follows."""
        assert self.cp_state is not None
        deadline = self.now() + SETTLE_S
        while True:
            pending = [
                f"PG {pg.pg_index} changes {[(c.old_node_id, c.new_node_id) for c in pg.changes]}"
                for _, pg, _ in self.cp_state.changes_in_flight()
            ]
            held = self.cp_state.held_orphans()  # a clone's segment on the node still reads through them
            pending += [f"orphan {o.segment_id} on {o.node_id}" for o in self.cp_state.orphans() if o not in held]
            for i in range(self.config.pgs):
                epoch = self.cp_state.pg(VOLUME, i).membership_epoch
                if writer.pgs[i].membership_epoch != epoch:
                    pending.append(f"writer at PG {i} membership epoch {writer.pgs[i].membership_epoch} < {epoch}")
            if not pending:
                break
            if self.now() > deadline:
                self.violation(f"membership did not settle {SETTLE_S:g} s after healing: {'; '.join(pending[:4])}")
            await asyncio.sleep(0.5)
        for i in range(self.config.pgs):
            base, everyone = self.membership(i)
            azs = sorted(self.nodes[n].az for n in base)
            if len(set(base)) != 6 or base != everyone or azs != ["a", "a", "b", "b", "c", "c"]:
                self.violation(f"after healing PG {i} is held by {everyone} (base {base}), not six segments two per AZ")
        self.event(
            "membership settled: "
            + "; ".join(
                f"PG {i} {','.join(self.membership(i)[0])} epoch {self.cp_state.pg(VOLUME, i).membership_epoch}"
                for i in range(self.config.pgs)
            )
        )
