"""Retention: the horizon, what coalescing folds and what garbage collection keeps.

Pure: the store (storage/store/coalescing.py, hydration.py) looks things up and carries out these plans;
the background task (storage/coalesce.py) decides when. Rules (this module owns them):

1. Coalescing folds a page's records into a page version at the newest record
   at or below the coalesce limit = min(SCL, VDL hint), and only when at least
   `COALESCE_CHAIN_MIN` such records lie above the page's newest version. Records
   at or below the writer's reported VDL met write quorum, so no later recovery
   truncates them; a record above it is never folded into a version.
2. The retention horizon is the lowest of: the read point the writer reported
   as its lowest in use (none reported since the node started: no advance), the
   pinned LSNs, the history-window bound (the SCL the segment had `history_window_s`
   ago, or its volume's backtrack window ago if that is longer, so a backtrack
   inside the window finds its point; not known yet: no advance), the VDL hint, SCL, and
   the lowest SCL among the PG's peers that answered the last gossip round
   (unknown, or no peer answering: no bound). The last one keeps what a lagging
   or hydrating peer still needs: while a peer is behind, the horizon waits, so
   the LSN it hydrates at stays servable and the records above it stay until it
   has pulled them (a dead peer does not hold GC back). It never goes down.
3. Garbage collection at horizon H keeps, per page, the newest version at or
   below H (the page's "base") and everything above it; it removes every older
   version and every record of the page at or below the base. A page with no
   version at or below H loses nothing. So every read point R >= H
   materializes from what is kept exactly as from everything
   (`materialize_oracle` in the tests checks this).
4. The GC floor is the horizon: records at or below it may be gone, so record
   reads that start below it are refused, and the chain anchor (the newest PG
   chain record at or below the floor) is kept in the segment's meta so the
   chain tail and SCL can still be found after the records themselves are gone.
5. A segment whose SCL is below its GC floor lost a copy it needed (scrubbing
   quarantined it) and serves no reads until it is hydrated again from a peer's
   page versions (storage/gossip.py).
6. Keep points (storage/lineage.py rule 5): each clone segment on the node reads
   the pages it never wrote from its parent at its `parent_read_lsn`. GC of the
   parent keeps, per page and for each keep point K below the horizon, the
   newest version at or below K and the page's records above it up to K, so
   a read at K materializes as before; everything else below the base goes as
   in rule 3. The horizon itself moves on: children hold back only what they
   read, not everything above the lowest of them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

# Records above a page's newest version before it is worth folding. A read applies at most about this many
# records to the version it starts from; a fold costs a version opened, one sealed and 4 KiB put. At 8, folding
# was a third of a node's CPU under write load; at 32, `sixfold bench`-style runs at stream c=64 did 17% more
# commits/s with 18% less CPU per commit (README, issue 14's note).
COALESCE_CHAIN_MIN = 32
HISTORY_SAMPLES_MAX = 4096  # (time, SCL) samples kept per segment at most (+2), whatever the window


def coalesce_target(
    record_lsns_above_version: list[int], limit: int, chain_min: int = COALESCE_CHAIN_MIN
) -> int | None:
    """The LSN to fold a page at (rule 1), given its record LSNs above its newest version; None: not yet."""
    assert chain_min >= 1
    foldable = [lsn for lsn in record_lsns_above_version if lsn <= limit]
    if len(foldable) < chain_min:
        return None
    return max(foldable)


def next_horizon(
    current: int,
    *,
    scl: int,
    vdl_hint: int,
    min_read_point: int | None,
    pins: list[int],
    window_bound: int | None,
    peer_floor: int | None = None,
) -> int:
    """Rule 2: the new retention horizon (never below `current`)."""
    if min_read_point is None or window_bound is None:
        return current
    bounds = [scl, vdl_hint, min_read_point, window_bound, *pins]
    if peer_floor is not None:
        bounds.append(peer_floor)
    return max(current, min(bounds))


@dataclass(frozen=True)
class PageGc:
    """What GC removes from one page (rule 3)."""

    page_no: int
    base_lsn: int  # the version kept as the page's base (0: no version at or below the horizon)
    versions_to_delete: tuple[int, ...]
    records_to_delete: tuple[int, ...]


def plan_page_gc(
    page_no: int, horizon: int, version_lsns: list[int], record_lsns: list[int], keep_points: Iterable[int] = ()
) -> PageGc:
    """Rule 3 for one page, given its version and record LSNs at or below `horizon` (more are ignored),
    and rule 6's keep points."""
    below = [v for v in version_lsns if v <= horizon]
    if not below:
        return PageGc(page_no, 0, (), ())
    base = max(below)
    kept_versions: set[int] = {base}
    kept_records: set[int] = set()
    for k in keep_points:
        if k >= base:
            continue  # a read at k starts from the base, like any read at or above the horizon
        start = max((v for v in below if v <= k), default=0)
        if start:
            kept_versions.add(start)
        kept_records.update(r for r in record_lsns if start < r <= k)
    return PageGc(
        page_no,
        base,
        tuple(sorted(v for v in below if v not in kept_versions)),
        tuple(sorted(r for r in record_lsns if r <= base and r not in kept_records)),
    )


@dataclass
class HistoryWindow:
    """(monotonic time, SCL) samples of one segment, to find the SCL it had `window_s` ago (rule 2).

    Only what this process saw: after a restart nothing older than the restart is known, so
    `bound` is None until the window has passed."""

    window_s: float
    times: list[float] = field(default_factory=list)
    scls: list[int] = field(default_factory=list)

    def sample(self, now: float, scl: int) -> None:
        assert not self.times or now >= self.times[-1], (now, self.times[-1])
        # Every kept sample is a true (time, SCL) pair, so `bound` is never newer than the SCL the segment had
        # a window ago. The newest replaces a last one closer than `spacing` to the one before it, so samples
        # two apart are at least `spacing` apart: at most HISTORY_SAMPLES_MAX + 2 are kept for any window (a
        # 24 h window sampled every second keeps one per 42 s), and `bound` lags by less than `spacing`.
        spacing = self.window_s / (HISTORY_SAMPLES_MAX // 2)
        if len(self.times) >= 2 and now - self.times[-2] < spacing:
            self.times[-1], self.scls[-1] = now, scl
        else:
            self.times.append(now)
            self.scls.append(scl)
        # Only the newest sample at or before the window's start is ever needed again.
        i = bisect_right(self.times, now - self.window_s) - 1
        if i > 0:
            del self.times[:i], self.scls[:i]

    def bound(self, now: float) -> int | None:
        i = bisect_right(self.times, now - self.window_s) - 1
        return self.scls[i] if i >= 0 else None
