"""Finding a class's lifecycle hooks and injection methods, once per class."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import FunctionType
from typing import Any
from weakref import WeakKeyDictionary

from .decorators import HOOK_ATTR, HookDescriptor
from .introspection import Param, constructor_of, parameters

_cache: WeakKeyDictionary[type, Hooks] = WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Injection:
    """A method to call after construction, with what to pass."""

    name: str
    descriptor: HookDescriptor
    params: tuple[Param, ...]


@dataclass(frozen=True, slots=True)
class Hooks:
    """The hooks of one class, base classes first, each method name once."""

    injections: tuple[Injection, ...] = ()
    init: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    destroy: tuple[str, ...] = ()
    async_names: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        """Nothing to call after construction and nothing to keep for shutdown."""
        return not (self.injections or self.init or self.running or self.destroy)

    def is_async(self, name: str) -> bool:
        """The hook method `name` is a coroutine function (awaited by start()/stop())."""
        return name in self.async_names


NO_HOOKS = Hooks()


def hooks_of(cls: type) -> Hooks:
    """The lifecycle hooks and injection methods of `cls` (cached per class)."""
    found = _cache.get(cls)
    if found is None:
        found = _cache[cls] = _collect(cls)
    return found


PLAN_ATTR = "__aspyx_plan__"


def class_plan(cls: type) -> tuple[tuple[Param, ...], Hooks]:
    """A class's constructor parameters and hooks: what building it needs, read once.

    Kept on the class itself (like dataclass fields): one dict lookup on every later build.
    """
    plan: tuple[tuple[Param, ...], Hooks] | None = cls.__dict__.get(PLAN_ATTR)
    if plan is None:
        init = constructor_of(cls)
        plan = (parameters(init) if init is not None else (), hooks_of(cls))
        with contextlib.suppress(AttributeError, TypeError):  # a metaclass may refuse it
            setattr(cls, PLAN_ATTR, plan)
    return plan


def _collect(cls: type) -> Hooks:
    marked: dict[str, tuple[HookDescriptor, Callable[..., Any]]] = {}
    for klass in reversed(cls.__mro__[:-1]):  # every MRO ends with object: nothing to find there
        for name, member in klass.__dict__.items():
            # hooks are plain functions; reading their __dict__ avoids getattr's exception path
            descriptor = member.__dict__.get(HOOK_ATTR) if type(member) is FunctionType else None
            if descriptor is not None:
                marked[name] = (descriptor, member)
            elif name in marked:  # overridden without the decorator: no longer a hook
                del marked[name]
    if not marked:
        return NO_HOOKS
    by_kind: dict[str, list[str]] = {"init": [], "running": [], "destroy": []}
    injections: list[Injection] = []
    async_names = set()
    for name, (descriptor, member) in marked.items():
        if inspect.iscoroutinefunction(member):
            async_names.add(name)
        if descriptor.kind in by_kind:
            by_kind[descriptor.kind].append(name)
        else:
            injections.append(Injection(name, descriptor, parameters(member)))
    return Hooks(
        tuple(injections),
        tuple(by_kind["init"]),
        tuple(by_kind["running"]),
        tuple(by_kind["destroy"]),
        frozenset(async_names),
    )
