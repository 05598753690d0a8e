"""Shared test configuration: the broker gate, and the fixtures that stop what a test started.

Tests marked `broker` need the brokers of scripts/brokers.sh. When BROKERS_REQUIRED=1 (the
README's test command and CI set it) a missing broker FAILS those tests; otherwise they are
skipped with the command that starts the brokers.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.contract.harness import Member
from tests.waiting import all_reachable, reachable

BROKER_PORTS = {"RabbitMQ AMQP": 5672, "RabbitMQ STOMP": 61613, "ActiveMQ STOMP": 61614}


def brokers_required() -> bool:
    """The environment says broker tests must run (CI, the README's test command)."""
    return os.environ.get("BROKERS_REQUIRED") == "1"


@pytest.fixture(autouse=True)
def _broker_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("broker") is None:
        return
    if all_reachable(BROKER_PORTS.values(), 90 if brokers_required() else 0):
        return  # waited out a broker that was restarting
    missing = [name for name, port in BROKER_PORTS.items() if not reachable(port)]
    message = f"brokers not reachable: {', '.join(missing)}. Hint: bash scripts/brokers.sh start"
    if brokers_required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def members() -> Iterator[list[Member]]:
    """Apps a test started with `tests.contract.harness.start_member`; stopped at its end."""
    started: list[Member] = []
    yield started
    for member in started:
        member.stop()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes a test started; SIGTERM (then SIGKILL after 30 s) at its end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
