"""The state the STOMP I/O thread shares with stomp.py's receiver thread, and the listener.

`Session` holds, under one condition, the current connection's generation, whether it is alive
and the futures awaiting a RECEIPT (the window of unconfirmed frames). The I/O thread
(`aspyx_event.providers._stomp`) registers receipts and waits for room or for the drain on
stop; stomp.py's receiver thread, through `Listener`, marks the connection alive, completes
receipts and reports ERROR frames and the end of the connection. `open_connection` makes the
stomp.py connection, with our `FrameReader` parsing MESSAGE and RECEIPT frames before stomp.py
sees them; `diagnose` finds out why one could not connect.
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import stomp

from aspyx_event.errors import EventError, ProviderError
from aspyx_event.handoff import hold_wakes, release_wakes
from aspyx_event.providers._stomp_commands import (
    certificate_error,
    fail,
    lost_error,
    tls_files_error,
)
from aspyx_event.providers._stomp_wire import FrameReader, Inbound, LinkHandler, LinkSettings

logger = logging.getLogger(__name__)
RECEIPT_PREFIX = "aspyx-"
"""Starts the id of every receipt the link asks for (stomp.py's own are UUIDs)."""


class Session:
    """Generation, liveness and outstanding receipts of the link's connection (thread-safe)."""

    def __init__(self, settings: LinkSettings, on_lost: Callable[[int], None]) -> None:
        self.settings, self._on_lost = settings, on_lost
        self.cond = threading.Condition()
        self.generation, self.alive, self.refusal = 0, False, ""
        self.receipts: dict[str, Future[None]] = {}
        # a RECEIPT's future is completed outside the lock; its callbacks may queue more frames
        # (an ActiveMQ requeue ACKs the original), which `drain` must wait for too
        self.completing, self.draining = False, False
        self._ids = itertools.count(1)

    def next_generation(self) -> int:
        """A new connection attempt begins: its generation."""
        with self.cond:
            self.generation += 1
            self.refusal = ""
            return self.generation

    def next_receipt_id(self) -> str:
        """A new receipt id (`register` it before its frame is written)."""
        return f"{RECEIPT_PREFIX}{next(self._ids)}"

    def register(self, receipts: dict[str, Future[None]]) -> bool:
        """Track each receipt id's future; False when the connection is already gone."""
        with self.cond:
            if not self.alive:
                return False
            self.receipts.update(receipts)
        return True

    def discard(self, receipts: dict[str, Future[None]]) -> None:
        """Forget receipts whose frames were never (completely) written."""
        with self.cond:
            for receipt_id in receipts:
                self.receipts.pop(receipt_id, None)

    def has_room(self, buffered: int = 0) -> bool:
        """Fewer than ``max_in_flight`` receipts outstanding, counting `buffered` ones not
        registered yet (a hint: no lock taken)."""
        return len(self.receipts) + buffered < self.settings.max_in_flight

    def wait_for_room(self, deadline: Callable[[], float]) -> bool | None:
        """Wait until fewer than ``max_in_flight`` receipts are outstanding or `deadline()`.

        Returns True when there is room, False when the connection is gone, None at the
        deadline (read again after every `wake`).
        """
        with self.cond:
            while len(self.receipts) >= self.settings.max_in_flight and self.alive:
                remaining = deadline() - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)
            return self.alive

    def wake(self) -> None:
        """Wake the waits of the I/O thread (their deadline changed)."""
        with self.cond:
            self.cond.notify_all()

    def drain(self, deadline: float) -> bool:
        """Wait until no receipt is outstanding, nor its future's callbacks still running, or
        until `deadline`; False if the connection died."""
        with self.cond:
            self.draining = True
            remaining = deadline - time.monotonic()
            self.cond.wait_for(
                lambda: (not self.receipts and not self.completing) or not self.alive, remaining
            )
            self.draining = False
            return self.alive

    def wait_closed(self, timeout: float) -> None:
        """Wait until the receiver thread saw the connection end (after DISCONNECT)."""
        with self.cond:
            self.cond.wait_for(lambda: not self.alive, timeout)

    def take_receipts(self) -> list[Future[None]]:
        """Remove and return every outstanding receipt's future (`stop` fails them)."""
        with self.cond:
            taken, self.receipts = list(self.receipts.values()), {}
            self.cond.notify_all()
        return taken

    def mark_alive(self, generation: int) -> None:
        """CONNECTED arrived for `generation`."""
        with self.cond:
            if generation == self.generation:
                self.alive = True

    def lost(self, generation: int, report: bool = True) -> None:
        """The connection of `generation` is gone: fail its unconfirmed frames (any thread)."""
        with self.cond:
            if generation != self.generation or not self.alive:
                return
            self.alive, pending, self.receipts = False, self.receipts, {}
            self.cond.notify_all()
        error = lost_error(self.settings, self.refusal)
        for future in pending.values():
            fail(future, error)
        if report:
            self._on_lost(generation)

    def complete(self, receipt_id: str | None, error: ProviderError | None) -> None:
        """The RECEIPT (or the ERROR) for `receipt_id` arrived (receiver thread)."""
        with self.cond:
            future = self.receipts.pop(receipt_id or "", None)
            self.completing = future is not None
            self.cond.notify_all()
        if future is None:
            return
        if error is not None:
            fail(future, error)
        elif not future.done():
            future.set_result(None)
        self.completing = False
        if self.draining:  # only while `stop` flushes: no extra locking per receipt otherwise
            with self.cond:
                self.cond.notify_all()

    def broker_error(self, generation: int, receipt_id: str | None, text: str) -> None:
        """An ERROR frame: fail the frame it names, else end the connection (STOMP says the
        broker closes it; RabbitMQ may still confirm the refused frame before it does)."""
        logger.error("the STOMP broker at %s sent ERROR: %s", self.settings.address, text)
        if generation != self.generation:
            return
        if receipt_id and receipt_id in self.receipts:
            error = ProviderError(f"the STOMP broker at {self.settings.address} refused: {text}")
            self.complete(receipt_id, error)
        else:
            self.refusal = text
            self.lost(generation)


def _text(body: str | bytes | None) -> str:
    """A frame body as text (stomp.py decodes with errors="replace" already)."""
    return body.decode(errors="replace") if isinstance(body, bytes) else body or ""


class Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """stomp.py's callbacks for one connection (receiver thread); forwards to the session."""

    def __init__(self, session: Session, handler: LinkHandler, generation: int) -> None:
        self.session, self.handler, self.generation = session, handler, generation
        self.ready = threading.Event()
        self.server = ""
        self.connected = False  # CONNECTED arrived

    def on_connected(self, frame: Any) -> None:
        self.server = str(frame.headers.get("server", ""))
        self.session.mark_alive(self.generation)
        self.connected = True
        self.ready.set()

    def on_error(self, frame: Any) -> None:
        self._error(frame.headers, frame.body)

    def _error(self, headers: dict[str, str], body: str | bytes | None) -> None:
        text = " ".join(f"{headers.get('message', '')} {_text(body)}".split())[:300]
        self.session.broker_error(self.generation, headers.get("receipt-id"), text)
        self.ready.set()

    def on_disconnected(self) -> None:
        self.session.lost(self.generation)
        self.ready.set()

    def take(self, command: str, headers: dict[str, str], body: bytes) -> bool:
        """A frame from `FrameReader`: MESSAGE, the RECEIPTs of our frames and, once
        connected, ERROR are handled here, in the order they arrived (an ERROR may precede a
        RECEIPT for the frame it refused); CONNECTED, an ERROR refusing the connection and
        DISCONNECT's RECEIPT are left to stomp.py."""
        if command == "MESSAGE":
            self._message(headers, body)
        elif command == "RECEIPT" and headers.get("receipt-id", "").startswith(RECEIPT_PREFIX):
            self.session.complete(headers["receipt-id"], None)
        elif command == "ERROR" and self.connected:
            self._error(headers, body)
        else:
            return False
        return True

    def _message(self, headers: dict[str, str], body: bytes) -> None:
        if self.generation != self.session.generation:
            return
        sid, ack_id = headers.get("subscription", ""), headers.get("ack", "")
        try:
            text = body.decode(errors="replace")
            self.handler.on_message(Inbound(self.generation, sid, ack_id, headers, text))
        except Exception:
            logger.exception("STOMP delivery of subscription %s failed", sid)


def open_connection(settings: LinkSettings, listener: Listener) -> Any:
    """A `stomp.Connection12` for `settings` reporting to `listener`, not yet connected.

    stomp.py's own reconnecting is off (one attempt, no sleep): the link reconnects itself.
    """
    s, beat = settings, max(settings.heartbeat_ms, 0)
    conn = stomp.Connection12(
        [(s.host, s.port)], prefer_localhost=False, try_loopback_connect=False,
        reconnect_sleep_initial=0.0, reconnect_attempts_max=1, timeout=s.connect_timeout,
        heartbeats=(beat, beat), heart_beat_receive_scale=3.0, vhost=s.vhost,
    )  # fmt: skip  # 3x: a loaded process may read late; 30 s of silence is a dead connection
    if s.tls is not None:
        ca_file, cert_file, key_file = s.tls
        conn.set_ssl(
            for_hosts=[(s.host, s.port)], key_file=key_file, cert_file=cert_file, ca_certs=ca_file
        )
    conn.set_listener("aspyx", listener)
    _read_frames(conn.transport, FrameReader(listener.take))
    return conn


def _read_frames(transport: Any, reader: FrameReader) -> None:
    """Put `reader` between the socket and stomp.py's parser: stomp.py's receiver thread gets
    only the frames the reader leaves, or a lone EOL for a read whose frames were all taken,
    which stomp.py counts as a heart-beat (the connection is alive). `receive` is stomp.py's
    hook for reading the socket; the instance's own is wrapped."""
    receive = transport.receive

    def receive_left() -> bytes | None:
        data: bytes | None = receive()
        if not data:
            return data  # closed (None: a TLS read without application data)
        hold_wakes()  # the event loops awaiting the sends confirmed by this read: woken once
        left = reader.feed(data)
        release_wakes()
        return left or b"\n"

    transport.receive = receive_left


_PROBE_TIMEOUT = 5.0  # seconds: a refusal or a certificate check takes milliseconds


@dataclass(frozen=True, slots=True)
class ConnectProblem:
    """Why a connection attempt failed (`diagnose`).

    Attributes:
        reason: what failed, for the error `start` raises after ``connect_timeout``.
        error: set when retrying cannot help (a certificate that does not verify, a TLS file
            that cannot be loaded); chained to the `ssl` or `OSError` exception.
    """

    reason: str
    error: EventError | None = None


def check_tls_files(settings: LinkSettings) -> ConnectProblem | None:
    """Why the TLS files cannot be loaded, or None (also without TLS). Checked before every
    attempt: stomp.py retries a missing file at once, without pause or limit."""
    try:
        if settings.tls is not None:
            _tls_context(settings)
    except EventError as exc:
        return ConnectProblem(str(exc).split("\n", 1)[0], exc)
    return None


def diagnose(settings: LinkSettings) -> ConnectProblem:
    """Why stomp.py found no connection: its TCP connect and TLS handshake, repeated here.

    stomp.py logs the cause (a WARNING our log filter drops: one per outage is ours) and raises
    a bare ``ConnectFailedException``. Runs only after a failed attempt, so a working connection
    never pays for it. The TLS context is the one stomp.py 8 and 9 build: PROTOCOL_TLS_CLIENT,
    which verifies the chain and the host name.
    """
    try:
        context = None if settings.tls is None else _tls_context(settings)
    except EventError as exc:
        return ConnectProblem(str(exc).split("\n", 1)[0], exc)
    address = (settings.host, settings.port)
    try:
        sock = socket.create_connection(address, min(settings.connect_timeout, _PROBE_TIMEOUT))
    except OSError as exc:
        return ConnectProblem(f"no TCP connection ({exc})")
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=settings.host)
    except ssl.SSLCertVerificationError as exc:
        error = certificate_error(settings, exc.verify_code, exc.verify_message)
        error.__cause__ = exc
        return ConnectProblem(f"TLS certificate rejected ({exc.verify_message})", error)
    except OSError as exc:
        return ConnectProblem(f"TLS handshake failed ({exc}); is {settings.port} a TLS port?")
    finally:
        sock.close()
    return ConnectProblem("no TCP (or TLS) connection, though a check right after got one")


def _tls_context(settings: LinkSettings) -> ssl.SSLContext:
    """stomp.py's TLS context for `settings.tls` (see `diagnose`)."""
    ca_file, cert_file, key_file = settings.tls or (None, None, None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    what = f"ca_file {ca_file!r}" if ca_file else "the system's CA certificates"
    try:
        if ca_file:
            context.load_verify_locations(ca_file)
        else:
            context.load_default_certs()
        what = f"cert_file {cert_file!r} with key_file {key_file!r}"
        if cert_file:
            context.load_cert_chain(cert_file, key_file or cert_file)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise tls_files_error(settings, what, exc) from exc
    return context
