"""Envelope pipelines: interceptors that read and write headers on both sides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

from aspyx_di import injectable

from .envelope import Envelope
from .errors import EventDefinitionError
from .event import EventDescriptor
from .listener import EventListenerDescriptor

C = TypeVar("C", bound=type)


class EnvelopePipeline(ABC):
    """An interceptor around sending and receiving.

    `send` runs on the sending side, in registration order, before the provider sends;
    `handle` runs on the receiving side before each listener delivery, inside the delivery's
    own `contextvars` context and DI `context` scope, so what it establishes (a session, say)
    is visible to the listener and gone afterwards. Raising in `handle` fails the delivery.
    """

    @abstractmethod
    def send(self, envelope: Envelope, event_descriptor: EventDescriptor) -> None:
        """Add or change headers of an outgoing envelope."""

    @abstractmethod
    def handle(
        self, envelope: Envelope, event_listener_descriptor: EventListenerDescriptor
    ) -> None:
        """Read headers of an incoming envelope before the listener runs."""


def envelope_pipeline() -> Callable[[C], C]:
    """Declare an injectable `EnvelopePipeline`."""

    def decorate(cls: C) -> C:
        if not isinstance(cls, type) or not issubclass(cls, EnvelopePipeline):
            raise EventDefinitionError(
                f"@envelope_pipeline() decorates subclasses of EnvelopePipeline, not {cls!r}."
            )
        return injectable()(cls)

    return decorate
