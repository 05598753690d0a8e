"""Private: the receive side of the AMQP provider that leaves the container thread.

A `Member` (one subscribed group member) collects the messages its receiver link got on the
container thread and hands them, a batch per round of events, to its own delivery thread
("amqp-delivery-<queue>"), which decodes each and runs the member's callback with an
`AMQPDelivery`. Settling that delivery only queues the outcome back to the container thread
through `ProtonBridge.settle`: nothing here touches a proton object off the container thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cproton import pn_message_get_content_type  # type: ignore[import-untyped]  # C binding
from proton import Message

from aspyx_event.envelope import CONTENT_TYPE, MESSAGE_ID, Envelope
from aspyx_event.handoff import Workers
from aspyx_event.provider import Delivery, DeliveryCallback, Subscription
from aspyx_event.providers import _amqp_codec

if TYPE_CHECKING:
    from aspyx_event.providers._proton import ProtonBridge

logger = logging.getLogger(__name__)


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
