"""Fixtures shared by the integration suites: RabbitMQ's TLS listeners (`tls_support`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.tls_support import (
    TLSListeners,
    make_certificates,
    require_rabbitmq,
    tls_listeners,
)


@pytest.fixture(scope="module")
def module_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSListeners]:
    """Fresh certificates and RabbitMQ's TLS listeners for the tests of one module."""
    require_rabbitmq()
    with tls_listeners(make_certificates(tmp_path_factory.mktemp("tls"))) as listeners:
        yield listeners


@pytest.fixture
def tls(module_tls: TLSListeners) -> TLSListeners:
    """The module's TLS listeners, added again if a RabbitMQ restart dropped them."""
    module_tls.ensure()
    return module_tls
