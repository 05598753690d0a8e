"""`Inbox`: the delivery callback the provider-level broker tests share."""

from __future__ import annotations

import queue
import time

import pytest

from aspyx_event.provider import Delivery

WAIT = 30.0


class Inbox:
    """A callback that collects deliveries (acknowledging them unless told otherwise)."""

    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.deliveries: queue.Queue[Delivery] = queue.Queue()

    def __call__(self, delivery: Delivery) -> None:
        if self.ack:
            delivery.ack()
        self.deliveries.put(delivery)

    def take(self, count: int = 1, timeout: float = WAIT) -> list[Delivery]:
        """`count` deliveries, failing the test if they do not arrive within `timeout`."""
        end = time.monotonic() + timeout
        taken: list[Delivery] = []
        while len(taken) < count:
            try:
                taken.append(self.deliveries.get(timeout=max(end - time.monotonic(), 0.01)))
            except queue.Empty:
                pytest.fail(f"received {len(taken)} of {count} deliveries within {timeout} s")
        return taken

    def bodies(self, count: int, timeout: float = WAIT) -> list[str]:
        return [d.envelope.body for d in self.take(count, timeout)]

    def nothing_within(self, seconds: float) -> bool:
        """No further delivery arrives within `seconds`."""
        try:
            self.deliveries.get(timeout=seconds)
        except queue.Empty:
            return True
        return False
