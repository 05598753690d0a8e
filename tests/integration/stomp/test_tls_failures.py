"""How StompProvider reports and handles TLS failures (RabbitMQ's TLS listeners of tls_support).

A certificate that does not verify, or a TLS file that cannot be loaded, ends `start` at once
with an error naming the problem; a lost or refused connection is still retried (until
``connect_timeout`` in `start`, with backoff afterwards), also when TLS is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aspyx_event.errors import ProviderConfigurationError, ProviderConnectionError
from aspyx_event.provider import Subscription
from aspyx_event.providers.stomp import StompProvider
from tests.integration.stomp.support import *
from tests.integration.tls_support import (
    HOST,
    TLSListeners,
)
from tests.waiting import wait_until

PATIENT = 60.0  # connect_timeout of the fail-fast tests: they must not wait for it


@pytest.fixture
def make_tls(tls: TLSListeners) -> Iterator[Factory]:
    """TLS providers for RabbitMQ's TLS STOMP listener, trusting the test CA by default."""
    with providers(Broker("rabbitmq-tls", tls.ports.stomp)) as factory:

        def make(port: int | None = None, **options: object) -> StompProvider:
            settings: dict[str, object] = {"tls": True, "ca_file": str(tls.certificates.ca.cert)}
            settings.update(options)
            return factory(port, **settings)

        yield make


def start_error(provider: StompProvider) -> tuple[BaseException, float]:
    """The error `provider.start()` raises, and the seconds it took."""
    began = time.monotonic()
    with pytest.raises(Exception) as caught:
        provider.start()
    return caught.value, time.monotonic() - began


def errors_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_another_ca_fails_start_at_once_naming_the_certificate(
    make_tls: Factory, tls: TLSListeners
) -> None:
    other_ca = str(tls.certificates.other_ca.cert)
    error, took = start_error(make_tls(ca_file=other_ca, connect_timeout=PATIENT))
    assert isinstance(error, ProviderConnectionError)
    assert took < PATIENT / 4
    message = str(error)
    assert f"{HOST}:{tls.ports.stomp}" in message
    assert "TLS certificate that does not verify" in message
    assert f"Hint: ca_file ({other_ca})" in message
    assert PASSWORD not in message.replace(other_ca, "")
    assert type(error.__cause__).__name__ == "SSLCertVerificationError"


def test_a_certificate_for_another_name_fails_start_at_once(
    make_tls: Factory, tls: TLSListeners
) -> None:
    provider = make_tls(tls.ports.stomp_wrong_name, connect_timeout=PATIENT)
    error, took = start_error(provider)
    assert isinstance(error, ProviderConnectionError)
    assert took < PATIENT / 4
    assert "Hostname mismatch" in str(error) or "IP address mismatch" in str(error)
    assert "subjectAltName" in str(error)


def test_a_missing_ca_file_fails_start_at_once(make_tls: Factory, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.pem")
    error, took = start_error(make_tls(ca_file=missing, connect_timeout=PATIENT))
    assert isinstance(error, ProviderConfigurationError)
    assert took < PATIENT / 4
    assert f"ca_file {missing!r}" in str(error)


def test_a_refused_tls_connection_is_retried_until_connect_timeout(make_tls: Factory) -> None:
    proxy = Proxy(1)  # never asked: closed at once
    proxy.close()
    error, took = start_error(make_tls(proxy.port, connect_timeout=2.0))
    assert isinstance(error, ProviderConnectionError)
    assert took >= 2.0
    assert "Connection refused" in str(error)


def test_tls_reconnects_after_a_lost_connection(
    make_tls: Factory, tls: TLSListeners, outages: Outages, caplog: pytest.LogCaptureFixture
) -> None:
    """Network loss is retried; a certificate failure while reconnecting is logged once and
    retried too (the broker's certificate may be fixed), until the good listener is back."""
    event, group = names()
    proxy = Proxy(tls.ports.stomp)
    try:
        inbox = Inbox()
        consumer = make_tls(proxy.port, reconnect_max_delay=0.2)
        consumer.subscribe(Subscription(event, group, durable=True), inbox)
        consumer.start()
        caplog.set_level(logging.WARNING, logger="aspyx_event.providers")
        proxy.target = tls.ports.stomp_wrong_name  # reconnects meet the wrong certificate
        proxy.cut()
        assert outages.lost.wait(WAIT)
        wait_until(lambda: bool(errors_in(caplog)), WAIT, "the certificate error in the log")
        attempts = proxy.accepted
        assert proxy.wait_accepted(attempts + 3, WAIT), "several more attempts fail meanwhile"
        proxy.target = tls.ports.stomp
        producer = make_tls()
        producer.start()
        send_all(producer, [envelope(event, "after")])
        assert inbox.bodies(1) == ["after"]
        errors = errors_in(caplog)
        assert len(errors) == 1
        assert "Hostname mismatch" in errors[0] or "IP address mismatch" in errors[0]
    finally:
        proxy.close()
