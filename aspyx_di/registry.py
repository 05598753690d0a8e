"""Collecting registrations: scanning module packages, applying imports and conditions."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import FunctionType, ModuleType
from typing import Any, get_args, get_origin
from weakref import WeakKeyDictionary

from .conditions import Condition, ConditionContext
from .decorators import (
    BEAN_ATTR,
    CONDITIONS_ATTR,
    CREATE_ATTR,
    BeanDescriptor,
    CreateDescriptor,
    Factory,
    bean_descriptor,
)
from .errors import DecoratorError, type_name
from .introspection import EMPTY, return_type


@dataclass(frozen=True, slots=True, eq=False)
class Registration:
    """One way to obtain one type.

    `kind` is "class" (construct `target`), "factory" (`owner().create()`), "create"
    (`owner().target(...)`) or "instance" (`target` is the instance itself).
    """

    provides: Any
    kind: str
    target: Any
    scope: str
    eager: bool
    owner: type | None = None

    def __repr__(self) -> str:
        return f"Registration({type_name(self.provides)}, {self.kind}, {self.scope})"


def _python_modules(module_class: type) -> list[ModuleType]:
    """The Python module of `module_class` plus, for a package member, the whole package."""
    home = sys.modules[module_class.__module__]
    package = home.__name__ if hasattr(home, "__path__") else (home.__package__ or "")
    if not package:
        return [home]
    root = sys.modules.get(package) or importlib.import_module(package)
    found = [home, root]  # home may be __main__ (`python -m pkg.app`): not reachable by walking
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=package + "."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue  # private modules are implementation details, never scanned
        found.append(sys.modules.get(info.name) or importlib.import_module(info.name))
    return found


def _decorated_classes(modules: Iterable[ModuleType]) -> Iterator[type]:
    for python_module in modules:
        for value in list(vars(python_module).values()):
            if (
                isinstance(value, type)
                and value.__module__ == python_module.__name__
                and bean_descriptor(value) is not None
            ):
                yield value


def _factory_product(cls: type) -> Any:
    for base in getattr(cls, "__orig_bases__", ()):
        if get_origin(base) is Factory and get_args(base):
            return get_args(base)[0]
    product = return_type(cls.create)  # type: ignore[attr-defined]  # a Factory subclass
    if product is EMPTY:
        raise DecoratorError(
            f"cannot tell what factory {cls.__qualname__} provides.\n"
            "Hint: derive from Factory[Product] or annotate create() -> Product."
        )
    return product


_registrations: WeakKeyDictionary[type, list[Registration]] = WeakKeyDictionary()


def registrations_of(cls: type, descriptor: BeanDescriptor) -> list[Registration]:
    """The registrations a decorated class contributes: itself, its product, its @create methods.

    Computed once per class; registrations are immutable, so environments share them.
    """
    found = _registrations.get(cls)
    if found is None:
        found = _registrations[cls] = _read_registrations(cls, descriptor)
    return found


def _read_registrations(cls: type, descriptor: BeanDescriptor) -> list[Registration]:
    found = [Registration(cls, "class", cls, descriptor.scope, descriptor.eager)]
    if descriptor.kind == "factory":
        found.append(
            Registration(
                _factory_product(cls), "factory", cls, descriptor.scope, descriptor.eager, cls
            )
        )
    for name, member in vars(cls).items():
        spec = member.__dict__.get(CREATE_ATTR) if type(member) is FunctionType else None
        if isinstance(spec, CreateDescriptor):
            provides = return_type(member)
            if provides is EMPTY:
                raise DecoratorError(
                    f"@create() method {cls.__qualname__}.{name} has no return annotation.\n"
                    "Hint: annotate the type it provides: def make(self) -> Product."
                )
            found.append(Registration(provides, "create", member, spec.scope, spec.eager, cls))
    return found


_unconditional: WeakKeyDictionary[type, list[Registration]] = WeakKeyDictionary()


def collect(root: type, context: ConditionContext) -> list[Registration]:
    """Every registration of module `root` and the modules it imports, conditions applied.

    Without any condition the result depends on the module graph alone: kept per root.
    """
    cached = _unconditional.get(root)
    if cached is not None:
        return list(cached)
    candidates = _candidates(root)
    if not any(conditions for _, conditions in candidates):
        _unconditional[root] = [registration for registration, _ in candidates]
    return _apply_conditions(candidates, context)


def _candidates(root: type) -> list[tuple[Registration, tuple[Condition, ...]]]:
    candidates: list[tuple[Registration, tuple[Condition, ...]]] = []
    classes = dict.fromkeys(_module_classes(root, set()))
    for cls in classes:  # a class reached through two imports counts once
        descriptor: BeanDescriptor = getattr(cls, BEAN_ATTR)
        class_conditions = getattr(cls, CONDITIONS_ATTR, ())
        for registration in registrations_of(cls, descriptor):
            conditions = class_conditions
            if registration.kind == "create":
                conditions = conditions + getattr(registration.target, CONDITIONS_ATTR, ())
            candidates.append((registration, conditions))
    return candidates


def _module_classes(root: type, seen: set[type]) -> Iterator[type]:
    if root in seen:
        return
    seen.add(root)
    descriptor = bean_descriptor(root)
    if descriptor is None or descriptor.kind != "module":
        raise DecoratorError(
            f"{type_name(root)} is not a @module() class.\n"
            "Hint: Environment(...) takes a class decorated with @module()."
        )
    for imported in descriptor.imports:
        yield from _module_classes(imported, seen)
    yield root  # always, even when it is not found by scanning (defined in a function)
    if descriptor.scan:
        yield from scanned_classes(root)


_scanned: WeakKeyDictionary[type, tuple[type, ...]] = WeakKeyDictionary()


def scanned_classes(root: type) -> tuple[type, ...]:
    """The decorated classes of a module's package (other modules excluded).

    Scanned once per module class and process: packages are imported once, so a second
    environment of the same module does not walk them again.
    """
    found = _scanned.get(root)
    if found is None:
        found = _scanned[root] = tuple(
            cls
            for cls in _decorated_classes(_python_modules(root))
            if bean_descriptor(cls).kind != "module"  # type: ignore[union-attr]
        )
    return found


def _registered_in(provided: list[Any]) -> Callable[[type], bool]:
    def is_registered(wanted: type) -> bool:
        return any(isinstance(p, type) and issubclass(p, wanted) for p in provided)

    return is_registered


def _apply_conditions(
    candidates: list[tuple[Registration, tuple[Condition, ...]]], context: ConditionContext
) -> list[Registration]:
    """Static conditions first, then `requires_class` until nothing changes."""
    if not any(conds for _, conds in candidates):
        return [reg for reg, _ in candidates]
    kept = [
        (reg, conds)
        for reg, conds in candidates
        if all(c.matches(context) for c in conds if not c.requires_registrations)
    ]
    while True:
        check = ConditionContext(
            context.features, context.configuration, _registered_in([r.provides for r, _ in kept])
        )
        narrowed = [
            (reg, conds)
            for reg, conds in kept
            if all(c.matches(check) for c in conds if c.requires_registrations)
        ]
        if len(narrowed) == len(kept):
            return [reg for reg, _ in kept]
        kept = narrowed
