"""The verdict of one chaos run: every criterion, judged from the history, the records and the faults.

A page workload run is judged for final reads, linearizability, lost writes, vanished reads
(tools/chaos/checkers.py) and MTR atomicity (run_checks.py); a bank workload run for the bank's
invariants instead (tools/chaos/bank.py: no acknowledged transfer lost, no failed one present, the
total conserved, transfers whole, integrity_check ok; the page checks are n/a), and for transfers
acknowledged again once the run is healed (a writer that stays blocked fails it). A page workload run
of a scenario that moves vol0 back in time (`Scenario.rewinds`) gets final reads and MTR atomicity
only: the scenario judges every read by LSN itself (tools/chaos/lsn_check.py). Every run then gets
the scenario's own criteria and segment convergence. The run FAILs if any criterion is False; None
is reported, not judged. It also measures when writes resumed after each fault.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sixfold.tools.chaos import checkers
from sixfold.tools.chaos.bank import STORAGE, check_bank
from sixfold.tools.chaos.bank_workload import BANK, BankWorkload
from sixfold.tools.chaos.faults import Nemesis
from sixfold.tools.chaos.history import FAIL, INFO, OK, WRITE
from sixfold.tools.chaos.report import ScenarioResult
from sixfold.tools.chaos.run_checks import CONVERGENCE_NOTE, Convergence, check_atomicity
from sixfold.tools.chaos.scenario_base import Context, Criterion, Scenario
from sixfold.tools.chaos.workload import Workload
from sixfold.tools.cluster import COMPUTE


def _resumed(workload: Workload | BankWorkload, at: float) -> float | None:
    """Seconds from `at` until a write invoked at or after it was acknowledged."""
    done = [r.completed for r in workload.records if r.kind == WRITE and r.outcome == OK and r.invoked >= at]
    return min(done) - at if done else None


def _writer_restarted(nemesis: Nemesis) -> bool:
    return any(
        (e.target == COMPUTE and e.action in ("kill", "stop", "start")) or e.action == "second-writer"
        for e in nemesis.log.events
    )


def _take_counts(result: ScenarioResult, counts: dict[str, int]) -> None:
    result.operations, result.ok, result.fail, result.info = (
        counts["operations"],
        counts[OK],
        counts[FAIL],
        counts[INFO],
    )
    result.details["counts"] = counts


def _page_criteria(result: ScenarioResult, workload: Workload, log: Callable[[str], None]) -> list[Criterion]:
    """Final reads, linearizability, lost writes, vanished reads and MTR atomicity of a page workload run."""
    history = workload.history
    counts = checkers.summary(history)
    _take_counts(result, counts)
    log(f"  checking {counts['operations']} operations")
    lin = checkers.check_linearizable(history)
    lost = checkers.check_lost_writes(history)
    vanished = checkers.check_no_vanished_reads(history)
    result.linearizable = {checkers.LINEARIZABLE: "yes", checkers.NOT_LINEARIZABLE: "no"}.get(lin.verdict, "unknown")
    result.lost = lost.lost_writes
    result.vanished = vanished.vanished
    result.details["checkers"] = {
        "linearizable": {
            "verdict": lin.verdict,
            "operations": lin.operations,
            "bad_keys": list(lin.bad_keys),
            "unknown_keys": list(lin.unknown_keys),
            "explanations": list(lin.explanations),
        },
        "lost_writes": {
            "lost": lost.lost_writes,
            "acknowledged": lost.writes_acknowledged,
            "explanations": list(lost.explanations),
        },
        "vanished_reads": {"vanished": vanished.vanished, "explanations": list(vanished.explanations)},
    }
    return [
        _final_reads(workload),
        Criterion(
            "linearizable",
            False if lin.verdict == checkers.NOT_LINEARIZABLE else (True if lin.ok else None),
            f"{lin.verdict}: {lin.operations} operations on {lin.keys} keys, {lin.configurations} "
            f"configurations; {lin.info_writes_unobserved} unobserved info writes dropped"
            + ("; " + " | ".join(lin.explanations) if lin.explanations else ""),
        ),
        Criterion(
            "nothing acknowledged lost",
            lost.ok and not lost.keys_without_final_read,
            f"{lost.writes_acknowledged} acknowledged writes, {lost.writes_judged} judged by "
            f"{lost.final_reads} final reads: {lost.lost_writes} lost"
            + (
                f"; keys without a final read: {list(lost.keys_without_final_read)}"
                if lost.keys_without_final_read
                else ""
            )
            + ("; " + " | ".join(lost.explanations) if lost.explanations else ""),
        ),
        Criterion(
            "no vanished reads",
            vanished.ok,
            f"{vanished.reads} ok reads: {vanished.vanished} went back to an older value"
            + ("; " + " | ".join(vanished.explanations) if vanished.explanations else ""),
        ),
        check_atomicity(workload),
    ]


def _final_reads(workload: Workload) -> Criterion:
    ok = bool(workload.final_values)
    return Criterion(
        "final reads",
        ok,
        f"every key read after heal in {workload.final_read_attempts} attempt(s)"
        if ok
        else "the volume could not be read after heal",
    )


def _rewound_criteria(result: ScenarioResult, workload: Workload, log: Callable[[str], None]) -> list[Criterion]:
    """A run that moves vol0 back in time: final reads and MTR atomicity; linearizability, lost writes and
    vanished reads are n/a (the scenario judges every read by LSN instead: tools/chaos/lsn_check.py)."""
    counts = checkers.summary(workload.history)
    _take_counts(result, counts)
    log(f"  {counts['operations']} operations; vol0 was moved back in time: judged by LSN")
    result.linearizable = "n/a"
    return [
        _final_reads(workload),
        Criterion(
            "page register checks",
            None,
            "n/a (linearizable, lost writes, vanished reads): the scenario moves vol0 back in time, which hides "
            "acknowledged writes by design; its own criteria judge every read by LSN",
        ),
        check_atomicity(workload),
    ]


def _bank_criteria(result: ScenarioResult, workload: BankWorkload, log: Callable[[str], None]) -> list[Criterion]:
    """The bank's invariants (tools/chaos/bank.py); the page workload's checks are n/a."""
    ops = workload.records
    counts = {
        "operations": len(ops),
        OK: sum(op.outcome == OK for op in ops),
        FAIL: sum(op.outcome == FAIL for op in ops),
        INFO: sum(op.outcome == INFO for op in ops),
        "transfers": sum(op.kind == WRITE for op in ops),
        "transfers_ok": sum(op.kind == WRITE and op.outcome == OK for op in ops),
        "snapshots_ok": sum(op.via == STORAGE and op.outcome == OK for op in ops),
    }
    _take_counts(result, counts)
    log(f"  checking {counts['operations']} bank operations ({counts['transfers']} transfers)")
    check = check_bank(ops, workload.final, workload.initial, workload.origin)
    result.linearizable = "n/a"
    result.lost = len(check.lost) if workload.final is not None else None
    result.conserved = "yes" if check.conserved else ("-" if workload.final is None and not check.wrong_total else "no")
    result.details["checkers"] = {
        "bank": {
            "acknowledged": check.acknowledged,
            "lost": check.lost,
            "failed_present": check.failed_present,
            "info_present": check.info_present,
            "info_absent": check.info_absent,
            "phantom": check.phantom,
            "final_total": check.final_total,
            "total": check.total,
            "unbalanced": check.unbalanced,
            "wrong_total": check.wrong_total[:20],
            "torn_reads": check.torn_reads[:20],
            "bad_integrity": check.bad_integrity[:20],
        }
    }
    return check.criteria() + [
        Criterion(
            "page checks",
            None,
            "n/a for the bank workload (linearizability, lost writes and vanished reads of hot pages, two-page "
            "MTRs): a transaction is one MTR and the bank's invariants judge it",
        )
    ]


def _bank_resumes(workload: BankWorkload, ctx: Context) -> Criterion:
    """Once healed, transfers are acknowledged again: some transfer invoked after the heal commits."""
    name = "transfers resume once healed"
    healed, stopped = ctx.marks.get("healed"), ctx.marks.get("clients_stopped")
    if healed is None or stopped is None:
        return Criterion(name, None, "not judged: the run did not get past the heal")
    acked = [op.completed for op in workload.records if op.kind == WRITE and op.outcome == OK and op.invoked >= healed]
    detail = f"{len(acked)} transfers invoked in the {stopped - healed:.1f} s of load after the heal were acknowledged"
    detail += f", the first {min(acked) - healed:.2f} s after it" if acked else ": writes stayed blocked"
    return Criterion(name, bool(acked), detail)


def judge(
    scenario: Scenario,
    result: ScenarioResult,
    workload: Workload | BankWorkload,
    ctx: Context,
    convergence: Convergence | None,
    nemesis: Nemesis,
    log: Callable[[str], None],
) -> None:
    """Fill in `result` (counts, criteria, resumption, details, verdict) for a run that got as far as its load."""
    if isinstance(workload, BankWorkload):
        result.workload = BANK
        criteria = _bank_criteria(result, workload, log) + [_bank_resumes(workload, ctx)]
    elif scenario.rewinds:
        criteria = _rewound_criteria(result, workload, log)
    else:
        criteria = _page_criteria(result, workload, log)
    try:
        criteria += scenario.judge(ctx)
    except Exception as error:  # noqa: BLE001 - a judge that cannot judge is a failed criterion
        criteria.append(Criterion(f"{scenario.name} criteria", False, f"could not judge: {error!r}"))
    if scenario.rewinds and "lost" in ctx.data:
        result.lost = ctx.data["lost"]  # the scenario's count of acknowledged writes lost (by LSN)
    restarted = _writer_restarted(nemesis)
    if convergence is None:
        result.converged = "-"
    elif convergence.converged:
        result.converged = "yes"
        criteria.append(Criterion("segments converge once healed", True, convergence.detail))
    elif restarted:
        result.converged = "no*"
        criteria.append(
            Criterion(
                "segments converge once healed",
                None,
                f"{convergence.detail} (not judged: the writer was restarted in this scenario; {CONVERGENCE_NOTE})",
            )
        )
        ctx.notes.append(f"* segments did not converge: {CONVERGENCE_NOTE}")
    else:
        result.converged = "no"
        criteria.append(Criterion("segments converge once healed", False, convergence.detail))
    if convergence is not None:
        result.details["segments"] = convergence.per_pg
    # When writes resumed: after the fault where the system should stay available, after the heal otherwise.
    points = list(ctx.resume_points)
    if not points:
        anchor = "heal_start" if not scenario.writes_expected_during_fault else "fault"
        if anchor in ctx.marks:
            points = [("heal" if anchor == "heal_start" else "fault", ctx.marks[anchor])]
    resumes = [(what, _resumed(workload, at)) for what, at in points]
    if resumes:
        worst = max(resumes, key=lambda p: math.inf if p[1] is None else p[1])
        result.resumed_s = worst[1]
        result.resumed_after = worst[0] + (f" (worst of {len(resumes)})" if len(resumes) > 1 else "")
        result.details["resumed"] = [{"after": what, "seconds": s} for what, s in resumes]
    result.criteria = criteria
    result.notes += ctx.notes
    result.details["marks"] = {k: round(v - workload.origin, 3) for k, v in ctx.marks.items()}
    result.details["scenario"] = {
        k: (v if isinstance(v, (int, float, str, bool, list, dict, type(None))) else repr(v))
        for k, v in ctx.data.items()
    }
    result.verdict = "FAIL" if any(c.ok is False for c in criteria) else "PASS"
