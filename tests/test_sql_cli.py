"""`sixfold sql` (and its pure parts: formatting, parameters, statement splitting).

The first half runs in this process: the formatting functions, argument parsing, and the CLI
against SqlService over a fake engine (tests/sql_fakes.py). The second half runs `sixfold sql`
as a subprocess against a real cluster (one for the module).
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sixfold.tools.cli import build_parser, main
from sixfold.tools.cluster import Cluster
from sixfold.tools.sql_format import (
    csv_text,
    format_value,
    json_text,
    parse_param,
    split_statements,
    summary,
    table,
    transaction_verb,
)
from tests.sql_cluster import module_cluster, sixfold, sixfold_ok
from tests.sql_fakes import fake_compute

# --- pure parts -------------------------------------------------------------------------------------


@pytest.mark.unit
def test_values_tables_csv_and_json() -> None:
    assert [format_value(v) for v in (None, 3, 2.5, "a\tb\nc", b"\x00\xff")] == [
        "NULL",
        "3",
        "2.5",
        "a\\tb\\nc",
        "x'00ff'",
    ]
    assert table(["id", "name"], [(1, "ann"), (22, None)]).splitlines() == [
        "id  name",
        "--  ----",
        "1   ann",
        "22  NULL",
    ]
    assert table(["x"], []).splitlines() == ["x", "-"]
    assert csv_text(["a", "b"], [(None, b"\x01"), ("x,y", 1.5)]).splitlines() == ["a,b", ",x'01'", '"x,y",1.5']
    decoded = json.loads(json_text(["b"], [(b"\xff",), (None,)], 0, 0, 7))
    assert decoded == {
        "columns": ["b"],
        "rows": [[{"blob": "ff"}], [None]],
        "rows_affected": 0,
        "last_row_id": 0,
        "commit_lsn": 7,
    }
    assert summary("SELECT 1", ["1"], 1, 0, 0, 0) == "(1 row)"
    assert summary("insert into t values (1)", [], 0, 1, 5, 9) == "(1 row affected, last row id 5, commit LSN 9)"
    assert summary("UPDATE t SET x = 1", [], 0, 3, 5, 9) == "(3 rows affected, commit LSN 9)"
    assert summary("CREATE TABLE t(x)", [], 0, 0, 0, 9) == "(commit LSN 9)"
    assert summary("UPDATE t SET x = 1 WHERE 0", [], 0, 0, 0, 0) == "(ok)"


@pytest.mark.unit
def test_parameters_statements_and_transaction_verbs() -> None:
    assert [parse_param(t) for t in ("42", "-7", "4.5", "1e3", "null", "NULL", "x'00FF'", "'42'", "it''s", "ann")] == [
        42,
        -7,
        4.5,
        1000.0,
        None,
        None,
        b"\x00\xff",
        "42",
        "it''s",
        "ann",
    ]
    assert parse_param("'it''s'") == "it's" and parse_param(str(1 << 64)) == str(1 << 64)
    with pytest.raises(ValueError, match="even number"):
        parse_param("x'abc'")
    assert split_statements("SELECT 1; SELECT ';'; SELECT") == (["SELECT 1;", "SELECT ';';"], "SELECT")
    assert split_statements("CREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;\n") == (
        ["CREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;"],
        "",
    )
    assert split_statements(";;  \n") == ([], "")
    assert transaction_verb("begin;") == ("begin", False)
    assert transaction_verb("BEGIN  read only") == ("begin", True)
    assert transaction_verb("BEGIN IMMEDIATE TRANSACTION;") == ("begin", False)
    assert transaction_verb("end") == ("commit", False) and transaction_verb("COMMIT TRANSACTION") == ("commit", False)
    assert transaction_verb("ROLLBACK") == ("rollback", False)
    assert transaction_verb("ROLLBACK TO sp") is None and transaction_verb("SELECT 'begin'") is None


@pytest.mark.unit
def test_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser("sql").parse_args(["sql", "SELECT ?, ?", "-p", "1", "--param", "x'01'", "--csv"])
    assert (args.statement, args.param, args.output, args.volume) == ("SELECT ?, ?", [1, b"\x01"], "csv", "vol0")
    for bad in (["--json", "--csv"], ["-p", "x'0'"], ["--timeout", "0"]):
        with pytest.raises(SystemExit) as exited:
            build_parser("sql").parse_args(["sql", "SELECT 1", *bad])
        assert exited.value.code == 2
    args = build_parser("kv").parse_args(["kv", "scan", "--prefix", "u", "--limit", "5", "--volume", "v1"])
    assert (args.kv_command, args.prefix, args.limit, args.volume, args.hex) == ("scan", "u", 5, "v1", False)
    with pytest.raises(SystemExit):
        build_parser("kv").parse_args(["kv", "scan", "--limit", "0"])
    capsys.readouterr()
    assert main(["sql", "SELECT 1", "extra", "--address", "127.0.0.1:1"]) == 2
    assert main(["sql", "import", "--address", "127.0.0.1:1", "--param", "1"]) == 2
    assert "usage error" in capsys.readouterr().err


# --- the CLI against a fake engine ------------------------------------------------------------------


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    with fake_compute(tmp_path) as served:
        yield served


def cli(capsys: pytest.CaptureFixture[str], address: str, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--address", address])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.unit
def test_cli_statements_and_errors(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, address, "sql", "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, b BLOB)")
    assert code == 0 and re.fullmatch(r"\(commit LSN \d+\)\n", out), out
    code, out, _ = cli(capsys, address, "sql", "INSERT INTO t(s, b) VALUES (?, ?)", "-p", "'7'", "-p", "x'0a'")
    assert code == 0 and out.startswith("(1 row affected, last row id 1, commit LSN"), out
    code, out, _ = cli(capsys, address, "sql", "SELECT id, s, b, NULL AS n FROM t")
    assert out.splitlines() == ["id  s  b      n", "--  -  -----  ----", "1   7  x'0a'  NULL", "(1 row)"]
    code, out, _ = cli(capsys, address, "sql", "SELECT s FROM t", "--json")
    assert json.loads(out)["rows"] == [["7"]]
    code, out, err = cli(capsys, address, "sql", "BEGIN; DELETE FROM t; ROLLBACK; SELECT count(*) FROM t;", "--csv")
    assert code == 0 and out.splitlines() == ["count(*)", "1"] and "(1 row affected)" in err
    code, out, err = cli(capsys, address, "sql", "SELEC 1; SELECT 2")
    assert code == 1 and err.startswith("error: INVALID_ARGUMENT: ") and "syntax error" in err and out == ""
    code, _, err = cli(capsys, address, "sql", "SELECT 1", "--volume", "nosuch")
    assert code == 1 and err.startswith("error: NOT_FOUND: ")
    code, _, err = cli(capsys, address, "sql", "COMMIT")
    assert code == 1 and "no transaction is open" in err


@pytest.mark.unit
def test_cli_shell_reads_statements_and_dot_commands(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "script.sql"
    script.write_text("INSERT INTO t VALUES (2);\nINSERT INTO t\n  VALUES (3);\n")
    lines = [
        "CREATE TABLE t(x INTEGER);",
        "CREATE INDEX tx ON t(x);",
        "INSERT INTO t VALUES (1)",
        ";",  # a line that only ends the statement before it
        "SELEC 1;",
        ".tables",
        ".schema t",
        f".read {script}",
        ".timer on",
        "BEGIN READ ONLY;",
        "SELECT sum(x) FROM t;",
        "COMMIT;",
        ".timer off",
        ".nope",
        "SELECT count(*)",
        "  FROM t",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    code, out, err = cli(capsys, address, "sql")
    assert code == 1 and "unknown or malformed command '.nope'" in err, err  # the shell went on after it
    assert "error: INVALID_ARGUMENT" in err and "syntax error" in err
    assert "\nt\n" in out
    assert "CREATE TABLE t(x INTEGER);\nCREATE INDEX tx ON t(x);" in out
    assert "sum(x)\n------\n6\n(1 row)\nRun Time: real" in out
    assert "read-only transaction" in out and out.rstrip().endswith("count(*)\n--------\n3\n(1 row)")


@pytest.mark.unit
def test_cli_export_then_import(address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "source.db"
    with sqlite3.connect(source) as db:
        db.executescript(
            """
            CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT, b BLOB, r REAL);
            CREATE TABLE w(k TEXT PRIMARY KEY, v, g AS (upper(k))) WITHOUT ROWID;
            CREATE INDEX a_s ON a(s);
            CREATE VIEW va AS SELECT s FROM a;
            """
        )
        db.executemany(
            "INSERT INTO a(s, b, r) VALUES (?, ?, ?)", [(f"s{i}", bytes([i % 256]) * i, i / 3) for i in range(2500)]
        )
        db.executemany("INSERT INTO w(k, v) VALUES (?, ?)", [(f"k{i}", i) for i in range(10)])
        db.execute("DELETE FROM a WHERE id > 2400")
    source.with_suffix(".db-journal").unlink(missing_ok=True)
    code, out, err = cli(capsys, address, "sql", "import", str(source))
    assert code == 0, err
    assert "imported 2 table(s), 2410 row(s)" in out and "integrity_check: ok" in out and ", ok (volume vol0)" in out
    code, out, _ = cli(capsys, address, "sql", "SELECT count(*), sum(length(b)), max(r) FROM a", "--json")
    assert json.loads(out)["rows"] == [[2400, sum(range(2400)), 2399 / 3]]
    target = tmp_path / "target.db"
    code, out, err = cli(capsys, address, "sql", "export", str(target))
    assert code == 0 and "integrity_check: ok (volume vol0), ok" in out, err
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT count(*), sum(length(b)) FROM a").fetchone() == (2400, sum(range(2400)))
        assert db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'a'").fetchone() == (2500,)
        assert db.execute("SELECT g FROM w WHERE k = 'k3'").fetchone() == ("K3",)
        assert db.execute("SELECT count(*) FROM va").fetchone() == (2400,)
    code, _, err = cli(capsys, address, "sql", "export", str(target))
    assert code == 1 and "exists" in err
    code, _, err = cli(capsys, address, "sql", "import", str(source))
    assert code == 1 and "already exists" in err


# --- through a real cluster --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sql_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with module_cluster(tmp_path_factory, request) as cluster:
        yield cluster


@pytest.mark.integration
def test_sql_cli_through_a_real_cluster(sql_cluster: Cluster, tmp_path: Path) -> None:
    out = sixfold_ok(sql_cluster, "sql", "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, r REAL, b BLOB)")
    assert re.fullmatch(r"\(commit LSN \d+\)\n", out), out
    out = sixfold_ok(
        sql_cluster, "sql", "INSERT INTO t(s, r, b) VALUES (?, ?, ?)", "-p", "ann", "-p", "2.5", "-p", "x'beef'"
    )
    assert "1 row affected, last row id 1, commit LSN" in out
    out = sixfold_ok(sql_cluster, "sql", "SELECT * FROM t")
    assert out.splitlines()[2].split() == ["1", "ann", "2.5", "x'beef'"], out
    assert json.loads(sixfold_ok(sql_cluster, "sql", "SELECT s FROM t", "--json"))["rows"] == [["ann"]]
    assert sixfold_ok(sql_cluster, "sql", "SELECT s, b FROM t", "--csv").splitlines() == ["s,b", "ann,x'beef'"]

    failed = sixfold(sql_cluster, "sql", "SELEC 1")
    assert failed.returncode == 1 and failed.stderr.startswith("error: INVALID_ARGUMENT: "), failed.stderr
    failed = sixfold(sql_cluster, "sql", "INSERT INTO t(id) VALUES (1)")
    assert failed.returncode == 1 and failed.stderr.startswith("error: FAILED_PRECONDITION: "), failed.stderr

    script = "BEGIN;\nINSERT INTO t(s) VALUES ('bo');\nSELECT count(*)\n  FROM t;\nCOMMIT;\n.tables\n.schema t\n"
    out = sixfold_ok(sql_cluster, "sql", stdin=script)
    assert "count(*)\n--------\n2\n(1 row)" in out and "(committed, commit LSN" in out, out
    assert "\nt\n" in out and "CREATE TABLE t(" in out

    exported = tmp_path / "out.db"
    out = sixfold_ok(sql_cluster, "sql", "export", str(exported))
    assert "integrity_check: ok" in out and out.rstrip().endswith(f"ok ({exported})"), out
    with sqlite3.connect(exported) as db:
        assert db.execute("SELECT s FROM t ORDER BY id").fetchall() == [("ann",), ("bo",)]
        db.execute("ALTER TABLE t RENAME TO u")
    out = sixfold_ok(sql_cluster, "sql", "import", str(exported))
    assert "imported 1 table(s), 2 row(s)" in out and out.rstrip().endswith("ok (volume vol0)"), out
    assert sixfold_ok(sql_cluster, "sql", "SELECT count(*) FROM u", "--csv").splitlines() == ["count(*)", "2"]


@pytest.mark.unit
def test_the_shell_on_a_terminal_keeps_its_history_and_recalls_it_with_the_up_arrow(
    address: str, tmp_path: Path
) -> None:
    """`sixfold sql` on a terminal (a pseudo-terminal here) uses readline: what was typed is saved to
    ~/.sixfold/sql_history (private), and a later session recalls it with the up arrow."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm"}

    def session(keys: list[bytes]) -> str:
        leader, follower = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "sixfold.tools.cli", "sql", "--address", address],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=env,
            close_fds=True,
        )
        os.close(follower)
        seen = b""

        def read_until(text: bytes, timeout_s: float = 30.0) -> None:
            nonlocal seen
            deadline = time.monotonic() + timeout_s
            while text not in seen and time.monotonic() < deadline:
                if select.select([leader], [], [], 0.2)[0]:
                    try:
                        seen += os.read(leader, 4096)
                    except OSError:
                        break
            assert text in seen, seen.decode(errors="replace")[-2000:]

        try:
            for key in keys:
                read_until(b"sixfold> ")
                seen = seen.replace(b"sixfold> ", b"", 1)
                for part in key.split(b"|"):  # keys typed one after the other
                    os.write(leader, part)
                    time.sleep(0.2)
            assert process.wait(timeout=30) == 0
            with_end = seen
            while select.select([leader], [], [], 0.2)[0]:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                with_end += chunk
            return with_end.decode(errors="replace")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(leader)

    first = session(
        [b"CREATE TABLE h(x INTEGER);\r", b"INSERT INTO h VALUES (41), (1);\r", b"SELECT sum(x) FROM h;\r", b".quit\r"]
    )
    assert "42" in first, first
    history = tmp_path / ".sixfold" / "sql_history"
    saved = history.read_text()
    assert "SELECT sum(x) FROM h;" in saved and "INSERT INTO h VALUES (41), (1);" in saved, saved
    assert history.stat().st_mode & 0o777 == 0o600
    second = session(
        [b"INSERT INTO h VALUES (100);\r", b"\x1b[A|\x1b[A|\x1b[A|\r", b".quit\r"]
    )  # up 3 times: .quit, then the SELECT
    assert "142" in second, second
