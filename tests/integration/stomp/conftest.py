"""Fixtures of the StompProvider tests, defined in support.py."""

from tests.integration.stomp.support import (  # noqa: F401 - fixtures are found by name
    broker,
    make,
    make_activemq,
    make_rabbitmq,
    outages,
    proxy,
)
