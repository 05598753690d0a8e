"""Dead letters: messages a listener group gave up on, kept in `<event>::<group>.dlq`.

A delivery becomes a dead letter after its retry policy's last attempt failed, or at once
when it is poison (a body that cannot be decoded or fails validation, or a message naming
another event than the group's). The dead letter is a copy of the original envelope (body,
every header, the same message id) plus the `DEAD_LETTER_*` headers saying why; the original
is acknowledged only once the broker accepted the copy.

`DeadLetters` lists and re-drives them through a second connection of the same provider
(`Provider.clone`): listing reads the dead-letter queue without acknowledging anything, so
every message goes back when the reader disconnects; re-driving puts a copy (attempt count
reset, `DEAD_LETTER_*` headers removed) into the group's queue and acknowledges the dead
letter once the broker accepted that copy. The command line does the same::

    python -m aspyx_event.dead_letters --provider amqp://guest:guest@127.0.0.1:5672 \\
        list OrderPlaced Billing
    python -m aspyx_event.dead_letters --provider ... redrive OrderPlaced Billing [--id ID ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from .envelope import ATTEMPT, Envelope
from .errors import EventError
from .provider import Delivery, Provider, Subscription

DEAD_LETTER_REASON = "dead-letter-reason"
"""Why: `failed` (the retries ran out) or `poison` (undecodable, invalid, wrong event)."""
DEAD_LETTER_ERROR = "dead-letter-error"
"""The type of the last error, e.g. `ValueError` or `aspyx_event.errors.DecodeError`."""
DEAD_LETTER_MESSAGE = "dead-letter-message"
"""The last error's message (at most `MESSAGE_LIMIT` characters)."""
DEAD_LETTER_ATTEMPTS = "dead-letter-attempts"
"""How many deliveries were attempted."""
DEAD_LETTER_LISTENER = "dead-letter-listener"
"""The listener (group) that gave up."""
DEAD_LETTER_TIME = "dead-letter-time"
"""When, in milliseconds since the epoch."""
DEAD_LETTER_HEADERS = (
    DEAD_LETTER_REASON,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_MESSAGE,
    DEAD_LETTER_ATTEMPTS,
    DEAD_LETTER_LISTENER,
    DEAD_LETTER_TIME,
)
MESSAGE_LIMIT = 2000


def dead_letter_envelope(
    envelope: Envelope, reason: str, error: BaseException, attempts: int, listener: str
) -> Envelope:
    """The copy of `envelope` that goes to the dead-letter queue."""
    error_type = type(error)
    module = "" if error_type.__module__ == "builtins" else error_type.__module__ + "."
    headers = dict(envelope.headers)
    headers.update(
        {
            DEAD_LETTER_REASON: reason,
            DEAD_LETTER_ERROR: module + error_type.__qualname__,
            DEAD_LETTER_MESSAGE: str(error)[:MESSAGE_LIMIT],
            DEAD_LETTER_ATTEMPTS: str(attempts),
            DEAD_LETTER_LISTENER: listener,
            DEAD_LETTER_TIME: str(time.time_ns() // 1_000_000),
        }
    )
    return Envelope(envelope.body, headers)


def redriven_envelope(envelope: Envelope) -> Envelope:
    """The copy a re-drive puts back into the group's queue: a fresh first attempt."""
    headers = {
        name: value
        for name, value in envelope.headers.items()
        if name not in DEAD_LETTER_HEADERS and name != ATTEMPT
    }
    return Envelope(envelope.body, headers)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as listed: the stored envelope and the facts from its headers."""

    envelope: Envelope

    @property
    def message_id(self) -> str:
        """The original message id."""
        return self.envelope.message_id

    @property
    def reason(self) -> str:
        """`failed` or `poison`."""
        return self.envelope.headers.get(DEAD_LETTER_REASON, "")

    @property
    def error(self) -> str:
        """`<error type>: <message>` of the last failure."""
        headers = self.envelope.headers
        return f"{headers.get(DEAD_LETTER_ERROR, '')}: {headers.get(DEAD_LETTER_MESSAGE, '')}"

    @property
    def attempts(self) -> int:
        """Deliveries attempted before it was given up."""
        return int(self.envelope.headers.get(DEAD_LETTER_ATTEMPTS, "0") or 0)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view (the command prints these)."""
        envelope = self.envelope
        return {"message_id": self.message_id, "headers": envelope.headers, "body": envelope.body}


class DeadLetters:
    """Lists and re-drives the dead letters of listener groups (see the module docstring).

    Args:
        provider: a provider configured for the broker (it is not used itself: each call
            works on a fresh `clone()` that it starts and stops).
        wait: seconds without a new message after which the queue counts as read.
    """

    def __init__(self, provider: Provider, wait: float = 1.0) -> None:
        self.provider = provider
        self.wait = wait

    def list(self, event: str, group: str, limit: int = 1000) -> list[DeadLetter]:
        """Up to `limit` dead letters of `group` for `event`; nothing is removed."""
        with _Reader(self.provider, event, group, limit, self.wait) as reader:
            return [DeadLetter(delivery.envelope) for delivery in reader.deliveries]

    def redrive(
        self, event: str, group: str, ids: Collection[str] | None = None, limit: int = 1000
    ) -> int:
        """Put dead letters (all, or those with a message id in `ids`) back into the group's
        queue; returns how many were re-driven (the others stay dead letters)."""
        with _Reader(self.provider, event, group, limit, self.wait) as reader:
            chosen = [d for d in reader.deliveries if ids is None or d.envelope.message_id in ids]
            target = Subscription(event, group, durable=True)
            sends = [
                (d, reader.connection.send_to_queue(target, redriven_envelope(d.envelope)))
                for d in chosen
            ]
            for delivery, future in sends:
                future.result(timeout=60)  # raises: the dead letter stays (not acknowledged)
                delivery.ack()
            return len(sends)


class _Reader:
    """A started clone consuming a dead-letter queue until it is quiet; stops on exit."""

    def __init__(self, provider: Provider, event: str, group: str, limit: int, wait: float):
        if limit < 1:
            raise EventError(f"limit must be at least 1, not {limit}.\nHint: e.g. limit=100.")
        self.connection = provider.clone()
        self.deliveries: list[Delivery] = []
        self._limit, self._wait = limit, wait
        self._changed = threading.Condition()
        subscription = replace(Subscription(event, group).dead_letter(), prefetch=limit)
        self.connection.subscribe(subscription, self._receive)

    def _receive(self, delivery: Delivery) -> None:
        with self._changed:
            if len(self.deliveries) < self._limit:
                self.deliveries.append(delivery)  # unsettled: it returns unless acknowledged
            self._changed.notify_all()

    def __enter__(self) -> _Reader:
        self.connection.start()
        with self._changed:
            while len(self.deliveries) < self._limit:
                count = len(self.deliveries)
                self._changed.wait(self._wait)
                if len(self.deliveries) == count:
                    break  # quiet for `wait` seconds: everything available has arrived
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for delivery in self.deliveries:
                delivery.reject(requeue=True)  # back to the queue; a no-op once acknowledged
        finally:
            self.connection.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    from .providers import create_provider  # noqa: PLC0415  # keeps the import graph small

    parser = argparse.ArgumentParser(prog="python -m aspyx_event.dead_letters")
    parser.add_argument("--provider", required=True, help="provider URL, e.g. amqp://...")
    parser.add_argument("--wait", type=float, default=1.0, help="seconds of quiet = all read")
    parser.add_argument("--limit", type=int, default=1000)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "redrive"):
        command = commands.add_parser(name)
        command.add_argument("event")
        command.add_argument("group", help="the listener name (per-process: name-server)")
        if name == "redrive":
            command.add_argument("--id", action="append", help="only this message id")
    args = parser.parse_args(argv)
    dead_letters = DeadLetters(create_provider(args.provider, "dead-letters-cli"), args.wait)
    if args.command == "list":
        found = dead_letters.list(args.event, args.group, args.limit)
        json.dump([letter.to_dict() for letter in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    count = dead_letters.redrive(args.event, args.group, args.id, args.limit)
    sys.stdout.write(f"re-drove {count} dead letter(s) of {args.event}::{args.group}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
