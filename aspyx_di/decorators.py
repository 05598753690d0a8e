"""The decorators that describe beans: they attach a descriptor and register nothing.

An `Environment` collects what these decorators describe when it scans a `@module`'s package,
so two environments built from different modules never see each other's beans.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import DecoratorError

if TYPE_CHECKING:  # only for annotations of the PostProcessor contract, never read at runtime
    from .environment import Environment

T = TypeVar("T")
C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

BEAN_ATTR = "__aspyx_bean__"
CREATE_ATTR = "__aspyx_create__"
HOOK_ATTR = "__aspyx_hook__"
CONDITIONS_ATTR = "__aspyx_conditions__"

SINGLETON = "singleton"
REQUEST = "request"
THREAD = "thread"
CONTEXT = "context"


@dataclass(frozen=True, slots=True)
class BeanDescriptor:
    """What `@injectable`, `@factory` or `@module` said about a class."""

    kind: str  # "injectable" | "factory" | "module"
    eager: bool = True
    scope: str = SINGLETON
    imports: tuple[type, ...] = ()
    scan: bool = True


@dataclass(frozen=True, slots=True)
class CreateDescriptor:
    """What `@create` said about a method."""

    eager: bool = True
    scope: str = SINGLETON


@dataclass(frozen=True, slots=True)
class HookDescriptor:
    """What a lifecycle or injection decorator said about a method.

    `kind` is one of "init", "running", "destroy", "inject", "environment", "value".
    """

    kind: str
    key: str = ""
    default: Any = None
    has_default: bool = False


class Factory(ABC, Generic[T]):
    """Base class of a `@factory()`: its `create()` provides `T`.

    Example:
        >>> class Connection: ...
        >>> @factory()
        ... class ConnectionFactory(Factory[Connection]):
        ...     def create(self) -> Connection:
        ...         return Connection()
    """

    @abstractmethod
    def create(self) -> T:
        """Build the instance this factory provides."""


class PostProcessor(ABC):
    """A bean that sees every instance the environment creates after it.

    Post processors are created before every other eager bean, so in practice they see all of
    them; `process` runs after the instance's injection methods and `@on_init` hooks.
    """

    @abstractmethod
    def process(self, instance: object, environment: Environment) -> None:
        """Inspect or adapt `instance` (it is already initialized)."""


def _require_class(target: object, decorator: str) -> None:
    if not isinstance(target, type):
        raise DecoratorError(
            f"@{decorator}() decorates classes, not {type(target).__name__} {target!r}.\n"
            f"Hint: put @{decorator}() directly above a `class` statement."
        )


def _mark_class(cls: C, descriptor: BeanDescriptor) -> C:
    setattr(cls, BEAN_ATTR, descriptor)
    return cls


def injectable(eager: bool = True, scope: str = SINGLETON) -> Callable[[C], C]:
    """Declare a class as a bean; its constructor parameters are injected by type hints.

    Args:
        eager: create singletons while the environment is built (False: on first use).
        scope: "singleton", "request", "thread", "context" or a custom scope's name.
    """

    def decorate(cls: C) -> C:
        _require_class(cls, "injectable")
        return _mark_class(cls, BeanDescriptor("injectable", eager, scope))

    return decorate


def factory(eager: bool = True, scope: str = SINGLETON) -> Callable[[C], C]:
    """Declare a `Factory[T]` subclass whose `create()` provides `T`."""

    def decorate(cls: C) -> C:
        _require_class(cls, "factory")
        if not issubclass(cls, Factory):
            raise DecoratorError(
                f"@factory() needs a subclass of Factory[T], {cls.__qualname__} is not one.\n"
                f"Hint: class {cls.__qualname__}(Factory[Product]): def create(self) -> Product"
            )
        return _mark_class(cls, BeanDescriptor("factory", eager, scope))

    return decorate


def module(imports: Sequence[type] = (), scan: bool = True) -> Callable[[C], C]:
    """Declare a module: a singleton bean whose Python package (and subpackages) is scanned.

    Args:
        imports: other modules whose registrations this module adds.
        scan: False registers only the module class itself and its `@create` methods (for
            library modules whose package holds more than the app should get).
    """

    def decorate(cls: C) -> C:
        _require_class(cls, "module")
        for imported in imports:
            if not isinstance(getattr(imported, BEAN_ATTR, None), BeanDescriptor) or (
                getattr(imported, BEAN_ATTR).kind != "module"
            ):
                raise DecoratorError(
                    f"@module(imports=...) of {cls.__qualname__} lists {imported!r}, "
                    "which is not a @module() class.\nHint: import module classes only."
                )
        return _mark_class(cls, BeanDescriptor("module", True, SINGLETON, tuple(imports), scan))

    return decorate


def _require_function(target: object, decorator: str) -> None:
    if not callable(target) or isinstance(target, type):
        raise DecoratorError(
            f"@{decorator}() decorates methods, not {target!r}.\n"
            f"Hint: put @{decorator}() above a `def` inside a bean class."
        )


def create(eager: bool = True, scope: str = SINGLETON) -> Callable[[F], F]:
    """Declare a bean method whose return annotation is the type it provides."""

    def decorate(func: F) -> F:
        _require_function(func, "create")
        setattr(func, CREATE_ATTR, CreateDescriptor(eager, scope))
        return func

    return decorate


def _hook(kind: str, **facts: Any) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        _require_function(func, kind)
        setattr(func, HOOK_ATTR, HookDescriptor(kind, **facts))
        return func

    return decorate


def on_init() -> Callable[[F], F]:
    """Run the method after construction and every injection (async: awaited by `start()`)."""
    return _hook("init")


def on_running() -> Callable[[F], F]:
    """Run the method once the environment is built and every eager singleton exists."""
    return _hook("running")


def on_destroy() -> Callable[[F], F]:
    """Run the method at shutdown, in reverse creation order (async: awaited by `stop()`)."""
    return _hook("destroy")


def inject() -> Callable[[F], F]:
    """Call the method after construction with its parameters injected by type."""
    return _hook("inject")


def inject_environment() -> Callable[[F], F]:
    """Call the method after construction with the `Environment`."""
    return _hook("environment")


_NO_DEFAULT: Any = object()


def inject_value(key: str, default: Any = _NO_DEFAULT) -> Callable[[F], F]:
    """Call the method with the configuration value `key`, coerced to its parameter's type."""
    has_default = default is not _NO_DEFAULT
    return _hook(
        "value", key=key, default=None if not has_default else default, has_default=has_default
    )


def conditional(*conditions: Any) -> Callable[[T], T]:
    """Register the decorated class or `@create` method only when every condition holds."""

    def decorate(target: T) -> T:
        setattr(target, CONDITIONS_ATTR, tuple(conditions))
        return target

    return decorate


def bean_descriptor(cls: type) -> BeanDescriptor | None:
    """The descriptor a decorator put on `cls` itself (not inherited from a base class)."""
    descriptor = cls.__dict__.get(BEAN_ATTR)
    return descriptor if isinstance(descriptor, BeanDescriptor) else None
