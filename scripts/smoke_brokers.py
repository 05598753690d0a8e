"""Quick sanity check of the local brokers started by ``scripts/brokers.sh start``.

Checks, each with a fresh token so stale messages can never make it pass:

* RabbitMQ STOMP (127.0.0.1:61613): SEND ``/topic/E``, SUBSCRIBE with ``x-queue-name``.
* ActiveMQ STOMP (127.0.0.1:61614): SEND ``/topic/E``, SUBSCRIBE ``/queue/Consumer.G.E``
  (virtual topics).
* RabbitMQ AMQP 1.0 (127.0.0.1:5672) with proton's event-driven ``Container``: the durable
  queue is declared and bound to ``amq.topic`` through the management API (127.0.0.1:15672),
  messages go to ``/topic/E`` and come back from ``/amq/queue/<queue>``.
* A 1.1 MB binary STOMP message through both brokers.

Durable messages across a broker restart::

    token=$(python scripts/smoke_brokers.py durable-send)
    scripts/brokers.sh restart-rabbitmq && scripts/brokers.sh restart-activemq
    python scripts/smoke_brokers.py durable-check "$token"

Needs ``stomp.py`` and ``python-qpid-proton``. Exits 0 when every check passed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import stomp
from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

HOST = "127.0.0.1"
RABBIT_STOMP = (HOST, 61613)
ACTIVEMQ_STOMP = (HOST, 61614)
RABBIT_AMQP_URL = f"amqp://{HOST}:5672"
RABBIT_MGMT_URL = f"http://{HOST}:15672"
USER, PASSWORD = "guest", "guest"
LARGE_SIZE = 1_100_000

# --------------------------------------------------------------------------- STOMP


class _Listener(stomp.ConnectionListener):  # type: ignore[misc,unused-ignore]
    """Collects MESSAGE, RECEIPT and ERROR frames of one connection."""

    def __init__(self) -> None:
        self.messages: queue.Queue[stomp.utils.Frame] = queue.Queue()
        self.errors: list[str] = []
        self._receipts: set[str] = set()
        self._cond = threading.Condition()

    def on_message(self, frame: stomp.utils.Frame) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame: stomp.utils.Frame) -> None:
        with self._cond:
            self._receipts.add(frame.headers.get("receipt-id", ""))
            self._cond.notify_all()

    def on_error(self, frame: stomp.utils.Frame) -> None:
        self.errors.append(f"{frame.headers.get('message', '')} {frame.body!r}"[:500])
        with self._cond:
            self._cond.notify_all()

    def wait_receipt(self, receipt: str, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: receipt in self._receipts or self.errors, timeout):
                raise TimeoutError(f"no RECEIPT {receipt} within {timeout}s")
        if self.errors:
            raise RuntimeError(f"STOMP ERROR: {self.errors[0]}")


class StompClient:
    """A STOMP 1.2 connection with receipts for every state-changing frame."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.timeout = timeout
        self.listener = _Listener()
        self.conn = stomp.Connection12([address], vhost="/", auto_decode=False)
        self.conn.set_listener("smoke", self.listener)
        self.conn.connect(USER, PASSWORD, wait=True)

    def _receipt(self) -> str:
        return uuid.uuid4().hex

    def subscribe(self, destination: str, headers: dict[str, str] | None = None) -> None:
        receipt = self._receipt()
        self.conn.subscribe(
            destination,
            id="1",
            ack="client-individual",
            headers={**(headers or {}), "receipt": receipt},
        )
        self.listener.wait_receipt(receipt, self.timeout)

    def send(self, destination: str, body: bytes) -> None:
        receipt = self._receipt()
        self.conn.send(destination, body, headers={"persistent": "true", "receipt": receipt})
        self.listener.wait_receipt(receipt, self.timeout)

    def receive(self, expected: bytes) -> None:
        """Wait for a message whose body is ``expected``; ack everything seen on the way."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"message not received within {self.timeout}s")
            try:
                frame = self.listener.messages.get(timeout=left)
            except queue.Empty:
                continue
            self.conn.ack(frame.headers["ack"])
            body = frame.body if isinstance(frame.body, bytes) else frame.body.encode()
            if body == expected:
                return

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect()


def _with_stomp(
    address: tuple[str, int], timeout: float, action: Callable[[StompClient], None]
) -> None:
    client = StompClient(address, timeout)
    try:
        action(client)
    finally:
        client.close()


def _rabbit_sub_headers(queue_name: str) -> dict[str, str]:
    return {
        "x-queue-name": queue_name,
        "durable": "true",
        "auto-delete": "false",
        "prefetch-count": "10",
    }


def stomp_round_trip(broker: str, body: bytes, timeout: float) -> None:
    """Subscribe as group ``G`` to event ``smoke-E``, publish ``body``, receive it."""
    event = "smoke-E"

    def run(client: StompClient) -> None:
        if broker == "rabbitmq":
            client.subscribe(f"/topic/{event}", _rabbit_sub_headers(f"{event}::G"))
        else:
            client.subscribe(f"/queue/Consumer.G.{event}", {"activemq.prefetchSize": "10"})
        client.send(f"/topic/{event}", body)
        client.receive(body)

    _with_stomp(RABBIT_STOMP if broker == "rabbitmq" else ACTIVEMQ_STOMP, timeout, run)


# --------------------------------------------------------------------------- AMQP 1.0


def _mgmt(method: str, path: str, payload: dict[str, Any] | None = None) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        RABBIT_MGMT_URL + path,
        method=method,
        data=None if payload is None else json.dumps(payload).encode(),
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def declare_group_queue(event: str, group: str) -> str:
    """Durable queue ``E::G`` bound to ``amq.topic`` with key ``E``; returns its name."""
    name = f"{event}::{group}"
    q = urllib.parse.quote(name, safe="")
    _mgmt("PUT", f"/api/queues/%2F/{q}", {"durable": True, "auto_delete": False, "arguments": {}})
    _mgmt("POST", f"/api/bindings/%2F/e/amq.topic/q/{q}", {"routing_key": event, "arguments": {}})
    return name


class _AmqpHandler(MessagingHandler):  # type: ignore[misc,unused-ignore]
    """Sends ``to_send`` to ``/topic/<event>`` and/or waits for ``expected`` on the queue."""

    def __init__(
        self, event: str, queue_name: str, to_send: list[str], expected: set[str], timeout: float
    ) -> None:
        super().__init__(prefetch=10, auto_accept=True)
        self.event, self.queue_name, self.timeout = event, queue_name, timeout
        self.to_send, self.expected = list(to_send), set(expected)
        self.unsettled = 0
        self.error: str | None = None
        self.conn: Any = None
        self.timer: Any = None

    def on_start(self, event: Any) -> None:
        self.conn = event.container.connect(
            RABBIT_AMQP_URL, user=USER, password=PASSWORD, allowed_mechs="PLAIN"
        )
        if self.expected:
            event.container.create_receiver(self.conn, f"/amq/queue/{self.queue_name}")
        if self.to_send:
            event.container.create_sender(self.conn, f"/topic/{self.event}")
        self.timer = event.container.schedule(self.timeout, self)

    def on_timer_task(self, event: Any) -> None:
        self._fail(
            f"timeout after {self.timeout}s (unsent {len(self.to_send)}, "
            f"unsettled {self.unsettled}, missing {len(self.expected)})"
        )

    def on_sendable(self, event: Any) -> None:
        while self.to_send and event.sender.credit:
            event.sender.send(Message(body=self.to_send.pop(0), durable=True))
            self.unsettled += 1

    def on_accepted(self, event: Any) -> None:
        self.unsettled -= 1
        self._maybe_done()

    def on_rejected(self, event: Any) -> None:
        self._fail("message rejected by the broker")

    def on_released(self, event: Any) -> None:
        self._fail("message released by the broker (no route?)")

    def on_message(self, event: Any) -> None:
        body = event.message.body
        if isinstance(body, memoryview):  # binary bodies come back as memoryview
            body = bytes(body).decode()
        self.expected.discard(body)
        self._maybe_done()

    def on_link_error(self, event: Any) -> None:
        self._fail(f"link error: {event.link.remote_condition}")

    def on_session_error(self, event: Any) -> None:  # RabbitMQ ends the session on attach errors
        self._fail(f"session error: {event.session.remote_condition}")

    def on_connection_error(self, event: Any) -> None:
        self._fail(f"connection error: {event.connection.remote_condition}")

    def on_transport_error(self, event: Any) -> None:
        self._fail(f"transport error: {event.transport.condition}")

    def _maybe_done(self) -> None:
        if not self.to_send and self.unsettled == 0 and not self.expected:
            self._close()

    def _fail(self, message: str) -> None:
        self.error = self.error or message
        self._close()

    def _close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def amqp_exchange(
    event: str, queue_name: str, to_send: list[str], expected: set[str], timeout: float
) -> None:
    handler = _AmqpHandler(event, queue_name, to_send, expected, timeout)
    Container(handler).run()
    if handler.error:
        raise RuntimeError(handler.error)


def amqp_round_trip(timeout: float, count: int = 20) -> None:
    event = "smoke-amqp"
    queue_name = declare_group_queue(event, "G")
    bodies = [f"{uuid.uuid4().hex}-{i}" for i in range(count)]
    amqp_exchange(event, queue_name, bodies, set(bodies), timeout)


# --------------------------------------------------------------------------- durability

DURABLE_EVENT = "smoke-durable"


def durable_send(token: str, timeout: float) -> None:
    """Leave one persistent message per broker and protocol in a durable queue."""
    queue_name = declare_group_queue(DURABLE_EVENT, "G")
    amqp_exchange(DURABLE_EVENT, queue_name, [f"amqp-{token}"], set(), timeout)
    _with_stomp(
        RABBIT_STOMP,
        timeout,
        lambda c: c.send(f"/topic/{DURABLE_EVENT}", f"stomp-{token}".encode()),
    )
    # ActiveMQ: the first SUBSCRIBE creates Consumer.G.<event>; DISCONNECT keeps it.
    consumer_queue = f"/queue/Consumer.G.{DURABLE_EVENT}"
    _with_stomp(ACTIVEMQ_STOMP, timeout, lambda c: c.subscribe(consumer_queue))
    _with_stomp(
        ACTIVEMQ_STOMP,
        timeout,
        lambda c: c.send(f"/topic/{DURABLE_EVENT}", f"activemq-{token}".encode()),
    )


def durable_checks(token: str) -> list[tuple[str, Callable[[float], None]]]:
    """Checks that the messages left by :func:`durable_send` are still there."""

    def rabbitmq(timeout: float) -> None:
        # The queue holds the message sent with AMQP 1.0 and the one sent with STOMP.
        expected = {f"amqp-{token}", f"stomp-{token}"}
        amqp_exchange(DURABLE_EVENT, f"{DURABLE_EVENT}::G", [], expected, timeout)

    def activemq(timeout: float) -> None:
        def run(client: StompClient) -> None:
            client.subscribe(f"/queue/Consumer.G.{DURABLE_EVENT}")
            client.receive(f"activemq-{token}".encode())

        _with_stomp(ACTIVEMQ_STOMP, timeout, run)

    return [("rabbitmq durable (amqp1.0 + stomp)", rabbitmq), ("activemq stomp durable", activemq)]


# --------------------------------------------------------------------------- main


def run_checks(checks: list[tuple[str, Callable[[float], None]]], timeout: float) -> int:
    passed = failed = 0
    for name, check in checks:
        start = time.monotonic()
        try:
            check(timeout)
        except Exception as exc:  # report every failure and go on
            failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            passed += 1
            print(f"ok   {name} ({time.monotonic() - start:.2f}s)", flush=True)
    print(f"smoke: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "command", nargs="?", default="all", choices=["all", "durable-send", "durable-check"]
    )
    parser.add_argument("token", nargs="?", help="the token durable-send printed")
    parser.add_argument(
        "--timeout", type=float, default=float(os.environ.get("SMOKE_TIMEOUT", "20"))
    )
    args = parser.parse_args(argv)

    if args.command == "durable-send":
        token = uuid.uuid4().hex
        durable_send(token, args.timeout)
        print(token)
        return 0
    if args.command == "durable-check":
        if not args.token:
            parser.error("durable-check needs the token printed by durable-send")
        return run_checks(durable_checks(args.token), args.timeout)

    large = os.urandom(LARGE_SIZE)  # binary, with NUL bytes: needs content-length framing

    def small() -> bytes:
        return uuid.uuid4().hex.encode()

    def big() -> bytes:
        return uuid.uuid4().bytes + large

    checks: list[tuple[str, Callable[[float], None]]] = [
        ("rabbitmq stomp", lambda t: stomp_round_trip("rabbitmq", small(), t)),
        ("activemq stomp", lambda t: stomp_round_trip("activemq", small(), t)),
        ("rabbitmq amqp1.0", amqp_round_trip),
        ("rabbitmq stomp 1.1 MB", lambda t: stomp_round_trip("rabbitmq", big(), t)),
        ("activemq stomp 1.1 MB", lambda t: stomp_round_trip("activemq", big(), t)),
    ]
    return run_checks(checks, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
