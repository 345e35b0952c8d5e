"""Waiting for a condition instead of sleeping a fixed time before an assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], object], timeout: float, message: str) -> float:
    """Poll ``condition`` every 0.05 s until it is true; return the seconds it took, or fail
    with ``message`` after ``timeout`` seconds."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"{message} (after {timeout:.0f} s)")
        time.sleep(0.05)


def settled(read: Callable[[], T], *, quiet: float = 0.3, timeout: float = 10) -> T:
    """Return ``read()`` once it has given the same value for ``quiet`` seconds: for a
    value a server is still changing (an upload's offset after its client went away)."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = read()
        if again != value:
            value, since = again, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return value
    raise AssertionError(f"still changing after {timeout:.0f} s: last {value!r}")
