"""Private: the AMQP 1.0 message encoding of an envelope, in plain Python.

Proton's `Message` builds each message through dozens of small C calls and Python wrappers;
for the shapes this provider sends (a header, message id and content type, string application
properties, a string body) writing the bytes directly costs a fraction of that. Receiving
decodes what the provider itself sends and the common shapes of other clients; `decode`
returns None for anything else (floats, UUIDs, arrays...) so the caller falls back to
proton's complete decoder. Type codes and section descriptors: the AMQP 1.0 specification,
part 1 (types) and part 3 (messaging).
"""

from __future__ import annotations

from struct import Struct
from typing import Any

from aspyx_event.envelope import CONTENT_TYPE, MESSAGE_ID

_HEADER_DURABLE = b"\x00\x53\x70\xc0\x02\x01\x41"  # header: list8 [durable=true]
_PROPERTIES = b"\x00\x53\x73"
_APPLICATION_PROPERTIES = b"\x00\x53\x74"
_AMQP_VALUE = b"\x00\x53\x77"
_NULL = b"\x40"
_U8, _U16, _U32, _U64 = Struct(">B"), Struct(">H"), Struct(">I"), Struct(">Q")
_I8, _I16, _I32, _I64 = Struct(">b"), Struct(">h"), Struct(">i"), Struct(">q")
_U32_PAIR = Struct(">II")


def _variable(data: bytes, small: int, large: int) -> bytes:
    """A string/symbol/binary: one-byte length up to 255 bytes, else four."""
    size = len(data)
    if size < 256:
        return bytes((small, size)) + data
    return bytes((large,)) + _U32.pack(size) + data


def _string(value: str) -> bytes:
    return _variable(value.encode("utf-8"), 0xA1, 0xB1)


def _compound(code8: int, code32: int, count: int, payload: bytes) -> bytes:
    """A list or map (count = number of encoded values) in its small or large form."""
    if len(payload) < 255 and count < 256:
        return bytes((code8, len(payload) + 1, count)) + payload
    return bytes((code32,)) + _U32_PAIR.pack(len(payload) + 4, count) + payload


def encode(body: str, headers: dict[str, str], durable: bool) -> bytes:
    """The encoded message: header (if durable), properties, application properties, body.

    The message id and content type go to their standard properties; every other header is
    an application property (string to string), as proton's `Message` would send them.
    """
    parts = [_HEADER_DURABLE] if durable else []
    message_id, content_type = headers.get(MESSAGE_ID), headers.get(CONTENT_TYPE)
    if message_id or content_type:
        fields = _string(message_id) if message_id else _NULL
        count = 1
        if content_type:
            fields += _NULL * 5 + _variable(content_type.encode("ascii", "replace"), 0xA3, 0xB3)
            count = 7
        parts += (_PROPERTIES, _compound(0xC0, 0xD0, count, fields))
    entries = [
        _string(key) + _string(value)
        for key, value in headers.items()
        if key not in (MESSAGE_ID, CONTENT_TYPE) or not value
    ]
    if entries:
        table = _compound(0xC1, 0xD1, 2 * len(entries), b"".join(entries))
        parts += (_APPLICATION_PROPERTIES, table)
    parts += (_AMQP_VALUE, _string(body))
    return b"".join(parts)


class UnsupportedError(Exception):
    """A type code this decoder does not read: use proton's decoder instead."""


_FIXED: dict[int, tuple[int, Any]] = {  # code -> (width, how to read the value)
    0x50: (1, _U8), 0x51: (1, _I8), 0x52: (1, _U8), 0x53: (1, _U8), 0x54: (1, _I8),
    0x55: (1, _I8), 0x56: (1, _U8), 0x60: (2, _U16), 0x61: (2, _I16), 0x70: (4, _U32),
    0x71: (4, _I32), 0x80: (8, _U64), 0x81: (8, _I64), 0x83: (8, _I64),
}  # fmt: skip
_CONSTANTS: dict[int, Any] = {0x40: None, 0x41: True, 0x42: False, 0x43: 0, 0x44: 0, 0x45: []}


def _value(data: bytes, at: int) -> tuple[Any, int]:
    """The value encoded at `at` and the offset after it."""
    code = data[at]
    at += 1
    if code in _CONSTANTS:
        return _CONSTANTS[code], at
    if code == 0x00:  # a described value: the descriptor, then the value
        _, at = _value(data, at)
        return _value(data, at)
    if code in _FIXED:
        width, reader = _FIXED[code]
        return reader.unpack_from(data, at)[0], at + width
    if code in (0xA0, 0xA1, 0xA3, 0xB0, 0xB1, 0xB3):
        if code < 0xB0:
            size, at = data[at], at + 1
        else:
            size, at = _U32.unpack_from(data, at)[0], at + 4
        if at + size > len(data):
            raise ValueError("truncated")
        raw = data[at : at + size]
        return (bytes(raw) if code in (0xA0, 0xB0) else raw.decode("utf-8", "replace")), at + size
    if code in (0xC0, 0xC1, 0xD0, 0xD1):
        if code < 0xD0:
            count, at = data[at + 1], at + 2
        else:
            count, at = _U32_PAIR.unpack_from(data, at)[1], at + 8
        items = []
        for _ in range(count):
            item, at = _value(data, at)
            items.append(item)
        if code in (0xC1, 0xD1):
            return dict(zip(items[::2], items[1::2], strict=True)), at
        return items, at
    raise UnsupportedError(hex(code))


def decode(data: bytes) -> tuple[str, dict[str, str], int, bool] | None:
    """(body, headers, delivery count, first acquirer) of an encoded message, or None.

    None means the message uses types or sections this decoder does not read (the caller
    then uses proton's decoder); malformed input also answers None, never an exception.
    """
    try:
        return _sections(data)
    except (UnsupportedError, IndexError, ValueError, TypeError, KeyError, UnicodeError):
        return None


def _sections(data: bytes) -> tuple[str, dict[str, str], int, bool] | None:
    body: Any = None
    headers: dict[str, str] = {}
    delivery_count, first_acquirer, at, end = 0, False, 0, len(data)
    while at < end:
        if data[at] != 0x00 or data[at + 1] != 0x53:
            return None
        section, (value, at) = data[at + 2], _value(data, at + 3)
        if section == 0x70 and value:  # header: durable, priority, ttl, first-acquirer, count
            first_acquirer = len(value) > 3 and bool(value[3])
            delivery_count = value[4] if len(value) > 4 and value[4] else 0
        elif section == 0x73 and value:  # properties: message-id ... content-type
            if value[0] is not None:
                headers[MESSAGE_ID] = str(value[0])
            if len(value) > 6 and value[6]:
                headers[CONTENT_TYPE] = str(value[6])
        elif section == 0x74 and value:  # application properties
            headers.update((str(key), _text(item)) for key, item in value.items())
        elif section == 0x77:  # amqp-value
            body = value
        elif section == 0x75:  # data: binary body sections
            body = (body or b"") + value
        elif section == 0x76:  # amqp-sequence: leave it to proton
            return None
    return _text(body), headers, delivery_count, first_acquirer


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
