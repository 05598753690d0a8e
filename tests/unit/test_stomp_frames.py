"""The STOMP provider's own frame codec: `encode_frame` (written by the I/O thread, many frames
per socket write) and `FrameReader` (parses what stomp.py's receiver thread reads), checked
against each other and against stomp.py's parser."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from aspyx_event.errors import ProviderError
from aspyx_event.providers._stomp_wire import FrameReader, LinkSettings, encode_frame

stomp_utils = pytest.importorskip("stomp.utils")  # the `stomp` extra

from aspyx_event.providers._stomp_session import Listener, Session  # noqa: E402  # needs stomp.py

AWKWARD = {
    "destination": "/topic/Order::Placed",
    "id": "ID:host-1:2:3",
    "note": "back\\slash, colon: and\nnewline\rreturn",
    "grüße": "ünïcödé ✓",
}


def read_all(data: bytes, chunk: int = 0) -> tuple[list[tuple[str, dict[str, str], bytes]], bytes]:
    """Feed `data` whole (chunk 0) or `chunk` bytes at a time; the frames taken (all but
    ERROR) and the bytes left for stomp.py."""
    taken: list[tuple[str, dict[str, str], bytes]] = []

    def take(command: str, headers: dict[str, str], body: bytes) -> bool:
        if command == "ERROR":
            return False
        taken.append((command, headers, body))
        return True

    reader = FrameReader(take)
    if not chunk:
        return taken, reader.feed(data)
    left = b"".join(reader.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    return taken, left


def test_an_encoded_frame_reads_back_with_every_header_and_the_body() -> None:
    frame = encode_frame("SEND", AWKWARD, "body with \x00 NUL and ünïcödé")
    taken, left = read_all(frame)
    assert left == b""
    [(command, headers, body)] = taken
    assert command == "SEND"
    assert headers == {**AWKWARD, "content-length": str(len(body))}
    assert body.decode() == "body with \x00 NUL and ünïcödé"


def test_stomp_py_parses_an_encoded_frame_the_same() -> None:
    frame = encode_frame("SEND", AWKWARD, "payload")
    parsed = stomp_utils.parse_frame(frame[:-1])  # stomp.py's parser takes the frame sans NUL
    assert parsed.cmd == "SEND"
    assert parsed.headers == {**AWKWARD, "content-length": "7"}
    assert parsed.body == b"payload"


def test_a_frame_without_a_body_has_no_content_length() -> None:
    assert encode_frame("ACK", {"id": "7"}) == b"ACK\nid:7\n\n\x00"


STREAM = (
    b"\n\n"  # heart-beats
    b"MESSAGE\nsubscription:sub-1\nack:ID\\c9\nx:first\nx:second\ncontent-length:5\n\na\x00b\x00c"
    b"\x00\n"  # a frame may end with an EOL
    b"RECEIPT\r\nreceipt-id:aspyx-1\r\n\r\n\x00"  # CRLF line ends
    b"ERROR\nmessage:refused\n\nno such queue\x00"
    b'MESSAGE\nsubscription:sub-1\nack:2\n\n{"n": 1}\x00'  # no content-length: up to the NUL
)
EXPECTED = [
    ("MESSAGE", {"subscription": "sub-1", "ack": "ID:9", "x": "first", "content-length": "5"},
     b"a\x00b\x00c"),
    ("RECEIPT", {"receipt-id": "aspyx-1"}, b""),
    ("MESSAGE", {"subscription": "sub-1", "ack": "2"}, b'{"n": 1}'),
]  # fmt: skip


@pytest.mark.parametrize("chunk", [0, 1, 2, 3, 7, 64])
def test_frames_split_anywhere_read_the_same(chunk: int) -> None:
    taken, left = read_all(STREAM, chunk)
    assert taken == EXPECTED
    assert left == b"ERROR\nmessage:refused\n\nno such queue\x00"  # unchanged, for stomp.py


def test_frames_not_taken_match_what_stomp_py_parses() -> None:
    _, left = read_all(STREAM)
    parsed = stomp_utils.parse_frame(left[:-1])
    assert (parsed.cmd, parsed.headers, parsed.body) == (
        "ERROR",
        {"message": "refused"},
        b"no such queue",
    )


def test_a_large_body_arriving_in_pieces_is_one_frame() -> None:
    body = "é" * 600_000  # 1.2 MB
    frame = encode_frame("MESSAGE", {"subscription": "s"}, body)
    taken, _ = read_all(frame, 16_384)
    assert [(c, b.decode()) for c, _, b in taken] == [("MESSAGE", body)]


def test_an_error_before_the_receipt_of_the_frame_it_refused_fails_that_frame() -> None:
    # RabbitMQ answers a refused SUBSCRIBE with ERROR and then a RECEIPT, often in one read
    settings = LinkSettings(
        "127.0.0.1", 61613, "", "", "/", None, 1.0, 1.0, 1.0, 0.1, 1.0, 10, 0
    )  # fmt: skip
    session = Session(settings, on_lost=lambda generation: None)
    listener = Listener(session, handler=None, generation=session.next_generation())  # type: ignore[arg-type]
    listener.on_connected(stomp_utils.Frame("CONNECTED", {"server": "RabbitMQ/3.10"}))
    refused: Future[None] = Future()
    receipt_id = session.next_receipt_id()
    assert session.register({receipt_id: refused})
    reader = FrameReader(listener.take)
    left = reader.feed(
        f"ERROR\nreceipt-id:{receipt_id}\nmessage:inequivalent arg 'durable'\n\n\x00"
        f"RECEIPT\nreceipt-id:{receipt_id}\n\n\x00".encode()
    )
    assert left == b""
    with pytest.raises(ProviderError, match="inequivalent arg 'durable'"):
        refused.result(0)
