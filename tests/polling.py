"""Waiting in tests for something to happen: poll for the condition with a deadline, never a fixed sleep.

    address = wait_until(serving, 30, "the storage node serves")

fails the test with "timed out after 30 s waiting until the storage node serves"
when the condition never held, and returns the condition's (truthy) value when it did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

POLL_S = 0.05  # between two looks at the condition


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, poll_s: float = POLL_S) -> T:
    """Call `predicate` until it returns something truthy, and return that; fail the test with a
    sentence naming `what` if it has not within `timeout_s` (the last look is at or after the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting until {what}")
        time.sleep(poll_s)
