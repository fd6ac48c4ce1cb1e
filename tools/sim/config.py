"""What a simulated run is and what it returns: the fixed layout and limits, `SimConfig`, `SimResult`.

The volume (`VOLUME`, `NODES`, `PAGE_SIZE`), the fault budgets and outage shape, the settling times
after the final heal, a run's settings (one seed drives every choice) and its result; `Violation` is
what a failed check raises to end the run (tools/sim/state.py `SimState.violation`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from sixfold.tools.sim.network import NetConfig

VOLUME = "simvol"
NODES = (("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c"))
PAGE_SIZE = 512
SIM_LAL = 500
GOSSIP_INTERVAL_S = 1.0
# Faulty nodes at once the random schedule allows per mode (tools/sim_cli.py FAULT_MODES lists the same modes).
# "az-plus-one" adds a stretch with one whole AZ and one more node down, "beyond" one with three then four nodes
# down; both leave the random schedule within its budget around that stretch (tools/sim/faults.py).
FAULT_BUDGET = {"none": 0, "within": 2, "az-plus-one": 2, "beyond": 4}
OUTAGE_START_FRACTION = (0.25, 0.45)  # of the run's duration: when the deliberate outage begins
OUTAGE_HOLD_S = (2.5, 4.0)  # virtual seconds each step of the outage lasts (the faults stay put meanwhile)
OUTAGE_CRASH_PROBABILITY = 0.6  # a node the outage takes is crashed; otherwise cut off from every writer
OUTAGE_NEW_WRITER_PROBABILITY = 0.3  # beyond: with four down, the writer crashes and a new one tries to open
ROTS_PER_RUN_MAX = 3  # bytes flipped on disk per run, in records or page versions
RECORDS, VERSIONS = b"records", b"versions"  # the store's LMDB tables a rot may hit
COALESCE_CHAIN_MIN_SIM = 2  # fold short chains: the runs write few records per page
SETTLE_S = 30.0  # virtual seconds after healing for every membership change to end (replacement on)
CONVERGE_S = 15.0  # virtual seconds after healing for every segment to catch up
# ... with time travel on: a node then holds every clone's, snapshot's and timeline's segments too (up to ~20),
# and its gossip serves them one after another, each lost message costing its segment a timeout in the round.
CONVERGE_S_TIME_TRAVEL = 60.0
REPLICAS_MAX = 3
SIM_WALL_CLOCK_START_US = 1_767_225_600_000_000  # 2026-01-01 UTC: virtual time 0 as a wall clock (commit times)


@dataclass
class SimConfig:
    """The settings of one run; `seed` drives every choice, so a config replays exactly."""

    seed: int
    clients: int = 3
    ops_per_client: int = 30
    pgs: int = 2
    pages_per_pg: int = 16
    duration_s: float = 20.0  # virtual seconds of faults and load
    faults: str = "within"  # FAULT_BUDGET: "none" | "within" (what the design survives) | "az-plus-one" | "beyond"
    mutation: str | None = None  # a deliberate protocol break (tools/sim/mutations.py)
    # Virtual seconds of history storage keeps; a short one (2.0) makes GC and hydration run under the
    # faults too (the default, as on real nodes, outlasts a run: only coalescing runs).
    history_window_s: float = 300.0
    # Segment replacement: a spare node per AZ and the real control plane healing inside the run
    # (tools/sim/replacement.py); faults add nodes that fail for good and failed nodes that return.
    replace: bool = False
    # The fault menu before the integrity faults (tools/sim/integrity.py) joined it, so that a seed found
    # then draws the same schedule again (its regression test replays the bug it was found with).
    classic_faults: bool = False
    # Time travel (tools/sim/time_travel.py): clones (at VDL or an earlier commit) with their own writers,
    # snapshots and their restores, backtracks and moves forward again, through the real control plane
    # (which runs in the run for it, as with `replace`) while the faults go on.
    time_travel: bool = False
    # Read replicas (tools/sim/replicas.py): this many readers (0..REPLICAS_MAX), each a real ReplicaVolume fed
    # from the writer's RedoPublisher over a seeded link, read by its own client; a writer that crashes or is
    # cut off is replaced by promoting the most caught-up reader (tools/sim/promotion.py). Not with time travel.
    replicas: int = 0
    # Encryption at rest (tools/sim/keys.py): every node seals what it stores under the volume's data key, as
    # on a secure cluster; True stores it in clear.
    clear_at_rest: bool = False
    net: NetConfig = field(
        default_factory=lambda: NetConfig(
            unary_drop_probability=0.01, unary_duplicate_probability=0.02, stream_break_probability=0.002
        )
    )

    @property
    def backtrack_window_s(self) -> int:
        """The volume's backtrack window: the history window rounded up (nodes keep the longer of the two,
        storage/retention.py rule 2, so a short history window still lets GC run in a run)."""
        return max(1, math.ceil(self.history_window_s))

    @property
    def control_plane(self) -> bool:
        """Whether the real control plane runs in the run (for replacement, for time travel, or both)."""
        return self.replace or self.time_travel


@dataclass
class SimResult:
    """What a run found: its violations (none: it passed), its event log, operation counts, virtual time."""

    seed: int
    violations: list[str]
    events: list[str]
    ops: dict[str, int]
    virtual_s: float

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.events).encode()).hexdigest()[:16]


class Violation(Exception):
    """A check failed: the run ends here (the text is also in the run's violations)."""
