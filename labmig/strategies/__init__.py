"""Migration strategies by name: the registry the CLI, widgets and backends list.

    STRATEGIES      name -> Strategy class (each with an ``Options`` dataclass)
    precopy         Precopy       QEMU's iterative pre-copy (or Xen's stop rules)
    postcopy        Postcopy      post-copy, after 0 or more pre-copy passes
    hybrid          Hybrid        pre-copy, then post-copy; Nova's policy (labmig.nova) as an option
    autoconverge    Autoconverge  pre-copy + QEMU's CPU throttle
    compression     Compression   pre-copy + XBZRLE, zero pages, multifd
    cold            Cold          shutdown, disk copy, boot
    make_strategy(name, options)  an instance with parsed options

The option dataclasses are plain and named after QEMU's migration parameters
and Nova's settings, so a real backend can map them onto libvirt.
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidInput
from .autoconverge import Autoconverge, AutoconvergeOptions
from .base import Strategy, build_options, option_fields
from .cold import Cold, ColdOptions
from .compression import Compression, CompressionOptions
from .postcopy import Hybrid, HybridOptions, Postcopy, PostcopyOptions
from .precopy import Precopy, PrecopyOptions

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Precopy, Postcopy, Hybrid, Autoconverge, Compression, Cold)
}


def make_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise InvalidInput(f"unknown strategy {name!r}", f"choose one of: {', '.join(STRATEGIES)}") from None
    return cls(build_options(cls.Options, options))


__all__ = [
    "STRATEGIES", "Strategy", "make_strategy", "build_options", "option_fields",
    "Precopy", "PrecopyOptions", "Postcopy", "PostcopyOptions", "Hybrid", "HybridOptions",
    "Autoconverge", "AutoconvergeOptions", "Compression", "CompressionOptions", "Cold", "ColdOptions",
]
