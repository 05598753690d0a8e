"""Private bridge between python-qpid-proton's event-driven `Container` and `AMQPProvider`.

Threading, in one place: the `Container` runs on its own thread ("aspyx-amqp") and is the only
code that touches proton objects. Other threads reach it only through `ProtonBridge.call` and
`ProtonBridge.send`, which queue work and wake the container through proton's `EventInjector`
with an `ApplicationEvent`. Blocking work (a strategy's `declare`, e.g. an HTTP request) runs
on one worker thread and hands its result back the same way. Objects that leave the container
thread (`AMQPDelivery`, futures) hold no proton objects, only keys into the handler's tables.

This module holds the bridge and what crosses threads; the container's event handler (the
connection, link and flow-control state machine) is `_proton_handler.Handler`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from cproton import pn_message_get_content_type  # type: ignore[import-untyped]  # C binding
from proton import Message, SSLDomain
from proton.reactor import ApplicationEvent, Container, EventInjector

from aspyx_event.envelope import CONTENT_TYPE, MESSAGE_ID, Envelope
from aspyx_event.errors import ProviderConnectionError, ProviderError
from aspyx_event.handoff import Workers
from aspyx_event.provider import Delivery, DeliveryCallback, Subscription
from aspyx_event.providers import _amqp_codec
from aspyx_event.providers._proton_handler import CALL_EVENT, CLOSE_GRACE, Handler

if TYPE_CHECKING:
    from aspyx_event.providers.amqp import AddressStrategy

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """Everything the bridge needs; see `AMQPProvider` for the meaning of each field."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    container_id: str
    strategy: Callable[[str | None], AddressStrategy]
    tls: tuple[str | None, str | None, str | None, bool] | None
    """(ca_file, cert_file, key_file, verify_hostname), or None without TLS."""
    send_timeout: float
    connect_timeout: float
    reconnect_delay: float
    reconnect_max_delay: float
    max_in_flight: int
    stop_timeout: float

    @property
    def where(self) -> str:
        """``host:port`` for messages and logs (never credentials)."""
        return f"{self.host}:{self.port}"

    def connect_options(self) -> tuple[str, dict[str, Any]]:
        """The URL and keyword options of `Container.connect` (container thread: SSLDomain)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        options: dict[str, Any] = {}
        if self.user:
            options.update(user=self.user, password=self.password)
        if self.tls:
            options["ssl_domain"] = _ssl_domain(*self.tls)
        return f"{'amqps' if self.tls else 'amqp'}://{host}:{self.port}", options

    def strategy_for(self, connection: Any) -> AddressStrategy:
        """The address strategy for the broker that opened `connection` (its ``product``)."""
        properties = connection.remote_properties or {}
        product = next((text(v) for k, v in properties.items() if str(k) == "product"), None)
        return self.strategy(product)

    def lost_message(self, reason: str) -> str:
        """Why an in-flight durable send failed when its connection ended."""
        return (
            f"the connection to the AMQP broker at {self.where} ended before it confirmed the "
            f"message ({reason}).\nHint: the broker may have taken it anyway; sending it again "
            "is safe but can produce a duplicate."
        )

    def unsent_message(self, reason: str) -> str:
        """Why a queued send failed when the provider stopped."""
        return (
            f"the AMQP provider for the broker at {self.where} stopped before the message was "
            f"sent ({reason}); it was not sent.\nHint: raise stop_timeout (now "
            f"{self.stop_timeout:g} s), or make sure the broker is reachable when stopping."
        )

    def timeout_message(self, connected: bool, last_error: str, in_flight: int) -> str:
        """Why a send waited longer than `send_timeout`."""
        if not connected:
            return (
                f"the AMQP broker at {self.where} is unreachable ({last_error}); the message "
                f"was not sent within {self.send_timeout:g} s.\nHint: start the broker or "
                "check host and port; the send can be retried."
            )
        return (
            f"the AMQP broker at {self.where} did not take the message within "
            f"{self.send_timeout:g} s ({in_flight} messages await its outcome); it was not "
            "sent.\nHint: the broker may block publishers (memory or disk alarm); raise "
            "send_timeout."
        )


@dataclass(eq=False, slots=True)
class Outgoing:
    """One send on its way; owned by the container thread once queued."""

    envelope: Envelope
    durable: bool
    future: Future[None]
    deadline: float

    def encoded(self) -> bytes:
        """The AMQP encoding of the message to send."""
        envelope = self.envelope
        return _amqp_codec.encode(envelope.body, envelope.headers, self.durable)


@dataclass(eq=False)
class Member:
    """One subscribed group member; `link`, `session` and `pending` live on the container
    thread, the callbacks run on the member's own delivery thread."""

    subscription: Subscription
    callback: DeliveryCallback
    attached: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    ever_attached: bool = False
    retry_delay: float = 0.0
    link: Any = None
    session: Any = None
    pending: list[tuple[int, bytes]] = field(default_factory=list)
    """Received since the container last handed a batch to the delivery thread."""
    thread: Workers | None = None

    def hand_off(self, bridge: ProtonBridge) -> None:
        """Give the pending messages to the delivery thread (container thread)."""
        if self.thread is None:
            name = f"amqp-delivery-{self.subscription.queue}"
            self.thread = Workers(name, 1, lambda batch: self.deliver(bridge, batch))
        self.thread.submit(self.pending)
        self.pending = []

    def deliver(self, bridge: ProtonBridge, batch: list[tuple[int, bytes]]) -> None:
        """Decode each message and run the callback (delivery thread); a failing callback
        requeues. Once the bridge paused, the rest stay unsettled (the broker requeues them)."""
        for key, data in batch:
            if bridge.paused:
                return
            delivery = AMQPDelivery(bridge, key, *_envelope(data))
            try:
                self.callback(delivery)
            except Exception:
                logger.exception(
                    "group %s: the callback failed; requeueing", self.subscription.queue
                )
                delivery.reject(requeue=True)


def _envelope(data: bytes) -> tuple[Envelope, bool]:
    """The envelope of an encoded message and whether it is a redelivery."""
    fast = _amqp_codec.decode(data)
    if fast is not None:
        body, headers, count, first_acquirer = fast
        return Envelope(body, headers), bool(count) or not first_acquirer
    message = Message()  # a shape our decoder leaves to proton
    message.decode(data)
    return decode(message), bool(message.delivery_count) or not message.first_acquirer


class AMQPDelivery(Delivery):
    """A received message; settling it queues the disposition onto the container thread."""

    def __init__(self, bridge: ProtonBridge, key: int, envelope: Envelope, redelivered: bool):
        self.envelope, self.redelivered = envelope, redelivered
        self._bridge, self._key = bridge, key

    def ack(self) -> None:
        """Accept: the broker forgets the message."""
        self._settle("accepted")

    def reject(self, requeue: bool = True) -> None:
        """Release (requeue=True) or reject (drop) the message."""
        self._settle("released" if requeue else "rejected")

    def _settle(self, outcome: str) -> None:
        # the container ignores keys it no longer knows: settling is idempotent
        self._bridge.settle(self._key, outcome)

    def __repr__(self) -> str:
        return f"AMQPDelivery({self.envelope!r}, redelivered={self.redelivered})"


def decode(message: Any) -> Envelope:
    """The envelope of a decoded proton `Message` (shapes `_amqp_codec` leaves to proton);
    any body becomes text, never an exception."""
    headers = {str(key): text(value) for key, value in (message.properties or {}).items()}
    # Message.content_type answers symbol(None) == "None" when absent: read the raw field.
    content_type = pn_message_get_content_type(message._msg)
    if content_type:
        headers[CONTENT_TYPE] = text(content_type)
    if message.id is not None and message.id != "":
        headers[MESSAGE_ID] = text(message.id)
    return Envelope(text(message.body), headers)


def text(value: object) -> str:
    """Best-effort text of an AMQP value (binary bodies arrive as `memoryview`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


class ProtonBridge:
    """Runs the container thread and is the only door into it for other threads."""

    def __init__(
        self,
        settings: BridgeSettings,
        subscriptions: Iterable[tuple[Subscription, DeliveryCallback]],
    ) -> None:
        self.settings = settings
        self._commands: queue.SimpleQueue[Callable[[Handler], None]] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[Outgoing] = queue.SimpleQueue()
        self._settlements: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._wake_pending = self._accepting = False
        self.paused = False
        self._thread: threading.Thread | None = None
        self.injector: Any = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="aspyx-amqp-declare")
        self.handler = Handler(self, settings, [Member(s, c) for s, c in subscriptions])

    def start(self) -> None:
        """Start the container thread and block until connected and subscribed, or failed."""
        with self._lock:
            if self._thread is not None:
                return
            self.injector = EventInjector()
            self._accepting = True
            self._thread = threading.Thread(target=self._run, name="aspyx-amqp", daemon=True)
        self._thread.start()
        timeout, where = self.settings.connect_timeout, self.settings.where
        try:
            self.handler.ready.result(timeout)
        except TimeoutError:
            what = "attach every group" if self.handler.connected else "connect"
            raise ProviderConnectionError(
                f"could not {what} to the AMQP broker at {where} within {timeout:g} s "
                f"({self.handler.last_error}).\nHint: start the broker (e.g. scripts/brokers.sh "
                "start) or check host, port and broker= of the provider URL."
            ) from None

    def stop(self) -> None:
        """Refuse new sends, flush the accepted ones, close, end the container thread.

        Blocks up to `stop_timeout` (plus the close handshake); see `Handler.shutdown`.
        """
        with self._lock:
            self._accepting, thread = False, self._thread
        self.paused = True  # the delivery threads finish the callback they run, no more
        for member in list(self.handler.members):
            if member.thread is not None:
                member.thread.shutdown(wait=True)  # their settlements are queued before ours
        self.executor.shutdown(wait=False, cancel_futures=True)
        if thread is not None:
            self.call(lambda handler: handler.shutdown())
            thread.join(self.settings.stop_timeout + CLOSE_GRACE + 1)
            if thread.is_alive():
                logger.warning("the AMQP I/O thread did not end in time; leaving it behind")
                return
        with self._lock:
            injector, self.injector = self.injector, None
        for fd in injector.pipe if injector is not None else ():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.handler.fail_pending(_drain(self._outbox))

    def pause(self) -> None:
        """Stop dispatching deliveries to callbacks (nothing to do before `start`)."""
        self.paused = True
        if self._thread is not None:
            self.call(lambda handler: handler.pause())

    def subscribe(self, subscription: Subscription, callback: DeliveryCallback) -> None:
        """Add a member; once started, wait (up to `connect_timeout`) until it is attached."""
        member = Member(subscription, callback)
        self.call(lambda handler: handler.add_member(member))
        if self._thread is None:
            return
        if not member.attached.wait(self.settings.connect_timeout):
            logger.warning(
                "group %s is not attached yet (broker %s unreachable); it attaches on reconnect",
                subscription.queue,
                self.settings.where,
            )
        elif member.error is not None:
            raise member.error

    def send(self, envelope: Envelope, durable: bool) -> Future[None]:
        """Queue `envelope` for the container thread; the future tells the outcome."""
        future: Future[None] = Future()
        item = Outgoing(envelope, durable, future, time.monotonic() + self.settings.send_timeout)
        with self._lock:
            if self._accepting and envelope.event_name:
                self._outbox.put(item)
                self._wake()
                return future
        future.set_exception(
            ProviderError(
                f"nothing was sent to the AMQP broker at {self.settings.where}: the provider is "
                "not started (or already stopped), or the envelope has no event-name header."
                "\nHint: call start() first and send envelopes made by Envelope.create()."
            )
        )
        return future

    def settle(self, key: int, outcome: str) -> None:
        """Settle received delivery `key` with `outcome` on the container thread."""
        self._settlements.put((key, outcome))
        with self._lock:
            self._wake()

    def call(self, work: Callable[[Handler], None]) -> None:
        """Run `work(handler)` on the container thread (any thread may call this)."""
        self._commands.put(work)
        with self._lock:
            self._wake()

    def declare(self, strategy: AddressStrategy, member: Member, generation: int) -> None:
        """Run `strategy.declare` on the worker thread; `Handler.declared` gets the outcome."""

        def declare() -> None:
            error: BaseException | None = None
            try:
                strategy.declare(member.subscription)
            except Exception as exc:
                error = exc
            self.call(lambda handler: handler.declared(member, generation, error))

        with contextlib.suppress(RuntimeError):  # the executor is shut down: we are stopping
            self.executor.submit(declare)

    def _wake(self) -> None:
        # The caller holds self._lock; one pending wake-up covers any number of queued items.
        if self.injector is not None and not self._wake_pending:
            self._wake_pending = True
            self.injector.trigger(ApplicationEvent(CALL_EVENT))

    def take_work(
        self,
    ) -> tuple[list[Callable[[Handler], None]], list[tuple[int, str]], list[Outgoing]]:
        """Everything queued by `call`, `settle` and `send` so far (container thread)."""
        with self._lock:
            self._wake_pending = False
        return _drain(self._commands), _drain(self._settlements), _drain(self._outbox)

    def _run(self) -> None:
        container = Container(self.handler)
        container.container_id = self.settings.container_id
        try:
            container.run()
        except Exception:
            logger.exception("the AMQP I/O thread failed")
        finally:
            self.handler.fail_pending(_drain(self._outbox))


def _drain(source: queue.SimpleQueue[_T]) -> list[_T]:
    items: list[_T] = []
    with contextlib.suppress(queue.Empty):
        while True:
            items.append(source.get_nowait())
    return items


def _ssl_domain(
    ca_file: str | None, cert_file: str | None, key_file: str | None, verify_hostname: bool
) -> Any:
    """A client `SSLDomain`: trusted CAs, peer verification, optional client certificate."""
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    if ca_file:
        domain.set_trusted_ca_db(ca_file)
    mode = SSLDomain.VERIFY_PEER_NAME if verify_hostname else SSLDomain.VERIFY_PEER
    domain.set_peer_authentication(mode, ca_file)
    if cert_file:
        domain.set_credentials(cert_file, key_file or cert_file, None)
    return domain


def _q(member: Member) -> str:
    return member.subscription.queue
