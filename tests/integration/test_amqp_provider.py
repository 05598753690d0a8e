"""AMQPProvider against the real RabbitMQ (AMQP 1.0 on 127.0.0.1:5672, management on 15672).

Every test uses its own event and group names, so tests can share the broker with others. The
outage tests restart or kill RabbitMQ with ``scripts/brokers.sh``. Broker tests fail instead
of skipping when ``BROKERS_REQUIRED=1``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from proton import Message
from proton.utils import BlockingConnection

import aspyx_event.providers
from aspyx_event.envelope import Envelope
from aspyx_event.errors import (
    MissingProviderLibraryError,
    ProviderConfigurationError,
    ProviderConnectionError,
    ProviderError,
    SendTimeoutError,
)
from aspyx_event.provider import Delivery, Subscription
from aspyx_event.providers.amqp import AMQPProvider
from tests.integration.inbox import Inbox
from tests.integration.tls_support import TLSListeners, make_certificates, tls_listeners
from tests.waiting import all_reachable

REPO = Path(__file__).resolve().parents[2]
HOST, PORT, MANAGEMENT = "127.0.0.1", 5672, 15672
WAIT = 30.0


@pytest.fixture(autouse=True)
def _broker_gate(request: pytest.FixtureRequest) -> None:
    """Overrides the shared gate: these tests need only RabbitMQ, and wait out its restarts."""
    # another test may be restarting RabbitMQ right now
    if request.node.get_closest_marker("broker") is None or all_reachable((PORT, MANAGEMENT), 90):
        return
    message = f"RabbitMQ is not reachable on {HOST}:{PORT} and {MANAGEMENT}"
    if os.environ.get("BROKERS_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message + ". Hint: bash scripts/brokers.sh start")


Factory = Callable[..., AMQPProvider]


@pytest.fixture
def make() -> Iterator[Factory]:
    """Creates providers for RabbitMQ (``broker="auto"``) and stops them after the test."""
    made: list[AMQPProvider] = []

    def factory(**options: object) -> AMQPProvider:
        settings: dict[str, object] = {
            "connect_timeout": 20.0,
            "send_timeout": WAIT,
            "reconnect_max_delay": 1.0,
        }
        settings.update(options)
        provider = AMQPProvider(
            f"node-{uuid.uuid4().hex[:6]}",
            HOST,
            PORT,
            "guest",
            "guest",
            **settings,  # type: ignore[arg-type]
        )
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        provider.stop()


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"amqp-test-{tag}", f"group-{tag}"


def send_all(provider: AMQPProvider, event: str, bodies: list[str]) -> None:
    futures = [provider.send(Envelope.create(body, event), durable=True) for body in bodies]
    for future in futures:
        future.result(WAIT)


def brokers(command: str) -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "brokers.sh"), command], check=True)


def management(path: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://{HOST}:{MANAGEMENT}{path}",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, object] = json.load(response)
        return result


@pytest.mark.broker
def test_round_trip_keeps_body_and_headers(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    receiver, sender = make(), make()
    receiver.subscribe(Subscription(event, group, durable=True), inbox)
    receiver.start()
    sender.start()
    small = Envelope.create('{"text": "Grüße, 世界 🚀 \\u0000"}', event)
    small.set("session", "s-ü-1")
    small.set("empty", "")
    large = Envelope.create("ab€😀" * 250_000, event, content_type="text/plain")
    for envelope in (small, large):
        sender.send(envelope, durable=True).result(WAIT)
    received = inbox.take(2)
    for envelope, delivery in zip((small, large), received, strict=True):
        assert delivery.envelope.body == envelope.body
        assert delivery.envelope.headers == envelope.headers
        assert delivery.redelivered is False
    assert len(received[1].envelope.body) == 1_000_000


@pytest.mark.broker
def test_every_group_gets_every_event(make: Factory) -> None:
    event, group = names()
    first, second = Inbox(), Inbox()
    provider = make()
    provider.subscribe(Subscription(event, group + "-a", durable=True), first)
    provider.subscribe(Subscription(event, group + "-b", durable=True), second)
    provider.start()
    bodies = [f"event {i}" for i in range(20)]
    send_all(provider, event, bodies)
    assert sorted(first.bodies(20)) == sorted(bodies)
    assert sorted(second.bodies(20)) == sorted(bodies)


@pytest.mark.broker
def test_members_of_one_group_compete(make: Factory) -> None:
    event, group = names()
    one, two = Inbox(), Inbox()
    member_one, member_two, sender = make(), make(), make()
    member_one.subscribe(Subscription(event, group, durable=True), one)
    member_two.subscribe(Subscription(event, group, durable=True), two)
    for provider in (member_one, member_two, sender):
        provider.start()
    bodies = [f"event {i}" for i in range(40)]
    send_all(sender, event, bodies)
    got: dict[str, list[str]] = {"one": [], "two": []}
    deadline = time.monotonic() + WAIT
    while sum(map(len, got.values())) < 40 and time.monotonic() < deadline:
        for name, inbox in (("one", one), ("two", two)):
            with contextlib.suppress(queue.Empty):
                got[name].append(inbox.deliveries.get(timeout=0.05).envelope.body)
    assert sorted(got["one"] + got["two"]) == sorted(bodies)  # each event exactly once
    assert got["one"] and got["two"]  # both members took a share
    assert one.nothing_within(0.5) and two.nothing_within(0.1)


@pytest.mark.broker
def test_durable_events_wait_for_a_member(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    first = make()
    first.subscribe(subscription, Inbox())
    first.start()
    first.stop()  # the group's queue exists, no member is attached
    sender = make()
    sender.start()
    bodies = [f"waiting {i}" for i in range(10)]
    send_all(sender, event, bodies)
    inbox = Inbox()
    late = make()
    late.subscribe(subscription, inbox)
    late.start()
    assert inbox.bodies(10) == bodies


@pytest.mark.broker
def test_reject_requeue_redelivers_and_reject_drops(make: Factory) -> None:
    event, group = names()
    inbox = Inbox(ack=False)
    provider = make()
    provider.subscribe(Subscription(event, group, durable=True, prefetch=1), inbox)
    provider.start()
    send_all(provider, event, ["first"])
    (delivery,) = inbox.take()
    assert (delivery.envelope.body, delivery.redelivered) == ("first", False)
    delivery.reject(requeue=True)
    (again,) = inbox.take()
    assert (again.envelope.body, again.redelivered) == ("first", True)
    again.reject(requeue=False)
    again.ack()  # settling twice is a no-op
    send_all(provider, event, ["second"])
    (after,) = inbox.take()
    assert after.envelope.body == "second"  # "first" was dropped, not requeued
    after.ack()


@pytest.mark.broker
def test_unsettled_delivery_of_a_stopped_member_goes_to_another(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    holding, other = Inbox(ack=False), Inbox()
    first = make()
    first.subscribe(subscription, holding)
    first.start()
    send_all(first, event, ["held"])
    (held,) = holding.take()
    second = make()
    second.subscribe(subscription, other)
    second.start()
    assert other.nothing_within(0.5)  # still held by the first member
    first.stop()
    (delivery,) = other.take()
    assert (delivery.envelope.body, delivery.redelivered) == ("held", True)
    held.ack()  # settling on a closed connection is a safe no-op


@pytest.mark.broker
def test_pause_stops_dispatching_and_keeps_messages(make: Factory) -> None:
    event, group = names()
    subscription = Subscription(event, group, durable=True)
    paused_inbox, other = Inbox(), Inbox()
    first = make()
    first.subscribe(subscription, paused_inbox)
    first.start()
    first.pause()
    send_all(first, event, ["a", "b", "c"])
    assert paused_inbox.nothing_within(1.0)
    second = make()
    second.subscribe(subscription, other)
    second.start()
    first.stop()  # whatever the paused member held returns to the queue
    assert sorted(other.bodies(3)) == ["a", "b", "c"]
    assert paused_inbox.deliveries.empty()


@pytest.mark.broker
def test_failing_callback_and_foreign_bodies_do_not_stop_the_consumer(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    calls = 0

    def callback(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("listener bug")  # the provider requeues the delivery
        inbox(delivery)

    provider = make()
    provider.subscribe(Subscription(event, group, durable=True), callback)
    provider.start()
    connection = BlockingConnection(f"amqp://{HOST}:{PORT}", user="guest", password="guest")
    try:
        raw = connection.create_sender(f"/topic/{event}")
        raw.send(Message(body=b"\x00\xffbin", durable=True))
        raw.send(Message(body=42, durable=True, properties={"n": 7}))
    finally:
        connection.close()
    send_all(provider, event, ["good"])
    received = {d.envelope.body: d for d in inbox.take(3)}  # the requeued one may come last
    assert sorted(received) == sorted(["\x00\ufffdbin", "42", "good"])
    assert received["\x00\ufffdbin"].redelivered is True
    assert received["42"].envelope.headers == {"n": "7"}


@pytest.mark.broker
def test_pipelined_durable_sends_all_arrive(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    window = 200
    provider = make(max_in_flight=window)
    provider.subscribe(Subscription(event, group, durable=True, prefetch=500), inbox)
    provider.start()
    futures: list[Future[None]] = []
    awaiting: list[int] = []

    def observe(future: Future[None]) -> None:
        if len(awaiting) < 50:
            awaiting.append(sum(1 for f in futures if f.running()))

    for i in range(2000):
        future = provider.send(Envelope.create(f"m{i}", event), durable=True)
        futures.append(future)
    for future in futures[::40]:
        future.add_done_callback(observe)
    for future in futures:
        future.result(WAIT)
    assert sorted(inbox.bodies(2000, timeout=60)) == sorted(f"m{i}" for i in range(2000))
    # handed to the link but not yet confirmed: several at once, never more than the window
    assert max(awaiting) > 1
    assert max(awaiting) <= window


@pytest.mark.broker
@pytest.mark.parametrize(("durable", "count"), [(False, 2000), (True, 500)])
def test_stop_flushes_every_accepted_send(make: Factory, durable: bool, count: int) -> None:
    event, group = names()
    inbox = Inbox()
    consumer, sender = make(), make()
    consumer.subscribe(Subscription(event, group, durable=True, prefetch=500), inbox)
    consumer.start()
    sender.start()
    bodies = [f"sent before stop {i}" for i in range(count)]
    futures = [sender.send(Envelope.create(body, event), durable=durable) for body in bodies]
    sender.stop()  # at once: nothing was awaited, the sender link does not even exist yet
    assert [future.exception(0) for future in futures] == [None] * count
    assert sorted(inbox.bodies(count, timeout=60)) == sorted(bodies)
    assert inbox.nothing_within(0.5)


@pytest.mark.broker
def test_stop_timeout_fails_what_is_left_and_warns_once(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    event, group = names()
    inbox = Inbox()
    consumer, sender = make(), make(stop_timeout=0.001)
    consumer.subscribe(Subscription(event, group, durable=True, prefetch=500), inbox)
    consumer.start()
    sender.start()
    futures = [sender.send(Envelope.create(f"m{i}", event), durable=True) for i in range(3000)]
    with caplog.at_level("WARNING", logger="aspyx_event.providers"):
        sender.stop()
    failed = [future.exception(0) for future in futures if future.exception(0) is not None]
    assert failed, "3,000 durable sends cannot all be confirmed within 1 ms"
    assert all(isinstance(error, ProviderError) for error in failed)
    assert all("stop_timeout of 0.001 s passed" in str(error) for error in failed)
    (warning,) = [r for r in caplog.records if "the provider stopped" in r.getMessage()]
    assert f"stopped with {len(failed)} sends failed" in warning.getMessage()
    confirmed = {f"m{i}" for i, future in enumerate(futures) if future.exception(0) is None}
    received: set[str] = set()
    while not confirmed <= received:  # every confirmed send arrived (unconfirmed ones may too)
        received.update(inbox.bodies(1))


@pytest.mark.broker
def test_stop_keeps_the_queue_for_the_next_start(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    provider, sender = make(), make()
    provider.subscribe(Subscription(event, group, durable=True), inbox)
    provider.start()
    provider.stop()
    sender.start()
    send_all(sender, event, ["while stopped 1", "while stopped 2"])
    provider.start()
    assert inbox.bodies(2) == ["while stopped 1", "while stopped 2"]


@pytest.mark.broker
def test_per_process_queue_expires(make: Factory) -> None:
    event, group = names()
    provider = make(per_process_expiry=42.5)
    subscription = Subscription(event, f"{group}-{provider.server_name}", per_process=True)
    provider.subscribe(subscription, Inbox())
    provider.start()
    queue_name = urllib.parse.quote(subscription.queue, safe="")
    described = management(f"/api/queues/%2F/{queue_name}")
    assert described["arguments"] == {"x-expires": 42500}
    assert described["durable"] is True
    shared = Subscription(event, group, durable=True)
    provider.subscribe(shared, Inbox())
    assert (
        management(f"/api/queues/%2F/{urllib.parse.quote(shared.queue, safe='')}")["arguments"]
        == {}
    )


@pytest.mark.broker
def test_durable_events_survive_a_restart_and_the_provider_resubscribes(make: Factory) -> None:
    event, group = names()
    holding = Inbox(ack=False)
    consumer, sender = make(), make()
    consumer.subscribe(Subscription(event, group, durable=True), holding)
    consumer.start()
    sender.start()
    before = [f"before {i}" for i in range(5)]
    send_all(sender, event, before)
    stale = holding.take(5)  # delivered, never settled: they must survive the restart
    brokers("restart-rabbitmq")
    for delivery in stale:
        delivery.ack()  # from the dropped connection: a no-op
    again = holding.take(5, timeout=60)
    assert sorted(d.envelope.body for d in again) == sorted(before)
    assert all(d.redelivered for d in again)
    for delivery in again:
        delivery.ack()
    send_all(sender, event, ["after"])  # the sender reconnected by itself too
    (after,) = holding.take()
    assert after.envelope.body == "after"
    after.ack()


@pytest.mark.broker
def test_send_while_the_broker_is_down_times_out(make: Factory) -> None:
    event, group = names()
    inbox = Inbox()
    provider = make(send_timeout=1.5)
    provider.subscribe(Subscription(event, group, durable=True), inbox)
    provider.start()
    brokers("kill-rabbitmq")
    try:
        future = provider.send(Envelope.create("lost?", event), durable=True)
        with pytest.raises(SendTimeoutError) as caught:
            future.result(WAIT)
    finally:
        brokers("start")
    message = str(caught.value)
    assert f"{HOST}:{PORT}" in message and "unreachable" in message
    assert "Hint:" in message
    deadline = time.monotonic() + 60
    while True:  # the provider reconnects by itself; sends work again
        try:
            provider.send(Envelope.create("back", event), durable=True).result(WAIT)
            break
        except SendTimeoutError:
            assert time.monotonic() < deadline
    assert inbox.bodies(1, timeout=60) == ["back"]


@pytest.mark.broker
def test_wrong_password_fails_start_without_revealing_it() -> None:
    provider = AMQPProvider("node", HOST, PORT, "guest", "wrong-pw", connect_timeout=20.0)
    with pytest.raises(ProviderConnectionError, match="refused user 'guest'") as caught:
        provider.start()
    assert "wrong-pw" not in str(caught.value) and "Hint:" in str(caught.value)


@pytest.mark.broker
def test_tls_against_a_plain_port_fails_start() -> None:
    provider = AMQPProvider("node", HOST, PORT, "guest", "guest", tls=True, connect_timeout=2.0)
    with pytest.raises(ProviderConnectionError, match="SSL"):
        provider.start()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSListeners]:
    """RabbitMQ's TLS listeners (see `tls_support`) for this module's TLS tests."""
    if not all_reachable((PORT, MANAGEMENT), 90):
        pytest.fail(f"RabbitMQ is not reachable on {HOST}:{PORT} and {MANAGEMENT}")
    with tls_listeners(make_certificates(tmp_path_factory.mktemp("tls"))) as listeners:
        yield listeners


@pytest.mark.broker
@pytest.mark.parametrize("host", [HOST, "localhost"])
def test_a_refused_certificate_fails_start_at_once_and_says_why(
    tls: TLSListeners, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Trusting another CA is a permanent error: no retries for connect_timeout, no warnings."""
    tls.ensure()
    provider = AMQPProvider(
        "node",
        host,
        tls.ports.amqp,
        "guest",
        "guest",
        tls=True,
        ca_file=str(tls.certificates.other_ca.cert),
        management_port=tls.ports.management,
        connect_timeout=60.0,
    )
    began = time.monotonic()
    with caplog.at_level("INFO"), pytest.raises(ProviderConnectionError) as caught:
        provider.start()
    assert time.monotonic() - began < 10  # not the 60 s of connect_timeout
    message = str(caught.value)
    assert f"certificate of the AMQP broker at {host}:{tls.ports.amqp} was not accepted" in message
    assert "certificate verify failed" in message
    assert "Hint: check ca_file" in message and "start the broker" not in message
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [t for t in threading.enumerate() if t.name == "aspyx-amqp"] == []


@pytest.mark.broker
def test_verify_hostname_checks_an_ip_address_against_the_certificate(tls: TLSListeners) -> None:
    """IP:127.0.0.1 in the certificate passes; the same chain for another name does not."""
    tls.ensure()
    options: dict[str, Any] = {
        "tls": True,
        "ca_file": str(tls.certificates.ca.cert),
        "management_port": tls.ports.management,
        "connect_timeout": 20.0,
    }
    event, group = names()
    inbox = Inbox()
    good = AMQPProvider("node", HOST, tls.ports.amqp, "guest", "guest", **options)
    good.subscribe(Subscription(event, group, durable=True), inbox)
    try:
        good.start()
        send_all(good, event, ["verified by IP"])
        assert inbox.bodies(1) == ["verified by IP"]
    finally:
        good.stop()
    wrong = AMQPProvider("node", HOST, tls.ports.amqp_wrong_name, "guest", "guest", **options)
    with pytest.raises(ProviderConnectionError, match="certificate verify failed"):
        wrong.start()


@pytest.mark.broker
def test_a_refused_management_certificate_fails_start_at_once(tls: TLSListeners) -> None:
    """The management API (HTTPS with tls=True) presenting another name's certificate."""
    tls.ensure()
    provider = AMQPProvider(
        "node",
        "localhost",
        tls.ports.amqp,
        "guest",
        "guest",
        tls=True,
        ca_file=str(tls.certificates.ca.cert),
        management_port=tls.ports.amqp_wrong_name,  # a TLS listener: the handshake fails first
        connect_timeout=60.0,
    )
    event, group = names()
    provider.subscribe(Subscription(event, group, per_process=True), Inbox())
    began = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        provider.start()
    assert time.monotonic() - began < 10
    message = str(caught.value)
    assert "certificate of RabbitMQ's management API" in message and "not accepted" in message
    assert "Hint: check ca_file" in message


def test_start_without_broker_names_the_address() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        free_port = probe.getsockname()[1]
    provider = AMQPProvider("node", HOST, free_port, "guest", "secret-pw", connect_timeout=1.0)
    with pytest.raises(ProviderConnectionError) as caught:
        provider.start()
    message = str(caught.value)
    assert f"{HOST}:{free_port}" in message and "Hint:" in message
    assert "secret-pw" not in message
    assert provider.send(Envelope.create("x", "E"), durable=True).exception(WAIT) is not None
    assert [t for t in threading.enumerate() if t.name == "aspyx-amqp"] == []


def test_unknown_broker_name_is_a_configuration_error() -> None:
    with pytest.raises(ProviderConfigurationError, match="artemis, rabbitmq"):
        AMQPProvider("node", broker="qpidd")


def test_module_imports_without_proton_and_explains_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = "import sys; sys.modules['proton'] = None; import aspyx_event.providers.amqp"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    monkeypatch.setitem(sys.modules, "proton", None)
    monkeypatch.delitem(sys.modules, "aspyx_event.providers._proton", raising=False)
    monkeypatch.delattr(aspyx_event.providers, "_proton", raising=False)
    with pytest.raises(MissingProviderLibraryError, match=r"aspyx-messaging\[amqp\]"):
        AMQPProvider("node")
