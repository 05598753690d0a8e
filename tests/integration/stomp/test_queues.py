"""StompProvider.send_to_queue, dead-letter subscriptions and clone() on the real brokers.

"No other group sees it" is checked through queue order: a message that reached a queue
before a broadcast event would be delivered before it, so a group whose first delivery is the
broadcast did not get the direct one.
"""

from __future__ import annotations

import pytest

from aspyx_event.errors import ProviderConnectionError, ProviderError
from aspyx_event.provider import Subscription
from aspyx_event.providers.stomp import StompProvider
from tests.integration.stomp.support import *


def test_send_to_queue_reaches_only_that_group(make: Factory) -> None:
    event, group = names()
    target = Subscription(event, group + "-a", durable=True)
    other = Subscription(event, group + "-b", durable=True)
    inboxes = {target.group: Inbox(), other.group: Inbox()}
    consumer = make()
    for subscription in (target, other):
        consumer.subscribe(subscription, inboxes[subscription.group])
    consumer.start()
    producer = make()  # consumes nothing itself
    producer.start()
    direct = envelope(event, "direct ☃", tenant="t:1", priority="high")
    producer.send_to_queue(target, direct).result(WAIT)
    send_all(producer, [envelope(event, "broadcast")])
    first, second = inboxes[target.group].take(2)
    assert [first.envelope.body, second.envelope.body] == ["direct ☃", "broadcast"]
    assert first.envelope.headers == direct.headers
    assert inboxes[other.group].bodies(1) == ["broadcast"]


def test_send_to_queue_reaches_a_group_whose_members_are_offline(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    first = make()
    first.subscribe(subscription, Inbox())
    first.start()
    first.stop()
    producer = make()
    producer.start()
    producer.send_to_queue(subscription, envelope(event, "kept")).result(WAIT)
    inbox = Inbox()
    back = make()
    back.subscribe(subscription, inbox)
    back.start()
    assert inbox.bodies(1) == ["kept"]


def test_dead_letters_reach_only_the_dead_letter_queue(make: Factory) -> None:
    event, group = names()
    live = Subscription(event, group, durable=True)
    producer = make()
    producer.start()
    dead = envelope(event, "dead ☃", reason="failed: x")
    producer.send_to_queue(live.dead_letter(), dead).result(WAIT)  # before anyone subscribed
    live_inbox, dead_inbox = Inbox(), Inbox()
    consumer = make()
    consumer.subscribe(live, live_inbox)
    consumer.subscribe(live.dead_letter(), dead_inbox)
    consumer.start()
    (received,) = dead_inbox.take()
    assert received.envelope.body == "dead ☃"
    assert received.envelope.headers == dead.headers
    send_all(producer, [envelope(event, "live")])
    producer.send_to_queue(live.dead_letter(), envelope(event, "dead 2")).result(WAIT)
    assert live_inbox.bodies(1) == ["live"]  # the group's queue never saw a dead letter
    assert dead_inbox.bodies(1) == ["dead 2"]  # nor the DLQ the event


def test_dead_letter_queue_is_durable_and_never_expires_on_rabbitmq(
    make_rabbitmq: Factory,
) -> None:
    event, group = names()
    dead_letters = Subscription(event, group, per_process=True).dead_letter()
    producer = make_rabbitmq()
    producer.start()
    producer.send_to_queue(dead_letters, envelope(event, "dead")).result(WAIT)
    info = rabbitmq_queue(f"{event}::{group}.dlq")
    assert (info["durable"], info["auto_delete"], info["arguments"]) == (True, False, {})
    inbox = Inbox()
    consumer = make_rabbitmq()
    consumer.subscribe(dead_letters, inbox)
    consumer.start()  # the SUBSCRIBE declares it equally: no "inequivalent arg"
    assert inbox.bodies(1) == ["dead"]


def test_unacknowledged_dead_letters_return_after_the_consumer_stops(make: Factory) -> None:
    event, group = names()
    dead_letters = Subscription(event, group).dead_letter()
    producer = make()
    producer.start()
    sent = [str(i) for i in range(3)]
    for future in [producer.send_to_queue(dead_letters, envelope(event, b)) for b in sent]:
        future.result(WAIT)
    inbox = Inbox(ack=False)
    consumer = make()
    consumer.subscribe(dead_letters, inbox)
    consumer.start()
    assert sorted(inbox.bodies(3)) == sent
    consumer.stop()
    consumer.start()  # a restart: the unacknowledged dead letters come again
    again = inbox.take(3)
    assert sorted(d.envelope.body for d in again) == sent
    assert all(d.redelivered for d in again)
    for delivery in again:
        delivery.ack()
    consumer.stop()
    producer.send_to_queue(dead_letters, envelope(event, "marker")).result(WAIT)
    reader = Inbox()
    later = make()
    later.subscribe(dead_letters, reader)
    later.start()
    assert reader.bodies(1) == ["marker"]  # the acknowledged ones are gone


def test_requeued_dead_letter_stays_in_the_dead_letter_queue(make: Factory) -> None:
    # on ActiveMQ the requeue is a copy sent the way send_to_queue sends
    event, group = names()
    live = Subscription(event, group, durable=True)
    live_inbox, dead_inbox = Inbox(), Inbox(ack=False)
    consumer = make()
    consumer.subscribe(live, live_inbox)
    consumer.subscribe(live.dead_letter(), dead_inbox)
    consumer.start()
    original = envelope(event, "dead", attempt="3")
    consumer.send_to_queue(live.dead_letter(), original).result(WAIT)
    (first,) = dead_inbox.take()
    first.reject(requeue=True)
    (second,) = dead_inbox.take()
    assert second.redelivered is True
    assert (second.envelope.body, second.envelope.headers) == (original.body, original.headers)
    second.ack()
    send_all(consumer, [envelope(event, "live")])
    assert live_inbox.bodies(1) == ["live"]


def test_requeues_just_before_stop_are_neither_lost_nor_doubled(make: Factory) -> None:
    # ActiveMQ requeues by copy: stop must also write the ACKs of the originals, which the
    # copies' RECEIPTs release while it flushes
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    inbox = Inbox(ack=False)
    consumer = make()
    consumer.subscribe(subscription, inbox)
    consumer.start()
    sent = [str(i) for i in range(50)]
    send_all(consumer, [envelope(event, body) for body in sent])
    deliveries = inbox.take(50)
    consumer.pause()  # a graceful shutdown: no new deliveries, then settle, then stop
    for delivery in deliveries:
        delivery.reject(requeue=True)
    consumer.stop()
    reader = Inbox()
    later = make()
    later.subscribe(subscription, reader)
    later.start()
    bodies = reader.bodies(50)
    assert sorted(bodies, key=int) == [str(i) for i in range(50)]
    send_all(later, [envelope(event, "marker")])
    assert reader.bodies(1) == ["marker"]  # nothing came twice


def test_send_to_queue_of_a_per_process_group_on_rabbitmq(make_rabbitmq: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True, per_process=True)
    inbox = Inbox()
    provider = make_rabbitmq()
    provider.subscribe(subscription, inbox)
    provider.start()
    provider.send_to_queue(subscription, envelope(event, "retry")).result(WAIT)
    assert inbox.bodies(1) == ["retry"]


def test_send_to_queue_of_a_per_process_group_fails_clearly_on_activemq(
    make_activemq: Factory,
) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True, per_process=True)
    inbox = Inbox()
    provider = make_activemq()
    provider.subscribe(subscription, inbox)
    provider.start()
    refused = provider.send_to_queue(subscription, envelope(event, "retry"))
    with pytest.raises(ProviderError, match="no queue of its own") as caught:
        refused.result(WAIT)
    assert "Hint:" in str(caught.value)
    send_all(provider, [envelope(event, "still works")])
    assert inbox.bodies(1) == ["still works"]


def test_send_to_queue_before_start_and_after_stop_fails_clearly(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    provider = make()
    before = provider.send_to_queue(subscription, envelope(event))
    provider.start()
    provider.stop()
    after = provider.send_to_queue(subscription, envelope(event))
    for future in (before, after):
        with pytest.raises(ProviderConnectionError) as caught:
            future.result(0)  # failed at once, no waiting for a timeout
        message = str(caught.value)
        assert "not started" in message
        assert "NOT sent" in message
        assert "Hint:" in message


def test_clone_is_an_independent_unstarted_copy(make: Factory) -> None:
    event, group = names()
    original = make(max_in_flight=7, per_process_expiry=42.0, stop_timeout=3.0)
    twin = original.clone()
    try:
        assert isinstance(twin, StompProvider)
        assert twin is not original
        assert twin.server_name == original.server_name
        assert twin._link.settings == original._link.settings
        assert twin._expiry_ms == 42000
        assert "guest" not in repr(twin)
        with pytest.raises(ProviderConnectionError, match="not started"):
            twin.send(envelope(event), True).result(0)
        inboxes = {"original": Inbox(), "twin": Inbox()}
        original.subscribe(Subscription(event, group + "-o", durable=True), inboxes["original"])
        original.start()
        twin.subscribe(Subscription(event, group + "-t", durable=True), inboxes["twin"])
        twin.start()
        assert len(twin._members) == 1  # none of the original's members
        send_all(twin, [envelope(event, "one")])
        assert inboxes["original"].bodies(1) == ["one"]
        assert inboxes["twin"].bodies(1) == ["one"]
    finally:
        twin.stop()
    send_all(original, [envelope(event, "two")])
    assert inboxes["original"].bodies(1) == ["two"]  # untouched by its clone's stop
