"""Frames between the controller and the destination helper.

A frame is a 4-byte big-endian length, that many bytes of UTF-8 JSON (an object),
then — when the object has ``"payload": n`` — n raw bytes. Requests carry ``"op"``;
replies carry ``"ok": true`` or ``"ok": false`` with ``"error"`` and ``"hint"``.
Binary data (extents, digests) travels as payload, never inside the JSON.

    write_frame, read_frame       one frame out / in; ``read_frame(skip_bad=True)`` (the
                                  helper's side) reads a bad frame whole and raises
                                  FrameRefused, so the stream stays in step
    pack_extents, unpack_extents  the table of an ``extents`` request: many extents
                                  in one frame, a few bytes each (see pack_extents)
"""
from __future__ import annotations

import json
import struct
from typing import Any, Protocol

from ..errors import CopyError

MAX_HEADER = 1 << 20        # a JSON header larger than this is a protocol error
MAX_PAYLOAD = 64 << 20      # an extents batch is 8 MiB and one extent at most, digests a few MiB
MAX_DEPTH = 32              # nesting of a JSON header (requests and replies are flat)
_SKIP_CHUNK = 1 << 20
_LEN = struct.Struct(">I")


class Writer(Protocol):
    """Where frames are written: a binary file or pipe (or the controller's deadline pipes)."""

    def write(self, data: bytes | memoryview, /) -> int | None: ...
    def flush(self) -> None: ...


class Reader(Protocol):
    """Where frames are read from; ``read(n)`` may return fewer bytes, b"" at the end."""

    def read(self, n: int, /) -> bytes | None: ...


class ProtocolError(CopyError):
    """The other side sent something that is not a frame (or closed the stream)."""


class FrameRefused(ProtocolError):
    """A frame was read whole but is not a request: answered with an error, the stream goes on."""


def _depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in ``value`` (stops counting past ``limit``)."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, d = level.pop()
        if isinstance(item, (dict, list)):
            d += 1
            deepest = max(deepest, d)
            if d > limit:
                return d
            level.extend((v, d) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def write_frame(stream: Writer, header: dict[str, Any], payload: bytes | memoryview = b"") -> int:
    """Write one frame; returns the number of bytes written."""
    if payload:
        header = dict(header, payload=len(payload))
    body = json.dumps(header, separators=(",", ":")).encode()
    stream.write(_LEN.pack(len(body)))
    stream.write(body)
    if payload:
        stream.write(payload)
    stream.flush()
    return _LEN.size + len(body) + len(payload)


def _read_exact(stream: Reader, n: int) -> bytes:
    chunks = []
    left = n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise ProtocolError(f"stream closed after {n - left} of {n} bytes",
                                "the other side stopped; see its error output")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _skip(stream: Reader, n: int) -> None:
    while n:
        chunk = _read_exact(stream, min(n, _SKIP_CHUNK))
        n -= len(chunk)


def read_frame(stream: Reader, skip_bad: bool = False) -> tuple[dict[str, Any], bytes, int] | None:
    """Read one frame: (header, payload, bytes read), or None at a clean end of stream.

    With ``skip_bad`` a frame that can be read whole but is not a good request (header
    too large or not a JSON object, nested too deeply, payload too large) is read and
    dropped, then FrameRefused is raised; without it, ProtocolError. A stream cut short
    raises ProtocolError either way.
    """
    bad = FrameRefused if skip_bad else ProtocolError
    first = stream.read(_LEN.size)
    if not first:
        return None
    if len(first) < _LEN.size:
        first += _read_exact(stream, _LEN.size - len(first))
    (size,) = _LEN.unpack(first)
    if size > MAX_HEADER:
        if skip_bad:
            _skip(stream, size)
        raise bad(f"frame header of {size} bytes is too large", "both sides must run the same labmig")
    try:
        header = json.loads(_read_exact(stream, size))
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers of too many digits;
        # RecursionError a header nested deeper than the parser's recursion limit.
        raise bad("frame header is not JSON", "both sides must run the same labmig") from exc
    if not isinstance(header, dict):
        raise bad("frame header is not an object", "both sides must run the same labmig")
    n = header.get("payload", 0) or 0
    if type(n) is not int:
        raise bad(f"payload length {str(n)[:40]!r} is not an integer", "both sides must run the same labmig")
    if n < 0:
        raise bad(f"payload of {n} bytes is out of range", "both sides must run the same labmig")
    if n > MAX_PAYLOAD:
        if skip_bad:
            _skip(stream, n)
        raise bad(f"payload of {n} bytes is out of range", "both sides must run the same labmig")
    payload = _read_exact(stream, n) if n else b""
    if _depth(header, MAX_DEPTH) > MAX_DEPTH:
        raise bad(f"frame header nests deeper than {MAX_DEPTH} levels", "both sides must run the same labmig")
    return header, payload, _LEN.size + size + n


# ---------------------------------------------------------------- extent tables

Extent = tuple[int, int, bool]   # (offset, length, zero): data follows in the payload unless zero


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(table: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(table) or shift > 63:
            raise ProtocolError("extent table is cut short or has an oversized number",
                                "both sides must run the same labmig")
        byte = table[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if byte < 0x80:
            return value, pos


def pack_extents(extents: list[Extent], unit: int) -> bytes:
    """The table of an ``extents`` request: per extent, two unsigned LEB128 varints.

    The first is the distance from the end of the previous extent to this one's
    start in ``unit`` bytes (a block), zigzag-signed (extents of one window go
    zero runs first, then data runs), shifted left twice: bit 1 says the extent
    is zero (no data in the payload), bit 0 that its length is not whole units.
    The second is its length in units, or in bytes when bit 0 is set (only the
    image's last block can be short). Scattered 64 KiB blocks cost 2–4 bytes each.
    """
    out = bytearray()
    end = 0
    for offset, length, zero in extents:
        if offset % unit:
            raise ValueError(f"extent at byte {offset} is not aligned to {unit}")
        delta = offset // unit - end
        ragged = length % unit != 0
        _put_varint(out, ((delta << 1) ^ (delta >> 63)) << 2 | int(zero) << 1 | int(ragged))
        _put_varint(out, length if ragged else length // unit)
        end = offset // unit + -(-length // unit)
    return bytes(out)


def unpack_extents(table: bytes, unit: int, limit: int) -> list[Extent]:
    """The extents of a table (:func:`pack_extents`); each must lie in [0, ``limit``)."""
    extents: list[Extent] = []
    pos = end = 0
    while pos < len(table):
        head, pos = _get_varint(table, pos)
        size, pos = _get_varint(table, pos)
        zigzag = head >> 2
        delta = (zigzag >> 1) ^ -(zigzag & 1)
        length = size if head & 1 else size * unit
        offset = (end + delta) * unit
        if offset < 0 or length <= 0 or offset + length > limit:
            raise ProtocolError(f"extent of {length} bytes at byte {offset} lies outside the image "
                                f"of {limit} bytes", "both sides must run the same labmig")
        extents.append((offset, length, bool(head & 2)))
        end = offset // unit + -(-length // unit)
    return extents
