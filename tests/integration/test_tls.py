"""TLS for real: both providers against RabbitMQ's TLS listeners, certificates verified.

`tls_support` makes a throw-away CA with server certificates and adds TLS listeners for AMQP,
STOMP and the management API to the running RabbitMQ for this module (removed afterwards).
The positive tests deliver an event end to end over verified TLS; the negative ones show that
a client trusting another CA, or meeting a certificate for another name, is refused, and what
the error says. A refused certificate fails `start` at once (no retries until
``connect_timeout``); the negative tests still use a short timeout so that a regression to
retrying shows as a slow failure, not a hang.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from aspyx_event.envelope import Envelope
from aspyx_event.errors import ProviderConnectionError
from aspyx_event.provider import Provider, Subscription
from aspyx_event.providers.amqp import AMQPProvider
from aspyx_event.providers.stomp import StompProvider
from tests.contract.harness import BrokerTarget, ListenerSpec, payload_event, start_member, unique
from tests.integration.inbox import Inbox
from tests.integration.tls_support import (
    HOST,
    TLSListeners,
    handshake,
)

pytestmark = pytest.mark.broker

WAIT = 30.0
REFUSED_WITHIN = 1.0  # connect_timeout of the negative tests: a refusal takes milliseconds


Factory = Callable[..., Provider]


@pytest.fixture
def providers() -> Iterator[list[Provider]]:
    """Providers a test made; stopped at its end."""
    made: list[Provider] = []
    yield made
    for provider in made:
        provider.stop()


@pytest.fixture
def amqp(tls: TLSListeners, providers: list[Provider]) -> Factory:
    """Makes `AMQPProvider`s with TLS: ``localhost``, the good listener, trusting our CA."""

    def make(port: int | None = None, ca: Path | None = None, **options: object) -> Provider:
        settings: dict[str, object] = {
            "tls": True,
            "ca_file": str(ca or tls.certificates.ca.cert),
            "management_port": tls.ports.management,
            "per_process_expiry": 10.0,  # the test queues vanish soon after the test
            "connect_timeout": WAIT,
            "send_timeout": WAIT,
        }
        settings.update(options)
        host = str(settings.pop("host", "localhost"))
        port = port or tls.ports.amqp
        provider = AMQPProvider(unique("tls"), host, port, "guest", "guest", **settings)  # type: ignore[arg-type]
        providers.append(provider)
        return provider

    return make


@pytest.fixture
def stomp(tls: TLSListeners, providers: list[Provider]) -> Factory:
    """Makes `StompProvider`s with TLS: 127.0.0.1, the good listener, trusting our CA."""

    def make(port: int | None = None, ca: Path | None = None, **options: object) -> Provider:
        settings: dict[str, object] = {
            "tls": True,
            "ca_file": str(ca or tls.certificates.ca.cert),
            "connect_timeout": WAIT,
            "send_timeout": WAIT,
        }
        settings.update(options)
        host = str(settings.pop("host", HOST))
        port = port or tls.ports.stomp
        provider = StompProvider(unique("tls"), host, port, "guest", "guest", **settings)  # type: ignore[arg-type]
        providers.append(provider)
        return provider

    return make


def assert_round_trip(provider: Provider) -> None:
    """Subscribe, start, send one durable event and receive (and ack) it through the broker."""
    tag = uuid.uuid4().hex[:8]
    event = f"tls-{tag}"
    inbox = Inbox()
    provider.subscribe(Subscription(event, f"group-{tag}", per_process=True), inbox)
    provider.start()
    provider.send(Envelope.create(f'"over TLS {tag}"', event), durable=True).result(WAIT)
    (delivery,) = inbox.take(1)
    assert delivery.envelope.body == f'"over TLS {tag}"'
    assert delivery.envelope.event_name == event


def refusal(provider: Provider) -> str:
    """The message of the `ProviderConnectionError` with which `provider.start()` fails."""
    with pytest.raises(ProviderConnectionError) as raised:
        provider.start()
    return str(raised.value)


def test_amqp_delivers_over_verified_tls(amqp: Factory) -> None:
    """amqps to localhost, chain and name verified, management API over HTTPS."""
    assert_round_trip(amqp())


@pytest.mark.parametrize("host", [HOST, "localhost"])
def test_stomp_delivers_over_verified_tls(stomp: Factory, host: str) -> None:
    """stomp+ssl verified by IP address and by name."""
    assert_round_trip(stomp(host=host))


def test_amqp_without_verify_hostname_accepts_a_certificate_for_another_name(
    amqp: Factory, tls: TLSListeners
) -> None:
    """verify_hostname=False checks only the chain (the refusal of another CA is tested below)."""
    assert_round_trip(amqp(tls.ports.amqp_wrong_name, verify_hostname=False))


@pytest.mark.parametrize("scheme", ["amqps", "stomp+ssl"])
def test_tls_configured_by_the_url_alone_delivers_events(tls: TLSListeners, scheme: str) -> None:
    """The full stack (Environment, EventManager, listener) on a provider made from its URL."""
    ca = quote(str(tls.certificates.ca.cert), safe="/")
    if scheme == "amqps":
        where = f"localhost:{tls.ports.amqp}?management_port={tls.ports.management}&"
    else:
        where = f"{HOST}:{tls.ports.stomp}?"
    url = f"{scheme}://guest:guest@{where}broker=rabbitmq&ca_file={ca}"
    event_type = payload_event()
    member = start_member(
        BrokerTarget(scheme, url), [ListenerSpec(event_type, unique("L"), per_process=True)]
    )
    try:
        member.send(event_type(1, "over TLS"))
        assert member.take(1, timeout=WAIT)[0].event == event_type(1, "over TLS")
    finally:
        member.stop()


@pytest.mark.parametrize("verify_hostname", [True, False])
def test_amqp_refuses_a_broker_of_another_ca(
    amqp: Factory, tls: TLSListeners, verify_hostname: bool
) -> None:
    """A client trusting only another CA is refused, whatever verify_hostname says."""
    provider = amqp(
        ca=tls.certificates.other_ca.cert,
        verify_hostname=verify_hostname,
        connect_timeout=REFUSED_WITHIN,
    )
    message = refusal(provider)
    assert f"localhost:{tls.ports.amqp}" in message
    assert "certificate verify failed" in message


def test_amqp_verify_hostname_refuses_a_certificate_for_another_name(
    amqp: Factory, tls: TLSListeners
) -> None:
    """verify_hostname=True (the default) refuses a valid chain for another name."""
    port, ca = tls.ports.amqp_wrong_name, tls.certificates.ca.cert
    handshake(port, ca, "localhost", check_hostname=False)  # all but the name verifies
    assert "certificate verify failed" in refusal(amqp(port, connect_timeout=REFUSED_WITHIN))


def test_amqp_verify_hostname_accepts_an_ip_address_in_the_certificate(amqp: Factory) -> None:
    """amqps://127.0.0.1 against a certificate for IP:127.0.0.1 (proton alone checks only
    DNS names; the provider has OpenSSL check the IP address)."""
    assert_round_trip(amqp(host=HOST, connect_timeout=REFUSED_WITHIN))


def test_stomp_refuses_a_broker_of_another_ca(stomp: Factory, tls: TLSListeners) -> None:
    """A client trusting only another CA is refused."""
    # First make sure that the listener is up and that its certificate verifies against our
    # CA: the CA is then what failed.
    handshake(tls.ports.stomp, tls.certificates.ca.cert, HOST)
    provider = stomp(ca=tls.certificates.other_ca.cert, connect_timeout=REFUSED_WITHIN)
    assert f"{HOST}:{tls.ports.stomp}" in refusal(provider)


def test_stomp_checks_the_hostname(stomp: Factory, tls: TLSListeners) -> None:
    """stomp.py always checks the name (StompProvider has no verify_hostname option)."""
    port, ca = tls.ports.stomp_wrong_name, tls.certificates.ca.cert
    handshake(port, ca, "localhost", check_hostname=False)  # all but the name verifies
    refusal(stomp(port, host="localhost", connect_timeout=REFUSED_WITHIN))


def test_stomp_refusal_names_the_certificate_problem(stomp: Factory, tls: TLSListeners) -> None:
    """The error a user sees should say that the certificate was the problem."""
    provider = stomp(ca=tls.certificates.other_ca.cert, connect_timeout=REFUSED_WITHIN)
    assert "certificate" in refusal(provider).lower()
