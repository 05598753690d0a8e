"""The `@event()` decorator and the `EventDescriptor` it attaches."""

from __future__ import annotations

import dataclasses
import linecache
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from pydantic import BaseModel

from .errors import EventDefinitionError, UnknownEventError

C = TypeVar("C", bound=type)
EVENT_ATTR = "__aspyx_event__"
_DATACLASS_DECORATORS = {"dataclass", "dataclasses.dataclass", "pydantic.dataclasses.dataclass"}


@dataclass(frozen=True, slots=True)
class EventDescriptor:
    """What `@event()` says about an event class.

    Attributes:
        type: the event class.
        name: the event name, used as the broker address (default: the class name).
        durable: events survive consumers being offline and broker restarts.
    """

    type: type
    name: str
    durable: bool


def _is_event_type(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) or issubclass(cls, BaseModel)


def _decorated_as_dataclass_later(caller: FrameType | None) -> bool | None:
    """In `@dataclass @event() class E` the dataclass decorator runs after ours.

    The caller's frame points at our `@event(...)` line; the decorators applied after ours are
    the lines directly above it. Returns None when the source is unavailable (then the check
    happens on first use).
    """
    if caller is None:
        return None
    filename, line = caller.f_code.co_filename, caller.f_lineno
    if not linecache.getline(filename, line).strip().startswith("@"):
        return None
    while line > 1:
        line -= 1
        text = linecache.getline(filename, line).strip()
        if not text.startswith("@"):
            return False
        if text[1:].split("(", 1)[0].strip() in _DATACLASS_DECORATORS:
            return True
    return False


def event(name: str = "", durable: bool = False) -> Callable[[C], C]:
    """Declare a dataclass or pydantic model as an event.

    Args:
        name: the event name (default: the class name); it is the broker address.
        durable: the provider keeps events for offline groups and across broker restarts.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... @event()
        ... class HelloEvent:
        ...     world: str
        >>> describe_event(HelloEvent).name
        'HelloEvent'
    """

    def decorate(cls: C) -> C:
        if not isinstance(cls, type):
            raise EventDefinitionError(
                f"@event() decorates classes, not {cls!r}.\n"
                "Hint: put @event() on a dataclass or a pydantic model."
            )
        caller = sys._getframe(1)
        if not _is_event_type(cls) and _decorated_as_dataclass_later(caller) is False:
            raise _not_an_event_type(cls)
        setattr(cls, EVENT_ATTR, EventDescriptor(cls, name or cls.__name__, durable))
        return cls

    return decorate


def _not_an_event_type(cls: type) -> EventDefinitionError:
    return EventDefinitionError(
        f"{cls.__qualname__} is decorated with @event() but is neither a dataclass nor a pydantic "
        "model, so it cannot be serialized.\nHint: add @dataclass above @event(), or derive "
        "from pydantic.BaseModel."
    )


def describe_event(cls: type) -> EventDescriptor:
    """The descriptor of an event class.

    Raises:
        UnknownEventError: `cls` is not decorated with `@event()`.
        EventDefinitionError: it is, but it never became a dataclass or model.
    """
    descriptor: Any = cls.__dict__.get(EVENT_ATTR) if isinstance(cls, type) else None
    if not isinstance(descriptor, EventDescriptor):
        raise UnknownEventError(getattr(cls, "__qualname__", repr(cls)))
    if not _is_event_type(cls):
        raise _not_an_event_type(cls)
    return descriptor
