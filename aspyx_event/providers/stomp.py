"""The STOMP 1.2 provider (stomp.py): consumer groups on RabbitMQ, ActiveMQ Classic or Artemis.

URL: ``stomp://user:password@host:61613?broker=activemq`` (``stomp+ssl://`` for TLS); the query
takes `StompProvider`'s keyword arguments; ``broker`` defaults to ``auto``, which picks the
address strategy from the CONNECTED frame's ``server`` header.

Mapping of event `E` and group `G` (every SUBSCRIBE uses ``ack:client-individual``):

* ``rabbitmq``: SEND ``/topic/E``; SUBSCRIBE ``/topic/E`` with ``x-queue-name:E::G``,
  ``durable``/``auto-delete`` (a non-durable group's queue goes with its last member),
  ``prefetch-count`` and, for per-process groups, ``x-expires``.
* ``activemq``: SEND ``/topic/E`` (a virtual topic); SUBSCRIBE ``/queue/Consumer.G.E`` with
  ``activemq.prefetchSize``; ``. * > ,`` in G become ``_``. A per-process group SUBSCRIBEs
  ``/topic/E`` itself (a plain non-durable topic subscription).
* ``artemis``: SEND ``E`` with ``destination-type:MULTICAST``; SUBSCRIBE the FQQN ``E::G`` with
  ``subscription-type:MULTICAST``; a per-process group SUBSCRIBEs the address ``E`` itself (a
  non-durable subscription queue). Not tested against a broker.

`send_to_queue` SENDs to one group's queue, or to its dead-letter queue (DLQ), with
``persistent:true`` and a receipt, through the same window, timeouts and reconnects as a durable
send; a ``dead_letters`` subscription SUBSCRIBEs the DLQ (``ack:client-individual`` as always):

* ``rabbitmq``: queue ``/amq/queue/E::G`` (declares nothing, so the queue's own arguments never
  conflict; it must exist: RabbitMQ drops, yet confirms, a message for a missing queue); DLQ
  ``/queue/E::G.dlq`` for SEND and SUBSCRIBE, which declare it durable, never auto-deleted and
  without arguments.
* ``activemq``: queue ``/queue/Consumer.G.E`` (created by the SEND if missing, and fed by the
  virtual topic from then on); DLQ the plain queue ``/queue/E::G.dlq`` (G sanitised as above).
  A per-process group has no queue of its own: its `send_to_queue` fails.
* ``artemis``: queue the FQQN ``E::G`` (``destination-type:MULTICAST``); DLQ the anycast
  address and queue ``E.G.dlq`` (``E::G.dlq`` would be a queue of the multicast address E).
  A per-process group has no queue of its own: its `send_to_queue` fails. Not tested.

Per-process groups (``listener-<server_name>``, host-pid by default) cannot outlive their
process, so each broker removes what they leave behind: RabbitMQ deletes the queue
``per_process_expiry`` seconds after its last member left (``x-expires``); on ActiveMQ and
Artemis the non-durable subscription leaves nothing behind (ActiveMQ only collects EMPTY
inactive queues, so a dead process's ``Consumer.G.E`` would keep collecting every event). The
price on ActiveMQ and Artemis: events sent while the member is disconnected (stopped, or during
a reconnect) are not kept for it, and deliveries it had not settled when its connection ended
are lost with the subscription.

Guarantees (see `aspyx_event.provider.Provider`): a durable send carries ``persistent:true`` and
a receipt; its future completes only on the RECEIPT (at most ``max_in_flight`` unconfirmed at
once) and fails on an ERROR frame or a lost connection. Envelope headers travel as STOMP headers;
a name STOMP or a broker reserves (``content-type``, ``priority``, ``JMS*``, ...) is sent as
``aspyx-<name>`` and restored on receipt. ``reject(requeue=True)`` is a NACK on RabbitMQ and
Artemis. ActiveMQ's NACK dead-letters, so there a copy goes to the group's own queue and the
original is acknowledged on the copy's RECEIPT; a per-process group has no queue of its own (and
a copy to the topic would reach every group), so its delivery stays unacknowledged and is handed
to the callback again, marked redelivered, on the provider's I/O thread. ``reject(requeue=False)``
drops the message (RabbitMQ NACK ``requeue:false``, ActiveMQ NACK to its DLQ, Artemis ACK). The
ActiveMQ copy takes the path of `send_to_queue` (it keeps the original's persistence), so a
delivery of a dead-letter subscription is requeued into the DLQ.

What stomp.py does and what the provider does itself: stomp.py connects (CONNECT/CONNECTED,
TLS, heart-beats) and reads and writes the socket; the provider encodes the frames it sends,
writing all that queued up with one socket write, and parses the MESSAGE, RECEIPT and ERROR
frames stomp.py reads before stomp.py would (its regular expressions per header and listener
calls per frame cost more than the rest of a delivery). Delivery callbacks run on stomp.py's
receiver thread and must be quick (the dispatch layer's hand the delivery to listener threads).

`stop` flushes first: it writes every frame `send` already accepted (non-durable ones too) and
waits for the RECEIPTs of durable sends in flight, for at most ``stop_timeout`` seconds, and
writes the ACKs those RECEIPTs release (ActiveMQ requeues); only what is still unsent or
unconfirmed then fails (`ProviderError`, one WARNING with the count).
It ends with DISCONNECT, never UNSUBSCRIBE: RabbitMQ deletes a durable subscription's queue on
UNSUBSCRIBE.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from aspyx_event.envelope import Envelope
from aspyx_event.errors import (
    MissingProviderLibraryError,
    ProviderConfigurationError,
    ProviderConnectionError,
    ProviderError,
)
from aspyx_event.provider import Delivery, DeliveryCallback, Provider, Subscription
from aspyx_event.providers._arguments import ConstructorArguments
from aspyx_event.providers._stomp_strategies import (
    STRATEGIES,
    ActiveMQStrategy,
    AddressStrategy,
    ArtemisStrategy,
    RabbitMQStrategy,
    RejectAction,
    detect_strategy,
)
from aspyx_event.providers._stomp_wire import (
    REDELIVERED,
    WIRE_PREFIX,
    Inbound,
    LinkSettings,
    SubscribeSpec,
    decode_headers,
    encode_headers,
)

if TYPE_CHECKING:
    from aspyx_event.providers._stomp import StompLink

__all__ = [
    "STRATEGIES",
    "WIRE_PREFIX",
    "ActiveMQStrategy",
    "AddressStrategy",
    "ArtemisStrategy",
    "RabbitMQStrategy",
    "RejectAction",
    "StompDelivery",
    "StompProvider",
    "decode_headers",
    "detect_strategy",
    "encode_headers",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Member:
    subscription: Subscription
    callback: DeliveryCallback


class StompDelivery(Delivery):
    """A MESSAGE frame handed to a callback; settled once, through the provider's I/O thread."""

    def __init__(
        self, provider: StompProvider, member: _Member, inbound: Inbound, again: bool = False
    ) -> None:
        headers, redelivered = decode_headers(inbound.headers)
        self.envelope, self.redelivered = Envelope(inbound.body, headers), redelivered or again
        self.subscription, self.inbound = member.subscription, inbound
        self.persistent = inbound.headers.get("persistent") == "true"
        self.original = (inbound.body, dict(headers))  # for a requeue by copy
        self._provider, self._lock, self._settled = provider, threading.Lock(), False

    def _claim(self) -> bool:
        with self._lock:
            settled, self._settled = self._settled, True
        return not settled

    def ack(self) -> None:
        """ACK with the frame's ``ack`` id; settling again is a no-op."""
        if self._claim():
            self._provider._settle(self, RejectAction.ACK, {})

    def reject(self, requeue: bool = True) -> None:
        """Requeue it for its group, or drop it (the module docstring says how, per broker)."""
        if self._claim():
            strategy = self._provider._strategy_now()
            self._provider._settle(self, *strategy.reject(self.subscription, requeue))


_BROKERS = ("auto", *STRATEGIES)


class StompProvider(Provider):
    """Events over STOMP 1.2 with stomp.py; the module docstring has the mapping and guarantees.

    Args:
        server_name: the unique name of this process (appended to per-process groups).
        host: the broker's host name.
        port: the broker's STOMP port.
        user: login; '' sends none, so the broker's default user applies.
        password: passcode; never logged and never in error messages.
        broker: the address strategy: ``auto`` (from the CONNECTED ``server`` header),
            ``rabbitmq``, ``activemq`` or ``artemis``.
        vhost: the CONNECT frame's ``host`` header (RabbitMQ's virtual host).
        tls: connect with TLS (stomp.py's ``set_ssl``).
        ca_file: CA bundle that verifies the broker (TLS; the system's CAs when None).
        cert_file: client certificate for mutual TLS.
        key_file: the client certificate's private key.
        send_timeout: seconds a send waits for a connection or a free in-flight slot before
            its future fails with `SendTimeoutError`.
        connect_timeout: seconds `start` waits for the first connection; also the limit of each
            connection attempt and of a subscription's confirmation.
        stop_timeout: seconds `stop` spends flushing: writing the sends already accepted and
            waiting for the RECEIPTs of durable ones; what is left then fails.
        reconnect_delay: first pause between connection attempts, doubled after each failure.
        reconnect_max_delay: the longest pause between connection attempts.
        max_in_flight: how many durable sends may await their RECEIPT at once.
        heartbeat_ms: STOMP heart-beat interval both ways, to detect dead connections (0: off).
        per_process_expiry: seconds a per-process group's queue outlives its last member
            (RabbitMQ ``x-expires``; the other brokers drop it with the connection).
    """

    def __init__(
        self,
        server_name: str,
        host: str = "localhost",
        port: int = 61613,
        user: str = "",
        password: str = "",
        *,
        broker: str = "auto",
        vhost: str = "/",
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        send_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        reconnect_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
        max_in_flight: int = 1000,
        heartbeat_ms: int = 10000,
        per_process_expiry: float = 300.0,
    ) -> None:
        self._arguments = ConstructorArguments.of(locals())  # first: for `clone`
        files = (ca_file, cert_file, key_file)
        timeout = min(send_timeout, connect_timeout, stop_timeout)
        _check_options(broker, tls, files, timeout, max_in_flight)
        link_type = _bridge()
        self.server_name = server_name
        self._strategy = STRATEGIES.get(broker.lower())
        self._expiry_ms = int(per_process_expiry * 1000)
        self._members: dict[str, _Member] = {}
        self._lock, self._ids = threading.Lock(), itertools.count(1)
        self._paused, self._dispatching = False, threading.local()
        settings = LinkSettings(
            host, port, user, password, vhost, files if tls else None, connect_timeout,
            send_timeout, stop_timeout, reconnect_delay, reconnect_max_delay, max_in_flight,
            heartbeat_ms,
        )  # fmt: skip
        self._link: StompLink = link_type(settings, self)

    def __repr__(self) -> str:
        return f"StompProvider({self.server_name!r}, {self._link.settings.address!r})"

    def start(self) -> None:
        """Connect and subscribe every group, blocking up to ``connect_timeout``.

        Raises:
            ProviderConnectionError: no connection within ``connect_timeout`` (the message says
                why), or at once: the broker's TLS certificate does not verify (another CA,
                another host name, expired).
            ProviderConfigurationError: ``broker="auto"`` met a broker it does not know, or a
                TLS file (``ca_file``, ``cert_file``, ``key_file``) cannot be loaded.
        """
        self._paused = False
        self._link.start()

    def stop(self) -> None:
        """Flush accepted sends (up to ``stop_timeout``), then DISCONNECT; queues are kept.

        Unsettled deliveries return to their queues. A send still unsent or unconfirmed when
        ``stop_timeout`` ran out fails with `ProviderError`.
        """
        self._link.stop()

    def pause(self) -> None:
        """Stop handing MESSAGE frames to callbacks; they stay unacknowledged."""
        self._paused = True

    def subscribe(self, subscription: Subscription, callback: DeliveryCallback) -> None:
        """Join `subscription.group`; once started, wait for the broker to confirm it.

        Raises:
            ProviderError: the broker refused it (e.g. its queue exists with other arguments).
        """
        sid = f"sub-{next(self._ids)}"
        with self._lock:
            self._members[sid] = _Member(subscription, callback)
        confirmed = self._link.add_subscription(sid)
        if getattr(self._dispatching, "active", False):
            return  # called by a callback: the confirmation arrives on this very thread
        try:
            confirmed.result(self._link.settings.connect_timeout)
        except ProviderError as exc:
            self.refused(sid, exc)
            raise
        except TimeoutError as exc:
            raise ProviderConnectionError(
                f"the STOMP broker at {self._link.settings.address} did not confirm the "
                f"subscription of {subscription.queue!r}.\nHint: look into the broker's log."
            ) from exc

    def send(self, envelope: Envelope, durable: bool) -> Future[None]:
        """Queue `envelope` for every group of its event; see `Provider.send`."""
        event = envelope.event_name
        if not event:
            failed: Future[None] = Future()
            failed.set_exception(ProviderError(f"{envelope!r} names no event."))
            return failed
        target = partial(self._send_target, event, durable)
        return self._link.send(target, envelope.body, encode_headers(envelope.headers), durable)

    def send_to_queue(self, subscription: Subscription, envelope: Envelope) -> Future[None]:
        """Queue `envelope` for `subscription`'s queue (or dead-letter queue) alone, persistent
        and confirmed; see `Provider.send_to_queue` and the module docstring for each broker.

        The future fails with `ProviderConnectionError` before `start` and after `stop`, and
        with `ProviderError` for a per-process group on ActiveMQ or Artemis (no queue of its own).
        """
        target = partial(self._queue_target, subscription, True)
        return self._link.send(target, envelope.body, encode_headers(envelope.headers), True)

    def clone(self) -> StompProvider:
        """A new, unstarted provider with this one's constructor arguments and no members."""
        clone: StompProvider = self._arguments.call(type(self))
        return clone

    def _send_target(self, event: str, durable: bool) -> tuple[str, dict[str, str]]:
        return self._strategy_now().send_target(event, durable)

    def _queue_target(
        self, subscription: Subscription, persistent: bool
    ) -> tuple[str, dict[str, str]]:
        return self._strategy_now().queue_target(subscription, persistent)

    def _strategy_now(self) -> AddressStrategy:
        if self._strategy is None:
            raise ProviderConfigurationError("the broker is unknown before the first connection")
        return self._strategy

    def on_connected(self, server: str) -> None:
        """Link callback: ``broker="auto"`` picks the strategy from the ``server`` header."""
        if self._strategy is None:
            self._strategy = detect_strategy(server)
            logger.info("STOMP broker %r: using the %s strategy", server, self._strategy.name)

    def subscriptions(self) -> Mapping[str, SubscribeSpec]:
        """Link callback: the SUBSCRIBE of every member."""
        strategy = self._strategy_now()
        with self._lock:
            members = list(self._members.items())
        return {sid: strategy.subscribe_spec(m.subscription, self._expiry_ms) for sid, m in members}

    def refused(self, subscription_id: str, error: ProviderError) -> None:
        """Link callback: the broker refused a member; it is dropped so the others work."""
        with self._lock:
            member = self._members.pop(subscription_id, None)
        if member is not None:
            logger.error("dropped the subscription of %s: %s", member.subscription.queue, error)

    def on_message(self, message: Inbound) -> None:
        """Link callback (receiver thread): hand the delivery to its member's callback."""
        self._dispatch(message, again=False)

    def _dispatch(self, message: Inbound, again: bool) -> None:
        member = self._members.get(message.subscription_id)
        if member is None or self._paused:
            return  # never acknowledged: back to the queue on disconnect
        self._dispatching.active = True
        try:
            member.callback(StompDelivery(self, member, message, again))
        except Exception:
            logger.exception("the delivery callback of %s failed", member.subscription.queue)
        finally:
            self._dispatching.active = False

    def _settle(self, delivery: StompDelivery, action: RejectAction, extra: dict[str, str]) -> None:
        inbound = delivery.inbound
        if action is RejectAction.REDISPATCH:
            # even after a reconnect: a topic subscription never brings it back by itself
            self._link.call_soon(partial(self._dispatch, inbound, again=True))
        elif action is not RejectAction.REPUBLISH:
            nack = None if action is RejectAction.ACK else extra
            self._link.settle(inbound.generation, inbound.ack_id, nack)
        elif inbound.generation == self._link.generation:  # else it returns by itself
            self._republish(delivery)

    def _republish(self, delivery: StompDelivery) -> None:
        body, headers = delivery.original
        wire = {**encode_headers(headers), REDELIVERED: "true"}
        inbound = delivery.inbound
        target = partial(self._queue_target, delivery.subscription, delivery.persistent)
        copy = self._link.send(target, body, wire, receipt=True)

        def settle_original(done: Future[None]) -> None:
            if done.exception() is None:
                self._link.settle(inbound.generation, inbound.ack_id, None)
            else:
                logger.warning("requeue of %r failed; it returns on reconnect", delivery.envelope)

        copy.add_done_callback(settle_original)


def _check_options(
    broker: str, tls: bool, files: tuple[str | None, ...], timeout: float, in_flight: int
) -> None:
    problem, hint = "", ""
    if broker.lower() not in _BROKERS:
        problem, hint = f"unknown STOMP broker {broker!r}", f"use one of {', '.join(_BROKERS)}"
    elif not tls and any(files):
        problem, hint = "ca_file, cert_file and key_file need TLS", "pass tls=True (stomp+ssl://)"
    elif timeout <= 0 or in_flight < 1:
        problem, hint = "timeouts must be positive, max_in_flight >= 1", "e.g. 30.0 and 1000"
    if problem:
        raise ProviderConfigurationError(f"{problem}.\nHint: {hint}.")


def _bridge() -> type[StompLink]:
    """The bridge, imported only now: stomp.py is an optional dependency."""
    try:
        from aspyx_event.providers._stomp import StompLink  # noqa: PLC0415
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "stomp":
            raise
        raise MissingProviderLibraryError("STOMP", "stomp.py", "stomp") from exc
    return StompLink
