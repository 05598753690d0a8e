"""The fault-injection suite runs on the real brokers only (both providers)."""

from __future__ import annotations

import pytest

from tests.contract.conftest import TARGETS
from tests.contract.harness import BrokerTarget


@pytest.fixture(params=TARGETS[1:])
def target(request: pytest.FixtureRequest) -> BrokerTarget:
    """AMQP on RabbitMQ, STOMP on RabbitMQ, STOMP on ActiveMQ."""
    found: BrokerTarget = request.param
    return BrokerTarget(found.name, found.url, found.restart)
