"""The smallest aspyx_event program: one event, one listener, the embedded local provider.

Run: python examples/hello.py   (no broker needed; set EVENT__PROVIDER to use one)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from aspyx_di import Environment, injectable, module
from aspyx_event import EventListener, EventManager, EventModule, event, event_listener


@dataclass
@event()
class HelloEvent:
    world: str


@injectable()
class Greeter:
    def __init__(self) -> None:
        self.received = threading.Event()

    def greet(self, name: str) -> str:
        return f"hello {name}"


@event_listener(HelloEvent)
class HelloEventListener(EventListener[HelloEvent]):
    def __init__(self, greeter: Greeter) -> None:
        self.greeter = greeter

    def on(self, event: HelloEvent) -> None:
        print(f"HelloEventListener received {event!r}: {self.greeter.greet(event.world)}")
        self.greeter.received.set()


@module(imports=[EventModule])
class HelloModule:
    pass


def main() -> None:
    with Environment(HelloModule) as environment:
        environment.get(EventManager).send_event(HelloEvent("world"))
        if not environment.get(Greeter).received.wait(timeout=10):
            raise SystemExit("the listener did not receive the event within 10 s")


if __name__ == "__main__":
    main()
