"""The audit log (storage/security/audit.py): append and read back, filters, a torn last line, mode 0600,
no token in the file, bounds, rotation, threads."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from sixfold.storage.security import audit
from sixfold.storage.security import tokens as tk
from sixfold.storage.security.users import Users

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.25
TOKEN_KEY = bytes(range(32))


def a_token() -> str:
    users = Users()
    return tk.issue(TOKEN_KEY, users.create("alice", tk.Role.ADMIN, NOW), tk.Role.ADMIN, NOW, 3600)


def test_append_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with audit.AuditLog(path, "control-plane") as log:
        log.record("user:alice", "CreateVolume", "ok", NOW, volume="vol1", size_bytes=1 << 30)
        log.record("user:bob", "DeleteVolume", "refused: role reader, needs admin", NOW + 1, volume="vol1")
        log.record("cert:compute/compute", "GrowVolume", "failed: volume full", NOW + 2)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == {
        "time": "2027-01-15T08:00:00.250000Z",
        "process": "control-plane",
        "who": "user:alice",
        "what": "CreateVolume",
        "outcome": "ok",
        "details": {"volume": "vol1", "size_bytes": 1 << 30},
    }
    read = audit.read(path)
    assert [e.what for e in read.entries] == ["CreateVolume", "DeleteVolume", "GrowVolume"]
    assert read.skipped_lines == 0 and read.entries[0].time_s == NOW
    assert [e.what for e in audit.read(path, since=NOW + 1).entries] == ["DeleteVolume", "GrowVolume"]
    assert [e.outcome for e in audit.read(path, who="user:bob").entries] == ["refused: role reader, needs admin"]
    assert audit.read(tmp_path / "missing.log").entries == []


def test_an_outcome_is_ok_refused_or_failed(tmp_path: Path) -> None:
    with audit.AuditLog(tmp_path / "audit.log", "p") as log, pytest.raises(ValueError, match="an audit outcome"):
        log.record("user:alice", "x", "maybe", NOW)


def test_the_file_is_mode_0600_even_if_it_existed_wider(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    path.chmod(0o644)
    with audit.AuditLog(path, "p") as log:
        log.record("user:alice", "x", "ok", NOW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.log"
    audit.AuditLog(fresh, "p").close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_a_torn_last_line_is_skipped_counted_and_ended_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with audit.AuditLog(path, "p") as log:
        log.record("user:alice", "one", "ok", NOW)
        log.record("user:alice", "two", "ok", NOW)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 20])  # a crash in the middle of the second line
    read = audit.read(path)
    assert [e.what for e in read.entries] == ["one"] and read.skipped_lines == 1
    with audit.AuditLog(path, "p") as log:  # the torn line gets its newline: the next line stays whole
        log.record("user:alice", "three", "ok", NOW)
    read = audit.read(path)
    assert [e.what for e in read.entries] == ["one", "three"] and read.skipped_lines == 1


def test_no_token_reaches_the_file(tmp_path: Path) -> None:
    token = a_token()
    path = tmp_path / "audit.log"
    with audit.AuditLog(path, "compute") as log:
        log.record(
            "anonymous",
            f"Execute with Bearer {token}",
            f"refused: token {token} expired",
            NOW,
            metadata=str(tk.redact([("authorization", f"Bearer {token}")])),
            token=token,
            authorization=f"Bearer {token}",
            note=f"raw {token} in text",
        )
    text = path.read_text()
    signature = token.rsplit(".", 1)[1]
    assert token not in text and signature not in text and token.split(".")[1] not in text
    assert tk.fingerprint(token) in text  # still traceable to the token


def test_bounds_cut_long_text_and_drop_oversized_details(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    many = {f"d{i}": i for i in range(audit.DETAILS_MAX + 5)}
    with audit.AuditLog(path, "p") as log:
        log.record("w" * 5000, "x", "ok", NOW, note="n" * 5000)
        log.record("user:a", "x", "ok", NOW, **many)
        log.record("user:a", "x", "ok", NOW, **{f"k{i}": "é" * 1000 for i in range(audit.DETAILS_MAX)})
    lines = path.read_bytes().splitlines()
    assert all(len(line) + 1 <= audit.LINE_BYTES_MAX for line in lines)
    first, second, third = (json.loads(line) for line in lines)
    assert len(first["who"]) == audit.NAME_CHARS_MAX and first["who"].endswith("[cut]")
    assert len(first["details"]["note"]) == audit.DETAIL_CHARS_MAX
    assert len(second["details"]) == audit.DETAILS_MAX + 1 and "5 more details" in second["details"]["details_cut"]
    assert list(third["details"]) == ["dropped"]


def test_rotation_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with audit.AuditLog(path, "p", file_bytes_max=audit.LINE_BYTES_MAX, files_kept=2) as log:
        for i in range(400):
            log.record("user:alice", f"op{i}", "ok", NOW + i, pad="x" * 200)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.log", "audit.log.1", "audit.log.2"]
    assert all(p.stat().st_size <= audit.LINE_BYTES_MAX for p in tmp_path.iterdir())
    everything = audit.read(path, rotated=True).entries
    whats = [e.what for e in everything]
    assert whats == [f"op{i}" for i in range(400 - len(whats), 400)]  # the newest, in order
    assert audit.read(path).entries == everything[-len(audit.read(path).entries) :]


def test_threads_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with audit.AuditLog(path, "p") as log:

        def work(n: int) -> None:
            for i in range(200):
                log.record(f"user:t{n}", f"op{i}", "ok", NOW, pad="y" * 500)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    read = audit.read(path)
    assert len(read.entries) == 800 and read.skipped_lines == 0


def test_a_closed_log_refuses_to_record(tmp_path: Path) -> None:
    log = audit.AuditLog(tmp_path / "audit.log", "p")
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.record("user:a", "x", "ok", NOW)
    assert os.path.exists(tmp_path / "audit.log")
