"""`sixfold audit`: the audit logs of every process of the local cluster, merged in time order.

    sixfold audit                                  # every entry: time, process, who, what, outcome, details
    sixfold audit --process control-plane          # one process's entries
    sixfold audit --since 2025-01-31T12:00:00Z     # entries at or after a time (no zone given: UTC)
    sixfold audit --json                           # one JSON object a line, as the files hold them

Each process keeps `<its data dir>/audit.log` (storage/security/audit_rpc.py: admin operations, role changes,
permission refusals; who is the caller's certificate, "cert:<role>/<name>", or "anonymous" on a plaintext
cluster). The logs of every data dir under STATE_DIR/data are read, rotated files too, so a replica removed
since still shows. Tokens are never in them (storage/security/audit.py redacts). Lines torn by a crash are
skipped and counted on stderr.

Exit codes: 0 (also when there is nothing to show), 1 no cluster there, 2 a bad --since or an unknown --process.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from sixfold.storage.security import audit
from sixfold.storage.security.audit_rpc import AUDIT_FILE
from sixfold.tools.cluster import Cluster, ClusterError
from sixfold.tools.text_table import table

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _since(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time (e.g. 2025-01-31T12:00:00Z): {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the local cluster's directory (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster)",
    )
    parser.add_argument("--process", metavar="NAME", help="only this process's entries (control-plane, a1, compute)")
    parser.add_argument(
        "--since", type=_since, metavar="ISO", help="only entries at or after this time (ISO-8601; no zone: UTC)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object a line, as in the audit files")


def audit_files(cluster: Cluster) -> list[Path]:
    """The audit log of every process of the cluster, and of any data dir left by one removed since."""
    data_dirs = {Path(record.data_dir) for record in cluster.records()}
    data_dirs |= {path.parent for path in (cluster.state_dir / "data").glob(f"*/{AUDIT_FILE}")}
    return [directory / AUDIT_FILE for directory in sorted(data_dirs)]


def read_entries(files: list[Path], since: float | None) -> tuple[list[audit.AuditEntry], int]:
    """Every entry of `files` at or after `since`, in time order (then process), and the lines skipped."""
    entries: list[audit.AuditEntry] = []
    skipped = 0
    for path in files:
        read = audit.read(path, since=since, rotated=True)
        entries.extend(read.entries)
        skipped += read.skipped_lines
    entries.sort(key=lambda e: (e.time_s, e.process))
    return entries, skipped


def _as_dict(entry: audit.AuditEntry) -> dict[str, object]:
    return {
        "time": audit.iso_utc_us(entry.time_s),
        "process": entry.process,
        "who": entry.who,
        "what": entry.what,
        "outcome": entry.outcome,
        "details": entry.details,
    }


def _details_text(details: dict[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in details.items()) or "-"


def run(args: argparse.Namespace) -> int:
    from sixfold.tools.launcher import default_state_dir

    cluster = Cluster(args.state_dir or default_state_dir())
    try:
        files = audit_files(cluster)
        names = set(cluster.names())
    except ClusterError as error:
        print(f"sixfold audit: {error}", file=sys.stderr)
        return EXIT_FAILED
    entries, skipped = read_entries(files, args.since)
    if args.process is not None:
        known = names | {entry.process for entry in entries}
        if args.process not in known:
            print(
                f"sixfold audit: no process {args.process!r} in this cluster; its processes: {' '.join(sorted(names))}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        entries = [entry for entry in entries if entry.process == args.process]
    if args.json:
        for entry in entries:
            print(json.dumps(_as_dict(entry), ensure_ascii=False, separators=(",", ":")))
    elif entries:
        rows = [
            [audit.iso_utc_us(e.time_s), e.process, e.who, e.what, e.outcome, _details_text(e.details)] for e in entries
        ]
        print(table(["TIME (UTC)", "PROCESS", "WHO", "WHAT", "OUTCOME", "DETAILS"], rows))
    else:
        print("no audit entries" + (" matching" if args.process or args.since is not None else ""))
    if skipped:
        print(f"({skipped} torn lines skipped: a process crashed while writing one)", file=sys.stderr)
    return EXIT_OK
