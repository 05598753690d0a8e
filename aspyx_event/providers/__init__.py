"""Providers: the transports behind the `EventManager`, chosen by URL.

- `local://`: `LocalProvider`, in-process, the default; needs nothing.
- `amqp://user:password@host:5672?broker=rabbitmq` (`amqps://` for TLS): `AMQPProvider`;
  needs `aspyx-messaging[amqp]`.
- `stomp://user:password@host:61613?broker=activemq` (`stomp+ssl://` for TLS):
  `StompProvider`; needs `aspyx-messaging[stomp]`.

Query parameters become the provider's keyword options (`broker`, `send_timeout`, ...). The
broker client libraries are imported only when such a provider is created.
"""

from __future__ import annotations

import importlib
import inspect
import os
import socket
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import TypeAdapter, ValidationError

from aspyx_event.errors import ProviderConfigurationError
from aspyx_event.provider import Provider

from .local import LocalProvider

_SCHEMES: dict[str, tuple[str, str, int, bool]] = {
    # scheme: (module, class, default port, tls)
    "amqp": ("aspyx_event.providers.amqp", "AMQPProvider", 5672, False),
    "amqps": ("aspyx_event.providers.amqp", "AMQPProvider", 5671, True),
    "stomp": ("aspyx_event.providers.stomp", "StompProvider", 61613, False),
    "stomp+ssl": ("aspyx_event.providers.stomp", "StompProvider", 61614, True),
}


def default_server_name() -> str:
    """`host-pid`: unique per process, stable while it runs."""
    return f"{socket.gethostname()}-{os.getpid()}"


def redact(url: str) -> str:
    """The URL with its password replaced by `***` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def create_provider(url: str, server_name: str | None = None) -> Provider:
    """The provider a URL names (see the module docstring for the formats).

    Raises:
        ProviderConfigurationError: unknown scheme, malformed URL or unknown option.
        MissingProviderLibraryError: the provider's client library is not installed.
    """
    name = server_name or default_server_name()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ProviderConfigurationError(
            f"malformed provider URL {redact(url)!r}: {exc}.\n"
            "Hint: amqp://user:password@host:5672 (percent-encode special characters)."
        ) from exc
    if parts.scheme == "local":
        return LocalProvider(name)
    if parts.scheme not in _SCHEMES:
        raise ProviderConfigurationError(
            f"unknown provider scheme {parts.scheme!r} in {redact(url)!r}.\n"
            f"Hint: use one of local://, {', '.join(s + '://' for s in _SCHEMES)}"
        )
    module_name, class_name, default_port, tls = _SCHEMES[parts.scheme]
    provider_class = getattr(importlib.import_module(module_name), class_name)
    options = _options(provider_class, parse_qsl(parts.query, keep_blank_values=True), url)
    if tls:
        options.setdefault("tls", True)
    return provider_class(  # type: ignore[no-any-return]
        name,
        host=parts.hostname or "localhost",
        port=port or default_port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        **options,
    )


def _options(provider_class: type, query: list[tuple[str, str]], url: str) -> dict[str, Any]:
    """Query parameters as keyword options, coerced to the constructor's annotated types."""
    parameters = inspect.signature(provider_class, eval_str=True).parameters
    hints = {n: p.annotation for n, p in parameters.items() if p.annotation is not p.empty}
    allowed = {n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    options: dict[str, Any] = {}
    for key, value in query:
        if key not in allowed:
            raise ProviderConfigurationError(
                f"unknown option {key!r} in provider URL {redact(url)!r}.\n"
                f"Hint: {provider_class.__name__} accepts {', '.join(sorted(allowed))}."
            )
        try:
            options[key] = TypeAdapter(hints.get(key, str)).validate_python(value)
        except ValidationError as exc:
            raise ProviderConfigurationError(
                f"option {key}={value!r} in provider URL {redact(url)!r} is invalid: "
                f"{exc.errors()[0]['msg']}."
            ) from exc
    return options


def __getattr__(name: str) -> Any:
    """`AMQPProvider` and `StompProvider`, imported on first use (their modules are light;
    the client libraries load only when a provider is constructed)."""
    for module_name, class_name, _port, _tls in _SCHEMES.values():
        if class_name == name:
            return getattr(importlib.import_module(module_name), class_name)
    raise AttributeError(name)


__all__ = ["LocalProvider", "create_provider", "default_server_name", "redact"]
