"""The chaos workload: concurrent clients writing and reading hot pages of vol0, recorded as a history.

`clients` concurrent client processes run on one asyncio loop over one
VolumeService channel. Each loops: pick a hot key (pages 0..3 of PG 0 and
16384..16387 of PG 1 by default) and write a unique token `p{process}-{n}`
(at offset 0, padded to 32 bytes) or read it back. The last hot page of
each PG forms a pair that is only ever written by two-page MTRs (the same
token to both pages, one MTR spanning both PGs) and read by two-page reads,
so atomicity can be read off the pages. Every operation goes into a
`tools.chaos.history.History` as invoke + ok / fail / info, and into
`Workload.records` as one `OpRecord` per call.

Outcome of an operation:
- ok: acknowledged (a write is durable; a read returned its pages);
- fail: definitely not done: INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND,
  RESOURCE_EXHAUSTED, FAILED_PRECONDITION (a fenced writer), or UNAVAILABLE
  whose sentence says "Nothing was written";
- info: unknown: any other UNAVAILABLE (no connection; sent but not durable in
  5 s, "may still become durable later"), DEADLINE_EXCEEDED, anything whose
  sentence says it "may still" happen, anything else.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.status import reason_of
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE, History
from sixfold.tools.cluster import COMPUTE, Cluster

PAGES = "pages"  # this workload's name (`sixfold chaos --workload pages`)
VOLUME = "vol0"
PAGES_PER_PG = 16384  # vol0: 64 MiB segments of 4 KiB pages
VALUE_BYTES = 32
WRITE_TIMEOUT_S = 10.0  # the writer gives up on a commit after 5 s (UNAVAILABLE), so this rarely fires
READ_TIMEOUT_S = 10.0
ERROR_BACKOFF_S = 0.05
FINAL_READ_TIMEOUT_S = 60.0
PREPARE_TIMEOUT_S = 60.0

# Op mix: single-page write, two-page MTR, single-page read, two-page read.
P_WRITE, P_PAIR_WRITE, P_READ = 0.45, 0.10, 0.35
# Share of reads that skip the writer's buffer cache: the hot pages live there, so without these
# a fault would never make a segment serve a read.
P_FROM_STORAGE = 0.5

CLIENT_CHANNEL_OPTIONS = CHANNEL_OPTIONS + [
    # The writer is restarted on the same port in some scenarios: reconnect quickly.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

FAIL_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
NOTHING_WRITTEN = "Nothing was written"
MAY_STILL = "may still"  # "... it may still become durable later"


def classify(code: grpc.StatusCode, details: str) -> str:
    """ok / fail / info for a failed call (see the module docstring)."""
    if MAY_STILL in details:  # whatever the code: the server itself says the outcome is open
        return INFO
    if code in FAIL_CODES:
        return FAIL
    if code == grpc.StatusCode.UNAVAILABLE and NOTHING_WRITTEN in details:
        return FAIL
    return INFO


def encode_value(token: str) -> bytes:
    raw = token.encode()
    assert len(raw) <= VALUE_BYTES, token
    return raw.ljust(VALUE_BYTES, b"\0")


def decode_value(data: bytes) -> str | None:
    """The token at offset 0 of a page; None for never written (all zero); `<hex>` for anything undecodable."""
    raw = bytes(data[:VALUE_BYTES])
    if not any(raw):
        return None
    text = raw.rstrip(b"\0")
    try:
        token = text.decode("ascii")
    except UnicodeDecodeError:
        return f"<{raw.hex()}>"
    if not token.isprintable() or b"\0" in text:
        return f"<{raw.hex()}>"
    return token


def hot_keys(count: int) -> tuple[list[int], list[tuple[int, int]]]:
    """(single keys, pairs): `count` pages, half at the start of PG 0, half at the start of PG 1; the last
    page of each half forms the pair written only by two-page MTRs."""
    if count < 4 or count % 2:
        raise ValueError("--keys must be an even number of at least 4")
    half = count // 2
    pg0 = list(range(half))
    pg1 = [PAGES_PER_PG + i for i in range(half)]
    return pg0[:-1] + pg1[:-1], [(pg0[-1], pg1[-1])]


@dataclass
class OpRecord:
    """One client call, beside its history events (which are per key)."""

    kind: str  # "write" | "read"
    keys: tuple[int, ...]
    token: str | None  # a write's token
    values: tuple[str | None, ...]  # an ok read's values, per key
    invoked: float
    completed: float
    outcome: str  # ok / fail / info
    code: str  # "OK" or the status code's name
    details: str
    writer: str  # label of the writer the call went to ("old", "new", ...)
    from_storage: bool = False  # a read that skipped the writer's buffer cache (a segment served it)
    volume: str = VOLUME
    lsn: int = 0  # an ok write's commit LSN (WritePagesResponse.lsn)
    read_point: int = 0  # an ok read's read point (the VDL it was read at)
    page_lsns: tuple[int, ...] = ()  # an ok read's page LSNs, per key (0: never written)
    reason: str = ""  # a failed call's ErrorInfo reason (storage/errors.py), "" if none


class Target:
    """The writer the clients talk to (switchable: the old-writer scenario moves them)."""

    def __init__(self, address: str, label: str) -> None:
        self.address = address
        self.label = label
        self.channel = transport.aio_channel(address, CLIENT_CHANNEL_OPTIONS)
        self.stub = vgrpc.VolumeServiceStub(self.channel)


class Workload:
    kind = PAGES

    def __init__(
        self,
        *,
        clients: int,
        keys: int,
        seed: int,
        address: str,
        cluster: Cluster,
        volume: str = VOLUME,
        prefix: str = "",
    ) -> None:
        self.clients = clients
        self.volume = volume  # the volume written and read (vol0; a clone's load writes the clone)
        self.prefix = prefix  # before every token, so that two loads never write the same one
        self.seed = seed
        self.cluster = cluster
        self.single_keys, self.pairs = hot_keys(keys)
        self.all_keys = sorted(set(self.single_keys) | {k for pair in self.pairs for k in pair})
        self.history = History()
        self.records: list[OpRecord] = []
        self.target = Target(address, COMPUTE)
        self._targets = [self.target]
        self.stop = asyncio.Event()
        self.final_values: dict[int, str | None] = {}
        self.final_read_attempts = 0
        self.origin = time.monotonic()

    encode = staticmethod(encode_value)

    def describe(self) -> str:
        return f"{self.clients} clients on keys {self.all_keys} (pairs {self.pairs})"

    def save_history(self, path: Path) -> None:
        self.history.to_jsonl(path)

    async def switch(self, address: str, label: str) -> None:
        self.target = Target(address, label)
        self._targets.append(self.target)

    async def close(self) -> None:
        for target in self._targets:
            await target.channel.close()

    def log_lines(self, name: str, needle: str) -> list[str]:
        path = self.cluster.log_path(name)
        if not path.exists():
            return []
        return [line for line in path.read_text(errors="replace").splitlines() if needle in line]

    # -- operations --------------------------------------------------------------------

    async def write(self, processes: tuple[int, ...], keys: tuple[int, ...], token: str) -> str:
        target = self.target
        data = encode_value(token)
        invoked = time.monotonic()
        handles = [self.history.invoke(p, WRITE, k, token, invoked) for p, k in zip(processes, keys)]
        code, details, outcome, reason = "OK", "", OK, ""
        lsn = 0
        try:
            reply = await target.stub.WritePages(
                vpb.WritePagesRequest(
                    volume_id=self.volume, patches=[vpb.PagePatch(page_no=k, offset=0, data=data) for k in keys]
                ),
                timeout=WRITE_TIMEOUT_S,
            )
            lsn = reply.lsn
        except grpc.aio.AioRpcError as error:
            code, details, reason = error.code().name, error.details() or "", reason_of(error)
            outcome = classify(error.code(), details)
        except Exception as error:  # noqa: BLE001 - whatever broke, the write's fate is unknown
            code, details, outcome = type(error).__name__, str(error), INFO
        completed = time.monotonic()
        for handle in handles:
            self.history.complete(
                handle, outcome, time=completed, error=None if outcome == OK else f"{code}: {details}"[:300]
            )
        self.records.append(
            OpRecord(
                WRITE,
                keys,
                token,
                (),
                invoked,
                completed,
                outcome,
                code,
                details,
                target.label,
                volume=self.volume,
                lsn=lsn,
                reason=reason,
            )
        )
        return outcome

    async def read(
        self, processes: tuple[int, ...], keys: tuple[int, ...], from_storage: bool = False
    ) -> tuple[str, list[str | None]]:
        target = self.target
        invoked = time.monotonic()
        handles = [self.history.invoke(p, READ, k, None, invoked) for p, k in zip(processes, keys)]
        code, details, outcome, reason = "OK", "", OK, ""
        values: list[str | None] = []
        read_point = 0
        page_lsns: tuple[int, ...] = ()
        try:
            reply = await target.stub.ReadPages(
                vpb.ReadPagesRequest(volume_id=self.volume, page_nos=list(keys), from_storage=from_storage),
                timeout=READ_TIMEOUT_S,
            )
            by_page = {p.page_no: p for p in reply.pages}
            values = [
                decode_value(by_page[k].data) if k in by_page else f"<page {k} missing from the reply>" for k in keys
            ]
            read_point, page_lsns = reply.read_point, tuple(by_page[k].page_lsn if k in by_page else 0 for k in keys)
        except grpc.aio.AioRpcError as error:
            code, details, reason = error.code().name, error.details() or "", reason_of(error)
            outcome = classify(error.code(), details)
        except Exception as error:  # noqa: BLE001 - whatever broke, the read's outcome is unknown
            code, details, outcome = type(error).__name__, str(error), INFO
        completed = time.monotonic()
        for i, handle in enumerate(handles):
            self.history.complete(
                handle,
                outcome,
                value=values[i] if outcome == OK else None,
                time=completed,
                error=None if outcome == OK else f"{code}: {details}"[:300],
            )
        self.records.append(
            OpRecord(
                READ,
                keys,
                None,
                tuple(values),
                invoked,
                completed,
                outcome,
                code,
                details,
                target.label,
                from_storage,
                volume=self.volume,
                read_point=read_point,
                page_lsns=page_lsns,
                reason=reason,
            )
        )
        return outcome, values

    async def client(self, index: int) -> None:
        """One client process: `index` in the history, `clients + index` for the second page of a pair."""
        rng = random.Random(f"{self.seed}:client:{index}")
        process, shadow = index, self.clients + index
        n = 0
        while not self.stop.is_set():
            r = rng.random()
            if r < P_WRITE:
                n += 1
                outcome = await self.write((process,), (rng.choice(self.single_keys),), f"{self.prefix}p{process}-{n}")
            elif r < P_WRITE + P_PAIR_WRITE:
                n += 1
                outcome = await self.write((process, shadow), rng.choice(self.pairs), f"{self.prefix}p{process}-{n}")
            elif r < P_WRITE + P_PAIR_WRITE + P_READ:
                outcome, _ = await self.read((process,), (rng.choice(self.all_keys),), rng.random() < P_FROM_STORAGE)
            else:
                outcome, _ = await self.read((process, shadow), rng.choice(self.pairs), rng.random() < P_FROM_STORAGE)
            if outcome != OK:
                await asyncio.sleep(ERROR_BACKOFF_S * (0.5 + rng.random()))

    async def prepare(self) -> None:
        """Grow vol0 to two PGs (a write to a page of PG 1 that is not a hot key) before any fault."""
        deadline = time.monotonic() + PREPARE_TIMEOUT_S
        page = PAGES_PER_PG + 1000
        while True:
            try:
                await self.target.stub.WritePages(
                    vpb.WritePagesRequest(
                        volume_id=self.volume, patches=[vpb.PagePatch(page_no=page, offset=0, data=b"grow")]
                    ),
                    timeout=WRITE_TIMEOUT_S,
                )
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def final_reads(self) -> bool:
        """Read every key in one call (one read point) until it succeeds; recorded like any read. The
        pages come from storage segments, not the writer's buffer cache: what the segments hold is judged."""
        processes = tuple(2 * self.clients + i for i in range(len(self.all_keys)))
        deadline = time.monotonic() + FINAL_READ_TIMEOUT_S
        while time.monotonic() < deadline:
            self.final_read_attempts += 1
            outcome, values = await self.read(processes, tuple(self.all_keys), from_storage=True)
            if outcome == OK:
                self.final_values = dict(zip(self.all_keys, values))
                return True
            await asyncio.sleep(0.5)
        return False
