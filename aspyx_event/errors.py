"""The error hierarchy of aspyx_event: every error derives from `EventError`.

Each subclass also inherits the builtin a generic handler would catch (`LookupError`,
`ValueError`, `ConnectionError`, `TimeoutError`, `ImportError`), and builds its message from
the facts it is given, ending with a `Hint:` where a likely fix exists.
"""

from __future__ import annotations


class EventError(Exception):
    """Root of every error raised by aspyx_event."""


class UnknownEventError(EventError, LookupError):
    """Something that is not an `@event` was sent, or a message names an event nobody declared."""

    def __init__(self, what: str, hint: str = "decorate the class with @event()") -> None:
        self.what = what
        super().__init__(f"{what} is not a known event.\nHint: {hint}")


class EventDefinitionError(EventError, TypeError):
    """A decorator of the event layer was applied to something it cannot describe."""


class EncodeError(EventError, ValueError):
    """An event could not be serialized to JSON."""


class DecodeError(EventError, ValueError):
    """A message body does not decode to the event type its headers name."""

    def __init__(self, event_name: str, message_id: str, reason: str) -> None:
        self.event_name = event_name
        self.message_id = message_id
        self.reason = reason
        super().__init__(
            f"message {message_id or '<no id>'} does not decode to event {event_name!r}: {reason}\n"
            "Hint: the sender and this service disagree on the event's schema, or the message was "
            "not produced by aspyx_event."
        )


class MessageTooLargeError(EventError, ValueError):
    """An event's encoded body exceeds the manager's `max_message_size`; it was NOT sent."""

    def __init__(self, event_name: str, size: int, limit: int) -> None:
        self.event_name, self.size, self.limit = event_name, size, limit
        super().__init__(
            f"event {event_name!r} encodes to {size:,} bytes, more than max_message_size "
            f"({limit:,} bytes); it was not sent.\nHint: send a reference (e.g. a storage URL) "
            "instead of the payload, or raise max_message_size (configuration "
            "event.max_message_size) if the broker accepts that size."
        )


class HeaderError(EventError, TypeError):
    """A pipeline set an envelope header that is not a string; the event was NOT sent."""

    def __init__(self, event_name: str, header: str, value: object) -> None:
        self.event_name, self.header = event_name, header
        super().__init__(
            f"header {header!r} of event {event_name!r} is a {type(value).__name__} "
            f"({value!r:.60}), but headers are strings; it was not sent.\nHint: convert the "
            f"value in the pipeline's send(), e.g. envelope.headers[{header!r}] = str(value)."
        )


class ProviderError(EventError):
    """A provider failed; the message says what and with which broker."""


class ProviderConnectionError(ProviderError, ConnectionError):
    """The broker could not be reached, or the connection was lost."""


class SendTimeoutError(ProviderError, TimeoutError):
    """The broker did not accept a message within the configured timeout; it was NOT sent."""


class ProviderConfigurationError(EventError, ValueError):
    """A provider URL or provider option is malformed or unknown."""


class MissingProviderLibraryError(EventError, ImportError):
    """The client library a provider needs is not installed."""

    def __init__(self, provider: str, library: str, extra: str) -> None:
        self.provider = provider
        self.library = library
        self.extra = extra
        super().__init__(
            f"the {provider} provider needs the {library!r} package, which is not installed.\n"
            f'Hint: pip install "aspyx-messaging[{extra}]"'
        )
