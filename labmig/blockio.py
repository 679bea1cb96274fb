"""Image files on this host: reading them for digests, writing them as a destination.

    LocalDestination   a regular file or block device behind the blockcopy destination interface
    WrittenRanges      what a destination wrote since its last check, read back to verify it
    incomplete_mark(path), is_incomplete(path)   the "not yet verified" sidecar
    data_segments(fd, offset, end)   byte ranges that may hold data (holes left out)
    digest_range(fd, ...)   core.digest_file that skips long holes (their blocks get the zero digest)
    stream_digest(fd, size, algo)   whole-image XXH3-128 / SHA-256, the same on both sides
    start_writeback(fd, offset, length)   begin writing a range out, without waiting

:mod:`labmig.blockcopy` drives a copy through these; the remote helper
(:mod:`labmig.remote.agent`) uses the same mark, digests and read-back.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import stat as stat_mod
import threading
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import core
from .copyrules import incomplete_mark, is_incomplete  # noqa: F401  (re-exported)
from .errors import CopyError, InvalidInput
from .fsutil import fsync_dir

log = logging.getLogger(__name__)

_READ_CHUNK = 4 << 20
# Holes shorter than this are digested like data: one more digest call for
# each hole costs more than hashing a few MiB of zeros.
_SKIP_HOLES_FROM = 8 << 20


def data_segments(fd: int, offset: int, end: int) -> list[tuple[int, int]]:
    """Byte ranges of [offset, end) that may hold data; holes (SEEK_HOLE) left out.

    Where the file system or device cannot tell, the whole range is data.
    """
    segments: list[tuple[int, int]] = []
    pos = offset
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data past pos
                break
            return [(offset, end)]
        if start >= end:
            break
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        segments.append((start, stop))
        pos = stop
    return segments


class WrittenRanges:
    """The ranges a destination wrote or zeroed since its last check, in order.

    :meth:`digest` reads them back from the image and folds their block digests
    into one XXH3-128 seeded like the transfer; the sender folds its own digests
    of the same blocks in the same order, so one 16-byte answer verifies them all.
    """

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int, bool]] = []  # (offset, length, zeroed)

    def add(self, offset: int, length: int, zeroed: bool = False) -> None:
        self.ranges.append((offset, length, zeroed))

    def clear(self) -> None:
        self.ranges.clear()

    def span(self) -> tuple[int, int] | None:
        """(offset, length) from the lowest byte written to the highest, or None."""
        if not self.ranges:
            return None
        start = min(offset for offset, _, _ in self.ranges)
        return start, max(offset + length for offset, length, _ in self.ranges) - start

    def digest(self, fd: int, block_size: int, seed: int) -> bytes:
        folded = xxhash.xxh3_128(seed=seed)
        for offset, length, zeroed in self.ranges:
            n = (length + block_size - 1) // block_size
            out = np.zeros((n, core.DIGEST_WORDS), dtype=np.uint64)
            if n:  # a zeroed range is mostly a hole: skip reading it where the file system says so
                digest = digest_range if zeroed else core.digest_file
                digest(fd, offset, length, block_size, seed, out, None, 1)
            folded.update(out.astype("<u8", copy=False).tobytes())
        self.ranges.clear()
        return folded.digest()


def digest_range(fd: int, offset: int, length: int, block_size: int, seed: int,
                 digests_out: np.ndarray, zero_out: np.ndarray | None = None, threads: int = 0) -> int:
    """:func:`core.digest_file` that does not read long holes: their blocks get the zero digest.

    Holes shorter than 8 MiB are read like data (see ``_SKIP_HOLES_FROM``).

    Same arguments and result (bytes that were there; short at an early EOF).
    """
    bs = block_size
    end = offset + length
    n = (length + bs - 1) // bs
    if n == 0:
        return 0
    st = os.fstat(fd)
    segments: list[tuple[int, int]] = []
    for a, b in data_segments(fd, offset, end):
        if segments and a - segments[-1][1] < _SKIP_HOLES_FROM:
            segments[-1] = (segments[-1][0], b)  # a short hole is read like data
        else:
            segments.append((a, b))
    if segments and segments[0][0] - offset < _SKIP_HOLES_FROM:
        segments[0] = (offset, segments[0][1])
    if segments and end - segments[-1][1] < _SKIP_HOLES_FROM:
        segments[-1] = (segments[-1][0], end)
    if segments == [(offset, end)] or not stat_mod.S_ISREG(st.st_mode):
        return core.digest_file(fd, offset, length, bs, seed, digests_out, zero_out, threads)
    there = max(0, min(end, st.st_size) - offset)
    full = there // bs  # whole blocks that exist; a short last block is always read
    # block ranges to read: data segments widened to whole blocks
    wanted = [((a - offset) // bs, min(n, (b - offset + bs - 1) // bs)) for a, b in segments]
    if there % bs:
        wanted.append((full, full + 1))
    merged: list[list[int]] = []
    for a, b in sorted(wanted):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    # every whole block outside those ranges is a hole: the zero digest, no read
    holes = np.ones(full, dtype=bool)
    for a, b in merged:
        holes[a:b] = False
    hole_idx = np.flatnonzero(holes)
    lo, hi = core.zero_digest(bs, seed)
    digests_out[hole_idx, 0], digests_out[hole_idx, 1] = lo, hi
    if zero_out is not None and hole_idx.size:
        core.set_bits(zero_out, hole_idx.astype(np.int64))
    for a, b in merged:
        start, ln = offset + a * bs, min((b - a) * bs, end - offset - a * bs)
        sub_zero = core.new_bitmap(b - a) if zero_out is not None else None
        got = core.digest_file(fd, start, ln, bs, seed, digests_out[a:b], sub_zero, threads)
        if sub_zero is not None and zero_out is not None:
            idx = np.empty(b - a, dtype=np.int64)
            count, _ = core.find_set_bits(sub_zero, b - a, 0, idx)
            core.set_bits(zero_out, idx[:count] + a)
        if got < ln:
            return start + got - offset
    return there


def stream_digest(fd: int, size: int, algo: str) -> str:
    """Hex digest of the first ``size`` bytes of ``fd``; the same on both sides of a copy."""
    if algo == "sha256":
        h: Any = hashlib.sha256()
    elif algo == "xxh3-128":
        h = xxhash.xxh3_128()
    else:
        raise InvalidInput(f"unknown digest {algo!r}", "use xxh3-128 or sha256")
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    offset = 0
    while offset < size:
        n = os.preadv(fd, [view[:min(_READ_CHUNK, size - offset)]], offset)
        if n <= 0:
            break
        h.update(view[:n])
        offset += n
    return h.hexdigest()


def _device_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


def _libc_sync_file_range() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None  # not Linux: no write-behind, the final fsync does it all
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writing dirty pages out; do not wait


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing the dirty pages of a range out (sync_file_range, no wait); no durability."""
    if _SYNC_FILE_RANGE is not None and _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _WriteBehind:
    """Starts the write-out of written ranges in a background thread (``sync_file_range``).

    The final fsync then finds most of the data already on its way to the disk
    instead of all of it. Nothing here makes data durable or hides an error:
    a failure is kept and raised by :meth:`close`, and the fsync still decides.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending: list[tuple[int, int]] = []
        self.error: OSError | None = None
        self.stopping = False
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="labmig-write-behind", daemon=True)
        self.thread.start()

    def add(self, offset: int, length: int) -> None:
        with self.wake:
            self.pending.append((offset, length))
            self.wake.notify()

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.pending and not self.stopping:
                    self.wake.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            for offset, length in batch:
                try:
                    start_writeback(self.fd, offset, length)
                except OSError as exc:
                    self.error = exc
                    return

    def close(self) -> None:
        with self.wake:
            self.stopping = True
            self.pending.clear()
            self.wake.notify()
        self.thread.join()
        if self.error is not None:
            raise self.error


class LocalDestination:
    """A regular file or block device on this host, behind the destination interface."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 0) -> None:
        self.path = Path(path)
        self.threads = threads  # hashing threads (0 = every core)
        self.name = str(path)
        self.fd: int | None = None
        self.size = 0
        self.is_device = False
        self.created = False
        self.written = WrittenRanges()
        self.write_behind: _WriteBehind | None = None
        # the digests of one window may be asked while another one is written
        self.concurrent = True

    def __enter__(self) -> LocalDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stat(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {"exists": False, "size": 0, "incomplete": False, "free": _free(self.path.parent)}
        size = st.st_size
        if stat_mod.S_ISBLK(st.st_mode):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = _device_size(fd)
            finally:
                os.close(fd)
        return {"exists": True, "size": size, "incomplete": is_incomplete(self.path),
                "free": _free(self.path.parent)}

    def open(self, size: int) -> int:
        mark = incomplete_mark(self.path)
        if not mark.exists():
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            fsync_dir(self.path.parent)  # the mark is on disk before the image is touched
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self.created = True
        st = os.fstat(self.fd)
        self.is_device = stat_mod.S_ISBLK(st.st_mode)
        old = _device_size(self.fd) if self.is_device else st.st_size
        if self.is_device:
            if old < size:
                raise CopyError(f"block device {self.name} holds {old:,} bytes, the image needs {size:,}",
                                "use a device at least as large as the source image")
        elif old != size:
            os.ftruncate(self.fd, size)
        self.size = size
        self.written.clear()
        return old

    def _require(self) -> int:
        if self.fd is None:
            raise CopyError(f"{self.name} is not open", "call open(size) first")
        return self.fd

    def digests(self, offset: int, length: int, block_size: int, seed: int) -> bytes:
        fd = self._require()
        length = max(0, min(length, self.size - offset))
        n = (length + block_size - 1) // block_size
        out = np.zeros((n, core.DIGEST_WORDS), dtype=np.uint64)
        if n:
            got = digest_range(fd, offset, length, block_size, seed, out, threads=self.threads)
            if got != length:
                raise CopyError(f"{self.name} ended at {offset + got:,} bytes, expected {offset + length:,}",
                                "something else is changing the destination; stop it and run again")
        return out.astype("<u8", copy=False).tobytes()

    def write(self, offset: int, data: bytes | memoryview) -> None:
        fd = self._require()
        view = memoryview(data).cast("B")
        self.written.add(offset, len(view))
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n

    def zero(self, offset: int, length: int) -> None:
        fd = self._require()
        self.written.add(offset, length, zeroed=True)
        if not self.is_device and core.punch_hole(fd, offset, length):
            return
        zeros = bytes(min(length, _READ_CHUNK))
        end = offset + length
        while offset < end:
            offset += os.pwrite(fd, zeros[:end - offset], offset)

    def written_digest(self, block_size: int, seed: int) -> bytes:
        fd = self._require()
        span = self.written.span()
        if span is not None and _SYNC_FILE_RANGE is not None and not self.is_device:
            # the window's writes start on their way to the disk while they are read back
            if self.write_behind is None:
                self.write_behind = _WriteBehind(fd)
            self.write_behind.add(*span)
        return self.written.digest(fd, block_size, seed)

    def verify(self, algo: str) -> str:
        return stream_digest(self._require(), self.size, algo)

    def _stop_write_behind(self) -> None:
        write_behind, self.write_behind = self.write_behind, None
        if write_behind is not None:
            write_behind.close()

    def finish(self) -> None:
        self._stop_write_behind()
        os.fsync(self._require())  # an fsync error aborts: it is never retried until it "succeeds"
        if self.created:
            fsync_dir(self.path.parent)  # the new image's name is durable before the mark goes
        # Not synced: should the removal be lost in a crash, the image only looks
        # incomplete, and the next copy verifies it and sends nothing.
        incomplete_mark(self.path).unlink(missing_ok=True)

    def close(self) -> None:
        try:
            self._stop_write_behind()
        except OSError:
            pass  # close after a failed copy: the copy's own error is the one to report
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _free(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize
