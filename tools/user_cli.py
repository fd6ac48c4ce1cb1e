"""`sixfold user|token`: the users of a cluster started with mutual TLS, and their bearer tokens.

    sixfold user create alice --role admin|writer|reader
    sixfold user list [--json]
    sixfold user delete alice           # every token alice holds is refused from then on
    sixfold token alice [--ttl 1h]      # prints a token for alice to stdout, nothing else
    SIXFOLD_TOKEN=$(sixfold token alice --ttl 8h) sixfold sql "SELECT 1"

Each asks the control plane's UserService (storage/security/user_service.py) of the cluster in `--state-dir`
(default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster), or `--control-plane HOST:PORT`, with the token in
`SIXFOLD_TOKEN`, else the admin token `sixfold up` left in the state dir; only an admin token may. `--ttl`
takes seconds or a number with s, m, h or d (default 1h, at most 30d). A refused or failed call prints
`error: CODE: details` on stderr and exits 1. A cluster without TLS (`--insecure`) has no users: nothing
checks a token there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import grpc

from sixfold.storage.security import tokens, transport
from sixfold.storage.security.user_service import PROTO_OF_ROLE, ROLE_OF_PROTO
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import user_service_pb2 as pb
from sixfold.storage.v1 import user_service_pb2_grpc as pb_grpc
from sixfold.tools.cluster import Cluster, ClusterError
from sixfold.tools.text_table import table

EXIT_OK = 0
EXIT_FAILED = 1
CALL_TIMEOUT_S = 15.0
DEFAULT_TTL = "1h"
_TTL = re.compile(r"(\d+)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def ttl_seconds(text: str) -> int:
    """`90`, `90s`, `30m`, `8h`, `7d` as seconds (1 s .. 30 days)."""
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (seconds, or a number with s, m, h or d)")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if not 1 <= seconds <= tokens.TTL_S_MAX:
        raise argparse.ArgumentTypeError(f"a token lives 1 s to 30 days, not {text}")
    return seconds


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the local cluster (default: $SIXFOLD_STATE_DIR, else ~/.sixfold/cluster)",
    )
    parser.add_argument(
        "--control-plane",
        metavar="HOST:PORT",
        default=None,
        help="the control plane (default: the one of the cluster in --state-dir)",
    )


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "token":
        parser.description = "Print a new bearer token for a user (an admin token is needed to ask)."
        parser.add_argument("user", help="the user the token is for")
        parser.add_argument("--ttl", type=ttl_seconds, default=ttl_seconds(DEFAULT_TTL), help="lifetime (default 1h)")
        parser.add_argument(
            "--role", choices=[r.value for r in tokens.Role], default=None, help="a role below the user's"
        )
        _common(parser)
        return
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION")
    sub.required = True
    create = sub.add_parser("create", help="create a user with a role")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=[r.value for r in tokens.Role])
    _common(create)
    listing = sub.add_parser("list", help="the users, their roles and serials")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    _common(listing)
    delete = sub.add_parser("delete", help="delete a user: its tokens are refused from then on")
    delete.add_argument("name")
    _common(delete)


def _stub(args: argparse.Namespace) -> tuple[pb_grpc.UserServiceStub, grpc.Channel]:
    from sixfold.tools.launcher import default_state_dir

    state_dir = args.state_dir or default_state_dir()
    cluster = Cluster(state_dir)
    address = args.control_plane or cluster.control_plane_address()  # acts as the cluster's client (transport)
    if args.control_plane:
        transport.use_cluster_client(state_dir)
    channel = transport.channel(address, CHANNEL_OPTIONS)
    return pb_grpc.UserServiceStub(channel), channel


def run(args: argparse.Namespace) -> int:
    try:
        stub, channel = _stub(args)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    if transport.current() is None:
        print(
            "error: this cluster runs without TLS (--insecure): it has no users and checks no token",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        with channel:
            return _carry_out(args, stub)
    except grpc.RpcError as error:
        code = error.code()
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        print(f"error: {name}: {error.details()}", file=sys.stderr)
        return EXIT_FAILED


def _carry_out(args: argparse.Namespace, stub: pb_grpc.UserServiceStub) -> int:
    if args.command == "token":
        role = PROTO_OF_ROLE[tokens.Role(args.role)] if args.role else pb.USER_ROLE_UNSPECIFIED
        request = pb.IssueTokenRequest(user=args.user, ttl_s=args.ttl, role=role)
        reply = stub.IssueToken(request, timeout=CALL_TIMEOUT_S)
        print(reply.token)
        return EXIT_OK
    if args.user_command == "create":
        role = PROTO_OF_ROLE[tokens.Role(args.role)]
        user = stub.CreateUser(pb.CreateUserRequest(name=args.name, role=role), timeout=CALL_TIMEOUT_S).user
        print(
            f"created user {user.name} (role {ROLE_OF_PROTO[user.role].value}); get a token: sixfold token {user.name}"
        )
        return EXIT_OK
    if args.user_command == "delete":
        user = stub.DeleteUser(pb.DeleteUserRequest(name=args.name), timeout=CALL_TIMEOUT_S).user
        print(f"deleted user {user.name}: its tokens are refused from now on")
        return EXIT_OK
    users = stub.ListUsers(pb.ListUsersRequest(), timeout=CALL_TIMEOUT_S).users
    rows = [(u.name, ROLE_OF_PROTO[u.role].value, str(u.serial), tokens.iso_utc(u.created_at)) for u in users]
    if args.json:
        print(json.dumps([dict(zip(("name", "role", "serial", "created_at"), row)) for row in rows]))
    else:
        print(table(["USER", "ROLE", "SERIAL", "CREATED"], rows))
    return EXIT_OK
