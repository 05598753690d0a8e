"""Scopes: when an environment reuses an instance, and when it makes a new one.

Singletons (one per environment) are handled by the `Environment` itself on its fast path;
this module holds the scope contract and the other built-in scopes. A custom scope is an
instance of a `Scope` subclass passed as `Environment(..., scopes={"name": MyScope()})`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from .errors import ScopeError

T = TypeVar("T")


class Scope(ABC):
    """Decides whether `create()` runs or a kept instance is returned.

    `get` may be called from any thread; it must be thread-safe for its own bookkeeping.
    """

    @abstractmethod
    def get(self, key: object, create: Callable[[], T]) -> T:
        """The instance for `key` in the current scope, calling `create()` when there is none."""


class RequestScope(Scope):
    """A new instance on every injection; nothing is kept."""

    def get(self, key: object, create: Callable[[], T]) -> T:
        return create()


class ThreadScope(Scope):
    """One instance per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, key: object, create: Callable[[], T]) -> T:
        instances: dict[object, Any] | None = getattr(self._local, "instances", None)
        if instances is None:
            instances = self._local.instances = {}
        if key in instances:
            return instances[key]  # type: ignore[no-any-return]
        instance = instances[key] = create()
        return instance


class _ContextState:
    __slots__ = ("instances", "order")

    def __init__(self) -> None:
        self.instances: dict[object, Any] = {}
        self.order: list[Any] = []


_OPENED = _ContextState()  # marks an entered context that has no instances yet


class ContextScope(Scope):
    """One instance per entered context, bound to the current `contextvars` context.

    Entered and left explicitly (`with environment.context(): ...`); leaving returns the
    instances created inside, newest first, so their destroy hooks can run.
    """

    def __init__(self) -> None:
        self._state: ContextVar[_ContextState | None] = ContextVar("aspyx_context", default=None)

    def get(self, key: object, create: Callable[[], T]) -> T:
        state = self._state.get()
        if state is _OPENED:  # first bean of this context: make its state now
            state = _ContextState()
            self._state.set(state)
        if state is None:
            raise ScopeError(
                f"{getattr(key, '__qualname__', key)} is context-scoped, but no context is "
                "active.\nHint: resolve it inside `with environment.context(): ...`."
            )
        if key in state.instances:
            return state.instances[key]  # type: ignore[no-any-return]
        instance = state.instances[key] = create()
        state.order.append(instance)
        return instance

    def enter(self) -> Token[_ContextState | None]:
        """Open a new, empty context in the current `contextvars` context."""
        return self._state.set(_OPENED)  # state is made on first use: most contexts stay empty

    def exit(self, token: Token[_ContextState | None]) -> list[Any]:
        """Close the context opened by `token`; returns its instances, newest first."""
        state = self._state.get()
        self._state.reset(token)
        return state.order[::-1] if state is not None and state.order else []

    @property
    def active(self) -> bool:
        """A context is open in the current `contextvars` context."""
        return self._state.get() is not None
