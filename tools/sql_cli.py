"""`sixfold sql`: SQL on a volume, through the compute node.

    sixfold sql "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)"
    sixfold sql "INSERT INTO t(name, data) VALUES (?, ?)" --param ann --param "x'00ff'"
    sixfold sql "SELECT * FROM t"                  # a table; NULL as NULL, blobs as x'hex'
    sixfold sql "SELECT * FROM t" --json           # {"columns": [...], "rows": [[...]], ...}
    sixfold sql "SELECT * FROM t" --csv
    sixfold sql "BEGIN; UPDATE t SET name = 'bo'; COMMIT;"   # statements run in order
    sixfold sql                                    # an interactive shell (like sqlite3's)
    sixfold sql < script.sql                       # the shell, reading a script
    sixfold sql import FILE.db                     # copy a SQLite database file into the volume
    sixfold sql export FILE.db                     # write the volume's database to a new file

A --param is NULL, an integer, a real, x'hex' (a blob), 'quoted' (text, even if it looks like a
number), or else text as it is. Every command takes `--volume` (default vol0) and `--endpoint`:
`cluster` (the writer, the default), `reader` (a read replica: read-only SQL) or a custom endpoint,
resolved through the control plane of the local cluster in `--state-dir` (default:
$SIXFOLD_STATE_DIR, else ~/.sixfold/cluster); `--address HOST:PORT` names an instance instead.
A failed statement prints `error: CODE: details` on stderr (and a hint where the CLI knows one)
and the command exits 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sixfold.compute.client import VolumeError
from sixfold.compute.sql_client import DEFAULT_VOLUME_ID, SqlClient
from sixfold.compute.sql_values import SqlValue
from sixfold.tools.compute_target import UsageError, add_connection_options, compute_target
from sixfold.tools.sql_format import parse_param, split_statements
from sixfold.tools.sql_shell import Runner, Shell, failure_hint, interactive
from sixfold.tools.volume_cli import report_failure

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
TRANSFER_WORDS = ("import", "export")


def _param(text: str) -> SqlValue:
    try:
        return parse_param(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_volume_option(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    parser.add_argument(
        "--volume",
        default=argparse.SUPPRESS if suppress else DEFAULT_VOLUME_ID,
        metavar="NAME",
        help=f"the volume whose database to use (default: {DEFAULT_VOLUME_ID})",
    )


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.description = "Run SQL on a volume's database: one statement (or several, separated by ;), an "
    parser.description += "interactive shell without one, or `import FILE.db` / `export FILE.db`."
    add_connection_options(parser, suppress=False)
    add_volume_option(parser)
    parser.add_argument(
        "statement",
        nargs="?",
        metavar="STATEMENT",
        help="the SQL to run (several statements separated by ;); none: an interactive shell; "
        "`import` or `export` with FILE: copy a SQLite database file in or out",
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="the SQLite database file of `import` / `export`")
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        type=_param,
        default=[],
        metavar="VALUE",
        help="a value for the next ? of the statement: NULL, 42, 4.5, x'00ff', 'text', or text (repeatable)",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_const", dest="output", const="json", help="print results as JSON")
    form.add_argument("--csv", action="store_const", dest="output", const="csv", help="print results as CSV")
    parser.set_defaults(output="table")


def _usage(text: str) -> int:
    print(f"usage error: {text}", file=sys.stderr)
    return EXIT_USAGE


def _statements(runner: Runner, text: str, params: list[SqlValue]) -> int:
    statements, rest = split_statements(text)
    if rest.strip():
        statements.append(rest.strip())
    if not statements:
        return _usage("the statement is empty")
    if params and len(statements) > 1:
        return _usage("--param goes with a single statement; this text holds several")
    try:
        for statement in statements:
            if not runner.run(statement, params):
                return EXIT_FAILED
    finally:
        runner.close()
    return EXIT_OK


def _shell(runner: Runner) -> int:
    shell = Shell(runner)
    try:
        if sys.stdin.isatty():
            interactive(shell)
            return EXIT_OK
        shell.feed_lines(sys.stdin)
        if not shell.done:
            shell.finish()
    finally:
        runner.close()
    return EXIT_FAILED if runner.failures else EXIT_OK


def run(args: argparse.Namespace) -> int:
    words = [w for w in (args.statement, args.file) if w is not None]
    transfer = words[0].lower() if words and words[0].lower() in TRANSFER_WORDS and len(words) == 2 else None
    if len(words) == 1 and words[0].lower() in TRANSFER_WORDS:
        return _usage(f"`sixfold sql {words[0].lower()} FILE.db` names the SQLite database file")
    if args.file is not None and transfer is None:
        return _usage("give one STATEMENT (quote it), or `import FILE.db` / `export FILE.db`")
    if args.param and (transfer or args.statement is None):
        return _usage("--param goes with a STATEMENT")
    try:
        target = compute_target(args)
        with SqlClient(target, volume_id=args.volume, timeout_s=args.timeout) as client:
            if transfer is not None:
                from sixfold.tools.sql_transfer import export_database, import_database

                move = import_database if transfer == "import" else export_database
                return move(client, Path(args.file), out=sys.stdout)
            runner = Runner(client, args.output)
            if args.statement is None:
                return _shell(runner)
            return _statements(runner, args.statement, args.param)
    except VolumeError as error:  # SqlError too (import and export raise it)
        return report_failure(error, failure_hint(error, args.timeout))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
