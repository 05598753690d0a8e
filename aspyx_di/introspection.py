"""Reading constructor and method signatures once, cheaply.

`inspect.signature` + `typing.get_type_hints` cost tens of microseconds per class; reading
`__code__` and `__annotations__` directly costs a few, which keeps building an environment
of a hundred classes under a millisecond. String annotations (`from __future__ import
annotations`) are evaluated in the function's module; `typing.get_type_hints` is the fallback.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from .errors import DecoratorError


class Param(NamedTuple):
    """One injectable parameter of a constructor or method (a tuple: cheap to make)."""

    name: str
    annotation: Any  # `inspect.Parameter.empty` when unannotated
    default: Any  # `inspect.Parameter.empty` when required
    keyword_only: bool

    @property
    def has_default(self) -> bool:
        """The caller may leave this parameter out."""
        return self.default is not inspect.Parameter.empty


EMPTY = inspect.Parameter.empty
_VARARGS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


def constructor_of(cls: type) -> Callable[..., Any] | None:
    """The `__init__` a class really uses, or None when it is `object.__init__`."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            return None if init is object.__init__ else init
    return None


_parameters: WeakKeyDictionary[Callable[..., Any], tuple[Param, ...]] = WeakKeyDictionary()


def parameters(func: Callable[..., Any], skip_self: bool = True) -> tuple[Param, ...]:
    """The named parameters of `func` with resolved annotations (*args/**kwargs are ignored).

    Read once per function and cached: a construction plan is computed once per class.
    """
    try:
        return _parameters[func]
    except (KeyError, TypeError):  # TypeError: not weak-referenceable (a builtin)
        pass
    params = _read_parameters(func, skip_self)
    with contextlib.suppress(TypeError):
        _parameters[func] = params
    return params


def _read_parameters(func: Callable[..., Any], skip_self: bool) -> tuple[Param, ...]:
    if hasattr(func, "__wrapped__"):
        func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None:
        return _parameters_slow(func, skip_self)
    count = code.co_argcount + code.co_kwonlyargcount
    names = code.co_varnames[:count]
    annotations = func.__annotations__
    defaults = func.__defaults__ or ()
    kwdefaults = func.__kwdefaults__ or {}
    first_default = code.co_argcount - len(defaults)
    params: list[Param] = []
    for index, name in enumerate(names):
        if skip_self and index == 0 and code.co_argcount > 0:
            continue
        keyword_only = index >= code.co_argcount
        if keyword_only:
            default = kwdefaults.get(name, EMPTY)
        else:
            default = defaults[index - first_default] if index >= first_default else EMPTY
        annotation = annotations.get(name, EMPTY)
        if isinstance(annotation, str):
            annotation = _evaluate(func, name, annotation)
        params.append(Param(name, annotation, default, keyword_only))
    return tuple(params)


def return_type(func: Callable[..., Any]) -> Any:
    """The evaluated return annotation of `func` (`EMPTY` when absent)."""
    if hasattr(func, "__wrapped__"):
        func = inspect.unwrap(func)
    annotation = getattr(func, "__annotations__", {}).get("return", EMPTY)
    if isinstance(annotation, str):
        annotation = _evaluate(func, "return", annotation)
    return annotation


@functools.lru_cache(maxsize=1024)
def _compiled(annotation: str) -> Any:
    return compile(annotation, "<annotation>", "eval")


def _evaluate(func: Callable[..., Any], name: str, annotation: str) -> Any:
    namespace = getattr(func, "__globals__", {})
    if annotation in namespace:  # the common case, a plain class name: no eval needed
        return namespace[annotation]
    try:
        return eval(_compiled(annotation), namespace)
    except Exception:
        try:
            return typing.get_type_hints(func)[name]
        except Exception as exc:
            raise DecoratorError(
                f"cannot resolve the annotation {annotation!r} of {name!r} in "
                f"{func.__qualname__}: {exc}.\nHint: with `from __future__ import annotations` "
                "every annotated type must be importable at module level (not defined inside a "
                "function, not only under TYPE_CHECKING)."
            ) from exc


def _parameters_slow(func: Callable[..., Any], skip_self: bool) -> tuple[Param, ...]:
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func)
    params = [
        Param(p.name, hints.get(p.name, EMPTY), p.default, p.kind is p.KEYWORD_ONLY)
        for p in signature.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return tuple(params[1:] if skip_self and params and params[0].name == "self" else params)
