"""Private: the event handler of the AMQP provider's proton `Container` (its state machine).

Everything here runs on the container thread (see `_proton` for how other threads get here):
one connection at a time (reconnecting with backoff), one sending session with a sender link
per address, one session and receiver link per group member, the window of durable sends
awaiting their outcome, and the shutdown drain that writes out every accepted send before
the connection closes.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from proton import Delivery as ProtonDelivery
from proton import Endpoint, TransportException
from proton.handlers import EndpointStateHandler, MessagingHandler

from aspyx_event.errors import ProviderConnectionError, ProviderError, SendTimeoutError

if TYPE_CHECKING:
    from aspyx_event.providers._proton import BridgeSettings, Member, Outgoing, ProtonBridge
    from aspyx_event.providers.amqp import AddressStrategy

logger = logging.getLogger(__name__)

CALL_EVENT = "aspyx_amqp_call"  # the ApplicationEvent that makes the container run queued work
CLOSE_GRACE = 5.0  # seconds to wait for the broker to confirm the close
_HEARTBEAT = 10.0  # seconds of silence after which proton declares the connection dead
_TICK = 0.1  # seconds between checks for sends waiting longer than send_timeout
_DRAIN_POLL = 0.01  # seconds between checks whether stop's flush is complete
_SLICE = 2000  # sends handed to links per container event, so I/O happens in between
_OUTCOMES = {
    "accepted": ProtonDelivery.ACCEPTED,
    # RabbitMQ 3.10 ends the session on MODIFIED(delivery_failed): release to requeue
    "released": ProtonDelivery.RELEASED,
    "rejected": ProtonDelivery.REJECTED,
}
_PROBLEMS = {  # a send's remote outcome other than ACCEPTED, as told to the sender
    ProtonDelivery.REJECTED: "rejected",
    ProtonDelivery.RELEASED: "released",
    ProtonDelivery.MODIFIED: "modified (not taken)",
}


def _guarded(method: Callable[[Handler, Any], None]) -> Callable[[Handler, Any], None]:
    """Handler methods never raise into proton: an exception would end the container thread."""

    @functools.wraps(method)
    def guarded(self: Handler, event: Any) -> None:
        try:
            method(self, event)
        except Exception:
            logger.exception("AMQP provider: %s failed", method.__name__)

    return guarded


class _Timer:
    """A proton timer task running `work` on the container thread."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work

    def on_timer_task(self, event: Any) -> None:
        try:
            self.work()
        except Exception:
            logger.exception("AMQP provider: a timer task failed")


class Handler(MessagingHandler):
    """The container thread's state: connection, senders, receivers and pending outcomes."""

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
        self.sender_session: Any = None
        self.senders: dict[str, Any] = {}
        self.strategy: AddressStrategy | None = None
        self.connected = self.outage = self.paused = self.stopping = self.closing = False
        self.flush_pending = False
        self.delay = settings.reconnect_delay
        self.generation = self.next_key = self.next_tag = 0
        self.stop_deadline = 0.0
        self.stop_reason = "the provider was stopped"
        self.unwritten = (0, 0)  # queued deliveries and output bytes left at stop_timeout
        self.backlog: deque[Outgoing] = deque()
        self.in_flight: dict[Any, Outgoing] = {}  # proton delivery -> the send awaiting it
        self.unsettled: dict[int, tuple[Member, Any]] = {}
        self.receiving: list[Member] = []  # members with pending messages

    @_guarded
    def on_start(self, event: Any) -> None:
        self.container = event.container
        self.container.selectable(self.bridge.injector)
        self.on_aspyx_amqp_call(event)
        self.connect()
        self.tick()

    @_guarded
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
        self.container.schedule(delay, _Timer(self.connect))

    def lost(self, connection: Any, reason: str) -> None:
        """The connection ended: fail the outcomes it owed, then reconnect (once per drop)."""
        if connection is None or self.connection is None or connection != self.connection:
            return
        self.connection, self.connected, self.sender_session = None, False, None
        self.generation += 1
        self.last_error = reason
        self.senders.clear()
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

    @_guarded
    def on_connection_opened(self, event: Any) -> None:
        if event.connection != self.connection:
            return
        if self.strategy is None:
            try:
                self.strategy = self.settings.strategy_for(event.connection)
            except ProviderError as exc:
                self.fail_start(exc)
                return
        self.connected, self.delay = True, self.settings.reconnect_delay
        if self.outage:
            self.outage = False
            logger.info("AMQP broker %s: reconnected", self.settings.where)
        else:
            logger.info("AMQP broker %s: connected (%s)", self.settings.where, self.strategy.name)
        for member in self.members:
            self.prepare(member)
        self.flush()
        self.check_ready()

    @_guarded
    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        self.last_error = _describe(condition)
        if condition is not None and condition.name == "amqp:unauthorized-access":
            self.fail_start(
                ProviderConnectionError(
                    f"the AMQP broker at {self.settings.where} refused user "
                    f"{self.settings.user!r}: {self.last_error}.\nHint: check the user and "
                    "password of the provider URL."
                )
            )

    @_guarded
    def on_disconnected(self, event: Any) -> None:
        reason = _describe(event.transport.condition)
        if reason.endswith("connection aborted"):  # proton's words for a socket closed mid-AMQP
            reason += " (the socket closed without an AMQP close: broker restart or network)"
        self.lost(event.connection, reason)

    @_guarded
    def on_connection_error(self, event: Any) -> None:
        self.lost(event.connection, _describe(event.connection.remote_condition))

    @_guarded
    def on_connection_closed(self, event: Any) -> None:
        if self.stopping:
            self.container.stop()

    def on_transport_closed(self, event: Any) -> None:
        self.on_connection_closed(event)

    @_guarded
    def on_session_error(self, event: Any) -> None:
        # RabbitMQ answers a failed attach by ending the session: each group has its own.
        reason = _describe(event.session.remote_condition)
        for member in self.members:
            if member.session is not None and member.session == event.session:
                error = ProviderError(f"the broker ended group {_q(member)}'s session: {reason}")
                self.member_failed(member, error)
                return
        if not self.stopping:
            self.lost(event.connection, f"the broker ended the sending session: {reason}")

    @_guarded
    def on_link_error(self, event: Any) -> None:
        link, reason = event.link, _describe(event.link.remote_condition)
        member = getattr(link, "aspyx_member", None)
        if member is None and not self.stopping:
            self.lost(event.connection, f"the broker detached a sender: {reason}")
        elif member is not None and member.link is not None and member.link == link:
            self.member_failed(member, ProviderError(f"the broker detached {_q(member)}: {reason}"))

    def add_member(self, member: Member) -> None:
        """A group subscribed (maybe before start); attach it if connected."""
        self.members.append(member)
        if self.connected:
            self.prepare(member)

    def prepare(self, member: Member) -> None:
        """Declare the group's queue on the worker thread; `declared` continues here."""
        assert self.strategy is not None
        self.bridge.declare(self.strategy, member, self.generation)

    def declared(self, member: Member, generation: int, error: BaseException | None) -> None:
        """Attach the group's receiver on its own session, or retry, or report the error."""
        if generation != self.generation or not self.connected or member not in self.members:
            return
        if isinstance(error, ProviderConnectionError):
            self.last_error = f"group {_q(member)}: {error}"
            logger.warning("%s; retrying", self.last_error)
            self.later(member)
        elif error is not None:
            self.member_failed(member, error)
        else:
            assert self.strategy is not None
            member.session = self.connection.session()
            member.session.open()
            member.link = self.container.create_receiver(
                member.session,
                source=self.strategy.receive_address(member.subscription),
                name=self.link_name(_q(member)),
            )
            member.link.aspyx_member = member

    def link_name(self, address: str) -> str:
        """A unique link name naming the address and this process."""
        return f"{address}@{self.settings.container_id}:{uuid.uuid4().hex[:8]}"

    def later(self, member: Member) -> None:
        """Prepare `member` again after its own backoff delay, if still connected."""
        delay = member.retry_delay or self.settings.reconnect_delay
        member.retry_delay = min(delay * 2, self.settings.reconnect_max_delay)
        generation = self.generation

        def again() -> None:
            if generation == self.generation and self.connected and member in self.members:
                self.prepare(member)

        self.container.schedule(delay, _Timer(again))

    def member_failed(self, member: Member, error: BaseException) -> None:
        """A group could not be declared or attached: retry if it worked before, else report."""
        self.unsettled = {k: v for k, v in self.unsettled.items() if v[0] is not member}
        member.pending = []
        if member in self.receiving:
            self.receiving.remove(member)
        if member.session is not None and member.session.state & Endpoint.LOCAL_ACTIVE:
            member.session.close()
        member.link = member.session = None
        if member.ever_attached:
            logger.error("group %s: %s; re-attaching", _q(member), error)
            self.later(member)
            return
        logger.error("group %s cannot be attached: %s", _q(member), error)
        self.members.remove(member)
        if not isinstance(error, ProviderError):
            error = ProviderError(f"group {_q(member)} cannot be attached: {error}")
        member.error = error
        member.attached.set()
        self.fail_start(error)

    @_guarded
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

    @_guarded
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

    def received(self, link: Any, delivery: Any, data: bytes) -> None:
        """Hand a complete received message to its member's callback."""
        member = getattr(link, "aspyx_member", None)
        if member is None or member.link is None or member.link != link or self.paused:
            return  # left unsettled: the broker requeues it when the link or connection ends
        self.next_key += 1
        self.unsettled[self.next_key] = (member, delivery)
        if not member.pending:
            self.receiving.append(member)
        member.pending.append((self.next_key, data))

    @_guarded
    def on_reactor_quiesced(self, event: Any) -> None:
        # all events of this round are handled: one hand-off per member for what it received
        receiving, self.receiving = self.receiving, []
        for member in receiving:
            member.hand_off(self.bridge)

    def settle_deliveries(self, settlements: list[tuple[int, str]]) -> None:
        """Settle received deliveries, then grant their members as much new credit; keys no
        longer known (the connection ended since) are no-ops."""
        credit: dict[Member, int] = {}
        unsettled = self.unsettled
        for key, outcome in settlements:
            entry = unsettled.pop(key, None)
            if entry is not None:
                member, delivery = entry
                delivery.update(_OUTCOMES[outcome])
                delivery.settle()
                credit[member] = credit.get(member, 0) + 1
        if not self.paused:
            for member, amount in credit.items():
                if member.link is not None:
                    member.link.flow(amount)

    def pause(self) -> None:
        """Stop granting credit and stop dispatching."""
        self.paused = True

    def flush(self) -> None:
        """Hand queued sends to their links while the window and the link credit allow.

        At most `_SLICE` per call, the rest right after on a timer: a burst of sends never
        keeps the I/O thread from writing to the socket, settling or checking its timers.
        """
        if not self.connected or self.closing or self.strategy is None:
            return
        for _ in range(_SLICE):
            if not self.backlog or len(self.in_flight) >= self.settings.max_in_flight:
                return  # an outcome flushes again
            item = self.backlog[0]
            sender = self.sender(self.strategy.send_address(item.envelope.event_name))
            if sender.credit <= 0:
                return  # on_link_flow flushes again
            self.backlog.popleft()
            if item.future.set_running_or_notify_cancel():
                self.transmit(sender, item)
        if not self.flush_pending:
            self.flush_pending = True
            self.container.schedule(0, _Timer(self.flush_later))

    def flush_later(self) -> None:
        """The next slice of `flush`."""
        self.flush_pending = False
        self.flush()

    def sender(self, address: str) -> Any:
        """The sender link for `address`, created on first use."""
        sender = self.senders.get(address)
        if sender is None:
            if self.sender_session is None:
                self.sender_session = self.connection.session()
                self.sender_session.open()
            sender = self.container.create_sender(
                self.sender_session, target=address, name=self.link_name(address)
            )
            self.senders[address] = sender
        return sender

    def transmit(self, sender: Any, item: Outgoing) -> None:
        """Send one message: durable ones unsettled (await the outcome), others pre-settled."""
        self.next_tag += 1
        try:
            delivery = sender.delivery(str(self.next_tag))
            sender.stream(item.encoded())
            sender.advance()
        except Exception as exc:
            item.future.set_exception(ProviderError(f"cannot send {item.envelope!r}: {exc}"))
            return
        if item.durable:
            self.in_flight[delivery] = item
        else:
            delivery.settle()  # written out before the connection closes: see `drain`
            item.future.set_result(None)

    @_guarded
    def on_link_flow(self, event: Any) -> None:
        if event.link.is_sender and event.link.credit > 0:
            self.flush()

    def outcome(self, delivery: Any) -> None:
        """Complete the future of a durable send from the broker's disposition."""
        state, settled = delivery.remote_state, delivery.settled
        if state == ProtonDelivery.ACCEPTED:
            problem = None
        elif state in _PROBLEMS:
            problem = _PROBLEMS[state]
            if state == ProtonDelivery.REJECTED:
                problem += f" ({_describe(delivery.remote.condition)})"
        elif settled:
            problem = "settled without an outcome for"
        else:
            return  # not an outcome yet (e.g. a received-state update)
        delivery.settle()
        item = self.in_flight.pop(delivery, None)
        if item is None:
            return
        if problem is None:
            item.future.set_result(None)
        else:
            envelope = item.envelope
            item.future.set_exception(
                ProviderError(
                    f"the AMQP broker at {self.settings.where} {problem} message "
                    f"{envelope.message_id!r} of event {envelope.event_name!r}: it was not "
                    "taken.\nHint: check the broker's log and limits."
                )
            )
        self.flush()

    def tick(self) -> None:
        """Fail sends that waited longer than `send_timeout` to be handed to a link."""
        now = time.monotonic()
        while self.backlog and self.backlog[0].deadline <= now:
            item = self.backlog.popleft()
            if item.future.set_running_or_notify_cancel():
                message = self.settings.timeout_message(
                    self.connected, self.last_error, len(self.in_flight)
                )
                item.future.set_exception(SendTimeoutError(message))
        if not self.closing:
            self.container.schedule(_TICK, _Timer(self.tick))

    def shutdown(self) -> None:
        """Stop consuming and flush: `drain` closes once every accepted send is out."""
        self.stopping = self.paused = True
        self.stop_deadline = time.monotonic() + self.settings.stop_timeout
        # after this batch: the sends queued before stop() reach the backlog right after us
        self.container.schedule(0, _Timer(self.drain))

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
        elif self.backlog or self.in_flight or queued or unwritten:
            if time.monotonic() < self.stop_deadline:
                self.container.schedule(_DRAIN_POLL, _Timer(self.drain))
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
            self.container.schedule(CLOSE_GRACE, _Timer(self.container.stop))
        else:
            self.container.stop()

    def fail_pending(self, unsent: list[Outgoing]) -> None:
        """After the container ended: fail every send and waiter still open (warns once)."""
        unsent, self.backlog = [*self.backlog, *unsent], deque()
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


def _describe(condition: Any) -> str:
    if condition is None:
        return "closed by the peer"
    return f"{condition.name}: {condition.description}" if condition.description else condition.name


def _unwritten_bytes(connection: Any) -> int:
    """Bytes proton still holds for the socket (its output buffer; 0 once closed)."""
    try:
        pending: int = connection.transport.pending()
    except TransportException:
        return 0
    return max(0, pending)
