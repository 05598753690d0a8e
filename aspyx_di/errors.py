"""The error hierarchy of aspyx_di: every error derives from `DIError`.

Each error keeps its facts as attributes and renders them: what failed, the resolution path
(`Controller -> Service -> Repository`), then a `Hint:` with the likely fix. Subclasses also
inherit the matching builtin so generic handlers keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def type_name(tp: Any) -> str:
    """A readable name for a type or type expression (`list[Service]`, `Repository`)."""
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def render_path(path: Sequence[Any]) -> str:
    """`A -> B -> C` for a resolution path of types."""
    return " -> ".join(type_name(step) for step in path)


class DIError(Exception):
    """Root of every error raised by aspyx_di."""


class DecoratorError(DIError, TypeError):
    """A decorator was applied to something it cannot describe (reported at decoration time)."""


class MissingDependencyError(DIError, LookupError):
    """A constructor, factory or injection method needs a type nothing provides."""

    def __init__(
        self, requester: Any, parameter: str, missing: Any, path: Sequence[Any] = ()
    ) -> None:
        self.requester = requester
        self.parameter = parameter
        self.missing = missing
        self.path = tuple(path)
        where = f" (path: {render_path([*self.path, missing])})" if self.path else ""
        super().__init__(
            f"{type_name(requester)} needs {type_name(missing)} for parameter {parameter!r}, "
            f"but nothing provides it{where}.\n"
            f"Hint: decorate {type_name(missing)} (or an implementation of it) with @injectable(), "
            "provide it with @create() in a module, or add the module that registers it to "
            "@module(imports=[...])."
        )


class UnresolvableTypeError(DIError, LookupError):
    """`Environment.get` was asked for a type that is not registered."""

    def __init__(self, missing: Any) -> None:
        self.missing = missing
        super().__init__(
            f"nothing provides {type_name(missing)} in this environment.\n"
            f"Hint: decorate it with @injectable() in the module's package, or import the module "
            "that registers it with @module(imports=[...])."
        )


class AmbiguousDependencyError(DIError, LookupError):
    """Several registrations provide the requested base class or protocol."""

    def __init__(self, requested: Any, candidates: Sequence[Any], path: Sequence[Any] = ()) -> None:
        self.requested = requested
        self.candidates = tuple(candidates)
        self.path = tuple(path)
        names = ", ".join(sorted(type_name(c) for c in self.candidates))
        where = f" (path: {render_path([*self.path, requested])})" if self.path else ""
        super().__init__(
            f"{type_name(requested)} is ambiguous: {len(self.candidates)} candidates ({names})"
            f"{where}.\n"
            f"Hint: inject one concrete class, inject list[{type_name(requested)}] to get all of "
            "them, or filter the others with @conditional(...)."
        )


class CyclicDependencyError(DIError, RecursionError):
    """Construction dependencies form a cycle."""

    def __init__(self, cycle: Sequence[Any]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            f"dependency cycle: {render_path(self.cycle)}.\n"
            "Hint: break the cycle by moving one dependency into an @on_running() hook, or by "
            "injecting the Environment and resolving lazily."
        )


class ScopeError(DIError, LookupError):
    """A scope name is unknown, or a scoped bean was requested outside its scope."""


class LifecycleError(DIError, RuntimeError):
    """A lifecycle rule was broken (for example a closed environment was used)."""


class ConfigurationError(DIError, ValueError):
    """A configuration source could not be read or a value has the wrong type."""


class MissingConfigurationError(DIError, KeyError):
    """A configuration key is absent from every source and has no default."""

    def __init__(self, key: str, sources: Sequence[str]) -> None:
        self.key = key
        self.sources = tuple(sources)
        consulted = ", ".join(self.sources) or "no sources"
        env_name = key.upper().replace(".", "__")
        super().__init__(
            f"configuration key {key!r} is not set (consulted: {consulted}).\n"
            f"Hint: set the environment variable {env_name}, add {key!r} to a configuration "
            "file, or pass a default."
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
