"""Soak: a steady stream through each provider while watching latency and the process's memory.

For each provider x broker (in-process `local`, AMQP 1.0 on RabbitMQ, STOMP on RabbitMQ,
STOMP on ActiveMQ) an `Environment` built like an application's (`EventModule`, the provider
URL in its configuration) holds one listener of a fresh durable event (~100 bytes of JSON).
The listener does a little work per event, `WORK_ROUNDS` chained BLAKE2b hashes of the payload
in Python (~60-70 us on a 2-core VM, printed at start), then records the event's id and latency.
The sender sends event `n` at `start + n / --rate` for `--duration` seconds with
`await EventManager.send_event_async` from an asyncio loop, each send a task (at most `WINDOW`
awaiting the broker's acceptance), then waits until every accepted event arrived.

Printed per combination: events sent and received (unique ids, duplicates apart), throughput
(unique events from the first send to the last arrival), p50/p99 latency (send to listener),
how far the sender was behind its schedule at the end, and memory from /proc/self/status:
VmRSS at 10 % of the run (after the warm-up), at the end, the growth between them and the
peak (VmHWM, reset for each combination through /proc/self/clear_refs). The listener's
records are allocated before the run, so the harness itself does not grow the RSS it watches.

Verdict `ok` needs nothing lost (every accepted send arrived) and a flat RSS: growth at most
`max(RSS_GROWTH_FLOOR_MB, RSS_GROWTH_SHARE of the RSS at 10 %)`, and no failed send. The
exit code is 1 when a combination missed any of these or could not run, so scripts can use it.

The default rate (500 events/s) is one every provider sustains with this listener on a
2-core VM with the brokers on the same machine. Broker combinations need the brokers of
`scripts/brokers.sh` and the `amqp` and `stomp` extras; each run uses fresh event and group
names and deletes its RabbitMQ queues (the group's and its dead-letter queue) through the
management API at the end (ActiveMQ's consumer queue stays, empty). A broker restarted during
a run shows as duplicates, a sender behind its schedule and a long p99, not as a failure.

Run: python benchmarks/soak.py [--only local] [--rate 500] [--duration 60] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import threading
import time
import traceback
import types
from array import array
from dataclasses import dataclass
from typing import Any

from broker_bench import COMBINATIONS, PAD, Combination, bench_event_type, delete_queue, unique

from aspyx_di import ConfigurationManager, DictSource, Environment, module
from aspyx_event import EventListener, EventManager, EventModule, Subscription, event_listener

RSS_GROWTH_FLOOR_MB = 8.0
RSS_GROWTH_SHARE = 0.05
"""RSS is flat when it grows by at most max(RSS_GROWTH_FLOOR_MB, this share of the RSS at 10 %)."""
WORK_ROUNDS = 125  # chained hashes per event: the listener's "little work"
WINDOW = 500  # sends awaiting the broker's acceptance at once
DRAIN_TIMEOUT = 60.0  # seconds the stragglers may take after the last send
SOAK_COMBINATIONS = (Combination("local", "local://", 0), *COMBINATIONS)


def work(payload: bytes) -> bytes:
    """The listener's little work: Python code holding the GIL, as a real listener's does."""
    digest = payload
    for _ in range(WORK_ROUNDS):
        digest = hashlib.blake2b(digest + payload).digest()
    return digest


def work_cost_us(calls: int = 2_000) -> float:
    """What `work` costs per event on this machine, in microseconds."""
    payload = f"{calls}:{PAD}".encode()  # shaped like the listener's
    started = time.perf_counter()
    for _ in range(calls):
        work(payload)
    return (time.perf_counter() - started) / calls * 1e6


def memory_kb() -> tuple[int, int]:
    """The process's resident set size and its peak (VmRSS, VmHWM) in kB."""
    values: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class Ledger:
    """What the listener saw, in memory allocated up front (its growth would be ours).

    Written by the one thread that delivers the listener's events; read after the run.
    """

    def __init__(self, expected: int) -> None:
        self.seen = bytearray(expected)  # by event id
        self.latencies_ns = array("q", bytes(8 * expected))  # in arrival order
        self.unique = self.duplicates = 0
        self.last_arrival = 0.0
        self.target = expected
        self.complete = threading.Event()

    def record(self, n: int, sent_ns: int) -> None:
        """Count event `n` (sent at `sent_ns`, perf_counter_ns) once; repeats are duplicates."""
        now = time.perf_counter_ns()
        if self.seen[n]:
            self.duplicates += 1
            return
        self.seen[n] = 1
        self.latencies_ns[self.unique] = now - sent_ns
        self.unique += 1
        self.last_arrival = now / 1e9
        if self.unique >= self.target:
            self.complete.set()

    def expect(self, count: int) -> None:
        """Only `count` events were accepted: complete once that many arrived."""
        self.target = count
        if self.unique >= count:
            self.complete.set()

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 latency in milliseconds (zeros with fewer than two arrivals)."""
        if self.unique < 2:
            return 0.0, 0.0
        cuts = statistics.quantiles(self.latencies_ns[: self.unique], n=100, method="inclusive")
        return cuts[49] / 1e6, cuts[98] / 1e6


class WorkingListener(EventListener[Any]):
    """Works on each event's payload, then records it; each run subclasses it for its event."""

    ledger: Ledger  # set on the run's subclass

    def on(self, event: Any) -> None:
        work(f"{event.n}:{event.text}".encode())
        self.ledger.record(event.n, event.sent_ns)


class SoakApp:
    """An Environment with one `WorkingListener` of a fresh durable event on one combination.

    Built as an application is: a `@module` importing `EventModule`, whose configuration
    names the provider URL. The environment registers what its module's Python module holds,
    so each app gets a generated Python module holding just its listener and module class.
    """

    def __init__(self, combination: Combination, ledger: Ledger) -> None:
        self.combination = combination
        self.event_name, self.group = unique("Soak"), unique("soak")
        self.event_type = bench_event_type(self.event_name)
        self.python_module = types.ModuleType(self.group.replace("-", "_"))
        name = self.python_module.__name__
        listener = types.new_class(
            "SoakListener", (WorkingListener,), {}, lambda ns: ns.update(ledger=ledger)
        )
        application = type("SoakApplication", (), {})
        for cls in (listener, application):
            cls.__module__ = name
            setattr(self.python_module, cls.__name__, cls)
        event_listener(self.event_type, name=self.group)(listener)
        sys.modules[name] = self.python_module
        event = {"provider": combination.url, "server_name": unique("soak-server")}
        self.environment = Environment(
            module(imports=[EventModule])(application),
            configuration=ConfigurationManager(DictSource({"event": event})),
        )  # the listener is subscribed
        self.manager = self.environment.get(EventManager)

    def close(self) -> None:
        """Shut the environment down and delete the group's RabbitMQ queues (the provider
        declares a dead-letter queue next to the group's queue)."""
        try:
            self.environment.shutdown()
        finally:
            sys.modules.pop(self.python_module.__name__, None)
            if self.combination.rabbitmq:
                subscription = Subscription(self.event_name, self.group)
                for queue in (subscription, subscription.dead_letter()):
                    delete_queue(queue.queue)


@dataclass
class Stream:
    """What the sender did: accepted and failed sends, when it started and how late it ended."""

    accepted: int = 0
    failed: int = 0
    error: str = ""
    started: float = 0.0
    behind: float = 0.0  # seconds after the last send's scheduled time that the sender finished


async def stream(app: SoakApp, total: int, rate: float) -> Stream:
    """Send event `n` at `started + n / rate`, each send a task, at most `WINDOW` in flight."""
    outcome = Stream(started=time.perf_counter())
    window = asyncio.Semaphore(WINDOW)
    make, send = app.event_type, app.manager.send_event_async

    async def one(n: int) -> None:
        try:
            await send(make(n, time.perf_counter_ns(), PAD))
            outcome.accepted += 1
        except Exception as error:
            outcome.failed += 1
            outcome.error = outcome.error or f"{type(error).__name__}: {error}"
        finally:
            window.release()

    tasks: set[asyncio.Task[None]] = set()
    for n in range(total):
        if (delay := outcome.started + n / rate - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        await window.acquire()
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    outcome.behind = time.perf_counter() - outcome.started - (total - 1) / rate
    return outcome


class RSSSampler:
    """Reads VmRSS once a second on its own thread, from `start()` until `stop()`."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (seconds into the run, kB)
        self._started = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._started = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.samples.append((time.perf_counter() - self._started, memory_kb()[0]))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def at(self, seconds: float, default: int) -> int:
        """The first sample taken at least `seconds` into the run (`default` if none was)."""
        return next((rss for taken, rss in self.samples if taken >= seconds), default)


@dataclass
class Row:
    """One combination's results (memory in kB, latencies in ms)."""

    name: str
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    throughput: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    behind: float = 0.0
    rss_early: int = 0
    rss_end: int = 0
    peak: int = 0
    failure: str = ""

    @property
    def growth(self) -> int:
        return self.rss_end - self.rss_early

    @property
    def allowed_growth(self) -> int:
        """The flat-RSS bound in kB: max(RSS_GROWTH_FLOOR_MB, RSS_GROWTH_SHARE of the early RSS)."""
        return int(max(RSS_GROWTH_FLOOR_MB * 1024, RSS_GROWTH_SHARE * self.rss_early))

    @property
    def verdict(self) -> str:
        problems = [self.failure] if self.failure else []
        if not self.failure and self.received < self.sent:
            problems.append(f"LOST {self.sent - self.received}")
        if not self.failure and self.growth > self.allowed_growth:
            problems.append(f"RSS GREW > {self.allowed_growth / 1024:.1f} MB")
        return "; ".join(problems) or "ok"


def soak(combination: Combination, rate: float, duration: float) -> Row:
    """One combination: build the app, stream for `duration` s, drain, measure, clean up."""
    total = max(2, round(rate * duration))
    ledger = Ledger(total)
    reset_peak()
    app = SoakApp(combination, ledger)
    sampler = RSSSampler()
    try:
        sampler.start()
        sent = asyncio.run(stream(app, total, rate))
        ledger.expect(sent.accepted)
        ledger.complete.wait(DRAIN_TIMEOUT)
        rss_end, peak = memory_kb()
    finally:
        sampler.stop()
        app.close()
    elapsed = ledger.last_arrival - sent.started
    return Row(
        combination.name,
        sent=sent.accepted,
        received=ledger.unique,
        duplicates=ledger.duplicates,
        throughput=ledger.unique / elapsed if elapsed > 0 else 0.0,
        latency=ledger.percentiles(),
        behind=sent.behind,
        rss_early=sampler.at(duration / 10, rss_end),
        rss_end=rss_end,
        peak=peak,
        failure=f"{sent.failed} sends failed, first: {sent.error}" if sent.failed else "",
    )


def milliseconds(value: float) -> str:
    """A latency for the table: two decimals below 100 ms, whole milliseconds above."""
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def report(rows: list[Row], rate: float, duration: float) -> None:
    """The results table, memory in MB."""
    print(
        f"\n{rate:,.0f} durable events/s for {duration:g} s, listener work {WORK_ROUNDS} hashes; "
        f"RSS flat: growth from 10 % of the run to its end <= max({RSS_GROWTH_FLOOR_MB:g} MB, "
        f"{RSS_GROWTH_SHARE * 100:g} % of the RSS at 10 %)\n"
    )
    print(
        f"{'combination':<16}{'sent':>8}{'received':>10}{'dup':>5}{'events/s':>10}{'p50 ms':>8}"
        f"{'p99 ms':>9}{'behind s':>9}{'RSS@10%':>9}{'RSS end':>9}{'growth':>8}{'peak':>8}"
        "  verdict"
    )
    for row in rows:
        if row.failure and not row.sent:
            print(f"{row.name:<16}  FAILED: {row.failure}")
            continue
        (p50, p99), mb = row.latency, 1024
        print(
            f"{row.name:<16}{row.sent:>8,}{row.received:>10,}{row.duplicates:>5}"
            f"{row.throughput:>10,.0f}{milliseconds(p50):>8}{milliseconds(p99):>9}{row.behind:>9.2f}"
            f"{row.rss_early / mb:>9.1f}{row.rss_end / mb:>9.1f}{row.growth / mb:>+8.1f}"
            f"{row.peak / mb:>8.1f}  {row.verdict}"
        )


def main() -> int:
    """Soak every chosen combination; 1 when one lost events, grew or failed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    names = [c.name for c in SOAK_COMBINATIONS]
    parser.add_argument("--only", action="append", choices=names, help="repeatable")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of sending")
    parser.add_argument("--quick", action="store_true", help="10 s instead of --duration")
    args = parser.parse_args()
    duration = 10.0 if args.quick else args.duration
    print(f"listener work: {work_cost_us():.0f} us per event ({WORK_ROUNDS} chained hashes)")
    if not reset_peak():
        print("note: /proc/self/clear_refs refused, peak RSS is the whole process's")
    rows = []
    for combination in SOAK_COMBINATIONS:
        if args.only and combination.name not in args.only:
            continue
        try:
            rows.append(soak(combination, args.rate, duration))
        except Exception as error:
            traceback.print_exc()
            rows.append(Row(combination.name, failure=f"{type(error).__name__}: {error}"))
    report(rows, args.rate, duration)
    return 0 if all(row.verdict == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
