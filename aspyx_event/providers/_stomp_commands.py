"""The commands other threads queue for the STOMP I/O thread, and the errors it reports.

Plain data and message builders for `aspyx_event.providers._stomp`; no thread is started here
and stomp.py is not imported.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from aspyx_event.errors import (
    ProviderConfigurationError,
    ProviderConnectionError,
    ProviderError,
    SendTimeoutError,
)
from aspyx_event.providers._stomp_wire import LinkSettings, Target

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Send:
    """A SEND: its future completes on the RECEIPT (receipt=True) or once written."""

    target: Target
    body: str
    headers: dict[str, str]
    receipt: bool
    future: Future[None]
    deadline: float  # monotonic; ``send_timeout`` after it was accepted
    claimed: bool = False
    attempted: bool = False  # a write of it failed half-way: the broker may have it
    receipt_id: str = ""  # of its current write, when it asked for a receipt

    def claim(self) -> bool:
        """Mark the future running once; False when its caller cancelled it."""
        if self.claimed:
            return True
        self.claimed = True
        return self.future.set_running_or_notify_cancel()


@dataclass(frozen=True, slots=True)
class Settle:
    """An ACK (nack_headers None) or a NACK of a delivery of connection `generation`."""

    generation: int
    ack_id: str
    nack_headers: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A SUBSCRIBE of a member added after `start`."""

    subscription_id: str
    future: Future[None]


@dataclass(frozen=True, slots=True)
class Lost:
    """The receiver thread saw connection `generation` end."""

    generation: int


@dataclass(frozen=True, slots=True)
class Call:
    """Work to run on the I/O thread (`StompLink.call_soon`)."""

    function: Callable[[], None]

    def run(self) -> None:
        """Run it; a failure is logged, never raised into the I/O loop."""
        try:
            self.function()
        except Exception:
            logger.exception("work queued for the STOMP I/O thread failed")


Command = Send | Settle | Subscribe | Lost | Call | None
"""What the I/O thread takes from its queue; None is `stop`'s marker."""


def take_sends(commands: queue.SimpleQueue[Command]) -> list[Future[None]]:
    """Empty `commands` at shutdown: the futures of its sends (a subscription completes,
    since the next start subscribes everything; settlements and work are dropped)."""
    futures: list[Future[None]] = []
    with contextlib.suppress(queue.Empty):
        while True:
            item = commands.get_nowait()
            if isinstance(item, Send):
                futures.append(item.future)
            elif isinstance(item, Subscribe):
                item.future.set_result(None)
    return futures


def fail(future: Future[None], error: BaseException) -> None:
    """Fail `future` unless it is done already."""
    if not future.done():
        future.set_exception(error)


def chain(source: Future[None], target: Future[None]) -> None:
    """Complete a subscription's `target` like `source`; a lost connection subscribes again."""
    error = source.exception()
    if error is None or isinstance(error, ProviderConnectionError):
        target.set_result(None)
    else:
        target.set_exception(error)


def connect_error(settings: LinkSettings, reason: str) -> ProviderConnectionError:
    """`start` found no connection within ``connect_timeout``."""
    return ProviderConnectionError(
        f"could not connect to the STOMP broker at {settings.address} within "
        f"{settings.connect_timeout:g} s: {reason}\nHint: check that the broker is running and "
        "that its STOMP port, user, password and vhost are right, or raise connect_timeout."
    )


def not_started_error(settings: LinkSettings) -> ProviderConnectionError:
    """A send before `start` or after `stop`."""
    return ProviderConnectionError(
        f"the STOMP provider for {settings.address} is not started (or was stopped); the "
        "message was NOT sent.\nHint: start() it first, and stop() it only after the last send."
    )


_NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


def certificate_error(settings: LinkSettings, code: int, why: str) -> ProviderConnectionError:
    """The broker's TLS certificate did not verify (OpenSSL's verify `code` and message)."""
    ca_file = settings.tls[0] if settings.tls else None
    if code in _NAME_MISMATCH:
        hint = (
            "connect with a host name or IP address that the broker's certificate lists (its "
            f"subjectAltName), or give the broker a certificate for {settings.host!r}"
        )
    elif code == _EXPIRED:
        hint = "renew the broker's certificate (or correct this machine's clock)"
    else:
        trusted = f"ca_file ({ca_file})" if ca_file else "the system's CAs (no ca_file given)"
        hint = f"{trusted} must hold the CA that signed the broker's certificate"
    return ProviderConnectionError(
        f"the STOMP broker at {settings.address} presented a TLS certificate that does not "
        f"verify: {why.rstrip('.')}.\nHint: {hint}."
    )


def tls_files_error(
    settings: LinkSettings, what: str, error: OSError
) -> ProviderConfigurationError:
    """A TLS file given to the provider could not be loaded."""
    return ProviderConfigurationError(
        f"cannot load {what} for TLS to the STOMP broker at {settings.address}: {error}.\n"
        "Hint: ca_file, cert_file and key_file must name readable PEM files, key_file the "
        "private key of cert_file."
    )


def timeout_error(settings: LinkSettings, why: str, attempted: bool = False) -> SendTimeoutError:
    """A send that found no connection or no room within ``send_timeout``."""
    outcome = (
        "an earlier attempt to write it broke off with the connection, so the broker may "
        "have it anyway"
        if attempted
        else "it was NOT sent"
    )
    return SendTimeoutError(
        f"the STOMP broker at {settings.address} did not take the message within "
        f"{settings.send_timeout:g} s ({why}); {outcome}.\nHint: check that the "
        "broker is running and reachable, or raise send_timeout to ride out longer outages."
    )


def stopped_error(settings: LinkSettings, outcome: str) -> ProviderError:
    """A send still unsent or unconfirmed when `stop` ended."""
    return ProviderError(
        f"the STOMP provider for {settings.address} stopped; the message was {outcome}.\n"
        "Hint: wait for the futures of important sends before stop(), or raise stop_timeout."
    )


def lost_error(settings: LinkSettings, refusal: str) -> ProviderError:
    """A frame whose RECEIPT never came because the connection ended."""
    if refusal:
        return ProviderError(f"the STOMP broker at {settings.address} refused: {refusal}")
    return ProviderConnectionError(
        f"the connection to the STOMP broker at {settings.address} was lost before the "
        "broker confirmed the message; it may or may not have been stored.\n"
        "Hint: send it again (delivery is at least once)."
    )


def fail_leftovers(
    settings: LinkSettings,
    unsent: list[Future[None]],
    unconfirmed: list[Future[None]],
    report: bool,
) -> None:
    """Fail the sends `stop` could not flush; log their count once (when `report`)."""
    failed = [f for f in unsent + unconfirmed if not f.done()]
    for future in unsent:
        fail(future, stopped_error(settings, "NOT sent"))
    for future in unconfirmed:
        fail(future, stopped_error(settings, "sent, but not confirmed"))
    if failed and report:
        logger.warning(
            "stopped the STOMP provider for %s: %d send(s) not flushed within "
            "stop_timeout=%g s failed", settings.address, len(failed), settings.stop_timeout,
        )  # fmt: skip


_PASSCODE = re.compile(r"passcode:.*?(?=\\n['\"]|$)")  # up to the end of its repr'd frame line


class StompLogFilter(logging.Filter):
    """Drops stomp.py's per-attempt connect warnings (we log once per outage) and masks the
    passcode its DEBUG frame dumps show (its own mask expects a space after the colon)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless it is a connect warning; mask passcodes in its arguments."""
        if str(record.msg).startswith("could not connect to host"):
            return False
        if isinstance(record.args, tuple) and any("passcode" in str(a) for a in record.args):
            record.args = tuple(_PASSCODE.sub("passcode:********", str(a)) for a in record.args)
        return True


def install_log_filter() -> None:
    """Put one `StompLogFilter` on stomp.py's logger (idempotent)."""
    stomp_logger = logging.getLogger("stomp.py")
    if not any(isinstance(f, StompLogFilter) for f in stomp_logger.filters):
        stomp_logger.addFilter(StompLogFilter())
