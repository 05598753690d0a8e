"""Private bridge between python-qpid-proton's event-driven `Container` and `AMQPProvider`.

Threading, in one place: the `Container` runs on its own thread ("aspyx-amqp") and is the only
code that touches proton objects. Other threads reach it only through `ProtonBridge.call` and
`ProtonBridge.send`, which queue work and wake the container through proton's `EventInjector`
with an `ApplicationEvent`. Blocking work (a strategy's `declare` or `ensure`, e.g. an HTTP
request) runs on one worker thread and hands its result back the same way. Objects that leave
the container thread (`AMQPDelivery`, futures) hold no proton objects, only keys into the
handler's tables.

This module holds the bridge (`ProtonBridge`, the only door into the container thread), its
settings and the sends on their way (`Outgoing`). The rest, one concern per module:

* `_proton_handler.Handler`: the container's event handler, the connection state machine;
  its send side is `_proton_sending.Sending`, its receive side `_proton_receiving.Receiving`,
  their shared helpers are in `_proton_events` (all on the container thread);
* `_proton_delivery`: what a group member's delivery thread runs (`Member`, `AMQPDelivery`);
* `_proton_tls`: the `SSLDomain` and OpenSSL's check of an IP address.
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

# The package itself first: a missing or blocked proton (sys.modules["proton"] = None) fails
# this import even when proton.reactor is already loaded; AMQPProvider reports the extra.
import proton  # noqa: F401  # imported for that failure only
from proton.reactor import ApplicationEvent, Container, EventInjector

from aspyx_event.envelope import Envelope
from aspyx_event.errors import ProviderConnectionError, ProviderError
from aspyx_event.handoff import Workers, hold_wakes, release_wakes
from aspyx_event.provider import DeliveryCallback, Subscription
from aspyx_event.providers import _amqp_codec
from aspyx_event.providers._proton_delivery import AMQPDelivery, Member, decode, text
from aspyx_event.providers._proton_handler import CALL_EVENT, CLOSE_GRACE, Handler
from aspyx_event.providers._proton_tls import check_ip_verification, ip_literal
from aspyx_event.providers._proton_tls import ssl_domain as _ssl_domain

if TYPE_CHECKING:
    from aspyx_event.providers.amqp import AddressStrategy

__all__ = [  # with what moved to _proton_delivery and _proton_tls, importable from here as before
    "AMQPDelivery",
    "BridgeSettings",
    "Member",
    "Outgoing",
    "ProtonBridge",
    "check_ip_verification",
    "decode",
    "ip_literal",
    "text",
]

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
            options["ssl_domain"] = _ssl_domain(*self.tls, host=self.host)
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

    def certificate_message(self, reason: str) -> str:
        """Why TLS refused the broker (permanent: `start` fails at once)."""
        return (
            f"the certificate of the AMQP broker at {self.where} was not accepted: {reason}.\n"
            "Hint: check ca_file (the CA that signed the broker's certificate), "
            f"verify_hostname, and the certificate's names ({self.host!r} must be one of its "
            "DNS names or IP addresses)."
        )

    def queue_timeout_message(self, queue: str, last_error: str) -> str:
        """Why a `send_to_queue` waited longer than `send_timeout` for its queue."""
        return (
            f"the queue {queue} on the AMQP broker at {self.where} could not be prepared within "
            f"{self.send_timeout:g} s ({last_error}); the message was not sent.\nHint: see the "
            "error in parentheses; the send can be retried."
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
    queue: Subscription | None = None
    """`send_to_queue`: the group whose queue (or dead-letter queue) this goes to; None: the
    event's address."""

    def encoded(self) -> bytes:
        """The AMQP encoding of the message to send."""
        envelope = self.envelope
        return _amqp_codec.encode(envelope.body, envelope.headers, self.durable)


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
        self.waker: Workers | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="aspyx-amqp-declare")
        self.handler = Handler(self, settings, [Member(s, c) for s, c in subscriptions])

    def start(self) -> None:
        """Start the container thread and block until connected and subscribed, or failed."""
        with self._lock:
            if self._thread is not None:
                return
            self.injector = EventInjector()
            self.waker = Workers("aspyx-amqp-waker", 1, lambda _: self._trigger())
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
        if thread is not None:
            self.call(lambda handler: handler.shutdown())
            thread.join(self.settings.stop_timeout + CLOSE_GRACE + 1)
        # only now: the flush may wait for a queue that send_to_queue needs declared
        self.executor.shutdown(wait=False, cancel_futures=True)
        if thread is not None and thread.is_alive():
            logger.warning("the AMQP I/O thread did not end in time; leaving it behind")
            return
        with self._lock:
            injector, self.injector = self.injector, None
            waker, self.waker = self.waker, None
        if waker is not None:
            waker.shutdown()
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

    def send_to_queue(self, subscription: Subscription, envelope: Envelope) -> Future[None]:
        """Queue a persistent send straight into `subscription`'s queue (`Handler.send_to_queue`
        waits for the queue to be declared first)."""
        future: Future[None] = Future()
        deadline = time.monotonic() + self.settings.send_timeout
        item = Outgoing(envelope, True, future, deadline, subscription)
        with self._lock:
            if self._accepting:
                self._commands.put(lambda handler: handler.send_to_queue(item))
                self._wake()
                return future
        future.set_exception(
            ProviderError(
                f"nothing was sent to queue {subscription.queue} on the AMQP broker at "
                f"{self.settings.where}: the provider is not started or already stopped."
                "\nHint: call start() first, and send before stop()."
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
        self._on_worker(
            lambda: strategy.declare(member.subscription),
            lambda handler, error: handler.declared(member, generation, error),
        )

    def ensure(
        self, strategy: AddressStrategy, subscription: Subscription, generation: int
    ) -> None:
        """Run `strategy.ensure` on the worker thread; `Handler.ensured` gets the outcome."""
        self._on_worker(
            lambda: strategy.ensure(subscription),
            lambda handler, error: handler.ensured(subscription, generation, error),
        )

    def _on_worker(
        self, work: Callable[[], None], then: Callable[[Handler, BaseException | None], None]
    ) -> None:
        def run() -> None:
            error: BaseException | None = None
            try:
                work()
            except Exception as exc:
                error = exc
            self.call(lambda handler: then(handler, error))

        with contextlib.suppress(RuntimeError):  # the executor is shut down: we are stopping
            self.executor.submit(run)

    def _wake(self) -> None:
        # The caller holds self._lock; one pending wake-up covers any number of queued items.
        if self.waker is not None and not self._wake_pending:
            self._wake_pending = True
            self.waker.submit(None)

    def _trigger(self) -> None:
        """Wake the container thread, on the waker thread: a thread writing to the pipe gives
        up the GIL, and the woken container thread would take over at once, per message when
        sends or settlements come one by one. `_wake` keeps the GIL, so the sending thread
        queues the rest of its burst before this runs."""
        with self._lock:  # stop closes the injector's pipe under the lock
            if self.injector is not None:
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
        hold_wakes()  # loop wake-ups of completed sends: once per round (on_reactor_quiesced)
        try:
            container.run()
        except Exception:
            logger.exception("the AMQP I/O thread failed")
        finally:
            self.handler.fail_pending(_drain(self._outbox))
            release_wakes()


def _drain(source: queue.SimpleQueue[_T]) -> list[_T]:
    items: list[_T] = []
    with contextlib.suppress(queue.Empty):
        while True:
            items.append(source.get_nowait())
    return items
