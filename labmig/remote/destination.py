"""A disk's delta copy to a destination helper: digests come back, only changed extents go out.

    remote_delta_copy(src, agent, dst, ...)  one image: open (marked incomplete), compare
        per-block digests seeded afresh, send changed extents (all-zero ones as holes),
        verify the whole image against the source, then clear the incomplete mark.
        Returns stats: blocks, blocks_sent, blocks_zero, payload bytes, digest, seconds.

The bytes that actually cross ssh are counted by the :class:`~labmig.remote.ssh.SshAgent`
(frames both ways), not estimated here. A verification mismatch raises
:class:`~labmig.errors.VerifyFailed` and leaves the destination marked incomplete.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any, Callable

import numpy as np

from .. import core
from ..errors import CopyError, InvalidInput, SourceChanged, VerifyFailed
from ..progress import Progress
from .agent import file_digest

log = logging.getLogger(__name__)

RANGE_BLOCKS = 8192          # digests asked for per request (bounded memory on both sides)
MAX_EXTENT = 4 << 20         # bytes per write frame


def remote_delta_copy(src: str, agent: Any, dst: str, block_size: int = 64 * 1024, verify: str = "xxh3-128",
                      on_progress: Callable[[int, int], None] | None = None,
                      show_progress: bool = False) -> dict[str, Any]:
    if block_size & (block_size - 1) or not core.MIN_BLOCK <= block_size <= core.MAX_BLOCK:
        raise InvalidInput(f"block size {block_size} must be a power of two from 4 KiB to 16 MiB",
                           "e.g. --block-size 64KiB")
    t0 = time.monotonic()
    try:
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CopyError(f"cannot open source disk {src}: {exc.strerror}", "check the path and permissions") from exc
    try:
        st0 = os.fstat(fd)
        size = st0.st_size
        seed = secrets.randbits(64)
        agent.call("open", path=dst, size=size)
        nblocks = (size + block_size - 1) // block_size
        sent = zero = 0
        payload = 0
        with Progress(size, f"copy {os.path.basename(src)}", enabled=None if show_progress else False) as bar:
            for first in range(0, nblocks, RANGE_BLOCKS):
                count = min(RANGE_BLOCKS, nblocks - first)
                offset = first * block_size
                length = min(count * block_size, size - offset)
                reply, raw = agent.call("digests", path=dst, block_size=block_size, seed=seed,
                                        offset=offset, length=length)
                theirs = np.frombuffer(raw, dtype=np.uint64).reshape(-1, core.DIGEST_WORDS)
                ours = np.zeros((count, core.DIGEST_WORDS), dtype=np.uint64)
                zeros = core.new_bitmap(count)
                core.digest_file(fd, offset, length, block_size, seed, ours, zeros)
                changed = core.new_bitmap(count)
                core.compare_digests(ours, theirs, changed)
                starts = np.zeros(count, dtype=np.int64)
                lens = np.zeros(count, dtype=np.int64)
                n, _ = core.bit_runs(changed, count, 0, starts, lens)
                for s, ln in zip(starts[:n].tolist(), lens[:n].tolist()):
                    sent_here, zero_here, bytes_here = _send_run(fd, agent, dst, zeros, s, ln, first,
                                                                 block_size, size)
                    sent += sent_here
                    zero += zero_here
                    payload += bytes_here
                done = offset + length
                bar.update(done)
                if on_progress:
                    on_progress(done, size)
        if nblocks == 0 and on_progress:
            on_progress(0, 0)
        if os.fstat(fd).st_mtime_ns != st0.st_mtime_ns or os.fstat(fd).st_size != size:
            raise SourceChanged(f"source disk {src} changed while it was copied",
                                "the VM must stay shut off during the copy; run the migration again")
        mine = file_digest(fd, verify)
        theirs_digest = agent.call("verify", path=dst, algo=verify)[0]["digest"]
        if mine != theirs_digest:
            raise VerifyFailed(f"the copy of {os.path.basename(src)} does not match the source ({verify} "
                               f"{theirs_digest[:16]}… ≠ {mine[:16]}…)",
                               "the destination stays marked incomplete; nothing was defined there. "
                               "Check the destination's storage, then migrate again")
        agent.call("finish", path=dst)
    finally:
        os.close(fd)
    return {"size": size, "block_size": block_size, "blocks": nblocks, "blocks_sent": sent,
            "blocks_zero": zero, "payload_bytes": payload, "digest": mine, "verify": verify,
            "seconds": time.monotonic() - t0}


def _send_run(fd: int, agent: Any, dst: str, zeros: np.ndarray, start: int, length: int, first: int,
              block_size: int, size: int) -> tuple[int, int, int]:
    """Send one run of changed blocks: zero blocks as holes, others as data, in frames."""
    zero_words = zeros
    sent = zero = payload = 0
    b = start
    end = start + length
    while b < end:
        is_zero = bool((int(zero_words[b >> 6]) >> (b & 63)) & 1)
        e = b + 1
        while e < end and bool((int(zero_words[e >> 6]) >> (e & 63)) & 1) == is_zero:
            e += 1
        off = (first + b) * block_size
        nbytes = min((e - b) * block_size, size - off)
        if is_zero:
            agent.call("zero", path=dst, offset=off, length=nbytes)
            zero += e - b
        else:
            pos = off
            while pos < off + nbytes:
                chunk = os.pread(fd, min(MAX_EXTENT, off + nbytes - pos), pos)
                if not chunk:
                    raise SourceChanged("source disk shrank while it was copied", "keep the VM shut off")
                agent.call("write", chunk, path=dst, offset=pos)
                pos += len(chunk)
                payload += len(chunk)
            sent += e - b
        b = e
    return sent, zero, payload
