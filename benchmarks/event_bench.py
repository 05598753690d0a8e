"""aspyx_event throughput on the local provider, against the pydantic JSON round trip alone.

End to end: from the first `send_event` until the listener was invoked for the last event
(one listener, a small dataclass event, ack after the listener). In the same run, the
`dump_json` + `validate_json` round trip of the same event is the ceiling any JSON-based
framework can reach. Median of repeats.

Run: python benchmarks/event_bench.py [--events 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass

from pydantic import TypeAdapter

from aspyx_di import Environment, module
from aspyx_event import EventListener, EventManager, EventModule, event, event_listener


@dataclass
@event()
class Tick:
    n: int
    name: str


@event_listener(Tick)
class TickListener(EventListener[Tick]):
    def __init__(self) -> None:
        self.expected = 0
        self.seen = 0
        self.done = threading.Event()

    def on(self, event: Tick) -> None:
        self.seen += 1
        if self.seen == self.expected:
            self.done.set()


@module(imports=[EventModule])
class BenchModule:
    pass


def end_to_end(environment: Environment, count: int) -> float:
    """Events per second through send_event -> local provider -> listener."""
    manager = environment.get(EventManager)
    listener = environment.get(TickListener)
    listener.seen, listener.expected = 0, count
    listener.done.clear()
    send = manager.send_event
    start = time.perf_counter()
    for i in range(count):
        send(Tick(i, "tick"))
    if not listener.done.wait(timeout=120):
        raise SystemExit(f"only {listener.seen} of {count} events arrived")
    return count / (time.perf_counter() - start)


def round_trip(count: int) -> float:
    """pydantic dump_json + validate_json per second, the serialization ceiling."""
    adapter = TypeAdapter(Tick)
    start = time.perf_counter()
    for i in range(count):
        adapter.validate_json(adapter.dump_json(Tick(i, "tick")))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with Environment(BenchModule) as environment:
        end_to_end(environment, 10_000)  # warm up
        framework, ceiling = [], []
        for _ in range(args.repeats):
            framework.append(end_to_end(environment, args.events))
            ceiling.append(round_trip(args.events))
    rate, limit = statistics.median(framework), statistics.median(ceiling)
    # The target, 200,000 events/s, was set where the round trip ran 800,000/s: as a
    # ratio to the ceiling measured in this same run it is 0.25 (this machine's speed varies).
    verdict = "ok" if rate / limit >= 0.25 else "MISSED"
    print(f"local provider end to end : {rate:>10,.0f} events/s")
    print(f"pydantic JSON round trip  : {limit:>10,.0f} /s        (ceiling, same run)")
    print(
        f"framework / ceiling       : {rate / limit:>10.2f}  (target 0.25 = 200k/800k: {verdict})"
    )


if __name__ == "__main__":
    main()
