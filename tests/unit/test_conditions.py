"""@conditional: features, required classes and configuration values."""

from __future__ import annotations

import pytest

from aspyx_di import ConfigurationManager, DictSource, Environment, UnresolvableTypeError
from tests.fixtures import conditional


def test_feature_selects_the_implementation() -> None:
    assert (
        Environment(conditional.ConditionalModule, features=["dev"]).get(conditional.Cache).name
        == "dev"
    )
    assert (
        Environment(conditional.ConditionalModule, features=["prod"]).get(conditional.Cache).name
        == "prod"
    )


def test_requires_class_follows_other_registrations() -> None:
    dev = Environment(conditional.ConditionalModule, features=["dev"])
    assert isinstance(dev.get(conditional.DevTools), conditional.DevTools)
    prod = Environment(conditional.ConditionalModule, features=["prod"])
    with pytest.raises(UnresolvableTypeError):
        prod.get(conditional.DevTools)


def test_requires_configuration_value() -> None:
    on = ConfigurationManager(DictSource({"metrics": {"enabled": "true"}}))
    environment = Environment(conditional.ConditionalModule, features=["dev"], configuration=on)
    assert isinstance(environment.get(conditional.Metrics), conditional.Metrics)
    off = Environment(
        conditional.ConditionalModule,
        features=["dev"],
        configuration=ConfigurationManager(DictSource({})),
    )
    with pytest.raises(UnresolvableTypeError):
        off.get(conditional.Metrics)


def test_conditional_create_method() -> None:
    assert (
        Environment(conditional.ConditionalModule, features=["dev"]).get(conditional.Banner).text
        == "dev build"
    )
    with pytest.raises(UnresolvableTypeError):
        Environment(conditional.ConditionalModule, features=["prod"]).get(conditional.Banner)
