"""The `sixfold` command.

Each subcommand lives in its own module, which provides `configure(parser)` to
declare its arguments and `run(args) -> int` to carry it out. Modules are
imported only when their subcommand runs, so `sixfold --help` stays fast.

Global options (`--state-dir DIR`) may come before the subcommand as well as after it.
Output cut short by a closed pipe (`sixfold status | head -3`) ends quietly with the
shell's code for SIGPIPE (141), not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": (
        "sixfold.tools.launcher",
        "start a local cluster: control plane, storage nodes in 3 AZs, the writer (and --replicas N readers)",
    ),
    "status": (
        "sixfold.tools.launcher",
        "show every process of the local cluster: AZ, health, segments, SCLs; compute instances, roles, lag",
    ),
    "down": ("sixfold.tools.launcher", "stop every process of the local cluster (by PID)"),
    "kill": ("sixfold.tools.launcher", "SIGKILL one node (fault injection)"),
    "pause": ("sixfold.tools.launcher", "SIGSTOP one node (fault injection)"),
    "resume": ("sixfold.tools.launcher", "SIGCONT a paused node"),
    "stop": ("sixfold.tools.launcher", "stop one node gracefully (SIGTERM)"),
    "start": ("sixfold.tools.launcher", "start a stopped or killed node again, same address and data"),
    "replica": ("sixfold.tools.instance_cli", "add or remove read replicas (compute instances following the writer)"),
    "failover": ("sixfold.tools.instance_cli", "make a read replica the writer now (--to INSTANCE, or the best one)"),
    "endpoint": ("sixfold.tools.instance_cli", "endpoints that lead clients to the writer, the readers, or named ones"),
    "audit": (
        "sixfold.tools.audit_cli",
        "the audit logs of every process (admin operations, role changes, refusals), merged in time order",
    ),
    "kms": (
        "sixfold.storage.security.kms_server",
        "run the key service holding the master keys (the launcher does this)",
    ),
    "user": ("sixfold.tools.user_cli", "users of a TLS cluster and their roles: create, list, delete"),
    "token": ("sixfold.tools.user_cli", "print a new bearer token for a user (--ttl 1h); clients read SIXFOLD_TOKEN"),
    "storage-node": ("sixfold.storage.node_main", "run one storage node process (the launcher does this for you)"),
    "compute": ("sixfold.compute.main", "run the compute node (the volume's writer); the launcher does this for you"),
    "control-plane": (
        "sixfold.storage.control_plane_main",
        "run the control plane process (the launcher does this for you)",
    ),
    "volume": ("sixfold.tools.volume_cli", "write and read pages of a volume through the compute node"),
    "sql": ("sixfold.tools.sql_cli", "SQL on a volume's database: a statement, an interactive shell, import/export"),
    "kv": ("sixfold.tools.kv_cli", "keys and values on a volume: put, get, del, scan"),
    "demo": (
        "sixfold.tools.demo",
        "bank transfers from several clients while a whole AZ is killed and brought back; checks the invariant",
    ),
    "sim": (
        "sixfold.tools.sim_cli",
        "deterministic simulation: real storage and writer code over a seeded fake network, disk and clock",
    ),
    "chaos": (
        "sixfold.tools.chaos_cli",
        "fault scenarios against a fresh local cluster, with a verdict from the clients' history",
    ),
    "bench": ("sixfold.tools.bench", "benchmarks that print their figures beside a baseline measured in the same run"),
}

# Options accepted before the subcommand: (flag, dest on the subcommand, type, metavar, help).
GLOBAL_OPTIONS: tuple[tuple[str, str, type, str, str], ...] = (
    ("--state-dir", "state_dir", Path, "DIR", "the local cluster's directory, for the subcommands that use one"),
)
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a process ended by SIGPIPE


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed; only `selected` imports its module to declare arguments."""
    parser = argparse.ArgumentParser(
        prog="sixfold",
        description="sixfold: an Aurora-style storage engine, run as a local multi-process cluster.",
    )
    for flag, dest, kind, metavar, help_text in GLOBAL_OPTIONS:
        parser.add_argument(flag, dest=f"global_{dest}", type=kind, metavar=metavar, default=None, help=help_text)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == selected:
            importlib.import_module(module_name).configure(name, p)
    return parser


def subcommand_of(argv: list[str]) -> str | None:
    """The first word that is neither an option nor a global option's value."""
    takes_value = {flag for flag, *_ in GLOBAL_OPTIONS}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _apply_global_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, dest, *_ in GLOBAL_OPTIONS:
        value = getattr(args, f"global_{dest}")
        if value is None:
            continue
        if not hasattr(args, dest):
            parser.error(f"`sixfold {args.command}` does not take {flag}")
        if getattr(args, dest) is None:  # given after the subcommand too: that one wins
            setattr(args, dest, value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = subcommand_of(argv)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    _apply_global_options(parser, args)
    module = importlib.import_module(args._module)
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away is met here, not at exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) closed the pipe: stop quietly; point stdout at /dev/null so the
        # interpreter's own flush at exit does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
