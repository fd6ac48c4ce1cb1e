"""The quorum constants of a protection group (PG): one owner for the whole system.

Pure: numbers and the invariants that tie them together, checked when the module loads.
Storage is the lower layer, so these live here; `compute.quorum` (the writer's quorum
arithmetic), placement, the control plane and the tools import them from this module and
never write the numbers again.

Rules
1. A PG has `COPIES` = 6 segments, `NODES_PER_AZ` = 2 in each of `AZ_COUNT` = 3 AZs.
2. A write needs `WRITE_QUORUM` = 4 copies, a read `READ_QUORUM` = 3:
   W + R > V (every read quorum meets every write quorum) and 2W > V (two write
   quorums always overlap).
3. Losing a whole AZ leaves a write quorum; losing an AZ and one more node leaves a
   read quorum, from which the PG is repaired.
4. A PG has at most `MEMBERSHIP_CHANGES_MAX` = 2 segment replacements in flight; they
   compose into 2^2 = 4 quorum sets ([P18] 4.1).
5. Once `FENCING_SEGMENTS_MIN` = V - W + 1 = 3 segments of a quorum set hold a newer
   membership epoch (and refuse the older one), no write quorum of the older epoch can
   form in that set any more.
"""

from __future__ import annotations

AZ_COUNT = 3
NODES_PER_AZ = 2
COPIES = AZ_COUNT * NODES_PER_AZ
WRITE_QUORUM = 4
READ_QUORUM = 3
MEMBERSHIP_CHANGES_MAX = 2
FENCING_SEGMENTS_MIN = COPIES - WRITE_QUORUM + 1

assert COPIES == 6, COPIES
assert WRITE_QUORUM + READ_QUORUM > COPIES, "every read quorum must meet every write quorum"
assert 2 * WRITE_QUORUM > COPIES, "two write quorums must overlap"
assert COPIES - NODES_PER_AZ >= WRITE_QUORUM, "losing an AZ must leave a write quorum"
assert COPIES - NODES_PER_AZ - 1 >= READ_QUORUM, "losing an AZ and one more node must leave a read quorum"
assert FENCING_SEGMENTS_MIN + WRITE_QUORUM > COPIES, "a fenced set leaves no write quorum of the old epoch"
