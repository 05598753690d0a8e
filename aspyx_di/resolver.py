"""Construction plans: how to make each registered type, compiled once per environment.

Compiling walks the dependency graph depth-first, so it is also the validation: missing
dependencies, ambiguities and cycles are reported with their full path while the environment
is built. The result for every key is a *maker*, a closure with no arguments that returns an
instance; makers of dependencies are captured directly, so making a transient graph is a few
plain function calls per object.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, get_args

from .decorators import CONTEXT, REQUEST, SINGLETON
from .errors import (
    AmbiguousDependencyError,
    CyclicDependencyError,
    DecoratorError,
    MissingDependencyError,
    UnresolvableTypeError,
    type_name,
)
from .introspection import EMPTY, Param, parameters
from .lifecycle import Hooks, Injection, class_plan
from .registry import Registration

if TYPE_CHECKING:
    from .environment import Environment

Maker = Callable[[], Any]
_SKIP_BASES = frozenset({object, typing.Generic, typing.Protocol})


def index(registrations: list[Registration]) -> tuple[dict[Any, list[Registration]], ...]:
    """Registrations by exact provided type, and by every base class of it."""
    exact: dict[Any, list[Registration]] = {}
    by_base: dict[Any, list[Registration]] = {}
    for registration in registrations:
        exact.setdefault(registration.provides, []).append(registration)
        if isinstance(registration.provides, type):
            for base in registration.provides.__mro__:
                if base not in _SKIP_BASES and base.__module__ != "abc":
                    by_base.setdefault(base, []).append(registration)
    return exact, by_base


def _structural_candidates(protocol: type, registrations: list[Registration]) -> list[Registration]:
    members = {
        name
        for klass in protocol.__mro__
        if klass not in _SKIP_BASES and klass.__module__ != "typing"
        for name in (*vars(klass), *getattr(klass, "__annotations__", {}))
        if not name.startswith("_")
    }
    return [
        r
        for r in registrations
        if isinstance(r.provides, type) and all(hasattr(r.provides, m) for m in members)
    ]


class Resolver:
    """Finds the registration for a key and compiles its maker (see module docstring)."""

    def __init__(self, environment: Environment, registrations: list[Registration]) -> None:
        self._environment = environment
        self.registrations = registrations
        self.exact, self.by_base = index(registrations)
        self.makers: dict[Any, Maker] = {}  # by requested key
        self.singleton_keys: set[Any] = set()
        self._by_registration: dict[Registration, Maker] = {}
        self._visiting: dict[Registration, None] = {}  # the compile stack, ordered

    def candidates(self, key: Any) -> list[Registration]:
        """Registrations that could provide `key` (exact ones win over subclasses).

        A parametrized generic (`Listener[Event]`) is looked up by its class (`Listener`).
        """
        found = self.exact.get(key) or self.by_base.get(key)
        origin = getattr(key, "__origin__", None)
        if found is None and isinstance(origin, type):
            found = self.exact.get(origin) or self.by_base.get(origin)
        if found is None and getattr(key, "_is_protocol", False):
            found = _structural_candidates(key, self.registrations)
        return found or []

    def maker(self, key: Any) -> Maker | None:
        """The maker for `key`, or None if neither this environment nor its parents know it."""
        maker = self.makers.get(key)
        if maker is not None:
            return maker
        if getattr(key, "__origin__", None) is list:
            maker = self._list_maker(get_args(key)[0])
        else:
            found = self.candidates(key)
            if len(found) > 1:
                raise AmbiguousDependencyError(key, [r.provides for r in found], self.path())
            if found:
                maker = self.registration_maker(found[0])
                if found[0].scope == SINGLETON:
                    self.singleton_keys.add(key)
            else:
                maker = self._outside_maker(key)
                if maker is None:
                    return None
        self.makers[key] = maker
        return maker

    def require(self, key: Any) -> Maker:
        """The maker for a key asked for directly (`Environment.get`)."""
        maker = self.maker(key)
        if maker is None:
            raise UnresolvableTypeError(key)
        return maker

    def _outside_maker(self, key: Any) -> Maker | None:
        parent = self._environment.parent
        if parent is not None:
            maker = parent._resolver.maker(key)
            if maker is not None:
                if key in parent._resolver.singleton_keys:
                    self.singleton_keys.add(key)
                return maker
        injector = self._environment.injector
        if injector is not None and injector.binder.has_explicit_binding_for(key):
            return lambda: injector.get(key)
        return None

    def _list_maker(self, element: Any) -> Maker:
        makers = [self.registration_maker(r) for r in self.candidates(element)]
        parent = self._environment.parent
        inherited = parent._resolver.maker(list[element]) if parent else None
        if inherited is not None:
            return lambda: [*inherited(), *(m() for m in makers)]
        return lambda: [m() for m in makers]

    def path(self) -> tuple[Any, ...]:
        """The types being compiled right now, outermost first (for error messages)."""
        return tuple(r.provides for r in self._visiting)

    def registration_maker(self, registration: Registration) -> Maker:
        """The maker of one registration, compiled on first use (this is where cycles show)."""
        maker = self._by_registration.get(registration)
        if maker is not None:
            return maker
        visiting = self._visiting
        if registration in visiting:
            cycle = [r.provides for r in list(visiting)[list(visiting).index(registration) :]]
            raise CyclicDependencyError([*cycle, registration.provides])
        visiting[registration] = None
        try:
            construct = self._construct(registration)
        finally:
            del visiting[registration]
        maker = self._environment._scoped(registration, construct)
        self._by_registration[registration] = maker
        return maker

    def _construct(self, registration: Registration) -> Maker:
        kind = registration.kind
        if kind == "instance":
            instance = registration.target
            return lambda: instance
        keep = registration.scope not in (REQUEST, CONTEXT)  # context scope destroys its own
        if kind == "class":
            cls = registration.target
            params, hooks = class_plan(cls)
            initialize = None
            if not hooks.empty or self._environment._has_post_processors:
                initialize = self._initializer(cls, hooks, keep)
            return self._call(cls, cls, params, initialize=initialize)
        owner = self._owner_maker(registration)
        product = self._environment._initialize_product
        if kind == "factory":
            return lambda: product(owner().create(), keep)
        func = registration.target
        call = self._call(registration.provides, func, parameters(func), owner=owner)
        return lambda: product(call(), keep)

    def _owner_maker(self, registration: Registration) -> Maker:
        owners = [r for r in self.exact.get(registration.owner, []) if r.kind == "class"]
        return self.registration_maker(owners[0])

    def _call(
        self,
        requester: Any,
        func: Callable[..., Any],
        params: tuple[Param, ...],
        *,
        initialize: Callable[[Any], None] | None = None,
        owner: Maker | None = None,
    ) -> Maker:
        positional: list[Maker] = [] if owner is None else [owner]
        keywords: dict[str, Maker] = {}
        makers = self.makers
        for param in params:
            maker = makers.get(param.annotation) or self.parameter_maker(requester, param)
            if maker is None:
                continue
            if param.keyword_only or (keywords and not param.keyword_only):
                keywords[param.name] = maker
            else:
                positional.append(maker)
        return _specialize(func, positional, keywords, initialize)

    def parameter_maker(self, requester: Any, param: Param) -> Maker | None:
        """The maker for one parameter; None when it has a default and nothing provides it."""
        if param.annotation is EMPTY:
            if param.has_default:
                return None
            raise DecoratorError(
                f"parameter {param.name!r} of {type_name(requester)} has no type annotation, "
                "so nothing can be injected.\nHint: annotate it with the type to inject."
            )
        maker = self.maker(param.annotation)
        if maker is None and not param.has_default:
            raise MissingDependencyError(requester, param.name, param.annotation, self.path())
        return maker

    def _initializer(self, cls: type, hooks: Hooks, keep: bool) -> Callable[[Any], None]:
        environment = self._environment
        injections = self.injection_makers(cls, hooks)
        return lambda instance: environment._initialize(instance, hooks, injections, keep)

    def injection_makers(
        self, cls: type, hooks: Hooks
    ) -> list[tuple[Injection, list[Maker | None]]]:
        """Each injection method with the makers of its parameters (only `@inject()` has any)."""
        return [
            (
                inj,
                [self.parameter_maker(cls, p) for p in inj.params]
                if inj.descriptor.kind == "inject"
                else [],
            )
            for inj in hooks.injections
        ]

    def check_scopes(self, scopes: Mapping[str, Any]) -> None:
        """Every registration names a known scope."""
        for registration in self.registrations:
            if registration.scope != SINGLETON and registration.scope not in scopes:
                raise DecoratorError(
                    f"{type_name(registration.provides)} uses the unknown scope "
                    f"{registration.scope!r}.\nHint: use one of "
                    f"{', '.join(sorted({SINGLETON, *scopes}))}, or pass "
                    "Environment(..., scopes={name: MyScope()})."
                )


def _specialize(
    func: Callable[..., Any],
    positional: list[Maker],
    keywords: dict[str, Maker],
    initialize: Callable[[Any], None] | None,
) -> Maker:
    """A closure calling `func` with made arguments, unrolled for the common short cases."""
    if initialize is None and not keywords:
        if not positional:
            return func
        if len(positional) == 1:
            (a,) = positional
            return lambda: func(a())
        if len(positional) == 2:
            a, b = positional
            return lambda: func(a(), b())
        if len(positional) == 3:
            a, b, c = positional
            return lambda: func(a(), b(), c())

    def call() -> Any:
        instance = func(*[m() for m in positional], **{k: m() for k, m in keywords.items()})
        if initialize is not None:
            initialize(instance)
        return instance

    return call
