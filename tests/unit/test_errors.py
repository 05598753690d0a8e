"""Errors are raised while the environment is built, with the path and a hint."""

from __future__ import annotations

import pytest

from aspyx_di import (
    CyclicDependencyError,
    DIError,
    Environment,
    LifecycleError,
    MissingDependencyError,
    UnresolvableTypeError,
)
from tests.fixtures.cycle import CycleModule
from tests.fixtures.missing import MissingModule
from tests.fixtures.shop import Controller, ShopModule


def test_missing_dependency_names_requester_parameter_type_path_and_hint() -> None:
    with pytest.raises(MissingDependencyError) as caught:
        Environment(MissingModule)
    error = caught.value
    assert isinstance(error, LookupError) and isinstance(error, DIError)
    assert error.requester.__name__ == "Repo"
    assert error.parameter == "backend"
    assert error.missing.__name__ == "Unregistered"
    message = str(error)
    assert "Repo needs Unregistered for parameter 'backend'" in message
    assert "Service -> Repo -> Unregistered" in message or "Repo -> Unregistered" in message
    assert "Hint:" in message


def test_cycle_is_reported_at_build_with_the_full_path() -> None:
    with pytest.raises(CyclicDependencyError) as caught:
        Environment(CycleModule)
    message = str(caught.value)
    assert (
        "A -> B -> C -> A" in message
        or "B -> C -> A -> B" in message
        or "C -> A -> B -> C" in message
    )
    assert "Hint:" in message


def test_unknown_type_asked_directly() -> None:
    environment = Environment(ShopModule)
    with pytest.raises(UnresolvableTypeError, match="nothing provides int"):
        environment.get(int)


def test_closed_environment_refuses_to_resolve() -> None:
    environment = Environment(ShopModule)
    environment.shutdown()
    with pytest.raises(LifecycleError, match="shut down"):
        environment.get(Controller)
