"""Frames between the controller and the destination helper.

A frame is a 4-byte big-endian length, that many bytes of UTF-8 JSON (an object),
then — when the object has ``"payload": n`` — n raw bytes. Requests carry ``"op"``;
replies carry ``"ok": true`` or ``"ok": false`` with ``"error"`` and ``"hint"``.
Binary data (extents, digests) travels as payload, never inside the JSON.
"""
from __future__ import annotations

import json
import struct
from typing import IO, Any

from ..errors import CopyError

MAX_HEADER = 1 << 20        # a JSON header larger than this is a protocol error
MAX_PAYLOAD = 1 << 30
_LEN = struct.Struct(">I")


class ProtocolError(CopyError):
    """The other side sent something that is not a frame (or closed the stream)."""


def write_frame(stream: IO[bytes], header: dict[str, Any], payload: bytes | memoryview = b"") -> int:
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


def _read_exact(stream: IO[bytes], n: int) -> bytes:
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


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes, int] | None:
    """Read one frame: (header, payload, bytes read), or None at a clean end of stream."""
    first = stream.read(_LEN.size)
    if not first:
        return None
    if len(first) < _LEN.size:
        first += _read_exact(stream, _LEN.size - len(first))
    (size,) = _LEN.unpack(first)
    if size > MAX_HEADER:
        raise ProtocolError(f"frame header of {size} bytes is too large", "both sides must run the same labmig")
    try:
        header = json.loads(_read_exact(stream, size))
    except ValueError as exc:
        raise ProtocolError("frame header is not JSON", "both sides must run the same labmig") from exc
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not an object", "both sides must run the same labmig")
    n = int(header.get("payload", 0) or 0)
    if n < 0 or n > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {n} bytes is out of range", "both sides must run the same labmig")
    payload = _read_exact(stream, n) if n else b""
    return header, payload, _LEN.size + size + n
