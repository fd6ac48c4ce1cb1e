"""The audit log of a process: admin operations, role changes, authentication failures and permission
refusals, one JSON object a line, append-only; and reading it back (`sixfold audit`).

An adapter (it writes a file); the caller passes `now` (seconds since the Unix epoch).

Rules:
1. A line is {"time": ISO-8601 UTC to the microsecond, "process", "who", "what", "outcome", "details"}:
   `who` is the caller as authenticated ("user:alice", "cert:storage-node/node3", "anonymous"), `what`
   the RPC or admin action, `outcome` "ok", "refused: <reason>" or "failed: <reason>".
2. One `os.write` per line on an O_APPEND descriptor: a line reaches the kernel whole as soon as it is
   recorded (no buffer to lose in a crash). A crash can still tear the last line; opening the log ends
   a torn line with a newline first, and `read` skips (and counts) every line that does not parse.
3. The file is mode 0600 (made so if it existed wider): it says who did what.
4. No token is ever written: every text goes through `tokens.redact_text`, and a detail whose name
   sounds like a credential (`tokens.is_secret_key`) keeps only its fingerprint.
5. Bounds: `who` and `what` `NAME_CHARS_MAX`, `outcome` `OUTCOME_CHARS_MAX`, at most `DETAILS_MAX`
   details of `DETAIL_CHARS_MAX` each (longer text is cut and says so), a line at most `LINE_BYTES_MAX`
   (else its details are dropped, and the line says so).
6. Rotation: a line that would take the file past `FILE_BYTES_MAX` (64 MiB) first renames audit.log to
   audit.log.1 (audit.log.1 to .2, and so on, up to `FILES_KEPT` old files; the oldest is deleted), so
   one process's audit log holds at most (FILES_KEPT + 1) x 64 MiB. `read(..., rotated=True)` reads the
   old files too, oldest first.
7. A process holds one `AuditLog` per file; it is safe to call from several threads.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sixfold.storage.security.tokens import fingerprint, is_secret_key, redact_text

FILE_BYTES_MAX = 64 << 20  # one audit file; then it rotates (rule 6)
FILES_KEPT = 3  # rotated files kept: audit.log.1 .. audit.log.3
LINE_BYTES_MAX = 16 << 10
NAME_CHARS_MAX = 256  # who, what
OUTCOME_CHARS_MAX = 1024
DETAILS_MAX = 32
DETAIL_CHARS_MAX = 1024
FILE_MODE = 0o600
OUTCOME_OK = "ok"
_OUTCOME_PREFIXES = ("refused: ", "failed: ")
_CUT = "…[cut]"


@dataclass(frozen=True)
class AuditEntry:
    time_s: float  # seconds since the Unix epoch
    process: str
    who: str
    what: str
    outcome: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRead:
    entries: list[AuditEntry]
    skipped_lines: int  # lines that did not parse: torn by a crash (rule 2)


def iso_utc_us(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def format_line(process: str, who: str, what: str, outcome: str, now: float, details: dict[str, object]) -> bytes:
    """One audit line, newline-terminated, within the bounds of rule 5 and with no token (rule 4)."""
    if outcome != OUTCOME_OK and not outcome.startswith(_OUTCOME_PREFIXES):
        raise ValueError(f"an audit outcome is 'ok', 'refused: <reason>' or 'failed: <reason>', not {outcome[:40]!r}")
    entry: dict[str, object] = {
        "time": iso_utc_us(now),
        "process": _text(process, NAME_CHARS_MAX),
        "who": _text(who, NAME_CHARS_MAX),
        "what": _text(what, NAME_CHARS_MAX),
        "outcome": _text(outcome, OUTCOME_CHARS_MAX),
        "details": _details(details),
    }
    line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    if len(line) > LINE_BYTES_MAX:
        entry["details"] = {"dropped": f"the details made the line over {LINE_BYTES_MAX} bytes"}
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    assert len(line) <= LINE_BYTES_MAX and b"\n" not in line[:-1]
    return line


def _text(value: str, chars_max: int) -> str:
    text = redact_text(value if isinstance(value, str) else str(value))
    return text if len(text) <= chars_max else text[: chars_max - len(_CUT)] + _CUT


def _details(details: dict[str, object]) -> dict[str, object]:
    shown: dict[str, object] = {}
    for key, value in list(details.items())[:DETAILS_MAX]:
        name = _text(str(key), NAME_CHARS_MAX)
        if is_secret_key(name):
            shown[name] = f"<redacted {fingerprint(str(value))}>"
        elif value is None or isinstance(value, bool | int):
            shown[name] = value
        elif isinstance(value, float):
            shown[name] = value if value == value and abs(value) != float("inf") else str(value)
        else:
            shown[name] = _text(str(value), DETAIL_CHARS_MAX)
    if len(details) > DETAILS_MAX:
        shown["details_cut"] = f"{len(details) - DETAILS_MAX} more details were left out"
    return shown


class AuditLog:
    """One process's audit log file (rules 2, 3, 6, 7)."""

    def __init__(
        self, path: Path | str, process: str, *, file_bytes_max: int = FILE_BYTES_MAX, files_kept: int = FILES_KEPT
    ) -> None:
        assert file_bytes_max >= LINE_BYTES_MAX and 0 <= files_kept <= 100
        self.path = Path(path)
        self.process = process
        self._file_bytes_max = file_bytes_max
        self._files_kept = files_kept
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._open()

    def record(self, who: str, what: str, outcome: str, now: float, **details: object) -> None:
        """Append one line (rule 1); it is in the kernel when this returns."""
        line = format_line(self.process, who, what, outcome, now, details)
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"the audit log {self.path} is closed")
            if self._size + len(line) > self._file_bytes_max:
                self._rotate()
            self._write(line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, FILE_MODE)
        if os.fstat(self._fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(self._fd, FILE_MODE)  # rule 3: an existing file made by someone else, wider
        self._size = os.fstat(self._fd).st_size
        if self._size and not _ends_with_newline(self.path, self._size):
            self._write(b"\n")  # rule 2: a torn last line stays a line of its own

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self._files_kept == 0:
            self.path.unlink(missing_ok=True)
        else:
            for number in range(self._files_kept - 1, 0, -1):
                older = rotated_path(self.path, number)
                if older.exists():
                    os.replace(older, rotated_path(self.path, number + 1))
            os.replace(self.path, rotated_path(self.path, 1))
        self._open()


def rotated_path(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as file:
        file.seek(size - 1)
        return file.read(1) == b"\n"


def read(path: Path | str, since: float | None = None, who: str | None = None, *, rotated: bool = False) -> AuditRead:
    """The entries of an audit log at or after `since` (seconds since the epoch) and of caller `who`, in
    file order; with `rotated`, the rotated files first, oldest first (rule 6). A missing file is empty."""
    path = Path(path)
    paths = [path]
    if rotated:
        older = sorted(
            (p for p in path.parent.glob(f"{path.name}.*") if p.name.rsplit(".", 1)[1].isdigit()),
            key=lambda p: int(p.name.rsplit(".", 1)[1]),
        )
        paths = [*reversed(older), path]
    entries: list[AuditEntry] = []
    skipped = 0
    for file_path in paths:
        try:
            with file_path.open("rb") as file:
                for raw in file:
                    entry = _parse(raw)
                    if entry is None:
                        skipped += raw.strip() != b""
                    elif (since is None or entry.time_s >= since) and (who is None or entry.who == who):
                        entries.append(entry)
        except FileNotFoundError:
            continue
    return AuditRead(entries=entries, skipped_lines=skipped)


def _parse(raw: bytes) -> AuditEntry | None:
    try:
        data = json.loads(raw)
        time_s = datetime.fromisoformat(data["time"]).timestamp()
        fields = [data[name] for name in ("process", "who", "what", "outcome")]
        details = data["details"]
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(value, str) for value in fields) or not isinstance(details, dict):
        return None
    process, who, what, outcome = fields
    return AuditEntry(time_s=time_s, process=process, who=who, what=what, outcome=outcome, details=details)
