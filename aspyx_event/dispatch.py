"""Delivering one listener's messages: decode, pipelines' `handle`, the listener, then settle.

Threading: a provider calls `ListenerDispatch.__call__` on its own thread. Sync listeners run
right there when the provider says its threads may block (`inline_dispatch`), otherwise on
the listener's own worker thread; async listeners run as tasks on the manager's event loop.
Each delivery runs in a fresh `contextvars` context and a fresh DI `context` scope, and is
acknowledged only after the listener returned; a failure rejects it (it comes back).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aspyx_di import Environment

from .codec import Codec
from .envelope import Envelope
from .errors import DecodeError
from .handoff import Workers
from .listener import EventListener, EventListenerDescriptor
from .pipeline import EnvelopePipeline
from .provider import Delivery

logger = logging.getLogger(__name__)


class ErrorHandler(Protocol):
    """Told about every failed delivery (after the failure was logged once)."""

    def handle_error(
        self, error: Exception, envelope: Envelope, listener: EventListenerDescriptor
    ) -> None:
        """React to `error` (metrics, alerts...). Exceptions raised here are logged and ignored."""


class InFlight:
    """Counts deliveries in progress so a shutdown can wait for them.

    A plain lock keeps the per-delivery cost low; only shutdown waits, by polling.
    """

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.count += 1

    def exit(self) -> None:
        with self._lock:
            self.count -= 1

    def wait_idle(self, timeout: float) -> bool:
        """True once no delivery is in progress; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.count > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


class ListenerDispatch:
    """The delivery callback of one listener (see module docstring)."""

    def __init__(
        self,
        listener: EventListener[Any],
        descriptor: EventListenerDescriptor,
        *,
        environment: Environment,
        codec: Codec,
        pipelines: Sequence[EnvelopePipeline],
        report: Callable[[Exception, Envelope, EventListenerDescriptor], None],
        in_flight: InFlight,
    ) -> None:
        self.listener = listener
        self.descriptor = descriptor
        self._environment = environment
        self._decode_body = codec.decoder(descriptor.event)
        self._pipelines = tuple(pipelines)
        self._report = report
        self._in_flight = in_flight
        self.is_async = inspect.iscoroutinefunction(listener.on)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: Workers | None = None

    def attach(self, inline: bool, loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        """Choose where this listener runs, given the provider's threading."""
        if self.is_async:
            self._loop = loop()
        elif not inline:
            self._workers = Workers(f"listener-{self.descriptor.name}", 1, self._run_sync)

    def __call__(self, delivery: Delivery) -> None:
        self._in_flight.enter()
        if self._loop is None and self._workers is None:
            self._run_sync(delivery)  # inline on the provider's own delivery thread
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._spawn, delivery)
        else:
            self._workers.submit(delivery)  # type: ignore[union-attr]

    def close(self) -> None:
        """Release the worker thread (after in-flight deliveries finished)."""
        if self._workers is not None:
            self._workers.shutdown()

    def _decode(self, delivery: Delivery) -> Any:
        envelope = delivery.envelope
        try:
            return self._decode_body(envelope.body, envelope.message_id)
        except DecodeError as error:
            self._report(error, envelope, self.descriptor)
            delivery.reject(requeue=False)  # a poison message never gets better
            return _UNDECODABLE

    def _run_sync(self, delivery: Delivery) -> None:
        try:
            contextvars.Context().run(self._deliver_sync, delivery)
        finally:
            self._in_flight.exit()

    def _deliver_sync(self, delivery: Delivery) -> None:
        event = self._decode(delivery)
        if event is _UNDECODABLE:
            return
        envelope, environment = delivery.envelope, self._environment
        token = environment.enter_context()
        try:
            for pipeline in self._pipelines:
                pipeline.handle(envelope, self.descriptor)
            self.listener.on(event)
        except Exception as error:
            self._report(error, envelope, self.descriptor)
            delivery.reject(requeue=True)
            return
        finally:
            environment.exit_context(token)
        delivery.ack()

    def _spawn(self, delivery: Delivery) -> None:
        assert self._loop is not None
        self._loop.create_task(self._deliver_async(delivery), context=contextvars.Context())

    async def _deliver_async(self, delivery: Delivery) -> None:
        try:
            event = self._decode(delivery)
            if event is _UNDECODABLE:
                return
            envelope, environment = delivery.envelope, self._environment
            token = environment.enter_context()
            try:
                for pipeline in self._pipelines:
                    pipeline.handle(envelope, self.descriptor)
                await self.listener.on(event)  # type: ignore[misc]
            except Exception as error:
                self._report(error, envelope, self.descriptor)
                delivery.reject(requeue=True)
                return
            finally:
                environment.exit_context(token)
            delivery.ack()
        finally:
            self._in_flight.exit()


_UNDECODABLE: Any = object()
