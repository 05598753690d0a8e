"""The AMQP 1.0 provider, on python-qpid-proton's event-driven `Container`.

URL format (parsed by `aspyx_event.providers`):
``amqp://user:password@host:port?broker=rabbitmq``; ``amqps://`` selects TLS. Without
``broker=`` the provider reads the broker's product from the AMQP open frame (``auto``).

Broker mapping (event `E`, group `G`, queue `E::G`):

=========  ====================  ======================  ==================================
broker     send to               consume from            queue + binding created by
=========  ====================  ======================  ==================================
rabbitmq   ``/topic/E``          ``/amq/queue/E::G``     the provider, through RabbitMQ's
           (``amq.topic``, key                           management HTTP API, before every
           ``E``)                                        attach: durable queue ``E::G``
                                                         bound to ``amq.topic`` with key ``E``
artemis    address ``E``         FQQN ``E::G``           the broker (auto-create)
=========  ====================  ======================  ==================================

Every group also has a dead-letter queue `E::G.dlq` (`Subscription.dead_letter`), which no
event reaches; `send_to_queue` puts a message straight into one group's queue or dead-letter
queue (no other group sees it), and a dead-letter subscription consumes one:

* rabbitmq: target and source ``/amq/queue/E::G`` or ``/amq/queue/E::G.dlq`` (the default
  exchange routes to the queue of that name). The provider declares a group's dead-letter
  queue with the group (durable, unbound, never expiring, also for per-process groups); before
  the first `send_to_queue` to a queue on each connection it declares the queue if missing.
* artemis: the FQQN ``E::G``, and ``E.dlq::G.dlq`` for the dead-letter queue (address
  ``E.dlq``, to which no event is sent); the broker auto-creates both.

RabbitMQ's AMQP 1.0 plugin (3.x) cannot create a named queue bound to an exchange, hence the
management API (port `management_port`, same credentials; ``guest``/``guest`` when `user` is
empty, like the plugin's default user). Per-process groups get the queue argument
``x-expires`` = `per_process_expiry`, so their queue vanishes once its process is gone. The
provider uses RabbitMQ's default virtual host ``/``. RabbitMQ accepts, and drops, a message
sent to ``/amq/queue/Q`` while Q does not exist: only a queue deleted while the connection
lasts loses messages that way. Artemis relies on its default auto-creation of multicast
addresses and queues and on sends to fully qualified queue names (untested here: Debian ships
no Artemis).

TLS (``amqps``): the broker's certificate chain is verified against `ca_file` (or the system
CAs), and with `verify_hostname` its name too: a DNS name against the certificate's DNS names,
an IP address (e.g. ``127.0.0.1``) against its IP subjectAltNames (checked by OpenSSL during
the handshake, as proton 0.40 compares names only). A certificate that is not accepted makes
`start` fail at once; the provider does not retry it then.

Guarantees (see `aspyx_event.provider.Provider`):

* Durable sends and `send_to_queue` are persistent and unsettled; their future completes only
  on the broker's ``accepted`` outcome and fails with `ProviderError` on any other outcome or
  when the connection drops before the outcome arrived. Such a message may have been taken by
  the broker anyway: retrying it can produce a duplicate (at least once). Up to
  `max_in_flight` of them wait for their outcome at once.
* Non-durable sends are pre-settled (at most once): the future completes once the message is
  on the link; a connection drop right after can lose it.
* `stop` flushes first: every message `send` or `send_to_queue` accepted is handed to its link
  and written to the socket before the connection closes, and the outcomes of durable sends
  are awaited, for up to `stop_timeout` seconds in all. What is still unsent or unconfirmed
  then (or when the broker is unreachable at `stop`) fails with `ProviderError`, logged once
  at WARNING with the count.
* While disconnected, sends wait up to `send_timeout` for the reconnect, then fail with
  `SendTimeoutError` (the message was not sent).
* Deliveries are accepted (`ack`), released (`reject(requeue=True)`) or rejected
  (`reject(requeue=False)`); unsettled deliveries return to the queue when the connection ends.
* The provider reconnects by itself with exponential backoff and re-declares and re-attaches
  every group.

Threads: one I/O thread per provider runs proton; the send futures' done-callbacks run on it
and must return quickly. Each group member has its own delivery thread: the I/O thread hands
it what arrived in one round of I/O, and it runs the callbacks (which may block:
`inline_dispatch`). A small waker thread writes the wake-ups into proton's event pipe, so
that a thread queueing sends or settlements never gives the GIL away per message.
`send`, `send_to_queue`, `pause` and `Delivery.ack`/`reject` may be called from any thread;
`start`, `stop` and `subscribe` from one controlling thread. `stop` lets each delivery thread
finish its current callback; deliveries not handed out stay unsettled.
"""

from __future__ import annotations

import logging
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from aspyx_event.envelope import Envelope
from aspyx_event.errors import (
    MissingProviderLibraryError,
    ProviderConfigurationError,
)
from aspyx_event.provider import DEAD_LETTER_SUFFIX, DeliveryCallback, Provider, Subscription
from aspyx_event.providers._arguments import ConstructorArguments
from aspyx_event.providers._rabbitmq_admin import declare_group_queue, ensure_queue

if TYPE_CHECKING:
    from aspyx_event.providers._proton import ProtonBridge

__all__ = [
    "AMQPProvider",
    "AddressStrategy",
    "ArtemisStrategy",
    "BrokerAccess",
    "RabbitMQStrategy",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    """What an address strategy may need to prepare queues on the broker.

    Attributes:
        host: the broker's host name.
        management_port: port of a management HTTP API (RabbitMQ).
        user: user name for the management API.
        password: password for the management API (never logged).
        ssl_context: TLS context for the management API, or None for plain HTTP.
        per_process_expiry: seconds after which an unused per-process queue is deleted.
        timeout: seconds to wait for one management request.
    """

    host: str
    management_port: int
    user: str
    password: str = field(repr=False)
    ssl_context: ssl.SSLContext | None
    per_process_expiry: float
    timeout: float


class AddressStrategy(ABC):
    """Maps events and groups onto one broker's AMQP 1.0 addresses.

    To support another broker, subclass this, give it a `name` and add it to `STRATEGIES`
    (``broker=<name>``); the provider creates it with the `BrokerAccess`. `declare` runs on
    a worker thread (never the I/O thread) before every attach of a group, including after
    reconnects, so it must be idempotent. It raises `ProviderConnectionError` for failures
    worth retrying and any other `ProviderError` for permanent ones.
    """

    name: ClassVar[str]

    def __init__(self, access: BrokerAccess) -> None:
        self.access = access

    @abstractmethod
    def send_address(self, event: str) -> str:
        """The target address of the sender for event `event`."""

    @abstractmethod
    def receive_address(self, subscription: Subscription) -> str:
        """The source address of the receiver of `subscription`'s group (or dead letters)."""

    def queue_address(self, subscription: Subscription) -> str:
        """The target address that puts a message straight into `subscription`'s queue (its
        dead-letter queue when `subscription.dead_letters`); by default its source address."""
        return self.receive_address(subscription)

    def declare(self, subscription: Subscription) -> None:  # noqa: B027 - optional hook
        """Create the group's queue and binding, and its dead-letter queue, when the broker
        does not do it itself (for a dead-letter subscription: its dead-letter queue)."""

    def ensure(self, subscription: Subscription) -> None:
        """Make sure `subscription`'s queue exists before `send_to_queue` sends to it (runs on
        the worker thread, once per queue and connection); by default `declare`."""
        self.declare(subscription)


class ArtemisStrategy(AddressStrategy):
    """ActiveMQ Artemis: multicast address `E`, fully qualified queue `E::G` (auto-created);
    dead letters in `E.dlq::G.dlq`, on an address of their own that no event is sent to."""

    name = "artemis"

    def send_address(self, event: str) -> str:
        """The address `E` itself."""
        return event

    def receive_address(self, subscription: Subscription) -> str:
        """The fully qualified queue name `E::G`, or `E.dlq::G.dlq`."""
        if subscription.dead_letters:
            suffix = DEAD_LETTER_SUFFIX
            return f"{subscription.event}{suffix}::{subscription.group}{suffix}"
        return subscription.queue


class RabbitMQStrategy(AddressStrategy):
    """RabbitMQ 3.x: send to ``/topic/E``, consume the declared queue ``/amq/queue/E::G``."""

    name = "rabbitmq"

    def send_address(self, event: str) -> str:
        """``/topic/E``: exchange ``amq.topic`` with routing key `E`."""
        return f"/topic/{event}"

    def receive_address(self, subscription: Subscription) -> str:
        """``/amq/queue/E::G`` (or ``/amq/queue/E::G.dlq``): the existing queue, never
        declared by the attach. As a target it publishes to the queue of that name."""
        return f"/amq/queue/{subscription.queue}"

    def declare(self, subscription: Subscription) -> None:
        """Declare the durable queue `E::G` bound to ``amq.topic`` with key `E`, and `E::G.dlq`."""
        declare_group_queue(self.access, subscription)

    def ensure(self, subscription: Subscription) -> None:
        """Declare the queue (as `declare`) unless it exists, whatever its arguments."""
        ensure_queue(self.access, subscription)


STRATEGIES: dict[str, type[AddressStrategy]] = {
    ArtemisStrategy.name: ArtemisStrategy,
    RabbitMQStrategy.name: RabbitMQStrategy,
}
"""The broker names `broker=` accepts besides ``auto``."""

_PRODUCTS = {"rabbitmq": RabbitMQStrategy.name, "artemis": ArtemisStrategy.name}


def detect_strategy(product: str | None, access: BrokerAccess) -> AddressStrategy:
    """The strategy for the broker whose AMQP open frame names `product`.

    Raises:
        ProviderConfigurationError: the product is missing or unknown.
    """
    for marker, name in _PRODUCTS.items():
        if product and marker in product.lower():
            return STRATEGIES[name](access)
    raise ProviderConfigurationError(
        f"cannot tell which broker {access.host} is: its AMQP open frame names product "
        f"{product!r}.\nHint: choose the address mapping explicitly, e.g. "
        f"amqp://host:5672?broker=rabbitmq (one of: {', '.join(sorted(STRATEGIES))})."
    )


class AMQPProvider(Provider):
    """A `Provider` speaking AMQP 1.0 through python-qpid-proton (see the module docstring).

    Args:
        server_name: unique name of this process (appended to per-process groups).
        host: broker host.
        port: broker AMQP port.
        user: SASL user; empty for ANONYMOUS.
        password: SASL password (never logged).
        broker: ``auto`` (detect the broker from the AMQP open frame) or a name in
            `STRATEGIES`: ``rabbitmq``, ``artemis``.
        tls: connect with TLS (``amqps``); the management API then uses HTTPS.
        ca_file: PEM file of trusted CAs for TLS (system defaults when None).
        cert_file: client certificate (PEM) for mutual TLS.
        key_file: private key of `cert_file`.
        verify_hostname: check the broker certificate's name, not only its chain.
        send_timeout: seconds a send waits for the connection before `SendTimeoutError`.
        connect_timeout: seconds `start` (and `subscribe` after start) wait for the broker.
        reconnect_delay: first delay before reconnecting, doubled per failed attempt.
        reconnect_max_delay: upper bound of the reconnect delay.
        max_in_flight: durable sends awaiting the broker's outcome at once.
        stop_timeout: seconds `stop` may spend flushing accepted sends and awaiting the
            outcomes of durable ones before it closes and fails the rest.
        per_process_expiry: seconds an unused per-process group queue survives (RabbitMQ).
        management_port: port of RabbitMQ's management HTTP API.

    Raises:
        MissingProviderLibraryError: python-qpid-proton is not installed.
        ProviderConfigurationError: an option is invalid, or `verify_hostname` cannot check
            the IP address `host` with this build of python-qpid-proton.
    """

    inline_dispatch = True  # callbacks run on per-member delivery threads of our own

    def __init__(
        self,
        server_name: str,
        host: str = "localhost",
        port: int = 5672,
        user: str = "",
        password: str = "",
        *,
        broker: str = "auto",
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify_hostname: bool = True,
        send_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        reconnect_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
        max_in_flight: int = 1000,
        stop_timeout: float = 10.0,
        per_process_expiry: float = 300.0,
        management_port: int = 15672,
    ) -> None:
        arguments = ConstructorArguments.of(locals())  # first: exactly the parameters
        try:
            from aspyx_event.providers import _proton  # noqa: PLC0415 - optional library
        except ImportError as exc:
            raise MissingProviderLibraryError("AMQP", "python-qpid-proton", "amqp") from exc
        _check_positive(
            send_timeout=send_timeout,
            connect_timeout=connect_timeout,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            max_in_flight=max_in_flight,
            stop_timeout=stop_timeout,
            per_process_expiry=per_process_expiry,
        )
        if tls and verify_hostname:
            _proton.check_ip_verification(host)
        self.server_name = server_name
        self._arguments = arguments
        access = BrokerAccess(
            host,
            management_port,
            user,
            password,
            _management_ssl(ca_file, cert_file, key_file, verify_hostname) if tls else None,
            per_process_expiry,
            min(connect_timeout, 10.0),
        )
        self._settings = _proton.BridgeSettings(
            host=host,
            port=port,
            user=user,
            password=password,
            container_id=server_name,
            strategy=_strategy_resolver(broker, access),
            tls=(ca_file, cert_file, key_file, verify_hostname) if tls else None,
            send_timeout=send_timeout,
            connect_timeout=connect_timeout,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=max(reconnect_delay, reconnect_max_delay),
            max_in_flight=max_in_flight,
            stop_timeout=stop_timeout,
        )
        self._bridge_type = _proton.ProtonBridge
        self._subscriptions: list[tuple[Subscription, DeliveryCallback]] = []
        self._bridge: ProtonBridge = self._bridge_type(self._settings, [])

    def start(self) -> None:
        """Connect and attach every subscribed group; blocks up to `connect_timeout`.

        Raises:
            ProviderConnectionError: the broker was not reachable in time.
            ProviderConfigurationError: the broker could not be identified (``auto``).
            ProviderError: a group's queue could not be declared or attached.
        """
        try:
            self._bridge.start()
        except BaseException:
            self._renew_bridge()
            raise

    def stop(self) -> None:
        """Flush accepted sends (up to `stop_timeout`), then close the connection.

        Unsettled deliveries return to their queues; queues stay. Sends made while or after
        stopping fail at once.
        """
        self._renew_bridge()

    def pause(self) -> None:
        """Stop handing new deliveries to callbacks; handed-out ones can still be settled."""
        self._bridge.pause()

    def subscribe(self, subscription: Subscription, callback: DeliveryCallback) -> None:
        """Attach `callback` to the group; after `start`, waits until the group is attached."""
        self._bridge.subscribe(subscription, callback)
        self._subscriptions.append((subscription, callback))

    def send(self, envelope: Envelope, durable: bool) -> Future[None]:
        """Send `envelope` to every group of its event (see the module docstring)."""
        return self._bridge.send(envelope, durable)

    def send_to_queue(self, subscription: Subscription, envelope: Envelope) -> Future[None]:
        """Put `envelope` into the group's queue, or its dead-letter queue when
        `subscription.dead_letters` (see the module docstring): persistent, and the future
        completes on the broker's ``accepted``, like a durable `send`."""
        return self._bridge.send_to_queue(subscription, envelope)

    def clone(self) -> AMQPProvider:
        """A new, unstarted provider made with the same constructor arguments."""
        clone: AMQPProvider = self._arguments.call(type(self))
        return clone

    def __repr__(self) -> str:
        values = self._arguments.values
        return (
            f"{type(self).__name__}({self.server_name!r}, {values['host']!r}, {values['port']!r}, "
            f"broker={values['broker']!r}, tls={values['tls']!r})"
        )

    def _renew_bridge(self) -> None:
        old, self._bridge = self._bridge, self._bridge_type(self._settings, self._subscriptions)
        old.stop()


def _strategy_resolver(
    broker: str, access: BrokerAccess
) -> Callable[[str | None], AddressStrategy]:
    if broker == "auto":
        return lambda product: detect_strategy(product, access)
    if broker not in STRATEGIES:
        raise ProviderConfigurationError(
            f"unknown AMQP broker {broker!r}.\nHint: use one of: "
            f"{', '.join(['auto', *sorted(STRATEGIES)])}."
        )
    strategy = STRATEGIES[broker](access)
    return lambda product: strategy


def _management_ssl(
    ca_file: str | None, cert_file: str | None, key_file: str | None, verify_hostname: bool
) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file)
        context.check_hostname = verify_hostname
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProviderConfigurationError(
            f"cannot load the TLS files (ca_file={ca_file!r}, cert_file={cert_file!r}): {exc}.\n"
            "Hint: pass readable PEM files, or omit ca_file to trust the system CAs."
        ) from exc
    return context


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ProviderConfigurationError(
                f"AMQPProvider option {name}={value!r} must be positive.\n"
                f"Hint: pass a number greater than 0 for {name}."
            )
