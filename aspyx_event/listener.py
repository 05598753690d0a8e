"""Event listeners: `EventListener[T]`, the `@event_listener(...)` decorator and its descriptor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aspyx_di import injectable

from .errors import EventDefinitionError
from .event import EventDescriptor, describe_event

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
    """

    type: type
    event: EventDescriptor
    name: str
    per_process: bool

    def group(self, server_name: str) -> str:
        """The consumer group: the name, or `name-server_name` for per-process listeners."""
        return f"{self.name}-{server_name}" if self.per_process else self.name


def event_listener(event: type, name: str = "", per_process: bool = False) -> Callable[[C], C]:
    """Declare an injectable listener for `event`.

    Args:
        event: the `@event()` class it handles.
        name: the listener name (default: the class name). Processes running a listener of the
            same name compete for events: each event is processed once per name.
        per_process: give each process its own group, so every process sees every event.
    """

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
            EventListenerDescriptor(cls, descriptor, name or cls.__name__, per_process),
        )
        return injectable()(cls)

    return decorate


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
