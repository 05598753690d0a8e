"""The `ConfigurationManager`: typed values from several sources with a fixed precedence."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from aspyx_di.errors import ConfigurationError, MissingConfigurationError

from .sources import ConfigurationSource, EnvironmentSource

T = TypeVar("T")
_MISSING: Any = object()


@cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


class ConfigurationManager:
    """Typed configuration values from sources; a LATER source overrides an earlier one.

    The usual order is defaults, then files, then the environment:
    `ConfigurationManager(DictSource(defaults), YamlSource("app.yaml"), EnvironmentSource())`.
    Without arguments the manager reads environment variables only.

    Example:
        >>> from aspyx_di.configuration import DictSource
        >>> config = ConfigurationManager(DictSource({"http": {"port": "8080"}}))
        >>> config.get("http.port", int)
        8080
        >>> config.get("http.host", str, default="127.0.0.1")
        '127.0.0.1'
    """

    def __init__(self, *sources: ConfigurationSource) -> None:
        self._sources: tuple[ConfigurationSource, ...] = sources or (EnvironmentSource(),)
        self._values: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    @property
    def sources(self) -> tuple[ConfigurationSource, ...]:
        """The sources, lowest precedence first."""
        return self._sources

    def reload(self) -> None:
        """Forget loaded values; the next `get` reads every source again."""
        with self._lock:
            self._values = None

    def _loaded(self) -> list[dict[str, Any]]:
        values = self._values
        if values is None:
            with self._lock:
                if self._values is None:
                    self._values = [source.load() for source in reversed(self._sources)]
                values = self._values
        return values

    def raw(self, key: str) -> Any:
        """The uncoerced value of `key`: a scalar, a dict built from its sub-keys, or a sentinel."""
        key = key.lower()
        loaded = self._loaded()  # highest precedence first
        for values in loaded:
            if key in values:
                return values[key]
        prefix = key + "."
        tree: dict[str, Any] = {}
        for values in reversed(loaded):
            tree.update({k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)})
        return _nest(tree) if tree else _MISSING

    @overload
    def get(self, key: str, type_: type[T]) -> T: ...
    @overload
    def get(self, key: str, type_: type[T], default: None) -> T | None: ...
    @overload
    def get(self, key: str, type_: type[T], default: T) -> T: ...
    def get(self, key: str, type_: Any = str, default: Any = _MISSING) -> Any:
        """The value of `key` coerced to `type_` (through pydantic).

        Raises:
            MissingConfigurationError: no source has the key and no default was given.
            ConfigurationError: the value cannot be coerced to `type_`.
        """
        value = self.raw(key)
        if value is _MISSING:
            if default is _MISSING:
                raise MissingConfigurationError(key, [s.name for s in self._sources])
            return default
        try:
            return _adapter(type_).validate_python(value)
        except ValidationError as exc:
            type_label = getattr(type_, "__name__", type_)
            raise ConfigurationError(
                f"configuration key {key!r} = {value!r} is not a valid {type_label}: "
                f"{exc.errors()[0]['msg']}.\nHint: fix the value in its source "
                f"({', '.join(s.name for s in self._sources)})."
            ) from exc


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return nested
