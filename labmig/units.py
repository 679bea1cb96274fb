"""Parse and format the sizes, rates and durations users type.

``parse_size("8GiB")`` → bytes, ``parse_rate("10Gbit/s")`` → bytes per second,
``parse_duration("300ms")`` → seconds; ``format_*`` go the other way for tables.
Binary prefixes (KiB, MiB …) are powers of 1024, decimal ones (KB, MB, Gbit …)
powers of 1000, as in QEMU and iperf. A bare number is bytes, bytes/s or seconds.
"""
from __future__ import annotations

import re

from .errors import InvalidInput

_PREFIX = {
    "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z/]*)\s*$")


def _split(text: str, what: str, example: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.match(str(text))
    if not match:
        raise InvalidInput(f"cannot read {what} {text!r}", f"write it like {example}")
    return float(match.group(1)), match.group(2)


def _scale(unit: str, what: str, text: str, example: str) -> tuple[float, str]:
    """Split a unit like 'MiB' or 'Gbit' into (multiplier, base) with base 'b' or 'bit'."""
    lower = unit.lower()
    for base, factor in (("bit", 1 / 8), ("b", 1.0), ("", 1.0)):
        if lower.endswith(base):
            prefix = lower[: len(lower) - len(base)] if base else lower
            if prefix in _PREFIX:
                if base == "b" and unit[-1] == "b" and prefix:
                    # '10Mb' is ambiguous: refuse rather than guess bits or bytes.
                    raise InvalidInput(f"{what} {text!r}: 'b' is ambiguous", f"use B for bytes or bit for bits, e.g. {example}")
                return _PREFIX[prefix] * factor, base
    raise InvalidInput(f"unknown unit {unit!r} in {what} {text!r}", f"write it like {example}")


def parse_size(text: str | int | float) -> int:
    """Bytes from '64KiB', '8GiB', '1.5G', '4096'."""
    if isinstance(text, (int, float)):
        return int(text)
    value, unit = _split(text, "size", "64KiB or 8GiB")
    factor, _ = _scale(unit, "size", text, "64KiB or 8GiB")
    return int(round(value * factor))


def parse_rate(text: str | int | float) -> float:
    """Bytes per second from '10Gbit/s', '200MiB/s', '1Gbps', '0'."""
    if isinstance(text, (int, float)):
        return float(text)
    raw = str(text).strip()
    lower = raw.lower()
    if lower.endswith("ps") and not lower.endswith("/s"):
        raw = raw[:-2] + "/s"
    value, unit = _split(raw, "rate", "10Gbit/s or 200MiB/s")
    if unit.endswith("/s"):
        unit = unit[:-2]
    factor, _ = _scale(unit, "rate", text, "10Gbit/s or 200MiB/s")
    return value * factor


def parse_duration(text: str | int | float) -> float:
    """Seconds from '300ms', '2s', '1.5min', '250us'."""
    if isinstance(text, (int, float)):
        return float(text)
    value, unit = _split(text, "duration", "300ms or 2s")
    scale = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0, "m": 60.0, "h": 3600.0}
    if unit.lower() not in scale:
        raise InvalidInput(f"unknown unit {unit!r} in duration {text!r}", "use us, ms, s, min or h")
    return value * scale[unit.lower()]


def format_size(n: float) -> str:
    """'1.50 GiB' style, binary prefixes."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_s: float) -> str:
    """'1.25 Gbit/s' style, decimal bit rates as links are sold."""
    bits = float(bytes_per_s) * 8
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if abs(bits) < 1000 or unit == "Gbit/s":
            return f"{bits:.2f} {unit}"
        bits /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """'312 ms' below ten seconds' worth of milliseconds, else '12.3 s'."""
    if seconds is None:
        return "-"
    if abs(seconds) < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"
