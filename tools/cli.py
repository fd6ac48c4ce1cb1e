"""The `sixfold` command.

Each subcommand lives in its own module, which provides `configure(parser)` to
declare its arguments and `run(args) -> int` to carry it out. Modules are
imported only when their subcommand runs, so `sixfold --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("sixfold.tools.launcher", "start a local cluster: control plane, storage nodes in 3 AZs, and the writer"),
    "status": ("sixfold.tools.launcher", "show every process of the local cluster: AZ, health, segments, SCLs"),
    "down": ("sixfold.tools.launcher", "stop every process of the local cluster (by PID)"),
    "kill": ("sixfold.tools.launcher", "SIGKILL one node (fault injection)"),
    "pause": ("sixfold.tools.launcher", "SIGSTOP one node (fault injection)"),
    "resume": ("sixfold.tools.launcher", "SIGCONT a paused node"),
    "stop": ("sixfold.tools.launcher", "stop one node gracefully (SIGTERM)"),
    "start": ("sixfold.tools.launcher", "start a stopped or killed node again, same address and data"),
    "storage-node": ("sixfold.storage.node_main", "run one storage node process (the launcher does this for you)"),
    "compute": ("sixfold.compute.main", "run the compute node (the volume's writer); the launcher does this for you"),
    "control-plane": (
        "sixfold.storage.control_plane_main",
        "run the control plane process (the launcher does this for you)",
    ),
    "volume": ("sixfold.tools.volume_cli", "write and read pages of a volume through the compute node"),
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


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed; only `selected` imports its module to declare arguments."""
    parser = argparse.ArgumentParser(
        prog="sixfold",
        description="sixfold: an Aurora-style storage engine, run as a local multi-process cluster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == selected:
            importlib.import_module(module_name).configure(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
