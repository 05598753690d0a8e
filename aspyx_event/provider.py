"""The provider contract: what a transport (local, AMQP, STOMP, ...) must guarantee.

The `EventManager` talks to exactly this interface; everything broker-specific (connections,
threads, addresses, acknowledgements on the wire) lives behind it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

from .envelope import Envelope


@dataclass(frozen=True, slots=True)
class Subscription:
    """One consumer group attached to one event.

    Attributes:
        event: the event name `E` (the address events are sent to).
        group: the group `G`: the listener name, or `listener-server` for per-process listeners.
        durable: the group's queue survives broker restarts and keeps events while no member
            is connected.
        per_process: the group belongs to one process; its queue may expire once that process
            is gone (the provider documents how).
        prefetch: how many unacknowledged deliveries the provider may hand out at once.
        dead_letters: this subscription stands for the group's dead-letter queue
            `<event>::<group>.dlq` (always durable, never expiring) rather than its queue.
    """

    event: str
    group: str
    durable: bool = False
    per_process: bool = False
    prefetch: int = 100
    dead_letters: bool = False

    @property
    def queue(self) -> str:
        """The logical queue name `<event>::<group>`, or `<event>::<group>.dlq`."""
        return f"{self.event}::{self.group}{DEAD_LETTER_SUFFIX if self.dead_letters else ''}"

    def dead_letter(self) -> Subscription:
        """The subscription of this group's dead-letter queue."""
        return replace(self, durable=True, per_process=False, dead_letters=True)


DEAD_LETTER_SUFFIX = ".dlq"
"""Appended to a group's queue name to name its dead-letter queue."""


class Delivery(ABC):
    """One received message, to be settled exactly once.

    `ack` and `reject` may be called from any thread; the provider marshals them onto its own
    I/O thread. Settling twice is a no-op.
    """

    envelope: Envelope
    redelivered: bool

    @abstractmethod
    def ack(self) -> None:
        """The message was processed: the broker may forget it."""

    @abstractmethod
    def reject(self, requeue: bool = True) -> None:
        """The message was not processed.

        Args:
            requeue: True puts it back so it is delivered again (to this or another member);
                False drops it (poison message; a later issue routes it to dead letters).
        """


SENT: Future[None] = Future()
"""A future that is already done: providers return it for sends that completed synchronously,
and callers may skip waiting when they get it (`future is SENT`)."""
SENT.set_result(None)

DeliveryCallback = Callable[[Delivery], None]
"""Called on the provider's I/O thread for every delivery; it must return quickly and never
block: it hands the delivery to a worker and settles it later."""


class Provider(ABC):
    """A transport for envelopes with group semantics.

    Guarantees every implementation gives (enforced by tests/contract):

    * Groups: every subscribed group receives every event sent after the group's queue exists;
      members of one group (in one or many processes) compete, each event reaching one member.
    * At least once: a delivery is removed from its queue only by `Delivery.ack`. A rejected
      (requeue=True) or never-settled delivery of a stopped or crashed member comes back.
    * `send` may be called from any thread and is pipelined: it returns a future at once, so
      many sends can be in flight. For `durable=True` the future completes only once the broker
      accepted the (persistent) message, and fails with a `ProviderError` otherwise; it never
      reports success for a message the broker did not take.
    * Body and headers arrive unchanged (any unicode, large bodies).
    * Callbacks run on the provider's I/O thread and must not block it.
    * `subscribe` may be called before or after `start`; after a reconnect the provider
      re-subscribes every group by itself.
    * `pause` stops handing out new deliveries; deliveries already handed out can still be
      settled. `stop` closes the connection; it never deletes a group's queue.
    * Failures surface as `aspyx_event.errors.ProviderError` subclasses, chained to the
      client library's exception; credentials never appear in logs or messages.
    """

    server_name: str
    """The unique name of this process, appended to per-process groups."""

    inline_dispatch: bool = False
    """True when callbacks run on delivery threads of the provider's own that may block (one
    per group member, as in the local provider): the manager then runs sync listeners on them
    directly. False (brokers): callbacks run on an I/O thread and the manager hands off."""

    @abstractmethod
    def start(self) -> None:
        """Connect (blocking until connected or failed) and attach the subscribed groups."""

    @abstractmethod
    def stop(self) -> None:
        """Disconnect. Unsettled deliveries return to their queues; queues are kept."""

    @abstractmethod
    def pause(self) -> None:
        """Stop dispatching new deliveries to callbacks (graceful shutdown, step one)."""

    @abstractmethod
    def subscribe(self, subscription: Subscription, callback: DeliveryCallback) -> None:
        """Attach `callback` as a member of `subscription.group` for `subscription.event`."""

    @abstractmethod
    def send_to_queue(self, subscription: Subscription, envelope: Envelope) -> Future[None]:
        """Put `envelope` straight into `subscription`'s queue (its dead-letter queue when
        `subscription.dead_letters`), bypassing the event's address: no other group sees it.

        Always persistent and confirmed, like a durable `send`: the future completes once the
        broker accepted the message and fails with a `ProviderError` otherwise. Callable from
        any thread once started, also for groups this provider does not consume (creating
        the queue if the broker needs that). Used for retries, dead letters and re-drives.
        """

    @abstractmethod
    def clone(self) -> Provider:
        """A new, unstarted provider with this one's configuration (its own connection), for
        tools that consume other queues for a while, such as the dead-letter reader."""

    @abstractmethod
    def send(self, envelope: Envelope, durable: bool) -> Future[None]:
        """Send `envelope` to every group of the event named in its `EVENT_NAME` header.

        Returns a future that completes once the broker accepted the message (durable) or once
        the message was handed to the connection (non-durable).
        """
