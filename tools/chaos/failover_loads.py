"""The chaos workloads, reaching the writer through the cluster endpoint wherever it moves (failover
scenarios: tools/chaos/scenarios_failover.py).

- `EndpointPages`: the page workload (tools/chaos/workload.py) whose calls go to the instance the cluster
  endpoint resolves to (ClusterService.ResolveEndpoint, the writer). A failed call that says the instance
  is gone, paused past its deadline, a read replica, not the writer or fenced
  (compute/endpoint_client.py `asks_to_re_resolve`) makes the next call resolve again; while the endpoint
  resolves to nobody (a failover under way) no call is sent. Each call is recorded as the page workload
  records it (a call whose answer was lost is info, never fail), labelled with the writer it went to: the
  instance's id, or `id@generation` when the endpoint names an instance again at a later generation than
  it first did (an old writer promoted again after it rejoined as a reader is another writer, recovered at
  a new volume epoch: its calls must not count as the old one's). Each label has a Target of its own, so a
  call's label never changes while it runs.
- `EndpointBank`: the bank workload (tools/chaos/bank_workload.py) over SqlClient and VolumeClient on the
  cluster `Endpoint`, which re-resolve the same way; a transfer refused with a retryable status is tried
  again by the bank client's loop (as a new transfer), one whose commit's answer was lost is info, one
  that found the endpoint naming nobody (a failover under way) is fail: it was never sent.
Both give every call a deadline of `CALL_TIMEOUT_S`: a client that sent a call to a writer paused past a
failover moves on to the new writer after that, not after the workloads' usual 10-15 s. `refresh()` points
`target` (what the runner asks the writer's streams and segment states of) at the writer now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc

from sixfold.compute.client import VolumeClient
from sixfold.compute.endpoint_client import CLUSTER_ENDPOINT, Endpoint, ResolveError, asks_to_re_resolve, resolve
from sixfold.compute.sql_client import SqlClient
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
from sixfold.storage.v1 import cluster_service_pb2_grpc as cl_grpc
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.tools.chaos.bank import DEFAULT_ACCOUNTS, BankLedger, BankOp
from sixfold.tools.chaos.bank_client import BankClient
from sixfold.tools.chaos.bank_workload import BANK, SETUP_PROCESS, BankTarget, BankWorkload
from sixfold.tools.chaos.history import FAIL, OK
from sixfold.tools.chaos.workload import PAGES_PER_PG, VOLUME, Target, Workload

# compute/endpoint_client.py's ResolveError sentences: the endpoint named nobody, so nothing was sent.
NOT_RESOLVED = ("resolving endpoint ", "has no live instance now")
CALL_TIMEOUT_S = 6.0  # every call's deadline (the writer gives up on a commit after 5 s itself)
RESOLVE_TIMEOUT_S = 2.0
NO_WRITER_PAUSE_S = 0.1  # while the endpoint resolves to nobody
CONNECT_BACKOFF_S = 0.2  # after a call found nobody at the address (a dead writer the endpoint still names)
WRITER_WAIT_S = 60.0  # until the cluster endpoint first resolves
SEGMENT_BYTES = PAGES_PER_PG * 4096  # as vol0: the page workload's hot keys span its first two PGs


def resolve_writer(control_plane: str, timeout_s: float = WRITER_WAIT_S) -> tuple[str, str, int]:
    """(address, instance id, generation) of the writer the cluster endpoint names, waiting for one."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = resolve(Endpoint(control_plane), RESOLVE_TIMEOUT_S)
            name = str(reply.instance_ids[0]) if reply.instance_ids else CLUSTER_ENDPOINT
            return str(reply.addresses[0]), name, int(reply.generation)
        except ResolveError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def create_volume(cluster: Any, volume: str) -> None:
    """Create `volume` (as vol0: 64 MiB segments) through the control plane; one that exists is kept."""
    with transport.channel(cluster.control_plane_address(), CHANNEL_OPTIONS) as channel:
        stub = cp_grpc.ControlPlaneServiceStub(channel)
        try:
            stub.CreateVolume(cp_pb.CreateVolumeRequest(volume_id=volume, segment_size_bytes=SEGMENT_BYTES), timeout=30)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise


class _CappedStub:
    """A stub whose every call gets at most `cap_s` as its deadline."""

    def __init__(self, stub: Any, cap_s: float) -> None:
        self._stub = stub
        self._cap_s = cap_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, timeout: float | None = None, **kwargs: Any) -> Any:
            return method(request, timeout=min(timeout or self._cap_s, self._cap_s), **kwargs)

        return call


def capped(stub: Any, cap_s: float = CALL_TIMEOUT_S) -> Any:
    """`stub` with every call's deadline at most `cap_s`."""
    return _CappedStub(stub, cap_s)


class EndpointPages(Workload):
    def __init__(
        self,
        *,
        clients: int,
        keys: int,
        seed: int,
        cluster: Any,
        volume: str = VOLUME,
        prefix: str = "",
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.control_plane = cluster.control_plane_address()
        address, name, generation = resolve_writer(self.control_plane)
        super().__init__(
            clients=clients, keys=keys, seed=seed, address=address, cluster=cluster, volume=volume, prefix=prefix
        )
        self.call_timeout_s = call_timeout_s
        self._first_generation = {name: generation}  # per instance: the generation it was first named at
        self.target = self._adopt(self.target, name)
        self._targets = [self.target]
        self._by_label = {name: self.target}
        self._stale = False
        self._resolving = asyncio.Lock()
        self._cp_channel: grpc.aio.Channel | None = None
        self.resolves = 0

    def _adopt(self, target: Target, label: str) -> Target:
        target.label = label
        target.stub = capped(target.stub, self.call_timeout_s)
        return target

    def describe(self) -> str:
        return f"{super().describe()} on {self.volume}, through the cluster endpoint"

    async def current(self) -> Target | None:
        """The target calls go to now: the cluster endpoint resolved again if the last call asked for it;
        None while it resolves to nobody."""
        if not self._stale:
            return self.target
        async with self._resolving:
            if not self._stale:
                return self.target
            if self._cp_channel is None:
                self._cp_channel = transport.aio_channel(self.control_plane, CHANNEL_OPTIONS)
            try:
                reply = await cl_grpc.ClusterServiceStub(self._cp_channel).ResolveEndpoint(
                    cl_pb.ResolveEndpointRequest(name=CLUSTER_ENDPOINT), timeout=RESOLVE_TIMEOUT_S
                )
            except grpc.aio.AioRpcError:
                return None
            if not reply.addresses:
                return None
            self.resolves += 1
            address = str(reply.addresses[0])
            name = str(reply.instance_ids[0]) if reply.instance_ids else address
            first = self._first_generation.setdefault(name, reply.generation)
            label = name if reply.generation == first else f"{name}@{reply.generation}"
            target = self._by_label.get(label)
            if target is None or target.address != address:
                target = self._adopt(Target(address, label), label)
                self._targets.append(target)
                self._by_label[label] = target
            self.target, self._stale = target, False
            return target

    async def refresh(self) -> str:
        """Resolve the cluster endpoint now (waiting for a writer); the writer's address."""
        deadline = time.monotonic() + WRITER_WAIT_S
        self._stale = True
        while (target := await self.current()) is None and time.monotonic() < deadline:
            await asyncio.sleep(NO_WRITER_PAUSE_S)
        return self.target.address if target is None else target.address

    async def _after(self) -> None:
        record = self.records[-1]  # appended by the call that just returned, with no await in between
        if record.outcome == OK:
            return
        code = getattr(grpc.StatusCode, record.code, None)
        if record.writer == self.target.label and (code is None or asks_to_re_resolve(code, record.reason)):
            self._stale = True
        if "failed to connect" in record.details:  # the endpoint may name it until the writer is declared gone
            await asyncio.sleep(CONNECT_BACKOFF_S)

    async def write(self, processes: tuple[int, ...], keys: tuple[int, ...], token: str) -> str:
        if await self.current() is None:
            await asyncio.sleep(NO_WRITER_PAUSE_S)
            return FAIL  # nothing was sent: not a call of the history
        outcome = await super().write(processes, keys, token)
        await self._after()
        return outcome

    async def read(
        self, processes: tuple[int, ...], keys: tuple[int, ...], from_storage: bool = False
    ) -> tuple[str, list[str | None]]:
        if await self.current() is None:
            await asyncio.sleep(NO_WRITER_PAUSE_S)
            return FAIL, []
        result = await super().read(processes, keys, from_storage)
        await self._after()
        return result

    async def close(self) -> None:
        await super().close()
        if self._cp_channel is not None:
            await self._cp_channel.close()


class EndpointBankClient(BankClient):
    """A bank client whose SQL and page reads go to the cluster endpoint (its `target` only labels the calls)."""

    def __init__(
        self, ledger: BankLedger, process: int, endpoint: Endpoint, volume: str, timeout_s: float = CALL_TIMEOUT_S
    ) -> None:
        super().__init__(ledger, process, lambda: (endpoint.name, endpoint.name), volume)
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def _connect(self, address: str) -> None:
        if self._db is None:
            self._db = SqlClient(self.endpoint, self.volume, timeout_s=self.timeout_s)

    def _page_client(self) -> VolumeClient:
        if self._pages is None:
            self._pages = VolumeClient(self.endpoint, timeout_s=self.timeout_s)
        return self._pages

    def _failed(self, op: BankOp, error: Exception, *, committing: bool) -> None:
        super()._failed(op, error, committing=committing)
        if op.details.startswith(NOT_RESOLVED[0]) or NOT_RESOLVED[1] in op.details:  # never sent
            op.outcome = FAIL


class EndpointBank(BankWorkload):
    def __init__(
        self,
        *,
        clients: int,
        seed: int,
        cluster: Any,
        accounts: int = DEFAULT_ACCOUNTS,
        volume: str = VOLUME,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.endpoint = Endpoint(cluster.control_plane_address())
        address, label, _ = resolve_writer(self.endpoint.control_plane)
        super().__init__(clients=clients, seed=seed, address=address, cluster=cluster, accounts=accounts)
        self.target = BankTarget(address, label)
        self.volume = volume
        self.call_timeout_s = call_timeout_s
        self._setup = EndpointBankClient(self.ledger, SETUP_PROCESS, self.endpoint, volume, call_timeout_s)

    def describe(self) -> str:
        return f"{super().describe()} on {self.volume}, through the cluster endpoint"

    def new_client(self, index: int) -> BankClient:
        return EndpointBankClient(self.ledger, index, self.endpoint, self.volume, self.call_timeout_s)

    async def refresh(self) -> str:
        address, label, _ = await asyncio.to_thread(resolve_writer, self.endpoint.control_plane)
        self.target = BankTarget(address, label)
        return address


def make_workload(
    kind: str, cluster: Any, *, clients: int, seed: int, keys: int, accounts: int, volume: str
) -> EndpointPages | EndpointBank:
    """The `kind` workload (pages or bank) on `volume`, through the cluster endpoint."""
    if kind == BANK:
        return EndpointBank(clients=clients, seed=seed, cluster=cluster, accounts=accounts, volume=volume)
    return EndpointPages(clients=clients, keys=keys, seed=seed, cluster=cluster, volume=volume)


def runner_workload(cfg: Any, cluster: Any) -> EndpointPages | EndpointBank:
    """The clients' workload of a failover scenario (Scenario.workload_factory): the run's own, on vol0."""
    return make_workload(
        cfg.workload, cluster, clients=cfg.clients, seed=cfg.seed, keys=cfg.keys, accounts=cfg.accounts, volume=VOLUME
    )


async def stop_tasks(stop: Any, tasks: list[asyncio.Task[None]]) -> None:
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, return_exceptions=True)
