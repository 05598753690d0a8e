"""Private bridge between stomp.py's threads and `StompProvider`: the STOMP I/O thread.

One thread of ours, ``aspyx-stomp-io``, is the only caller of the `stomp.Connection12`: it
connects with exponential backoff, subscribes, writes SEND/ACK/NACK frames, runs
`StompLink.call_soon` work and disconnects. Other threads reach it only through a command queue
(`_stomp_commands`) and learn results through futures. How it writes (its own frames, many
per socket write) is in `_stomp_writing`.
stomp.py's receiver thread, through `_stomp_session`, completes receipts, hands MESSAGE frames
to the handler and reports a lost connection; its heart-beat thread drops a silent one.
stomp.py reports a failed attempt without its cause, so `_stomp_session.diagnose` repeats the
TCP connect and TLS handshake to name it; a certificate that does not verify, or a TLS file
that cannot be loaded, ends `start` at once instead of being retried (after `start`, it is
logged once and retried like a lost network). Each connection has a generation: settlements
and reports naming an older one are ignored (settling a delivery of a dropped connection is a
no-op).

`StompLink.stop` queues a marker behind every send accepted so far. The I/O thread keeps
writing (reconnecting if it must, without subscribing) until it took the marker, nothing is
parked, no RECEIPT is outstanding and the ACKs those RECEIPTs released are written, or until
``stop_timeout`` ran out; then it fails what is left, logs their count once and DISCONNECTs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from stomp.exception import ConnectFailedException

from aspyx_event.errors import (
    EventError,
    ProviderConfigurationError,
    ProviderConnectionError,
    ProviderError,
)
from aspyx_event.providers._stomp_commands import (
    Call,
    Command,
    Lost,
    Send,
    Settle,
    Subscribe,
    connect_error,
    fail,
    fail_leftovers,
    install_log_filter,
    not_started_error,
    take_sends,
    timeout_error,
)
from aspyx_event.providers._stomp_session import (
    ConnectProblem,
    Listener,
    Session,
    check_tls_files,
    diagnose,
    open_connection,
)
from aspyx_event.providers._stomp_wire import LinkHandler, LinkSettings, Target
from aspyx_event.providers._stomp_writing import (
    LINK_ERRORS,
    WRITE_ERRORS,
    OverdueError,
    Writing,
)

logger = logging.getLogger(__name__)
install_log_filter()


class StompLink(Writing):
    """One logical STOMP connection that reconnects by itself; see the module docstring."""

    def __init__(self, settings: LinkSettings, handler: LinkHandler) -> None:
        self.settings, self._handler = settings, handler
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._session = Session(settings, lambda generation: self._commands.put(Lost(generation)))
        self._parked: deque[Send] = deque()  # sends waiting for a connection, oldest first
        self._lock = threading.Lock()  # orders `_running` with the commands it admits
        self._running = False
        self._conn: Any = None
        self.init_writing()
        self._subscribed: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping, self._outcome = threading.Event(), threading.Event()
        self._stop_deadline, self._stop_seen = math.inf, False
        self._failure = "no attempt finished"
        self._fatal: EventError | None = None  # `start` raises it: retrying cannot help
        self._outage_since: float | None = None

    @property
    def generation(self) -> int:
        """The current connection's generation (deliveries remember theirs)."""
        return self._session.generation

    def start(self) -> None:
        """Start the I/O thread and block until connected and subscribed, or raise."""
        with self._lock:
            if self._running:
                return
            self._running, self._fatal = True, None
            self._stopping.clear()
            self._outcome.clear()
            self._stop_deadline, self._stop_seen = math.inf, False
        self._thread = threading.Thread(target=self._run, name="aspyx-stomp-io", daemon=True)
        self._thread.start()
        if (
            self._outcome.wait(self.settings.connect_timeout)
            and self._fatal is None
            and self._session.alive
        ):
            return
        fatal, reason = self._fatal, self._failure
        self._halt(flush=0.0)
        if fatal is not None:
            raise fatal
        raise connect_error(self.settings, reason)

    def stop(self) -> None:
        """Flush what was accepted (up to ``stop_timeout``), DISCONNECT, join the I/O thread."""
        self._halt(flush=self.settings.stop_timeout)

    def _halt(self, flush: float) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False  # from now on send() fails at once
            self._stop_deadline = time.monotonic() + flush
            self._stopping.set()
            self._commands.put(None)  # behind every accepted send
        self._session.wake()  # a send waiting for room sees the deadline
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(flush + self.settings.connect_timeout + 5.0)

    def send(
        self, target: Target, body: str, headers: dict[str, str], receipt: bool
    ) -> Future[None]:
        """Queue a SEND; the future completes on its RECEIPT (receipt=True) or once written."""
        future: Future[None] = Future()
        with self._lock:
            if self._running:
                deadline = time.monotonic() + self.settings.send_timeout
                self._commands.put(Send(target, body, headers, receipt, future, deadline))
                return future
        fail(future, not_started_error(self.settings))
        return future

    def settle(self, generation: int, ack_id: str, nack_headers: dict[str, str] | None) -> None:
        """Queue an ACK (nack_headers None) or a NACK; a no-op unless `generation` is current."""
        self._commands.put(Settle(generation, ack_id, nack_headers))

    def call_soon(self, function: Callable[[], None]) -> None:
        """Run `function()` on the I/O thread after the commands queued before it."""
        self._commands.put(Call(function))

    def add_subscription(self, subscription_id: str) -> Future[None]:
        """SUBSCRIBE now if connected; the future completes on the broker's RECEIPT."""
        future: Future[None] = Future()
        with self._lock:
            if self._running:
                self._commands.put(Subscribe(subscription_id, future))
                return future
        future.set_result(None)  # subscribed by start()
        return future

    def _run(self) -> None:
        delay = self.settings.reconnect_delay
        try:
            while not self._finished():
                if self._conn is not None:
                    self._serve()
                elif self._connect():
                    delay = self.settings.reconnect_delay
                else:
                    self._idle(delay)
                    delay = min(delay * 2, self.settings.reconnect_max_delay)
        except Exception:
            logger.exception("the STOMP I/O thread for %s failed", self.settings.address)
        finally:
            self._shutdown()

    def _finished(self) -> bool:
        """Stopping, and flushed, out of time or misconfigured."""
        if not self._stopping.is_set():
            return False
        if self._fatal is not None or time.monotonic() >= self._stop_deadline:
            return True
        return self._stop_seen and not self._parked and not self._session.receipts

    def _connect(self) -> bool:
        s, session = self.settings, self._session
        unusable = check_tls_files(s)
        if unusable is not None:
            return self._failed(None, unusable)
        listener = Listener(session, self._handler, session.next_generation())
        conn = open_connection(self.settings, listener)
        try:
            conn.connect(s.user or None, s.password or None, wait=False)
            _no_delay(conn)
            if not listener.ready.wait(s.connect_timeout) or not session.alive:
                raise ProviderConnectionError(session.refusal or "no CONNECTED frame")
            self._handler.on_connected(listener.server)
            self._conn = conn
            if not self._stopping.is_set():  # a reconnect while flushing only writes
                self._subscribe_all()
        except ProviderConfigurationError as exc:
            self._fatal = exc
            self._stopping.set()
            return self._abandon(conn, str(exc))
        except ConnectFailedException:  # stomp.py logged why, and our log filter dropped it
            return self._failed(conn, diagnose(s))
        except (ProviderError, *WRITE_ERRORS) as exc:
            return self._abandon(conn, str(exc) or "no TCP (or TLS) connection")
        if self._outage_since is not None:
            logger.info(
                "reconnected to the STOMP broker at %s after %.1f s; %d subscriptions restored",
                s.address, time.monotonic() - self._outage_since, len(self._subscribed),
            )  # fmt: skip
        self._outage_since = None
        self._outcome.set()
        return True

    def _failed(self, conn: Any, problem: ConnectProblem) -> bool:
        """No connection. A certificate or TLS file problem ends a `start` at once; later
        (reconnecting) it is logged once and retried, as someone may fix it meanwhile."""
        if problem.error is not None:
            if not self._outcome.is_set():  # start() is waiting for the first connection
                self._fatal = problem.error
                self._stopping.set()
            elif problem.reason != self._failure:
                logger.error("cannot reconnect to the STOMP broker: %s", problem.error)
        return self._abandon(conn, problem.reason)

    def _abandon(self, conn: Any, reason: str) -> bool:
        self._failure, self._conn = reason, None
        logger.debug("STOMP connection attempt to %s failed: %s", self.settings.address, reason)
        if conn is not None:
            self._close(conn, alive=False)
        if self._fatal is not None:
            self._outcome.set()
        return False

    def _subscribe_all(self) -> None:
        self._subscribed.clear()
        specs = self._handler.subscriptions()
        pending = [(sid, self._subscribe(sid, spec)) for sid, spec in specs.items()]
        end = time.monotonic() + self.settings.connect_timeout
        for sid, future in pending:
            try:
                future.result(max(end - time.monotonic(), 0.0))
            except ProviderConnectionError:
                raise
            except ProviderError as exc:  # the first unconfirmed SUBSCRIBE is the refused one
                self._handler.refused(sid, exc)
                raise

    def _serve(self) -> None:
        """Write commands until the connection is lost or the stop is flushed (or overdue)."""
        while True:
            try:
                item = self._next()
            except LINK_ERRORS as exc:
                logger.debug("STOMP write to %s failed: %r", self.settings.address, exc)
                self._lose()
                return
            if item is None:
                self._stop_seen = True
                if not self._session.drain(self._stop_deadline):
                    self._lose()
                    return
                if self._commands.empty() or time.monotonic() >= self._stop_deadline:
                    return
                continue  # the RECEIPTs released ACKs (ActiveMQ requeues): write them too
            if isinstance(item, Lost):
                if item.generation != self._session.generation:
                    continue
            else:
                try:
                    if self._write(item):
                        continue
                except OverdueError:
                    return
            self._lose()
            return

    def _idle(self, delay: float) -> None:
        """Back off before the next attempt, parking sends and failing the overdue ones."""
        end = min(time.monotonic() + delay, self._stop_deadline)
        while True:
            now = time.monotonic()
            while self._parked and self._parked[0].deadline <= now:
                overdue = self._parked.popleft()
                error = timeout_error(self.settings, "no connection", overdue.attempted)
                fail(overdue.future, error)
            if now >= end or (self._stop_seen and not self._parked):
                return
            wake = min(end, self._parked[0].deadline) if self._parked else end
            try:
                item = self._commands.get(timeout=wake - now)
            except queue.Empty:
                continue
            if item is None:
                self._stop_seen = True
            elif isinstance(item, Send):
                if item.claim():
                    self._parked.append(item)
            elif isinstance(item, Subscribe):
                item.future.set_result(None)  # subscribed on connect
            elif isinstance(item, Call):
                item.run()

    def _lose(self) -> None:
        self._unbuffer()
        conn, self._conn = self._conn, None
        self._close(conn, alive=False)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "lost the connection to the STOMP broker at %s; reconnecting", self.settings.address
            )

    def _close(self, conn: Any, alive: bool) -> None:
        if alive:  # DISCONNECT carries a receipt; stomp.py closes the socket when it arrives
            with contextlib.suppress(*WRITE_ERRORS):
                conn.disconnect()
            remaining = min(self._stop_deadline - time.monotonic(), self.settings.stop_timeout)
            self._session.wait_closed(max(remaining, 1.0))  # lets the broker take what we wrote
        self._session.lost(self._session.generation, report=False)
        with contextlib.suppress(*WRITE_ERRORS):
            conn.transport.disconnect_socket()
        for thread in (conn.transport.io_thread, getattr(conn, "heartbeat_thread", None)):
            if thread is not None and thread is not threading.current_thread():
                thread.join(2.0)

    def _shutdown(self) -> None:
        with self._lock:
            self._running = False
        self._unbuffer()
        unsent = [send.future for send in self._parked] + take_sends(self._commands)
        self._parked.clear()
        fail_leftovers(self.settings, unsent, self._session.take_receipts(), self._fatal is None)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._close(conn, alive=self._session.alive)
        self._outcome.set()


def _no_delay(conn: Any) -> None:
    """Turn Nagle's algorithm off: small frames (acks, receipts) must not wait ~40 ms for more
    data to coalesce with (measured: p50 latency 30 ms with it, under 1 ms without)."""
    with contextlib.suppress(OSError, AttributeError):  # the socket exists once connect() ran
        conn.transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
