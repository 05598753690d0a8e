"""What crosses between `StompProvider` and its bridge: the envelope header codec and frame types.

Nothing here starts a thread or imports stomp.py, so the provider module can use it while the
optional client library is missing.
"""

from __future__ import annotations

import re
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
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"})
_VALUE_SPECIALS = re.compile(r"[\\\n\r:]")

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
            wire_name = (WIRE_PREFIX + name if _reserved(name) else name).translate(_ESCAPES)
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


def encode_frame(command: str, headers: Mapping[str, str], body: str = "") -> bytes:
    """One STOMP 1.2 client frame: header values escaped, ``content-length`` for a body.

    Header names are written as given (`encode_headers` escaped ours already). The I/O thread
    joins the frames of many commands into one socket write.

    Example:
        >>> encode_frame("SEND", {"destination": "/topic/E", "id": "ID:1"}, "hé")
        b'SEND\\ndestination:/topic/E\\nid:ID\\\\c1\\ncontent-length:3\\n\\nh\\xc3\\xa9\\x00'
    """
    lines = [command]
    for name, value in headers.items():
        if _VALUE_SPECIALS.search(value) is None:
            lines.append(f"{name}:{value}")
        else:
            lines.append(f"{name}:{value.translate(_ESCAPES)}")
    data = body.encode()
    if data:
        lines.append(f"content-length:{len(data)}")
    lines.append("\n")
    return "\n".join(lines).encode() + data + b"\0"


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_ESCAPED = re.compile(r"\\.")
_UNESCAPES = {"\\n": "\n", "\\r": "\r", "\\c": ":", "\\\\": "\\"}
_EOL = b"\r\n"


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda match: _UNESCAPES.get(match[0], match[0]), text)


FrameHandler = Callable[[str, dict[str, str], bytes], bool]
"""Takes a received frame (command, headers, body); False leaves it to stomp.py."""


class FrameReader:
    r"""Splits what the socket delivers into STOMP 1.2 server frames.

    `feed` hands each complete frame to `handler` and returns the frames it did not take,
    unchanged and in order, for stomp.py to parse. Header values are unescaped, the first of a
    repeated header wins, ``content-length`` bounds the body. It exists for speed: stomp.py
    parses each header with regular expressions and notifies every listener per frame, more
    work per message than the rest of a delivery.

    Example:
        >>> taken = []
        >>> reader = FrameReader(lambda command, headers, body: command == "MESSAGE"
        ...                      and not taken.append((headers, body)))
        >>> reader.feed(b"\nMESSAGE\nack:ID\\c7\ncontent-length:2\n\nhi\x00\nERR")
        b''
        >>> taken
        [({'ack': 'ID:7', 'content-length': '2'}, b'hi')]
        >>> reader.feed(b"OR\nmessage:no\n\n\x00")
        b'ERROR\nmessage:no\n\n\x00'
    """

    def __init__(self, handler: FrameHandler) -> None:
        self._handler = handler
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Add `data`; handle the complete frames, return those not taken (b"": none)."""
        buffer = self._buffer
        buffer += data
        left: list[bytes] = []
        start = 0
        while True:
            while start < len(buffer) and buffer[start] in _EOL:
                start += 1  # heart-beats and the EOLs a frame may end with
            head_end = _HEAD_END.search(buffer, start)
            if head_end is None:
                break
            lines = buffer[start : head_end.start()].decode(errors="replace").split("\n")
            command, headers = lines[0].rstrip("\r"), self._headers(lines)
            body_end = self._body_end(buffer, head_end.end(), headers.get("content-length"))
            if body_end < 0:
                break  # the rest has not arrived yet
            if not self._handler(command, headers, bytes(buffer[head_end.end() : body_end])):
                left.append(bytes(buffer[start : body_end + 1]))
            start = body_end + 1
        del buffer[:start]
        return b"".join(left)

    @staticmethod
    def _headers(lines: list[str]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.rstrip("\r").partition(":")
            if "\\" in line:
                name, value = _unescape(name), _unescape(value)
            if name not in headers:
                headers[name] = value
        return headers

    @staticmethod
    def _body_end(buffer: bytearray, body: int, length: str | None) -> int:
        """Where the body's terminating NUL is; -1 when it has not arrived yet."""
        if length is not None and length.isdigit():
            end = body + int(length)
            return end if end < len(buffer) else -1
        return buffer.find(b"\0", body)


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
