"""`sixfold kv put|get|del|scan`: keys and values on a volume, through the compute node.

    sixfold kv put user:1 ann                # prints the commit LSN; durable when it returns
    sixfold kv get user:1                    # ann   (exit 1 if the key does not exist)
    sixfold kv del user:1
    sixfold kv scan --prefix user: --limit 10
    sixfold kv scan --start a --end m --json
    sixfold kv --hex put 00ff 'de ad'        # keys and values in hex (output too)

Keys and values are UTF-8 text (or hex with --hex); a value that is not printable text is shown
as x'hex'. Every command takes `--volume` (default vol0) and the connection options of
`sixfold volume` (`--endpoint cluster|reader|NAME`, default cluster; `--address`, `--state-dir`,
`--timeout`): `get` and `scan` may run on a read replica (`--endpoint reader`), writes go to the writer.
A failed call prints `error: CODE: details` on stderr and exits 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from sixfold.compute.client import VolumeError
from sixfold.compute.sql_client import SqlClient
from sixfold.storage.arg_types import int_between
from sixfold.tools.compute_target import UsageError, add_connection_options, compute_target
from sixfold.tools.sql_cli import add_volume_option
from sixfold.tools.sql_format import blob_literal, table
from sixfold.tools.sql_shell import failure_hint
from sixfold.tools.volume_cli import hex_bytes, printable_text, report_failure

EXIT_OK = 0
EXIT_FAILED = 1
SCAN_LIMIT_MAX = 10_000  # the server's bound on one scan


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    add_connection_options(parser, suppress=suppress)
    add_volume_option(parser, suppress=suppress)
    parser.add_argument(
        "--hex",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="keys and values are given and shown in hex",
    )


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.description = "Keys and values on a volume (a table `kv` of its database)."
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="kv_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("put", help="set a key; prints the commit LSN", description="Set a key (durable on return).")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p = sub.add_parser("get", help="print a key's value", description="Print a key's value; exit 1 if it is absent.")
    p.add_argument("key", metavar="KEY")
    p = sub.add_parser("del", help="delete a key", description="Delete a key (durable on return).")
    p.add_argument("key", metavar="KEY")
    p = sub.add_parser(
        "scan",
        help="keys and values in a range, ascending",
        description="The pairs with START <= key < END whose key starts with PREFIX, ascending by key.",
    )
    p.add_argument("--prefix", default="", help="only keys that start with this")
    p.add_argument("--start", default="", help="the first key (included; default: the first)")
    p.add_argument("--end", default="", help="the end of the range (excluded; default: the last key)")
    p.add_argument(
        "--limit",
        type=int_between(1, SCAN_LIMIT_MAX),
        default=None,
        help=f"at most this many pairs (1..{SCAN_LIMIT_MAX})",
    )
    p.add_argument("--json", action="store_true", help="print the pairs as JSON")
    for sub_parser in sub.choices.values():
        _common(sub_parser, suppress=True)


def _bytes(text: str, args: argparse.Namespace) -> bytes:
    if not args.hex:
        return text.encode("utf-8")
    try:
        return hex_bytes(text)
    except argparse.ArgumentTypeError as error:
        raise UsageError(str(error)) from None


def shown(data: bytes, args: argparse.Namespace) -> str:
    """Bytes for the terminal: hex with --hex, else text if printable, else x'hex'."""
    if args.hex:
        return data.hex()
    text = printable_text(data)
    return text if text is not None else blob_literal(data)


def _put(client: SqlClient, args: argparse.Namespace) -> int:
    lsn = client.put(_bytes(args.key, args), _bytes(args.value, args))
    print(f"commit LSN {lsn}")
    return EXIT_OK


def _get(client: SqlClient, args: argparse.Namespace) -> int:
    value = client.get(_bytes(args.key, args))
    if value is None:
        print(f"key {args.key!r} not found in volume {client.volume_id}", file=sys.stderr)
        return EXIT_FAILED
    print(shown(value, args))
    return EXIT_OK


def _del(client: SqlClient, args: argparse.Namespace) -> int:
    existed, lsn = client.delete(_bytes(args.key, args))
    print(f"deleted (commit LSN {lsn})" if existed else f"key {args.key!r} not found; nothing deleted")
    return EXIT_OK


def _scan(client: SqlClient, args: argparse.Namespace) -> int:
    page = client.scan(
        _bytes(args.start, args), _bytes(args.end, args), _bytes(args.prefix, args), limit=args.limit or 0
    )
    if args.json:
        pairs = [{"key": shown(k, args), "value": shown(v, args)} for k, v in page.pairs]
        print(json.dumps({"pairs": pairs, "more": page.more, "next_start": shown(page.next_start, args)}))
        return EXIT_OK
    if page.pairs:
        print(table(["KEY", "VALUE"], [(shown(k, args), shown(v, args)) for k, v in page.pairs]))
    count = f"{len(page.pairs)} key{'' if len(page.pairs) == 1 else 's'}"
    more = "; more follow: raise --limit, or scan on with --start LAST_KEY" if page.more else ""
    print(f"({count}{more})")
    return EXIT_OK


HANDLERS: dict[str, Callable[[SqlClient, argparse.Namespace], int]] = {
    "put": _put,
    "get": _get,
    "del": _del,
    "scan": _scan,
}


def run(args: argparse.Namespace) -> int:
    try:
        target = compute_target(args)
        with SqlClient(target, volume_id=args.volume, timeout_s=args.timeout) as client:
            return HANDLERS[args.kv_command](client, args)
    except VolumeError as error:
        return report_failure(error, failure_hint(error, args.timeout))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
