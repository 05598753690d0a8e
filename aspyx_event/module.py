"""`EventModule`: builds the `EventManager` from configuration.

`event.provider` is a provider URL (`local://` by default, `amqp://...`, `stomp://...`) and
`event.server_name` names this process for per-process listeners (default: host-pid). So
`EVENT__PROVIDER=stomp://guest:guest@127.0.0.1:61613` moves a service to a broker with no code
change. An app that builds its own manager with `@create()` simply does not import this module.
"""

from __future__ import annotations

from aspyx_di import ConfigurationManager, create, module

from .manager import EventManager
from .providers import create_provider, default_server_name


@module(scan=False)  # the manager is all it provides; never import every provider module
class EventModule:
    """Import it (`@module(imports=[EventModule])`) to get an `EventManager` bean."""

    @create()
    def create_event_manager(self, configuration: ConfigurationManager) -> EventManager:
        """The manager for the configured provider (an invalid URL fails the environment build)."""
        url = configuration.get("event.provider", str, default="local://")
        server_name = configuration.get("event.server_name", str, default=default_server_name())
        return EventManager(create_provider(url, server_name))
