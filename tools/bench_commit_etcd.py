"""`sixfold bench commit --peer etcd`: the same closed loop against a 3-member etcd cluster on loopback.

etcd is the peer for durable commit throughput: a Raft log fsynced on a majority before a put returns,
as sixfold's MTR is durable on 4 of 6 before WritePages returns. The `etcd` binary comes from Debian's
`etcd-server` package (`apt-get install etcd-server`, etcd 3.4); without it the peer is skipped with that
sentence. Three members (`EtcdCluster`) get free loopback ports and a temporary data directory each, and
are stopped by PID at the end, whatever happened.

The client is grpcio, as sixfold's bench client: `etcdserverpb.KV/Put` of a 100-byte value to a distinct
key per put, one grpc.aio channel per member, the closed-loop clients spread over them (as clientv3's
round robin). The few etcd messages needed are built here from their field numbers in etcd's
`rpc.proto` and `kv.proto` (no generated code: `_messages`). After each phase every acknowledged key is
looked for on a follower (a serializable read, retried until the follower has caught up): a put
acknowledged and missing there is reported as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sixfold.tools.bench_commit_measure import CALL_TIMEOUT_S, CpuMeter, Phase, Snapshot, closed_loop

INSTALL_HINT = "install it with `apt-get install etcd-server` (Debian's etcd 3.4)"
MEMBERS = 3
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
VERIFY_TIMEOUT_S = 20.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a follower's key listing of a whole phase


def find_etcd() -> str | None:
    return shutil.which("etcd")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"


class EtcdCluster:
    """Three etcd members on loopback in a temporary directory; a context manager that always stops them."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.root = tempfile.mkdtemp(prefix="sixfold-bench-etcd-")
        self.members = [
            Member(f"m{i}", _free_port(), _free_port(), os.path.join(self.root, f"m{i}")) for i in range(MEMBERS)
        ]

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for m in self.members:
            log = open(os.path.join(self.root, f"{m.name}.log"), "wb")
            m.process = subprocess.Popen(
                [
                    self.binary,
                    f"--name={m.name}",
                    f"--data-dir={m.data_dir}",
                    f"--listen-client-urls=http://127.0.0.1:{m.client_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{m.client_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{m.peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{m.peer_port}",
                    f"--initial-cluster={initial}",
                    "--initial-cluster-token=sixfold-bench",
                    "--initial-cluster-state=new",
                    "--logger=zap",
                    "--log-outputs=stderr",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        for m in self.members:
            while not self._healthy(m):
                assert m.process is not None
                if m.process.poll() is not None:
                    raise RuntimeError(f"etcd member {m.name} exited with {m.process.returncode}; see {self.root}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd member {m.name} not healthy after {START_TIMEOUT_S:g} s; see {self.root}")
                time.sleep(0.1)

    @staticmethod
    def _healthy(m: Member) -> bool:
        try:
            with urllib.request.urlopen(f"http://{m.address}/health", timeout=1) as reply:
                return b'"true"' in reply.read()
        except OSError:
            return False

    def pids(self) -> list[int]:
        return [m.process.pid for m in self.members if m.process is not None]

    def stop(self) -> None:
        for m in self.members:
            if m.process is not None and m.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.process.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.process is None:
                continue
            try:
                m.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                m.process.kill()
                m.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


# -- etcd's messages (etcdserverpb, mvccpb), by their field numbers ------------------------------------


def _messages() -> dict[str, Any]:
    """The message classes of the etcd v3 API this bench uses, built from a descriptor written here."""
    f = descriptor_pb2.FileDescriptorProto(name="sixfold_bench_etcd.proto", package="etcdserverpb", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    kinds = {"bytes": T.TYPE_BYTES, "int64": T.TYPE_INT64, "uint64": T.TYPE_UINT64, "bool": T.TYPE_BOOL}

    def message(name: str, *fields: tuple[str, int, str, bool]) -> None:
        m = f.message_type.add(name=name)
        for field_name, number, kind, repeated in fields:
            label = T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL
            if kind in kinds:
                m.field.add(name=field_name, number=number, type=kinds[kind], label=label)
            else:
                m.field.add(
                    name=field_name, number=number, type=T.TYPE_MESSAGE, type_name=f".etcdserverpb.{kind}", label=label
                )

    message(
        "ResponseHeader",
        ("cluster_id", 1, "uint64", False),
        ("member_id", 2, "uint64", False),
        ("revision", 3, "int64", False),
        ("raft_term", 4, "uint64", False),
    )
    message("KeyValue", ("key", 1, "bytes", False), ("mod_revision", 3, "int64", False), ("value", 5, "bytes", False))
    message("PutRequest", ("key", 1, "bytes", False), ("value", 2, "bytes", False))
    message("PutResponse", ("header", 1, "ResponseHeader", False))
    message(
        "RangeRequest",
        ("key", 1, "bytes", False),
        ("range_end", 2, "bytes", False),
        ("serializable", 7, "bool", False),
        ("keys_only", 8, "bool", False),
    )
    message(
        "RangeResponse",
        ("header", 1, "ResponseHeader", False),
        ("kvs", 2, "KeyValue", True),
        ("count", 4, "int64", False),
    )
    message("StatusRequest")
    message("StatusResponse", ("header", 1, "ResponseHeader", False), ("leader", 4, "uint64", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    names = ("PutRequest", "PutResponse", "RangeRequest", "RangeResponse", "StatusRequest", "StatusResponse")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"etcdserverpb.{n}")) for n in names}


MESSAGES = _messages()


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for every key starting with `prefix` (the prefix with its last byte plus one)."""
    end = bytearray(prefix)
    end[-1] += 1
    return bytes(end)


class EtcdClient:
    """grpc.aio calls to the members: Put spread over them, Status, and a follower's serializable Range."""

    def __init__(self, addresses: list[str]) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self.channels = [grpc.aio.insecure_channel(a, options=options) for a in addresses]
        self._put = self._method("/etcdserverpb.KV/Put", "PutRequest", "PutResponse")
        self._range = self._method("/etcdserverpb.KV/Range", "RangeRequest", "RangeResponse")
        self._status = self._method("/etcdserverpb.Maintenance/Status", "StatusRequest", "StatusResponse")

    def _method(self, path: str, request: str, response: str) -> list[Any]:
        """The unary method `path` on each member's channel."""
        return [
            ch.unary_unary(
                path,
                request_serializer=MESSAGES[request].SerializeToString,
                response_deserializer=MESSAGES[response].FromString,
            )
            for ch in self.channels
        ]

    async def put(self, member: int, key: bytes, value: bytes, timeout: float) -> None:
        await self._put[member % len(self._put)](MESSAGES["PutRequest"](key=key, value=value), timeout=timeout)

    async def follower(self) -> int:
        """The index of a member that is not the leader."""
        for i, status in enumerate(self._status):
            reply = await status(MESSAGES["StatusRequest"](), timeout=5)
            if reply.leader != reply.header.member_id:
                return i
        raise RuntimeError("every etcd member says it is the leader")

    async def keys_on(self, member: int, prefix: bytes) -> set[bytes]:
        request = MESSAGES["RangeRequest"](key=prefix, range_end=prefix_end(prefix), serializable=True, keys_only=True)
        reply = await self._range[member](request, timeout=30)
        return {kv.key for kv in reply.kvs}

    async def missing_on_follower(self, prefix: bytes, acknowledged: set[bytes]) -> tuple[int, str]:
        """(acknowledged keys the follower lacks once caught up, its name), looking until VERIFY_TIMEOUT_S."""
        member = await self.follower()
        deadline = time.monotonic() + VERIFY_TIMEOUT_S
        while True:
            missing = acknowledged - await self.keys_on(member, prefix)
            if not missing or time.monotonic() > deadline:
                return len(missing), f"m{member}"
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


async def run_etcd_phases(
    binary: str, concurrencies: list[int], seconds: float, progress: Any, value_pool: list[bytes]
) -> list[Phase]:
    """The closed loop against a fresh 3-member cluster, one phase per concurrency; each phase's acknowledged
    puts are then looked for on a follower (the count missing goes to `progress`)."""
    phases = []
    with EtcdCluster(binary) as cluster:
        progress(f"etcd: 3 members up at {', '.join(m.address for m in cluster.members)} (data in {cluster.root})")
        meter = CpuMeter({"etcd": cluster.pids()})
        client = EtcdClient([m.address for m in cluster.members])
        try:
            for c in concurrencies:
                loop = PutLoop(client, f"bench/c{c}/".encode(), value_pool, meter)
                phase = await closed_loop(loop.put, c, seconds, loop.snapshot, "etcd")
                phases.append(phase)
                lost, follower = await client.missing_on_follower(loop.prefix, loop.acknowledged)
                progress(
                    f"  {'etcd':>8} c={c:<3} {phase.per_s:>8,.0f} puts/s     p50 {phase.percentile_ms(0.5):6.1f} ms  "
                    f"p99 {phase.percentile_ms(0.99):6.1f} ms; c={c}: {len(loop.acknowledged):,} acknowledged puts, "
                    f"{lost} missing on follower {follower}"
                )
        finally:
            await client.close()
    return phases


class PutLoop:
    """One phase's puts: a distinct key each (PREFIX + a counter), the keys acknowledged, a counter snapshot."""

    def __init__(self, client: EtcdClient, prefix: bytes, value_pool: list[bytes], meter: CpuMeter) -> None:
        self.client, self.prefix, self.pool, self.meter = client, prefix, value_pool, meter
        self.acknowledged: set[bytes] = set()
        self.next = 0

    async def put(self, rng: Any) -> None:
        n = self.next
        self.next += 1
        key = self.prefix + b"%09d" % n
        await self.client.put(n, key, self.pool[rng.randrange(len(self.pool))], CALL_TIMEOUT_S)
        self.acknowledged.add(key)

    async def snapshot(self) -> Snapshot:
        return Snapshot(time.perf_counter(), commits=len(self.acknowledged), cpu_s=self.meter.read())
