"""One process of the multi-process test: an app with listeners on a real broker.

Run: python -m tests.integration.mp_worker URL EVENT_NAME SERVER_NAME OUT_FILE LISTENER...
where each LISTENER is `name` or `name:per_process`. Every delivery is appended to OUT_FILE
as `listener n` lines; "ready" is printed once the listeners are subscribed. SIGTERM shuts
the environment down gracefully.
"""

from __future__ import annotations

import signal
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any

from aspyx_di import Environment, create, module
from aspyx_event import EventListener, EventManager, create_provider, event, event_listener


def payload_type(event_name: str) -> type:
    cls = types.new_class("Payload", (), {})
    cls.__annotations__ = {"n": int}
    return event(name=event_name)(dataclass(cls))


def main() -> None:
    url, event_name, server_name, out_file, *listeners = sys.argv[1:]
    payload = payload_type(event_name)
    out = open(out_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed at exit
    lock = threading.Lock()
    namespace: dict[str, Any] = {}
    for index, spec in enumerate(listeners):
        name, _, flag = spec.partition(":")

        def on(self: Any, event_instance: Any, name: str = name) -> None:
            with lock:
                out.write(f"{name} {event_instance.n}\n")

        cls = types.new_class(
            f"Listener{index}", (EventListener[Any],), {}, lambda ns, on=on: ns.update(on=on)
        )
        cls.__module__ = __name__
        namespace[cls.__name__] = event_listener(
            payload, name=name, per_process=flag == "per_process"
        )(cls)
    globals().update(namespace)

    @module()
    class WorkerModule:
        @create()
        def create_event_manager(self) -> EventManager:
            return EventManager(create_provider(url, server_name))

    WorkerModule.__module__ = __name__
    globals()["WorkerModule"] = WorkerModule
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Environment(WorkerModule):
        print("ready", flush=True)
        stop.wait()
    out.close()


if __name__ == "__main__":
    main()
