"""Provider URLs: parsing, options, errors with hints, and passwords kept out of messages."""

from __future__ import annotations

import logging
import sys

import pytest

from aspyx_di import ConfigurationManager, Environment, EnvironmentSource
from aspyx_event import (
    LocalProvider,
    MissingProviderLibraryError,
    ProviderConfigurationError,
    create_provider,
)
from aspyx_event.providers import redact
from tests.fixtures import eventapp


def test_local_is_the_default_and_needs_nothing() -> None:
    provider = create_provider("local://", "node-1")
    assert isinstance(provider, LocalProvider) and provider.server_name == "node-1"


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ProviderConfigurationError) as caught:
        create_provider("kafka://host:9092")
    message = str(caught.value)
    assert "unknown provider scheme 'kafka'" in message
    assert "amqp://" in message and "stomp://" in message and "local://" in message


def test_malformed_url_is_rejected_without_leaking_the_password() -> None:
    with pytest.raises(ProviderConfigurationError) as caught:
        create_provider("amqp://user:s3cret@host:notaport")
    assert "malformed provider URL" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(ProviderConfigurationError) as caught:
        create_provider("stomp://guest:s3cret@127.0.0.1:61613?flavour=x")
    message = str(caught.value)
    assert "unknown option 'flavour'" in message and "broker" in message
    assert "s3cret" not in message


def test_redact_hides_only_the_password() -> None:
    assert (
        redact("amqp://guest:pw@h:5672?broker=rabbitmq")
        == "amqp://guest:***@h:5672?broker=rabbitmq"
    )
    assert redact("local://") == "local://"


def test_a_missing_client_library_fails_the_build_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in [
        m
        for m in sys.modules
        if m == "stomp" or m.startswith(("stomp.", "aspyx_event.providers._stomp"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "stomp", None)  # makes `import stomp` fail
    configuration = ConfigurationManager(
        EnvironmentSource(environ={"EVENT__PROVIDER": "stomp://guest:s3cret@127.0.0.1:61613"})
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(MissingProviderLibraryError) as caught:
        Environment(eventapp.EventApp, configuration=configuration)
    assert 'pip install "aspyx-messaging[stomp]"' in str(caught.value)
    assert "s3cret" not in caplog.text
