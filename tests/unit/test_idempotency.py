"""The idempotency stores: one contract for both, then what only one of them promises."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from aspyx_event.errors import EventError
from aspyx_event.idempotency import (
    IdempotencyArgumentError,
    IdempotencyStore,
    IdempotencyStoreError,
    InMemoryIdempotencyStore,
    SQLiteIdempotencyStore,
)

RETENTION = 1000.0
CLAIM_TIMEOUT = 30.0
PURGE_INTERVAL = 10.0
RACE_IDS = 200
RACE_ROUNDS = 5


class FakeClock:
    """A clock the test moves by hand, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StoreFactory = Callable[[], IdempotencyStore]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[StoreFactory]:
    """Opens stores of one kind on shared state (one file for SQLite), closed at the end."""
    opened: list[IdempotencyStore] = []

    def factory() -> IdempotencyStore:
        store: IdempotencyStore
        if request.param == "memory":
            store = InMemoryIdempotencyStore(
                retention=RETENTION,
                claim_timeout=CLAIM_TIMEOUT,
                purge_interval=PURGE_INTERVAL,
                clock=clock,
            )
        else:
            store = SQLiteIdempotencyStore(
                tmp_path / "idempotency.db",
                retention=RETENTION,
                claim_timeout=CLAIM_TIMEOUT,
                purge_interval=PURGE_INTERVAL,
                clock=clock,
            )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> IdempotencyStore:
    return open_store()


def test_a_claimed_id_cannot_be_claimed_again_until_released(store: IdempotencyStore) -> None:
    assert store.claim("billing", "m1") is True
    assert store.claim("billing", "m1") is False
    assert store.seen("billing", "m1") is False  # claimed is not processed
    store.release("billing", "m1")
    assert store.claim("billing", "m1") is True


def test_a_completed_id_is_seen_and_never_claimed_again(store: IdempotencyStore) -> None:
    assert store.claim("billing", "m1")
    store.complete("billing", "m1")
    assert store.seen("billing", "m1") is True
    assert store.claim("billing", "m1") is False
    store.release("billing", "m1")  # a stray release must not forget processed work
    assert store.claim("billing", "m1") is False


def test_complete_without_claim_records_the_id(store: IdempotencyStore) -> None:
    store.complete("billing", "m1")
    assert store.seen("billing", "m1")
    assert not store.claim("billing", "m1")


def test_releasing_an_unknown_id_does_nothing(store: IdempotencyStore) -> None:
    store.release("billing", "never-claimed")
    assert store.claim("billing", "never-claimed")


def test_groups_are_independent(store: IdempotencyStore) -> None:
    assert store.claim("billing", "m1")
    store.complete("billing", "m1")
    assert store.claim("audit", "m1")
    assert not store.seen("audit", "m1")


def test_an_abandoned_claim_expires_after_the_claim_timeout(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    assert store.claim("billing", "m1")
    clock.advance(CLAIM_TIMEOUT - 1)
    assert not store.claim("billing", "m1")
    clock.advance(1)
    assert store.claim("billing", "m1")  # a redelivery takes over
    assert not store.claim("billing", "m1")  # and now owns it


def test_a_completed_id_is_forgotten_after_the_retention(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    store.complete("billing", "m1")
    clock.advance(RETENTION - 1)
    assert store.seen("billing", "m1") and not store.claim("billing", "m1")
    clock.advance(1)
    assert not store.seen("billing", "m1")
    assert store.claim("billing", "m1")


def test_purge_removes_forgotten_entries_on_its_own(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    assert isinstance(store, InMemoryIdempotencyStore | SQLiteIdempotencyStore)
    for number in range(3):
        store.complete("billing", f"done-{number}")
    assert store.claim("billing", "abandoned")
    clock.advance(RETENTION)
    assert store.purge() == 4
    store.complete("billing", "fresh")
    clock.advance(RETENTION)
    assert store.seen("audit", "x") is False  # any call after purge_interval purges
    assert store.purge() == 0


def test_concurrent_claims_in_one_process_have_one_winner_per_id(
    store: IdempotencyStore,
) -> None:
    threads, start = 8, threading.Barrier(8)
    won: list[list[str]] = [[] for _ in range(threads)]

    def member(index: int) -> None:
        start.wait(timeout=10)
        won[index].extend(m for m in map(str, range(RACE_IDS)) if store.claim("g", m))

    workers = [threading.Thread(target=member, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    all_wins = [message for wins in won for message in wins]
    assert sorted(all_wins) == sorted(map(str, range(RACE_IDS)))


@pytest.mark.parametrize(
    ("group", "message_id", "builtin"),
    [
        ("", "m1", ValueError),
        ("billing", "", ValueError),
        (None, "m1", TypeError),
        ("billing", 42, TypeError),
        (b"billing", "m1", TypeError),
    ],
)
def test_bad_keys_are_refused_with_a_hint(
    store: IdempotencyStore, group: object, message_id: object, builtin: type[Exception]
) -> None:
    for method in (store.claim, store.complete, store.release, store.seen):
        with pytest.raises(builtin) as caught:
            method(group, message_id)  # type: ignore[arg-type]
        assert isinstance(caught.value, IdempotencyArgumentError)
        assert isinstance(caught.value, EventError)
        assert "non-empty str" in str(caught.value) and "Hint:" in str(caught.value)


def test_a_closed_store_refuses_calls(store: IdempotencyStore) -> None:
    store.close()
    store.close()  # twice is fine
    with pytest.raises(IdempotencyStoreError, match="closed") as caught:
        store.claim("billing", "m1")
    assert "Hint:" in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [{"retention": 0}, {"claim_timeout": -1.0}, {"purge_interval": "60"}, {"retention": True}],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(IdempotencyArgumentError, match="positive float"):
        InMemoryIdempotencyStore(**options)  # type: ignore[arg-type]
    with pytest.raises(IdempotencyArgumentError, match="positive float"):
        SQLiteIdempotencyStore(tmp_path / "x.db", **options)  # type: ignore[arg-type]


def test_memory_keeps_at_most_max_entries_evicting_the_oldest(clock: FakeClock) -> None:
    store = InMemoryIdempotencyStore(max_entries=10, clock=clock)
    for number in range(1000):
        store.complete("g", str(number))
    assert [n for n in range(1000) if store.seen("g", str(n))] == list(range(990, 1000))
    assert store.claim("g", "0")  # evicted: a very old duplicate would run again
    with pytest.raises(IdempotencyArgumentError, match="positive int"):
        InMemoryIdempotencyStore(max_entries=0)


def test_sqlite_keeps_completions_and_claims_across_a_restart(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "idempotency.db"
    with SQLiteIdempotencyStore(path, claim_timeout=CLAIM_TIMEOUT, clock=clock) as before:
        before.complete("billing", "done")
        assert before.claim("billing", "in-flight")  # the process dies while processing it
    with SQLiteIdempotencyStore(str(path), claim_timeout=CLAIM_TIMEOUT, clock=clock) as after:
        assert after.seen("billing", "done") and not after.claim("billing", "done")
        assert not after.claim("billing", "in-flight")
        clock.advance(CLAIM_TIMEOUT)
        assert after.claim("billing", "in-flight")
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    reader.close()


def test_sqlite_release_leaves_a_claim_another_store_took_over(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "idempotency.db"
    with (
        SQLiteIdempotencyStore(path, claim_timeout=CLAIM_TIMEOUT, clock=clock) as slow,
        SQLiteIdempotencyStore(path, claim_timeout=CLAIM_TIMEOUT, clock=clock) as other,
    ):
        assert slow.claim("billing", "m1")
        clock.advance(CLAIM_TIMEOUT)
        assert other.claim("billing", "m1")
        slow.release("billing", "m1")  # too late: the claim is no longer its own
        assert not slow.claim("billing", "m1")


def test_sqlite_names_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "idempotency.db"
    with pytest.raises(IdempotencyStoreError) as caught:
        SQLiteIdempotencyStore(path)
    assert isinstance(caught.value, OSError)
    assert str(path) in str(caught.value) and "does not exist" in str(caught.value)
    assert "Hint:" in str(caught.value)


@pytest.mark.parametrize("content", ["directory", "garbage"])
def test_sqlite_translates_an_unusable_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "idempotency.db"
    if content == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not an SQLite database, just some text" * 20)
    with pytest.raises(IdempotencyStoreError) as caught:
        SQLiteIdempotencyStore(path)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert str(path) in str(caught.value) and "Hint:" in str(caught.value)


def _race_member(path: str, start: Barrier, results: Queue[list[tuple[int, str]]]) -> None:
    """One process of the race: in every round, wait for the other, then claim every id."""
    with SQLiteIdempotencyStore(path) as store:
        wins: list[tuple[int, str]] = []
        for round_ in range(RACE_ROUNDS):  # rounds, so the processes surely overlap in some
            start.wait(timeout=60)
            ids = map(str, range(RACE_IDS))
            wins.extend((round_, m) for m in ids if store.claim(f"race-{round_}", m))
        results.put(wins)


def test_two_processes_claim_every_id_exactly_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results: Queue[list[tuple[int, str]]] = context.Queue()
    path = str(tmp_path / "idempotency.db")
    members = [context.Process(target=_race_member, args=(path, start, results)) for _ in "ab"]
    for member in members:
        member.start()
    wins = [results.get(timeout=120) for _ in members]
    for member in members:
        member.join(timeout=30)
        assert member.exitcode == 0
    every_id = [(round_, str(m)) for round_ in range(RACE_ROUNDS) for m in range(RACE_IDS)]
    assert sorted(wins[0] + wins[1]) == sorted(every_id)
