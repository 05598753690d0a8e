"""Private: the write side of the STOMP I/O thread (`Writing`, mixed into `_stomp.StompLink`).

The I/O thread takes the queued commands in order (`_next`) and writes them (`_write`). It
encodes SEND/ACK/NACK frames itself and writes all that queued up with one socket write,
through stomp.py's transport, whose lock keeps stomp.py's heart-beats between whole frames:
before it waits for more commands, for room among the unconfirmed sends (`_await_window`) or
for stop's drain, and whenever ``_WRITE_BATCH`` bytes are buffered. A durable send's receipt is
registered just before its write. When a write fails, the sends of its batch go back to the
front of the parked sends, in order, and are written again after the reconnect (the broker may
have some of them: ``attempted``); buffered settlements are dropped, as the broker redelivers
what they would have settled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from stomp.exception import StompException

from aspyx_event.errors import ProviderConnectionError
from aspyx_event.providers._stomp_commands import (
    Call,
    Command,
    Send,
    Settle,
    Subscribe,
    chain,
    fail,
    timeout_error,
)
from aspyx_event.providers._stomp_session import Session
from aspyx_event.providers._stomp_wire import LinkHandler, LinkSettings, SubscribeSpec, encode_frame

logger = logging.getLogger(__name__)
WRITE_ERRORS = (StompException, OSError, AttributeError)  # AttributeError: socket set to None
LINK_ERRORS = (ProviderConnectionError, *WRITE_ERRORS)
_WRITE_BATCH = 64 * 1024  # bytes of frames buffered before a write (the queue ran dry before)


class OverdueError(Exception):
    """``stop_timeout`` ran out while a send waited for room among unconfirmed sends."""


class Writing:
    """The write side of `StompLink`; `init_writing` sets up its own state, the attributes
    declared below belong to the link."""

    settings: LinkSettings
    _handler: LinkHandler
    _commands: queue.SimpleQueue[Command]
    _session: Session
    _parked: deque[Send]
    _conn: Any
    _subscribed: set[str]
    _stopping: threading.Event
    _stop_deadline: float
    _stop_seen: bool

    def init_writing(self) -> None:
        """Nothing buffered yet."""
        self._out: list[bytes] = []  # frames written by the next `_flush`, in order
        self._out_size = 0
        self._out_sends: list[Send] = []  # the sends among them (parked again if it fails)

    def _subscribe(self, subscription_id: str, spec: SubscribeSpec) -> Future[None]:
        future: Future[None] = Future()
        rid = self._session.next_receipt_id()
        if not self._session.register({rid: future}):
            raise ProviderConnectionError("connection lost")
        self._subscribed.add(subscription_id)
        destination, headers = spec
        self._conn.subscribe(
            destination, subscription_id, "client-individual", {**headers, "receipt": rid}
        )
        return future

    def _next(self) -> Command:
        """The next command; None for stop's marker, or once nothing follows it. Before it
        waits (or reports the end), what was buffered is written."""
        if self._parked:
            return self._parked.popleft()
        try:
            item = self._commands.get_nowait()
        except queue.Empty:
            self._flush()
            return None if self._stop_seen else self._commands.get()
        if item is None:
            self._flush()  # stop's marker: the drain that follows waits for their receipts
        return item

    def _buffer(self, frame: bytes, send: Send | None = None) -> None:
        """Add a frame to the next write (written at once past `_WRITE_BATCH` bytes)."""
        self._out.append(frame)
        self._out_size += len(frame)
        if send is not None:
            self._out_sends.append(send)
        if self._out_size >= _WRITE_BATCH:
            self._flush()

    def _flush(self, behind: Send | None = None) -> None:
        """Write the buffered frames with one socket write, their receipts registered just
        before. If that fails, the sends among them go back to the front of the parked ones
        (then `behind`, a send not buffered yet) and the error is raised."""
        if not self._out:
            return
        data, sends = b"".join(self._out), self._out_sends
        self._out, self._out_size, self._out_sends = [], 0, []
        receipts = {send.receipt_id: send.future for send in sends if send.receipt}
        try:
            if not self._session.register(receipts):
                raise ProviderConnectionError("connection lost")
            try:
                self._conn.transport.send(data)
            except WRITE_ERRORS:
                self._session.discard(receipts)
                for send in sends:
                    send.attempted = True  # part or all of it may have reached the broker
                raise
        except LINK_ERRORS:
            self._park(sends, behind)
            raise
        for send in sends:
            if not send.receipt:
                send.future.set_result(None)

    def _park(self, sends: list[Send], behind: Send | None = None) -> None:
        """Put `sends` (oldest first), then `behind`, in front of the parked sends; one whose
        future is done already (failed as its connection died) is not written again."""
        if behind is not None:
            self._parked.appendleft(behind)
        self._parked.extendleft(send for send in reversed(sends) if not send.future.done())

    def _unbuffer(self) -> None:
        """The connection is gone: park the buffered sends and drop the buffered settlements
        (the broker redelivers what they would have settled)."""
        sends = self._out_sends
        self._out, self._out_size, self._out_sends = [], 0, []
        self._park(sends)

    def _write(self, item: Send | Settle | Subscribe | Call) -> bool:
        """Write one command; False when the connection turned out to be dead."""
        try:
            if isinstance(item, Send):
                return self._write_send(item)
            if isinstance(item, Subscribe):
                self._flush()  # in order: stomp.py writes the SUBSCRIBE itself
                self._write_subscribe(item)
            elif isinstance(item, Call):
                item.run()
            elif item.generation == self._session.generation and self._session.alive:
                if item.nack_headers is None:
                    self._buffer(encode_frame("ACK", {"id": item.ack_id}))
                else:
                    self._buffer(encode_frame("NACK", {"id": item.ack_id, **item.nack_headers}))
        except LINK_ERRORS as exc:
            logger.debug("STOMP write to %s failed: %r", self.settings.address, exc)
            if isinstance(item, Subscribe):
                item.future.set_result(None)  # subscribed again on reconnect
            return False
        return self._session.alive

    def _write_subscribe(self, item: Subscribe) -> None:
        specs = self._handler.subscriptions()
        if item.subscription_id not in specs or self._stopping.is_set():
            item.future.set_result(None)
        elif item.subscription_id not in self._subscribed:
            future = self._subscribe(item.subscription_id, specs[item.subscription_id])
            future.add_done_callback(lambda done: chain(done, item.future))

    def _write_send(self, item: Send) -> bool:
        if not item.claim():
            return True  # cancelled by its caller
        try:
            destination, headers = item.target()
        except Exception as exc:
            fail(item.future, exc)
            return True
        headers = {**item.headers, **headers, "destination": destination}
        if item.receipt:
            if not self._await_window(item):
                return self._session.alive
            headers["receipt"] = item.receipt_id = self._session.next_receipt_id()
        self._buffer(encode_frame("SEND", headers, item.body), item)
        return True

    def _await_window(self, item: Send) -> bool:
        """Wait for room among `max_in_flight` unconfirmed sends; False when not written."""
        if not self._session.has_room(len(self._out_sends)):
            self._flush(behind=item)  # the RECEIPTs that make room are for buffered frames
        room = self._session.wait_for_room(lambda: min(item.deadline, self._stop_deadline))
        if room is None and time.monotonic() >= self._stop_deadline:
            self._parked.appendleft(item)  # failed, and counted, by _shutdown
            raise OverdueError
        if room is None:
            fail(item.future, timeout_error(self.settings, "unconfirmed sends filled the window"))
            return False
        if not room:
            self._parked.appendleft(item)
        return room
