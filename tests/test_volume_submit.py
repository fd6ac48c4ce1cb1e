"""The writer's non-waiting hand-off (`WritePath.submit`), through the real Volume code over fake streams:
it returns the CPL at once, its future resolves when VDL passes it, and an MTR built on one that a regain
truncated is refused before anything is allocated.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from sixfold.compute.cache import BufferCache
from sixfold.compute.errors import NotCommitted
from sixfold.compute.quorum import Membership
from sixfold.compute.volume import PgInfo, Volume
from sixfold.compute.volume_log import Patch, VolumeLog

pytestmark = pytest.mark.unit

NODES = ["a1", "a2", "b1", "b2", "c1", "c2"]


@dataclass
class FakeStream:
    """A connected segment stream that keeps what it was asked to send."""

    node_id: str
    pg_index: int = 0
    connected: bool = True
    sent: list[int] = field(default_factory=list)

    def enqueue(self, records: list[tuple[int, Any]]) -> None:
        self.sent.extend(lsn for lsn, _ in records)


def open_volume() -> tuple[Volume, dict[str, FakeStream]]:
    volume = Volume("vol-test", control_plane=None, channels=None)  # type: ignore[arg-type]
    volume.page_size, volume.pages_per_pg, volume.epoch = 4096, 1000, 1
    volume.log = VolumeLog(pg_of_page=lambda _: 0, epoch=1)
    volume.log.add_pg(0, Membership.of(NODES))
    volume.cache = BufferCache(4096)
    streams = {n: FakeStream(n) for n in NODES}
    volume.pgs[0] = PgInfo(0, 0, 1000, 1, Membership.of(NODES), streams)  # type: ignore[arg-type]
    return volume, streams


def acknowledge(volume: Volume, lsn: int) -> None:
    for node in NODES[:4]:  # a write quorum
        volume.on_ack(volume.pgs[0].streams[node], lsn)


def test_submit_hands_off_without_waiting_and_resolves_once_durable() -> None:
    async def run() -> None:
        volume, streams = open_volume()
        cpl, future = await volume.submit([Patch(3, 0, b"one"), Patch(4, 10, b"two")])
        assert cpl == 2 and not future.done() and streams["a1"].sent == [1, 2]
        second_cpl, second = await volume.submit([Patch(3, 1, b"x")])
        assert second_cpl == 3 and streams["c2"].sent == [1, 2, 3]
        acknowledge(volume, cpl)
        assert await future == cpl and not second.done()
        acknowledge(volume, second_cpl)
        assert await second == second_cpl

    asyncio.run(asyncio.wait_for(run(), 5))


def test_write_is_submit_then_the_wait() -> None:
    async def run() -> None:
        volume, _ = open_volume()
        writing = asyncio.create_task(volume.write([Patch(5, 0, b"w")]))
        await asyncio.sleep(0.01)
        assert not writing.done()
        acknowledge(volume, 1)
        assert await writing == 1

    asyncio.run(asyncio.wait_for(run(), 5))


def test_an_mtr_built_on_one_a_regain_truncated_is_refused_before_allocation() -> None:
    async def run() -> None:
        volume, streams = open_volume()
        base_cpl, _ = await volume.submit([Patch(3, 0, b"in flight")])
        base_epoch = volume.epoch
        # Same epoch: the base is still in flight, the new MTR may follow it.
        cpl, _ = await volume.submit([Patch(3, 0, b"on top")], base_cpl=base_cpl, base_epoch=base_epoch)
        assert cpl == base_cpl + 1
        # A regain (a newer epoch) that did not find the base durable: refused, nothing allocated or sent.
        volume.epoch += 1
        allocated, sent = volume.log.lsn_allocated if volume.log else 0, list(streams["a1"].sent)
        with pytest.raises(NotCommitted, match="builds on MTR"):
            await volume.submit([Patch(3, 0, b"stale")], base_cpl=base_cpl, base_epoch=base_epoch)
        assert volume.log is not None and volume.log.lsn_allocated == allocated and streams["a1"].sent == sent
        # Once the base is durable, the newer epoch does not matter.
        acknowledge(volume, cpl)
        await volume.submit([Patch(3, 0, b"fine")], base_cpl=base_cpl, base_epoch=base_epoch)

    asyncio.run(asyncio.wait_for(run(), 5))
