"""ConfigurationManager: sources, precedence, coercion and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aspyx_di import (
    ConfigurationError,
    ConfigurationManager,
    DictSource,
    EnvironmentSource,
    MissingConfigurationError,
    YamlSource,
)


def test_double_underscore_nests_environment_variables() -> None:
    source = EnvironmentSource(environ={"EVENT__PROVIDER": "stomp://h", "EVENT__SERVER_NAME": "a"})
    configuration = ConfigurationManager(source)
    assert configuration.get("event.provider", str) == "stomp://h"
    assert configuration.get("event", dict) == {"provider": "stomp://h", "server_name": "a"}


def test_later_sources_override_earlier_ones(tmp_path: Path) -> None:
    file = tmp_path / "app.yaml"
    file.write_text("http:\n  port: 8000\n  host: filehost\n", encoding="utf-8")
    configuration = ConfigurationManager(
        DictSource({"http": {"port": 1, "host": "dicthost", "timeout": "2.5"}}),
        YamlSource(file),
        EnvironmentSource(environ={"HTTP__PORT": "9000"}),
    )
    assert configuration.get("http.port", int) == 9000
    assert configuration.get("http.host", str) == "filehost"
    assert configuration.get("http.timeout", float) == 2.5


def test_missing_key_names_the_key_and_the_sources() -> None:
    configuration = ConfigurationManager(
        DictSource({}, name="defaults"), EnvironmentSource(environ={})
    )
    with pytest.raises(MissingConfigurationError) as caught:
        configuration.get("db.url", str)
    message = str(caught.value)
    assert "'db.url'" in message and "defaults" in message and "environment variables" in message
    assert "DB__URL" in message
    assert configuration.get("db.url", str, default="x") == "x"


def test_uncoercible_value_is_a_clear_error() -> None:
    configuration = ConfigurationManager(DictSource({"http": {"port": "eighty"}}))
    with pytest.raises(ConfigurationError, match=r"'http\.port' = 'eighty' is not a valid int"):
        configuration.get("http.port", int)


def test_missing_required_yaml_file(tmp_path: Path) -> None:
    configuration = ConfigurationManager(YamlSource(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        configuration.get("a", str)
    assert (
        ConfigurationManager(YamlSource(tmp_path / "nope.yaml", required=False)).get("a", str, None)
        is None
    )
