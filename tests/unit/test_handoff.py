"""The hand-offs between threads: held wake-ups."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future

from aspyx_event.handoff import LoopCompletions, hold_wakes, release_wakes, wake_soon


def on_thread(work: Callable[[], None]) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)


def test_a_holding_thread_wakes_only_on_release_and_once_per_wake() -> None:
    seen: list[str] = []

    def work() -> None:
        wake_soon(lambda: seen.append("not holding: at once"))
        hold_wakes()
        wake_soon(lambda: seen.append("held"))
        seen.append("before release")
        release_wakes()
        release_wakes()  # nothing left

    on_thread(work)
    assert seen == ["not holding: at once", "before release", "held"]


def test_sends_completed_on_a_holding_thread_reach_the_loop_after_release() -> None:
    async def main() -> list[int]:
        completions = LoopCompletions(asyncio.get_running_loop())
        futures: list[Future[int]] = [Future() for _ in range(3)]
        waiters = [completions.wrap(future) for future in futures]
        released = threading.Event()

        def io_round() -> None:
            hold_wakes()
            for n, future in enumerate(futures):
                future.set_result(n)
            released.set()
            release_wakes()

        await asyncio.to_thread(io_round)
        assert released.is_set()
        return list(await asyncio.gather(*waiters))

    assert asyncio.run(main()) == [0, 1, 2]
