"""Lifecycle hooks, injection methods, post processors."""

from __future__ import annotations

import asyncio

from aspyx_di import ConfigurationManager, DictSource, Environment
from tests.fixtures import injection, lifecycle


def test_hooks_run_in_order_and_destroy_in_reverse_creation_order() -> None:
    lifecycle.events.clear()
    environment = Environment(lifecycle.LifecycleModule)
    assert lifecycle.events[:6] == [
        "Database()",
        "Database.on_init",
        "Cache()",
        "Cache.inject",
        "Cache.on_init",
        "Database.on_running",
    ]
    assert "Lazy()" not in lifecycle.events, "eager=False beans are created on first use"
    assert lifecycle.events.index("Database.on_running") > lifecycle.events.index("Cache.on_init")
    lifecycle.events.clear()
    asyncio.run(environment.stop())
    assert lifecycle.events == [
        "AsyncWorker.async on_destroy",
        "Cache.on_destroy",
        "Database.on_destroy",
    ]


def test_async_hooks_are_awaited_by_start_and_stop() -> None:
    lifecycle.events.clear()
    environment = Environment(lifecycle.LifecycleModule)
    assert "AsyncWorker.async on_init" not in lifecycle.events
    asyncio.run(environment.start())
    assert "AsyncWorker.async on_init" in lifecycle.events
    environment.shutdown()  # no loop running: shutdown awaits async destroy hooks itself
    assert lifecycle.events[-3:] == [
        "AsyncWorker.async on_destroy",
        "Cache.on_destroy",
        "Database.on_destroy",
    ]


def test_context_manager_shuts_down() -> None:
    lifecycle.events.clear()
    with Environment(lifecycle.LifecycleModule):
        pass
    assert lifecycle.events[-1] == "Database.on_destroy"


def test_injection_methods_values_and_post_processors() -> None:
    configuration = ConfigurationManager(DictSource({"http": {"port": "8080"}}))
    environment = Environment(injection.InjectionModule, configuration=configuration)
    configured = environment.get(injection.Configured)
    assert configured.clock is environment.get(injection.Clock)
    assert configured.environment is environment
    assert configured.port == 8080
    assert configured.host == "127.0.0.1"
    seen = environment.get(injection.Seen).instances
    assert configured in seen and environment.get(injection.Clock) in seen


def test_shutdown_hooks_run_before_destroy_hooks() -> None:
    lifecycle.events.clear()
    environment = Environment(lifecycle.LifecycleModule)
    environment.add_shutdown_hook(lambda: lifecycle.events.append("first hook"))
    environment.add_shutdown_hook(lambda: lifecycle.events.append("second hook"))
    lifecycle.events.clear()
    environment.shutdown()
    assert lifecycle.events[:3] == ["second hook", "first hook", "AsyncWorker.async on_destroy"]
