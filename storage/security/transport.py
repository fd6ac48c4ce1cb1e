"""How this process's gRPC channels and servers are secured: plaintext, or mutual TLS with the cluster's
certificates (storage/security/pki.py, tls.py).

Every channel and listening port of a sixfold process goes through here (`aio_channel`, `channel`, `bind`),
so one switch decides for all of them:
1. A process started with `--tls-dir DIR` (the launcher's `sixfold up --tls` passes it) loads its identity
   (`DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME.key`, NAME its process name) with `use`; from then on its
   servers accept only TLS connections whose client presents a certificate signed by the cluster CA, and
   its channels present its own certificate and trust only that CA.
2. Without an identity everything is plaintext, as before (tests and throwaway clusters).
3. A client of a cluster (the CLI, the launcher's own health checks) uses the cluster's `cli` identity when
   the state dir holds one (`use_cluster_client`), and then sends a user's bearer token on every call of its
   channels (`authorization: Bearer ...`): `SIXFOLD_TOKEN`, else the admin token `sixfold up` left in the
   state dir (storage/security/user_files.py). A server process has no token: its calls to other processes
   are authenticated by its certificate alone.
The identity is process-wide: a process belongs to one cluster. A test that starts a TLS cluster in its
own process calls `use(None)` when it is done.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from sixfold.storage.security.pki import Identity, load_identity
from sixfold.storage.security.tls import channel_credentials, server_credentials
from sixfold.storage.security.user_files import client_token

TLS_SUBDIR = "tls"
CLIENT_NAME = "cli"


class _Current:
    identity: Identity | None = None
    token: str | None = None


def use(identity: Identity | None, token: str | None = None) -> None:
    """Rule 1/2: secure every channel and server this process opens from now on with `identity` (None:
    plaintext); rule 3: its channels send `token` (only with an identity: a token never travels in clear)."""
    _Current.identity = identity
    _Current.token = token if identity is not None else None


def current() -> Identity | None:
    return _Current.identity


def current_token() -> str | None:
    return _Current.token


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-dir",
        help="directory with the cluster CA (ca.pem) and this process's certificate and key (NAME.pem, "
        "NAME.key): mutual TLS on every port and channel (default: plaintext)",
    )


def use_tls_dir(tls_dir: str | None, name: str) -> None:
    """For a process's main: load its identity from `--tls-dir` (nothing without one)."""
    if tls_dir:
        use(load_identity(tls_dir, name))


def started_secure(tls_dir: str | None, name: str, log: logging.Logger) -> bool:
    """`use_tls_dir` for a process's main; False (and the reason logged) when the identity cannot be loaded:
    the process must not fall back to plaintext."""
    try:
        use_tls_dir(tls_dir, name)
    except (OSError, ValueError) as error:
        log.error("cannot use the certificates in --tls-dir %s for %s: %s", tls_dir, name, error)
        return False
    if tls_dir:
        log.info("mutual TLS on: certificate %s from %s", name, tls_dir)
    return True


def cluster_tls_dir(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / TLS_SUBDIR


def use_cluster_client(state_dir: str | os.PathLike[str]) -> bool:
    """Rule 3: the cluster in `state_dir` uses TLS: act as its `cli` client. False (and plaintext) if not."""
    directory = cluster_tls_dir(state_dir)
    if not (directory / f"{CLIENT_NAME}.pem").exists():
        use(None)
        return False
    use(load_identity(directory, CLIENT_NAME), client_token(state_dir))
    return True


def _credentials(identity: Identity) -> grpc.ChannelCredentials:
    """Rule 3: the certificate, and the client's token on every call when it has one."""
    credentials = channel_credentials(identity)
    if _Current.token is None:
        return credentials
    return grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(_Current.token))


def aio_channel(address: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
    identity = _Current.identity
    if identity is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, _credentials(identity), options=options)


def channel(address: str, options: Sequence[tuple[str, Any]]) -> grpc.Channel:
    identity = _Current.identity
    if identity is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, _credentials(identity), options=options)


def aio_channel_as(identity: Identity | None, address: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
    """A channel secured with `identity` (None: plaintext) whatever this process's own identity is: for a tool
    or test that makes one call with another certificate of the cluster (a checker reading segments, a chaos
    probe playing an attacker who stole a certificate)."""
    if identity is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, channel_credentials(identity), options=options)


def channel_as(identity: Identity | None, address: str, options: Sequence[tuple[str, Any]]) -> grpc.Channel:
    """`aio_channel_as` for a sync channel."""
    if identity is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, channel_credentials(identity), options=options)


def bind(server: grpc.aio.Server, address: str) -> int:
    """Listen on `address` (HOST:PORT); the port bound (0: it could not)."""
    identity = _Current.identity
    if identity is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(identity))
