"""Private: small helpers shared by the parts of the AMQP provider's proton event handler.

Everything here runs on the container thread (see `_proton`): `guarded` keeps an event callback
from raising into proton, `Timer` runs work as a proton timer task, `describe` renders a remote
error condition, `link_name` names a sender or receiver link.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

_S = TypeVar("_S")


def guarded(method: Callable[[_S, Any], None]) -> Callable[[_S, Any], None]:
    """Handler methods never raise into proton: an exception would end the container thread."""

    @functools.wraps(method)
    def guarded(self: _S, event: Any) -> None:
        try:
            method(self, event)
        except Exception:
            logger.exception("AMQP provider: %s failed", method.__name__)

    return guarded


class Timer:
    """A proton timer task running `work` on the container thread."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work

    def on_timer_task(self, event: Any) -> None:
        try:
            self.work()
        except Exception:
            logger.exception("AMQP provider: a timer task failed")


def describe(condition: Any) -> str:
    """The text of a proton error condition (None: the peer closed without one)."""
    if condition is None:
        return "closed by the peer"
    return f"{condition.name}: {condition.description}" if condition.description else condition.name


def link_name(address: str, container_id: str) -> str:
    """A unique link name naming the address and this process."""
    return f"{address}@{container_id}:{uuid.uuid4().hex[:8]}"
