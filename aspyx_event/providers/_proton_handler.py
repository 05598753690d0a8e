"""Private: the event handler of the AMQP provider's proton `Container` (its state machine).

Everything here runs on the container thread (see `_proton` for how other threads get here).
`Handler` is the one handler the container runs: it keeps one connection at a time
(reconnecting with backoff), dispatches proton's events, runs the work other threads queued,
and on stop drains: it writes out every accepted send before the connection closes. Its send
side (one sending session with a sender link per address, the window of durable sends awaiting
their outcome, `send_to_queue` sends awaiting their queue's declaration) is the mixin
`_proton_sending.Sending`; its receive side (one session and receiver link per group member,
their settlements and credit) is the mixin `_proton_receiving.Receiving`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from proton import Endpoint, TransportException
from proton.handlers import EndpointStateHandler, MessagingHandler

from aspyx_event.errors import ProviderConnectionError, ProviderError
from aspyx_event.providers._proton_events import Timer, describe, guarded
from aspyx_event.providers._proton_receiving import Receiving
from aspyx_event.providers._proton_sending import Sending

if TYPE_CHECKING:
    from aspyx_event.providers._proton import BridgeSettings, Outgoing, ProtonBridge
    from aspyx_event.providers._proton_delivery import Member
    from aspyx_event.providers.amqp import AddressStrategy

logger = logging.getLogger(__name__)

CALL_EVENT = "aspyx_amqp_call"  # the ApplicationEvent that makes the container run queued work
CLOSE_GRACE = 5.0  # seconds to wait for the broker to confirm the close
_HEARTBEAT = 10.0  # seconds of silence after which proton declares the connection dead
_DRAIN_POLL = 0.01  # seconds between checks whether stop's flush is complete


class Handler(Receiving, Sending, MessagingHandler):
    """The container thread's one event handler and its state: the connection state machine,
    with the send side (`Sending`: senders, pending outcomes) and the receive side
    (`Receiving`: receivers, unsettled deliveries) mixed in."""

    def __init__(self, bridge: ProtonBridge, settings: BridgeSettings, members: list[Member]):
        super().__init__(prefetch=0, auto_accept=False, peer_close_is_error=True)
        # Deliveries are handled by on_delivery below: proton's per-message helpers (decoding
        # into a Message, dispatching to on_message/on_accepted...) cost more than the rest
        # of a message's trip through this thread.
        handlers: list[Any] = list(self.handlers)  # type: ignore[arg-type]  # a list here
        self.handlers = [h for h in handlers if isinstance(h, EndpointStateHandler)]
        self.bridge, self.settings, self.members = bridge, settings, members
        self.ready: Future[None] = Future()
        self.last_error = "no connection attempt yet"
        self.container: Any = None
        self.connection: Any = None
        self.strategy: AddressStrategy | None = None
        self.connected = self.outage = self.paused = self.stopping = self.closing = False
        self.delay = settings.reconnect_delay
        self.generation = 0
        self.stop_deadline = 0.0
        self.stop_reason = "the provider was stopped"
        self.unwritten = (0, 0)  # queued deliveries and output bytes left at stop_timeout
        self.refusal: str | None = None  # the permanent error of the last attempt, if any
        self.init_sending()
        self.init_receiving()

    @guarded
    def on_start(self, event: Any) -> None:
        self.container = event.container
        self.container.selectable(self.bridge.injector)
        self.on_aspyx_amqp_call(event)
        self.connect()
        self.tick()

    @guarded
    def on_aspyx_amqp_call(self, event: Any) -> None:
        commands, settlements, outgoing = self.bridge.take_work()
        for work in commands:
            try:
                work(self)
            except Exception:
                logger.exception("AMQP provider: queued work failed")
        if settlements:
            self.settle_deliveries(settlements)
        self.backlog.extend(outgoing)
        self.flush()

    def connect(self) -> None:
        """Open a new connection (reconnecting is ours, not proton's)."""
        if self.stopping:
            return
        try:
            url, options = self.settings.connect_options()
            self.connection = self.container.connect(
                url, reconnect=False, heartbeat=_HEARTBEAT, **options
            )
        except Exception as exc:
            self.connection, self.last_error = None, f"{type(exc).__name__}: {exc}"
            where = self.settings.where
            self.fail_start(ProviderConnectionError(f"cannot connect to {where}: {exc}"))
            self.schedule_reconnect()

    def schedule_reconnect(self) -> None:
        """Try again after the current backoff delay, then double it."""
        delay, self.delay = self.delay, min(self.delay * 2, self.settings.reconnect_max_delay)
        self.container.schedule(delay, Timer(self.connect))

    def lost(self, connection: Any, reason: str) -> None:
        """The connection ended: fail the outcomes it owed, then reconnect (once per drop)."""
        if connection is None or self.connection is None or connection != self.connection:
            return
        self.connection, self.connected, self.sender_session = None, False, None
        self.generation += 1
        self.last_error = reason
        self.senders.clear()
        self.queues.clear()  # declared again before the next send_to_queue
        self.unsettled.clear()  # the broker requeues them; late settlements become no-ops
        self.receiving.clear()
        for member in self.members:
            member.link = member.session = None
            member.pending = []  # not handed out yet: the broker redelivers them
        owed, self.in_flight = self.in_flight, {}
        for item in owed.values():
            item.future.set_exception(ProviderConnectionError(self.settings.lost_message(reason)))
        if connection.state & Endpoint.LOCAL_ACTIVE:
            connection.close()
        if self.stopping:
            if not self.closing:
                self.stop_reason = f"the connection ended while stopping: {reason}"
            self.container.stop()
            return
        if self.ready.done() and self.ready.exception() is not None:
            return  # start failed (e.g. the certificate was refused): the provider stops us
        if not self.outage:
            self.outage = True
            logger.warning("AMQP broker %s: %s; reconnecting", self.settings.where, reason)
        self.schedule_reconnect()

    def fail_start(self, error: ProviderError) -> None:
        """Make a pending `start` raise `error`."""
        if not self.ready.done():
            self.ready.set_exception(error)

    def check_ready(self) -> None:
        """Release `start` once connected and every group is attached."""
        attached = all(member.attached.is_set() for member in self.members)
        if self.connected and attached and not self.ready.done():
            self.ready.set_result(None)

    @guarded
    def on_connection_opened(self, event: Any) -> None:
        if event.connection != self.connection:
            return
        if self.strategy is None:
            try:
                self.strategy = self.settings.strategy_for(event.connection)
            except ProviderError as exc:
                self.fail_start(exc)
                return
        self.connected, self.delay, self.refusal = True, self.settings.reconnect_delay, None
        if self.outage:
            self.outage = False
            logger.info("AMQP broker %s: reconnected", self.settings.where)
        else:
            logger.info("AMQP broker %s: connected (%s)", self.settings.where, self.strategy.name)
        for member in self.members:
            self.prepare(member)
        for parked in self.parked.values():
            if parked and parked[0].queue is not None:
                self.ensure(parked[0].queue)
        self.flush()
        self.check_ready()

    @guarded
    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        self.last_error = describe(condition)
        if condition is None:
            return
        if condition.name == "amqp:unauthorized-access":
            message = (
                f"the AMQP broker at {self.settings.where} refused user "
                f"{self.settings.user!r}: {self.last_error}.\nHint: check the user and "
                "password of the provider URL."
            )
        elif "certificate verify failed" in (condition.description or ""):
            message = self.settings.certificate_message(self.last_error)
        else:
            return  # worth retrying: the network, or a broker (re)starting
        # Permanent: a pending start fails at once; a running provider retries (the broker's
        # certificate or the user may be fixed), saying why once, not per attempt.
        running = self.ready.done() and self.ready.exception() is None
        if running and message != self.refusal:
            logger.error("%s\nReconnecting until this is fixed.", message)
        self.refusal = message
        self.fail_start(ProviderConnectionError(message))

    @guarded
    def on_disconnected(self, event: Any) -> None:
        reason = describe(event.transport.condition)
        if reason.endswith("connection aborted"):  # proton's words for a socket closed mid-AMQP
            reason += " (the socket closed without an AMQP close: broker restart or network)"
        self.lost(event.connection, reason)

    @guarded
    def on_connection_error(self, event: Any) -> None:
        self.lost(event.connection, describe(event.connection.remote_condition))

    @guarded
    def on_connection_closed(self, event: Any) -> None:
        if self.stopping:
            self.container.stop()

    def on_transport_closed(self, event: Any) -> None:
        self.on_connection_closed(event)

    @guarded
    def on_session_error(self, event: Any) -> None:
        # RabbitMQ answers a failed attach by ending the session: each group has its own.
        reason = describe(event.session.remote_condition)
        for member in self.members:
            if member.session is not None and member.session == event.session:
                error = ProviderError(f"the broker ended group {_q(member)}'s session: {reason}")
                self.member_failed(member, error)
                return
        if not self.stopping:
            self.lost(event.connection, f"the broker ended the sending session: {reason}")

    @guarded
    def on_link_error(self, event: Any) -> None:
        link, reason = event.link, describe(event.link.remote_condition)
        member = getattr(link, "aspyx_member", None)
        if member is None and not self.stopping:
            self.lost(event.connection, f"the broker detached a sender: {reason}")
        elif member is not None and member.link is not None and member.link == link:
            self.member_failed(member, ProviderError(f"the broker detached {_q(member)}: {reason}"))

    @guarded
    def on_link_opened(self, event: Any) -> None:
        link = event.link
        member = getattr(link, "aspyx_member", None)
        if member is None:
            self.flush()  # a sender
        elif member.link is not None and member.link == link and link.remote_source.address:
            member.ever_attached, member.retry_delay = True, 0.0
            if not self.paused:
                link.flow(member.subscription.prefetch)
            member.attached.set()
            self.check_ready()

    @guarded
    def on_delivery(self, event: Any) -> None:
        delivery, link = event.delivery, event.link
        if link.is_sender:
            if delivery.updated:
                self.outcome(delivery)
        elif delivery.aborted:
            delivery.settle()
        elif delivery.readable and not delivery.partial:
            data = link.recv(delivery.pending)
            link.advance()
            self.received(link, delivery, data)

    def shutdown(self) -> None:
        """Stop consuming and flush: `drain` closes once every accepted send is out."""
        self.stopping = self.paused = True
        self.stop_deadline = time.monotonic() + self.settings.stop_timeout
        # after this batch: the sends queued before stop() reach the backlog right after us
        self.container.schedule(0, Timer(self.drain))

    def drain(self) -> None:
        """Close once every accepted send is on the socket and every durable one confirmed.

        A pre-settled (non-durable) message is out once its link queues no delivery (proton
        encoded its transfer frame) and the transport's output is empty (the bytes went to
        the socket, ahead of the close frame). What is left at `stop_timeout` fails in
        `fail_pending`.
        """
        if self.closing:
            return
        unwritten = _unwritten_bytes(self.connection) if self.connected else 0
        queued = sum(sender.queued for sender in self.senders.values())
        if not self.connected:
            self.stop_reason = f"the broker was unreachable ({self.last_error})"
        elif self.backlog or self.in_flight or self.parked or queued or unwritten:
            if time.monotonic() < self.stop_deadline:
                self.container.schedule(_DRAIN_POLL, Timer(self.drain))
                return
            self.stop_reason = f"stop_timeout of {self.settings.stop_timeout:g} s passed"
            self.unwritten = (queued, unwritten)
        self.close()

    def close(self) -> None:
        """Close the connection; the container stops once the broker confirmed (or later)."""
        self.closing = True
        self.bridge.injector.close()
        if self.connection is not None and self.connection.state & Endpoint.LOCAL_ACTIVE:
            self.connection.close()
            self.container.schedule(CLOSE_GRACE, Timer(self.container.stop))
        else:
            self.container.stop()

    def fail_pending(self, unsent: list[Outgoing]) -> None:
        """After the container ended: fail every send and waiter still open (warns once)."""
        parked = [item for items in self.parked.values() for item in items]
        unsent, self.backlog, self.parked = [*self.backlog, *parked, *unsent], deque(), {}
        owed, self.in_flight = list(self.in_flight.values()), {}
        reason, failed = self.stop_reason, len(owed)
        for item in unsent:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(ProviderError(self.settings.unsent_message(reason)))
                failed += 1
        for item in owed:
            item.future.set_exception(ProviderConnectionError(self.settings.lost_message(reason)))
        if failed or any(self.unwritten):
            logger.warning(
                "AMQP broker %s: the provider stopped with %d sends failed (unsent or "
                "unconfirmed) and %d messages / %d bytes not written yet: %s",
                self.settings.where,
                failed,
                *self.unwritten,
                reason,
            )
            self.unwritten = (0, 0)
        for member in self.members:
            if not member.attached.is_set():
                member.error = ProviderConnectionError(reason)
                member.attached.set()
        self.fail_start(ProviderConnectionError(reason))


def _q(member: Member) -> str:
    return member.subscription.queue


def _unwritten_bytes(connection: Any) -> int:
    """Bytes proton still holds for the socket (its output buffer; 0 once closed)."""
    try:
        pending: int = connection.transport.pending()
    except TransportException:
        return 0
    return max(0, pending)
