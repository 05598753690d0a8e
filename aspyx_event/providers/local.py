"""The in-process provider: the embedded default, with the same group semantics as a broker.

URL: `local://` (no options). Every event name has one queue per subscribed group; each
member of a group runs its own delivery thread pulling from the group's queue, so members
compete and a slow group never holds back another. A delivery leaves the queue for good only
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
from queue import SimpleQueue
from typing import cast

from aspyx_event.envelope import Envelope
from aspyx_event.errors import ProviderConnectionError
from aspyx_event.provider import SENT, Delivery, DeliveryCallback, Provider, Subscription

logger = logging.getLogger(__name__)

_STOP = object()


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
        self.queue: SimpleQueue[object] = SimpleQueue()
        self.members: list[_Member] = []


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

    def __init__(self, provider: LocalProvider, group: _Group, callback: DeliveryCallback) -> None:
        self.provider = provider
        self.group = group
        self.callback = callback
        self.credit = _Credit(group.subscription.prefetch)
        self.thread = threading.Thread(
            target=self._run, name=f"local-{group.subscription.queue}", daemon=True
        )

    def requeue(self, envelope: Envelope) -> None:
        item = (envelope, True)
        delay = self.provider.redelivery_delay
        if delay <= 0:
            self.group.queue.put(item)
            return
        timer = threading.Timer(delay, self.group.queue.put, (item,))
        timer.daemon = True
        timer.start()

    def _run(self) -> None:
        queue, callback, credit = self.group.queue, self.callback, self.credit
        while True:
            credit.acquire()
            item = queue.get()
            if item is _STOP or self.provider.paused:
                credit.release()
                if item is not _STOP:
                    queue.put(item)  # not ours to deliver any more: leave it for the group
                return
            envelope, redelivered = cast(tuple[Envelope, bool], item)
            copy = Envelope(envelope.body, dict(envelope.headers))  # groups never share headers
            try:
                callback(_LocalDelivery(self, copy, redelivered))
            except Exception:  # a broken callback must not end the member's thread
                logger.exception("delivery callback for %s failed", self.group.subscription.queue)


def _drop_stop_markers(queue: SimpleQueue[object]) -> None:
    """Remove the markers a previous `pause` left behind, keeping the order of the rest."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    for item in items:
        if item is not _STOP:
            queue.put(item)


class LocalProvider(Provider):
    """In-process provider (see module docstring).

    Args:
        server_name: this process's name for per-process groups (default: host-pid).
        redelivery_delay: seconds before a rejected delivery is offered again.
    """

    inline_dispatch = True

    def __init__(self, server_name: str | None = None, *, redelivery_delay: float = 0.05) -> None:
        self.server_name = server_name or f"{socket.gethostname()}-{os.getpid()}"
        self.redelivery_delay = redelivery_delay
        self.paused = False
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, _Group]] = {}  # event name -> group name -> group

    def start(self) -> None:
        with self._lock:
            self._started, self._stopped, self.paused = True, False, False
            groups = [g for by_name in self._groups.values() for g in by_name.values()]
        for group in groups:
            _drop_stop_markers(group.queue)
        for member in [m for g in groups for m in g.members]:
            if not member.thread.is_alive():
                member.thread = threading.Thread(
                    target=member._run, name=member.thread.name, daemon=True
                )
                member.thread.start()

    def pause(self) -> None:
        self.paused = True
        for groups in list(self._groups.values()):
            for group in list(groups.values()):
                for _ in group.members:
                    group.queue.put(_STOP)

    def stop(self) -> None:
        self.pause()
        with self._lock:
            self._stopped, self._started = True, False
            members = [
                m for groups in self._groups.values() for g in groups.values() for m in g.members
            ]
        for member in members:
            if member.thread.is_alive() and member.thread is not threading.current_thread():
                member.thread.join(timeout=30)

    def subscribe(self, subscription: Subscription, callback: DeliveryCallback) -> None:
        with self._lock:
            groups = self._groups.setdefault(subscription.event, {})
            group = groups.get(subscription.group)
            if group is None:
                group = groups[subscription.group] = _Group(subscription)
            member = _Member(self, group, callback)
            group.members.append(member)
            started = self._started
        if started:
            member.thread.start()

    def send(self, envelope: Envelope, durable: bool) -> Future[None]:
        if self._stopped:
            raise ProviderConnectionError(
                "the local provider is stopped.\nHint: send events while the environment runs."
            )
        groups = self._groups.get(envelope.event_name)
        if groups:
            item = (envelope, False)
            for group in groups.values():
                group.queue.put(item)
        return SENT  # the send completed synchronously
