"""The cluster PKI and mutual TLS (storage/security/pki.py, storage/security/tls.py; issue 16 items 1-2).

Real grpc.aio servers on 127.0.0.1 under TLS: a client with a cluster certificate is served; a plaintext
client, a client without a certificate and one whose certificate another CA signed are refused; a handler
sees the caller's role; the RoleInterceptor refuses a role with PERMISSION_DENIED naming the role needed,
also on a StorageService with the storage node's permission table. Key files are 0600, the CA is never
overwritten, and names and roles are checked with clear sentences.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import string
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.security import pki
from sixfold.storage.security.pki import Identity
from sixfold.storage.security.tls import (
    HEALTH_SERVICE,
    REASON_ROLE_NOT_ALLOWED,
    STORAGE_RPC_ROLES,
    PermissionDenied,
    RoleInterceptor,
    channel_credentials,
    check_role,
    peer_role,
    server_credentials,
)
from sixfold.storage.serving import generic_handler
from sixfold.storage.status import detail_of
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc
from tests.depth import examples

pytestmark = pytest.mark.unit

CALL_TIMEOUT_S = 10
IDENTITIES = {"n1": pki.ROLE_STORAGE_NODE, "cp": pki.ROLE_CONTROL_PLANE, "w1": pki.ROLE_WRITER, "r1": pki.ROLE_READER}


@pytest.fixture(scope="module")
def cluster_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "tls"
    pki.create_ca(directory)
    for name, role in IDENTITIES.items():
        pki.issue(directory, name, role)
    return directory


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A writer certificate from another cluster's CA."""
    directory = tmp_path_factory.mktemp("other-pki")
    pki.create_ca(directory)
    pki.issue(directory, "w1", pki.ROLE_WRITER)
    return pki.load_identity(directory, "w1")


def ident(cluster_pki: Path, name: str) -> Identity:
    return pki.load_identity(cluster_pki, name)


class RecordingHealth(health.aio.HealthServicer):
    """The health service, remembering the role each Check's caller showed."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[tuple[str, str] | None] = []

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        self.callers.append(peer_role(context))
        return await super().Check(request, context)


@contextlib.asynccontextmanager
async def tls_server(
    identity: Identity | None, servicer: Any = None, interceptor: RoleInterceptor | None = None
) -> AsyncIterator[str]:
    """A health server on 127.0.0.1 (mutual TLS as `identity`; plaintext if None); its address."""
    server = grpc.aio.server(interceptors=[interceptor] if interceptor else None)
    try:
        health_pb2_grpc.add_HealthServicer_to_server(servicer or health.aio.HealthServicer(), server)
        if identity is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", server_credentials(identity))
        await server.start()
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def check(address: str, credentials: grpc.ChannelCredentials | None) -> health_pb2.HealthCheckResponse:
    channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    async with channel:
        reply: health_pb2.HealthCheckResponse = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
        )
        return reply


async def refused(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(address, credentials)
    return caught.value


# -- the handshake ---------------------------------------------------------------------------------


def test_a_client_with_a_cluster_certificate_is_served_and_its_role_seen(cluster_pki: Path) -> None:
    async def scenario() -> None:
        servicer = RecordingHealth()
        async with tls_server(ident(cluster_pki, "n1"), servicer) as address:
            for target in (address, address.replace("127.0.0.1", "localhost")):
                reply = await check(target, channel_credentials(ident(cluster_pki, "w1")))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await check(address, channel_credentials(ident(cluster_pki, "cp")))
        assert servicer.callers == [("writer", "w1"), ("writer", "w1"), ("control-plane", "cp")]

    asyncio.run(scenario())


def test_a_plaintext_client_is_refused_unavailable(cluster_pki: Path) -> None:
    async def scenario() -> None:
        servicer = RecordingHealth()
        async with tls_server(ident(cluster_pki, "n1"), servicer) as address:
            error = await refused(address, None)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        assert servicer.callers == [], "no handler ran"

    asyncio.run(scenario())


def test_a_client_without_a_certificate_or_with_another_cas_is_refused(cluster_pki: Path, stranger: Identity) -> None:
    async def scenario() -> None:
        servicer = RecordingHealth()
        mine = ident(cluster_pki, "w1")
        async with tls_server(ident(cluster_pki, "n1"), servicer) as address:
            no_cert = grpc.ssl_channel_credentials(root_certificates=mine.ca_pem)
            other_ca = grpc.ssl_channel_credentials(mine.ca_pem, stranger.key_pem, stranger.cert_chain_pem)
            for credentials in (no_cert, other_ca):
                error = await refused(address, credentials)
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            # And a client of the other cluster does not trust this server.
            error = await refused(address, channel_credentials(stranger))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "CERTIFICATE_VERIFY_FAILED" in (error.details() or ""), error
        assert servicer.callers == []

    asyncio.run(scenario())


def test_peer_role_is_none_on_a_plaintext_server(cluster_pki: Path) -> None:
    async def scenario() -> None:
        servicer = RecordingHealth()
        async with tls_server(None, servicer) as address:
            await check(address, None)
        assert servicer.callers == [None]

    asyncio.run(scenario())


def test_peer_role_works_in_a_sync_servicer_context(cluster_pki: Path) -> None:
    callers: list[tuple[str, str] | None] = []

    class SyncHealth(health.HealthServicer):
        def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
            callers.append(peer_role(context))
            return super().Check(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    try:
        health_pb2_grpc.add_HealthServicer_to_server(SyncHealth(), server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(ident(cluster_pki, "n1")))
        server.start()
        with grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(ident(cluster_pki, "r1"))) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
    finally:
        server.stop(None)
    assert callers == [("reader", "r1")]


# -- the role interceptor --------------------------------------------------------------------------


def test_the_role_interceptor_refuses_a_role_with_a_sentence_naming_the_role_needed(cluster_pki: Path) -> None:
    refusals: list[PermissionDenied] = []

    async def scenario() -> None:
        interceptor = RoleInterceptor(
            {"Check": frozenset({"control-plane"})},
            service=HEALTH_SERVICE,
            open_services=(),
            on_refusal=refusals.append,
        )
        async with tls_server(ident(cluster_pki, "n1"), interceptor=interceptor) as address:
            await check(address, channel_credentials(ident(cluster_pki, "cp")))
            error = await refused(address, channel_credentials(ident(cluster_pki, "w1")))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error.details() == "Check needs the control-plane role; this caller is writer w1"
            detail = detail_of(error)
            assert detail.reason == REASON_ROLE_NOT_ALLOWED
            assert detail.metadata == {
                "rpc": "Check",
                "needed_roles": "control-plane",
                "caller_role": "writer",
                "caller_name": "w1",
            }
            # Watch (a response stream) is in no role's permissions: refused even to the control plane.
            async with grpc.aio.secure_channel(address, channel_credentials(ident(cluster_pki, "cp"))) as channel:
                call = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call.read()
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "Watch is in no role's permissions on this server" in (caught.value.details() or "")

    asyncio.run(scenario())
    assert [r.metadata["rpc"] for r in refusals] == ["Check", "Watch"]


class FakeStorage:
    """A StorageService whose every RPC succeeds with an empty reply (AppendRecords echoes one ack per batch)."""

    def __getattr__(self, rpc: str) -> Any:
        method = pb.DESCRIPTOR.services_by_name["StorageService"].methods_by_name.get(rpc)
        if method is None:
            raise AttributeError(rpc)
        response_cls = getattr(pb, method.output_type.name)

        async def unary(request: Any, context: Any) -> Any:
            return response_cls()

        return unary

    async def AppendRecords(self, requests: Any, context: Any) -> AsyncIterator[pb.AppendRecordsResponse]:
        async for request in requests:
            yield pb.AppendRecordsResponse(batch_id=request.batch_id)


@contextlib.asynccontextmanager
async def storage_server(identity: Identity) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[RoleInterceptor(STORAGE_RPC_ROLES)])
    try:
        descriptor = pb.DESCRIPTOR.services_by_name["StorageService"]
        server.add_generic_rpc_handlers((generic_handler(descriptor, FakeStorage(), pb),))
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(identity))
        await server.start()
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def test_a_storage_node_refuses_drop_segment_and_appends_from_the_wrong_roles(cluster_pki: Path) -> None:
    async def scenario() -> None:
        async with storage_server(ident(cluster_pki, "n1")) as address:
            for name in ("w1", "cp", "r1"):
                async with grpc.aio.secure_channel(address, channel_credentials(ident(cluster_pki, name))) as channel:
                    stub = storage_service_pb2_grpc.StorageServiceStub(channel)
                    drop = stub.DropSegment(pb.DropSegmentRequest(segment_id="s"), timeout=CALL_TIMEOUT_S)
                    stream = stub.AppendRecords(iter([pb.AppendRecordsRequest(batch_id=7)]), timeout=CALL_TIMEOUT_S)
                    outcomes: list[Any] = []
                    for call in (drop, stream.read()):
                        try:
                            outcomes.append(await call)
                        except grpc.aio.AioRpcError as error:
                            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                            outcomes.append(error.details())
                    state = await stub.GetSegmentState(pb.GetSegmentStateRequest(), timeout=CALL_TIMEOUT_S)
                    assert state == pb.GetSegmentStateResponse()
                    # Health stays open to every cluster certificate.
                    await check(address, channel_credentials(ident(cluster_pki, name)))
                expected = {
                    "w1": ["DropSegment needs the control-plane role; this caller is writer w1", 7],
                    "cp": [
                        pb.DropSegmentResponse(),
                        "AppendRecords needs the writer role; this caller is control-plane cp",
                    ],
                    "r1": [
                        "DropSegment needs the control-plane role; this caller is reader r1",
                        "AppendRecords needs the writer role; this caller is reader r1",
                    ],
                }[name]
                if name == "w1":
                    outcomes[1] = outcomes[1].batch_id
                assert outcomes == expected, name

    asyncio.run(scenario())


# -- the permission table --------------------------------------------------------------------------

# The spec, written out pair by pair (not derived from the table under test).
ALLOWED = {
    "AppendRecords": "writer",
    "TruncateSegment": "writer",
    "RaiseVolumeEpoch": "writer control-plane",
    "PinLsns": "writer control-plane",
    "CreateSegment": "control-plane",
    "DropSegment": "control-plane",
    "UpdateMembership": "control-plane",
    "RewrapSegmentKey": "control-plane",
    "ReadPage": "storage-node writer reader control-plane",
    "ReadRecords": "storage-node writer reader control-plane",
    "ReadPageVersions": "storage-node writer reader control-plane",
    "FindCommit": "storage-node writer reader control-plane",
    "GetSegmentState": "storage-node writer reader control-plane client-admin",
    "ListSegments": "storage-node writer reader control-plane client-admin",
}
SPEC = {(rpc, role) for rpc, roles in ALLOWED.items() for role in roles.split()}


def test_the_table_decides_every_storage_rpc_of_the_proto() -> None:
    rpcs = {m.name for m in pb.DESCRIPTOR.services_by_name["StorageService"].methods}
    assert set(STORAGE_RPC_ROLES) == rpcs == set(ALLOWED)
    assert all(roles <= pki.ROLES for roles in STORAGE_RPC_ROLES.values())


@settings(max_examples=examples(300), deadline=None)
@given(
    rpc=st.sampled_from(sorted(ALLOWED)) | st.text(max_size=20),
    role=st.sampled_from(sorted(pki.ROLES)) | st.none() | st.text(max_size=15),
    name=st.sampled_from(["a1", "cp", ""]),
)
def test_check_role_agrees_with_the_spec(rpc: str, role: str | None, name: str) -> None:
    if (rpc, role) in SPEC:
        check_role(rpc, role, name)
        return
    with pytest.raises(PermissionDenied) as caught:
        check_role(rpc, role, name)
    message = caught.value.message
    assert message.startswith(f"{rpc} ")
    assert caught.value.status_code_name == "PERMISSION_DENIED"
    for needed in ALLOWED.get(rpc, "").split():
        assert needed in message
    if not role:
        assert "without a sixfold role certificate" in message
    elif rpc in ALLOWED:
        assert message.rstrip().endswith(f"this caller is {role} {name}".rstrip())


def test_check_role_sentences() -> None:
    with pytest.raises(PermissionDenied, match=r"^DropSegment needs the control-plane role; this caller is writer a1$"):
        check_role("DropSegment", "writer", "a1")
    with pytest.raises(PermissionDenied, match=r"^PinLsns needs one of the roles control-plane, writer; this caller"):
        check_role("PinLsns", "reader", "r1")
    with pytest.raises(PermissionDenied, match=r"^Frobnicate is in no role's permissions on this server"):
        check_role("Frobnicate", "control-plane", "cp")


# -- files, names and roles ------------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_keys_are_mode_0600_whatever_the_umask_and_the_ca_refuses_overwrite(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    with umask(0):
        ca = pki.create_ca(directory)
        cert, key = pki.issue(directory, "a1", pki.ROLE_STORAGE_NODE)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (directory, ca.cert, ca.key, cert, key)}
    assert mode == {"tls": 0o700, "ca.pem": 0o644, "ca.key": 0o600, "a1.pem": 0o644, "a1.key": 0o600}
    before = ca.key.read_bytes(), ca.cert.read_bytes()
    with pytest.raises(FileExistsError, match="already exists: this directory has a cluster CA"):
        pki.create_ca(directory)
    assert (ca.key.read_bytes(), ca.cert.read_bytes()) == before
    with pytest.raises(FileExistsError, match="a1 already has a certificate"):
        pki.issue(directory, "a1", pki.ROLE_WRITER)
    old_key = key.read_bytes()
    pki.issue(directory, "a1", pki.ROLE_WRITER, replace=True)
    assert key.read_bytes() != old_key and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pki.load_identity(directory, "a1").role == "writer"
    assert sorted(p.name for p in directory.iterdir()) == ["a1.key", "a1.pem", "ca.key", "ca.pem"], "no temp files"


def test_role_of_cert_and_load_identity(cluster_pki: Path, stranger: Identity, tmp_path: Path) -> None:
    for name, role in IDENTITIES.items():
        identity = ident(cluster_pki, name)
        assert (identity.role, identity.name) == (role, name)
        assert pki.role_of_cert(identity.cert_chain_pem) == (role, name)
    with pytest.raises(ValueError, match="names no role"):
        pki.role_of_cert((cluster_pki / "ca.pem").read_bytes())
    # A certificate from another CA, or a key that is not the certificate's, fails loading with a sentence.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ca.pem").write_bytes((cluster_pki / "ca.pem").read_bytes())
    (mixed / "w1.pem").write_bytes(stranger.cert_chain_pem)
    (mixed / "w1.key").write_bytes(stranger.key_pem)
    with pytest.raises(ValueError, match="is not signed by the cluster CA"):
        pki.load_identity(mixed, "w1")
    (mixed / "w1.pem").write_bytes((cluster_pki / "w1.pem").read_bytes())
    with pytest.raises(ValueError, match="is not the private key of"):
        pki.load_identity(mixed, "w1")
    with pytest.raises(FileNotFoundError, match="no identity for 'zz'"):
        pki.load_identity(cluster_pki, "zz")
    with pytest.raises(FileNotFoundError, match="no cluster CA"):
        pki.issue(tmp_path / "empty", "a1", pki.ROLE_WRITER)


def test_bad_names_roles_and_hosts_raise_clear_errors(cluster_pki: Path) -> None:
    cases = [
        ("", "writer", "must not be empty"),
        ("a" * 64, "writer", "is 64 characters; the limit is 63"),
        ("../etc", "writer", "may hold only ASCII letters"),
        ("-a", "writer", "must start with a letter or digit"),
        ("ca", "writer", "reserved for the cluster CA"),
        ("a1", "admin", "unknown role 'admin': a certificate's role is one of client-admin, control-plane"),
    ]
    for name, role, sentence in cases:
        with pytest.raises(ValueError, match=re.escape(sentence)):
            pki.issue(cluster_pki, name, role)
    with pytest.raises(ValueError, match="host 'bad host' is neither an IP address nor a DNS name"):
        pki.issue(cluster_pki, "h1", "writer", hosts=("bad host",))
    assert not (cluster_pki / "h1.pem").exists()


NAME_ALPHABET = string.ascii_letters + string.digits + "._-/ é:"


def spec_name_ok(name: str) -> bool:
    first_ok = bool(name) and name[0] in string.ascii_letters + string.digits
    rest_ok = all(c in string.ascii_letters + string.digits + "._-" for c in name)
    return first_ok and rest_ok and len(name) <= 63 and name != "ca"


@settings(max_examples=examples(300), deadline=None)
@given(name=st.text(alphabet=NAME_ALPHABET, max_size=70) | st.sampled_from(["ca", "a" * 63, "a" * 64]))
def test_name_validation_agrees_with_the_spec_and_role_uris_round_trip(name: str) -> None:
    if spec_name_ok(name):
        assert pki.validate_name(name) == name
        for role in pki.ROLES:
            assert pki.parse_role_uri(pki.role_uri(role, name)) == (role, name)
    else:
        with pytest.raises(ValueError, match=r"certificate name"):
            pki.validate_name(name)
        assert pki.parse_role_uri(f"sixfold://role/writer/{name}") is None
