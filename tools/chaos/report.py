"""What a chaos run reports: its result, the files it leaves, and the verdict table.

`ScenarioResult` is one run's verdict with its counts and criteria (`verdict.json`);
`save` writes the output directory (history.jsonl, faults.jsonl, logs/, verdict.json)
and prints the criteria; `table` lines up several results, one row per scenario (with
the workload and the bank's conserved total as columns when a bank run is among them).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sixfold.tools.chaos.bank_workload import BANK, BankWorkload
from sixfold.tools.chaos.fault_log import FaultLog
from sixfold.tools.chaos.run_checks import CONVERGENCE_NOTE
from sixfold.tools.chaos.scenario_base import Criterion
from sixfold.tools.chaos.workload import PAGES, Workload
from sixfold.tools.cluster import Cluster


@dataclass
class ScenarioResult:
    scenario: str
    verdict: str  # PASS / FAIL
    seed: int
    out_dir: str
    workload: str = PAGES
    operations: int = 0
    ok: int = 0
    fail: int = 0
    info: int = 0
    lost: int | None = None
    linearizable: str = "unknown"  # yes / no / unknown (n/a: the bank workload)
    vanished: int | None = None
    conserved: str = "-"  # the bank: the total stayed the same in the end and in every read (yes / no)
    resumed_s: float | None = None
    resumed_after: str = ""
    converged: str = "-"
    criteria: list[Criterion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def save(
    out: Path,
    log: Callable[[str], None],
    result: ScenarioResult,
    workload: Workload | BankWorkload | None,
    cluster: Cluster,
    fault_log: FaultLog,
    started: float,
) -> None:
    """Write the run's output directory (`out`) and say what it holds, criterion by criterion."""
    result.seconds = round(time.monotonic() - started, 1)
    origin = workload.origin if workload else started
    if workload is not None:
        workload.save_history(out / "history.jsonl")
    fault_log.to_jsonl(out / "faults.jsonl", origin)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    if cluster.exists():
        for name, path in cluster.log_files().items():
            if path.exists():
                shutil.copyfile(path, logs / f"{name}.log")
    (out / "verdict.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    log(f"  {result.scenario}: {result.verdict} ({result.seconds:.0f} s); history, logs and verdict in {out}")
    for c in result.criteria:
        mark = {True: "ok  ", False: "FAIL", None: "note"}[c.ok]
        log(f"    {mark} {c.name}: {c.detail[:400]}")
    for note in result.notes:
        log(f"    note: {note}")


# --- the verdict table ---------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "workload",
    "ops",
    "ok",
    "fail",
    "info",
    "lost",
    "linearizable",
    "vanished",
    "conserved",
    "resumed",
    "converged",
    "verdict",
)
BANK_ONLY_COLUMNS = ("workload", "conserved")  # shown when a bank run is in the table


def _cells(r: ScenarioResult) -> dict[str, str]:
    resumed = "-" if r.resumed_after == "" else ("never" if r.resumed_s is None else f"{r.resumed_s:.2f}s")
    return {
        "scenario": r.scenario,
        "workload": r.workload,
        "ops": str(r.operations),
        "ok": str(r.ok),
        "fail": str(r.fail),
        "info": str(r.info),
        "lost": "-" if r.lost is None else str(r.lost),
        "linearizable": r.linearizable,
        "vanished": "-" if r.vanished is None else str(r.vanished),
        "conserved": r.conserved,
        "resumed": resumed,
        "converged": r.converged,
        "verdict": r.verdict,
    }


def table(results: list[ScenarioResult]) -> str:
    bank = any(r.workload == BANK for r in results)
    columns = [c for c in COLUMNS if bank or c not in BANK_ONLY_COLUMNS]
    rows = [columns] + [[_cells(r)[c] for c in columns] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i in (0, len(row) - 1) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    footnotes = []
    if any(r.converged == "no*" for r in results):
        footnotes.append(f"no* = not converged, not judged: the writer restarted in the scenario; {CONVERGENCE_NOTE}.")
    footnotes.append(
        "resumed = seconds from the fault until a write issued after it was acknowledged (from the "
        "heal where writes cannot go on: kill-az-plus-one, kill-four; from the kill or stop of the writer; "
        "from the switch to the new writer); the worst one where there were several."
    )
    if bank:
        footnotes.append(
            "bank: ops are transfers, reads and snapshots from storage; a write is a transfer; lost = acknowledged "
            "transfers missing at the end; conserved = the total balance was the same at the end and in every "
            "read; linearizable n/a (the bank checks its invariants instead)."
        )
    for r in results:
        if r.error:
            footnotes.append(f"{r.scenario}: {r.error}")
        for c in r.criteria:
            if c.ok is False:
                footnotes.append(f"{r.scenario}: FAILED {c.name}: {c.detail[:300]}")
    return "\n".join(lines + [""] + footnotes)
