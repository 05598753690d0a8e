"""Several processes of the same app against one real broker.

Two processes run listener group A, a third runs group B, and all three run a per-process
listener P: 1,000 events must be processed exactly once by group A across its two
processes, once by B, and by P in every process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from aspyx_di import Environment, create, module
from aspyx_event import EventManager, create_provider
from tests.integration.mp_worker import payload_type
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
URLS = [
    pytest.param("amqp://guest:guest@127.0.0.1:5672?broker=rabbitmq", id="amqp-rabbitmq"),
    pytest.param("stomp://guest:guest@127.0.0.1:61613?broker=rabbitmq", id="stomp-rabbitmq"),
    pytest.param("stomp://guest:guest@127.0.0.1:61614?broker=activemq", id="stomp-activemq"),
]
EVENTS = 1000


def start_worker(
    url: str, event_name: str, server: str, out: Path, *listeners: str
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.mp_worker",
            url,
            event_name,
            server,
            str(out),
            *listeners,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", "the worker did not start"
    return process


def counts(out: Path) -> Counter[tuple[str, int]]:
    if not out.exists():
        return Counter()
    return Counter(
        (name, int(n))
        for name, n in (line.split() for line in out.read_text().splitlines() if line)
    )


@pytest.mark.broker
@pytest.mark.parametrize("url", URLS)
def test_groups_compete_and_per_process_listeners_broadcast_across_processes(
    url: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    event_name = f"mp-{uuid.uuid4().hex[:8]}"
    group_a, group_b, per_process = f"A-{event_name}", f"B-{event_name}", f"P-{event_name}"
    outs = [tmp_path / f"worker{i}.txt" for i in range(3)]
    workers.append(
        start_worker(url, event_name, "w0", outs[0], group_a, f"{per_process}:per_process")
    )
    workers.append(
        start_worker(url, event_name, "w1", outs[1], group_a, f"{per_process}:per_process")
    )
    workers.append(
        start_worker(url, event_name, "w2", outs[2], group_b, f"{per_process}:per_process")
    )

    payload = payload_type(event_name)

    @module()
    class SenderModule:
        @create()
        def create_event_manager(self) -> EventManager:
            return EventManager(create_provider(url, "sender"))

    with Environment(SenderModule) as sender:
        manager = sender.get(EventManager)
        for n in range(EVENTS):
            manager.send_event(payload(n))

    expected_lines = EVENTS * (1 + 1 + 3)  # A once, B once, P in each of three processes
    eventually(lambda: sum(sum(counts(out).values()) for out in outs) >= expected_lines, 120)
    per_worker = [counts(out) for out in outs]
    seen_a = per_worker[0] + per_worker[1]
    assert sorted(
        n for (name, n), c in seen_a.items() if name == group_a for _ in range(c)
    ) == list(range(EVENTS))
    assert sum(1 for (name, _n) in per_worker[0] if name == group_a) > 0
    assert sum(1 for (name, _n) in per_worker[1] if name == group_a) > 0
    assert sorted(n for (name, n) in per_worker[2] if name == group_b) == list(range(EVENTS))
    assert all(per_worker[2][(group_b, n)] == 1 for n in range(EVENTS))
    for worker_counts in per_worker:
        assert sorted(n for (name, n) in worker_counts if name == per_process) == list(
            range(EVENTS)
        )
