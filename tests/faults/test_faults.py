"""Fault injection on the real brokers: each scenario counts unique event ids at the end and
asserts that none is missing (see the README's "Delivery guarantees").

1. `kill -9` the broker in the middle of 5,000 durable events, restart it: every group gets
   all 5,000 (an idempotent group exactly once).
2. `kill -9` one of two competing consumer processes mid-stream: the group gets every event.
3. Malformed and schema-invalid messages injected with the raw client libraries between
   valid ones: every valid event is delivered, every bad one is a dead letter with a reason.
4. Listeners failing their first two attempts succeed on the third; the always-failing ones
   end in the dead letters after the configured attempts and are delivered after a re-drive.
5. SIGTERM to a consumer process during a steady stream: its in-flight deliveries complete,
   nothing is lost and nothing is processed twice.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aspyx_event import DeadLetters, RetryPolicy
from tests.contract.harness import (
    ROOT,
    BrokerTarget,
    ListenerSpec,
    Member,
    payload_event,
    raw_send_many,
    start_member,
    unique,
)
from tests.integration.mp_worker import payload_type
from tests.integration.test_multiprocess import counts, start_worker
from tests.waiting import wait_until

pytestmark = pytest.mark.broker


class Tally:
    """Counts the event numbers a member's listeners received, per listener name."""

    def __init__(self, member: Member) -> None:
        self.member, self.seen = member, Counter[tuple[str, int]]()

    def drain(self, wait: float = 0.0) -> Counter[tuple[str, int]]:
        """Count what arrived; with `wait`, also what arrives until `wait` s pass quietly."""
        with contextlib.suppress(queue.Empty):
            while True:
                received = (
                    self.member.received.get(timeout=wait)
                    if wait
                    else (self.member.received.get_nowait())
                )
                self.seen[(received.listener, received.event.n)] += 1
        return self.seen

    def numbers(self, listener: str) -> set[int]:
        return {n for (name, n) in self.drain() if name == listener}

    def wait_numbers(self, listener: str, expected: set[int], timeout: float) -> None:
        """Block on the member's queue until `listener` saw exactly the numbers `expected`."""
        deadline = time.monotonic() + timeout
        while (seen := self.numbers(listener)) != expected:
            try:
                received = self.member.received.get(timeout=max(0, deadline - time.monotonic()))
            except queue.Empty:
                missing = sorted(expected - seen)[:10]
                raise AssertionError(
                    f"after {timeout:g} s {listener} misses {missing}..."
                ) from None
            self.seen[(received.listener, received.event.n)] += 1


def brokers(command: str) -> None:
    script = ROOT / "scripts" / "brokers.sh"
    subprocess.run(["bash", str(script), command], check=True, timeout=180)


def test_1_broker_killed_mid_stream(target: BrokerTarget, members: list[Member]) -> None:
    total, event_type = 5000, payload_event(durable=True)
    plain, once = unique("plain"), unique("once")
    consumer = start_member(
        target, [ListenerSpec(event_type, plain), ListenerSpec(event_type, once, idempotent=True)]
    )
    # a broker recovering from kill -9 may take 30 s and more: the sends wait for it
    patient = BrokerTarget(target.name, f"{target.url}&send_timeout=120", target.restart)
    sender = start_member(patient, [])
    members += [consumer, sender]
    tally, errors = Tally(consumer), list[BaseException]()
    progress, a_third_sent = itertools.count(1), threading.Event()

    def send(numbers: range) -> None:
        for n in numbers:
            try:
                sender.send(event_type(n, "x"))  # resends itself after a connection loss
                if next(progress) == total // 3:
                    a_third_sent.set()
            except Exception as error:  # reported below: a send must never fail silently
                errors.append(error)

    threads = [threading.Thread(target=send, args=(range(k, total, 4),)) for k in range(4)]
    for thread in threads:
        thread.start()
    assert a_third_sent.wait(120), "a third of the sends"
    brokers(target.restart.replace("restart", "kill"))
    brokers("start")
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, f"sends failed: {errors[:3]}"
    everything = set(range(total))
    tally.wait_numbers(plain, everything, 180)
    tally.wait_numbers(once, everything, 60)
    seen = tally.drain(wait=2.0)  # late duplicates would show up now
    assert all(seen[(once, n)] == 1 for n in range(total)), "idempotent: exactly once"


def test_2_consumer_process_killed(
    target: BrokerTarget,
    tmp_path: Path,
    workers: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total, event_name, group = 1000, unique("Killed"), unique("G")
    outs = [tmp_path / "w0.txt", tmp_path / "w1.txt"]
    monkeypatch.setenv("MP_WORK_MS", "5")
    monkeypatch.setenv("MP_DURABLE", "1")
    workers += [start_worker(target.url, event_name, f"w{i}", outs[i], group) for i in (0, 1)]
    sender = _sender(target, event_name)
    for n in range(total):
        send_payload(sender, n)
    wait_until(lambda: sum(counts(outs[0]).values()) >= 100, 60, "worker 0 to get going")
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait(timeout=30)
    sender.stop()

    def union() -> set[int]:
        return {n for out in outs for (_name, n) in counts(out)}

    wait_until(lambda: union() == set(range(total)), 120, "every event processed by the group")


def _sender(target: BrokerTarget, event_name: str) -> Member:
    """A member without listeners; `send_payload(member, n)` sends durable `Payload(n)`."""
    member = start_member(target, [])
    member.payload = payload_type(event_name, durable=True)  # type: ignore[attr-defined]
    return member


def send_payload(member: Member, n: int) -> None:
    member.send(member.payload(n))  # type: ignore[attr-defined]


def test_3_poison_messages_between_valid_ones(target: BrokerTarget, members: list[Member]) -> None:
    event_type, group = payload_event(durable=True), unique("picky")
    name = event_type.__aspyx_event__.name  # type: ignore[attr-defined]
    member = start_member(target, [ListenerSpec(event_type, group)])
    members.append(member)
    bodies: list[str] = []
    for n in range(300):
        bodies.append(json.dumps({"n": n, "text": "valid"}))
        if n % 3 == 0:
            bodies.append("{malformed " + str(n))
            bodies.append(json.dumps({"n": f"not a number {n}", "text": 0}))
    raw_send_many(target, name, bodies)
    tally = Tally(member)
    listener = group
    tally.wait_numbers(listener, set(range(300)), 120)
    reader = DeadLetters(target.provider(unique("reader")), wait=1.0)
    wait_until(lambda: len(reader.list(name, group)) >= 200, 60, "200 dead letters")
    letters = reader.list(name, group)
    assert len(letters) == 200
    assert Counter(letter.reason for letter in letters) == {"poison": 200}
    assert all("DecodeError" in letter.error for letter in letters)


def test_4_retries_then_dead_letters_then_redrive(
    target: BrokerTarget, members: list[Member]
) -> None:
    event_type, group, fixed = payload_event(durable=True), unique("retrying"), threading.Event()

    def behaviour(event_instance: Any, attempt: int) -> None:
        doomed = event_instance.n % 10 == 0 and not fixed.is_set()
        if doomed or attempt <= 2:
            raise RuntimeError(f"attempt {attempt} of {event_instance.n} fails")

    policy = RetryPolicy(attempts=3, delay=0.2, jitter=0.5)
    spec = ListenerSpec(event_type, group, behaviour=behaviour, retry=policy)
    member = start_member(target, [spec])
    members.append(member)
    for n in range(50):
        member.send(event_type(n, "x"))
    tally, healthy = Tally(member), {n for n in range(50) if n % 10}
    tally.wait_numbers(group, healthy, 120)
    reader = DeadLetters(target.provider(unique("reader")), wait=1.0)
    name = event_type.__aspyx_event__.name  # type: ignore[attr-defined]
    wait_until(lambda: len(reader.list(name, group)) >= 5, 60, "5 dead letters")
    letters = reader.list(name, group)
    assert sorted(json.loads(letter.envelope.body)["n"] for letter in letters) == [
        0,
        10,
        20,
        30,
        40,
    ]
    assert {(letter.reason, letter.attempts) for letter in letters} == {("failed", 3)}
    fixed.set()
    assert reader.redrive(name, group) == 5
    tally.wait_numbers(group, set(range(50)), 60)
    assert reader.list(name, group) == []


def test_5_sigterm_during_a_steady_stream(
    target: BrokerTarget,
    tmp_path: Path,
    workers: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total, event_name, group = 600, unique("Steady"), unique("G")
    outs = [tmp_path / "first.txt", tmp_path / "second.txt"]
    monkeypatch.setenv("MP_WORK_MS", "10")
    monkeypatch.setenv("MP_DURABLE", "1")
    workers.append(start_worker(target.url, event_name, "first", outs[0], group))
    sender = _sender(target, event_name)
    stream = threading.Thread(target=_steady, args=(sender, total, 200.0))
    stream.start()
    wait_until(lambda: sum(counts(outs[0]).values()) >= 150, 60, "the first worker")
    workers[0].send_signal(signal.SIGTERM)
    assert workers[0].wait(timeout=60) == 0, "a graceful shutdown exits normally"
    workers.append(start_worker(target.url, event_name, "second", outs[1], group))
    stream.join(timeout=120)
    sender.stop()
    wait_until(
        lambda: len(counts(outs[0]) + counts(outs[1])) == total, 120, "every event processed"
    )
    both = counts(outs[0]) + counts(outs[1])
    assert {n for (_name, n) in both} == set(range(total)), "nothing lost"
    assert max(both.values()) == 1, "nothing processed twice"


def _steady(sender: Member, total: int, rate: float) -> None:
    started = time.monotonic()
    for n in range(total):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send_payload(sender, n)
