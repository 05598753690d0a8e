"""Event listeners: `EventListener[T]`, the `@event_listener(...)` decorator and its descriptor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aspyx_di import injectable

from .errors import EventDefinitionError
from .event import EventDescriptor, describe_event
from .retry import RetryPolicy

T = TypeVar("T")
C = TypeVar("C", bound=type)
LISTENER_ATTR = "__aspyx_listener__"


class EventListener(ABC, Generic[T]):
    """Base class of listeners: `on` receives each event of type `T` (it may be `async def`)."""

    @abstractmethod
    def on(self, event: T) -> Awaitable[None] | None:
        """Handle one event; returning normally acknowledges it, raising rejects it."""


@dataclass(frozen=True, slots=True)
class EventListenerDescriptor:
    """What `@event_listener(...)` says about a listener class.

    Attributes:
        type: the listener class.
        event: the descriptor of the event it handles.
        name: the listener (group) name; default the class name.
        per_process: every process gets its own group `name-<server_name>`.
        retry: the retry policy, or None for the manager's (configurable) default.
        concurrency: deliveries running at once (None: 1 for sync listeners; for async ones
            as many as `prefetch` allows).
        prefetch: unacknowledged deliveries held at once, or None for the manager's default.
        idempotent: skip message ids the group already processed (see `idempotency`).
    """

    type: type
    event: EventDescriptor
    name: str
    per_process: bool
    retry: RetryPolicy | None = None
    concurrency: int | None = None
    prefetch: int | None = None
    idempotent: bool = False

    def group(self, server_name: str) -> str:
        """The consumer group: the name, or `name-server_name` for per-process listeners."""
        return f"{self.name}-{server_name}" if self.per_process else self.name


def event_listener(
    event: type,
    name: str = "",
    per_process: bool = False,
    *,
    retry: RetryPolicy | None = None,
    concurrency: int | None = None,
    prefetch: int | None = None,
    idempotent: bool = False,
) -> Callable[[C], C]:
    """Declare an injectable listener for `event`.

    Args:
        event: the `@event()` class it handles.
        name: the listener name (default: the class name). Processes running a listener of the
            same name compete for events: each event is processed once per name.
        per_process: give each process its own group, so every process sees every event.
        retry: how failed deliveries are retried before they become dead letters (default:
            the manager's policy, configurable as `event.retry.*`).
        concurrency: deliveries of this listener running at once (default 1 for a sync `on`;
            an async `on` runs as many as `prefetch` allows).
        prefetch: unacknowledged deliveries this listener holds at once (default: the
            manager's `prefetch`); bounds its memory however long the backlog.
        idempotent: skip a message id this group already processed (exactly-once processing
            on top of at-least-once delivery; the store is the environment's
            `IdempotencyStore` bean, in memory by default).
    """
    _check_limit("concurrency", concurrency)
    _check_limit("prefetch", prefetch)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise EventDefinitionError(
            f"@event_listener(retry={retry!r}): expected a RetryPolicy.\n"
            "Hint: retry=RetryPolicy(attempts=5, delay=0.5)."
        )

    def decorate(cls: C) -> C:
        if not isinstance(cls, type) or not issubclass(cls, EventListener):
            raise EventDefinitionError(
                f"@event_listener() decorates subclasses of EventListener, not {cls!r}.\n"
                f"Hint: class MyListener(EventListener[{getattr(event, '__name__', 'MyEvent')}])."
            )
        if not callable(getattr(cls, "on", None)):
            raise EventDefinitionError(f"{cls.__qualname__} must define on(self, event).")
        try:
            descriptor = describe_event(event)
        except Exception as exc:
            raise EventDefinitionError(
                f"@event_listener({getattr(event, '__name__', event)!r}) on {cls.__qualname__}: "
                f"{exc}"
            ) from exc
        setattr(
            cls,
            LISTENER_ATTR,
            EventListenerDescriptor(
                cls,
                descriptor,
                name or cls.__name__,
                per_process,
                retry,
                concurrency,
                prefetch,
                idempotent,
            ),
        )
        return injectable()(cls)

    return decorate


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise EventDefinitionError(
            f"@event_listener({name}={value!r}): expected a whole number >= 1.\n"
            f"Hint: {name}=10, or leave it out for the default."
        )


def describe_listener(cls: type) -> EventListenerDescriptor:
    """The descriptor `@event_listener(...)` put on `cls`."""
    descriptor = cls.__dict__.get(LISTENER_ATTR)
    if not isinstance(descriptor, EventListenerDescriptor):
        raise EventDefinitionError(
            f"{cls.__qualname__} derives from EventListener but is not decorated with "
            "@event_listener(EventType).\nHint: add the decorator, or remove the class from "
            "the module's package."
        )
    return descriptor
