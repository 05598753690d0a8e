"""`EventModule`: builds the `EventManager` from configuration.

`event.provider` is a provider URL (`local://` by default, `amqp://...`, `stomp://...`) and
`event.server_name` names this process for per-process listeners (default: host-pid). So
`EVENT__PROVIDER=stomp://guest:guest@127.0.0.1:61613` moves a service to a broker with no code
change. An app that builds its own manager with `@create()` simply does not import this module.

Delivery settings (all optional): `event.prefetch`, `event.drain_timeout`,
`event.max_message_size`, the default retry policy `event.retry.attempts`, `.delay`,
`.multiplier`, `.max_delay`, `.jitter`, and one listener's policy under
`event.listeners.<listener name>.retry.*` (it wins over the listener's decorator; environment
variables arrive lower-cased, so the name is matched lower-cased too).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aspyx_di import ConfigurationManager, create, module

from .manager import DEFAULT_MAX_MESSAGE_SIZE, EventManager
from .providers import create_provider, default_server_name
from .retry import RetryPolicy


@module(scan=False)  # the manager is all it provides; never import every provider module
class EventModule:
    """Import it (`@module(imports=[EventModule])`) to get an `EventManager` bean."""

    @create()
    def create_event_manager(self, configuration: ConfigurationManager) -> EventManager:
        """The manager for the configured provider (an invalid URL fails the environment build)."""
        url = configuration.get("event.provider", str, default="local://")
        server_name = configuration.get("event.server_name", str, default=default_server_name())

        default = _retry_policy(configuration, "event.retry", RetryPolicy())

        def retry_for(listener: str) -> RetryPolicy | None:
            for name in dict.fromkeys((listener, listener.lower())):
                prefix = f"event.listeners.{name}.retry"
                if (policy := _retry_policy(configuration, prefix, None, default)) is not None:
                    return policy
            return None

        return EventManager(
            create_provider(url, server_name),
            prefetch=configuration.get("event.prefetch", int, default=100),
            drain_timeout=configuration.get("event.drain_timeout", float, default=30.0),
            max_message_size=configuration.get(
                "event.max_message_size", int, default=DEFAULT_MAX_MESSAGE_SIZE
            ),
            retry=default,
            retry_for=retry_for,
        )


def _retry_policy(
    configuration: ConfigurationManager,
    prefix: str,
    default: RetryPolicy | None,
    base: RetryPolicy | None = None,
) -> RetryPolicy | None:
    """The policy configured under `prefix`, its missing fields from `base` (or `default`,
    or RetryPolicy()); `default` when nothing is configured there."""
    values: dict[str, Any] = {}
    for field, type_ in (
        ("attempts", int),
        ("delay", float),
        ("multiplier", float),
        ("max_delay", float),
        ("jitter", float),
    ):
        value = configuration.get(f"{prefix}.{field}", type_, default=None)
        if value is not None:
            values[field] = value
    if not values:
        return default
    return replace(base or default or RetryPolicy(), **values)
