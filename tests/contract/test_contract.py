"""The contract every provider keeps, on every broker (see aspyx_event/provider.py)."""

from __future__ import annotations

import queue
import time
from collections import Counter
from typing import Any

import pytest

from tests.contract.harness import (
    BrokerTarget,
    ListenerSpec,
    Member,
    Received,
    payload_event,
    raw_send,
    start_member,
    unique,
)


def test_body_and_headers_arrive_intact(target: BrokerTarget, members: list[Member]) -> None:
    event_type = payload_event()
    member = start_member(target, [ListenerSpec(event_type, unique("L"))])
    members.append(member)
    member.send(event_type(1, "plain"))
    received = member.take(1)[0]
    assert received.event == event_type(1, "plain")
    headers = received.headers
    assert headers["trace"] == f"sent-by-{member.name}", "a pipeline header travels over the wire"
    assert headers["event-name"] == event_type.__aspyx_event__.name
    assert headers["content-type"] == "application/json"
    assert headers["event-id"] and headers["event-timestamp"].isdigit()
    # the local and AMQP providers run callbacks on delivery threads of their own
    # (inline_dispatch); for STOMP the manager hands off to the listener's worker thread
    prefixes = {"": "local-", "amqp": "amqp-delivery-", "stomp": "listener-"}
    expected_thread = prefixes[target.url.split(":", 1)[0] if target.url else ""]
    assert received.thread.startswith(expected_thread), (
        f"sync listeners run on a worker thread, not on a broker I/O thread: {received.thread}"
    )


def test_unicode_and_a_one_megabyte_payload(target: BrokerTarget, members: list[Member]) -> None:
    event_type = payload_event()
    member = start_member(target, [ListenerSpec(event_type, unique("L"))])
    members.append(member)
    text = 'ünïcødé ✓ 漢字 🚀 "quotes" \\ \n'
    big = ("0123456789abcdef" * 65536)[: 1024 * 1024]
    member.send(event_type(1, text))
    member.send(event_type(2, big))
    by_n = {r.event.n: r.event.text for r in member.take(2)}
    assert by_n == {1: text, 2: big}


def test_every_group_receives_every_event(target: BrokerTarget, members: list[Member]) -> None:
    event_type = payload_event()
    first, second = unique("billing"), unique("audit")
    member = start_member(
        target, [ListenerSpec(event_type, first), ListenerSpec(event_type, second)]
    )
    members.append(member)
    for n in range(50):
        member.send(event_type(n, "x"))
    received = member.take(100)
    assert Counter(r.listener for r in received) == {first: 50, second: 50}
    assert {r.event.n for r in received if r.listener == first} == set(range(50))


def test_members_of_one_group_compete(target: BrokerTarget, members: list[Member]) -> None:
    event_type = payload_event()
    group = unique("workers")
    both: queue.Queue[Received] = queue.Queue()

    def work(_event: Any, _attempt: int) -> None:
        time.sleep(0.001)  # a listener doing I/O: lets the other member's thread run

    spec = ListenerSpec(event_type, group, behaviour=work)
    one = start_member(target, [spec], prefetch=1, received=both)
    two = start_member(target, [spec], prefetch=1, received=both)
    members.extend([one, two])
    count = 1000
    for n in range(count):
        one.send(event_type(n, "x"))
    seen = [both.get(timeout=30) for _ in range(count)]
    assert sorted(r.event.n for r in seen) == list(range(count)), "each event exactly once"
    assert {r.member for r in seen} == {one.name, two.name}, "both members took a share"
    with pytest.raises(queue.Empty):
        both.get(timeout=0.5)  # and nothing more


def test_per_process_listeners_each_see_every_event(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event()
    name = unique("cache-invalidator")
    one = start_member(target, [ListenerSpec(event_type, name, per_process=True)])
    two = start_member(target, [ListenerSpec(event_type, name, per_process=True)])
    members.extend([one, two])
    for n in range(30):
        one.send(event_type(n, "x"))
    assert sorted(r.event.n for r in one.take(30)) == list(range(30))
    assert sorted(r.event.n for r in two.take(30)) == list(range(30))


def test_durable_events_wait_for_an_offline_group(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event(durable=True)
    group = unique("offline")
    first = start_member(target, [ListenerSpec(event_type, group)])
    first.stop()  # the group's queue exists; nobody consumes now
    sender = start_member(target, [])
    members.append(sender)
    for n in range(40):
        sender.send(event_type(n, "kept"))
    later = start_member(target, [ListenerSpec(event_type, group)])
    members.append(later)
    assert sorted(r.event.n for r in later.take(40)) == list(range(40))


def test_a_failing_listener_gets_the_message_again(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event()

    def fail_first_attempt(_event: Any, attempt: int) -> None:
        if attempt == 1:
            raise RuntimeError("first attempt fails")

    member = start_member(
        target, [ListenerSpec(event_type, unique("fragile"), behaviour=fail_first_attempt)]
    )
    members.append(member)
    for n in range(5):
        member.send(event_type(n, "x"))
    received = member.take(5)
    assert sorted(r.event.n for r in received) == list(range(5)), "nothing lost"
    assert all(r.redelivered_count == 1 for r in received), "each came back after failing"
    assert [member.errors.get(timeout=10)[0] for _ in range(5)] == ["RuntimeError"] * 5


def test_a_malformed_body_is_reported_and_the_consumer_goes_on(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event()
    member = start_member(target, [ListenerSpec(event_type, unique("L"))])
    members.append(member)
    raw_send(target, event_type.__aspyx_event__.name, "{this is not json")
    member.send(event_type(7, "after"))
    assert member.take(1)[0].event == event_type(7, "after")
    assert member.errors.get(timeout=30)[0] == "DecodeError"


def test_durable_events_survive_a_broker_restart(
    broker_target: BrokerTarget, members: list[Member]
) -> None:
    target = broker_target
    event_type = payload_event(durable=True)
    group = unique("restart")
    consumer = start_member(target, [ListenerSpec(event_type, group)])
    consumer.stop()
    sender = start_member(target, [])
    for n in range(20):
        sender.send(event_type(n, "before restart"))
    sender.stop()
    target.restart_broker()
    later = start_member(target, [ListenerSpec(event_type, group)])
    members.append(later)
    assert sorted(r.event.n for r in later.take(20, timeout=60)) == list(range(20))
    later.send(event_type(99, "after restart"))
    assert later.take(1, timeout=60)[0].event.n == 99
