"""storage/event_loop.py: the hot-path processes' loop is uvloop unless $SIXFOLD_EVENT_LOOP says asyncio."""

from __future__ import annotations

import asyncio

import pytest

from sixfold.storage import event_loop

pytestmark = pytest.mark.unit


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert event_loop.chosen() == "uvloop"
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, " AsyncIO ")
    assert event_loop.chosen() == "asyncio"
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_an_unknown_loop_is_refused_with_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, "trio")
    with pytest.raises(SystemExit, match="must be one of uvloop, asyncio"):
        event_loop.chosen()
