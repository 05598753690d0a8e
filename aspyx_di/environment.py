"""The `Environment`: builds a module's beans on top of injector, with a fast path in front.

Every registration becomes an ordinary injector binding (`Binder.bind`, `Binder.multibind`,
child injectors for parent environments), so `environment.injector.get(T)` and
`environment.get(T)` return the same instances. Resolution itself does not go through
injector's reflective, globally locked `get`: finished instances sit in a dict whose
`__getitem__` *is* `Environment.get`, and a miss runs a maker compiled once per type
(see `resolver`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from typing import Any, TypeVar

import injector

from .conditions import ConditionContext
from .configuration import ConfigurationManager
from .decorators import CONTEXT, REQUEST, SINGLETON, THREAD, PostProcessor
from .errors import LifecycleError, type_name
from .introspection import EMPTY
from .lifecycle import Hooks, Injection, hooks_of
from .registry import Registration, collect
from .resolver import Maker, Resolver
from .scopes import ContextScope, RequestScope, Scope, ThreadScope

T = TypeVar("T")
logger = logging.getLogger(__name__)
_MISSING: Any = object()


class _Instances(dict[Any, Any]):
    """Finished instances by requested type; a miss resolves through the environment."""

    __slots__ = ("resolve",)
    resolve: Callable[[Any], Any]

    def __missing__(self, key: Any) -> Any:
        return self.resolve(key)


class _Delegate(injector.Provider[Any]):
    """An injector provider that answers from the environment (same instances, same scopes)."""

    def __init__(self, environment: Environment, key: Any) -> None:
        self._environment = environment
        self._key = key

    def get(self, _injector: injector.Injector) -> Any:
        return self._environment.get(self._key)


class Environment:
    """A container of beans built from a `@module()` class.

    Args:
        module: the root module; its package, its subpackages and its imports are registered.
        features: names that `requires_feature(...)` conditions test.
        parent: an environment to resolve from (and share singletons with) for whatever this
            one does not register.
        configuration: where `@inject_value` and configuration conditions read values
            (default: the parent's, or environment variables).
        scopes: custom scopes by name, usable as `@injectable(scope="name")`.
        overrides: replacements for tests: `{Repository: FakeRepository()}` (an instance) or
            `{Repository: FakeRepository}` (a class, injected like any bean).
        injector_modules: plain injector modules whose bindings the environment falls back to.

    Example:
        >>> from tests.fixtures.shop import ShopModule, Controller
        >>> with Environment(ShopModule) as environment:
        ...     environment.get(Controller).checkout("book")
        'order book'
    """

    def __init__(
        self,
        module: type,
        features: Iterable[str] | None = None,
        parent: Environment | None = None,
        *,
        configuration: ConfigurationManager | None = None,
        scopes: Mapping[str, Scope] | None = None,
        overrides: Mapping[Any, Any] | None = None,
        injector_modules: Iterable[Any] = (),
    ) -> None:
        self.module = module
        self.parent = parent
        self.features = frozenset(features or ())
        self.configuration: ConfigurationManager = configuration or (
            parent.configuration if parent else ConfigurationManager()
        )
        context_scope = ContextScope() if parent is None else parent._context_scope
        self._context_scope: ContextScope = context_scope
        self._scopes: dict[str, Scope] = {
            REQUEST: RequestScope(),
            THREAD: ThreadScope(),
            CONTEXT: context_scope,
            **(scopes or {}),
        }
        self._lock = threading.RLock()
        self._instances = _Instances()
        self._instances.resolve = self._resolve
        # The fast path: a hit is one C-level dict lookup.
        self.get = self._instances.__getitem__  # type: ignore[method-assign,assignment]
        self._destroyables: list[tuple[Any, Hooks]] = []
        self._awaiting_running: list[tuple[Any, Hooks]] = []
        self._pending_async: list[Callable[[], Awaitable[Any]]] = []
        self._post_processors: list[PostProcessor] = []
        self._shutdown_hooks: list[Callable[[], Any]] = []
        self._running = False
        self._closed = False
        self.injector: injector.Injector | None = None
        registrations = self._registrations(overrides or {})
        self._resolver = Resolver(self, registrations)
        self._has_post_processors = bool(self._resolver.by_base.get(PostProcessor))
        self._resolver.check_scopes(self._scopes)
        self.injector = self._build_injector(injector_modules)
        for registration in registrations:  # compiling validates the whole graph now
            self._resolver.registration_maker(registration)
        self._create_eager(registrations)

    def get(self, type_: type[T]) -> T:
        """The instance of `type_` (or of its single implementation).

        `list[T]` returns every implementation. This method is replaced per instance by the
        fast path (a dict lookup of finished singletons); it documents the contract.

        Raises:
            UnresolvableTypeError: nothing provides `type_`.
            AmbiguousDependencyError: several registrations provide it.
        """
        return self._instances[type_]  # type: ignore[no-any-return]

    def _resolve(self, key: Any) -> Any:
        if self._closed:
            raise LifecycleError(
                f"cannot resolve {type_name(key)}: the environment was shut down.\n"
                "Hint: build a new Environment."
            )
        maker = self._resolver.makers.get(key)
        if maker is None:
            with self._lock:
                maker = self._resolver.require(key)
        instance = maker()
        if key in self._resolver.singleton_keys:
            self._instances[key] = instance
        return instance

    def _registrations(self, overrides: Mapping[Any, Any]) -> list[Registration]:
        context = ConditionContext(self.features, self.configuration, lambda _t: False)
        found = collect(self.module, context)
        builtins = [
            Registration(Environment, "instance", self, SINGLETON, True),
            Registration(ConfigurationManager, "instance", self.configuration, SINGLETON, True),
        ]
        for key, replacement in overrides.items():
            found = [r for r in found if not _provides(r, key)]
            kind = "class" if isinstance(replacement, type) else "instance"
            found.append(Registration(key, kind, replacement, SINGLETON, True))
        return [*builtins, *found]

    def _build_injector(self, modules: Iterable[Any]) -> injector.Injector:
        """An injector whose bindings answer from this environment (child of the parent's)."""
        resolver = self._resolver

        def configure(binder: injector.Binder) -> None:
            # The same Binding objects Binder.bind/multibind create, made directly: the public
            # calls re-derive a provider per key, which would triple the build time.
            # tests/unit/test_injector_pin.py fails if injector changes this structure.
            bindings = binder._bindings
            for key in resolver.exact.keys() | resolver.by_base.keys():
                if key not in bindings:
                    bindings[key] = injector.Binding(key, _Delegate(self, key), injector.NoScope)
            for key, implementations in resolver.by_base.items():
                if any(r.provides is not key for r in implementations):  # a real base type
                    many = list[key]  # type: ignore[valid-type]
                    bindings[many] = injector.Binding(many, _Delegate(self, many), injector.NoScope)

        parent = self.parent.injector if self.parent else None
        return injector.Injector([*modules, configure], auto_bind=False, parent=parent)

    def _scoped(self, registration: Registration, construct: Maker) -> Maker:
        """Wrap `construct` in the registration's scope."""
        if registration.scope == SINGLETON:
            cell = [_MISSING]

            def singleton() -> Any:
                instance = cell[0]
                if instance is _MISSING:
                    with self._lock:
                        if cell[0] is _MISSING:
                            cell[0] = construct()
                    instance = cell[0]
                return instance

            return singleton
        if registration.scope == REQUEST:
            self._check_request_scoped(registration)
            return construct
        scope = self._scopes[registration.scope]
        return lambda: scope.get(registration, construct)

    def _check_request_scoped(self, registration: Registration) -> None:
        if isinstance(registration.provides, type) and hooks_of(registration.provides).destroy:
            raise LifecycleError(
                f"{type_name(registration.provides)} is request-scoped and has an @on_destroy() "
                "hook, which would never run: request-scoped objects are not kept.\n"
                'Hint: use scope="context" (destroyed when the context ends) or a singleton.'
            )

    def _initialize(
        self,
        instance: Any,
        hooks: Hooks,
        injections: list[tuple[Injection, list[Any]]],
        keep: bool,
    ) -> None:
        """Injection methods, then @on_init, post processors, and lifecycle bookkeeping."""
        for injection, makers in injections:
            method = getattr(instance, injection.name)
            method(*self._injected_arguments(injection, makers))
        for name in hooks.init:
            self._call_hook(instance, name, hooks)
        for processor in self._post_processors:
            if processor is not instance:
                processor.process(instance, self)
        if isinstance(instance, PostProcessor):
            self._post_processors.append(instance)
        self._track(instance, hooks, keep)

    def _injected_arguments(self, injection: Injection, makers: list[Any]) -> list[Any]:
        kind = injection.descriptor.kind
        if kind == "environment":
            return [self]
        if kind == "value":
            descriptor = injection.descriptor
            param = injection.params[0] if injection.params else None
            value_type = param.annotation if param and param.annotation is not EMPTY else str
            if descriptor.has_default:
                return [self.configuration.get(descriptor.key, value_type, descriptor.default)]
            return [self.configuration.get(descriptor.key, value_type)]
        return [
            maker() if maker is not None else param.default
            for maker, param in zip(makers, injection.params, strict=True)
        ]

    def _initialize_product(self, instance: T, keep: bool) -> T:
        """Hooks for what a @create method or a factory returned (its runtime class decides)."""
        hooks = hooks_of(type(instance))
        if not hooks.empty or self._post_processors:
            injections = self._resolver.injection_makers(type(instance), hooks)
            self._initialize(instance, hooks, injections, keep)
        return instance

    def _track(self, instance: Any, hooks: Hooks, keep: bool) -> None:
        """Keep instances with destroy hooks for shutdown (`keep`: not request/context-scoped)."""
        if hooks.destroy and keep:
            self._destroyables.append((instance, hooks))
        if hooks.running:
            if self._running:
                for name in hooks.running:
                    self._call_hook(instance, name, hooks)
            else:
                self._awaiting_running.append((instance, hooks))

    def _call_hook(self, instance: Any, name: str, hooks: Hooks) -> None:
        if hooks.is_async(name):
            self._pending_async.append(getattr(instance, name))
        else:
            getattr(instance, name)()

    def _create_eager(self, registrations: list[Registration]) -> None:
        processors = self._resolver.by_base.get(PostProcessor, [])
        eager = [r for r in registrations if r.eager and r.scope == SINGLETON]
        for registration in [*processors, *eager]:  # post processors first: they see the rest
            self._resolver.registration_maker(registration)()
        self._running = True
        awaiting, self._awaiting_running = self._awaiting_running, []
        for instance, hooks in awaiting:
            for name in hooks.running:
                self._call_hook(instance, name, hooks)

    @contextmanager
    def context(self) -> Iterator[None]:
        """Open a `context` scope in the current `contextvars` context; destroy it on exit.

        Context-scoped beans resolved inside are created once per context, and their
        `@on_destroy` hooks run (newest first) when the block ends.
        """
        token = self.enter_context()
        try:
            yield
        finally:
            self.exit_context(token)

    def enter_context(self) -> Token[Any]:
        """Open a `context` scope (the explicit form of `with environment.context():`)."""
        return self._context_scope.enter()

    def exit_context(self, token: Token[Any]) -> None:
        """Close the scope `enter_context` opened, running its beans' destroy hooks."""
        for instance in self._context_scope.exit(token):
            _destroy(instance, hooks_of(type(instance)), sync_only=True)

    def add_shutdown_hook(self, hook: Callable[[], Any]) -> None:
        """Run `hook` when shutdown begins, before any `@on_destroy` (newest hook first).

        For beans that must quiesce while everything they use still exists, e.g. a consumer
        that stops taking messages before the services its listeners call are destroyed.
        """
        self._shutdown_hooks.append(hook)

    def _run_shutdown_hooks(self) -> None:
        hooks, self._shutdown_hooks = self._shutdown_hooks, []
        for hook in reversed(hooks):
            try:
                hook()
            except Exception:
                logger.exception("shutdown hook %r failed", hook)

    async def start(self) -> None:
        """Await the async `@on_init` and `@on_running` hooks (in creation order)."""
        pending, self._pending_async = self._pending_async, []
        for hook in pending:
            await hook()

    async def stop(self) -> None:
        """Run every `@on_destroy` hook, awaiting async ones, newest instance first; then close."""
        self._run_shutdown_hooks()
        for instance, hooks in self._close():
            for name in hooks.destroy:
                try:
                    result = getattr(instance, name)()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("@on_destroy %s.%s failed", type(instance).__qualname__, name)

    def shutdown(self) -> None:
        """Run the shutdown hooks, then every `@on_destroy` hook (newest instance first), and
        close the environment."""
        self._run_shutdown_hooks()
        if any(hooks.async_names & set(hooks.destroy) for _, hooks in self._destroyables):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.stop())
                return
            raise LifecycleError(
                "this environment has async @on_destroy hooks and an event loop is running.\n"
                "Hint: await environment.stop() instead of calling shutdown()."
            )
        for instance, hooks in self._close():
            _destroy(instance, hooks, sync_only=True)

    def shutdown_on_signals(self, *signals: int) -> None:
        """Shut down gracefully when the process receives one of `signals` (default: SIGTERM
        and SIGINT), then end it with exit status 0.

        The handler runs `shutdown()` on the main thread: an `EventManager` then stops
        consuming, lets in-flight deliveries finish and acknowledges them before it closes.
        A second signal during that shutdown is ignored. Call it from the main thread (a
        Python rule for signal handlers), e.g. right after building the environment.
        """
        chosen = signals or (signal.SIGTERM, signal.SIGINT)
        stopping = threading.Event()

        def handle(signum: int, _frame: object) -> None:
            if stopping.is_set():
                return
            stopping.set()
            logger.info("signal %s: shutting down", signal.Signals(signum).name)
            self.shutdown()
            raise SystemExit(0)

        for chosen_signal in chosen:
            signal.signal(chosen_signal, handle)

    def _close(self) -> list[tuple[Any, Hooks]]:
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            self._instances.clear()
            destroyables, self._destroyables = self._destroyables, []
        return list(reversed(destroyables))

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"Environment({type_name(self.module)}, features={sorted(self.features)})"


def _provides(registration: Registration, key: Any) -> bool:
    provided = registration.provides
    if provided is key:
        return True
    return isinstance(provided, type) and isinstance(key, type) and issubclass(provided, key)


def _destroy(instance: Any, hooks: Hooks, sync_only: bool) -> None:
    for name in hooks.destroy:
        if sync_only and hooks.is_async(name):
            logger.warning("async @on_destroy %s.%s skipped", type(instance).__qualname__, name)
            continue
        try:
            getattr(instance, name)()
        except Exception:
            logger.exception("@on_destroy %s.%s failed", type(instance).__qualname__, name)
