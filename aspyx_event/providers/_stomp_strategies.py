"""The STOMP address strategies: how events and groups map onto one broker's destinations.

`aspyx_event.providers.stomp` re-exports them and documents the mapping of each broker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import Enum
from typing import ClassVar

from aspyx_event.errors import ProviderConfigurationError, ProviderError
from aspyx_event.provider import DEAD_LETTER_SUFFIX, Subscription
from aspyx_event.providers._stomp_wire import SubscribeSpec


class RejectAction(Enum):
    """How a strategy settles a rejected delivery."""

    NACK = "nack"
    """A NACK frame with the strategy's extra headers."""
    ACK = "ack"
    """An ACK: the broker forgets the message (a drop)."""
    REPUBLISH = "republish"
    """Send a copy to the subscription's own queue (`AddressStrategy.queue_target`), then ACK
    the original on the copy's RECEIPT."""
    REDISPATCH = "redispatch"
    """Keep the message unacknowledged and hand it to the member's callback again."""


def _persistent(durable: bool) -> dict[str, str]:
    return {"persistent": "true"} if durable else {}


def _no_queue_error(broker: str, subscription: Subscription) -> ProviderError:
    return ProviderError(
        f"the per-process group {subscription.queue!r} has no queue of its own on {broker} (its "
        "member consumes the event's topic directly), so nothing can be put into it alone.\n"
        "Hint: requeue with Delivery.reject(requeue=True), which hands the delivery to the "
        "member again, or make the listener a shared (not per-process) group."
    )


class AddressStrategy(ABC):
    """Maps events and groups onto one broker's STOMP destinations and headers.

    To add a broker, subclass it, set `name` and `server_prefixes`, and list an instance in
    `STRATEGIES`. The defaults suit brokers with ``/topic/E`` and a requeueing NACK.
    """

    name: ClassVar[str]
    server_prefixes: ClassVar[tuple[str, ...]] = ()
    """Lower-case beginnings of the CONNECTED frame's ``server`` header that select it."""

    def send_target(self, event: str, durable: bool) -> tuple[str, dict[str, str]]:
        """The SEND destination and broker headers for `event`."""
        return f"/topic/{event}", _persistent(durable)

    @abstractmethod
    def subscribe_spec(self, subscription: Subscription, expiry_ms: int) -> SubscribeSpec:
        """The SUBSCRIBE destination and broker headers of a group member (of the group's
        dead-letter queue when `subscription.dead_letters`)."""

    @abstractmethod
    def queue_target(
        self, subscription: Subscription, persistent: bool = True
    ) -> tuple[str, dict[str, str]]:
        """The SEND destination and headers that reach `subscription`'s queue (its dead-letter
        queue when `subscription.dead_letters`) and no other group's.

        Raises:
            ProviderError: the broker keeps no queue of that group's own.
        """

    def reject(
        self, subscription: Subscription, requeue: bool
    ) -> tuple[RejectAction, dict[str, str]]:
        """How to reject a delivery of `subscription`: the action and its frame's headers."""
        return RejectAction.NACK, {}


class RabbitMQStrategy(AddressStrategy):
    """RabbitMQ's STOMP plugin: ``amq.topic`` plus one named queue ``E::G`` per group.

    A group's queue is reached through the default exchange (``/amq/queue/E::G``), which
    declares nothing, so no argument of the existing queue can conflict; a message for a queue
    that does not exist is dropped by the broker. The dead-letter queue ``E::G.dlq`` is a
    ``/queue/`` destination: SEND and SUBSCRIBE both declare it durable, never auto-deleted,
    without arguments (checked on 3.10: equal declarations, so never ``inequivalent arg``).
    """

    name = "rabbitmq"
    server_prefixes = ("rabbitmq",)

    def subscribe_spec(self, subscription: Subscription, expiry_ms: int) -> SubscribeSpec:
        if subscription.dead_letters:
            return f"/queue/{subscription.queue}", {"prefetch-count": str(subscription.prefetch)}
        durable = subscription.durable
        headers = {
            "x-queue-name": subscription.queue,
            "durable": "true" if durable else "false",
            "auto-delete": "false" if durable else "true",
            "prefetch-count": str(subscription.prefetch),
        }
        if subscription.per_process:
            headers["x-expires"] = str(expiry_ms)
        return f"/topic/{subscription.event}", headers

    def reject(
        self, subscription: Subscription, requeue: bool
    ) -> tuple[RejectAction, dict[str, str]]:
        return RejectAction.NACK, {} if requeue else {"requeue": "false"}

    def queue_target(
        self, subscription: Subscription, persistent: bool = True
    ) -> tuple[str, dict[str, str]]:
        kind = "queue" if subscription.dead_letters else "amq/queue"
        return f"/{kind}/{subscription.queue}", _persistent(persistent)


_ACTIVEMQ_UNSAFE = str.maketrans(dict.fromkeys(".*>,", "_"))


class ActiveMQStrategy(AddressStrategy):
    """ActiveMQ Classic virtual topics: group G consumes ``Consumer.G.E``.

    The characters that split or wildcard an ActiveMQ name (``. * > ,``) become ``_`` in G, so
    groups differing only there share a queue. A NACK dead-letters: requeue republishes. A
    per-process group subscribes to the topic itself (non-durable: the broker keeps nothing
    for it once its connection is gone) and requeues by handing the delivery out again; it
    has no queue of its own to send to. The dead-letter queue is the plain queue
    ``E::G.dlq`` (G sanitised the same way), which no virtual topic feeds.
    """

    name = "activemq"
    server_prefixes = ("activemq/",)

    def _queue(self, subscription: Subscription) -> str:
        group = subscription.group.translate(_ACTIVEMQ_UNSAFE)
        if subscription.dead_letters:
            return f"/queue/{subscription.event}::{group}{DEAD_LETTER_SUFFIX}"
        return f"/queue/Consumer.{group}.{subscription.event}"

    def subscribe_spec(self, subscription: Subscription, expiry_ms: int) -> SubscribeSpec:
        prefetch = {"activemq.prefetchSize": str(subscription.prefetch)}
        if subscription.per_process and not subscription.dead_letters:
            return f"/topic/{subscription.event}", prefetch
        return self._queue(subscription), prefetch

    def reject(
        self, subscription: Subscription, requeue: bool
    ) -> tuple[RejectAction, dict[str, str]]:
        if not requeue:
            return RejectAction.NACK, {}
        if subscription.per_process and not subscription.dead_letters:
            return RejectAction.REDISPATCH, {}
        return RejectAction.REPUBLISH, {}

    def queue_target(
        self, subscription: Subscription, persistent: bool = True
    ) -> tuple[str, dict[str, str]]:
        if subscription.per_process and not subscription.dead_letters:
            raise _no_queue_error("ActiveMQ", subscription)
        return self._queue(subscription), _persistent(persistent)


class ArtemisStrategy(AddressStrategy):
    """ActiveMQ Artemis: multicast address E, fully qualified queue ``E::G`` (untested here).

    A per-process group subscribes to the address itself: Artemis gives it a non-durable
    subscription queue that goes with its consumer (and has no name to send to). A SEND to the
    FQQN ``E::G`` reaches queue G alone. The dead-letter queue cannot be ``E::G.dlq`` (that is
    queue ``G.dlq`` of the multicast address E, which every event would reach): it is the
    anycast address and queue ``E.G.dlq``.
    """

    name = "artemis"
    server_prefixes = ("activemq-artemis", "artemis")

    def send_target(self, event: str, durable: bool) -> tuple[str, dict[str, str]]:
        return event, {"destination-type": "MULTICAST", **_persistent(durable)}

    def subscribe_spec(self, subscription: Subscription, expiry_ms: int) -> SubscribeSpec:
        if subscription.dead_letters:
            return _artemis_dead_letters(subscription), {"subscription-type": "ANYCAST"}
        address = subscription.event if subscription.per_process else subscription.queue
        return address, {"subscription-type": "MULTICAST"}

    def queue_target(
        self, subscription: Subscription, persistent: bool = True
    ) -> tuple[str, dict[str, str]]:
        if subscription.dead_letters:
            destination, kind = _artemis_dead_letters(subscription), "ANYCAST"
        elif subscription.per_process:
            raise _no_queue_error("Artemis", subscription)
        else:
            destination, kind = subscription.queue, "MULTICAST"
        return destination, {"destination-type": kind, **_persistent(persistent)}

    def reject(
        self, subscription: Subscription, requeue: bool
    ) -> tuple[RejectAction, dict[str, str]]:
        return (RejectAction.NACK if requeue else RejectAction.ACK), {}


def _artemis_dead_letters(subscription: Subscription) -> str:
    return f"{subscription.event}.{subscription.group}{DEAD_LETTER_SUFFIX}"


STRATEGIES: Mapping[str, AddressStrategy] = {
    s.name: s for s in (RabbitMQStrategy(), ActiveMQStrategy(), ArtemisStrategy())
}
"""The address strategies by ``broker=`` name (``auto`` detects one of them)."""


def detect_strategy(server: str) -> AddressStrategy:
    """The strategy for a CONNECTED frame's ``server`` header, e.g. ``RabbitMQ/3.10.8``.

    Example:
        >>> detect_strategy("ActiveMQ/5.17.6").name
        'activemq'
    """
    for strategy in sorted(STRATEGIES.values(), key=lambda s: -max(map(len, s.server_prefixes))):
        if server.lower().startswith(strategy.server_prefixes):
            return strategy
    raise ProviderConfigurationError(
        f"cannot tell which broker announces itself as server {server!r}.\n"
        f"Hint: pass broker= explicitly, one of {', '.join(STRATEGIES)}."
    )
