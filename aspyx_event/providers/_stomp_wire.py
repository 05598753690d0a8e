"""What crosses between `StompProvider` and its bridge: the envelope header codec and frame types.

Nothing here starts a thread or imports stomp.py, so the provider module can use it while the
optional client library is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from aspyx_event.envelope import CONTENT_TYPE
from aspyx_event.errors import ProviderError

WIRE_PREFIX = "aspyx-"
"""Prefix on the wire of an envelope header whose name STOMP or a broker reserves."""
REDELIVERED = "aspyx.redelivered"
"""Marks a copy requeued by the provider itself; escaping never yields this name."""
_RESERVED_TEXT = (
    # STOMP 1.2 frame headers
    "destination subscription message-id ack id receipt receipt-id content-type content-length "
    "transaction host login passcode heart-beat version accept-version server session selector "
    "message requeue durable auto-delete exclusive prefetch-count "
    # mapped to message properties by RabbitMQ (bad values close the connection) or ActiveMQ
    "persistent expires expiration priority timestamp type correlation-id reply-to redelivered "
    "redeliveries content-encoding user-id app-id cluster-id original-destination amq-msg-type "
    "transformation transformation-error "
    # Artemis
    "destination-type subscription-type"
)
_RESERVED_NAMES = frozenset(_RESERVED_TEXT.split())
_RESERVED_PREFIXES = ("jms", "aspyx", "x-", "amqp-", "activemq.", "_amq")
_NAME_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"})

_V = TypeVar("_V")

Target = Callable[[], tuple[str, dict[str, str]]]
"""Renders a SEND's destination and broker headers on the I/O thread, once the broker is known."""
SubscribeSpec = tuple[str, dict[str, str]]
"""A SUBSCRIBE's destination and broker headers."""


_WIRE_NAMES: dict[str, str] = {}  # envelope header name -> its name on the wire
_ENVELOPE_NAMES: dict[str, str | None] = {}  # wire name -> envelope name, None: not ours
_UNKNOWN = ""  # the `get` default meaning "not looked at yet"
_CACHED = 10_000  # names remembered at most: header names are few, values are not cached


def _remember(cache: dict[str, _V], name: str, value: _V) -> None:
    if len(cache) < _CACHED:  # a racing second writer stores the same value: harmless
        cache[name] = value


def _reserved(name: str) -> bool:
    low = name.lower()
    return not name or low in _RESERVED_NAMES or low.startswith(_RESERVED_PREFIXES)


def encode_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Envelope headers as STOMP headers: reserved names prefixed, names STOMP-escaped.

    stomp.py escapes header values but not names (it unescapes both on receipt).

    Example:
        >>> encode_headers({"tenant": "t", "priority": "high", "a:b": "c"})
        {'tenant': 't', 'aspyx-priority': 'high', 'a\\\\cb': 'c'}
    """
    wire: dict[str, str] = {}
    for name, value in headers.items():
        wire_name = _WIRE_NAMES.get(name)
        if wire_name is None:
            wire_name = (WIRE_PREFIX + name if _reserved(name) else name).translate(_NAME_ESCAPES)
            _remember(_WIRE_NAMES, name, wire_name)
        wire[wire_name] = value
    return wire


def decode_headers(wire: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """The envelope headers of a MESSAGE frame's headers, and whether it is a redelivery.

    Example:
        >>> decode_headers({"tenant": "t", "aspyx-priority": "high", "message-id": "7"})
        ({'tenant': 't', 'priority': 'high'}, False)
    """
    headers: dict[str, str] = {}
    for name, value in wire.items():
        envelope_name = _ENVELOPE_NAMES.get(name, _UNKNOWN)
        if envelope_name is _UNKNOWN:
            if name.startswith(WIRE_PREFIX):
                envelope_name = name[len(WIRE_PREFIX) :]
            else:
                envelope_name = None if _reserved(name) else name
            _remember(_ENVELOPE_NAMES, name, envelope_name)
        if envelope_name is not None:
            headers[envelope_name] = value
    if CONTENT_TYPE not in headers and "content-type" in wire:
        headers[CONTENT_TYPE] = wire["content-type"]  # another client's native media type
    return headers, wire.get("redelivered") == "true" or REDELIVERED in wire


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Connection settings of the bridge's `StompLink` (see `StompProvider` for each)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    vhost: str
    tls: tuple[str | None, str | None, str | None] | None  # (ca_file, cert_file, key_file)
    connect_timeout: float
    send_timeout: float
    stop_timeout: float
    reconnect_delay: float
    reconnect_max_delay: float
    max_in_flight: int
    heartbeat_ms: int

    @property
    def address(self) -> str:
        """``host:port`` for messages (never the credentials)."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A MESSAGE frame as handed to the handler on the receiver thread."""

    generation: int
    subscription_id: str
    ack_id: str
    headers: dict[str, str]
    body: str


class LinkHandler(Protocol):
    """What the link asks of its owner; each method runs on a link thread and must be quick."""

    def on_connected(self, server: str) -> None:
        """CONNECTED carried this ``server`` header; raise ProviderConfigurationError to stop."""

    def subscriptions(self) -> Mapping[str, SubscribeSpec]:
        """The SUBSCRIBE of every subscription id."""

    def refused(self, subscription_id: str, error: ProviderError) -> None:
        """The broker refused this subscription while reconnecting; forget it."""

    def on_message(self, message: Inbound) -> None:
        """A MESSAGE frame arrived (receiver thread)."""
