"""Compression: pre-copy with XBZRLE delta pages, zero-page skipping and multifd.

    CompressionOptions   xbzrle, xbzrle_cache_size, multifd_channels
    Compression          pre-copy on an engine with an XBZRLE cache or more streams

XBZRLE keeps a cache of sent pages (QEMU: direct-mapped on the page number,
default 64 MiB); once the bulk stage is over, a page found in the cache is sent
as an XOR-run-length delta (about ``delta_fraction`` of a page, see the
workload) instead of whole. Zero pages go as a header only. Multifd sends
pages over ``multifd_channels`` streams: it only helps when one stream is CPU-
bound (``Link.stream_limit``). QEMU refuses XBZRLE together with multifd, and
so does this strategy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..sim.engine import LiveEngine
from ..sim.plan import Plan
from .base import option
from .precopy import Precopy, PrecopyOptions


@dataclass
class CompressionOptions(PrecopyOptions):
    xbzrle: bool = option(True, "bool", "send re-dirtied cached pages as XBZRLE deltas")
    xbzrle_cache_size: int = option(64 << 20, "size", "XBZRLE page cache (QEMU xbzrle-cache-size)")
    multifd_channels: int = option(0, "int", "parallel migration streams; 0 = one stream, no multifd")


class Compression(Precopy):
    name = "compression"
    description = "pre-copy + XBZRLE delta pages, zero-page skipping, multifd streams"
    Options = CompressionOptions

    def to_libvirt(self, spec: Any = None) -> dict[str, Any]:
        """VIR_MIGRATE_COMPRESSED with xbzrle, or VIR_MIGRATE_PARALLEL with N multifd channels."""
        o = self.options
        mapping = {**super().to_libvirt(spec), "parallel_connections": int(o.multifd_channels)}
        if o.xbzrle:
            mapping["compression"] = "xbzrle"
        return mapping

    def check(self) -> None:
        o = self.options
        if o.xbzrle and o.multifd_channels:
            raise InvalidInput("xbzrle and multifd_channels cannot be used together (QEMU refuses it)",
                               "use xbzrle=false with multifd_channels=N, or multifd_channels=0")
        if o.multifd_channels < 0 or o.xbzrle_cache_size < 0:
            raise InvalidInput("multifd_channels and xbzrle_cache_size must be 0 or more", "e.g. multifd_channels=4")

    def make_engine(self, plan: Plan, track_versions: bool) -> LiveEngine:
        o = self.options
        cache = o.xbzrle_cache_size if o.xbzrle else 0
        return LiveEngine(plan, streams=max(1, o.multifd_channels),
                          zero_page_detection=o.zero_page_detection, xbzrle_cache=cache,
                          track_versions=track_versions)
