"""Conditions for `@conditional(...)`: registrations that apply only in some environments."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .configuration import ConfigurationManager
from .errors import type_name


@dataclass(frozen=True, slots=True)
class ConditionContext:
    """What a condition may look at while an environment is being built."""

    features: frozenset[str]
    configuration: ConfigurationManager
    is_registered: Callable[[type], bool]


class Condition(ABC):
    """A predicate over the environment being built."""

    @abstractmethod
    def matches(self, context: ConditionContext) -> bool:
        """True when the decorated registration applies."""

    requires_registrations: bool = False
    """True when the answer depends on which other classes are registered."""


@dataclass(frozen=True, slots=True)
class _FeatureCondition(Condition):
    feature: str

    def matches(self, context: ConditionContext) -> bool:
        return self.feature in context.features

    def __str__(self) -> str:
        return f"requires_feature({self.feature!r})"


@dataclass(frozen=True, slots=True)
class _ClassCondition(Condition):
    required: type
    requires_registrations: bool = True

    def matches(self, context: ConditionContext) -> bool:
        return context.is_registered(self.required)

    def __str__(self) -> str:
        return f"requires_class({type_name(self.required)})"


@dataclass(frozen=True, slots=True)
class _ValueCondition(Condition):
    key: str
    value: Any

    def matches(self, context: ConditionContext) -> bool:
        actual = context.configuration.get(self.key, type(self.value), default=None)
        return bool(actual == self.value)

    def __str__(self) -> str:
        return f"requires_configuration_value({self.key!r}, {self.value!r})"


def requires_feature(feature: str) -> Condition:
    """Holds when the environment was built with `features=[..., feature]`."""
    return _FeatureCondition(feature)


def requires_class(required: type) -> Condition:
    """Holds when another registration provides `required`."""
    return _ClassCondition(required)


def requires_configuration_value(key: str, value: Any) -> Condition:
    """Holds when configuration `key`, coerced to `type(value)`, equals `value`."""
    return _ValueCondition(key, value)
