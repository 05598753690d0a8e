"""The in-process provider: the embedded default, with the same group semantics as a broker.

URL: `local://` (no options). A `LocalBroker` holds one queue per event and subscribed group;
each member of a group runs its own delivery thread pulling from the group's queue, so members
compete and a slow group never holds back another. Every provider has a private broker unless
several are given the same one (`LocalProvider(broker=shared)`), which is how tests run
"several processes" in one. A delivery leaves the queue for good only
when acknowledged; a rejected one is put back (after `redelivery_delay`) and comes again.

Guarantees and limits: at-least-once within the process; nothing survives the process, so
`durable` has no extra effect; events sent before any group subscribed are dropped (as a
broker drops messages sent to an address without queues).

Because its delivery threads are its own and may block, this provider sets `inline_dispatch`:
the EventManager runs sync listeners directly on them (no second hand-off).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import Empty, SimpleQueue

from aspyx_event.envelope import Envelope
from aspyx_event.errors import ProviderConnectionError
from aspyx_event.provider import SENT, Delivery, DeliveryCallback, Provider, Subscription

logger = logging.getLogger(__name__)

_IDLE_POLL = 0.2  # seconds an idle member waits before looking at its stop flag again


class _Credit:
    """A counting semaphore on a C-level queue of tokens (threading.Semaphore is pure Python
    and would cost more than the rest of a local delivery)."""

    __slots__ = ("acquire", "release")
    acquire: Callable[[], None]
    release: Callable[[], None]

    def __init__(self, size: int) -> None:
        tokens: SimpleQueue[None] = SimpleQueue()
        for _ in range(size):
            tokens.put(None)
        self.acquire = tokens.get
        self.release = lambda: tokens.put(None)


class _Group:
    """One group's queue; members pull from it."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.queue: SimpleQueue[tuple[Envelope, bool]] = SimpleQueue()


class LocalBroker:
    """In-process queues by event and group; providers attached to one broker share them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, _Group]] = {}  # event name -> group name -> group
        self._targets: dict[str, tuple[_Group, ...]] = {}  # event name -> groups, copy on write
        self._dead_letters: dict[str, _Group] = {}  # dead-letter queue name -> its queue

    def group(self, subscription: Subscription) -> _Group:
        """The group's queue (or dead-letter queue), created on first use like a broker's."""
        with self._lock:
            if subscription.dead_letters:  # never a target of publish
                return self._dead_letters.setdefault(subscription.queue, _Group(subscription))
            groups = self._groups.setdefault(subscription.event, {})
            found = groups.get(subscription.group)
            if found is None:
                found = groups[subscription.group] = _Group(subscription)
                self._targets[subscription.event] = tuple(groups.values())
            return found

    def publish(self, envelope: Envelope) -> None:
        """Put `envelope` on the queue of every group of its event."""
        groups = self._targets.get(envelope.event_name, ())
        if groups:
            groups[0].queue.put((envelope, False))
            for group in groups[1:]:  # every further group gets its own headers
                group.queue.put((Envelope(envelope.body, dict(envelope.headers)), False))


class _LocalDelivery(Delivery):
    __slots__ = ("_member", "_settled", "envelope", "redelivered")

    def __init__(self, member: _Member, envelope: Envelope, redelivered: bool) -> None:
        self._member = member
        self.envelope = envelope
        self.redelivered = redelivered
        self._settled = False

    def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._member.credit.release()

    def reject(self, requeue: bool = True) -> None:
        if self._settled:
            return
        self._settled = True
        self._member.credit.release()
        if requeue:
            self._member.requeue(self.envelope)


class _Member:
    """One subscriber of a group: a thread delivering from the group's queue to a callback."""

    def __init__(self, group: _Group, callback: DeliveryCallback, redelivery_delay: float) -> None:
        self.group = group
        self.callback = callback
        self.redelivery_delay = redelivery_delay
        self.credit = _Credit(group.subscription.prefetch)
        self.running = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.running = True
            self.thread = threading.Thread(
                target=self._run, name=f"local-{self.group.subscription.queue}", daemon=True
            )
            self.thread.start()

    def requeue(self, envelope: Envelope) -> None:
        item = (envelope, True)
        if self.redelivery_delay <= 0:
            self.group.queue.put(item)
            return
        timer = threading.Timer(self.redelivery_delay, self.group.queue.put, (item,))
        timer.daemon = True
        timer.start()

    def _run(self) -> None:
        queue, callback, credit = self.group.queue, self.callback, self.credit
        while self.running:
            credit.acquire()
            try:
                item = queue.get(timeout=_IDLE_POLL)
            except Empty:
                credit.release()
                continue
            if not self.running:  # paused while waiting: the message stays with the group
                credit.release()
                queue.put(item)
                return
            envelope, redelivered = item
            try:
                callback(_LocalDelivery(self, envelope, redelivered))
            except Exception:  # a broken callback must not end the member's thread
                logger.exception("delivery callback for %s failed", self.group.subscription.queue)


class LocalProvider(Provider):
    """In-process provider (see module docstring).

    Args:
        server_name: this process's name for per-process groups (default: host-pid).
        broker: the in-process broker to attach to (default: a private one).
        redelivery_delay: seconds before a rejected delivery is offered again.
    """

    inline_dispatch = True

    def __init__(
        self,
        server_name: str | None = None,
        *,
        broker: LocalBroker | None = None,
        redelivery_delay: float = 0.05,
    ) -> None:
        self.server_name = server_name or f"{socket.gethostname()}-{os.getpid()}"
        self.broker = broker or LocalBroker()
        self.redelivery_delay = redelivery_delay
        self._members: list[_Member] = []
        self._started = False
        self._stopped = False

    def start(self) -> None:
        self._started, self._stopped = True, False
        for member in self._members:
            member.start()

    def pause(self) -> None:
        for member in self._members:
            member.running = False

    def stop(self) -> None:
        self.pause()
        self._started, self._stopped = False, True
        for member in self._members:
            thread = member.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)

    def subscribe(self, subscription: Subscription, callback: DeliveryCallback) -> None:
        member = _Member(self.broker.group(subscription), callback, self.redelivery_delay)
        self._members.append(member)
        if self._started:
            member.start()

    def send(self, envelope: Envelope, durable: bool) -> Future[None]:
        self._check_running()
        self.broker.publish(envelope)
        return SENT  # the send completed synchronously

    def send_to_queue(self, subscription: Subscription, envelope: Envelope) -> Future[None]:
        self._check_running()
        self.broker.group(subscription).queue.put((envelope, False))
        return SENT

    def clone(self) -> LocalProvider:
        """Another provider on the same in-process broker."""
        return LocalProvider(
            self.server_name, broker=self.broker, redelivery_delay=self.redelivery_delay
        )

    def _check_running(self) -> None:
        if self._stopped:
            raise ProviderConnectionError(
                "the local provider is stopped.\nHint: send events while the environment runs."
            )
