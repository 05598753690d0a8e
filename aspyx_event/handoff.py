"""Cheap hand-offs between threads, for the per-message paths.

`Workers` runs items on a fixed set of threads fed by one queue: no future, work item or
idle-semaphore per item as with `ThreadPoolExecutor`. `LoopCompletions` completes the awaits
of many provider futures with one wake-up of the event loop, where `asyncio.wrap_future`
pays a thread-safe call (and a write to the loop's wake-up socket) per future.
`hold_wakes`/`release_wakes` let an I/O thread defer such wake-ups to the end of its round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)


class Workers:
    """`count` daemon threads named `name_<i>` running `work(item)` for each submitted item.

    An exception escaping `work` is logged and the thread goes on. `shutdown` lets the threads
    finish what was submitted before it.

    Example:
        >>> done = []
        >>> workers = Workers("example", 2, done.append)
        >>> workers.submit(1); workers.submit(2)
        >>> workers.shutdown(wait=True)
        >>> sorted(done)
        [1, 2]
    """

    def __init__(self, name: str, count: int, work: Callable[[Any], None]) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._work = work
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}_{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> None:
        """Queue `item` for the next free thread."""
        self._queue.put(item)

    def shutdown(self, wait: bool = False) -> None:
        """End the threads once the queue is worked off; with `wait`, join them."""
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()

    def _run(self) -> None:
        get, work = self._queue.get, self._work
        while (item := get()) is not _STOP:
            try:
                work(item)
            except Exception:
                logger.exception("%s failed on %r", threading.current_thread().name, item)


_STOP: Any = object()


class _Held(threading.local):
    wakes: list[Callable[[], None]] | None = None


_held = _Held()


def hold_wakes() -> None:
    """From now on, `wake_soon` on this thread only remembers its wake-ups, until
    `release_wakes`. For a thread that finishes many hand-offs per round of work and never
    blocks on the threads it wakes (the AMQP I/O thread)."""
    if _held.wakes is None:
        _held.wakes = []


def release_wakes() -> None:
    """Run the wake-ups held on this thread (each once); holding goes on."""
    wakes = _held.wakes
    if wakes:
        _held.wakes = []
        for wake in wakes:
            wake()


def wake_soon(wake: Callable[[], None]) -> None:
    """Run `wake` now, or at this thread's next `release_wakes` while it holds them."""
    wakes = _held.wakes
    if wakes is None:
        wake()
    else:
        wakes.append(wake)


class LoopCompletions:
    """Awaitable results of `concurrent.futures.Future`s, completed in batches on `loop`.

    Example:
        >>> async def main():
        ...     completions = LoopCompletions(asyncio.get_running_loop())
        ...     future = Future()
        ...     waiter = completions.wrap(future)
        ...     threading.Thread(target=future.set_result, args=(42,)).start()
        ...     return await waiter
        >>> asyncio.run(main())
        42
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._done: list[tuple[asyncio.Future[Any], Future[Any]]] = []
        self._lock = threading.Lock()

    def wrap(self, future: Future[Any]) -> asyncio.Future[Any]:
        """An asyncio future of `loop` that completes like `future` (call on `loop`)."""
        waiter = self.loop.create_future()
        future.add_done_callback(lambda done: self._completed(waiter, done))
        return waiter

    def _completed(self, waiter: asyncio.Future[Any], future: Future[Any]) -> None:
        with self._lock:  # any thread: only the first completion of a batch wakes the loop
            self._done.append((waiter, future))
            if len(self._done) > 1:
                return
        wake_soon(self._wake)

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits any more
            self.loop.call_soon_threadsafe(self._complete_batch)

    def _complete_batch(self) -> None:
        with self._lock:
            batch, self._done = self._done, []
        for waiter, future in batch:
            if waiter.done():
                continue  # the awaiting task was cancelled
            if future.cancelled():
                waiter.cancel()
            elif (error := future.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(future.result())
