"""Private: what a broker provider keeps of its constructor call, so `clone` can repeat it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ConstructorArguments:
    """A provider's constructor arguments; `repr` hides them (they hold the password).

    Example:
        >>> class Demo:
        ...     def __init__(self, host: str, password: str = "") -> None:
        ...         self.arguments = ConstructorArguments.of(locals())
        >>> again = Demo("broker", password="secret").arguments.call(Demo)
        >>> again.arguments.values["host"], again.arguments
        ('broker', ConstructorArguments())
    """

    values: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, local_names: dict[str, Any]) -> ConstructorArguments:
        """Capture `locals()` taken first thing in `__init__` (its parameters, not `self`)."""
        return cls({name: value for name, value in local_names.items() if name != "self"})

    def call(self, constructor: Any) -> Any:
        """`constructor(**the captured arguments)`."""
        return constructor(**self.values)
