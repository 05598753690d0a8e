"""Backpressure: a backlog of 100,000 events stays in the broker; a consumer holds at most its
listener's `prefetch` of them, however long the backlog and however slow the listener.

Runs on RabbitMQ with both providers; the queue (and its backlog) is deleted afterwards
through the management API. (ActiveMQ has no admin API here to drop a 100,000-message
backlog again, and keeping it would fill its memory for every later test.)"""

from __future__ import annotations

import base64
import resource
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.contract.conftest import TARGETS
from tests.contract.harness import BrokerTarget, ListenerSpec, Member, payload_event, start_member
from tests.contract.harness import unique as unique_name
from tests.waiting import eventually

pytestmark = pytest.mark.broker
BACKLOG, PREFETCH = 100_000, 50


def delete_queue(queue: str) -> None:
    """Drop a RabbitMQ queue with its backlog (management API, guest/guest on loopback)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:15672/api/queues/%2F/{urllib.parse.quote(queue, safe='')}",
        method="DELETE",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            pass
    except urllib.error.HTTPError as error:
        if error.code != 404:  # 404: gone with its last consumer (auto-delete)
            raise


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("rabbitmq", [t for t in TARGETS if "rabbitmq" in str(t.id)])
def test_a_slow_consumer_holds_at_most_its_prefetch_of_a_100000_event_backlog(
    rabbitmq: BrokerTarget, members: list[Member]
) -> None:
    target = BrokerTarget(rabbitmq.name, rabbitmq.url, rabbitmq.restart)
    event_type, release, started = payload_event(), threading.Event(), threading.Event()

    def blocked(_event: Any, _attempt: int) -> None:
        started.set()
        release.wait(120)

    group = unique_name("slow")
    spec = ListenerSpec(event_type, group, behaviour=blocked, concurrency=2)
    consumer = start_member(target, [spec], prefetch=PREFETCH)
    sender = start_member(target, [])
    members += [consumer, sender]
    try:
        rss_before = peak_rss_mb()
        for first in range(0, BACKLOG, 10_000):
            sender.manager.send_events(
                event_type(n, "x" * 40) for n in range(first, first + 10_000)
            )
        assert started.wait(60)
        in_flight = consumer.manager._in_flight  # handed out: running or waiting for a worker
        overfull = eventually(lambda: in_flight.count > PREFETCH, 2.0)  # a chance to take more
        held = in_flight.count
        assert not overfull and 1 <= held <= PREFETCH, (
            f"the consumer holds {held} deliveries (prefetch {PREFETCH})"
        )
        assert peak_rss_mb() - rss_before < 60, "memory grew with the backlog"
        release.set()
        consumer.take(500, timeout=120)  # the consumer goes on
    finally:
        release.set()
        consumer.stop()
        delete_queue(f"{event_type.__aspyx_event__.name}::{group}")  # type: ignore[attr-defined]
