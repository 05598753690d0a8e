"""AMQPProvider's `send_to_queue`, dead-letter queues and `clone` against the real RabbitMQ.

The fixtures (`make`, the RabbitMQ-only broker gate) and helpers come from
`test_amqp_provider`; every test uses its own event and group names.
"""

from __future__ import annotations

import urllib.parse

import pytest

from aspyx_event.envelope import Envelope
from aspyx_event.errors import ProviderError
from aspyx_event.provider import Subscription
from aspyx_event.providers.amqp import AMQPProvider
from tests.integration import test_amqp_provider as shared
from tests.integration.inbox import Inbox
from tests.integration.test_amqp_provider import (
    HOST,
    PORT,
    WAIT,
    Factory,
    brokers,
    management,
    names,
    send_all,
)
from tests.waiting import wait_until

make = shared.make  # the fixture making providers, stopped after the test
_broker_gate = shared._broker_gate  # the autouse gate: RabbitMQ only, waits out its restarts


def described(queue: str) -> dict[str, object]:
    """RabbitMQ's description of `queue` (the management API)."""
    return management(f"/api/queues/%2F/{urllib.parse.quote(queue, safe='')}")


def bindings(queue: str) -> list[tuple[str, str]]:
    """(exchange, routing key) of every binding of `queue`, the default exchange's too."""
    path = f"/api/queues/%2F/{urllib.parse.quote(queue, safe='')}/bindings"
    found: list[dict[str, str]] = management(path)  # type: ignore[assignment]  # a JSON list
    return sorted((b["source"], b["routing_key"]) for b in found)


@pytest.mark.broker
def test_send_to_queue_reaches_only_that_group(make: Factory) -> None:
    event, group = names()
    chosen, other = Subscription(event, group, durable=True), Subscription(event, group + "-b")
    chosen_inbox, other_inbox, dead_inbox = Inbox(), Inbox(), Inbox()
    provider = make()
    provider.subscribe(chosen, chosen_inbox)
    provider.subscribe(other, other_inbox)
    provider.subscribe(chosen.dead_letter(), dead_inbox)
    provider.start()
    envelope = Envelope.create('{"retry": "Grüße 🚀"}', event)
    envelope.set("x-attempt", "2")
    provider.send_to_queue(chosen, envelope).result(WAIT)
    (delivery,) = chosen_inbox.take()
    assert delivery.envelope.body == envelope.body
    assert delivery.envelope.headers == envelope.headers
    assert other_inbox.nothing_within(1.0)  # the other group of the event got nothing
    assert dead_inbox.nothing_within(0.1)
    send_all(provider, event, ["an event"])  # events still reach both groups, not the DLQ
    assert chosen_inbox.bodies(1) == other_inbox.bodies(1) == ["an event"]
    assert dead_inbox.nothing_within(0.5)


@pytest.mark.broker
def test_send_to_queue_declares_a_group_nobody_consumes_with_its_dead_letter_queue(
    make: Factory,
) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    sender = make()
    sender.start()  # subscribes nothing: the group's queues do not exist yet
    sender.send_to_queue(subscription, Envelope.create("first", event)).result(WAIT)
    sender.send_to_queue(subscription.dead_letter(), Envelope.create("dead", event)).result(WAIT)
    assert bindings(subscription.queue) == [("", subscription.queue), ("amq.topic", event)]
    dead_letters = described(subscription.dead_letter().queue)
    assert (dead_letters["durable"], dead_letters["arguments"]) == (True, {})
    assert bindings(subscription.dead_letter().queue) == [("", f"{event}::{group}.dlq")]
    send_all(sender, event, ["second"])  # the queue is a real group queue: bound to the event
    inbox, dead_inbox = Inbox(), Inbox()
    consumer = make()
    consumer.subscribe(subscription, inbox)
    consumer.subscribe(subscription.dead_letter(), dead_inbox)
    consumer.start()
    assert inbox.bodies(2) == ["first", "second"]
    assert dead_inbox.bodies(1) == ["dead"]


@pytest.mark.broker
def test_a_group_gets_a_dead_letter_queue_that_never_expires(make: Factory) -> None:
    event, group = names()
    provider = make(per_process_expiry=30.0)
    per_process = Subscription(event, f"{group}-{provider.server_name}", per_process=True)
    provider.subscribe(per_process, Inbox())
    provider.start()
    assert described(per_process.queue)["arguments"] == {"x-expires": 30000}
    dead_letters = described(per_process.dead_letter().queue)
    assert (dead_letters["durable"], dead_letters["arguments"]) == (True, {})
    assert dead_letters["auto_delete"] is False
    assert [source for source, _ in bindings(per_process.dead_letter().queue)] == [""]


@pytest.mark.broker
def test_send_to_queue_takes_an_existing_queue_as_it_is(make: Factory) -> None:
    """A re-drive knows only event and group: the per-process queue keeps its x-expires."""
    event, group = names()
    inbox = Inbox()
    consumer = make(per_process_expiry=30.0)
    per_process = Subscription(event, group, per_process=True)
    consumer.subscribe(per_process, inbox)
    consumer.start()
    sender = make()
    sender.start()
    sender.send_to_queue(Subscription(event, group), Envelope.create("back", event)).result(WAIT)
    assert inbox.bodies(1) == ["back"]
    assert described(per_process.queue)["arguments"] == {"x-expires": 30000}


@pytest.mark.broker
def test_dead_letters_survive_a_consumer_restart(make: Factory) -> None:
    event, group = names()
    dead_letters = Subscription(event, group, durable=True).dead_letter()
    sender = make()
    sender.start()
    for body in ("poison 1", "poison 2"):
        sender.send_to_queue(dead_letters, Envelope.create(body, event)).result(WAIT)
    holding = Inbox(ack=False)
    reader = make()
    reader.subscribe(dead_letters, holding)
    reader.start()
    first = holding.take(2)
    assert [(d.envelope.body, d.redelivered) for d in first] == [
        ("poison 1", False),
        ("poison 2", False),
    ]
    reader.stop()  # never acknowledged: both go back to the dead-letter queue
    inbox = Inbox()
    again = make()
    again.subscribe(dead_letters, inbox)
    again.start()
    second = inbox.take(2)
    assert [(d.envelope.body, d.redelivered) for d in second] == [
        ("poison 1", True),
        ("poison 2", True),
    ]
    assert inbox.nothing_within(0.5)


@pytest.mark.broker
def test_stop_flushes_a_send_to_queue_whose_queue_is_still_being_declared(
    make: Factory,
) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    sender = make()
    sender.start()
    futures = [
        sender.send_to_queue(subscription, Envelope.create(f"m{i}", event)) for i in range(50)
    ]
    sender.stop()  # at once: the queue's declaration (HTTP) has not even started yet
    assert [future.exception(0) for future in futures] == [None] * 50
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(subscription, inbox)
    consumer.start()
    assert inbox.bodies(50) == [f"m{i}" for i in range(50)]


@pytest.mark.broker
def test_send_to_queue_during_an_outage_is_sent_after_the_reconnect(make: Factory) -> None:
    """The queue is declared again on the new connection before the parked send goes out."""
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    sender = make(send_timeout=90.0)
    sender.start()
    sender.send_to_queue(subscription, Envelope.create("before", event)).result(WAIT)
    brokers("kill-rabbitmq")
    try:
        handler = sender._bridge.handler  # else the send may go out on the dead socket
        wait_until(lambda: not handler.connected, WAIT, "the provider to notice the broker died")
        during = sender.send_to_queue(subscription, Envelope.create("during", event))
        with pytest.raises(TimeoutError):
            during.result(1.0)  # waits for the broker, neither sent nor failed
    finally:
        brokers("start")
    during.result(90)
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(subscription, inbox)
    consumer.start()
    assert inbox.bodies(2) == ["before", "during"]


@pytest.mark.broker
def test_send_to_queue_fails_clearly_unless_started(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    provider = make()
    before = provider.send_to_queue(subscription, Envelope.create("too early", event))
    provider.start()
    provider.stop()
    after = provider.send_to_queue(subscription.dead_letter(), Envelope.create("too late", event))
    for future, queue in ((before, subscription.queue), (after, f"{event}::{group}.dlq")):
        error = future.exception(WAIT)
        assert isinstance(error, ProviderError)
        message = str(error)
        assert f"nothing was sent to queue {queue}" in message
        assert "not started or already stopped" in message and "Hint:" in message


@pytest.mark.broker
def test_clone_connects_independently(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    original = make(per_process_expiry=12.0, max_in_flight=7)
    clone = original.clone()
    assert isinstance(clone, AMQPProvider) and clone is not original
    assert clone.server_name == original.server_name
    inbox = Inbox()
    clone.subscribe(subscription, inbox)
    try:
        clone.start()  # the original is not started: the clone has its own connection
        original.start()
        original.send_to_queue(subscription, Envelope.create("via the original", event)).result(
            WAIT
        )
        assert inbox.bodies(1) == ["via the original"]
        clone.stop()
        send_all(original, event, ["the original still works"])
    finally:
        clone.stop()
    again = original.clone()
    again.subscribe(subscription, inbox)
    try:
        again.start()
        assert inbox.bodies(1) == ["the original still works"]
    finally:
        again.stop()


def test_clone_keeps_every_argument_and_repr_hides_the_password() -> None:
    original = AMQPProvider(
        "node", HOST, PORT, "alice", "s3cret-pw", broker="rabbitmq", send_timeout=3.5
    )
    clone = original.clone()
    assert clone._arguments == original._arguments  # every constructor argument
    assert clone._arguments.values["send_timeout"] == 3.5
    for text in (repr(original), repr(clone), repr(clone._arguments), repr(clone._settings)):
        assert "s3cret-pw" not in text
    assert repr(clone) == f"AMQPProvider('node', '{HOST}', {PORT}, broker='rabbitmq', tls=False)"
