"""The statement runner and interactive shell of `sixfold sql` (like sqlite3's).

`Runner` carries out statements one by one and prints what they return: a statement outside a
transaction is one `Execute` (autocommit); `BEGIN` opens an interactive session (one stream,
kept for the runner's life) and every statement up to `COMMIT`/`ROLLBACK` runs in it.
`BEGIN READ ONLY` begins a read-only transaction (one snapshot).

`Shell` reads lines (readline with history in ~/.sixfold/sql_history when the input is a
terminal; no prompts otherwise, so `sixfold sql < script.sql` works), gathers them into
statements that end with `;`, and knows the dot commands:

    .tables               the tables and views
    .schema [TABLE]       the CREATE statements (of one table and its indexes)
    .timer on|off         print each statement's time
    .read FILE            run the statements (and dot commands) of a file
    .help                 this list
    .quit / .exit         leave (a transaction still open is rolled back)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO

from sixfold.compute.client import VolumeError
from sixfold.compute.sql_client import SqlClient, SqlError, SqlResult, SqlSession
from sixfold.compute.sql_values import SqlValue
from sixfold.tools.sql_format import (
    csv_text,
    format_value,
    json_text,
    split_statements,
    summary,
    table,
    transaction_verb,
)
from sixfold.tools.volume_cli import call_hint, report_failure

HISTORY_PATH = Path("~/.sixfold/sql_history")
HISTORY_LENGTH_MAX = 1000
PROMPT = "sixfold> "
CONTINUATION_PROMPT = "   ...> "
READ_DEPTH_MAX = 16  # .read inside .read: a file that reads itself stops here
TABLES_SQL = "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name"
SCHEMA_SQL = "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY tbl_name, rowid"
TABLE_SCHEMA_SQL = (
    "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND tbl_name = ? COLLATE NOCASE "
    "ORDER BY type DESC, rowid"  # the table first, then its indexes and triggers
)
HELP = __doc__.split("dot commands:", 1)[1].rstrip() if __doc__ else ""


class Runner:
    """Runs statements against one volume and prints their results in one format."""

    def __init__(
        self, client: SqlClient, output: str = "table", out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.client = client
        self.output = output  # "table", "csv" or "json"
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.timer = False
        self.failures = 0
        self._session: SqlSession | None = None

    @property
    def in_transaction(self) -> bool:
        return self._session is not None and self._session.transaction_open

    def close(self) -> None:
        """End the session; a transaction it still has open is rolled back (and said so)."""
        if self._session is None:
            return
        if self._session.transaction_open:
            print("note: the open transaction was rolled back", file=self.err)
        self._session.close()
        self._session = None

    def interrupted(self) -> None:
        """Ctrl-C during a statement: its session is given up (the server rolls back what it held)."""
        lost = self._session is not None and self._session.closed
        print("^C: interrupted" + ("; the open transaction was rolled back" if lost else ""), file=self.err)

    def _session_open(self) -> SqlSession:
        if self._session is None or self._session.closed:
            self._session = self.client.session()
        return self._session

    def run(self, sql: str, params: Sequence[SqlValue] = ()) -> bool:
        """Run one statement and print its result; on failure print `error: CODE: details` (True: it worked)."""
        started = time.monotonic()
        try:
            self._run(sql, params)
        except SqlError as error:
            self.failures += 1
            report_failure(error, failure_hint(error, self.client.timeout_s), self.err)
            return False
        finally:
            if self.timer:
                print(f"Run Time: real {time.monotonic() - started:.3f} s", file=self.out)
        return True

    def _run(self, sql: str, params: Sequence[SqlValue]) -> None:
        verb = transaction_verb(sql)
        if verb is not None:
            self._transaction_step(*verb)
            return
        if self.in_transaction:
            assert self._session is not None
            result = self._session.execute(sql, params)
        else:
            result = self.client.execute(sql, params)
        self.show(sql, result)

    def _transaction_step(self, verb: str, read_only: bool) -> None:
        if verb == "begin":
            session = self._session_open()
            session.begin(read_only=read_only)
            kind = "read-only transaction" if read_only else "transaction"
            reading = f", reading at LSN {session.read_point}" if session.read_point else ""
            self._note(f"({kind} {session.txn_id} begun{reading})")
            return
        if not self.in_transaction:
            raise SqlError("FAILED_PRECONDITION", f"no transaction is open to {verb}; BEGIN one first")
        assert self._session is not None
        if verb == "commit":
            lsn = self._session.commit()
            self._note(f"(committed, commit LSN {lsn})" if lsn else "(committed; nothing was written)")
        else:
            self._session.rollback()
            self._note("(rolled back)")

    def _note(self, line: str) -> None:
        if self.output == "table":
            print(line, file=self.out)

    def show(self, sql: str, result: SqlResult) -> None:
        if self.output == "json":
            print(
                json_text(result.columns, result.rows, result.rows_affected, result.last_row_id, result.commit_lsn),
                file=self.out,
            )
            return
        line = summary(
            sql, result.columns, len(result.rows), result.rows_affected, result.last_row_id, result.commit_lsn
        )
        if self.output == "csv":
            if result.columns:
                print(csv_text(result.columns, result.rows), file=self.out)
            else:
                print(line, file=self.err)  # the data stays clean CSV
            return
        if result.columns:
            print(table(result.columns, result.rows), file=self.out)
        print(line, file=self.out)


def failure_hint(error: VolumeError, timeout_s: float) -> str | None:
    """What a user can do about a failed call, where the CLI knows (None: the details say it all)."""
    if error.may_have_committed:
        return "the statement may have committed (its outcome is unknown); check before running it again"
    if error.code.name == "RESOURCE_EXHAUSTED":
        return "add a LIMIT to the query"
    return call_hint(error, timeout_s)


class Shell:
    """Lines in, statements and dot commands out, through a Runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.pending = ""  # an incomplete statement, waiting for its `;`
        self.done = False
        self._depth = 0

    def feed(self, line: str) -> None:
        """One line of input: a dot command (when no statement is pending) or part of statements."""
        if not self.pending and line.strip().startswith("."):
            self.dot(line.strip())
            return
        statements, self.pending = split_statements(self.pending + line + "\n")
        for statement in statements:
            self.runner.run(statement)

    def feed_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            if self.done:
                return
            self.feed(line.rstrip("\n"))

    def finish(self) -> None:
        """The input ended: run a statement left without its `;`."""
        pending, self.pending = self.pending.strip(), ""
        if pending:
            self.runner.run(pending)

    def dot(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as error:
            self._error(f"cannot parse {line!r}: {error}")
            return
        command, args = words[0].lower(), words[1:]
        if command in (".quit", ".exit", ".q"):
            self.done = True
        elif command == ".help":
            print(HELP.strip("\n"), file=self.runner.out)
        elif command == ".tables":
            self._tables()
        elif command == ".schema" and len(args) <= 1:
            self._schema(args[0] if args else None)
        elif command == ".timer" and len(args) == 1 and args[0].lower() in ("on", "off"):
            self.runner.timer = args[0].lower() == "on"
        elif command == ".read" and len(args) == 1:
            self._read(Path(args[0]).expanduser())
        else:
            self._error(f"unknown or malformed command {line!r}; .help lists the commands")

    def _error(self, text: str) -> None:
        self.runner.failures += 1
        print(f"error: {text}", file=self.runner.err)

    def _query(self, sql: str, params: Sequence[SqlValue] = ()) -> list[tuple[SqlValue, ...]] | None:
        try:
            session = self.runner._session
            if self.runner.in_transaction and session is not None:
                return session.execute(sql, params).rows
            return self.client.execute(sql, params).rows
        except SqlError as error:
            self._error(f"{error.code.name}: {error.details}")
            return None

    @property
    def client(self) -> SqlClient:
        return self.runner.client

    def _tables(self) -> None:
        rows = self._query(TABLES_SQL)
        if rows:
            print("  ".join(str(name) for (name,) in rows), file=self.runner.out)

    def _schema(self, name: str | None) -> None:
        rows = self._query(TABLE_SCHEMA_SQL, [name]) if name else self._query(SCHEMA_SQL)
        for (sql,) in rows or ():
            print(f"{format_value(sql)};" if not isinstance(sql, str) else f"{sql};", file=self.runner.out)

    def _read(self, path: Path) -> None:
        if self._depth >= READ_DEPTH_MAX:
            self._error(f".read is nested more than {READ_DEPTH_MAX} deep; does {path} read itself?")
            return
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            self._error(f"cannot read {path}: {getattr(error, 'strerror', None) or error}")
            return
        outer, self.pending = self.pending, ""
        self._depth += 1
        try:
            self.feed_lines(text.splitlines())
            self.finish()
        finally:
            self._depth -= 1
            self.pending = outer


def interactive(shell: Shell, history: Path = HISTORY_PATH) -> None:
    """Prompt for lines until .quit or end of input (Ctrl-D); Ctrl-C drops the pending statement."""
    save_history = _readline_history(history.expanduser())
    print('sixfold SQL shell: statements end with ";"; .help lists the commands, .quit leaves.', file=shell.runner.out)
    try:
        while not shell.done:
            try:
                line = input(CONTINUATION_PROMPT if shell.pending else PROMPT)
            except KeyboardInterrupt:
                print("^C", file=shell.runner.out)
                shell.pending = ""
                continue
            except EOFError:
                print(file=shell.runner.out)
                break
            try:
                shell.feed(line)
            except KeyboardInterrupt:
                shell.pending = ""
                shell.runner.interrupted()
        shell.finish()
    finally:
        if save_history is not None:
            save_history()


def _readline_history(path: Path) -> Callable[[], None] | None:
    """Turn on readline with the history file; a function that saves it (None: no readline)."""
    try:
        import readline
    except ImportError:
        return None
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH_MAX)

    def save() -> None:
        with contextlib.suppress(OSError):
            readline.write_history_file(path)
            os.chmod(path, 0o600)  # statements may hold data worth keeping private

    return save
