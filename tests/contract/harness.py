"""Building throw-away apps ("members") against one broker for the contract suite.

Each member is a real Environment with an EventManager, listeners and a recording pipeline,
defined in a fresh synthetic Python module so that names never clash between tests.
"""

from __future__ import annotations

import itertools
import queue
import subprocess
import sys
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aspyx_di import Environment, create, injectable, module
from aspyx_event import (
    Envelope,
    EnvelopePipeline,
    EventDescriptor,
    EventListener,
    EventListenerDescriptor,
    EventManager,
    Provider,
    create_provider,
    envelope_pipeline,
    event,
    event_listener,
)
from aspyx_event.providers.local import LocalBroker, LocalProvider
from aspyx_event.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
_apps = itertools.count()


@dataclass(frozen=True)
class BrokerTarget:
    """One provider x broker combination of the contract suite."""

    name: str
    url: str  # "" for the local provider
    restart: str = ""  # the scripts/brokers.sh command restarting this broker
    local: LocalBroker = field(default_factory=LocalBroker)

    def provider(self, server_name: str) -> Provider:
        if not self.url:
            return LocalProvider(server_name, broker=self.local)
        return create_provider(self.url, server_name)

    def restart_broker(self) -> None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "brokers.sh"), self.restart], check=True, timeout=180
        )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def payload_event(durable: bool = False) -> type:
    """A fresh event type (unique name) with an int and a text field."""
    name = unique("Payload")
    cls = types.new_class(name.replace("-", "_"), (), {})
    cls.__annotations__ = {"n": int, "text": str}
    return event(name=name, durable=durable)(dataclass(cls))


@dataclass(frozen=True)
class Received:
    member: str
    listener: str
    event: Any
    headers: dict[str, str]
    redelivered_count: int = 0
    thread: str = ""


@dataclass
class ListenerSpec:
    event: type
    name: str
    per_process: bool = False
    behaviour: Callable[[Any, int], None] | None = None  # (event, attempt) -> raise to fail
    retry: RetryPolicy | None = None
    idempotent: bool = False
    concurrency: int | None = None


@dataclass
class Member:
    """A running app: its environment and what its listeners received."""

    name: str
    environment: Environment
    received: queue.Queue[Received]
    errors: queue.Queue[tuple[str, str]]

    @property
    def manager(self) -> EventManager:
        return self.environment.get(EventManager)

    def send(self, event_instance: Any) -> None:
        self.manager.send_event(event_instance)

    def take(self, count: int, timeout: float = 30.0) -> list[Received]:
        return [self.received.get(timeout=timeout) for _ in range(count)]

    def stop(self) -> None:
        self.environment.shutdown()


def start_member(
    target: BrokerTarget,
    listeners: list[ListenerSpec],
    *,
    server_name: str | None = None,
    prefetch: int = 100,
    received: queue.Queue[Received] | None = None,
) -> Member:
    """A new app with `listeners` on `target`, started (its listeners are subscribed).

    Members given the same `received` queue record into it together.
    """
    app_name = f"contract_app_{next(_apps)}"
    python_module = types.ModuleType(app_name)
    sys.modules[app_name] = python_module
    received = received if received is not None else queue.Queue()
    errors: queue.Queue[tuple[str, str]] = queue.Queue()
    member_name = server_name or unique("member")
    headers_seen: dict[int, dict[str, str]] = {}

    def define(cls: type) -> type:
        cls.__module__ = app_name
        setattr(python_module, cls.__name__, cls)
        return cls

    @envelope_pipeline()
    class Recording(EnvelopePipeline):
        def send(self, envelope: Envelope, event_descriptor: EventDescriptor) -> None:
            envelope.set("trace", f"sent-by-{member_name}")

        def handle(self, envelope: Envelope, listener: EventListenerDescriptor) -> None:
            import threading  # noqa: PLC0415 - keep the harness self-contained

            headers_seen[threading.get_ident()] = dict(envelope.headers)

    @injectable()
    class Errors:
        def handle_error(
            self, error: Exception, envelope: Envelope, listener: EventListenerDescriptor
        ) -> None:
            errors.put((type(error).__name__, envelope.message_id))

    define(Recording)
    define(Errors)
    for index, spec in enumerate(listeners):
        define(_listener_class(index, spec, member_name, received, headers_seen))

    def create_event_manager(self: Any) -> EventManager:
        return EventManager(target.provider(member_name), prefetch=prefetch, drain_timeout=10)

    create_event_manager.__annotations__ = {"return": EventManager}
    app = types.new_class(
        app_name, (), {}, lambda ns: ns.update(create_event_manager=create()(create_event_manager))
    )
    define(module()(app))
    return Member(member_name, Environment(app), received, errors)


def _listener_class(
    index: int,
    spec: ListenerSpec,
    member_name: str,
    received: queue.Queue[Received],
    headers_seen: dict[int, dict[str, str]],
) -> type:
    import threading  # noqa: PLC0415

    attempts: dict[Any, int] = {}

    def on(self: Any, event_instance: Any) -> None:
        key = repr(event_instance)
        attempts[key] = attempts.get(key, 0) + 1
        if spec.behaviour is not None:
            spec.behaviour(event_instance, attempts[key])
        headers = headers_seen.pop(threading.get_ident(), {})
        received.put(
            Received(
                member_name,
                spec.name,
                event_instance,
                headers,
                attempts[key] - 1,
                threading.current_thread().name,
            )
        )

    cls = types.new_class(
        f"Listener{index}", (EventListener[Any],), {}, lambda ns: ns.update(on=on)
    )
    return event_listener(
        spec.event,
        name=spec.name,
        per_process=spec.per_process,
        retry=spec.retry,
        idempotent=spec.idempotent,
        concurrency=spec.concurrency,
    )(cls)


def raw_send(target: BrokerTarget, event_name: str, body: str) -> None:
    """Send `body` to the event's address with the broker's own client library, bypassing the
    framework (no headers of ours)."""
    raw_send_many(target, event_name, [body])


def raw_send_many(target: BrokerTarget, event_name: str, bodies: list[str]) -> None:
    """`raw_send` for many bodies, in order, over one connection."""
    if not target.url:
        for body in bodies:
            target.local.publish(Envelope(body, {"event-name": event_name}))
    elif target.url.startswith("amqp"):
        from proton import Message  # noqa: PLC0415 - optional client library
        from proton.utils import BlockingConnection  # noqa: PLC0415

        connection = BlockingConnection("amqp://guest:guest@127.0.0.1:5672", timeout=30)
        try:
            sender = connection.create_sender(f"/topic/{event_name}")
            for body in bodies:
                sender.send(Message(body=body, durable=True))
        finally:
            connection.close()
    else:
        import stomp  # noqa: PLC0415 - optional client library

        port = int(target.url.rsplit(":", 1)[1].split("?")[0])
        connection = stomp.Connection12([("127.0.0.1", port)], vhost="/")
        connection.connect("guest", "guest", wait=True)
        try:
            for index, body in enumerate(bodies):
                headers = {"persistent": "true", "receipt": f"r{index}"}
                connection.send(f"/topic/{event_name}", body, headers=headers)
        finally:
            connection.disconnect()  # waits for its own receipt: the sends before are in
