"""StompProvider delivery semantics on the real brokers: RabbitMQ (61613), ActiveMQ (61614).

Tests taking `make` run on both brokers; a check of what only one broker does takes
`make_rabbitmq` or `make_activemq` and runs on that broker alone, so no test is skipped. Event
and group names are unique per test. Outages are simulated by a local TCP proxy (`Proxy`) where
possible, so other tests sharing the brokers are not disturbed; the durability test restarts
the broker with ``scripts/brokers.sh``.
"""

from __future__ import annotations

import contextlib
import queue
import time

from aspyx_event.provider import Subscription
from tests.integration.stomp.support import *


def test_round_trip_keeps_body_and_headers(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(Subscription(event, group, durable=True), inbox)
    consumer.start()
    producer = make()
    producer.start()
    tricky = {
        "colon": "a:b:c",
        "newline": "line 1\nline 2\r\nend",
        "backslash": "C:\\temp\\n",
        "unicode": "héllo ☃ 𝄞 日本",
        "empty": "",
        "name:with\\odd\nchars": "v",
        "priority": "not a number",
        "timestamp": "yesterday",
        "expires": "never",
        "message-id": "mine",
        "destination": "nowhere",
        "JMSType": "jms",
        "x-custom": "x",
        "aspyx-own": "prefixed",
        "aspyx.redelivered": "user value",
        "session": "s-1",
    }
    small = envelope(event, '{"text": "Grüße ☃ 𝄞"}', **tricky)
    large = envelope(event, "ü" * 500_000 + "x" * 24_288)
    send_all(producer, [small, large])
    received = {d.envelope.message_id: d for d in inbox.take(2)}
    assert received[small.message_id].envelope.body == small.body
    assert received[small.message_id].envelope.headers == small.headers
    assert received[small.message_id].redelivered is False
    assert received[large.message_id].envelope.body == large.body
    assert received[large.message_id].envelope.headers == large.headers


def test_non_durable_send_round_trip(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(Subscription(event, group), inbox)
    consumer.start()
    producer = make()
    producer.start()
    sent = [envelope(event, str(i)) for i in range(20)]
    send_all(producer, sent, durable=False)
    assert sorted(inbox.bodies(20), key=int) == [str(i) for i in range(20)]


def test_every_group_gets_every_event(make: Factory) -> None:
    event, group = names()
    first, second = Inbox(), Inbox()
    provider = make()
    provider.subscribe(Subscription(event, group + "-1", durable=True), first)
    provider.subscribe(Subscription(event, group + "-2", durable=True), second)
    provider.start()
    send_all(provider, [envelope(event, str(i)) for i in range(50)])
    expected = [str(i) for i in range(50)]
    assert sorted(first.bodies(50), key=int) == expected
    assert sorted(second.bodies(50), key=int) == expected


def test_members_of_a_group_compete(make: Factory) -> None:
    event, group = names()
    inbox_a, inbox_b = Inbox(), Inbox()
    member_a, member_b = make(), make()
    member_a.subscribe(Subscription(event, group, durable=True, prefetch=10), inbox_a)
    member_b.subscribe(Subscription(event, group, durable=True, prefetch=10), inbox_b)
    member_a.start()
    member_b.start()
    send_all(member_a, [envelope(event, str(i)) for i in range(200)])
    got_a: list[str] = []
    got_b: list[str] = []
    end = time.monotonic() + WAIT
    while len(got_a) + len(got_b) < 200 and time.monotonic() < end:
        for inbox, got in ((inbox_a, got_a), (inbox_b, got_b)):
            with contextlib.suppress(queue.Empty):
                got.append(inbox.deliveries.get(timeout=0.05).envelope.body)
    assert sorted(got_a + got_b, key=int) == [str(i) for i in range(200)]  # each exactly once
    assert got_a
    assert got_b  # split between the members


def test_durable_events_wait_while_the_group_is_offline(make: Factory) -> None:
    event, group = names()
    producer = make()
    producer.start()
    inbox = Inbox()
    member = make()
    member.subscribe(Subscription(event, group, durable=True), inbox)
    member.start()
    member.stop()  # the queue exists now and must survive stop()
    send_all(producer, [envelope(event, "while offline")])
    member.start()  # the same provider starts again and re-subscribes
    assert inbox.bodies(1) == ["while offline"]


def test_reject_requeues_or_drops(make: Factory) -> None:
    event, group = names()
    inbox = Inbox(ack=False)
    provider = make()
    provider.subscribe(Subscription(event, group, durable=True), inbox)
    provider.start()
    original = envelope(event, "again ☃", session="s:1\n2")
    send_all(provider, [original])
    (first,) = inbox.take()
    assert first.redelivered is False
    first.reject(requeue=True)
    first.reject(requeue=True)  # settling twice is a no-op
    (second,) = inbox.take()
    assert second.redelivered is True
    assert second.envelope.body == original.body
    assert second.envelope.headers == original.headers
    second.reject(requeue=False)
    send_all(provider, [envelope(event, "next")])
    (third,) = inbox.take()
    assert third.envelope.body == "next"  # the dropped one did not come back first
    third.ack()


def test_unsettled_delivery_of_a_stopped_member_goes_to_another(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True, prefetch=5)
    holder_inbox, other_inbox = Inbox(ack=False), Inbox()
    holder = make()
    holder.subscribe(subscription, holder_inbox)
    holder.start()
    send_all(holder, [envelope(event, "held")])
    (held,) = holder_inbox.take()
    other = make()
    other.subscribe(subscription, other_inbox)
    other.start()
    holder.pause()
    send_all(other, [envelope(event, str(i)) for i in range(10)])
    holder.stop()
    moved = {d.envelope.body: d for d in other_inbox.take(11)}
    assert sorted(moved) == sorted(["held", *map(str, range(10))])
    assert moved["held"].redelivered is True
    assert holder_inbox.deliveries.empty()  # paused: no callback
    held.ack()  # its connection is gone: a no-op
