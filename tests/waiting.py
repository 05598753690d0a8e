"""Waiting in tests for state that can only be observed by asking again.

Where a test can block on what it waits for (a queue of received events, a threading.Event
set by a callback), it does so with a timeout. What remains is state outside this process or
without a notification: a broker's port accepting connections, the output file of a worker
process, the messages in a broker's queue. `wait_until` is the one place that polls it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable

POLL = 0.05  # seconds between two looks


def eventually(condition: Callable[[], bool], timeout: float, interval: float = POLL) -> bool:
    """True as soon as `condition()` holds; False once `timeout` seconds passed without."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)  # nothing to block on: the state is polled (module docstring)
    return True


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = POLL
) -> None:
    """Return once `condition()` holds; fail the test naming `what` after `timeout` seconds."""
    if not eventually(condition, timeout, interval):
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    """A TCP connection to host:port can be opened now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def all_reachable(ports: Iterable[int], timeout: float) -> bool:
    """Every port accepts connections within `timeout` seconds (a broker may be restarting)."""
    ports = tuple(ports)
    return eventually(lambda: all(reachable(port) for port in ports), timeout, interval=1.0)
