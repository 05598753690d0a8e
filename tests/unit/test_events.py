"""The event layer end to end through an Environment, on the local provider."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aspyx_di import ConfigurationManager, Environment, EnvironmentSource
from aspyx_event import (
    DecodeError,
    Envelope,
    EventDefinitionError,
    EventListener,
    EventManager,
    JsonCodec,
    ProviderConfigurationError,
    UnknownEventError,
    event,
    event_listener,
)
from aspyx_event.event import describe_event
from tests.fixtures import eventapp
from tests.fixtures.eventapp import (
    Address,
    Color,
    CustomerRegistered,
    Fragile,
    Line,
    OrderPlaced,
    Ping,
    Recorder,
    Slow,
)
from tests.fixtures.own_manager import Inbox, Note, OwnManagerModule


@pytest.fixture
def app() -> Iterator[Environment]:
    with Environment(eventapp.EventApp) as environment:
        yield environment


def order() -> OrderPlaced:
    return OrderPlaced(
        uuid.uuid4(),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        Color.BLUE,
        [Line("a", Decimal("1.10")), Line("b", Decimal("20"))],
    )


def test_an_event_reaches_its_listener_with_nested_types_intact(app: Environment) -> None:
    sent = order()
    app.get(EventManager).send_event(sent)
    received, _session, _thread = app.get(Recorder).take("orders")
    assert received == sent
    assert isinstance(received.lines[0].price, Decimal) and received.color is Color.BLUE


def test_every_group_receives_every_event(app: Environment) -> None:
    manager, recorder = app.get(EventManager), app.get(Recorder)
    sent = [order() for _ in range(20)]
    for each in sent:
        manager.send_event(each)
    assert sorted(recorder.take("audit") for _ in sent) == sorted(e.id for e in sent)
    assert len([recorder.take("orders") for _ in sent]) == 20


def test_pydantic_event_with_custom_name_and_async_listener(app: Environment) -> None:
    sent = CustomerRegistered(name="ann", address=Address(city="Oslo"))
    assert describe_event(CustomerRegistered).name == "customer-registered"
    app.get(EventManager).send_event(sent)
    received, _session, thread = app.get(Recorder).take("customers")
    assert received == sent
    assert thread == "event-manager-loop", "async listeners run on the manager's loop"


def test_session_travels_through_the_pipeline_and_is_gone_afterwards(app: Environment) -> None:
    token = eventapp.session.set("s-42")
    try:
        app.get(EventManager).send_event(order())
    finally:
        eventapp.session.reset(token)
    _event, seen_session, thread = app.get(Recorder).take("orders")
    assert seen_session == "s-42"
    assert thread != threading.current_thread().name
    assert eventapp.session.get() == ""


def test_each_delivery_has_its_own_context_and_di_scope(app: Environment) -> None:
    manager, recorder = app.get(EventManager), app.get(Recorder)
    for name in ("one", "two"):
        token = eventapp.session.set(name)
        manager.send_event(Ping(1))
        eventapp.session.reset(token)
    first = recorder.take("pongs")
    second = recorder.take("pongs")
    assert {first[1], second[1]} == {"one", "two"}, "the follow-up event carries the session"
    assert first[2] == first[1] and second[2] == second[1], "handle and listener share the bean"
    assert first[3] != second[3], "a new context-scoped bean per delivery"
    destroyed = {recorder.take("scoped-destroyed") for _ in range(2)}
    assert {"one", "two"} <= destroyed | {recorder.take("scoped-destroyed") for _ in range(2)}


def test_a_listener_may_send_follow_up_events(app: Environment) -> None:
    app.get(EventManager).send_event(Ping(41))
    assert app.get(Recorder).take("pongs")[0] == 42


def test_a_slow_listener_does_not_hold_back_other_listeners(app: Environment) -> None:
    slow = app.get(eventapp.SlowListener)
    recorder = app.get(Recorder)
    manager = app.get(EventManager)
    for n in range(3):
        manager.send_event(Slow(n))
    assert slow.started.wait(10)
    assert [recorder.take("slow-observer") for _ in range(3)] == [0, 1, 2]
    assert recorder.empty("slow")
    slow.release.set()
    assert [recorder.take("slow") for _ in range(3)] == [0, 1, 2]


def test_a_failing_listener_is_logged_reported_and_redelivered(
    app: Environment, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = app.get(Recorder)
    with caplog.at_level(logging.ERROR, logger="aspyx_event.manager"):
        app.get(EventManager).send_event(Fragile(fail_times=2))
        assert recorder.take("fragile") == 3, "the message came back until the listener succeeded"
    errors = [recorder.take("errors") for _ in range(2)]
    assert {e[0] for e in errors} == {"RuntimeError"} and {e[2] for e in errors} == {
        "FragileListener"
    }
    message_id = errors[0][1]
    assert errors[1][1] == message_id, "the same message was redelivered"
    failures = [r for r in caplog.records if "FragileListener" in r.getMessage()]
    assert len(failures) == 2, "logged once per failed delivery"
    assert message_id in failures[0].getMessage() and "Fragile" in failures[0].getMessage()


def test_an_undecodable_body_is_reported_and_the_consumer_goes_on(app: Environment) -> None:
    manager, recorder = app.get(EventManager), app.get(Recorder)
    bogus = Envelope.create('{"id": "not-a-uuid"}', "OrderPlaced")
    manager.provider.send(bogus, durable=False)
    reported = {recorder.take("errors") for _ in range(2)}  # two groups listen to OrderPlaced
    assert {r[0] for r in reported} == {"DecodeError"}
    sent = order()
    manager.send_event(sent)
    assert recorder.take("orders")[0] == sent


def test_sending_something_that_is_not_an_event(app: Environment) -> None:
    with pytest.raises(UnknownEventError, match="dict is not a known event"):
        app.get(EventManager).send_event({"x": 1})


def test_shutdown_lets_an_in_flight_delivery_finish() -> None:
    environment = Environment(eventapp.EventApp)
    slow = environment.get(eventapp.SlowListener)
    recorder = environment.get(Recorder)
    environment.get(EventManager).send_event(Slow(7))
    assert slow.started.wait(10)
    releaser = threading.Timer(0.2, slow.release.set)
    releaser.start()
    environment.shutdown()  # returns only after the delivery in progress finished
    assert not recorder.empty("slow")
    assert recorder.take("slow", timeout=0) == 7


def test_an_app_may_build_its_own_manager() -> None:
    with Environment(OwnManagerModule) as environment:
        environment.get(EventManager).send_event(Note("hi"))
        assert environment.get(Inbox).notes.get(timeout=10) == "hi"


def test_the_provider_comes_from_configuration() -> None:
    bad = ConfigurationManager(EnvironmentSource(environ={"EVENT__PROVIDER": "carrier-pigeon://x"}))
    with pytest.raises(
        ProviderConfigurationError, match="unknown provider scheme 'carrier-pigeon'"
    ):
        Environment(eventapp.EventApp, configuration=bad)


def test_event_decorator_rejects_what_cannot_be_serialized() -> None:
    with pytest.raises(EventDefinitionError, match="neither a dataclass nor a pydantic model"):

        @event()
        class Plain:
            x: int

    with pytest.raises(EventDefinitionError, match="decorates classes"):
        event()(lambda: None)  # type: ignore[type-var]


def test_event_listener_decorator_checks_its_arguments() -> None:
    class NotAnEvent:
        pass

    with pytest.raises(EventDefinitionError, match="not a known event"):

        @event_listener(NotAnEvent)
        class Listener(EventListener[NotAnEvent]):
            def on(self, event: NotAnEvent) -> None: ...

    @dataclass
    @event()
    class Fine:
        x: int

    with pytest.raises(EventDefinitionError, match="subclasses of EventListener"):
        event_listener(Fine)(type("NoBase", (), {"on": lambda self, e: None}))


def test_envelope_headers_are_strings_and_metadata_is_set() -> None:
    first, second = Envelope.create("{}", "E"), Envelope.create("{}", "E")
    assert first.message_id and first.message_id != second.message_id
    assert first.event_name == "E" and first.content_type == "application/json"
    assert abs(first.timestamp / 1000 - datetime.now(UTC).timestamp()) < 60
    with pytest.raises(TypeError, match="must be a str"):
        first.set("count", 3)  # type: ignore[arg-type]


def test_codec_reports_a_clear_decode_error() -> None:
    descriptor = describe_event(OrderPlaced)
    with pytest.raises(DecodeError) as caught:
        JsonCodec().decode('{"id": 1}', descriptor, "m-1")
    assert caught.value.message_id == "m-1" and "OrderPlaced" in str(caught.value)
    with pytest.raises(DecodeError):
        JsonCodec().decode("not json", descriptor)


def test_send_event_async_from_asyncio_code(app: Environment) -> None:
    import asyncio  # noqa: PLC0415

    async def send() -> None:
        await app.get(EventManager).send_event_async(Ping(9))

    asyncio.run(send())
    assert app.get(Recorder).take("pongs")[0] == 10


def test_send_events_sends_a_batch(app: Environment) -> None:
    app.get(EventManager).send_events([Ping(n) for n in range(5)])
    assert sorted(app.get(Recorder).take("pongs")[0] for _ in range(5)) == [1, 2, 3, 4, 5]
