"""The `Envelope`: an encoded event body plus string headers, as it travels over the wire."""

from __future__ import annotations

import itertools
import os
import time
import uuid

MESSAGE_ID = "event-id"
"""Header with the unique message id the framework assigns on send."""
EVENT_NAME = "event-name"
"""Header naming the event (the `name` of its `@event`)."""
TIMESTAMP = "event-timestamp"
"""Header with the send time in milliseconds since the epoch."""
CONTENT_TYPE = "content-type"
"""Header with the body's media type."""
ATTEMPT = "event-attempt"
"""Header with the number of the delivery attempt a retry copy is (absent on the first)."""
JSON = "application/json"

RESERVED_HEADERS = frozenset({MESSAGE_ID, EVENT_NAME, TIMESTAMP, CONTENT_TYPE})


class _MessageIds:
    """Unique ids: 80 random bits per process plus a counter (a uuid4 per message costs 5x)."""

    def __init__(self) -> None:
        self.prefix = ""
        self.counter = itertools.count()
        self.reset()

    def reset(self) -> None:
        self.prefix = uuid.uuid4().hex[:20] + "-"
        self.counter = itertools.count()


_ids = _MessageIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.reset)  # a forked child must not reuse ids


def new_envelope(body: str, event_name: str, content_type: str = JSON) -> Envelope:
    """A new envelope with fresh metadata (the hot path of every send)."""
    return Envelope(
        body,
        {
            MESSAGE_ID: _ids.prefix + str(next(_ids.counter)),
            EVENT_NAME: event_name,
            TIMESTAMP: str(time.time_ns() // 1_000_000),
            CONTENT_TYPE: content_type,
        },
    )


class Envelope:
    """An encoded event with string headers; pipelines read and write its headers.

    The framework sets the metadata headers (`MESSAGE_ID`, `EVENT_NAME`, `TIMESTAMP`,
    `CONTENT_TYPE`); pipelines add their own, e.g. a session id. Providers carry body and
    every header unchanged to each receiving group.

    Example:
        >>> envelope = Envelope.create('{"world": "x"}', event_name="HelloEvent")
        >>> envelope.set("session", "s-1")
        >>> envelope.get("session"), envelope.event_name, envelope.content_type
        ('s-1', 'HelloEvent', 'application/json')
    """

    __slots__ = ("body", "headers")

    def __init__(self, body: str, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.headers: dict[str, str] = headers if headers is not None else {}

    @classmethod
    def create(cls, body: str, event_name: str, content_type: str = JSON) -> Envelope:
        """A new envelope with fresh metadata: a unique id and the current time."""
        return new_envelope(body, event_name, content_type)

    def get_body(self) -> str:
        """The encoded event (JSON)."""
        return self.body

    def set(self, key: str, value: str) -> None:
        """Set a header; header values are strings, anything else is rejected."""
        if not isinstance(value, str):
            raise TypeError(
                f"header {key!r} must be a str, got {type(value).__name__}.\n"
                f"Hint: convert it yourself, e.g. envelope.set({key!r}, str(value))."
            )
        self.headers[key] = value

    def get(self, key: str) -> str | None:
        """A header's value, or None when the header is absent."""
        return self.headers.get(key)

    @property
    def message_id(self) -> str:
        """The unique id assigned when the event was sent ('' if absent)."""
        return self.headers.get(MESSAGE_ID, "")

    @property
    def event_name(self) -> str:
        """The name of the event this envelope carries ('' if absent)."""
        return self.headers.get(EVENT_NAME, "")

    @property
    def timestamp(self) -> int:
        """Send time in milliseconds since the epoch (0 if absent or malformed)."""
        value = self.headers.get(TIMESTAMP, "")
        return int(value) if value.isdigit() else 0

    @property
    def content_type(self) -> str:
        """The body's media type."""
        return self.headers.get(CONTENT_TYPE, JSON)

    def __repr__(self) -> str:
        return (
            f"Envelope(event={self.event_name!r}, id={self.message_id!r}, {len(self.body)} chars)"
        )
