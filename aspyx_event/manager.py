"""The `EventManager`: sends events and delivers them to the environment's listeners."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from aspyx_di import Environment, inject_environment, on_destroy, on_running

from .codec import Codec, JsonCodec
from .dispatch import ErrorHandler, InFlight, ListenerDispatch
from .envelope import Envelope, new_envelope
from .errors import EventError, HeaderError, MessageTooLargeError, ProviderConnectionError
from .event import EventDescriptor, describe_event
from .handoff import LoopCompletions
from .idempotency import IdempotencyStore, InMemoryIdempotencyStore
from .listener import EventListener, EventListenerDescriptor, describe_listener
from .pipeline import EnvelopePipeline
from .provider import SENT, Provider, Subscription
from .retry import Redelivery, RetryPolicy, Scheduler

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
"""Bytes: the default limit of an encoded event body (brokers' frame limits are higher)."""

logger = logging.getLogger(__name__)


class EventManager:
    """Sends events through a provider and delivers them to the environment's listeners.

    Created by `EventModule` from configuration, or by an app's own `@create()` method as
    `EventManager(LocalProvider())`. It starts when the environment runs (every
    `@event_listener` bean is subscribed, its group being the listener's name) and stops with
    it, letting in-flight deliveries finish first.

    Args:
        provider: the transport.
        codec: how events become bodies (default: JSON through pydantic).
        prefetch: unacknowledged deliveries a listener may hold at once (a listener's own
            `prefetch` wins).
        drain_timeout: seconds shutdown waits for in-flight deliveries.
        retry: the retry policy of listeners that name none.
        retry_for: a listener name's policy from elsewhere (configuration), winning over both
            the listener's and the default; None when it has none.
        max_message_size: the largest encoded body `send_event` accepts, in bytes.
        resend_timeout: seconds a durable send whose connection dropped before the broker's
            answer is sent again (with the same message id).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        codec: Codec | None = None,
        prefetch: int = 100,
        drain_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        retry_for: Callable[[str], RetryPolicy | None] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        resend_timeout: float = 30.0,
    ) -> None:
        self.provider = provider
        self.codec = codec or JsonCodec()
        self.prefetch = prefetch
        self.drain_timeout = drain_timeout
        self.retry = retry or RetryPolicy()
        self.max_message_size = max_message_size
        self.resend_timeout = resend_timeout
        self._retry_for = retry_for or (lambda name: None)
        self._scheduler = Scheduler("aspyx-event-retry")
        self._store: IdempotencyStore | None = None
        self._own_store = False
        self.environment: Environment | None = None
        self._pipelines: tuple[EnvelopePipeline, ...] = ()
        self._error_handlers: tuple[ErrorHandler, ...] = ()
        # per event type: its descriptor and encoder, looked up once
        self._senders: dict[type, tuple[EventDescriptor, Callable[[Any], str]]] = {}
        self._dispatches: list[ListenerDispatch] = []
        self._in_flight = InFlight()
        self._completions: LoopCompletions | None = None
        self._lock = threading.Lock()
        self._state = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    @inject_environment()
    def set_environment(self, environment: Environment) -> None:
        """Called by the environment that created the manager."""
        self.environment = environment

    @on_running()
    def start(self) -> None:
        """Subscribe every listener of the environment and start the provider (idempotent)."""
        with self._lock:
            if self._state != "new":
                return
            environment = self._require_environment()
            self._pipelines = tuple(environment.get(list[EnvelopePipeline]))
            self._error_handlers = tuple(environment.get(list[ErrorHandler]))
            stores = environment.get(list[IdempotencyStore])
            self._store = stores[0] if stores else None
            for listener in environment.get(list[EventListener[Any]]):
                self._subscribe(listener, describe_listener(type(listener)))
            self.provider.start()
            self._state = "running"
            environment.add_shutdown_hook(self.stop)  # stop consuming before beans are destroyed
        logger.info(
            "event manager running on %s with %d listener(s)",
            type(self.provider).__name__,
            len(self._dispatches),
        )

    def _subscribe(self, listener: EventListener[Any], descriptor: EventListenerDescriptor) -> None:
        assert self.environment is not None
        subscription = Subscription(
            event=descriptor.event.name,
            group=descriptor.group(self.provider.server_name),
            durable=descriptor.event.durable,
            per_process=descriptor.per_process,
            prefetch=descriptor.prefetch or self.prefetch,
        )
        policy = self._retry_for(descriptor.name) or descriptor.retry or self.retry
        redelivery = Redelivery(
            self.provider, subscription, policy, self._scheduler, descriptor.name
        )
        dispatch = ListenerDispatch(
            listener,
            descriptor,
            environment=self.environment,
            codec=self.codec,
            pipelines=self._pipelines,
            report=self._report,
            in_flight=self._in_flight,
            redelivery=redelivery,
            store=self._idempotency_store() if descriptor.idempotent else None,
        )
        dispatch.attach(self.provider.inline_dispatch, self._event_loop)
        self.provider.subscribe(subscription, dispatch)
        self._dispatches.append(dispatch)

    def _idempotency_store(self) -> IdempotencyStore:
        if self._store is None:  # no IdempotencyStore bean: one in memory, ours to close
            self._store, self._own_store = InMemoryIdempotencyStore(), True
        return self._store

    @on_destroy()
    def stop(self) -> None:
        """Stop consuming, let in-flight deliveries finish (up to `drain_timeout`), disconnect."""
        with self._lock:
            if self._state != "running":
                return
            self._state = "stopping"
        self.provider.pause()
        if not self._in_flight.wait_idle(self.drain_timeout):
            logger.warning(
                "deliveries still running after %.1fs; stopping anyway", self.drain_timeout
            )
        self.provider.stop()
        self._scheduler.close()  # retries still waiting: their originals went back unsettled
        for dispatch in self._dispatches:
            dispatch.close()
        if self._own_store and self._store is not None:
            self._store.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()
        self._state = "stopped"

    def send_event(self, event: Any) -> None:
        """Send `event` to every listener group; callable from any thread, listeners included.

        For a durable event it returns once the broker accepted the message. If the connection
        drops before the broker's answer, the same message (same id) is sent again after the
        reconnect, for up to `resend_timeout` seconds: the broker may then hold it twice,
        which idempotent listeners skip.

        Raises:
            UnknownEventError: `event` is not an instance of an `@event()` class.
            MessageTooLargeError, HeaderError: bad input; nothing was sent.
            ProviderError: the provider could not send it (nothing was reported as sent).
        """
        envelope, durable = self._prepare(event)
        if durable and self._on_own_loop():
            raise EventError(
                "send_event() of a durable event would block the event loop it runs on.\n"
                "Hint: in async listeners use `await event_manager.send_event_async(event)`."
            )
        future = self.provider.send(envelope, durable)
        if future is SENT:
            return
        if not durable:
            if future.done():
                future.result()  # raises the provider error; a pending one finishes later
            return
        deadline = time.monotonic() + self.resend_timeout
        while True:
            try:
                return future.result()
            except ProviderConnectionError:
                if time.monotonic() >= deadline:
                    raise
                logger.info("resending message %s after a connection loss", envelope.message_id)
                future = self.provider.send(envelope, durable)

    def send_events(self, events: Iterable[Any]) -> None:
        """Send many events with all of them in flight at once (the provider bounds the window);
        returns once the broker accepted every durable one.

        Raises:
            ProviderError: the first failure; the other events were still sent, and the
                ones that failed are listed in the log.
        """
        futures = []
        for event in events:
            envelope, durable = self._prepare(event)
            if durable and self._on_own_loop():
                raise EventError("send_events() would block the event loop it runs on.")
            futures.append(self.provider.send(envelope, durable))
        errors = [f.exception() for f in futures if f is not SENT and f.exception() is not None]
        if errors:
            logger.error(
                "%d of %d events were not accepted: %s", len(errors), len(futures), errors[0]
            )
            raise errors[0]  # type: ignore[misc]

    async def send_event_async(self, event: Any) -> None:
        """The asyncio form of `send_event`: awaits the broker's acceptance without blocking.

        Cancelling the await cancels a send the provider has not started yet.
        """
        envelope, durable = self._prepare(event)
        future = self.provider.send(envelope, durable)
        if future.done():
            future.result()
            return
        completions = self._completions
        if completions is None or completions.loop is not asyncio.get_running_loop():
            completions = self._completions = LoopCompletions(asyncio.get_running_loop())
        deadline = time.monotonic() + self.resend_timeout
        while True:
            try:
                await completions.wrap(future)
                return
            except asyncio.CancelledError:
                future.cancel()
                raise
            except ProviderConnectionError:  # as in send_event: the same message again
                if not durable or time.monotonic() >= deadline:
                    raise
                future = self.provider.send(envelope, durable)

    def _prepare(self, event: Any) -> tuple[Envelope, bool]:
        sender = self._senders.get(type(event))
        if sender is None:
            descriptor = describe_event(type(event))
            sender = self._senders[type(event)] = (descriptor, self.codec.encoder(descriptor))
        descriptor, encode = sender
        if self._state == "new" and self.environment is not None:
            self.start()  # a bean sends before the environment finished: start early
        envelope = new_envelope(encode(event), descriptor.name)
        if self._pipelines:
            for pipeline in self._pipelines:
                pipeline.send(envelope, descriptor)
            for name, value in envelope.headers.items():
                if type(value) is not str or type(name) is not str:
                    raise HeaderError(descriptor.name, str(name), value)
        body, limit = envelope.body, self.max_message_size
        if len(body) * 4 > limit and (size := len(body.encode())) > limit:  # 4: UTF-8's worst
            raise MessageTooLargeError(descriptor.name, size, limit)
        return envelope, descriptor.durable

    def _report(
        self, error: Exception, envelope: Envelope, listener: EventListenerDescriptor
    ) -> None:
        logger.error(
            "listener %s failed on event %s (message %s): %s",
            listener.name,
            envelope.event_name,
            envelope.message_id,
            error,
            exc_info=error,
        )
        for handler in self._error_handlers:
            try:
                handler.handle_error(error, envelope, listener)
            except Exception:
                logger.exception("error handler %s failed", type(handler).__name__)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The manager's own loop for async listeners, started on first use."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=loop.run_forever, name="event-manager-loop", daemon=True
            )
            self._loop_thread.start()
            self._loop = loop
        return self._loop

    def _on_own_loop(self) -> bool:
        return self._loop_thread is not None and threading.current_thread() is self._loop_thread

    def _require_environment(self) -> Environment:
        if self.environment is None:
            raise EventError(
                "this EventManager was not created by an Environment, so it has no listeners.\n"
                "Hint: create it in a @create() method of a module, or import EventModule."
            )
        return self.environment
