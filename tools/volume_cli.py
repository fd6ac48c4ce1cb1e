"""`sixfold volume create|write|read|status|list`: pages of a volume, through the compute node
(clone, delete, snapshot and restore: tools/volume_time_cli.py).

    sixfold volume create vol1 [--page-size 4096] [--segment-size 64MiB]
    sixfold volume write vol0 3 --text hello          # prints the LSN; durable when it returns
    sixfold volume write vol0 3 --offset 100 --hex 'de ad be ef'
    sixfold volume write vol0 4 --file page.bin       # --file - reads stdin
    sixfold volume read vol0 3                         # text if printable, else a hex dump
    sixfold volume read vol0 3 --offset 100 --length 4 --hex
    sixfold volume read vol0 3 --raw > page.bin
    sixfold volume status vol0                         # VDL, VCL, epochs, every PG's segments
    sixfold volume status                              # every volume, one line each
    sixfold volume list

Calls go to the instance an endpoint leads to (`--endpoint`, default `cluster`: the writer), resolved
through the control plane of the local cluster in `--state-dir` (default: $SIXFOLD_STATE_DIR, else
~/.sixfold/cluster), or to a fixed `--address HOST:PORT`.
A failed call prints `error: CODE: details` on stderr, then what to do about it
where that is known (a write that may have committed: how to check), and exits 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf.message import Message

from sixfold.compute.client import U32_MAX, U64_MAX, VolumeClient, VolumeError
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.tools import volume_time_cli
from sixfold.tools.compute_target import UsageError, add_connection_options, compute_target
from sixfold.tools.text_table import table

EXIT_OK = 0
EXIT_FAILED = 1

HEX_DUMP_WIDTH = 16  # bytes per line of a hex dump
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
TEXT_WHITESPACE = "\n\r\t"


# --- arguments ----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Bytes from '4096', '64MiB', '10GiB', '512K', '1T' (units are binary: KiB = 1024)."""
    match = SIZE_PATTERN.match(text)
    if not match or (match.group(3) and match.group(3).lower() == "b" and match.group(2)):
        # '64MB' is ambiguous (10^6 or 2^20?): ask for the IEC spelling.
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use bytes or a suffix: KiB, MiB, GiB, TiB)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


def _non_negative_int(text: str, most: int = U64_MAX) -> int:
    try:
        value = int(text) if text.strip().isdigit() else int(text, 0)  # '010' is 10; '0x10' is 16
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    if value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, got {value}")
    return value


def _page_number(text: str) -> int:
    return _non_negative_int(text, U64_MAX)  # page numbers are 64-bit on the wire


def _offset(text: str) -> int:
    return _non_negative_int(text, U32_MAX)  # offsets within a page are 32-bit on the wire


def hex_bytes(text: str) -> bytes:
    cleaned = re.sub(r"[\s:]", "", text.removeprefix("0x").removeprefix("0X"))
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex bytes: {text!r} (e.g. 'deadbeef' or 'de ad be ef')") from None


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    add_connection_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="volume_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("create", help="create a volume", description="Create a volume on the control plane.")
    p.add_argument("volume", metavar="NAME")
    p.add_argument("--page-size", type=parse_size, default=0, help="bytes per page (default: the server's, 4096)")
    p.add_argument(
        "--segment-size",
        type=parse_size,
        default=0,
        metavar="BYTES",
        help="bytes of page space per segment, e.g. 64MiB (default: the server's, 10GiB)",
    )
    p.add_argument(
        "--backtrack-window",
        type=volume_time_cli.window,
        default=0,
        help="e.g. 24h (default 24h); the storage nodes keep this much of the volume's history",
    )

    p = sub.add_parser(
        "write",
        help="write bytes into one page (one MTR); prints the LSN",
        description="Write bytes at an offset of one page as one mini-transaction; prints its LSN once durable.",
    )
    p.add_argument("volume", metavar="NAME")
    p.add_argument("page", type=_page_number, metavar="PAGE")
    p.add_argument("--offset", type=_offset, default=0, help="byte offset within the page (default: 0)")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--text", help="UTF-8 text to write")
    data.add_argument("--hex", type=hex_bytes, help="bytes in hex, e.g. 'deadbeef' or 'de ad be ef'")
    data.add_argument("--file", type=Path, help="write this file's bytes ('-' for stdin)")

    p = sub.add_parser(
        "read",
        help="read one page at VDL",
        description="Read one page at the volume's VDL. By default: text if it is printable, else a hex dump; "
        "trailing zero bytes are left out (with a note).",
    )
    p.add_argument("volume", metavar="NAME")
    p.add_argument("page", type=_page_number, metavar="PAGE")
    p.add_argument("--offset", type=_offset, default=0, help="first byte to show (default: 0)")
    p.add_argument("--length", type=_offset, default=None, help="bytes to show (default: to the page's end)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--hex", action="store_true", help="print the bytes as one hex string (all of them)")
    form.add_argument("--raw", action="store_true", help="write the bytes as they are to stdout")
    p.add_argument(
        "--from-storage",
        action="store_true",
        help="read the page from a storage segment, skipping the writer's buffer cache",
    )

    p = sub.add_parser(
        "status",
        help="a volume's LSNs, epochs and segments (without NAME: every volume)",
        description="A volume's VDL, VCL, allocated LSN, epochs, fencing and every protection group's segments; "
        "without NAME, one line per volume.",
    )
    p.add_argument("volume", metavar="NAME", nargs="?")
    p.add_argument("--json", action="store_true", help="print the status as JSON")

    p = sub.add_parser("list", help="the volumes the compute node serves", description="List the volumes.")
    p.add_argument("--json", action="store_true", help="print the volumes as JSON")

    leaves = volume_time_cli.add_parsers(sub)  # clone, delete, restore, snapshot create|list|delete
    for sub_parser in [*sub.choices.values(), *leaves]:
        add_connection_options(sub_parser, suppress=True)


# --- output helpers ----------------------------------------------------------------------


def format_size(n: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def format_age(ms: int) -> str:
    if ms == 0:
        return "never"
    return f"{ms} ms ago" if ms < 1000 else f"{ms / 1000:.1f} s ago"


def hex_dump(data: bytes, start: int = 0) -> str:
    """hexdump -C style lines: the offset (from `start`), the bytes in hex, and their printable ASCII.

    A run of lines equal to the one before is shown as one '*' line.
    """
    lines = []
    previous = None
    for i in range(0, len(data), HEX_DUMP_WIDTH):
        chunk = data[i : i + HEX_DUMP_WIDTH]
        if chunk == previous and len(chunk) == HEX_DUMP_WIDTH:
            if lines[-1] != "*":
                lines.append("*")
            continue
        previous = chunk
        hex_part = " ".join(f"{b:02x}" for b in chunk).ljust(HEX_DUMP_WIDTH * 3 - 1)
        ascii_part = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{start + i:08x}  {hex_part}  |{ascii_part}|")
    return "\n".join(lines)


def printable_text(data: bytes) -> str | None:
    """The bytes as text if they are UTF-8 and printable (tabs and newlines allowed), else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(ch.isprintable() or ch in TEXT_WHITESPACE for ch in text):
        return text
    return None


def readable_view(data: bytes, start: int) -> str:
    """Text if printable, else a hex dump; trailing zero bytes are left out with a note."""
    if not data:
        return "(no bytes in this range)"
    content = data.rstrip(b"\0")
    zeros = len(data) - len(content)
    if not content:
        return f"(all {len(data)} bytes are zero)"
    text = printable_text(content)
    body = text.rstrip("\n") if text is not None else hex_dump(content, start)
    if zeros:
        body += f"\n({zeros} trailing zero bytes not shown)"
    return body


def _status_to_json(message: Message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )


def volume_line(v: vpb.VolumeStatus) -> list[object]:
    segments = [s for pg in v.protection_groups for s in pg.segments]
    connected = sum(1 for s in segments if s.connected)
    return [
        v.volume_id,
        v.vdl,
        v.vcl,
        v.lsn_allocated,
        v.volume_epoch,
        "yes" if v.fenced else "no",
        len(v.protection_groups),
        f"{connected}/{len(segments)}",
    ]


def volumes_table(volumes: Sequence[vpb.VolumeStatus]) -> str:
    if not volumes:
        return "(no volumes)"
    headers = ["VOLUME", "VDL", "VCL", "ALLOCATED", "EPOCH", "FENCED", "PGS", "CONNECTED"]
    return table(headers, [volume_line(v) for v in volumes])


def volume_report(v: vpb.VolumeStatus) -> str:
    pages = sum(pg.page_count for pg in v.protection_groups)
    lines = [
        f"volume {v.volume_id}: page size {v.page_size} B, segment size {format_size(v.segment_size_bytes)}, "
        f"{len(v.protection_groups)} protection group(s), {pages} pages",
        f"  VDL {v.vdl}   VCL {v.vcl}   allocated LSN {v.lsn_allocated}   LAL {v.lal}   commits {v.commits}",
        f"  volume epoch {v.volume_epoch}   geometry epoch {v.geometry_epoch}   "
        f"fenced: {'YES (a newer writer opened this volume; this one may no longer change it)' if v.fenced else 'no'}",
        f"  reads: {v.cache_hits} pages from the buffer cache, {v.storage_page_reads} from storage "
        f"({v.hedged_reads} hedged)",
    ]
    if v.parent_volume_id:
        lines.append(f"  {volume_time_cli.branched_from(v.volume_id, v.parent_volume_id, v.branch_lsn)}")
    for pg in v.protection_groups:
        last_page = pg.first_page + pg.page_count - 1 if pg.page_count else pg.first_page
        lines.append(
            f"  PG {pg.pg_index}: pages {pg.first_page}-{last_page}, membership epoch {pg.membership_epoch}, "
            f"PGCL {pg.pgcl}"
        )
        rows = [
            [
                s.node_id,
                s.az,
                s.address,
                s.scl,
                format_age(s.last_ack_age_ms),
                "yes" if s.connected else "NO",
                s.records_in_flight,
                s.segment_id,
            ]
            for s in pg.segments
        ]
        segments = table(["NODE", "AZ", "ADDRESS", "SCL", "LAST ACK", "CONNECTED", "IN FLIGHT", "SEGMENT"], rows)
        lines.extend("    " + line for line in segments.splitlines())
    return "\n".join(lines)


# --- subcommands -----------------------------------------------------------------------------


def _create(client: VolumeClient, args: argparse.Namespace) -> int:
    status = client.create_volume(
        args.volume, args.page_size, args.segment_size, backtrack_window_s=args.backtrack_window
    )
    print(
        f"created volume {status.volume_id}: page size {status.page_size} B, "
        f"segment size {format_size(status.segment_size_bytes)}, {len(status.protection_groups)} protection group(s)"
    )
    return EXIT_OK


def _write_data(args: argparse.Namespace) -> bytes:
    if args.text is not None:
        return args.text.encode("utf-8")
    if args.hex is not None:
        return args.hex
    if str(args.file) == "-":
        return sys.stdin.buffer.read()
    try:
        return args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None


def _write(client: VolumeClient, args: argparse.Namespace) -> int:
    data = _write_data(args)
    if not data:
        raise UsageError("nothing to write (the data is empty)")
    lsn = client.write_page(args.volume, args.page, data, args.offset)
    print(f"lsn {lsn}  (wrote {len(data)} bytes to {args.volume} page {args.page} at offset {args.offset}; durable)")
    return EXIT_OK


def _read(client: VolumeClient, args: argparse.Namespace) -> int:
    read_point, images = client.read_images(args.volume, [args.page], from_storage=args.from_storage)
    image = next((i for i in images if i.page_no == args.page), None)
    if image is None:
        raise VolumeError("INTERNAL", f"the reply to a read of page {args.page} does not contain it")
    page = bytes(image.data)
    end = len(page) if args.length is None else min(len(page), args.offset + args.length)
    data = page[args.offset : end]
    if args.raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    if args.hex:
        print(data.hex())
        return EXIT_OK
    written = f"page LSN {image.page_lsn}" if image.page_lsn else "never written"
    shown = f"bytes {args.offset}-{end - 1} of {len(page)}" if end > args.offset else f"no bytes of {len(page)}"
    source = "; from storage" if args.from_storage else ""
    print(f"{args.volume} page {args.page} ({shown}; {written}; read at VDL {read_point}{source}):")
    print(readable_view(data, args.offset))
    return EXIT_OK


def _status(client: VolumeClient, args: argparse.Namespace) -> int:
    if args.volume:
        status = client.status(args.volume)
        print(json.dumps(_status_to_json(status), indent=2) if args.json else volume_report(status))
        return EXIT_OK
    volumes = client.list_volumes()
    if args.json:
        print(json.dumps([_status_to_json(v) for v in volumes], indent=2))
    else:
        print(volumes_table(volumes))
    return EXIT_OK


def _list(client: VolumeClient, args: argparse.Namespace) -> int:
    volumes = client.list_volumes()
    if args.json:
        print(json.dumps([v.volume_id for v in volumes]))
        return EXIT_OK
    if not volumes:
        print("(no volumes)")
        return EXIT_OK
    rows = [
        [
            v.volume_id,
            f"{v.page_size} B",
            format_size(v.segment_size_bytes),
            len(v.protection_groups),
            v.vdl,
            "yes" if v.fenced else "no",
        ]
        for v in volumes
    ]
    print(table(["VOLUME", "PAGE SIZE", "SEGMENT SIZE", "PGS", "VDL", "FENCED"], rows))
    return EXIT_OK


HANDLERS: dict[str, Callable[[VolumeClient, argparse.Namespace], int]] = {
    "create": _create,
    "write": _write,
    "read": _read,
    "status": _status,
    "list": _list,
    **volume_time_cli.HANDLERS,
}


def call_hint(error: VolumeError, timeout_s: float) -> str | None:
    """What a user can do about a call to the compute node that failed on the way (any `sixfold` command)."""
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the compute node did not answer within {timeout_s:g} s (--timeout)"
    if error.code == grpc.StatusCode.UNAVAILABLE and "connect" in error.details.lower():
        return "is the cluster running? `sixfold status` shows its processes"
    return None


def failure_hint(error: VolumeError, args: argparse.Namespace) -> str | None:
    """What a user can do about a failed call, where the CLI knows (None: the details say it all)."""
    if args.volume_command == "write" and error.may_have_committed:
        return (
            f"the write may have been stored (its outcome is unknown); check with "
            f"`sixfold volume read {args.volume} {args.page}` before writing it again"
        )
    return call_hint(error, args.timeout)


def report_failure(error: VolumeError, hint: str | None, out: TextIO | None = None) -> int:
    """`error: CODE: details` (on stderr unless `out`), then the hint if there is one; the exit code."""
    out = out or sys.stderr  # looked up at call time: tests capture stderr by replacing it
    print(f"error: {error.code.name}: {error.details}", file=out)
    if hint:
        print(f"  {hint}", file=out)
    return EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    try:
        target = compute_target(args)
        with VolumeClient(target, timeout_s=args.timeout) as client:
            return HANDLERS[args.volume_command](client, args)
    except VolumeError as exc:
        return report_failure(exc, failure_hint(exc, args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
