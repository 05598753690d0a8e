"""Private: the send side of the AMQP provider's proton event handler (`Sending`).

Runs on the container thread, as part of `_proton_handler.Handler`, which mixes it in. Sends
from `ProtonBridge.send` join the backlog; `flush` hands them, a slice at a time, to one sender
link per address (on one sending session) while the link's credit and the window of durable
sends awaiting their outcome (`max_in_flight`) allow; `outcome` completes a durable send's
future from the broker's disposition. A `send_to_queue` send waits (parked) until its queue is
known to exist on this connection, declared on the worker thread (`ensure`). `tick` fails
sends that waited longer than `send_timeout`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from cproton import (  # type: ignore[import-untyped]  # proton's C binding
    addressof,
    pn_delivery,
    pn_delivery_settle,
    pn_link_advance,
    pn_link_send,
)
from proton import Delivery as ProtonDelivery

from aspyx_event.errors import ProviderConnectionError, ProviderError, SendTimeoutError
from aspyx_event.providers._proton_events import Timer, describe, guarded, link_name

if TYPE_CHECKING:
    from aspyx_event.provider import Subscription
    from aspyx_event.providers._proton import BridgeSettings, Outgoing, ProtonBridge
    from aspyx_event.providers.amqp import AddressStrategy

logger = logging.getLogger(__name__)

_TICK = 0.1  # seconds between checks for sends waiting longer than send_timeout
_SLICE = 2000  # sends handed to links per container event, so I/O happens in between
_PROBLEMS = {  # a send's remote outcome other than ACCEPTED, as told to the sender
    ProtonDelivery.REJECTED: "rejected",
    ProtonDelivery.RELEASED: "released",
    ProtonDelivery.MODIFIED: "modified (not taken)",
}


class Sending:
    """The send side of `Handler`: backlog, sender links, the window and the outcomes.

    A mixin of `Handler`: `init_sending` sets up the state of its own; the attributes declared
    below belong to `Handler` and are shared by its parts.
    """

    bridge: ProtonBridge
    settings: BridgeSettings
    container: Any
    connection: Any
    strategy: AddressStrategy | None
    connected: bool
    closing: bool
    generation: int
    last_error: str

    def init_sending(self) -> None:
        """Set up the send side's own state (empty: nothing sent yet)."""
        self.sender_session: Any = None
        self.senders: dict[str, Any] = {}
        self.flush_pending = False
        self.next_tag = 0
        self.backlog: deque[Outgoing] = deque()
        self.in_flight: dict[int, Outgoing] = {}  # proton delivery address -> its send
        self.queues: set[str] = set()  # queues known to exist on this connection
        self.parked: dict[str, list[Outgoing]] = {}  # queue -> sends awaiting its declaration

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
            if item.queue is None:
                sender = self.sender(self.strategy.send_address(item.envelope.event_name))
            else:
                sender = self.sender(self.strategy.queue_address(item.queue))
            if sender.credit <= 0:
                return  # on_link_flow flushes again
            self.backlog.popleft()
            if item.future.set_running_or_notify_cancel():
                self.transmit(sender, item)
        if not self.flush_pending:
            self.flush_pending = True
            self.container.schedule(0, Timer(self.flush_later))

    def flush_later(self) -> None:
        """The next slice of `flush`."""
        self.flush_pending = False
        self.flush()

    def send_to_queue(self, item: Outgoing) -> None:
        """A `send_to_queue` (see `ProtonBridge.send_to_queue`): it joins the backlog once its
        queue is known to exist on this connection, declared on the worker thread if needed."""
        assert item.queue is not None
        name = item.queue.queue
        if name in self.queues:
            self.backlog.append(item)  # on_aspyx_amqp_call flushes next
            return
        parked = self.parked.setdefault(name, [])
        parked.append(item)
        if len(parked) == 1 and self.connected:  # else a declaration is under way already
            self.ensure(item.queue)

    def ensure(self, subscription: Subscription) -> None:
        """Have the worker thread make sure the queue exists; `ensured` continues here."""
        assert self.strategy is not None
        self.bridge.ensure(self.strategy, subscription, self.generation)

    def ensured(
        self, subscription: Subscription, generation: int, error: BaseException | None
    ) -> None:
        """Release the sends parked for the queue, retry its declaration, or fail them."""
        if generation != self.generation or not self.connected:
            return  # on_connection_opened declares it again
        name = subscription.queue
        if error is None:
            self.queues.add(name)
            self.backlog.extend(self.parked.pop(name, ()))
            self.flush()
        elif isinstance(error, ProviderConnectionError):
            self.last_error = f"queue {name}: {error}"
            logger.warning("%s; retrying", self.last_error)

            def again() -> None:
                if generation == self.generation and self.connected and self.parked.get(name):
                    self.ensure(subscription)

            self.container.schedule(self.settings.reconnect_max_delay, Timer(again))
        else:
            for item in self.parked.pop(name, ()):
                if item.future.set_running_or_notify_cancel():
                    failure = ProviderError(f"cannot send to queue {name}: {error}")
                    failure.__cause__ = error
                    item.future.set_exception(failure)

    def sender(self, address: str) -> Any:
        """The sender link for `address`, created on first use."""
        sender = self.senders.get(address)
        if sender is None:
            if self.sender_session is None:
                self.sender_session = self.connection.session()
                self.sender_session.open()
            sender = self.container.create_sender(
                self.sender_session,
                target=address,
                name=link_name(address, self.settings.container_id),
            )
            self.senders[address] = sender
        return sender

    def transmit(self, sender: Any, item: Outgoing) -> None:
        """Send one message: durable ones unsettled (await the outcome), others pre-settled."""
        self.next_tag += 1
        link = sender._impl  # proton's C API directly: its Python wrappers cost more here
        try:
            delivery = pn_delivery(link, str(self.next_tag))
            if pn_link_send(link, item.encoded()) < 0:
                raise ProviderError(f"the link refused the message ({sender.error})")
            pn_link_advance(link)
        except Exception as exc:
            item.future.set_exception(ProviderError(f"cannot send {item.envelope!r}: {exc}"))
            return
        if item.durable:
            self.in_flight[addressof(delivery)] = item  # alive until settled: a unique key
        else:
            pn_delivery_settle(delivery)  # written out before the connection closes (`drain`)
            item.future.set_result(None)

    @guarded
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
                problem += f" ({describe(delivery.remote.condition)})"
        elif settled:
            problem = "settled without an outcome for"
        else:
            return  # not an outcome yet (e.g. a received-state update)
        item = self.in_flight.pop(addressof(delivery._impl), None)
        delivery.settle()
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
        if self.parked:
            self.expire_parked(now)
        if not self.closing:
            self.container.schedule(_TICK, Timer(self.tick))

    def expire_parked(self, now: float) -> None:
        """Fail `send_to_queue` sends whose queue was not ready within `send_timeout`."""
        for name, parked in list(self.parked.items()):
            if not parked or parked[0].deadline > now:
                continue  # the oldest is first
            for item in parked:
                if item.deadline <= now and item.future.set_running_or_notify_cancel():
                    message = self.settings.queue_timeout_message(name, self.last_error)
                    if not self.connected:
                        message = self.settings.timeout_message(False, self.last_error, 0)
                    item.future.set_exception(SendTimeoutError(message))
            left = [item for item in parked if item.deadline > now]
            if left:
                self.parked[name] = left
            else:
                del self.parked[name]
