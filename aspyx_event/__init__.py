"""aspyx_event: decorator-driven messaging for microservices, on top of aspyx_di.

Events are dataclasses or pydantic models marked `@event()`; listeners are beans marked
`@event_listener(Event)`; `@envelope_pipeline()` beans read and write headers on both sides;
`EventManager.send_event` sends through a provider chosen by configuration.
"""

from typing import Any

from .codec import Codec, JsonCodec
from .dead_letters import DeadLetter, DeadLetters
from .dispatch import ErrorHandler
from .envelope import Envelope
from .errors import (
    DecodeError,
    EncodeError,
    EventDefinitionError,
    EventError,
    HeaderError,
    MessageTooLargeError,
    MissingProviderLibraryError,
    ProviderConfigurationError,
    ProviderConnectionError,
    ProviderError,
    SendTimeoutError,
    UnknownEventError,
)
from .event import EventDescriptor, event
from .idempotency import (
    IdempotencyArgumentError,
    IdempotencyStore,
    IdempotencyStoreError,
    InMemoryIdempotencyStore,
    SQLiteIdempotencyStore,
)
from .listener import EventListener, EventListenerDescriptor, event_listener
from .manager import EventManager
from .module import EventModule
from .pipeline import EnvelopePipeline, envelope_pipeline
from .provider import Delivery, Provider, Subscription
from .providers import LocalProvider, create_provider
from .retry import RetryPolicy


def __getattr__(name: str) -> Any:
    """`AMQPProvider` / `StompProvider` load their (light) modules on first use."""
    if name in ("AMQPProvider", "StompProvider"):
        from . import providers  # noqa: PLC0415 - lazy on purpose

        return getattr(providers, name)
    raise AttributeError(name)


__all__ = [
    "AMQPProvider",
    "Codec",
    "DeadLetter",
    "DeadLetters",
    "DecodeError",
    "Delivery",
    "EncodeError",
    "Envelope",
    "EnvelopePipeline",
    "ErrorHandler",
    "EventDefinitionError",
    "EventDescriptor",
    "EventError",
    "EventListener",
    "EventListenerDescriptor",
    "EventManager",
    "EventModule",
    "HeaderError",
    "IdempotencyArgumentError",
    "IdempotencyStore",
    "IdempotencyStoreError",
    "InMemoryIdempotencyStore",
    "JsonCodec",
    "LocalProvider",
    "MessageTooLargeError",
    "MissingProviderLibraryError",
    "Provider",
    "ProviderConfigurationError",
    "ProviderConnectionError",
    "ProviderError",
    "RetryPolicy",
    "SQLiteIdempotencyStore",
    "SendTimeoutError",
    "StompProvider",
    "Subscription",
    "UnknownEventError",
    "create_provider",
    "envelope_pipeline",
    "event",
    "event_listener",
]
