"""`python -m aspyx_event.dead_letters`: list and re-drive dead letters from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from aspyx_event import RetryPolicy
from tests.contract.harness import (
    ROOT,
    BrokerTarget,
    ListenerSpec,
    Member,
    payload_event,
    start_member,
    unique,
)
from tests.faults.test_faults import Tally
from tests.waiting import wait_until

pytestmark = pytest.mark.broker


def command(target: BrokerTarget, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "aspyx_event.dead_letters", "--provider", target.url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_command_lists_and_redrives(target: BrokerTarget, members: list[Member]) -> None:
    event_type, group, fixed = payload_event(durable=True), unique("cli"), threading.Event()

    def fails_until_fixed(_event: Any, _attempt: int) -> None:
        if not fixed.is_set():
            raise KeyError("customer 42")

    policy = RetryPolicy(attempts=2, delay=0.05, jitter=0.0)
    spec = ListenerSpec(event_type, group, behaviour=fails_until_fixed, retry=policy)
    member = start_member(target, [spec])
    members.append(member)
    member.send(event_type(42, "x"))
    name = event_type.__aspyx_event__.name  # type: ignore[attr-defined]

    def listed() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            command(target, "--wait", "0.5", "list", name, group)
        )
        return found

    wait_until(lambda: len(listed()) == 1, 60, "the dead letter")
    [letter] = listed()
    assert letter["headers"]["dead-letter-error"] == "KeyError"
    assert letter["headers"]["dead-letter-attempts"] == "2"
    assert json.loads(letter["body"]) == {"n": 42, "text": "x"}
    fixed.set()
    assert "re-drove 1 dead letter(s)" in command(target, "redrive", name, group)
    tally = Tally(member)
    tally.wait_numbers(group, {42}, 60)
    assert listed() == []
