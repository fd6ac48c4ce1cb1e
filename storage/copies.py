"""Copies the nodes hold: what the control plane learns from heartbeats, and which lost copies it
creates again. Pure: the caller passes the time and the placements, and carries out the repairs.

Rules (this module owns them):
1. A node's heartbeat lists every segment it holds (id, membership epoch, SCL, whether it is whole or
   rebuilding) and its disk's condition. The latest report is kept in memory only, like heartbeat
   times: after a restart of the control plane nothing is known until nodes report again.
2. A placement is missing when its node's latest report lacks it. A heartbeat can have been sent
   before the segment was created, so a copy is lost only once its absence has lasted at least
   `MISSING_GRACE_MS` and `MISSING_REPORTS_MIN` reports in a row; then it is due to be created again
   on the same node (empty, rebuilding from its peers). A report that lists it ends the absence.
3. A node is degraded when its disk is not fine or a segment it holds is not whole (or missing):
   it still serves, but it is not a full member of its PGs until that clears.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MISSING_GRACE_MS = 2_000
MISSING_REPORTS_MIN = 3
DISK_OK = "ok"


@dataclass(frozen=True)
class HeldCopy:
    segment_id: str
    membership_epoch: int = 0
    scl: int = 0
    whole: bool = True
    rebuilding: bool = False


@dataclass(frozen=True)
class NodeReport:
    held: dict[str, HeldCopy] = field(default_factory=dict)
    disk: str = DISK_OK  # storage/lmdb_env.py conditions: ok, disk_full, io_error, failed
    disk_detail: str = ""


@dataclass
class _Absence:
    since_ms: float
    reports: int = 1


@dataclass(frozen=True)
class NodeCopies:
    """A node's copies as the outside sees them."""

    disk: str
    disk_detail: str
    missing: tuple[str, ...]
    rebuilding: tuple[str, ...]  # held but not whole

    @property
    def degraded(self) -> bool:
        return self.disk != DISK_OK or bool(self.missing) or bool(self.rebuilding)


class CopyWatch:
    def __init__(self, grace_ms: float = MISSING_GRACE_MS, reports_min: int = MISSING_REPORTS_MIN) -> None:
        self.grace_ms = grace_ms
        self.reports_min = reports_min
        self._reports: dict[str, NodeReport] = {}
        self._absent: dict[tuple[str, str], _Absence] = {}
        self.recreated = 0

    def note_report(self, node_id: str, report: NodeReport, placed: set[str], now_ms: float) -> None:
        """Rule 1-2: the node's latest report, against the segments placed on it."""
        self._reports[node_id] = report
        for key in [k for k in self._absent if k[0] == node_id]:
            if key[1] in report.held or key[1] not in placed:
                del self._absent[key]
        for segment_id in placed:
            if segment_id in report.held:
                continue
            absence = self._absent.get((node_id, segment_id))
            if absence is None:
                self._absent[(node_id, segment_id)] = _Absence(now_ms)
            else:
                absence.reports += 1

    def forget(self, node_id: str) -> None:
        self._reports.pop(node_id, None)
        for key in [k for k in self._absent if k[0] == node_id]:
            del self._absent[key]

    def due(self, now_ms: float) -> list[tuple[str, str]]:
        """Rule 2: (node, segment) copies lost long enough to be created again, in a fixed order."""
        return sorted(key for key, absence in self._absent.items() if self._lost(absence, now_ms))

    def _lost(self, absence: _Absence, now_ms: float) -> bool:
        return now_ms - absence.since_ms >= self.grace_ms and absence.reports >= self.reports_min

    def recreating(self, node_id: str, segment_id: str) -> None:
        """The caller created the copy again: its absence ends (the next reports list it)."""
        self._absent.pop((node_id, segment_id), None)
        self.recreated += 1

    def of(self, node_id: str, placed: set[str], now_ms: float) -> NodeCopies:
        """Rule 3 (a copy counts as missing once it is lost by rule 2: not while it is being created)."""
        report = self._reports.get(node_id)
        if report is None:
            return NodeCopies(DISK_OK, "", (), ())
        missing = tuple(
            sorted(
                s
                for s in placed
                if s not in report.held and (a := self._absent.get((node_id, s))) is not None and self._lost(a, now_ms)
            )
        )
        rebuilding = tuple(sorted(s for s, c in report.held.items() if s in placed and not c.whole))
        return NodeCopies(report.disk, report.disk_detail, missing, rebuilding)
