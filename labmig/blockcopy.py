"""Delta copy of disk images: the destination's digests come in, changed extents go out.

    delta_copy(src, dst, block_size=64 KiB, verify="fast", progress=None) -> CopyStats
    Destination        the interface a destination implements (below)
    CopyStats          what a copy did: blocks matched / sent / zero, bytes on the wire, time
    check_block_size, extent_header_bytes   a block size checked; an extent's wire header size

The local side of it (LocalDestination, the incomplete mark, digests that skip
holes, read-back of what was written) is in :mod:`labmig.blockio`; its names
are importable from here too.

How a copy goes (the sender owns the source; the destination may be remote):

1. ``dst.open(size)``: the destination marks itself incomplete, creates the
   image if needed and grows or shrinks it to the source's size (a grown tail
   is a hole).
2. Window by window (a bounded number of blocks, so memory stays bounded
   whatever the image size): ``dst.digests(offset, length, block_size, seed)``
   returns one XXH3-128 digest per block (the call runs in a second thread, so
   both sides hash at once); the sender digests the same source range with the
   same per-transfer random seed (a guest cannot plant matching
   blocks in advance), compares, and sends the changed blocks as extents:
   ``dst.write(offset, data)`` for data and ``dst.zero(offset, length)`` for
   blocks that are all zero in the source (a hole where the file system allows).
   Each source block sent is hashed again as it is read and must still match its
   digest, and a regular source file's size and times must not have moved, so a
   source written to during the copy is reported
   (:class:`~labmig.errors.SourceChanged`), never copied half-old. (For a block
   device source only the blocks sent are re-checked; ``verify="full"`` or
   ``"sha256"`` re-reads it whole.) A destination with ``concurrent = True``
   (a local one) has the next window digested while this one is sent.
3. Verify. After each window with changes the destination reads back every
   extent it was sent and answers one 16-byte digest of their block digests
   (``dst.written_digest``), which must equal the source's (this also lets the
   destination forget the window's extents); the other blocks already matched
   in step 2. Then, by ``verify``:
   ``"fast"``  nothing more; the result is a digest of the image's block digests.
   ``"full"``  both sides hash the whole image again (XXH3-128, streamed).
   ``"sha256"`` both sides hash the whole image again with SHA-256.
4. ``dst.finish()``: fsync, then drop the incomplete mark. (A local destination
   starts writing extents out as they come, ``sync_file_range`` in a background
   thread, so the fsync finds little left to do.) An interrupted copy
   keeps its mark; a rerun digests again and sends only what still differs.

The destination interface — everything crossing it is plain ``bytes``, ``int``,
``str`` or ``dict``, so it maps one-to-one onto request/reply frames of a helper
on another host; the sender counts those bytes as ``bytes_on_wire``:

    stat() -> {"exists": bool, "size": int, "incomplete": bool, "free": int}
    open(size) -> old size        mark incomplete, create, set the size to ``size``
    digests(offset, length, block_size, seed) -> bytes
                                  16 bytes per block: XXH3-128 (low, high) as
                                  little-endian uint64 (core.digest_file layout)
    write(offset, data) -> None   one data extent
    zero(offset, length) -> None  make a range read as zeros (punch a hole, or write zeros)
    written_digest(block_size, seed) -> bytes
                                  16 bytes: XXH3-128 (seeded) of the block digests of
                                  every range written or zeroed since ``open`` or the
                                  last call, read back from the image, in the order
                                  they were written (see :class:`WrittenRanges`)
    verify(algo) -> str           hex digest of the first ``size`` bytes, algo
                                  "xxh3-128" or "sha256", read from the image
    finish() -> None              fsync; only then drop the incomplete mark
                                  (if the copy fails, finish is never called)
    close() -> None
    name: str                     for messages

What would cross a wire (``bytes_on_wire``): a 16-byte header per request
(open, each window's digests, each window's extents, each check, finish), 16
bytes per block digest, and in a window's extent stream, per extent, its data
plus a varint header: the gap in blocks since the end of the previous extent of
its kind, shifted left once with the low bit set for a zero extent, then its length in blocks (two or
three bytes for scattered 64 KiB blocks). Beyond the changed bytes and the
digests that is 48 bytes per window with changes, 16 per window without, two
or three bytes per extent, and 32 for open and finish: close to the floor,
since the destination must learn which blocks changed.

Errors a destination raises should be :class:`~labmig.errors.CopyError` (or
``OSError``, which the sender wraps into one).
"""
from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import secrets
import stat as stat_mod
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xxhash

from . import core
from .blockio import (
    LocalDestination,
    WrittenRanges,
    _device_size,
    data_segments,
    digest_range,
    incomplete_mark,
    is_incomplete,
    start_writeback,
    stream_digest,
)
from .copyrules import DEFAULT_BLOCK, VERIFY_MODES, check_block_size
from .errors import CopyError, InvalidInput, SourceChanged, VerifyFailed
from .units import format_rate, format_size

__all__ = ["DEFAULT_BLOCK", "VERIFY_MODES", "CopyStats", "Destination", "LocalDestination", "WrittenRanges",
           "check_block_size", "data_segments", "delta_copy", "digest_range", "extent_header_bytes",
           "incomplete_mark", "is_incomplete", "start_writeback", "stream_digest"]

log = logging.getLogger(__name__)

WINDOW_BYTES = 512 << 20      # image bytes digested per round trip
MAX_EXTENT = 8 << 20          # largest data extent read and sent at once
REQUEST_BYTES = 16            # wire cost of a request header (op, offset, length)
DIGEST_BYTES = 16             # wire cost of one block digest

ProgressFn = Callable[[int, int], None]


@dataclass
class CopyStats:
    """What one delta copy did. ``bytes_on_wire`` counts what would cross a network."""

    source: str
    destination: str
    size: int
    block_size: int
    blocks_total: int = 0
    blocks_matched: int = 0
    blocks_sent: int = 0
    blocks_zero: int = 0
    extents: int = 0
    bytes_sent: int = 0
    bytes_on_wire: int = 0
    old_size: int = 0
    seconds: float = 0.0
    sync_seconds: float = 0.0     # of ``seconds``: the destination's final fsync
    verify: str = "fast"
    verify_digest: str = ""
    core: str = field(default_factory=lambda: core.IMPLEMENTATION)

    @property
    def throughput(self) -> float:
        """Image bytes per second."""
        return self.size / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["throughput"] = self.throughput
        return d

    def summary(self) -> str:
        """rsync --stats style lines."""
        return "\n".join([
            f"Image size: {self.size:,} bytes ({format_size(self.size)}), block size {format_size(self.block_size)}",
            f"Blocks: {self.blocks_total:,} total, {self.blocks_matched:,} matched, "
            f"{self.blocks_sent:,} sent, {self.blocks_zero:,} zeroed",
            f"Extents sent: {self.extents:,}; data sent: {self.bytes_sent:,} bytes",
            f"Bytes that would cross the wire: {self.bytes_on_wire:,} ({format_size(self.bytes_on_wire)})",
            f"Time: {self.seconds:.3f} s (final fsync {self.sync_seconds:.3f} s); "
            f"throughput {format_size(self.throughput)}/s ({format_rate(self.throughput)})",
            f"Verified ({self.verify}): {self.verify_digest}",
        ])


class Destination(Protocol):
    """See the module docstring: the seam a remote destination implements."""

    name: str

    def stat(self) -> dict[str, Any]: ...
    def open(self, size: int) -> int: ...
    def digests(self, offset: int, length: int, block_size: int, seed: int) -> bytes: ...
    def write(self, offset: int, data: bytes | memoryview) -> None: ...
    def zero(self, offset: int, length: int) -> None: ...
    def written_digest(self, block_size: int, seed: int) -> bytes: ...
    def verify(self, algo: str) -> str: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...


def varint_size(value: int) -> int:
    """Bytes of ``value`` as an unsigned LEB128 varint."""
    return max(1, (value.bit_length() + 6) // 7)


def extent_header_bytes(gap_blocks: int, nblocks: int, is_zero: bool) -> int:
    """Wire size of one extent's header in a window's extent stream (see the module docstring)."""
    return varint_size(gap_blocks << 1 | int(is_zero)) + varint_size(nblocks)


# ---------------------------------------------------------------- the sender


def _open_source(src: Path) -> tuple[int, os.stat_result, int]:
    try:
        st = os.stat(src)
    except FileNotFoundError as exc:
        raise InvalidInput(f"source {src} does not exist", "check the path of the image to copy") from exc
    except PermissionError as exc:
        raise InvalidInput(f"source {src} cannot be read: permission denied", "run as a user who can read it") from exc
    if stat_mod.S_ISDIR(st.st_mode):
        raise InvalidInput(f"source {src} is a directory", "give the path of a disk image file or block device")
    if not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISBLK(st.st_mode)):
        raise InvalidInput(f"source {src} is not a regular file or block device", "give a disk image file or device")
    try:
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)  # the source is never opened for writing
    except PermissionError as exc:
        raise InvalidInput(f"source {src} cannot be read: permission denied", "run as a user who can read it") from exc
    size = _device_size(fd) if stat_mod.S_ISBLK(st.st_mode) else st.st_size
    return fd, os.fstat(fd), size


def _check_destination_path(src_st: os.stat_result, dst: Path) -> None:
    if dst.is_dir():
        raise InvalidInput(f"destination {dst} is a directory", "give the path of the image file to write")
    if not dst.parent.is_dir():
        raise InvalidInput(f"the directory of destination {dst} does not exist", "create it first")
    try:
        dst_st = os.stat(dst)
    except FileNotFoundError:
        return
    if not (stat_mod.S_ISREG(dst_st.st_mode) or stat_mod.S_ISBLK(dst_st.st_mode)):
        raise InvalidInput(f"destination {dst} is not a regular file or block device",
                           "give the path of an image file (created if missing) or a block device")
    if (dst_st.st_dev, dst_st.st_ino) == (src_st.st_dev, src_st.st_ino) or (
            stat_mod.S_ISBLK(dst_st.st_mode) and dst_st.st_rdev == src_st.st_rdev and src_st.st_rdev):
        raise InvalidInput(f"source and destination are the same file ({dst})",
                           "give a different destination path")


def _unchanged(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino)


@dataclass
class _Digested:
    """One window's digests: the source's, its zero blocks, the destination's raw reply."""

    ours: np.ndarray
    zero: np.ndarray
    raw: bytes
    got: int  # source bytes that were there


class _Sender:
    """One copy in progress: source side state, the window loop and the wire count."""

    def __init__(self, src_path: Path, fd: int, size: int, dst: Destination, block_size: int,
                 stats: CopyStats) -> None:
        self.src_path, self.fd, self.size, self.dst = src_path, fd, size, dst
        self.bs, self.stats = block_size, stats
        self.src_threads = 0  # hashing threads for the source (0 = every core)
        self.seed = secrets.randbits(64)
        self.image_digest = xxhash.xxh3_128(seed=self.seed)
        self.buf = bytearray()  # grown to the largest extent read so far, up to MAX_EXTENT
        # this window's extents in the order sent: (offset, length, digests)
        self.written: list[tuple[int, int, np.ndarray]] = []
        self.last_end_block = 0  # where the previous extent of this window's stream ended

    def wire(self, n: int) -> None:
        self.stats.bytes_on_wire += n

    def digest_window(self, offset: int, length: int) -> _Digested:
        """Both sides' digests of one window, computed at once (maybe ahead, in another thread)."""
        bs = self.bs
        n = (length + bs - 1) // bs
        # The destination digests its side while the source is digested here, as a
        # remote one would on its own host; a local one gets one core, the source the other.
        reply: dict[str, Any] = {}

        def fetch() -> None:
            try:
                reply["raw"] = self.dst.digests(offset, length, bs, self.seed)
            except BaseException as exc:  # handed to this thread below
                reply["err"] = exc

        fetcher = threading.Thread(target=fetch, name="labmig-digests")
        fetcher.start()
        ours = np.zeros((n, core.DIGEST_WORDS), dtype=np.uint64)
        zero = core.new_bitmap(n)
        try:
            got = digest_range(self.fd, offset, length, bs, self.seed, ours, zero, threads=self.src_threads)
        finally:
            fetcher.join()
        if "err" in reply:
            raise reply["err"]
        return _Digested(ours, zero, reply["raw"], got)

    def run_window(self, offset: int, length: int, digested: _Digested) -> None:
        """Compare one window's digests (from :meth:`digest_window`) and send what differs."""
        bs = self.bs
        n = (length + bs - 1) // bs
        ours, zero, raw, got = digested.ours, digested.zero, digested.raw, digested.got
        self.wire(REQUEST_BYTES + len(raw))
        if len(raw) != n * DIGEST_BYTES:
            raise CopyError(f"{self.dst.name} sent {len(raw)} bytes of digests for {n} blocks",
                            "both sides must run the same labmig version")
        theirs = np.frombuffer(raw, dtype="<u8").astype(np.uint64, copy=False).reshape(n, core.DIGEST_WORDS)
        if got != length:
            raise SourceChanged(f"source {self.src_path} ended at {offset + got:,} bytes while it was copied "
                                f"(it had {self.size:,})",
                                "stop whatever writes the image (shut the VM down), then copy again")
        self.image_digest.update(ours.astype("<u8", copy=False).tobytes())
        changed = core.new_bitmap(n)
        nchanged = core.compare_digests(ours, theirs, changed)
        self.stats.blocks_total += n
        self.stats.blocks_matched += n - nchanged
        if nchanged:
            zero_changed = changed.copy()
            np.bitwise_and(zero_changed, zero, out=zero_changed)
            core.bitmap_andnot(changed, zero_changed)
            self.wire(REQUEST_BYTES)  # the window's extent stream
            self.last_end_block = 0
            self._send_runs(offset, n, zero_changed, ours, is_zero=True)
            self.last_end_block = 0
            self._send_runs(offset, n, changed, ours, is_zero=False)
            self.verify_written()
            self.written.clear()

    def _send_runs(self, offset: int, n: int, bitmap: np.ndarray, ours: np.ndarray, is_zero: bool) -> None:
        bs = self.bs
        starts, lengths = np.empty(1024, np.int64), np.empty(1024, np.int64)
        pos = 0
        while pos < n:
            count, pos = core.bit_runs(bitmap, n, pos, starts, lengths)
            for first, nblocks in zip(starts[:count].tolist(), lengths[:count].tolist(), strict=True):
                byte_off = offset + first * bs
                byte_len = min(nblocks * bs, self.size - byte_off)
                self.wire(extent_header_bytes(first - self.last_end_block, nblocks, is_zero))
                self.last_end_block = first + nblocks
                if is_zero:
                    self.dst.zero(byte_off, byte_len)
                    self.stats.blocks_zero += nblocks
                    self.stats.extents += 1
                else:
                    self._send_data(byte_off, byte_len, ours[first:first + nblocks])
                self.written.append((byte_off, byte_len, ours[first:first + nblocks].copy()))

    def _send_data(self, byte_off: int, byte_len: int, digests: np.ndarray) -> None:
        bs, per = self.bs, max(MAX_EXTENT, self.bs) // self.bs * self.bs
        if len(self.buf) < min(per, byte_len):
            self.buf = bytearray(min(per, byte_len))
        done = 0
        while done < byte_len:
            part = min(per, byte_len - done)
            view = memoryview(self.buf)[:part]
            got = 0
            while got < part:
                r = os.preadv(self.fd, [view[got:]], byte_off + done + got)
                if r <= 0:
                    break
                got += r
            first = done // bs
            nb = (part + bs - 1) // bs
            check = np.zeros((nb, core.DIGEST_WORDS), dtype=np.uint64)
            if got == part:
                core.digest_buffer(view, bs, self.seed, check)
            if got < part or not np.array_equal(check, digests[first:first + nb]):
                raise SourceChanged(f"source {self.src_path} changed while it was copied "
                                    f"(near byte {byte_off + done:,})",
                                    "stop whatever writes the image (shut the VM down), then copy again")
            self.wire(part)
            self.dst.write(byte_off + done, view)
            self.stats.blocks_sent += nb
            self.stats.bytes_sent += part
            done += part
        self.stats.extents += 1

    def verify_written(self) -> None:
        """The extents of this window, read back by the destination, must equal the source's digests.

        One 16-byte answer covers them all; only when it differs are the extents
        asked for one by one, to name the first byte that is wrong.
        """
        self.wire(REQUEST_BYTES)
        theirs = self.dst.written_digest(self.bs, self.seed)
        self.wire(len(theirs))
        folded = xxhash.xxh3_128(seed=self.seed)
        for _, _, digests in self.written:
            folded.update(digests.astype("<u8", copy=False).tobytes())
        if theirs == folded.digest():
            return
        for byte_off, byte_len, digests in self.written:
            self.wire(REQUEST_BYTES)
            raw = self.dst.digests(byte_off, byte_len, self.bs, self.seed)
            self.wire(len(raw))
            back = np.frombuffer(raw, dtype="<u8").reshape(-1, core.DIGEST_WORDS)
            if not np.array_equal(back, digests):
                bad = next((i for i in range(min(len(back), len(digests)))
                            if not np.array_equal(back[i], digests[i])), min(len(back), len(digests)))
                raise VerifyFailed(f"{self.dst.name} does not hold what was written at byte "
                                   f"{byte_off + bad * self.bs:,}",
                                   "the destination storage may be failing; check it and copy again")
        raise VerifyFailed(f"{self.dst.name} answered a digest of the extents written that does not match",
                           "the destination storage may be failing; check it and copy again")

    def verify_whole(self, algo: str) -> str:
        result: dict[str, Any] = {}

        def ours() -> None:
            try:
                result["src"] = stream_digest(self.fd, self.size, algo)
            except BaseException as exc:  # handed to the main thread below
                result["err"] = exc

        t = threading.Thread(target=ours, name="labmig-verify-src")
        t.start()
        try:
            self.wire(REQUEST_BYTES)
            theirs = self.dst.verify(algo)
            self.wire(len(theirs))
        finally:
            t.join()
        if "err" in result:
            raise result["err"]
        if theirs != result["src"]:
            raise VerifyFailed(f"{self.dst.name} does not match the source ({algo} {theirs} != {result['src']})",
                               "if the source was in use, stop it and copy again; "
                               "otherwise check the destination storage")
        return theirs


def delta_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str] | Destination,
               block_size: int | str = DEFAULT_BLOCK, verify: str = "fast",
               progress: ProgressFn | None = None) -> CopyStats:
    """Make ``dst`` byte-identical to ``src``, sending only blocks that differ; verify it.

    ``dst`` is a path (a :class:`LocalDestination` is made for it) or any
    :class:`Destination`. ``progress(done, total)`` is called with image bytes.
    Raises :class:`InvalidInput` before touching anything, :class:`SourceChanged`
    or :class:`VerifyFailed` when the result cannot be trusted (the destination
    then stays marked incomplete), :class:`CopyError` for I/O failures.
    """
    bs = check_block_size(block_size)
    if verify not in VERIFY_MODES:
        raise InvalidInput(f"unknown verify mode {verify!r}", f"use one of {', '.join(VERIFY_MODES)}")
    src_path = Path(src)
    fd, src_st, size = _open_source(src_path)
    try:
        if isinstance(dst, (str, os.PathLike)):
            dst_path = Path(dst)
            _check_destination_path(src_st, dst_path)
            # both files are digested at once, on one core each
            with LocalDestination(dst_path, threads=1) as local:
                return _copy(src_path, fd, src_st, size, local, bs, verify, progress, src_threads=1)
        return _copy(src_path, fd, src_st, size, dst, bs, verify, progress)
    finally:
        os.close(fd)


def _copy(src_path: Path, fd: int, src_st: os.stat_result, size: int, dst: Destination, bs: int,
          verify: str, progress: ProgressFn | None, src_threads: int = 0) -> CopyStats:
    stats = CopyStats(source=str(src_path), destination=dst.name, size=size, block_size=bs, verify=verify)
    started = time.perf_counter()
    sender = _Sender(src_path, fd, size, dst, bs, stats)
    sender.src_threads = src_threads
    try:
        sender.wire(REQUEST_BYTES)
        stats.old_size = dst.open(size)
        _run_windows(sender, _windows(size, bs), getattr(dst, "concurrent", False), progress)
        if stat_mod.S_ISREG(src_st.st_mode) and not _unchanged(src_st, os.fstat(fd)):
            raise SourceChanged(f"source {src_path} was modified while it was copied",
                                "stop whatever writes the image (shut the VM down), then copy again")
        if verify == "fast":  # the extents sent were read back window by window, and that is all
            stats.verify_digest = sender.image_digest.hexdigest()
        else:
            stats.verify_digest = sender.verify_whole("sha256" if verify == "sha256" else "xxh3-128")
        sender.wire(REQUEST_BYTES)
        synced = time.perf_counter()
        dst.finish()
        stats.sync_seconds = time.perf_counter() - synced
    except OSError as exc:
        raise _io_error(exc, dst.name) from exc
    stats.seconds = time.perf_counter() - started
    log.info("copied %s to %s: %d of %d blocks sent, %d zeroed", src_path, dst.name,
             stats.blocks_sent, stats.blocks_total, stats.blocks_zero)
    return stats


def _windows(size: int, bs: int) -> list[tuple[int, int]]:
    """(offset, length) of each window: WINDOW_BYTES each, whole blocks.

    With several windows, the last is cut in two, its final eighth becoming a
    window of its own: the send of the last window is the only one no digest
    overlaps, so it should be short.
    """
    window = max(bs, WINDOW_BYTES // bs * bs)
    windows = [(offset, min(window, size - offset)) for offset in range(0, size, window)]
    if len(windows) > 1:
        offset, length = windows[-1]
        tail = length // 8 // bs * bs
        if tail:
            windows[-1:] = [(offset, length - tail), (offset + length - tail, tail)]
    return windows


def _run_windows(sender: _Sender, windows: list[tuple[int, int]], ahead: bool,
                 progress: ProgressFn | None) -> None:
    """Every window in turn; with ``ahead``, the next window is digested while this one is sent."""
    size = windows[-1][0] + windows[-1][1] if windows else 0
    pending: concurrent.futures.Future[_Digested] | None = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="labmig-ahead") as pool:
        try:
            for i, (offset, length) in enumerate(windows):
                digested = pending.result() if pending else sender.digest_window(offset, length)
                pending = None
                if ahead and i + 1 < len(windows):
                    pending = pool.submit(sender.digest_window, *windows[i + 1])
                sender.run_window(offset, length, digested)
                if progress:
                    progress(offset + length, size)
        finally:
            if pending is not None:  # never leave it reading after the copy has ended
                concurrent.futures.wait([pending])


def _io_error(exc: OSError, name: str) -> CopyError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CopyError(f"no space left on the destination {name}",
                         "free space (or use a file system with room for the image), then run the copy again; "
                         "it resumes and sends only what is still missing")
    return CopyError(f"I/O error while copying to {name}: {exc.strerror or exc}",
                     "the copy was aborted and the destination stays marked incomplete; "
                     "check the storage (dmesg), then run the copy again")
