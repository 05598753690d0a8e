"""Retries, dead letters, poison messages and idempotency, on every provider x broker."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from aspyx_event import DeadLetters, Envelope, RetryPolicy, Subscription
from aspyx_event.dead_letters import DEAD_LETTER_LISTENER
from aspyx_event.envelope import ATTEMPT
from tests.contract.harness import (
    BrokerTarget,
    ListenerSpec,
    Member,
    payload_event,
    raw_send,
    start_member,
    unique,
)
from tests.waiting import eventually

FAST = RetryPolicy(attempts=3, delay=0.05, jitter=0.0)


def dead_letters(target: BrokerTarget, event_type: type, group: str, expected: int) -> list[Any]:
    """The group's dead letters, waiting (up to 30 s) until `expected` are there."""
    reader, found = DeadLetters(target.provider(unique("reader")), wait=0.5), []

    def enough() -> bool:  # each list() itself waits until the queue was quiet for 0.5 s
        found[:] = reader.list(event_type.__aspyx_event__.name, group)
        return len(found) >= expected

    eventually(enough, 30, interval=0)
    return found


def test_a_listener_failing_twice_succeeds_on_the_third_attempt(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event(durable=True)

    def fail_twice(_event: Any, attempt: int) -> None:
        if attempt < 3:
            raise RuntimeError(f"attempt {attempt} fails")

    spec = ListenerSpec(event_type, unique("flaky"), behaviour=fail_twice, retry=FAST)
    member = start_member(target, [spec])
    members.append(member)
    member.send(event_type(1, "x"))
    received = member.take(1)[0]
    assert received.redelivered_count == 2
    assert received.headers[ATTEMPT] == "3", "the attempt number travels in a header"
    assert [member.errors.get(timeout=10)[0] for _ in range(2)] == ["RuntimeError"] * 2
    with pytest.raises(queue.Empty):
        member.received.get(timeout=0.5)  # processed once, acknowledged


def test_the_last_failure_goes_to_the_dead_letters_and_a_redrive_delivers_it(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event(durable=True)
    group, broken = unique("broken"), threading.Event()
    broken.set()

    def fail_while_broken(_event: Any, attempt: int) -> None:
        if broken.is_set():
            raise ValueError(f"still broken at attempt {attempt}")

    spec = ListenerSpec(event_type, group, behaviour=fail_while_broken, retry=FAST)
    member = start_member(target, [spec])
    members.append(member)
    member.send(event_type(5, "doomed"))
    [letter] = dead_letters(target, event_type, group, 1)
    assert letter.reason == "failed" and letter.attempts == 3
    assert letter.error == "ValueError: still broken at attempt 3"
    assert letter.envelope.headers["trace"] == f"sent-by-{member.name}", "original headers kept"
    assert letter.envelope.headers[DEAD_LETTER_LISTENER] == group
    assert [member.errors.get(timeout=10)[0] for _ in range(3)] == ["ValueError"] * 3
    assert len(dead_letters(target, event_type, group, 1)) == 1, "listing removes nothing"

    broken.clear()  # the fix is deployed: re-drive
    redriven = DeadLetters(target.provider(unique("redrive")), wait=0.5)
    assert redriven.redrive(event_type.__aspyx_event__.name, group) == 1
    received = member.take(1)[0]
    assert received.event == event_type(5, "doomed")
    assert ATTEMPT not in received.headers, "a re-drive starts again at the first attempt"
    assert dead_letters(target, event_type, group, 0) == []


def test_a_retry_waiting_for_its_delay_does_not_hold_back_other_messages(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event(durable=True)

    def first_fails_once(event_instance: Any, attempt: int) -> None:
        if event_instance.n == 0 and attempt == 1:
            raise RuntimeError("retry me later")

    slow_retry = RetryPolicy(attempts=2, delay=2.0, jitter=0.0)
    spec = ListenerSpec(event_type, unique("patient"), behaviour=first_fails_once, retry=slow_retry)
    member = start_member(target, [spec])
    members.append(member)
    for n in range(6):
        member.send(event_type(n, "x"))
    order = [r.event.n for r in member.take(6)]
    assert order[-1] == 0 and sorted(order) == list(range(6)), order


def test_poison_messages_become_dead_letters_at_once_and_the_consumer_goes_on(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event(durable=True)
    group, name = unique("picky"), event_type.__aspyx_event__.name
    member = start_member(target, [ListenerSpec(event_type, group, retry=FAST)])
    members.append(member)
    raw_send(target, name, "{this is not json")
    raw_send(target, name, '{"n": "not a number", "text": 3}')
    wrong_event = Envelope('{"n": 1, "text": "x"}', {"event-name": "Other", "event-id": "w-1"})
    member.manager.provider.send_to_queue(Subscription(name, group, True), wrong_event).result(30)
    raw_send(target, name, '{"n": 8, "text": "valid, from another producer"}')
    member.send(event_type(7, "valid"))
    assert sorted(r.event.n for r in member.take(2)) == [7, 8]
    letters = dead_letters(target, event_type, group, 3)
    assert [letter.reason for letter in letters] == ["poison"] * 3
    assert all(letter.attempts == 1 for letter in letters), "poison is never retried"
    assert all("DecodeError" in letter.error for letter in letters)
    assert any("'Other'" in letter.error for letter in letters), "the wrong event is named"


def test_an_idempotent_listener_processes_a_duplicate_message_once(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type = payload_event(durable=True)
    spec = ListenerSpec(event_type, unique("once"), idempotent=True)
    member = start_member(target, [spec])
    members.append(member)
    name = event_type.__aspyx_event__.name
    headers = {"event-id": unique("id"), "event-name": name, "content-type": "application/json"}
    for _ in range(2):  # the same message id twice, as a producer's retry would send it
        member.manager.provider.send(Envelope('{"n": 1, "text": "x"}', dict(headers)), True)
    member.send(event_type(2, "other"))
    assert sorted(r.event.n for r in member.take(2)) == [1, 2]
    with pytest.raises(queue.Empty):
        member.received.get(timeout=1.0)


def test_a_per_process_listener_retries_and_dead_letters_too(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type, name = payload_event(durable=True), unique("mine")

    def always_fails(_event: Any, attempt: int) -> None:
        raise RuntimeError(f"attempt {attempt}")

    policy = RetryPolicy(attempts=2, delay=0.05, jitter=0.0)
    spec = ListenerSpec(event_type, name, per_process=True, behaviour=always_fails, retry=policy)
    member = start_member(target, [spec])
    members.append(member)
    member.send(event_type(3, "x"))
    [letter] = dead_letters(target, event_type, f"{name}-{member.name}", 1)
    assert (letter.reason, letter.attempts) == ("failed", 2)
    assert [member.errors.get(timeout=10)[0] for _ in range(2)] == ["RuntimeError"] * 2
