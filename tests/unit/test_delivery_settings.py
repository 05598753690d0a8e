"""Retry policies, concurrency, configuration and bad input at send time (local provider)."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from aspyx_di import ConfigurationManager, DictSource, Environment, module
from aspyx_event import (
    EventDefinitionError,
    EventListener,
    EventManager,
    EventModule,
    HeaderError,
    MessageTooLargeError,
    RetryPolicy,
    event_listener,
)
from aspyx_event.retry import Scheduler, attempt_of
from tests.contract.harness import BrokerTarget, ListenerSpec, Member, payload_event, start_member
from tests.contract.harness import unique as unique_name


def test_retry_delays_grow_exponentially_up_to_the_maximum_with_jitter() -> None:
    policy = RetryPolicy(attempts=10, delay=0.5, multiplier=3.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay_before(n) for n in range(2, 6)] == [0.5, 1.5, 4.5, 5.0]
    jittery = RetryPolicy(delay=1.0, jitter=0.2)
    delays = {jittery.delay_before(2) for _ in range(50)}
    assert len(delays) > 1 and all(0.8 <= d <= 1.2 for d in delays)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"attempts": 0}, "attempts=0"),
        ({"delay": -1}, "delay=-1"),
        ({"multiplier": 0.5}, "multiplier=0.5"),
        ({"jitter": 2}, "jitter=2"),
        ({"attempts": "3"}, "attempts='3'"),
    ],
)
def test_an_invalid_retry_policy_names_the_problem(options: dict[str, Any], named: str) -> None:
    with pytest.raises(EventDefinitionError, match=named) as caught:
        RetryPolicy(**options)
    assert "Hint:" in str(caught.value)


def test_invalid_listener_limits_are_rejected_at_decoration() -> None:
    event_type = payload_event()
    for option in ({"concurrency": 0}, {"prefetch": -5}, {"retry": 3}):
        with pytest.raises(EventDefinitionError, match="Hint:"):
            event_listener(event_type, **option)  # type: ignore[arg-type]


def test_the_attempt_header_is_read_defensively() -> None:
    assert attempt_of({}) == 1
    assert attempt_of({"event-attempt": "4"}) == 4
    assert attempt_of({"event-attempt": "nonsense"}) == 1


def test_the_scheduler_runs_work_in_due_order() -> None:
    scheduler, ran, done = Scheduler("test"), [], threading.Event()
    scheduler.call_later(0.2, lambda: (ran.append("late"), done.set()))
    scheduler.call_later(0.05, lambda: ran.append("early"))
    assert done.wait(5)
    assert ran == ["early", "late"]
    scheduler.close()
    scheduler.call_later(0, lambda: ran.append("after close"))
    assert scheduler.pending() == 0


def test_concurrency_runs_that_many_deliveries_of_a_sync_listener_at_once(
    members: list[Member],
) -> None:
    event_type, barrier = payload_event(), threading.Barrier(4, timeout=10)

    def meet(_event: Any, _attempt: int) -> None:
        barrier.wait()  # breaks (and fails the test) unless 4 deliveries run at the same time

    spec = ListenerSpec(event_type, unique_name("wide"), behaviour=meet, concurrency=4)
    member = start_member(BrokerTarget("local", ""), [spec])
    members.append(member)
    for n in range(8):
        member.send(event_type(n, "x"))
    assert sorted(r.event.n for r in member.take(8)) == list(range(8))
    assert member.errors.empty()


def test_an_oversized_event_is_refused_and_nothing_is_sent(members: list[Member]) -> None:
    event_type = payload_event()
    member = start_member(BrokerTarget("local", ""), [ListenerSpec(event_type, unique_name("L"))])
    members.append(member)
    member.manager.max_message_size = 1000
    with pytest.raises(MessageTooLargeError, match="max_message_size") as caught:
        member.send(event_type(1, "é" * 600))  # 1,200 bytes in UTF-8
    assert caught.value.size > 1000 and "Hint:" in str(caught.value)
    member.send(event_type(2, "é" * 400))  # 800 bytes: fine
    assert member.take(1)[0].event.n == 2
    with pytest.raises(queue.Empty):
        member.received.get(timeout=0.3)


def test_a_non_string_header_is_refused_naming_it(members: list[Member]) -> None:
    event_type = payload_event()
    member = start_member(BrokerTarget("local", ""), [ListenerSpec(event_type, unique_name("L"))])
    members.append(member)
    manager = member.manager

    class Numbering:
        def send(self, envelope: Any, descriptor: Any) -> None:
            envelope.headers["sequence"] = 42

        def handle(self, envelope: Any, listener: Any) -> None:
            pass

    manager._pipelines = (*manager._pipelines, Numbering())  # type: ignore[assignment]
    with pytest.raises(HeaderError, match=r"'sequence'.*int") as caught:
        member.send(event_type(1, "x"))
    assert "str(value)" in str(caught.value)
    with pytest.raises(queue.Empty):
        member.received.get(timeout=0.3)


class _Flaky(EventListener[Any]):
    def on(self, event: Any) -> None:  # never runs: only its configuration matters here
        raise AssertionError


def test_retry_policies_and_limits_come_from_configuration() -> None:
    event_type = payload_event()
    event_listener(event_type, name="Billing", retry=RetryPolicy(attempts=9))(_Flaky)

    @module(imports=[EventModule])
    class App:
        pass

    settings = {
        "event": {
            "prefetch": 7,
            "max_message_size": 4096,
            "retry": {"attempts": 5, "delay": 0.25},
            "listeners": {"billing": {"retry": {"attempts": 2}}},  # as env vars arrive: lower
        }
    }
    environment = Environment(App, configuration=ConfigurationManager(DictSource(settings)))
    try:
        manager = environment.get(EventManager)
        assert manager.prefetch == 7 and manager.max_message_size == 4096
        assert manager.retry == RetryPolicy(attempts=5, delay=0.25)
        assert manager._retry_for("Billing") == RetryPolicy(attempts=2, delay=0.25)
        assert manager._retry_for("Shipping") is None
    finally:
        environment.shutdown()
