"""Helpers and fixtures of the StompProvider tests (real RabbitMQ and ActiveMQ)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import queue
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import stomp

from aspyx_event.envelope import Envelope
from aspyx_event.errors import (
    ProviderConnectionError,
)
from aspyx_event.providers.stomp import StompProvider
from tests.integration.inbox import Inbox  # noqa: F401 - re-exported to the test modules

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "guest"
WAIT = 30.0


@dataclass(frozen=True)
class Broker:
    name: str
    port: int


RABBITMQ, ACTIVEMQ = Broker("rabbitmq", 61613), Broker("activemq", 61614)


@pytest.fixture(params=[RABBITMQ, ACTIVEMQ], ids=lambda b: b.name)
def broker(request: pytest.FixtureRequest) -> Broker:
    """Both STOMP brokers (tests/conftest.py skips or fails when they are not reachable)."""
    found: Broker = request.param
    return found


Factory = Callable[..., StompProvider]


@contextlib.contextmanager
def providers(broker: Broker) -> Iterator[Factory]:
    """Creates providers for `broker` (``broker="auto"``) and stops them at the end."""
    made: list[StompProvider] = []

    def factory(port: int | None = None, **options: object) -> StompProvider:
        settings: dict[str, object] = {
            "connect_timeout": 20.0,  # rides out a restart of the shared broker
            "send_timeout": WAIT,
            "reconnect_max_delay": 1.0,
            "heartbeat_ms": 2000,
        }
        settings.update(options)
        provider = StompProvider(
            f"node-{uuid.uuid4().hex[:6]}",
            "127.0.0.1",
            port or broker.port,
            "guest",
            PASSWORD,
            **settings,  # type: ignore[arg-type]
        )
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        provider.stop()


@pytest.fixture
def make(broker: Broker) -> Iterator[Factory]:
    """Providers for the broker of the test's parameter."""
    with providers(broker) as factory:
        yield factory


@pytest.fixture
def make_rabbitmq() -> Iterator[Factory]:
    """Providers for RabbitMQ, for the checks of what only RabbitMQ does."""
    with providers(RABBITMQ) as factory:
        yield factory


@pytest.fixture
def make_activemq() -> Iterator[Factory]:
    """Providers for ActiveMQ, for the checks of what only ActiveMQ does."""
    with providers(ACTIVEMQ) as factory:
        yield factory


class Proxy:
    """A TCP proxy to the broker whose connections can be cut or refused (a simulated outage)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.frozen: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.accepted = 0  # connections taken so far
        self._taken = threading.Condition(self.lock)
        threading.Thread(target=self._accept, daemon=True).start()

    def wait_accepted(self, count: int, timeout: float) -> bool:
        """True once `count` connections in all were accepted, False after `timeout`."""
        with self._taken:
            return self._taken.wait_for(lambda: self.accepted >= count, timeout)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets += [client, upstream]
                self.accepted += 1
                self._taken.notify_all()
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if src not in self.frozen:
                    dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        """Silently drop all traffic of the open connections (a dead peer without a FIN)."""
        with self.lock:
            self.frozen.update(self.sockets)

    def cut(self) -> None:
        """Drop every open connection (the provider sees a broker crash)."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Refuse new connections and drop the open ones (the broker is down)."""
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the proxy thread
        self.server.close()
        self.cut()


class Outages(logging.Handler):
    """Observes the provider's own log: one WARNING per outage."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lost = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "lost the connection" in record.getMessage():
            self.lost.set()


@pytest.fixture
def outages() -> Iterator[Outages]:
    handler = Outages()
    watched = logging.getLogger("aspyx_event.providers")
    watched.addHandler(handler)
    yield handler
    watched.removeHandler(handler)


@pytest.fixture
def proxy(broker: Broker) -> Iterator[Proxy]:
    started = Proxy(broker.port)
    yield started
    started.close()


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"StompTest{tag}", f"group-{tag}"


def envelope(event: str, body: str = "{}", **headers: str) -> Envelope:
    created = Envelope.create(body, event_name=event)
    for key, value in headers.items():
        created.set(key, value)
    return created


def send_all(provider: StompProvider, envelopes: list[Envelope], durable: bool = True) -> None:
    """Send and wait; a send cut off by a broker restart is sent again (at least once)."""
    futures = [(e, provider.send(e, durable)) for e in envelopes]
    for sent, future in futures:
        try:
            future.result(WAIT)
        except ProviderConnectionError:
            provider.send(sent, durable).result(WAIT)


def brokers_sh(*args: str) -> None:
    subprocess.run(["bash", str(REPO / "scripts/brokers.sh"), *args], check=True, timeout=300)


pytestmark = pytest.mark.broker


def rabbitmq_queue(name: str) -> dict[str, object]:
    """The RabbitMQ management API's view of queue `name` (vhost "/")."""
    url = "http://127.0.0.1:15672/api/queues/%2F/" + urllib.parse.quote(name, safe="")
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        info: dict[str, object] = json.load(response)
    return info


class Peek(stomp.ConnectionListener):  # type: ignore[misc]
    """A plain stomp.py connection that looks at a broker queue behind the provider's back."""

    def __init__(self, port: int) -> None:
        self.bodies: dict[str, queue.Queue[str]] = {}
        self.receipts: queue.Queue[str] = queue.Queue()
        self.conn = stomp.Connection12([("127.0.0.1", port)], vhost="/")
        self.conn.set_listener("peek", self)
        self.conn.connect("guest", "guest", wait=True)

    def on_message(self, frame: stomp.utils.Frame) -> None:
        self.bodies[frame.headers["subscription"]].put(frame.body)

    def on_receipt(self, frame: stomp.utils.Frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def first_in(self, destination: str) -> str:
        """The oldest message `destination` keeps, or the marker sent after subscribing."""
        sid = uuid.uuid4().hex
        self.bodies[sid] = queue.Queue()
        self.conn.subscribe(destination, sid, "auto", headers={"receipt": sid})
        assert self.receipts.get(timeout=WAIT) == sid
        self.conn.send(destination, "marker")
        return self.bodies[sid].get(timeout=WAIT)

    def close(self) -> None:
        self.conn.disconnect()
