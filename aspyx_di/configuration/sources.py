"""Configuration sources: environment variables, YAML files and dicts.

A source turns its data into flat dotted keys (`event.provider`); the `ConfigurationManager`
asks its sources in order of precedence.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aspyx_di.errors import ConfigurationError


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; keys are lower-cased."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{str(key).lower()}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


class ConfigurationSource(ABC):
    """Where configuration values come from.

    `load` returns flat, lower-case dotted keys. It is called once, when the manager first
    needs a value (and again on `ConfigurationManager.reload()`).
    """

    name: str
    """How the source is named in error messages."""

    @abstractmethod
    def load(self) -> dict[str, Any]:
        """The source's values as `{dotted.key: value}`."""


class DictSource(ConfigurationSource):
    """Values given in code, e.g. defaults: `DictSource({"event": {"provider": "local://"}})`."""

    def __init__(self, data: Mapping[str, Any], name: str = "dict") -> None:
        self._data = dict(data)
        self.name = name

    def load(self) -> dict[str, Any]:
        return flatten(self._data)


class EnvironmentSource(ConfigurationSource):
    """Environment variables; a double underscore nests: `EVENT__PROVIDER` is `event.provider`.

    Args:
        prefix: only variables starting with it are read, without it (`APP_EVENT__PROVIDER`
            with prefix `APP_` is `event.provider`).
        environ: the mapping to read (default `os.environ`, read at load time).
    """

    def __init__(self, prefix: str = "", environ: Mapping[str, str] | None = None) -> None:
        self._prefix = prefix
        self._environ = environ
        self.name = f"environment variables{f' {prefix}*' if prefix else ''}"

    def load(self) -> dict[str, Any]:
        environ = os.environ if self._environ is None else self._environ
        values: dict[str, Any] = {}
        for name, value in environ.items():
            if not name.startswith(self._prefix):
                continue
            key = ".".join(part.lower() for part in name[len(self._prefix) :].split("__"))
            values[key] = value
        return values


class YamlSource(ConfigurationSource):
    """A YAML file (needs the `yaml` extra: `pip install "aspyx-messaging[yaml]"`).

    Args:
        path: the file.
        required: a missing file is an error (otherwise it contributes nothing).
    """

    def __init__(self, path: str | Path, required: bool = True) -> None:
        self._path = Path(path)
        self._required = required
        self.name = f"YAML file {self._path}"

    def load(self) -> dict[str, Any]:
        try:
            import yaml  # noqa: PLC0415 - optional extra, imported only when a YAML source is used
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot read {self._path}: PyYAML is not installed.\n"
                'Hint: pip install "aspyx-messaging[yaml]"'
            ) from exc
        if not self._path.exists():
            if self._required:
                raise ConfigurationError(
                    f"configuration file {self._path} does not exist.\n"
                    "Hint: check the path, or pass required=False for an optional file."
                )
            return {}
        try:
            data = yaml.safe_load(self._path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{self._path} is not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigurationError(
                f"{self._path} must hold a mapping at its top level, not {type(data).__name__}."
            )
        return flatten(data)
