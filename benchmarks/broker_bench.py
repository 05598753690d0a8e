"""aspyx_event on real brokers, against the raw client library with the same guarantees.

For each provider x broker (AMQP 1.0 on RabbitMQ, STOMP on RabbitMQ, STOMP on ActiveMQ):
durable events of about 100 bytes, one listener group, acknowledged after the listener.

* Throughput, end to end: from the first send until the listener saw the last of `--events`
  messages. The framework sends with `await send_event_async` from one asyncio loop, `--window`
  sends in flight (each completes on the broker's acceptance). The raw loop, in the same run,
  does the same with the client library alone: proton's `Container` with persistent, unsettled
  sends awaiting the broker's `accepted` (at most `--window` unsettled) and a receiver with
  prefetch 100 accepting each message; stomp.py's `Connection12` with `persistent:true` SENDs,
  each carrying a receipt (at most `--window` unconfirmed, as the provider does) and a
  `client-individual` subscription with prefetch 100 acknowledging each MESSAGE. For STOMP, a
  raw loop without receipts (weaker: a send is never confirmed) is printed for information.
  Median of `--repeats` interleaved runs; target framework/raw >= 0.9.
* Latency: `--rate` events/s for `--duration` s; each event carries its send time and the
  listener records the difference (p50/p99 ms), for the framework and the raw loop.

Each invocation uses fresh event and group names (one framework and one raw queue per
combination); the benchmark deletes its RabbitMQ queues through the management API at the end
(ActiveMQ's consumer queues stay, empty). Needs the brokers of
`scripts/brokers.sh` and the `amqp` and `stomp` extras.

Run: python benchmarks/broker_bench.py [--only amqp-rabbitmq] [--events 20000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import threading
import time
import traceback
import types
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import stomp
from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

from aspyx_di import Environment, create, module
from aspyx_event import EventListener, EventManager, create_provider, event, event_listener

MANAGEMENT = "http://127.0.0.1:15672/api"
AUTHORIZATION = "Basic " + base64.b64encode(b"guest:guest").decode()
PAD = "x" * 56  # a framework event's JSON body, {"n":..,"sent_ns":..,"text":".."}, ~100 bytes
PREFETCH = 100
TIMEOUT = 120.0


@dataclass(frozen=True)
class Combination:
    """One provider x broker."""

    name: str
    url: str
    port: int

    @property
    def protocol(self) -> str:
        return self.name.split("-")[0]

    @property
    def rabbitmq(self) -> bool:
        return self.name.endswith("rabbitmq")


COMBINATIONS = (
    Combination("amqp-rabbitmq", "amqp://guest:guest@127.0.0.1:5672?broker=rabbitmq", 5672),
    Combination("stomp-rabbitmq", "stomp://guest:guest@127.0.0.1:61613?broker=rabbitmq", 61613),
    Combination("stomp-activemq", "stomp://guest:guest@127.0.0.1:61614?broker=activemq", 61614),
)


class Recorder:
    """What the listener (framework or raw) saw: a count, the last arrival, latencies."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.finished = 0.0
        self.latencies_ns: list[int] = []
        self.done = threading.Event()

    def record(self, sent_ns: int) -> None:
        """Called once per message by the one thread that delivers them."""
        self.latencies_ns.append(time.perf_counter_ns() - sent_ns)
        self.seen += 1
        if self.seen == self.expected:
            self.finished = time.perf_counter()
            self.done.set()

    def wait(self, what: str) -> None:
        if not self.done.wait(TIMEOUT):
            raise RuntimeError(f"{what}: only {self.seen} of {self.expected} messages arrived")

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 latency in milliseconds."""
        cuts = statistics.quantiles(self.latencies_ns, n=100, method="inclusive")
        return cuts[49] / 1e6, cuts[98] / 1e6


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def raw_body(n: int) -> str:
    """~100 bytes: the send time (fixed width, read back by slicing) and padding."""
    return f"{time.perf_counter_ns():020d}{n:010d}{PAD}{'y' * 14}"


def management(method: str, path: str, body: dict[str, Any] | None = None) -> None:
    """One call of RabbitMQ's management HTTP API (path parts already percent-encoded)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        MANAGEMENT + path,
        data=data,
        method=method,
        headers={"Authorization": AUTHORIZATION, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def declare_queue(queue: str, event_name: str) -> None:
    """A durable queue bound to amq.topic with the event name as routing key."""
    name = quote(queue, safe="")
    management("PUT", f"/queues/%2F/{name}", {"durable": True, "auto_delete": False})
    management("POST", f"/bindings/%2F/e/amq.topic/q/{name}", {"routing_key": event_name})


def delete_queue(queue: str) -> None:
    try:
        management("DELETE", f"/queues/%2F/{quote(queue, safe='')}")
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise


class ProtonLoop(MessagingHandler):
    """Raw AMQP 1.0: one connection, a sender to `/topic/E` (persistent, unsettled until the
    broker's `accepted`) and a receiver on `/amq/queue/Q` (prefetch 100, accepts each message
    after recording it). Sends as fast as credit and `window` allow, or at `rate` per second."""

    def __init__(self, event_name: str, queue: str, count: int, rate: float, window: int) -> None:
        super().__init__(prefetch=PREFETCH, auto_accept=False)
        self.event_name, self.queue, self.count, self.rate = event_name, queue, count, rate
        self.window = window
        self.recorder = Recorder(count)
        self.sender: Any = None
        self.sent = self.accepted = 0
        self.started = 0.0
        self.deadline = time.perf_counter() + TIMEOUT
        self.error = ""

    def on_start(self, event: Any) -> None:
        connection = event.container.connect("amqp://guest:guest@127.0.0.1:5672")
        self.sender = event.container.create_sender(connection, f"/topic/{self.event_name}")
        event.container.create_receiver(connection, f"/amq/queue/{self.queue}")
        event.container.schedule(0.5, self)

    def on_link_opened(self, event: Any) -> None:
        if event.receiver is not None and not self.started:
            self.started = time.perf_counter()
            self._pump()

    def on_sendable(self, event: Any) -> None:
        self._pump()

    def on_timer_task(self, event: Any) -> None:
        if time.perf_counter() > self.deadline:
            self._fail(event, f"timeout after {self.recorder.seen} messages")
            return
        self._pump()
        if self.error == "" and not self.recorder.done.is_set():
            event.container.schedule(0.001 if self.rate else 0.5, self)

    def _pump(self) -> None:
        if not self.started:
            return
        due = self.count
        if self.rate:
            due = min(due, int((time.perf_counter() - self.started) * self.rate) + 1)
        sender = self.sender
        while self.sent < due and sender.credit > 0 and self.sent - self.accepted < self.window:
            sender.send(Message(body=raw_body(self.sent), durable=True))
            self.sent += 1

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1
        self._pump()
        self._close_when_done(event)

    def on_rejected(self, event: Any) -> None:
        self._fail(event, "the broker rejected a send")

    def on_released(self, event: Any) -> None:
        self._fail(event, "the broker released a send")

    def on_message(self, event: Any) -> None:
        self.recorder.record(int(event.message.body[:20]))
        self.accept(event.delivery)
        self._close_when_done(event)

    def _close_when_done(self, event: Any) -> None:
        if self.recorder.done.is_set() and self.accepted == self.count:
            event.connection.close()

    def _fail(self, event: Any, error: str) -> None:
        self.error = self.error or error
        if event.connection is not None:
            event.connection.close()
        event.container.stop()

    def on_transport_error(self, event: Any) -> None:
        self._fail(event, f"transport: {event.transport.condition}")

    def on_connection_error(self, event: Any) -> None:
        self._fail(event, f"connection: {event.connection.remote_condition}")

    def on_session_error(self, event: Any) -> None:
        self._fail(event, f"session: {event.session.remote_condition}")

    def on_link_error(self, event: Any) -> None:
        self._fail(event, f"link: {event.link.remote_condition}")


@dataclass(frozen=True)
class RawTarget:
    """The raw loops' own event and group on one combination's broker (one queue, drained
    by every run)."""

    combination: Combination
    event_name: str
    group: str

    @property
    def queue(self) -> str:
        return f"{self.event_name}::{self.group}"


def raw_amqp(target: RawTarget, count: int, rate: float, window: int) -> Recorder:
    loop = ProtonLoop(target.event_name, target.queue, count, rate, window)
    Container(loop).run()
    if loop.error:
        raise RuntimeError(f"raw proton loop: {loop.error}")
    loop.recorder.finished -= loop.started  # seconds from the first send
    return loop.recorder


class StompLoop(stomp.ConnectionListener):  # type: ignore[misc]  # stomp.py is untyped
    """Raw STOMP: records and acknowledges (client-individual) each MESSAGE on stomp.py's
    receiver thread; frees a send slot on each RECEIPT."""

    def __init__(self, connection: Any, count: int, window: int) -> None:
        self.connection = connection
        self.recorder = Recorder(count)
        self.slots = threading.Semaphore(window)
        self.subscribed = threading.Event()
        self.all_acked = threading.Event()  # the last ACK is written: safe to disconnect
        self.error = ""

    def on_message(self, frame: Any) -> None:
        self.recorder.record(int(frame.body[:20]))
        self.connection.ack(frame.headers["ack"])
        if self.recorder.done.is_set():
            self.all_acked.set()

    def on_receipt(self, frame: Any) -> None:
        if frame.headers["receipt-id"] == "subscribed":
            self.subscribed.set()
        else:
            self.slots.release()

    def on_error(self, frame: Any) -> None:
        self.error = f"{frame.headers.get('message', '')} {frame.body}"


def raw_stomp(target: RawTarget, count: int, rate: float, window: int, receipts: bool) -> Recorder:
    event_name = target.event_name
    if target.combination.rabbitmq:
        destination = f"/topic/{event_name}"
        headers = {"x-queue-name": target.queue, "durable": "true", "auto-delete": "false"}
        headers["prefetch-count"] = str(PREFETCH)
    else:
        destination = f"/queue/Consumer.{target.group}.{event_name}"
        headers = {"activemq.prefetchSize": str(PREFETCH)}
    connection = stomp.Connection12([("127.0.0.1", target.combination.port)], vhost="/")
    loop = StompLoop(connection, count, window)
    connection.set_listener("bench", loop)
    connection.connect("guest", "guest", wait=True)
    try:
        headers["receipt"] = "subscribed"  # the group's queue exists once this RECEIPT is back
        connection.subscribe(destination, id="1", ack="client-individual", headers=headers)
        if not loop.subscribed.wait(10):
            raise RuntimeError(f"raw stomp: no receipt for SUBSCRIBE {loop.error}")
        started = time.perf_counter()
        for n in range(count):
            if rate and (delay := started + n / rate - time.perf_counter()) > 0:
                time.sleep(delay)
            send_headers = {"persistent": "true"}
            if receipts:
                if not loop.slots.acquire(timeout=TIMEOUT):
                    raise RuntimeError(f"raw stomp: no receipt {loop.error}")
                send_headers["receipt"] = str(n)
            connection.send(f"/topic/{event_name}", raw_body(n), headers=send_headers)
        loop.recorder.wait(f"raw stomp {loop.error}")
        loop.all_acked.wait(10)
        loop.recorder.finished -= started
        return loop.recorder
    finally:
        connection.disconnect()


def bench_event_type(name: str) -> type:
    """A fresh durable event type named `name` (about 100 bytes of JSON)."""
    cls = types.new_class(name.replace("-", "_"), (), {})
    cls.__annotations__ = {"n": int, "sent_ns": int, "text": str}
    return event(name=name, durable=True)(dataclass(cls))


class FrameworkApp:
    """An Environment with one listener of a fresh durable event on `combination`'s broker."""

    def __init__(self, combination: Combination) -> None:
        self.combination = combination
        self.event_name, self.group = unique("BrokerBench"), unique("bench")
        self.event_type = bench_event_type(self.event_name)
        self.recorder = Recorder(0)
        app_name = self.group.replace("-", "_")
        python_module = types.ModuleType(app_name)
        sys.modules[app_name] = python_module
        app = self

        def on(self: Any, event_instance: Any) -> None:
            app.recorder.record(event_instance.sent_ns)

        def create_manager(self: Any) -> EventManager:
            return EventManager(create_provider(combination.url, unique("bench-server")))

        create_manager.__annotations__ = {"return": EventManager}
        listener = types.new_class(
            "BenchListener", (EventListener[Any],), {}, lambda ns: ns.update(on=on)
        )
        application = type(app_name, (), {"create_manager": create()(create_manager)})
        for cls in (listener, application):
            cls.__module__ = app_name
            setattr(python_module, cls.__name__, cls)
        event_listener(self.event_type, name=self.group)(listener)
        self.environment = Environment(module()(application))  # listener subscribed
        self.manager = self.environment.get(EventManager)

    def run(self, count: int, rate: float, window: int) -> Recorder:
        """Send `count` events (at `rate`/s, or as fast as `window` allows) and wait for them."""
        self.recorder = Recorder(count)
        started = asyncio.run(self._send(count, rate, window))
        self.recorder.wait("framework")
        self.recorder.finished -= started
        return self.recorder

    async def _send(self, count: int, rate: float, window: int) -> float:
        make, send = self.event_type, self.manager.send_event_async
        numbers = iter(range(count))
        started = time.perf_counter()

        async def worker() -> None:
            for n in numbers:
                if rate and (delay := started + n / rate - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                await send(make(n, time.perf_counter_ns(), PAD))

        # paced: enough workers that a slow acceptance never holds back the schedule
        await asyncio.gather(*(worker() for _ in range(min(count, window))))
        return started

    def close(self) -> None:
        self.environment.shutdown()
        if self.combination.rabbitmq:
            delete_queue(f"{self.event_name}::{self.group}")


@dataclass
class Row:
    """One combination's results (rates are medians, latencies in ms)."""

    name: str
    raw: float = 0.0
    framework: float = 0.0
    no_receipts: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    raw_latency: tuple[float, float] = (0.0, 0.0)
    failure: str = ""


def raw_run(target: RawTarget, count: int, rate: float, window: int) -> Recorder:
    if target.combination.protocol == "amqp":
        return raw_amqp(target, count, rate, window)
    return raw_stomp(target, count, rate, window, receipts=True)


def bench(combination: Combination, args: argparse.Namespace) -> Row:
    """Interleaved raw and framework throughput runs, then one latency run of each."""
    row = Row(combination.name)
    target = RawTarget(combination, unique("BrokerBenchRaw"), unique("raw"))
    app = FrameworkApp(combination)
    try:
        if combination.protocol == "amqp":
            declare_queue(target.queue, target.event_name)  # STOMP's SUBSCRIBE declares its own
        app.run(args.warmup, 0.0, args.window)
        raw_run(target, args.warmup, 0.0, args.window)
        raw, framework, no_receipts = [], [], []
        for _ in range(args.repeats):
            raw.append(args.events / raw_run(target, args.events, 0.0, args.window).finished)
            framework.append(args.events / app.run(args.events, 0.0, args.window).finished)
            if combination.protocol == "stomp":
                recorder = raw_stomp(target, args.events, 0.0, args.window, receipts=False)
                no_receipts.append(args.events / recorder.finished)
        paced = int(args.rate * args.duration)
        row.latency = app.run(paced, args.rate, args.window).percentiles()
        row.raw_latency = raw_run(target, paced, args.rate, args.window).percentiles()
    finally:
        app.close()
        if combination.rabbitmq:
            delete_queue(target.queue)
    row.raw, row.framework = statistics.median(raw), statistics.median(framework)
    row.no_receipts = statistics.median(no_receipts) if no_receipts else 0.0
    return row


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\n{args.events:,} durable events x {args.repeats} (median); latency at "
        f"{args.rate:,.0f} events/s for {args.duration:g} s; {args.window} sends in flight\n"
    )
    header = f"{'combination':<16}{'raw msg/s':>11}{'framework ev/s':>16}{'fw/raw':>8}"
    print(f"{header}{'p50 ms':>8}{'p99 ms':>8}{'raw p50':>9}{'raw p99':>9}  verdict")
    for row in rows:
        if row.failure:
            print(f"{row.name:<16}  FAILED: {row.failure}")
            continue
        ratio = row.framework / row.raw
        verdict = "ok" if ratio >= 0.9 else "MISSED"
        (p50, p99), (raw50, raw99) = row.latency, row.raw_latency
        print(
            f"{row.name:<16}{row.raw:>11,.0f}{row.framework:>16,.0f}{ratio:>7.2f}x"
            f"{p50:>8.2f}{p99:>8.2f}{raw50:>9.2f}{raw99:>9.2f}  {verdict} (target >= 0.9x)"
        )
    for row in rows:
        if row.no_receipts:
            print(
                f"info: {row.name} raw without receipts (sends never confirmed): "
                f"{row.no_receipts:,.0f} msg/s; framework / that: "
                f"{row.framework / row.no_receipts:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    names = [c.name for c in COMBINATIONS]
    parser.add_argument("--only", action="append", choices=names, help="repeatable")
    parser.add_argument("--events", type=int, default=20_000, help="per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--window", type=int, default=500, help="sends awaiting acceptance")
    parser.add_argument("--rate", type=float, default=500.0, help="events/s for latency")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of latency run")
    parser.add_argument("--quick", action="store_true", help="2,000 events, 1 repeat, 2 s")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeats, args.warmup, args.duration = 2_000, 1, 200, 2.0
    rows = []
    for combination in COMBINATIONS:
        if args.only and combination.name not in args.only:
            continue
        try:
            rows.append(bench(combination, args))
        except Exception as error:
            traceback.print_exc()
            rows.append(Row(combination.name, failure=f"{type(error).__name__}: {error}"))
    report(rows, args)


if __name__ == "__main__":
    main()
