"""Private: the receive side of the AMQP provider's proton event handler (`Receiving`).

Runs on the container thread, as part of `_proton_handler.Handler`, which mixes it in. Each
group member's queue is declared on the worker thread (`prepare`, then `declared`), then the
member gets its own session and receiver link (retried with the member's own backoff). Received
messages are collected per member and handed to its delivery thread once per round of events
(`on_reactor_quiesced`, see `_proton_delivery.Member`); the settlements that thread queues
come back through the bridge (`settle_deliveries`) and give the link as much credit back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cproton import (  # type: ignore[import-untyped]  # proton's C binding
    pn_delivery_settle,
    pn_delivery_update,
)
from proton import Delivery as ProtonDelivery
from proton import Endpoint

from aspyx_event.errors import ProviderConnectionError, ProviderError
from aspyx_event.handoff import release_wakes
from aspyx_event.providers._proton_events import Timer, guarded, link_name

if TYPE_CHECKING:
    from aspyx_event.providers._proton import BridgeSettings, ProtonBridge
    from aspyx_event.providers._proton_delivery import Member
    from aspyx_event.providers.amqp import AddressStrategy

logger = logging.getLogger(__name__)

_OUTCOMES = {
    "accepted": ProtonDelivery.ACCEPTED,
    # RabbitMQ 3.10 ends the session on MODIFIED(delivery_failed): release to requeue
    "released": ProtonDelivery.RELEASED,
    "rejected": ProtonDelivery.REJECTED,
}


class Receiving:
    """The receive side of `Handler`: group members' links, unsettled deliveries, credit.

    A mixin of `Handler`: `init_receiving` sets up the state of its own; the attributes
    declared below belong to `Handler` (`queues` to its send side) and are shared by its parts.
    """

    bridge: ProtonBridge
    settings: BridgeSettings
    members: list[Member]
    container: Any
    connection: Any
    strategy: AddressStrategy | None
    connected: bool
    paused: bool
    stopping: bool
    generation: int
    last_error: str
    queues: set[str]
    fail_start: Callable[[ProviderError], None]  # Handler's method: `start` raises the error

    def init_receiving(self) -> None:
        """Set up the receive side's own state (empty: nothing received yet)."""
        self.next_key = 0
        self.unsettled: dict[int, tuple[Member, Any]] = {}
        self.receiving: list[Member] = []  # members with pending messages

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
        if self.stopping:
            return  # no new receivers while stopping
        if isinstance(error, ProviderConnectionError):
            self.last_error = f"group {_q(member)}: {error}"
            logger.warning("%s; retrying", self.last_error)
            self.later(member)
        elif error is not None:
            self.member_failed(member, error)
        else:
            assert self.strategy is not None
            subscription = member.subscription
            self.queues.update((subscription.queue, subscription.dead_letter().queue))
            member.session = self.connection.session()
            member.session.open()
            member.link = self.container.create_receiver(
                member.session,
                source=self.strategy.receive_address(member.subscription),
                name=link_name(_q(member), self.settings.container_id),
            )
            member.link.aspyx_member = member

    def later(self, member: Member) -> None:
        """Prepare `member` again after its own backoff delay, if still connected."""
        delay = member.retry_delay or self.settings.reconnect_delay
        member.retry_delay = min(delay * 2, self.settings.reconnect_max_delay)
        generation = self.generation

        def again() -> None:
            if generation == self.generation and self.connected and member in self.members:
                self.prepare(member)

        self.container.schedule(delay, Timer(again))

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

    @guarded
    def on_reactor_quiesced(self, event: Any) -> None:
        # all events of this round are handled: one hand-off per member for what it received
        receiving, self.receiving = self.receiving, []
        for member in receiving:
            member.hand_off(self.bridge)
        release_wakes()  # the event loops awaiting sends completed in this round

    def settle_deliveries(self, settlements: list[tuple[int, str]]) -> None:
        """Settle received deliveries, then grant their members as much new credit; keys no
        longer known (the connection ended since) are no-ops."""
        credit: dict[Member, int] = {}
        unsettled = self.unsettled
        for key, outcome in settlements:
            entry = unsettled.pop(key, None)
            if entry is not None:
                member, delivery = entry
                pn_delivery_update(delivery._impl, _OUTCOMES[outcome])  # no Python wrapper work
                pn_delivery_settle(delivery._impl)
                credit[member] = credit.get(member, 0) + 1
        if not self.paused:
            for member, amount in credit.items():
                if member.link is not None:
                    member.link.flow(amount)

    def pause(self) -> None:
        """Stop granting credit and stop dispatching."""
        self.paused = True


def _q(member: Member) -> str:
    return member.subscription.queue
