"""Codecs: events to JSON bodies and back, through pydantic. Never pickle."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import SchemaSerializer, SchemaValidator

from .errors import DecodeError, EncodeError
from .event import EventDescriptor

JSON = "application/json"


class Codec(ABC):
    """Turns events into text bodies and back.

    `decode` must raise `DecodeError` (never anything else) for a body that does not decode
    to the event type, so a bad message never crashes a consumer.
    """

    content_type: str

    @abstractmethod
    def encode(self, event: Any, descriptor: EventDescriptor) -> str:
        """The body for `event`."""

    @abstractmethod
    def decode(self, body: str, descriptor: EventDescriptor, message_id: str = "") -> Any:
        """The event encoded in `body`."""

    def encoder(self, descriptor: EventDescriptor) -> Callable[[Any], str]:
        """`encode` bound to one event type (codecs may return something faster)."""
        return lambda event: self.encode(event, descriptor)

    def decoder(self, descriptor: EventDescriptor) -> Callable[[str, str], Any]:
        """`decode(body, message_id)` bound to one event type."""
        return lambda body, message_id: self.decode(body, descriptor, message_id)


class JsonCodec(Codec):
    """JSON via pydantic `TypeAdapter`s (one per event type, built on first use).

    Dataclasses and models alike keep nested dataclasses/models, datetimes, enums, UUIDs and
    decimals; decoding validates against the event type.

    Example:
        >>> from dataclasses import dataclass
        >>> from aspyx_event.event import event, describe_event
        >>> @dataclass
        ... @event()
        ... class Ping:
        ...     n: int
        >>> codec = JsonCodec()
        >>> codec.encode(Ping(1), describe_event(Ping))
        '{"n":1}'
        >>> codec.decode('{"n":2}', describe_event(Ping))
        Ping(n=2)
    """

    content_type = JSON

    def __init__(self) -> None:
        # per event type, the TypeAdapter's pydantic-core serializer and validator: the same
        # result as dump_json / validate_json without their per-call keyword handling
        self._serializers: dict[type, SchemaSerializer] = {}
        self._validators: dict[type, SchemaValidator] = {}

    def _adapt(self, descriptor: EventDescriptor) -> None:
        adapter: TypeAdapter[Any] = TypeAdapter(descriptor.type)
        self._serializers[descriptor.type] = adapter.serializer
        self._validators[descriptor.type] = adapter.validator  # type: ignore[assignment]

    def encode(self, event: Any, descriptor: EventDescriptor) -> str:
        try:
            serializer = self._serializers.get(descriptor.type)
            if serializer is None:
                self._adapt(descriptor)
                serializer = self._serializers[descriptor.type]
            return serializer.to_json(event).decode()
        except Exception as exc:  # pydantic raises several types for unserializable values
            raise EncodeError(f"cannot encode {descriptor.name}: {exc}") from exc

    def encoder(self, descriptor: EventDescriptor) -> Callable[[Any], str]:
        if descriptor.type not in self._serializers:
            self._adapt(descriptor)
        to_json = self._serializers[descriptor.type].to_json

        def encode(event: Any) -> str:
            try:
                return to_json(event).decode()
            except Exception as exc:
                raise EncodeError(f"cannot encode {descriptor.name}: {exc}") from exc

        return encode

    def decoder(self, descriptor: EventDescriptor) -> Callable[[str, str], Any]:
        if descriptor.type not in self._validators:
            self._adapt(descriptor)
        validate_json = self._validators[descriptor.type].validate_json

        def decode(body: str, message_id: str) -> Any:
            try:
                return validate_json(body)
            except Exception:  # the slow path builds the error with its details
                return self.decode(body, descriptor, message_id)

        return decode

    def decode(self, body: str, descriptor: EventDescriptor, message_id: str = "") -> Any:
        try:
            validator = self._validators.get(descriptor.type)
            if validator is None:
                self._adapt(descriptor)
                validator = self._validators[descriptor.type]
            return validator.validate_json(body)
        except ValidationError as exc:
            raise DecodeError(descriptor.name, message_id, _summary(exc)) from exc
        except Exception as exc:
            raise DecodeError(descriptor.name, message_id, str(exc)) from exc


def _summary(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "body"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{location}: {first.get('msg', 'invalid')}{more}"
