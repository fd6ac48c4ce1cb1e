"""`sixfold kms`: the key service. It holds the master keys (storage/security/master_keys.py) and is the
only place a volume's data key is unwrapped; data keys live elsewhere only wrapped (control plane state,
segment metadata) or, unwrapped, in a storage node's memory for a lease (storage/security/keyring.py).

Rules:
1. It serves only over mutual TLS (`--tls-dir`): without it, it refuses to start (it would hand out keys
   in clear). Who may call what is `KMS_RPC_ROLES`: the control plane makes and rewraps data keys, storage
   nodes unwrap them, the CLI reads the status; anything else is PERMISSION_DENIED and audited.
2. GenerateDataKey returns the new key only wrapped; DecryptDataKey returns it with the lease the caller
   may hold it for (`--lease-s`); RewrapDataKey makes a new master key version and wraps the same data key
   under it (`sixfold volume rotate-key`). Key material is never logged, nor put in the audit log.
3. A wrapped key that fails to open is refused: DATA_LOSS (altered) or FAILED_PRECONDITION (another master
   key), with a sentence.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from sixfold.storage.errors import InvalidRequest
from sixfold.storage.security import envelope, pki, transport
from sixfold.storage.security.audit_rpc import open_audit_log, server_interceptors
from sixfold.storage.security.master_keys import MasterKeyFileError, MasterKeys
from sixfold.storage.serving import start_server, write_port_file
from sixfold.storage.v1 import key_service_pb2 as pb

log = logging.getLogger("sixfold.kms")

KEY_SERVICE = "storage.v1.KeyService"
LEASE_S_DEFAULT = 300
LEASE_S_MAX = 24 * 3600
WRAPPED_BYTES_MAX = 512
STOP_GRACE_S = 1.0
MADE_MARKER = "made-master-key-file"  # in --data-dir: this key service made its key file once (never again)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ADMIN = frozenset({pki.ROLE_CONTROL_PLANE})
KMS_RPC_ROLES: dict[str, frozenset[str]] = {
    f"/{KEY_SERVICE}/GenerateDataKey": _ADMIN,
    f"/{KEY_SERVICE}/RewrapDataKey": _ADMIN,
    f"/{KEY_SERVICE}/DecryptDataKey": frozenset({pki.ROLE_STORAGE_NODE}),
    f"/{KEY_SERVICE}/GetKeyServiceStatus": frozenset({pki.ROLE_CONTROL_PLANE, pki.ROLE_CLIENT_ADMIN}),
}
KMS_AUDITED = frozenset({f"/{KEY_SERVICE}/GenerateDataKey", f"/{KEY_SERVICE}/RewrapDataKey"})


class KeyServicer:
    """Rules 2-3 over one master key file."""

    def __init__(self, master_keys: MasterKeys, lease_s: int = LEASE_S_DEFAULT) -> None:
        self.master_keys = master_keys
        self.lease_s = lease_s
        self._lock = asyncio.Lock()

    async def GenerateDataKey(self, request: pb.GenerateDataKeyRequest, context: Any) -> pb.GenerateDataKeyResponse:
        if not request.key_id or len(request.key_id.encode()) > envelope.KEY_ID_BYTES_MAX:
            raise InvalidRequest(f"a data key needs a key_id of 1 to {envelope.KEY_ID_BYTES_MAX} bytes")
        async with self._lock:
            wrapped = envelope.wrap(self.master_keys.current(), envelope.new_data_key(), request.key_id)
            current = self.master_keys.current_id
        log.info("made a data key for %s, wrapped by master key %s", request.key_id, current)
        return pb.GenerateDataKeyResponse(wrapped_data_key=wrapped, master_key_id=current)

    async def DecryptDataKey(self, request: pb.DecryptDataKeyRequest, context: Any) -> pb.DecryptDataKeyResponse:
        wrapped = _bounded(request.wrapped_data_key)
        master = self.master_keys.by_id(envelope.wrapped_by(wrapped))
        data_key = envelope.unwrap(master, wrapped)
        return pb.DecryptDataKeyResponse(
            data_key=data_key, key_id=envelope.wrapped_key_id(wrapped), lease_s=self.lease_s
        )

    async def RewrapDataKey(self, request: pb.RewrapDataKeyRequest, context: Any) -> pb.RewrapDataKeyResponse:
        wrapped = _bounded(request.wrapped_data_key)
        async with self._lock:
            previous = envelope.wrapped_by(wrapped)
            old_master = self.master_keys.by_id(previous)
            data_key = envelope.unwrap(old_master, wrapped)  # refused before any new version is made
            current = await asyncio.to_thread(self.master_keys.rotate)
            rewrapped = envelope.wrap(self.master_keys.current(), data_key, envelope.wrapped_key_id(wrapped))
        log.info(
            "rewrapped the data key of %s: master key %s -> %s", envelope.wrapped_key_id(wrapped), previous, current
        )
        return pb.RewrapDataKeyResponse(
            wrapped_data_key=rewrapped, master_key_id=current, previous_master_key_id=previous
        )

    async def GetKeyServiceStatus(
        self, request: pb.GetKeyServiceStatusRequest, context: Any
    ) -> pb.GetKeyServiceStatusResponse:
        return pb.GetKeyServiceStatusResponse(
            current_master_key_id=self.master_keys.current_id, master_key_count=len(self.master_keys)
        )


def _bounded(wrapped: bytes) -> bytes:
    if not wrapped:
        raise InvalidRequest("the request carries no wrapped_data_key")
    if len(wrapped) > WRAPPED_BYTES_MAX:
        raise InvalidRequest(f"a wrapped data key is at most {WRAPPED_BYTES_MAX} bytes, not {len(wrapped)}")
    return wrapped


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="directory for the key service's audit log")
    parser.add_argument(
        "--key-file",
        required=True,
        help="the master key file (mode 0600, outside every data directory); made with --create-key-file",
    )
    parser.add_argument(
        "--create-key-file",
        action="store_true",
        help="make a new master key file if none exists and this key service never made one (a file made before "
        "and now missing is refused: a new master key would leave every volume unreadable)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: pick a free port)")
    transport.add_arguments(parser)
    parser.add_argument("--port-file", default=None, help="write the bound port to this file once serving")
    parser.add_argument(
        "--lease-s",
        type=int,
        default=LEASE_S_DEFAULT,
        help=f"how long a storage node may hold an unwrapped data key before asking again (default "
        f"{LEASE_S_DEFAULT}; 1 to {LEASE_S_MAX})",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    if not args.tls_dir:
        log.error("the key service runs only with mutual TLS (--tls-dir): it would hand out data keys in clear")
        return 2
    if not 1 <= args.lease_s <= LEASE_S_MAX:
        log.error("--lease-s must be 1 to %d, not %d", LEASE_S_MAX, args.lease_s)
        return 2
    if not transport.started_secure(args.tls_dir, "kms", log):
        return 2
    try:
        made_before = os.path.join(args.data_dir, MADE_MARKER)
        if args.create_key_file and not os.path.exists(args.key_file):
            if os.path.exists(made_before):
                log.error(
                    "the master key file %s this key service made is gone; restore it from a backup (a new master "
                    "key would leave every volume unreadable)",
                    args.key_file,
                )
                return 2
            master_keys = MasterKeys.create(args.key_file)
            os.makedirs(args.data_dir, exist_ok=True)
            with open(made_before, "w") as marker:
                marker.write(f"{master_keys.current_id}\n")
            log.info("made a new master key file %s", args.key_file)
        else:
            master_keys = MasterKeys.load(args.key_file)
    except (MasterKeyFileError, OSError) as error:
        log.error("cannot use the master key file: %s", getattr(error, "message", error))
        return 2
    return asyncio.run(serve(args, master_keys))


async def serve(args: argparse.Namespace, master_keys: MasterKeys) -> int:
    audit_log = open_audit_log(args.data_dir, "kms")
    guards = server_interceptors(audit_log, KMS_AUDITED, KMS_RPC_ROLES, service=None)
    servicer = KeyServicer(master_keys, args.lease_s)
    server, port, _ = await start_server(
        args.host, args.port, [(pb.DESCRIPTOR.services_by_name["KeyService"], servicer, pb)], interceptors=guards
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    write_port_file(args.port_file, port)
    log.info(
        "key service serving on %s:%d: %d master key(s), current %s, data key lease %d s",
        args.host,
        port,
        len(master_keys),
        master_keys.current_id,
        args.lease_s,
    )
    await stop.wait()
    await server.stop(STOP_GRACE_S)
    if audit_log is not None:
        audit_log.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sixfold kms", description=__doc__)
    configure("kms", parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
