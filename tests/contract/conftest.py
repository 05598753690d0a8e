"""The provider x broker matrix every contract test runs over."""

from __future__ import annotations

import pytest

from tests.contract.harness import BrokerTarget

TARGETS = [
    pytest.param(BrokerTarget("local", ""), id="local"),
    pytest.param(
        BrokerTarget(
            "amqp-rabbitmq", "amqp://guest:guest@127.0.0.1:5672?broker=rabbitmq", "restart-rabbitmq"
        ),
        id="amqp-rabbitmq",
        marks=pytest.mark.broker,
    ),
    pytest.param(
        BrokerTarget(
            "stomp-rabbitmq",
            "stomp://guest:guest@127.0.0.1:61613?broker=rabbitmq",
            "restart-rabbitmq",
        ),
        id="stomp-rabbitmq",
        marks=pytest.mark.broker,
    ),
    pytest.param(
        BrokerTarget(
            "stomp-activemq",
            "stomp://guest:guest@127.0.0.1:61614?broker=activemq",
            "restart-activemq",
        ),
        id="stomp-activemq",
        marks=pytest.mark.broker,
    ),
]


@pytest.fixture(params=TARGETS[1:])
def broker_target(request: pytest.FixtureRequest) -> BrokerTarget:
    """The real brokers only (for what the in-process provider has no equivalent of)."""
    found: BrokerTarget = request.param
    return BrokerTarget(found.name, found.url, found.restart)


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> BrokerTarget:
    """A fresh target per test (the local one gets its own in-process broker)."""
    found: BrokerTarget = request.param
    return BrokerTarget(found.name, found.url, found.restart)
