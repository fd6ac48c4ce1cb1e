"""Group commit (storage/writer.py): a refusal nobody waits for any more is not logged as an error."""

from __future__ import annotations

import asyncio
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.errors import StaleVolumeEpoch
from sixfold.storage.store import SegmentStore
from sixfold.storage.writer import GroupCommitter
from tests.test_store import batch, commit_ok, meta

pytestmark = pytest.mark.unit


def test_a_refusal_whose_submitter_is_gone_is_not_logged_as_unretrieved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24)
    store.create_segment(meta())
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(1, b"a")], epoch=2))  # the segment has seen volume epoch 2

    async def run() -> None:
        with ThreadPoolExecutor(1) as writer:
            committer = GroupCommitter(store, writer)
            committer.start()
            waited = committer.submit(batch([chain.patch(2, b"b")], epoch=1, batch_id=2))
            with pytest.raises(StaleVolumeEpoch):
                await waited  # someone waits: the refusal reaches them
            committer.submit(batch([chain.patch(3, b"c")], epoch=1, batch_id=3))  # its stream broke: nobody waits
            while committer.batches_committed < 2:
                await asyncio.sleep(0.01)
            await committer.stop()
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(run())
        gc.collect()
    store.close()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()], caplog.text
