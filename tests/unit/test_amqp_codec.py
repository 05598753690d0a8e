"""The AMQP provider's own message encoding agrees with proton's, both ways."""

from __future__ import annotations

import uuid

import pytest

proton = pytest.importorskip("proton")

from aspyx_event.providers import _amqp_codec  # noqa: E402  # needs proton to be installed

HEADERS = {
    "event-id": "abc-1",
    "event-name": "Order",
    "event-timestamp": "1732480000123",
    "content-type": "application/json",
    "session": "ünïcödé ✓",
}


def proton_decode(data: bytes) -> proton.Message:
    message = proton.Message()
    message.decode(data)
    return message


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("body", ["", '{"n": 1}', "é" * 300_000])
def test_proton_reads_what_we_encode(body: str, durable: bool) -> None:
    message = proton_decode(_amqp_codec.encode(body, HEADERS, durable))
    assert message.body == body
    assert message.durable is durable
    assert message.id == "abc-1"
    assert message.content_type == "application/json"
    assert message.properties == {
        "event-name": "Order",
        "event-timestamp": "1732480000123",
        "session": "ünïcödé ✓",
    }


def test_many_and_long_headers_use_the_large_encodings() -> None:
    headers = {f"header-{n}": "v" * 300 for n in range(300)}
    message = proton_decode(_amqp_codec.encode("x", headers, True))
    assert message.properties == headers
    assert _amqp_codec.decode(_amqp_codec.encode("x", headers, True)) == ("x", headers, 0, False)


def test_we_read_what_proton_encodes() -> None:
    message = proton.Message(body="hello", durable=True, id="m-1", content_type="text/plain")
    message.properties = {"event-name": "Order", "count": 3, "flag": True}
    message.delivery_count, message.first_acquirer = 2, True
    body, headers, count, first_acquirer = _amqp_codec.decode(bytes(message.encode()))  # type: ignore[misc]
    assert body == "hello"
    assert headers == {
        "event-id": "m-1",
        "content-type": "text/plain",
        "event-name": "Order",
        "count": "3",
        "flag": "True",
    }
    assert (count, first_acquirer) == (2, True)


def test_binary_bodies_become_text() -> None:
    data = bytes(proton.Message(body=b'{"a": 1}').encode())
    assert _amqp_codec.decode(data) == ('{"a": 1}', {}, 0, False)


@pytest.mark.parametrize(
    "message",
    [
        proton.Message(body=1.5),  # a double
        proton.Message(body="x", id=uuid.uuid4()),  # a UUID message id
        proton.Message(body=["a", "b"], inferred=True),  # an AMQP sequence section
    ],
    ids=["double", "uuid-id", "sequence"],
)
def test_other_shapes_are_left_to_proton(message: proton.Message) -> None:
    assert _amqp_codec.decode(bytes(message.encode())) is None


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x53\x77\xa1\x10short", b"garbage!"])
def test_malformed_input_answers_none_or_an_empty_message(data: bytes) -> None:
    result = _amqp_codec.decode(data)
    assert result is None or result == ("", {}, 0, False)
