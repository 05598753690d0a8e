"""StompProvider outages, shutdown, per-process groups and configuration errors (real brokers)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
import stomp

from aspyx_event.errors import (
    ProviderConfigurationError,
    ProviderConnectionError,
    ProviderError,
    SendTimeoutError,
)
from aspyx_event.provider import Delivery, Subscription
from aspyx_event.providers import _stomp_session
from aspyx_event.providers.stomp import StompProvider
from tests.integration.stomp.support import *


def test_send_while_the_broker_is_down_times_out(
    make: Factory, proxy: Proxy, outages: Outages
) -> None:
    event, _ = names()
    provider = make(proxy.port, send_timeout=1.0)
    provider.start()
    proxy.close()
    assert outages.lost.wait(WAIT)
    for durable in (True, False):
        future = provider.send(envelope(event), durable)
        with pytest.raises(SendTimeoutError) as caught:
            future.result(WAIT)
        assert f"127.0.0.1:{proxy.port}" in str(caught.value)
        assert "NOT sent" in str(caught.value)


def test_reconnects_and_resubscribes_after_a_lost_connection(
    make: Factory, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    event, group = names()
    caplog.set_level(logging.DEBUG)
    inbox = Inbox(ack=False)
    consumer = make(proxy.port)
    consumer.subscribe(Subscription(event, group, durable=True), inbox)
    consumer.start()
    producer = make()
    producer.start()
    send_all(producer, [envelope(event, "before")])
    (before,) = inbox.take()
    proxy.cut()
    (again,) = inbox.take()  # redelivered on the new connection after re-subscribing
    assert again.envelope.body == "before"
    assert again.redelivered is True
    before.ack()  # from the dropped connection: must be a harmless no-op
    again.ack()
    send_all(producer, [envelope(event, "after")])
    (after,) = inbox.take()
    assert after.envelope.body == "after"
    after.ack()
    ours = [r for r in caplog.records if r.name.startswith("aspyx_event.providers")]
    assert len([r for r in ours if r.levelno == logging.WARNING]) == 1
    assert any(r.levelno == logging.INFO and "reconnected" in r.getMessage() for r in ours)
    assert all(f"passcode:{PASSWORD}" not in r.getMessage() for r in caplog.records)
    assert any("passcode:*" in r.getMessage() for r in caplog.records)  # stomp.py's frame dump


def test_heartbeats_detect_a_silent_connection(
    make: Factory, proxy: Proxy, outages: Outages
) -> None:
    event, group = names()
    inbox = Inbox()
    consumer = make(proxy.port, heartbeat_ms=500)
    consumer.subscribe(Subscription(event, group, durable=True), inbox)
    consumer.start()
    proxy.freeze()  # no FIN, no RST: only missing heart-beats reveal it
    assert outages.lost.wait(WAIT)
    producer = make()
    producer.start()
    send_all(producer, [envelope(event, "after silence")])
    assert inbox.bodies(1) == ["after silence"]


def test_durable_events_survive_a_broker_restart(make: Factory, broker: Broker) -> None:
    event, group = names()
    offline = Subscription(event, group + "-offline", durable=True)
    online_inbox = Inbox()
    first = make()
    first.subscribe(offline, Inbox())
    first.start()
    first.stop()
    online = make()
    online.subscribe(Subscription(event, group + "-online", durable=True), online_inbox)
    online.start()
    producer = make()
    producer.start()
    send_all(producer, [envelope(event, f"before-{i}") for i in range(20)])
    assert len(online_inbox.take(20)) == 20
    brokers_sh(f"restart-{broker.name}")
    brokers_sh("start")
    send_all(producer, [envelope(event, f"after-{i}") for i in range(20)])
    assert sorted(online_inbox.bodies(20)) == sorted(f"after-{i}" for i in range(20))
    offline_inbox = Inbox()
    back = make()
    back.subscribe(offline, offline_inbox)
    back.start()
    expected = sorted([f"before-{i}" for i in range(20)] + [f"after-{i}" for i in range(20)])
    assert sorted(offline_inbox.bodies(40)) == expected


def test_pipelined_durable_sends(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(Subscription(event, group, durable=True, prefetch=500), inbox)
    consumer.start()
    producer = make(max_in_flight=100)
    producer.start()
    link = producer._link
    peak = [0]

    def sample(_: Future[None]) -> None:
        peak[0] = max(peak[0], len(link._session.receipts))

    futures = [producer.send(envelope(event, str(i)), True) for i in range(2000)]
    for future in futures:
        future.add_done_callback(sample)
    for future in futures:
        future.result(WAIT)
    assert 10 < peak[0] <= 100  # many in flight, never more than the window
    assert sorted(inbox.bodies(2000, timeout=60), key=int) == [str(i) for i in range(2000)]


def test_stop_flushes_accepted_non_durable_sends(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(Subscription(event, group, durable=True, prefetch=500), inbox)
    consumer.start()
    producer = make()
    producer.start()
    futures = [producer.send(envelope(event, str(i)), False) for i in range(2000)]
    producer.stop()  # at once: most of them are still queued for the I/O thread
    assert [f.exception(0) for f in futures] == [None] * 2000
    assert sorted(inbox.bodies(2000, timeout=60), key=int) == [str(i) for i in range(2000)]


def test_stop_waits_for_the_receipts_of_durable_sends(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(Subscription(event, group, durable=True, prefetch=500), inbox)
    consumer.start()
    producer = make(max_in_flight=100)  # stop() also waits for room in the window
    producer.start()
    futures = [producer.send(envelope(event, str(i)), True) for i in range(500)]
    producer.stop()
    assert [f.exception(0) for f in futures] == [None] * 500  # all confirmed by the broker
    assert sorted(inbox.bodies(500), key=int) == [str(i) for i in range(500)]


def test_stop_fails_what_it_could_not_flush_and_warns_once(
    make: Factory, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    event, _ = names()
    provider = make(proxy.port, stop_timeout=1.0, max_in_flight=10, heartbeat_ms=0)
    provider.start()
    proxy.freeze()  # frames are written, but no RECEIPT ever comes back
    caplog.set_level(logging.WARNING, logger="aspyx_event.providers")
    futures = [provider.send(envelope(event, str(i)), True) for i in range(50)]
    provider.stop()
    errors = [f.exception(0) for f in futures]
    assert all(isinstance(e, ProviderError) and "stopped" in str(e) for e in errors)
    assert sum("NOT sent" in str(e) for e in errors) == 40  # waited for room in the window
    warnings = [r.getMessage() for r in caplog.records if "not flushed" in r.getMessage()]
    assert len(warnings) == 1
    assert "50 send(s)" in warnings[0]
    with pytest.raises(ProviderConnectionError, match="not started"):
        provider.send(envelope(event), False).result(0)


def test_per_process_queue_keeps_events_and_expires_on_rabbitmq(make_rabbitmq: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    producer = make_rabbitmq()
    producer.start()
    provider = make_rabbitmq(per_process_expiry=60.0)
    provider.subscribe(Subscription(event, group, durable=True, per_process=True), inbox)
    provider.subscribe(Subscription(event, group + "-shared", durable=True), Inbox())
    provider.start()
    assert rabbitmq_queue(f"{event}::{group}")["arguments"] == {"x-expires": 60000}
    assert rabbitmq_queue(f"{event}::{group}-shared")["arguments"] == {}
    assert rabbitmq_queue(f"{event}::{group}")["durable"] is True
    provider.stop()  # until x-expires runs out, the queue keeps the events for this process
    send_all(producer, [envelope(event, "while offline")])
    provider.start()
    assert inbox.bodies(1) == ["while offline"]


def test_per_process_groups_leave_nothing_behind_on_activemq(make_activemq: Factory) -> None:
    event, group = names()
    producer = make_activemq()
    producer.start()
    shared = make_activemq()  # the control: a shared group's queue keeps what it missed
    shared.subscribe(Subscription(event, group + "-shared", durable=True), Inbox())
    shared.start()
    shared.stop()
    inboxes = {"a": Inbox(), "b": Inbox()}
    members = [make_activemq() for _ in inboxes]
    for member, (name, inbox) in zip(members, inboxes.items(), strict=True):
        member.subscribe(Subscription(event, f"{group}-{name}", True, per_process=True), inbox)
        member.start()
    send_all(producer, [envelope(event, str(i)) for i in range(50)])
    for inbox in inboxes.values():  # each per-process group receives every event
        assert sorted(inbox.bodies(50), key=int) == [str(i) for i in range(50)]
    for member in members:
        member.stop()
    send_all(producer, [envelope(event, "after")])
    peek = Peek(ACTIVEMQ.port)
    try:
        assert peek.first_in(f"/queue/Consumer.{group}-shared.{event}") == "0"
        for name in inboxes:  # no Consumer.G.E queue collected anything for them
            assert peek.first_in(f"/queue/Consumer.{group}-{name}.{event}") == "marker"
    finally:
        peek.close()


def test_per_process_reject_hands_the_delivery_out_again_on_activemq(
    make_activemq: Factory,
) -> None:
    event, group = names()
    inbox = Inbox(ack=False)
    provider = make_activemq()
    subscription = Subscription(event, group, durable=True, per_process=True, prefetch=1)
    provider.subscribe(subscription, inbox)
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
    second.ack()
    send_all(provider, [envelope(event, "next")])
    (third,) = inbox.take()  # with prefetch 1 only after the broker got the ACK
    assert third.envelope.body == "next"
    third.reject(requeue=False)
    send_all(provider, [envelope(event, "last")])
    (fourth,) = inbox.take()
    assert fourth.envelope.body == "last"
    fourth.ack()
    assert inbox.deliveries.empty()  # nothing came twice


def test_foreign_messages_are_delivered_and_do_not_stop_the_consumer(
    make: Factory, broker: Broker
) -> None:
    event, group = names()
    inbox = Inbox()
    consumer = make()
    consumer.subscribe(Subscription(event, group, durable=True), inbox)
    consumer.start()
    raw = stomp.Connection12([("127.0.0.1", broker.port)], vhost="/", reconnect_attempts_max=100)
    raw.connect("guest", "guest", wait=True)
    try:
        raw.send(f"/topic/{event}", "not json at all <>")
        raw.send(f"/topic/{event}", b"\xff\xfe\x00binary", headers={"content-type": "x/bin"})
    finally:
        raw.disconnect()
    first, second = inbox.take(2)
    assert first.envelope.body == "not json at all <>"
    assert first.envelope.event_name == ""
    assert second.envelope.content_type == "x/bin"
    assert second.envelope.body.endswith("binary")
    producer = make()
    producer.start()
    send_all(producer, [envelope(event, "ours")])
    assert inbox.bodies(1) == ["ours"]


def test_failing_callback_does_not_stop_the_receiver(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    calls = [0]

    def flaky(delivery: Delivery) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("listener bug")
        inbox(delivery)

    provider = make()
    provider.subscribe(Subscription(event, group, durable=True), flaky)
    provider.start()
    send_all(provider, [envelope(event, "one"), envelope(event, "two")])
    assert inbox.bodies(1) == ["two"]


def test_names_with_dots_and_wildcards(make: Factory) -> None:
    event, group = names()
    shared, own = Inbox(), Inbox()
    provider = make()
    odd = f"{group}.a*b>c,d-host.example.com"
    provider.subscribe(Subscription(event, odd, durable=True), shared)
    provider.subscribe(Subscription(event, odd + "-pp", per_process=True), own)
    provider.start()
    send_all(provider, [envelope(event, "dotted")])
    assert shared.bodies(1) == ["dotted"]
    assert own.bodies(1) == ["dotted"]


def test_explicit_broker_and_subscribe_after_start(make: Factory, broker: Broker) -> None:
    event, group = names()
    inbox = Inbox()
    provider = make(broker=broker.name)
    provider.start()
    provider.subscribe(Subscription(event, group, durable=True), inbox)
    send_all(provider, [envelope(event, "late")])
    assert inbox.bodies(1) == ["late"]


def test_refused_subscription_raises_and_the_others_keep_working_on_rabbitmq(
    make_rabbitmq: Factory,
) -> None:
    # only RabbitMQ refuses a SUBSCRIBE whose queue exists with other arguments
    event, group = names()
    owner = make_rabbitmq()
    owner.subscribe(Subscription(event, group, durable=True), Inbox())
    owner.start()
    inbox = Inbox()
    provider = make_rabbitmq()
    provider.subscribe(Subscription(event, group + "-fine", durable=True), inbox)
    provider.start()
    with pytest.raises(ProviderError, match="inequivalent arg 'durable'"):
        provider.subscribe(Subscription(event, group, durable=False), Inbox())
    send_all(provider, [envelope(event, "still works")])  # after the broker closed the link
    assert inbox.bodies(1) == ["still works"]


def test_durable_send_refused_by_the_broker_fails_on_rabbitmq(make_rabbitmq: Factory) -> None:
    # ActiveMQ accepts any topic name
    event, group = names()
    inbox = Inbox()
    provider = make_rabbitmq()
    provider.subscribe(Subscription(event, group, durable=True), inbox)
    provider.start()
    refused = provider.send(envelope(f"{event}/bad"), True)
    with pytest.raises(ProviderError, match="Invalid destination"):
        refused.result(WAIT)
    send_all(provider, [envelope(event, "fine")])  # the link reconnected by itself
    assert inbox.bodies(1) == ["fine"]


def test_tls_to_a_plain_port_fails_cleanly(make: Factory, broker: Broker) -> None:
    provider = make(tls=True, connect_timeout=2.0)
    with pytest.raises(ProviderConnectionError, match=f"127.0.0.1:{broker.port}"):
        provider.start()


def test_start_fails_with_a_clear_error(make: Factory) -> None:
    with socket.create_server(("127.0.0.1", 0)) as blocker:
        port = blocker.getsockname()[1]
    provider = make(port, connect_timeout=1.0)
    with pytest.raises(ProviderConnectionError) as caught:
        provider.start()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "Hint:" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_refused_login_is_reported_without_the_password_on_rabbitmq() -> None:
    # the test ActiveMQ accepts any login
    provider = StompProvider(
        "n", "127.0.0.1", RABBITMQ.port, "guest", "wrong-secret", connect_timeout=2.0
    )
    with pytest.raises(ProviderConnectionError) as caught:
        provider.start()
    assert "wrong-secret" not in str(caught.value)
    assert "refused" in str(caught.value).lower() or "denied" in str(caught.value).lower()


def test_configuration_errors() -> None:
    with pytest.raises(ProviderConfigurationError, match="rabbitmq"):
        StompProvider("n", broker="kafka")
    with pytest.raises(ProviderConfigurationError, match="tls=True"):
        StompProvider("n", ca_file="/tmp/ca.pem")


def test_importable_without_stomp_py() -> None:
    code = (
        "import sys; sys.modules['stomp'] = None\n"
        "from aspyx_event.providers.stomp import StompProvider\n"
        "from aspyx_event.errors import MissingProviderLibraryError\n"
        "try:\n    StompProvider('n')\nexcept MissingProviderLibraryError as e:\n"
        "    print('missing', e.library)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "missing stomp.py"
    assert vars(_stomp_session)["stomp"] is stomp  # `import stomp` there is the library
    assert "aspyx_event" not in str(Path(stomp.__file__).resolve())
