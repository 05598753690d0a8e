"""Delivering one listener's messages: decode, pipelines' `handle`, the listener, then settle.

Threading: a provider calls `ListenerDispatch.__call__` on its own thread. Sync listeners run
right there when the provider says its threads may block (`inline_dispatch`), otherwise on
the listener's own worker thread; async listeners run as tasks on the manager's event loop.
A listener with `concurrency` > 1 gets that many worker threads (sync) or at most that many
tasks at once (async). Each delivery runs in a fresh `contextvars` context and a fresh DI
`context` scope, and is acknowledged only after the listener returned.

A failure goes to the group's `Redelivery` (retries with backoff, then the dead letters); a
poison message (undecodable, invalid, or naming another event) becomes a dead letter at
once. An idempotent listener claims the message id in its `IdempotencyStore` first: a
processed id is acknowledged without running the listener, one claimed by a live owner
elsewhere comes back later.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aspyx_di import Environment

from .codec import Codec
from .envelope import Envelope
from .errors import DecodeError
from .handoff import Workers
from .idempotency import IdempotencyStore
from .listener import EventListener, EventListenerDescriptor
from .pipeline import EnvelopePipeline
from .provider import Delivery
from .retry import Redelivery, Scheduler, attempt_of

logger = logging.getLogger(__name__)


class ErrorHandler(Protocol):
    """Told about every failed delivery (after the failure was logged once)."""

    def handle_error(
        self, error: Exception, envelope: Envelope, listener: EventListenerDescriptor
    ) -> None:
        """React to `error` (metrics, alerts...). Exceptions raised here are logged and ignored."""


class InFlight:
    """Counts deliveries in progress so a shutdown can wait for them.

    Two `itertools.count`s whose `__next__` is one atomic C call each: no lock per delivery.
    Only shutdown (and tests) read the difference, by polling.
    """

    def __init__(self) -> None:
        self._entered, self._exited = itertools.count(), itertools.count()
        self.enter: Callable[[], object] = self._entered.__next__
        self.exit: Callable[[], object] = self._exited.__next__

    @property
    def count(self) -> int:
        """Deliveries entered and not exited yet."""
        return _next_value(self._entered) - _next_value(self._exited)

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
        redelivery: Redelivery,
        store: IdempotencyStore | None = None,
    ) -> None:
        self.listener = listener
        self.descriptor = descriptor
        self._environment = environment
        self._decode_body = codec.decoder(descriptor.event)
        self._pipelines = tuple(pipelines)
        self._report = report
        self._in_flight = in_flight
        self._redelivery = redelivery
        self._store = store
        self._group = redelivery.subscription.queue  # the idempotency key's group part
        self.is_async = inspect.iscoroutinefunction(listener.on)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: Workers | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def scheduler(self) -> Scheduler:
        """The timer thread of retries (shared by the manager's listeners)."""
        return self._redelivery.scheduler

    def attach(self, inline: bool, loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        """Choose where this listener runs, given the provider's threading."""
        concurrency = self.descriptor.concurrency
        if self.is_async:
            self._loop = loop()
            if concurrency is not None:
                self._slots = asyncio.Semaphore(concurrency)
        elif not inline or (concurrency or 1) > 1:
            name = f"listener-{self.descriptor.name}"
            self._workers = Workers(name, concurrency or 1, self._run_sync)

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
        """Release the worker threads (after in-flight deliveries finished)."""
        if self._workers is not None:
            self._workers.shutdown()

    def _decode(self, delivery: Delivery) -> Any:
        envelope = delivery.envelope
        expected = self.descriptor.event.name
        try:
            name = envelope.event_name  # absent in messages of other producers: routing says
            if name and name != expected:
                raise DecodeError(expected, envelope.message_id, f"the message is a {name!r}")
            return self._decode_body(envelope.body, envelope.message_id)
        except DecodeError as error:
            self._report(error, envelope, self.descriptor)
            attempts = attempt_of(envelope.headers)
            self._redelivery.dead_letter(delivery, "poison", error, attempts)  # never improves
            return _UNDECODABLE

    def _claim(self, delivery: Delivery) -> bool:
        """Idempotent listeners: True if this delivery may run (see the module docstring)."""
        store, message_id = self._store, delivery.envelope.message_id
        if store is None:
            return True
        try:
            if store.claim(self._group, message_id):
                return True
            if store.seen(self._group, message_id):
                logger.debug("%s: message %s was processed already", self._group, message_id)
                delivery.ack()
                return False
        except Exception:
            logger.exception("%s: the idempotency store failed", self._group)
        # claimed by a live owner elsewhere (or the store failed): offer it again later
        self.scheduler.call_later(_CLAIMED_RETRY, lambda: delivery.reject(requeue=True))
        return False

    def _succeeded(self, delivery: Delivery) -> None:
        if self._store is not None:
            try:
                self._store.complete(self._group, delivery.envelope.message_id)
            except Exception:
                logger.exception("%s: the idempotency store failed", self._group)
        delivery.ack()

    def _failed(self, delivery: Delivery, error: Exception) -> None:
        self._report(error, delivery.envelope, self.descriptor)
        if self._store is not None:
            try:
                self._store.release(self._group, delivery.envelope.message_id)
            except Exception:
                logger.exception("%s: the idempotency store failed", self._group)
        self._redelivery.failed(delivery, error)

    def _run_sync(self, delivery: Delivery) -> None:
        try:
            contextvars.Context().run(self._deliver_sync, delivery)
        finally:
            self._in_flight.exit()

    def _deliver_sync(self, delivery: Delivery) -> None:
        event = self._decode(delivery)
        if event is _UNDECODABLE or (self._store is not None and not self._claim(delivery)):
            return
        envelope, environment = delivery.envelope, self._environment
        token = environment.enter_context()
        try:
            for pipeline in self._pipelines:
                pipeline.handle(envelope, self.descriptor)
            self.listener.on(event)
        except Exception as error:
            self._failed(delivery, error)
            return
        finally:
            environment.exit_context(token)
        if self._store is None:
            delivery.ack()
        else:
            self._succeeded(delivery)

    def _spawn(self, delivery: Delivery) -> None:
        assert self._loop is not None
        self._loop.create_task(self._deliver_async(delivery), context=contextvars.Context())

    async def _deliver_async(self, delivery: Delivery) -> None:
        try:
            if self._slots is None:
                await self._deliver_async_now(delivery)
            else:
                async with self._slots:
                    await self._deliver_async_now(delivery)
        finally:
            self._in_flight.exit()

    async def _deliver_async_now(self, delivery: Delivery) -> None:
        event = self._decode(delivery)
        if event is _UNDECODABLE or not self._claim(delivery):
            return
        envelope, environment = delivery.envelope, self._environment
        token = environment.enter_context()
        try:
            for pipeline in self._pipelines:
                pipeline.handle(envelope, self.descriptor)
            await self.listener.on(event)  # type: ignore[misc]
        except Exception as error:
            self._failed(delivery, error)
            return
        finally:
            environment.exit_context(token)
        self._succeeded(delivery)


def _next_value(counter: itertools.count[int]) -> int:
    return int(repr(counter)[len("count(") : -1])  # reading it without advancing it


_UNDECODABLE: Any = object()
_CLAIMED_RETRY = 1.0  # seconds before a message claimed elsewhere is offered again
