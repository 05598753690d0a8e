"""Idempotent consumers: remember which message ids a listener group has already processed.

Brokers deliver at least once: a message comes again when its consumer died before the
acknowledgement, and a producer that retries a send may put the same message id on the wire
twice. For a listener group with idempotency on, the dispatcher asks an `IdempotencyStore`
first: it *claims* the message id, runs the listener, then *completes* the id (or *releases*
it when the listener failed), and acknowledges only after that. A duplicate then finds the id
completed and is acknowledged without running the listener again.

Two stores ship:

* `InMemoryIdempotencyStore`: one process, lost on restart, bounded memory. For tests, the
  local provider and duplicates that arrive while the process lives.
* `SQLiteIdempotencyStore`: one file, shared by the processes of one host and kept across
  restarts (sqlite3 from the standard library, WAL mode).

Guarantees and limits (both stores): a duplicate is skipped while its id is remembered, that
is for `retention` seconds after completion (and, in memory, until evicted by newer ids). A
claim whose owner died expires after `claim_timeout` seconds so that a redelivery can run it;
choose it longer than the slowest listener run, or a duplicate may start while the first run
still works. Idempotency decides *whether* a listener runs; it does not undo the side effects
of a run that failed half-way. Times come from `clock` (wall-clock seconds by default, since
they must mean the same after a restart and in another process).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import EventError

logger = logging.getLogger(__name__)

DEFAULT_RETENTION = 7 * 24 * 3600.0
"""Seconds a completed message id is remembered (one week)."""
DEFAULT_CLAIM_TIMEOUT = 300.0
"""Seconds after which a claim that was neither completed nor released is given up."""
DEFAULT_PURGE_INTERVAL = 60.0
"""Seconds between two purges of forgotten entries, run by the next call that follows."""
_OPEN_RETRY_DELAY = 0.01  # seconds between attempts to open a file other processes are creating


class IdempotencyArgumentError(EventError, TypeError, ValueError):
    """A group, message id or store option has the wrong type or value.

    It is both a `TypeError` and a `ValueError`, so either generic handler catches it.
    """

    def __init__(self, name: str, value: object, expected: str, hint: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        super().__init__(f"{name} must be {expected}, got {value!r}.\nHint: {hint}")


class IdempotencyStoreError(EventError, OSError):
    """The store cannot be opened or used: a missing directory, a locked or broken database
    file, or a store that was already closed. Database errors are chained as the cause."""

    def __init__(self, store: str, what: str, hint: str) -> None:
        self.store = store
        self.what = what
        super().__init__(f"idempotency store {store}: {what}\nHint: {hint}")


class IdempotencyStore(ABC):
    """Remembers, per listener group, which message ids are being or have been processed.

    Contract (every implementation, enforced by tests/unit/test_idempotency.py):

    * `claim` is atomic: of any number of concurrent claims of one (group, id), from any
      thread or (for shared stores) any process, at most one returns True.
    * An id is *claimed* from a successful `claim` until `complete`, `release` or
      `claim_timeout` seconds have passed; while claimed, `claim` returns False.
    * A *completed* id is remembered for `retention` seconds: `claim` returns False and
      `seen` True. `complete` works without a prior claim and refreshes the retention.
    * `release` forgets a claim (the processing failed, a redelivery may run it); it never
      forgets a completed id, and releasing an unknown id does nothing.
    * Groups are independent: the same id may be claimed once in every group.
    * Group and message id are non-empty strings, else `IdempotencyArgumentError`; storage
      failures and calls after `close` raise `IdempotencyStoreError`.
    * All methods are thread-safe and block briefly (they are not coroutines).

    The dispatcher's recipe for one delivery::

        if not store.claim(group, message_id):
            if store.seen(group, message_id):
                delivery.ack()                  # a duplicate of processed work
            else:
                delivery.reject(requeue=True)   # another member is processing it now
            return
        try:
            run_listener()
        except Exception:
            store.release(group, message_id)
            delivery.reject(requeue=True)
        else:
            store.complete(group, message_id)
            delivery.ack()
    """

    @abstractmethod
    def claim(self, group: str, message_id: str) -> bool:
        """Take ownership of an id before processing it.

        Returns:
            True when the caller now owns the id: it is not completed and not claimed by a live
            owner. False when it was completed, or is claimed and the claim has not expired.
        """

    @abstractmethod
    def complete(self, group: str, message_id: str) -> None:
        """Record that the id was processed: it is remembered for `retention` seconds."""

    @abstractmethod
    def release(self, group: str, message_id: str) -> None:
        """Forget the claim on an id whose processing failed, so a redelivery may run it."""

    @abstractmethod
    def seen(self, group: str, message_id: str) -> bool:
        """True when the id was completed and is still remembered (a mere claim is not seen)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources; further calls raise. Closing twice does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_KEY_HINT = "pass the listener group's name and the delivery's Envelope.message_id"


def _key(group: object, message_id: object) -> tuple[str, str]:
    if not isinstance(group, str) or not group:
        raise IdempotencyArgumentError("group", group, "a non-empty str", _KEY_HINT)
    if not isinstance(message_id, str) or not message_id:
        raise IdempotencyArgumentError("message_id", message_id, "a non-empty str", _KEY_HINT)
    return group, message_id


def _positive(name: str, value: object, kind: type[int] | type[float] = float) -> float:
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed) or not value > 0:
        raise IdempotencyArgumentError(
            name, value, f"a positive {kind.__name__}", f"leave {name} out to use its default"
        )
    return value


class _TimedStore(IdempotencyStore):
    """Shared by the stores: options, clock, the closed flag and the purge schedule.

    Subclasses call `_tick` with their lock held at the start of every operation.
    """

    def __init__(
        self,
        name: str,
        retention: float,
        claim_timeout: float,
        purge_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._name = name
        self._retention = _positive("retention", retention)
        self._claim_timeout = _positive("claim_timeout", claim_timeout)
        self._purge_interval = _positive("purge_interval", purge_interval)
        self._clock = clock
        self._next_purge = float("-inf")
        self._closed = False
        self._lock = threading.Lock()

    def purge(self) -> int:
        """Drop forgotten entries (completed beyond `retention`, claims beyond `claim_timeout`).

        Runs by itself every `purge_interval` seconds; call it to free space at once.

        Returns:
            The number of entries removed.
        """
        with self._lock:
            now = self._tick(purge=False)
            return self._purge_locked(now)

    def _tick(self, purge: bool = True) -> float:
        if self._closed:
            raise IdempotencyStoreError(
                self._name, "it is closed", "create a new store; close() only at shutdown"
            )
        now = self._clock()
        if purge and now >= self._next_purge:
            self._next_purge = now + self._purge_interval
            self._purge_locked(now)
        return now

    @abstractmethod
    def _purge_locked(self, now: float) -> int: ...


class InMemoryIdempotencyStore(_TimedStore):
    """A process-local store behind one lock, with bounded memory.

    At most `max_entries` completed ids are kept; beyond that the oldest completions are
    evicted first, so an id evicted before its `retention` ended is no longer recognised and a
    very late duplicate of it would run again. Open claims are not evicted (there are only as
    many as deliveries in flight).

    Example:
        >>> store = InMemoryIdempotencyStore(max_entries=1000)
        >>> store.claim("billing", "msg-1")
        True
        >>> store.claim("billing", "msg-1")  # claimed by a live owner
        False
        >>> store.complete("billing", "msg-1")
        >>> store.seen("billing", "msg-1"), store.claim("billing", "msg-1")
        (True, False)
        >>> store.claim("audit", "msg-1")  # another group
        True
        >>> store.close()
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        retention: float = DEFAULT_RETENTION,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        *,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("<memory>", retention, claim_timeout, purge_interval, clock)
        self._max_entries = int(_positive("max_entries", max_entries, int))
        self._claims: dict[tuple[str, str], float] = {}
        self._completed: OrderedDict[tuple[str, str], float] = OrderedDict()

    def claim(self, group: str, message_id: str) -> bool:
        key = _key(group, message_id)
        with self._lock:
            now = self._tick()
            completed_at = self._completed.get(key)
            if completed_at is not None and completed_at > now - self._retention:
                return False
            claimed_at = self._claims.get(key)
            if claimed_at is not None and claimed_at > now - self._claim_timeout:
                return False
            self._claims[key] = now
            return True

    def complete(self, group: str, message_id: str) -> None:
        key = _key(group, message_id)
        with self._lock:
            now = self._tick()
            self._claims.pop(key, None)
            self._completed[key] = now
            self._completed.move_to_end(key)
            while len(self._completed) > self._max_entries:
                self._completed.popitem(last=False)

    def release(self, group: str, message_id: str) -> None:
        key = _key(group, message_id)
        with self._lock:
            self._tick()
            self._claims.pop(key, None)

    def seen(self, group: str, message_id: str) -> bool:
        key = _key(group, message_id)
        with self._lock:
            now = self._tick()
            completed_at = self._completed.get(key)
            return completed_at is not None and completed_at > now - self._retention

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._claims.clear()
            self._completed.clear()

    def _purge_locked(self, now: float) -> int:
        forgotten = now - self._retention
        # completions are kept in completion order: the expired ones are at the front
        count = 0
        while self._completed and next(iter(self._completed.values())) <= forgotten:
            self._completed.popitem(last=False)
            count += 1
        expired = now - self._claim_timeout
        stale = [key for key, claimed_at in self._claims.items() if claimed_at <= expired]
        for key in stale:
            del self._claims[key]
        return count + len(stale)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS aspyx_idempotency (
    group_name TEXT NOT NULL,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('claimed', 'completed')),
    at REAL NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (group_name, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aspyx_idempotency_expiry ON aspyx_idempotency (state, at);
"""
# One statement, so atomic across connections: it inserts a new claim or takes over a row whose
# claim expired or whose completion was forgotten; any other existing row leaves rowcount at 0.
_CLAIM = """
INSERT INTO aspyx_idempotency (group_name, message_id, state, at, owner)
VALUES (:group, :id, 'claimed', :now, :owner)
ON CONFLICT (group_name, message_id) DO UPDATE
SET state = 'claimed', at = excluded.at, owner = excluded.owner
WHERE (state = 'claimed' AND at <= :expired) OR (state = 'completed' AND at <= :forgotten)
"""
_COMPLETE = """
INSERT INTO aspyx_idempotency (group_name, message_id, state, at, owner)
VALUES (:group, :id, 'completed', :now, :owner)
ON CONFLICT (group_name, message_id) DO UPDATE
SET state = 'completed', at = excluded.at, owner = excluded.owner
"""
_RELEASE = """
DELETE FROM aspyx_idempotency
WHERE group_name = :group AND message_id = :id AND state = 'claimed' AND owner = :owner
"""
_SEEN = """
SELECT 1 FROM aspyx_idempotency
WHERE group_name = :group AND message_id = :id AND state = 'completed' AND at > :forgotten
"""
_PURGE = "DELETE FROM aspyx_idempotency WHERE state = :state AND at <= :before"


class SQLiteIdempotencyStore(_TimedStore):
    """A durable store in one SQLite file, shared by the processes of one host.

    Every operation is one SQL statement in autocommit mode, so a claim is atomic across
    processes: SQLite serialises writers, and the loser of a race finds the row and gets False.
    The file runs in WAL mode with `synchronous=NORMAL`: a commit survives a crash of the
    process; a power loss may lose the last commits (an id then runs again: at-least-once).
    Waits for another process's write lock up to `busy_timeout` seconds, then raises
    `IdempotencyStoreError`. Do not put the file on a network file system.

    One connection (`check_same_thread=False`) serves all threads behind a lock: SQLite admits
    one writer at a time anyway, a mutex hands over faster than SQLite's sleeping busy handler
    would between per-thread connections, and `close` can close it from any thread.

    `release` forgets only claims made through this store object: if a claim expired and
    another process took the id over, a late release of the first owner leaves it alone.

    Example:
        >>> store = SQLiteIdempotencyStore(":memory:")  # a file path in production
        >>> store.claim("billing", "msg-1"), store.claim("billing", "msg-1")
        (True, False)
        >>> store.release("billing", "msg-1")  # the listener failed
        >>> store.claim("billing", "msg-1")  # so its redelivery runs it
        True
        >>> store.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        retention: float = DEFAULT_RETENTION,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        *,
        busy_timeout: float = 30.0,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(os.fspath(path), retention, claim_timeout, purge_interval, clock)
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._connection = _connect(self._name, _positive("busy_timeout", busy_timeout))

    def claim(self, group: str, message_id: str) -> bool:
        group, message_id = _key(group, message_id)
        with self._lock:
            now = self._tick()
            cursor = self._execute(
                "claim",
                _CLAIM,
                group=group,
                id=message_id,
                now=now,
                owner=self._owner,
                expired=now - self._claim_timeout,
                forgotten=now - self._retention,
            )
            return cursor.rowcount == 1

    def complete(self, group: str, message_id: str) -> None:
        group, message_id = _key(group, message_id)
        with self._lock:
            now = self._tick()
            self._execute(
                "complete", _COMPLETE, group=group, id=message_id, now=now, owner=self._owner
            )

    def release(self, group: str, message_id: str) -> None:
        group, message_id = _key(group, message_id)
        with self._lock:
            self._tick()
            self._execute("release", _RELEASE, group=group, id=message_id, owner=self._owner)

    def seen(self, group: str, message_id: str) -> bool:
        group, message_id = _key(group, message_id)
        with self._lock:
            now = self._tick()
            cursor = self._execute(
                "seen", _SEEN, group=group, id=message_id, forgotten=now - self._retention
            )
            return cursor.fetchone() is not None

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()

    def _purge_locked(self, now: float) -> int:
        completed = self._execute("purge", _PURGE, state="completed", before=now - self._retention)
        claimed = self._execute("purge", _PURGE, state="claimed", before=now - self._claim_timeout)
        return completed.rowcount + claimed.rowcount

    def _execute(self, action: str, sql: str, **params: object) -> sqlite3.Cursor:
        try:
            return self._connection.execute(sql, params)
        except sqlite3.Error as exc:
            raise IdempotencyStoreError(
                self._name,
                f"{action} failed: {exc}",
                "another process may hold the write lock longer than busy_timeout, "
                "or the file is damaged or not writable",
            ) from exc


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open (creating if needed) the database file in WAL mode with the schema in place.

    Processes opening a new file together contend for the switch to WAL, and SQLite reports
    that as busy without waiting (waiting could deadlock), so opening retries until
    `busy_timeout` has passed.
    """
    in_memory = path == ":memory:"
    directory = Path(path).absolute().parent
    if not in_memory and not directory.is_dir():
        raise IdempotencyStoreError(
            path,
            f"its directory {directory} does not exist",
            "create the directory first, or pass a path in an existing one",
        )
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return _open(path, busy_timeout, in_memory)
        except sqlite3.Error as exc:
            busy = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == sqlite3.SQLITE_BUSY
            if busy and time.monotonic() < deadline:
                time.sleep(_OPEN_RETRY_DELAY)
                continue
            raise IdempotencyStoreError(
                path,
                f"cannot open it as an SQLite database: {exc}",
                "check that the path is a writable file (not a directory) made by this store; "
                "if it is locked, raise busy_timeout",
            ) from exc


def _open(path: str, busy_timeout: float, in_memory: bool) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
    except BaseException:
        connection.close()
        raise
    if mode != "wal" and not in_memory:
        logger.warning("idempotency store %s runs in journal mode %s, not wal", path, mode)
    return connection
