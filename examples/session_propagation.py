"""Session propagation: a pipeline carries the caller's session id to every listener.

The sending side stores the current session in a header; the receiving side establishes it
again before the listener runs, in the delivery's own context, so the listener sees the
sender's session and nothing leaks into other deliveries.

Run: python examples/session_propagation.py
"""

from __future__ import annotations

import contextvars
import queue
from dataclasses import dataclass

from aspyx_di import Environment, injectable, module
from aspyx_event import (
    Envelope,
    EnvelopePipeline,
    EventDescriptor,
    EventListener,
    EventListenerDescriptor,
    EventManager,
    EventModule,
    envelope_pipeline,
    event,
    event_listener,
)

current_session: contextvars.ContextVar[str] = contextvars.ContextVar("session", default="")


@dataclass
@event()
class PaymentRequested:
    amount: int


@envelope_pipeline()
class SessionPipeline(EnvelopePipeline):
    def send(self, envelope: Envelope, event_descriptor: EventDescriptor) -> None:
        envelope.set("session", current_session.get())

    def handle(
        self, envelope: Envelope, event_listener_descriptor: EventListenerDescriptor
    ) -> None:
        current_session.set(envelope.get("session") or "")


@injectable()
class Ledger:
    def __init__(self) -> None:
        self.entries: queue.Queue[str] = queue.Queue()


@event_listener(PaymentRequested)
class PaymentListener(EventListener[PaymentRequested]):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def on(self, event: PaymentRequested) -> None:
        self.ledger.entries.put(f"{event.amount} charged in session {current_session.get()!r}")


@module(imports=[EventModule])
class PaymentsModule:
    pass


def main() -> None:
    with Environment(PaymentsModule) as environment:
        manager, ledger = environment.get(EventManager), environment.get(Ledger)
        for session, amount in (("alice-1", 10), ("bob-7", 25)):
            token = current_session.set(session)
            manager.send_event(PaymentRequested(amount))
            current_session.reset(token)
        for _ in range(2):
            print(ledger.entries.get(timeout=10))


if __name__ == "__main__":
    main()
