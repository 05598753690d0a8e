"""Retries: how often and how late a failed delivery runs again, and the timer that waits.

A failed delivery is not retried by requeueing the original (a broker would hand it straight
back, with no delay and no count). The dispatcher keeps the original unacknowledged, waits
the policy's delay on the `Scheduler` thread, puts a copy with the next `ATTEMPT` number
straight into the group's queue and acknowledges the original once the broker accepted the
copy. A crash in between leaves the original unacknowledged: it comes back (at least once).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from .dead_letters import dead_letter_envelope
from .envelope import ATTEMPT, Envelope
from .errors import EventDefinitionError
from .provider import Delivery, Provider, Subscription

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a listener's failed deliveries are retried before they become dead letters.

    Attributes:
        attempts: deliveries in all, the first included (1: no retry).
        delay: seconds before the second attempt.
        multiplier: each further delay is the previous one times this.
        max_delay: the longest delay.
        jitter: each delay varies randomly by up to this fraction (spreads retry storms).

    Example:
        >>> policy = RetryPolicy(attempts=4, delay=1.0, multiplier=2.0, jitter=0.0)
        >>> [policy.delay_before(n) for n in (2, 3, 4)]
        [1.0, 2.0, 4.0]
    """

    attempts: int = 3
    delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        problems = [
            f"{name}={value!r} must be {rule}"
            for name, value, rule, ok in (
                ("attempts", self.attempts, "an int >= 1", _is_int(self.attempts, 1)),
                ("delay", self.delay, ">= 0", _is_number(self.delay, 0)),
                ("multiplier", self.multiplier, ">= 1", _is_number(self.multiplier, 1)),
                ("max_delay", self.max_delay, ">= 0", _is_number(self.max_delay, 0)),
                ("jitter", self.jitter, "between 0 and 1", _is_number(self.jitter, 0, 1)),
            )
            if not ok
        ]
        if problems:
            raise EventDefinitionError(
                f"invalid RetryPolicy: {'; '.join(problems)}.\nHint: e.g. "
                "RetryPolicy(attempts=5, delay=0.5, multiplier=2, max_delay=30, jitter=0.1)."
            )

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 for the first retry)."""
        base = min(self.delay * self.multiplier ** max(0, attempt - 2), self.max_delay)
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)  # jitter, not crypto
        return max(0.0, base)


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: object, low: float, high: float = float("inf")) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def attempt_of(headers: dict[str, str]) -> int:
    """The attempt number a delivery's headers carry (1 when absent or unreadable)."""
    try:
        return max(1, int(headers.get(ATTEMPT, "1")))
    except ValueError:
        return 1


class Scheduler:
    """One daemon thread running callables after a delay, in due order.

    Callables must be quick and must not raise (an exception is logged). `close` drops what
    is still waiting: for retries that is safe, the originals are still unacknowledged.

    Example:
        >>> done = threading.Event()
        >>> scheduler = Scheduler("example")
        >>> scheduler.call_later(0.01, done.set)
        >>> done.wait(5)
        True
        >>> scheduler.close()
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # ties keep submission order; never compares callables
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay: float, work: Callable[[], None]) -> None:
        """Run `work` on the scheduler thread in `delay` seconds (dropped once closed)."""
        with self._condition:
            if self._closed:
                return
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), work))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._condition.notify()

    def pending(self) -> int:
        """How many callables wait."""
        with self._condition:
            return len(self._due)

    def close(self) -> None:
        """Stop the thread; what still waits is dropped."""
        with self._condition:
            self._closed = True
            self._due.clear()
            self._condition.notify()

    def _run(self) -> None:
        while (work := self._next()) is not None:
            try:
                work()
            except Exception:
                logger.exception("%s: a scheduled call failed", self._name)

    def _next(self) -> Callable[[], None] | None:
        with self._condition:
            while not self._closed:
                if self._due and (wait := self._due[0][0] - time.monotonic()) <= 0:
                    return heapq.heappop(self._due)[2]
                self._condition.wait(wait if self._due else None)
            return None


class Redelivery:
    """What happens to one listener group's failed deliveries: retries, then dead letters.

    Both move a copy with `Provider.send_to_queue` and acknowledge the original only once the
    broker accepted the copy; if that fails, the original is requeued (nothing is lost).
    """

    def __init__(
        self,
        provider: Provider,
        subscription: Subscription,
        policy: RetryPolicy,
        scheduler: Scheduler,
        listener: str,
    ) -> None:
        self.provider, self.subscription, self.policy = provider, subscription, policy
        self.scheduler, self.listener = scheduler, listener
        # message id -> the attempt a requeued original is on (see `_not_moved`)
        self._requeued: OrderedDict[str, int] = OrderedDict()

    def failed(self, delivery: Delivery, error: BaseException) -> None:
        """The listener raised: retry after the policy's delay, or give up."""
        envelope = delivery.envelope
        attempt = max(attempt_of(envelope.headers), self._requeued.pop(envelope.message_id, 0))
        if attempt >= self.policy.attempts:
            self.dead_letter(delivery, "failed", error, attempt)
            return
        retry = Envelope(envelope.body, {**envelope.headers, ATTEMPT: str(attempt + 1)})
        self.scheduler.call_later(
            self.policy.delay_before(attempt + 1),
            lambda: self._move(delivery, self.subscription, retry, attempt + 1),
        )

    def dead_letter(
        self, delivery: Delivery, reason: str, error: BaseException, attempts: int
    ) -> None:
        """Move the delivery to the group's dead-letter queue with the reason."""
        copy = dead_letter_envelope(delivery.envelope, reason, error, attempts, self.listener)
        self._move(delivery, self.subscription.dead_letter(), copy)

    def _move(
        self, delivery: Delivery, target: Subscription, copy: Envelope, attempt: int = 0
    ) -> None:
        try:
            future = self.provider.send_to_queue(target, copy)
        except Exception as exc:
            self._not_moved(delivery, target, exc, attempt)
            return

        def moved(done: Future[None]) -> None:
            error = done.exception()
            if error is None:
                delivery.ack()
            else:
                self._not_moved(delivery, target, error, attempt)

        future.add_done_callback(moved)

    def _not_moved(
        self, delivery: Delivery, target: Subscription, error: BaseException, attempt: int
    ) -> None:
        """Requeue the original. For a retry the attempt it is on is remembered here, so the
        count goes on even where the group's queue takes no copies (per-process groups on
        ActiveMQ have no queue of their own; their deliveries come back to this process)."""
        message_id = delivery.envelope.message_id
        if attempt:
            self._requeued[message_id] = attempt
            while len(self._requeued) > _REMEMBERED:
                self._requeued.popitem(last=False)
        level = logging.INFO if target.per_process else logging.ERROR  # see above
        logger.log(
            level,
            "could not move message %s to %s (%s); requeueing it",
            message_id,
            target.queue,
            error,
        )
        delivery.reject(requeue=True)


_REMEMBERED = 10_000  # requeued attempts remembered at most
