"""Private: declares a group's queues through RabbitMQ's management HTTP API.

RabbitMQ's AMQP 1.0 plugin (3.x) cannot create a named queue bound to an exchange, so
`RabbitMQStrategy.declare` asks the management API (standard library only, no proton: this
runs on the provider's worker thread, never on the AMQP I/O thread).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import quote

from aspyx_event.errors import ProviderConnectionError, ProviderError
from aspyx_event.provider import Subscription

if TYPE_CHECKING:
    from aspyx_event.providers.amqp import BrokerAccess


def declare_group_queue(access: BrokerAccess, subscription: Subscription) -> None:
    """Declare the group's queues (idempotent).

    A group: the durable queue `E::G`, bound to ``amq.topic`` with key `E`, and its
    dead-letter queue `E::G.dlq`. A dead-letter subscription: only the dead-letter queue. A
    dead-letter queue is durable, unbound (only `send_to_queue` reaches it) and never
    expires; a per-process group's queue gets ``x-expires`` = `access.per_process_expiry`.

    Raises:
        ProviderConnectionError: the API is unreachable or the broker is starting (retry).
        ProviderError: the API refused the request (credentials, conflicting queue) or its
            TLS certificate.
    """
    dead_letters = subscription.dead_letter()
    if not subscription.dead_letters:
        arguments: dict[str, int] = {}
        if subscription.per_process:
            arguments["x-expires"] = max(1, int(access.per_process_expiry * 1000))
        queue = quote(subscription.queue, safe="")
        _request(access, "PUT", f"/api/queues/%2F/{queue}", _durable(arguments))
        _request(
            access,
            "POST",
            f"/api/bindings/%2F/e/amq.topic/q/{queue}",
            {"routing_key": subscription.event, "arguments": {}},
        )
    _request(access, "PUT", f"/api/queues/%2F/{quote(dead_letters.queue, safe='')}", _durable({}))


def ensure_queue(access: BrokerAccess, subscription: Subscription) -> None:
    """Declare the subscription's queue (see `declare_group_queue`) unless it exists.

    An existing queue is used as it is, whatever its arguments: the sender need not know
    whether a group is per-process to put a message into its queue.

    Raises:
        ProviderConnectionError: the API is unreachable or the broker is starting (retry).
        ProviderError: the API refused the request or its TLS certificate.
    """
    try:
        _request(access, "GET", f"/api/queues/%2F/{quote(subscription.queue, safe='')}")
    except _NotFoundError:
        declare_group_queue(access, subscription)


def _durable(arguments: dict[str, int]) -> dict[str, object]:
    return {"durable": True, "auto_delete": False, "arguments": arguments}


class _NotFoundError(ProviderConnectionError):
    """HTTP 404: the resource is missing, or the broker is still starting."""


def _request(
    access: BrokerAccess, method: str, path: str, body: dict[str, object] | None = None
) -> None:
    scheme = "https" if access.ssl_context else "http"
    host = f"[{access.host}]" if ":" in access.host else access.host
    url = f"{scheme}://{host}:{access.management_port}{path}"
    credentials = f"{access.user or 'guest'}:{access.password if access.user else 'guest'}"
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=access.timeout, context=access.ssl_context):
            pass
    except urllib.error.HTTPError as exc:
        raise _management_error(method, url, exc) from exc
    except OSError as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ProviderError(
                f"the certificate of RabbitMQ's management API at {url} was not accepted: "
                f"{reason.verify_message}.\nHint: check ca_file / verify_hostname / the "
                "certificate's names."
            ) from exc
        raise ProviderConnectionError(
            f"RabbitMQ's management API at {url} is unreachable: {exc}.\n"
            "Hint: enable the rabbitmq_management plugin, or set management_port."
        ) from exc


def _management_error(method: str, url: str, exc: urllib.error.HTTPError) -> ProviderError:
    detail = exc.read().decode("utf-8", "replace").strip()
    message = f"RabbitMQ's management API refused {method} {url}: HTTP {exc.code} {detail}"
    if exc.code in (401, 403):
        return ProviderError(
            f"{message}\nHint: the AMQP user needs the 'management' tag and configure "
            "permission on the virtual host '/'."
        )
    if exc.code == 404:
        return _NotFoundError(f"{message}\nHint: the broker may still be starting.")
    if exc.code >= 500:
        return ProviderConnectionError(f"{message}\nHint: the broker may still be starting.")
    return ProviderError(
        f"{message}\nHint: the queue exists with other arguments (durable, x-expires); "
        "delete it or use the same settings in every process."
    )
