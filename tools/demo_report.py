"""What `sixfold demo` (tools/demo.py) prints: the progress line, commits/s per phase of the outage, and the
closing report with its verdict. Pure: values in, lines out.

Phases: before the outage (from the first transfer to the first SIGKILL), during it (until every node of
the AZ serves again), after it (until the clients stop). A phase that did not happen (a run cut short)
has no rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sixfold.tools.demo_bank import Snapshot, Tally, Verification


@dataclass(frozen=True)
class Event:
    """Something the demo did, `at_s` seconds after the first transfer."""

    at_s: float
    what: str


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    commits: int

    @property
    def rate(self) -> float:
        return self.commits / (self.end_s - self.start_s) if self.end_s > self.start_s else 0.0


def phases(
    commit_times_s: Sequence[float], outage_start_s: float | None, outage_end_s: float | None, end_s: float
) -> list[Phase]:
    """Before / during / after the outage; only the phases that began before `end_s`."""
    if outage_start_s is not None and outage_start_s >= end_s:
        outage_start_s = outage_end_s = None
    if outage_end_s is not None and outage_end_s >= end_s:
        outage_end_s = None
    bounds = [("before the outage", 0.0, outage_start_s if outage_start_s is not None else end_s)]
    if outage_start_s is not None:
        bounds.append(("during", outage_start_s, outage_end_s if outage_end_s is not None else end_s))
    if outage_end_s is not None:
        bounds.append(("after", outage_end_s, end_s))
    return [Phase(name, start, end, sum(1 for t in commit_times_s if start <= t < end)) for name, start, end in bounds]


@dataclass
class Checks:
    """The periodic invariant checks while the clients run."""

    expected_total: int
    passed: int = 0
    wrong: list[tuple[float, Snapshot]] = field(default_factory=list)  # (at_s, what it saw)
    unreadable: list[tuple[float, str]] = field(default_factory=list)  # (at_s, the error)

    def record(self, at_s: float, seen: Snapshot | str) -> str:
        """Count one check; its words for the progress line."""
        if isinstance(seen, str):
            self.unreadable.append((at_s, seen))
            return f"check failed ({seen.split(':')[0]})"
        if seen.total == self.expected_total:
            self.passed += 1
            return f"total {seen.total} ok"
        self.wrong.append((at_s, seen))
        return f"total {seen.total} WRONG (expected {self.expected_total})"


def progress_line(
    at_s: float, committed: int, last_committed: int, interval_s: float, check: str, az_state: str
) -> str:
    rate = (committed - last_committed) / interval_s if interval_s > 0 else 0.0
    return f"[{at_s:6.1f} s] {committed:7d} committed ({rate:5.0f}/s)  {check}  {az_state}"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{code} {n}" for code, n in counter.most_common())


def _tally_line(t: Tally) -> str:
    text = f"{t.committed} committed (acknowledged"
    text += f"; {t.found_on_retry} of them found committed after a lost reply)" if t.found_on_retry else ")"
    text += f", {t.declined} declined (not enough money)"
    text += f", {t.retried} retried ({t.retries} retries: {_counts(t.retry_codes)})" if t.retried else ", 0 retried"
    text += f", {t.in_doubt} in doubt, "
    text += f"{sum(t.failed.values())} failed ({_counts(t.failed)})" if t.failed else "0 failed"
    return text


def _invariant_lines(checks: Checks, v: Verification) -> list[str]:
    lines = []
    while_running = f"{checks.passed} checks while running"
    if checks.unreadable:
        while_running += f" ({len(checks.unreadable)} more could not read: {checks.unreadable[0][1]})"
    if v.total_holds and not checks.wrong:
        lines.append(
            f"total balance {v.snapshot.total} over {v.snapshot.accounts} accounts, as at the start: holds in "
            f"{while_running} and at the end (read point {v.snapshot.read_point})"
        )
    else:
        lines.append(
            f"VIOLATED: total balance {v.snapshot.total} over {v.snapshot.accounts} accounts at the end, "
            f"expected {v.expected_total} over {v.expected_accounts}; {while_running}"
        )
        lines += [f"  at {at:.1f} s a check saw {s.total} (read point {s.read_point})" for at, s in checks.wrong]
    return lines


def _rows_line(t: Tally, v: Verification) -> str:
    if v.missing:
        return f"LOST: {len(v.missing)} acknowledged transfers have no row (ids {v.missing[:10]})"
    if v.unexplained:
        return f"VIOLATED: {len(v.unexplained)} rows belong to no transfer a client sent (ids {v.unexplained[:10]})"
    text = f"all {t.committed} acknowledged transfers have their row ({v.snapshot.transfers} rows"
    text += f"; {v.unacknowledged} of transfers in doubt)" if v.unacknowledged else ")"
    if v.unbalanced_accounts:
        return text + f"; VIOLATED: {v.unbalanced_accounts} balances do not match their rows"
    return text + "; every balance matches its rows"


@dataclass(frozen=True)
class Run:
    """Everything the closing report says."""

    seconds: float
    clients: int
    accounts: int
    seed: int
    events: list[Event]
    phases: list[Phase]
    tally: Tally
    checks: Checks
    verification: Verification
    fault_error: str | None = None  # the outage could not be carried out (or undone)

    @property
    def ok(self) -> bool:
        """Exit 0 only if this holds: the invariant held throughout, no acknowledged transfer is missing, and
        the demo did what it says (transfers committed, the AZ went down and came back)."""
        return self.verification.ok and not self.checks.wrong and self.tally.committed > 0 and not self.fault_error


def report_lines(run: Run) -> list[str]:
    v = run.verification
    lines = [
        "",
        f"sixfold demo: {run.seconds:g} s of bank transfers from {run.clients} clients over {run.accounts} accounts "
        f"(seed {run.seed})",
        "",
        "what happened (seconds from the first transfer):",
        *(f"  {e.at_s:6.1f}  {e.what}" for e in run.events),
        "",
        f"transfers:  {_tally_line(run.tally)}",
        "commits/s:  " + "   ".join(f"{p.name} {p.rate:.0f} ({p.start_s:.1f}-{p.end_s:.1f} s)" for p in run.phases),
    ]
    invariant = _invariant_lines(run.checks, v)
    lines.append(f"invariant:  {invariant[0]}")
    lines += invariant[1:]
    lines.append(f"rows:       {_rows_line(run.tally, v)}")
    lines.append(f"integrity:  PRAGMA integrity_check: {v.integrity}")
    if run.tally.committed == 0:
        lines.append("FAILED: no transfer committed")
    if run.fault_error:
        lines.append(f"FAILED: the outage: {run.fault_error}")
    lines.append(f"verdict:    {'OK' if run.ok else 'FAILED'}")
    return lines
