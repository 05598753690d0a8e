"""One process of the multi-process test: an app with listeners on a real broker.

Run: python -m tests.integration.mp_worker URL EVENT_NAME SERVER_NAME OUT_FILE LISTENER...
where each LISTENER is `name` or `name:per_process`. Every delivery is appended to OUT_FILE
as `listener n` lines (after the listener's work: the environment variable MP_WORK_MS makes
each delivery take that long, MP_DURABLE=1 makes the event durable); "ready" is printed once
the listeners are subscribed. SIGTERM shuts the environment down gracefully.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass
from typing import Any

from aspyx_di import Environment, create, module
from aspyx_event import EventListener, EventManager, create_provider, event, event_listener


def payload_type(event_name: str, durable: bool = False) -> type:
    cls = types.new_class("Payload", (), {})
    cls.__annotations__ = {"n": int}
    return event(name=event_name, durable=durable)(dataclass(cls))


def main() -> None:
    url, event_name, server_name, out_file, *listeners = sys.argv[1:]
    payload = payload_type(event_name, durable=os.environ.get("MP_DURABLE") == "1")
    out = open(out_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed at exit
    lock = threading.Lock()
    work = float(os.environ.get("MP_WORK_MS", "0")) / 1000
    namespace: dict[str, Any] = {}
    for index, spec in enumerate(listeners):
        name, _, flag = spec.partition(":")

        def on(self: Any, event_instance: Any, name: str = name) -> None:
            if work:
                time.sleep(work)
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
    environment = Environment(WorkerModule)
    environment.shutdown_on_signals()  # SIGTERM: finish in-flight deliveries, exit 0
    print("ready", flush=True)
    while True:
        signal.pause()  # until SIGTERM: its handler shuts down and exits


if __name__ == "__main__":
    main()
